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


@dataclass
class StallDetector:
    """Per-joint stall timers; ``update`` returns the indices of joints stalled for ``stall_time_s``."""

    current_limit_ma: NDArray[np.float64]  # (n,)
    current_fraction: float = 0.9  # |current| at or above this fraction of the limit counts as pushing
    max_speed_rad_s: float = 0.05  # slower than this counts as not moving
    min_error_rad: float = 0.2  # goal at least this far away counts as not there
    stall_time_s: float = 1.0
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
        stalled_now = (
            (np.abs(current_ma) >= self.current_fraction * self.current_limit_ma)
            & (np.abs(velocity_rad_s) < self.max_speed_rad_s)
            & (np.abs(goal_rad - position_rad) >= self.min_error_rad)
        )
        self._since_s = np.where(stalled_now, np.where(np.isnan(self._since_s), timestamp_s, self._since_s), np.nan)
        elapsed = timestamp_s - self._since_s
        return np.flatnonzero(np.nan_to_num(elapsed, nan=-1.0) >= self.stall_time_s)

    def reset(self) -> None:
        self._since_s = None
