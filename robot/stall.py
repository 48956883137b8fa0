"""Stall detection: a joint that does not move although its servo pushes at its current limit.

That is what a jammed gear, a snagged tendon or a finger blocked by an obstacle looks like from the
bus. A servo in current-based position mode never reports it itself (its current is capped below the
overload threshold), so the host watches for it. A firm grasp also pushes at the current limit with
little motion; the error and time thresholds are set so that a grasp (a small position error) does not
count, while a joint left far from its goal for a second does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

# The one definition of a stall, shared by the bus driver's detector (below), the safety monitor
# (handrail.robot.safety_monitor.MonitorConfig) and the training monitor (handrail.robot.batch_monitor):
STALL_CURRENT_FRACTION = 0.9  # |current| at or above this fraction of the joint's current limit: pushing
STALL_SPEED_RAD_S = 0.05  # slower than this: not moving
STALL_ERROR_FRACTION = 0.8  # of the joint's tracking window (max_tracking_error_rad): the goal is not there
STALL_TIME_S = 1.0  # for this long


def pushing(
    current_ma: NDArray[np.float64],
    position_rad: NDArray[np.float64],
    goal_rad: NDArray[np.float64],
    stall_current_ma: NDArray[np.float64],
    stall_error_rad: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Joints at the stall current with their goal at least the stall error away: a stall but for the speed."""
    return (np.abs(current_ma) >= stall_current_ma) & (np.abs(goal_rad - position_rad) >= stall_error_rad)


def advance_stall_timer(
    since_s: NDArray[np.float64], stalled_now: NDArray[np.bool_], now_s: float | NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One reading of the stall timers: a joint's timer starts when it stalls and clears when it does not.

    ``since_s`` holds when each joint's stall began (NaN: not stalled). Returns the new ``since_s`` and how long
    each joint has been stalled [s] (-1 where it is not), to compare with ``STALL_TIME_S``.
    """
    started = np.where(np.isnan(since_s), now_s, since_s)
    since = np.where(stalled_now, started, np.nan)
    return since, np.nan_to_num(now_s - since, nan=-1.0)


@dataclass
class StallDetector:
    """Per-joint stall timers; ``update`` returns the indices of joints stalled for ``stall_time_s``."""

    current_limit_ma: NDArray[np.float64]  # (n,)
    # Goal at least this far away counts as not there [rad], (n,): STALL_ERROR_FRACTION x the tracking window.
    min_error_rad: NDArray[np.float64]
    current_fraction: float = STALL_CURRENT_FRACTION
    max_speed_rad_s: float = STALL_SPEED_RAD_S
    stall_time_s: float = STALL_TIME_S
    _since_s: NDArray[np.float64] | None = field(default=None, init=False)

    def update(
        self,
        timestamp_s: float,
        position_rad: NDArray[np.float64],
        velocity_rad_s: NDArray[np.float64],
        current_ma: NDArray[np.float64],
        goal_rad: NDArray[np.float64] | None,
    ) -> NDArray[np.int64]:
        """Feed one reading; returns the joints (indices) that have been stalled for ``stall_time_s``."""
        n = position_rad.shape[0]
        if self._since_s is None:
            self._since_s = np.full(n, np.nan)
        if goal_rad is None:
            self._since_s[:] = np.nan
            return np.zeros(0, dtype=np.int64)
        stalled_now = pushing(
            current_ma, position_rad, goal_rad, self.current_fraction * self.current_limit_ma, self.min_error_rad
        ) & (np.abs(velocity_rad_s) < self.max_speed_rad_s)
        self._since_s, stalled_for_s = advance_stall_timer(self._since_s, stalled_now, timestamp_s)
        return np.flatnonzero(stalled_for_s >= self.stall_time_s)

    def reset(self) -> None:
        self._since_s = None
