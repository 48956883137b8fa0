"""The joints calibration file: the overlay that :func:`handrail.robot.profile.load_profile` lays over a profile.

Format (``kind = "joints"``; the fields the profile loader accepts, nothing else)::

    schema_version = 1
    kind = "joints"
    profile = "leap_right"                 # the profile's ``name``; the loader refuses another hand's file
    created = "2025-01-31T12:00:00+00:00"

    [joints.index_pip]
    zero_offset_rad = 0.0123               # joint_rad = direction * motor_rad / gear - zero_offset_rad
    direction = 1
    direction_check = "confirmed"          # how the stops checked the sign: confirmed, wrong, unverified

The profile loader refuses a zero offset beyond ±0.25 rad (more than the stops measurement allows) and a
direction that differs from the profile's unless ``direction_check = "wrong"`` says the stops showed it.

How each value was measured (contacts, span errors, the direction check) is not part of the overlay; the
``calibrate joints`` command prints it and can write it as a JSON report beside the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.files import atomic_write_text, read_calibration_file, to_toml

# The profile loader's CALIBRATION_SCHEMA_VERSION: the overlay is the robot stage's contract.
JOINTS_SCHEMA_VERSION = 1


class JointCalibrationEntry(BaseModel):
    """One joint's calibrated zero offset [rad], direction (+1/-1) and how the stops checked that sign."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zero_offset_rad: float
    direction: Literal[1, -1]
    direction_check: Literal["confirmed", "wrong", "unverified"] | None = None

    @field_validator("zero_offset_rad")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number [rad]")
        return value


class JointsCalibration(BaseModel):
    """The joints overlay of one hand profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = JOINTS_SCHEMA_VERSION
    kind: Literal["joints"] = "joints"
    profile: str
    created: str
    joints: dict[str, JointCalibrationEntry]

    @field_validator("joints")
    @classmethod
    def _not_empty(cls, joints: dict[str, JointCalibrationEntry]) -> dict[str, JointCalibrationEntry]:
        if not joints:
            raise ValueError("no joints — a joints calibration overlays at least one joint")
        return joints


def merge_joints_calibration(existing: JointsCalibration, new: JointsCalibration) -> JointsCalibration:
    """``existing`` with the joints ``new`` calibrated replaced (a run of a few joints keeps the others).

    Raises CalibrationFileError when the two are for different hand profiles.
    """
    if existing.profile != new.profile:
        raise CalibrationFileError(
            f"the existing calibration is for profile {existing.profile!r}, this run for {new.profile!r} — "
            "write it to another --out"
        )
    return new.model_copy(update={"joints": {**existing.joints, **new.joints}})


def write_joints_calibration(path: Path, calibration: JointsCalibration) -> Path:
    """Write the overlay atomically: a reader (or a crash) sees the previous file or this one, never a part."""
    return atomic_write_text(Path(path), to_toml(calibration.model_dump(exclude_none=True)))


def read_joints_calibration(path: Path) -> JointsCalibration:
    """Read and validate a joints overlay.

    Raises:
        CalibrationFileError: missing file, bad TOML, unknown ``schema_version``, another ``kind``, or a
            malformed field (the message names it).
    """
    return read_calibration_file(Path(path), JointsCalibration, "joints", JOINTS_SCHEMA_VERSION)
