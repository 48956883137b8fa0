"""Optional jerk-limited smoothing of raw targets with ``ruckig`` (before the safety filter).

The safety filter bounds speed and acceleration; a policy's step targets can still jerk the hand
(acceleration flipping sign from one tick to the next), which is hard on gears. :class:`JerkLimitedSmoother`
runs ruckig's online trajectory generator each tick towards the latest raw target under velocity,
acceleration and jerk limits, and returns its next position. It sits *before* the
:class:`~handrail.robot.safety_filter.TargetFilter`, so whatever it outputs is still checked: the
guarantees of the safety layer never depend on it. Non-finite targets pass straight through (the filter
rejects them) and the smoother keeps its state.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from ruckig import InputParameter, OutputParameter, Result, Ruckig

from handrail.robot.safety_limits import SafetyLimits


class JerkLimitedSmoother:
    """Per-tick ruckig smoothing of n joint targets [rad] with the limits' speed and acceleration."""

    def __init__(self, limits: SafetyLimits, control_period_s: float, max_jerk_rad_s3: float | ArrayLike = 800.0):
        n = limits.n_joints
        jerk = np.broadcast_to(np.asarray(max_jerk_rad_s3, dtype=np.float64), (n,))
        if not np.all(np.isfinite(jerk) & (jerk > 0)):
            raise ValueError(f"max_jerk_rad_s3 must be positive and finite, got {max_jerk_rad_s3!r}")
        self._generator = Ruckig(n, control_period_s)
        self._input = InputParameter(n)
        self._output = OutputParameter(n)
        self._input.max_velocity = limits.max_speed_rad_s.tolist()
        self._input.max_acceleration = limits.max_accel_rad_s2.tolist()
        self._input.max_jerk = jerk.tolist()
        self._n = n
        self._started = False

    def reset(self, position_rad: ArrayLike) -> None:
        """Start at rest at ``position_rad``."""
        position = np.asarray(position_rad, dtype=np.float64)
        self._input.current_position = position.tolist()
        self._input.current_velocity = [0.0] * self._n
        self._input.current_acceleration = [0.0] * self._n
        self._started = True

    def __call__(self, raw_target_rad: ArrayLike) -> NDArray[np.float64]:
        """The next smoothed target towards ``raw_target_rad`` (shape (n,))."""
        raw = np.asarray(raw_target_rad, dtype=np.float64)
        if not self._started:
            raise RuntimeError("JerkLimitedSmoother: call reset(position_rad) first")
        if not np.all(np.isfinite(raw)):
            return raw  # the safety filter rejects it; the smoother's state stays where it was
        self._input.target_position = raw.tolist()
        self._input.target_velocity = [0.0] * self._n
        self._input.target_acceleration = [0.0] * self._n
        result = self._generator.update(self._input, self._output)
        if result not in (Result.Working, Result.Finished):
            return raw  # ruckig refused (e.g. inconsistent input): leave it to the safety filter
        self._output.pass_to_input(self._input)
        return np.asarray(self._output.new_position, dtype=np.float64)
