"""The safety monitor's conditions for N simulated hands at once: what would safe-stop the hand, in training.

:class:`BatchStateMonitor` is :class:`~handrail.robot.safety_monitor.StateMonitor`'s arithmetic for a
batch (the same :class:`~handrail.robot.safety_monitor.MonitorConfig`, tolerances, consecutive-reading
counters and stall timer), for the conditions a simulator can produce: overspeed, overcurrent and stall.
The training environment ends an episode as a failure on the tick the hand's monitor would stop the
hand, so a policy learns never to trip it (DESIGN.md, rule 1). Tested equal to ``StateMonitor`` on random
readings, hand by hand.

Temperature, hardware errors and non-finite readings come from the servos and the bus, which a
simulator does not model; they stay the hardware monitor's alone.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.safety_monitor import OVERCURRENT, OVERSPEED, POSITION_LIMIT, STALL, MonitorConfig
from handrail.robot.stall import advance_stall_timer, pushing

BATCH_FAULT_KINDS = (OVERSPEED, OVERCURRENT, POSITION_LIMIT, STALL)


class BatchStateMonitor:
    """Per-hand, per-joint counters; :meth:`check` returns which hands would fault this reading, per kind."""

    def __init__(self, limits: SafetyLimits, n_hands: int, config: MonitorConfig | None = None):
        self.limits = limits
        self.config = config or MonitorConfig()
        self.n_hands = n_hands
        n = limits.n_joints
        self._overspeed = np.zeros((n_hands, n), dtype=np.int64)
        self._overcurrent = np.zeros((n_hands, n), dtype=np.int64)
        self._outside = np.zeros((n_hands, n), dtype=np.int64)
        self._stalled_since_s = np.full((n_hands, n), np.nan)
        # Joints of the last reading that push at the stall current while their target is the stall error away:
        # a stall but for the speed. (A training penalty: a stochastic policy's jitter keeps resetting the stall
        # timer, while the same policy acting deterministically on the hand holds still and trips it.)
        self.pushing = np.zeros((n_hands, n), dtype=bool)
        config = self.config
        self._speed_limit = limits.max_speed_rad_s * (1.0 + config.speed_tolerance)
        self._current_limit = limits.current_limit_ma * (1.0 + config.current_tolerance)
        self._stall_current = config.stall_current_fraction * limits.current_limit_ma
        self._stall_error = config.stall_error_fraction * limits.max_tracking_error_rad
        self._position_low = limits.soft_low_rad - config.position_tolerance_rad
        self._position_high = limits.soft_high_rad + config.position_tolerance_rad

    def reset(self, hands: NDArray[np.intp] | None = None) -> None:
        """Clear the counters of ``hands`` (all when None), as ``StateMonitor.reset`` does for one hand."""
        index = slice(None) if hands is None else hands
        self._overspeed[index] = 0
        self._overcurrent[index] = 0
        self._outside[index] = 0
        self._stalled_since_s[index] = np.nan
        self.pushing[index] = False

    def check(
        self,
        position_rad: NDArray[np.float64],
        velocity_rad_s: NDArray[np.float64],
        current_ma: NDArray[np.float64],
        target_rad: NDArray[np.float64],
        timestamp_s: NDArray[np.float64],
    ) -> dict[str, NDArray[np.bool_]]:
        """One reading of every hand, (N, n) arrays and (N,) timestamps [s] -> {kind: (N,) hand would fault}.

        ``position_rad`` is the reading the driver reports, ``target_rad`` the last target sent (torque on).
        """
        config = self.config
        over_speed = np.abs(velocity_rad_s) > self._speed_limit
        self._overspeed = np.where(over_speed, self._overspeed + 1, 0)
        over_current = np.abs(current_ma) > self._current_limit
        self._overcurrent = np.where(over_current, self._overcurrent + 1, 0)
        outside = (position_rad < self._position_low) | (position_rad > self._position_high)
        self._outside = np.where(outside, self._outside + 1, 0)
        self.pushing = pushing(current_ma, position_rad, target_rad, self._stall_current, self._stall_error)
        stalled = self.pushing & (np.abs(velocity_rad_s) < config.stall_speed_rad_s)
        now_s = np.asarray(timestamp_s, dtype=np.float64)[:, None]
        self._stalled_since_s, stalled_for_s = advance_stall_timer(self._stalled_since_s, stalled, now_s)
        return {
            OVERSPEED: (self._overspeed >= config.overspeed_readings).any(axis=1),
            OVERCURRENT: (self._overcurrent >= config.overcurrent_readings).any(axis=1),
            POSITION_LIMIT: (self._outside >= config.position_readings).any(axis=1),
            STALL: (stalled_for_s >= config.stall_time_s).any(axis=1),
        }
