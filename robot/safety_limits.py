"""Per-joint safety limits as arrays in policy order: the numbers the safety layer enforces.

:class:`SafetyLimits` is built once from a hand profile (which already carries its calibration overlay)
and shared by the simulator and the control loop, so a policy meets the same limits in both. It can
only be made tighter than the profile: ``speed_scale`` lies in (0, 1] and :meth:`SafetyLimits.tightened`
takes elementwise the stricter of two limit sets.

Units: positions [rad], speeds [rad/s], accelerations [rad/s^2], tracking window [rad], current [mA],
temperature [degC]. Every array has shape ``(n_joints,)`` and is read-only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.robot.errors import RobotError
from handrail.robot.profile import HandProfile

# Fields that must be > 0; the soft limits may take any finite value with low < high.
POSITIVE_FIELDS = (
    "max_speed_rad_s",
    "max_accel_rad_s2",
    "max_tracking_error_rad",
    "current_limit_ma",
    "temperature_limit_c",
)
FIELD_NAMES = ("soft_low_rad", "soft_high_rad", *POSITIVE_FIELDS)


class SafetyConfigError(RobotError):
    """Safety limits are malformed, or a request would loosen them."""


def _check_speed_scale(speed_scale: float) -> float:
    try:
        value = float(speed_scale)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise SafetyConfigError(f"--speed-scale can only tighten limits: give a value in (0, 1] (got {speed_scale!r})")
    return value


@dataclass(frozen=True, eq=False)
class SafetyLimits:
    """The limits of every joint, in policy order; each field is a read-only float64 array of shape (n,).

    Raises SafetyConfigError naming the field when shapes differ, a value is not finite, a limit that
    must be positive is not, or a soft lower limit is not below its upper limit.
    """

    soft_low_rad: NDArray[np.float64]
    soft_high_rad: NDArray[np.float64]
    max_speed_rad_s: NDArray[np.float64]
    max_accel_rad_s2: NDArray[np.float64]
    max_tracking_error_rad: NDArray[np.float64]
    current_limit_ma: NDArray[np.float64]
    temperature_limit_c: NDArray[np.float64]

    def __post_init__(self) -> None:
        n_joints: int | None = None
        for name in FIELD_NAMES:
            try:
                values = np.array(getattr(self, name), dtype=np.float64)  # a copy: callers keep theirs
            except (TypeError, ValueError) as error:
                raise SafetyConfigError(f"safety limit {name} is not an array of numbers: {error}") from error
            if values.ndim != 1 or values.size == 0:
                raise SafetyConfigError(
                    f"safety limit {name} must be a 1-D array, one value per joint; got shape {values.shape}"
                )
            if n_joints is None:
                n_joints = values.size
            elif values.size != n_joints:
                raise SafetyConfigError(
                    f"safety limit {name} has {values.size} values but soft_low_rad has {n_joints} — give one per joint"
                )
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise SafetyConfigError(
                    f"safety limit {name}[{bad[0]}] = {values[bad[0]]} is not a finite number — give a finite limit"
                )
            if name in POSITIVE_FIELDS:
                bad = np.flatnonzero(values <= 0)
                if bad.size:
                    raise SafetyConfigError(f"safety limit {name}[{bad[0]}] = {values[bad[0]]} must be > 0")
            values.setflags(write=False)
            object.__setattr__(self, name, values)
        bad = np.flatnonzero(~(self.soft_low_rad < self.soft_high_rad))
        if bad.size:
            joint = bad[0]
            raise SafetyConfigError(
                f"safety limits of joint {joint}: soft_low_rad {self.soft_low_rad[joint]} is not below "
                f"soft_high_rad {self.soft_high_rad[joint]} — the lower soft limit must be the smaller"
            )

    @property
    def n_joints(self) -> int:
        return int(self.soft_low_rad.size)

    @classmethod
    def from_profile(cls, profile: HandProfile, speed_scale: float = 1.0) -> SafetyLimits:
        """The profile's limits (calibration overlay included), with speed and acceleration times ``speed_scale``.

        Raises SafetyConfigError when ``speed_scale`` is not in (0, 1]: it may only tighten.
        """
        scale = _check_speed_scale(speed_scale)
        joints = profile.joints
        return cls(
            soft_low_rad=np.array([joint.soft_limits_rad[0] for joint in joints]),
            soft_high_rad=np.array([joint.soft_limits_rad[1] for joint in joints]),
            max_speed_rad_s=scale * np.array([joint.max_speed_rad_s for joint in joints]),
            max_accel_rad_s2=scale * np.array([joint.max_accel_rad_s2 for joint in joints]),
            max_tracking_error_rad=np.array([joint.max_tracking_error_rad for joint in joints]),
            current_limit_ma=np.array([joint.current_limit_ma for joint in joints]),
            temperature_limit_c=np.array([joint.temperature_limit_c for joint in joints]),
        )

    def tightened(self, other: SafetyLimits) -> SafetyLimits:
        """Elementwise the stricter of ``self`` and ``other``: the soft range is their intersection.

        Raises SafetyConfigError when the joint counts differ or a joint's soft ranges do not overlap.
        """
        if other.n_joints != self.n_joints:
            raise SafetyConfigError(
                f"cannot combine limits of {self.n_joints} and {other.n_joints} joints — use limits of the same hand"
            )
        low = np.maximum(self.soft_low_rad, other.soft_low_rad)
        high = np.minimum(self.soft_high_rad, other.soft_high_rad)
        disjoint = np.flatnonzero(~(low < high))
        if disjoint.size:
            joint = disjoint[0]
            raise SafetyConfigError(
                f"joint {joint}: soft ranges [{self.soft_low_rad[joint]}, {self.soft_high_rad[joint]}] and "
                f"[{other.soft_low_rad[joint]}, {other.soft_high_rad[joint]}] do not overlap — nothing would be allowed"
            )
        upper_bounds = {name: np.minimum(getattr(self, name), getattr(other, name)) for name in POSITIVE_FIELDS}
        return SafetyLimits(soft_low_rad=low, soft_high_rad=high, **upper_bounds)

    def scaled_speed(self, speed_scale: float) -> SafetyLimits:
        """These limits with speed and acceleration times ``speed_scale`` in (0, 1]."""
        scale = _check_speed_scale(speed_scale)
        values = self.as_arrays()
        values["max_speed_rad_s"] = scale * self.max_speed_rad_s
        values["max_accel_rad_s2"] = scale * self.max_accel_rad_s2
        return SafetyLimits(**values)

    def as_arrays(self) -> dict[str, NDArray[np.float64]]:
        """Field name -> array (the read-only arrays themselves)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def as_dict(self) -> dict[str, list[float]]:
        """Field name -> list of floats, for logs and ONNX metadata (JSON-ready)."""
        return {name: [float(value) for value in array] for name, array in self.as_arrays().items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, ArrayLike | Any]) -> SafetyLimits:
        """Inverse of :meth:`as_dict`; raises SafetyConfigError listing missing or unknown fields."""
        missing = [name for name in FIELD_NAMES if name not in data]
        unknown = sorted(set(data) - set(FIELD_NAMES))
        if missing or unknown:
            raise SafetyConfigError(
                f"safety limits: missing fields {missing}, unknown fields {unknown} — expected {', '.join(FIELD_NAMES)}"
            )
        return cls(**{name: data[name] for name in FIELD_NAMES})

    def equals(self, other: SafetyLimits) -> bool:
        """Whether every limit of every joint is the same (exactly)."""
        return other.n_joints == self.n_joints and all(
            np.array_equal(getattr(self, name), getattr(other, name)) for name in FIELD_NAMES
        )
