"""The virtual hand's hidden reality: how the "physical" hand differs from the sim's nominal model.

A :class:`Reality` is drawn from a seed within :data:`REALITY_RANGES` (documented ranges, one place).
The virtual hand applies it to its MuJoCo model and servos; the rest of the stack may learn it only
through the wire. ``handrail emulate --reality-out FILE`` writes a sealed copy so that tests can check
what calibration recovered.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from handrail.robot.errors import RobotError

REALITY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Range:
    """A sampling range; ``log`` samples uniformly in log space (for multiplicative scales)."""

    low: float
    high: float
    log: bool = False
    doc: str = ""

    def sample(self, rng: np.random.Generator, size: int | None = None) -> np.ndarray | float:
        if self.log:
            return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size))
        return rng.uniform(self.low, self.high, size)


# Per-joint entries are drawn once per joint; the rest once per hand.
REALITY_RANGES: dict[str, Range] = {
    "frictionloss_scale": Range(0.5, 2.0, log=True, doc="x nominal joint frictionloss, per joint"),
    "damping_scale": Range(0.5, 2.0, log=True, doc="x nominal joint damping, per joint"),
    "armature_scale": Range(0.7, 1.5, log=True, doc="x nominal armature (reflected rotor inertia), per joint"),
    "torque_constant_scale": Range(0.8, 1.2, doc="x data-sheet torque constant (actuator gain), per joint"),
    "backlash_rad": Range(0.0, 0.015, doc="gear play between motor encoder and link [rad], per joint"),
    "encoder_offset_rad": Range(-0.08, 0.08, doc="encoder zero offset vs. the joint's true zero [rad], per joint"),
    "command_latency_s": Range(0.002, 0.012, doc="delay before a written goal takes effect [s]"),
    "position_noise_ticks": Range(0.2, 1.0, doc="std of encoder noise [ticks]"),
    "object_mass_scale": Range(0.8, 1.2, doc="x nominal cube mass"),
    "object_friction_scale": Range(0.7, 1.3, doc="x nominal cube sliding friction"),
    "ambient_temperature_c": Range(22.0, 30.0, doc="room temperature the servos cool towards [degC]"),
}
PER_JOINT = (
    "frictionloss_scale",
    "damping_scale",
    "armature_scale",
    "torque_constant_scale",
    "backlash_rad",
    "encoder_offset_rad",
)


class Reality(BaseModel):
    """One drawn reality. Per-joint tuples follow ``joint_names`` (the profile's policy order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = REALITY_SCHEMA_VERSION
    seed: int
    joint_names: tuple[str, ...] = Field(min_length=1)
    frictionloss_scale: tuple[float, ...]
    damping_scale: tuple[float, ...]
    armature_scale: tuple[float, ...]
    torque_constant_scale: tuple[float, ...]
    backlash_rad: tuple[float, ...]
    encoder_offset_rad: tuple[float, ...]
    command_latency_s: float = Field(ge=0)
    position_noise_ticks: float = Field(ge=0)
    object_mass_scale: float = Field(gt=0)
    object_friction_scale: float = Field(gt=0)
    ambient_temperature_c: float

    @model_validator(mode="after")
    def _per_joint_lengths(self) -> Reality:
        if self.schema_version != REALITY_SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not {REALITY_SCHEMA_VERSION}")
        for name in PER_JOINT:
            if len(getattr(self, name)) != len(self.joint_names):
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {len(self.joint_names)} joints")
        return self

    def per_joint(self, name: str) -> np.ndarray:
        """A per-joint field as a float array (n,)."""
        return np.asarray(getattr(self, name), dtype=np.float64)

    def write(self, path: Path) -> None:
        """Write the sealed copy as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Reality:
        """Read a sealed copy; RobotError names the file and the problem."""
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValidationError) as error:
            raise RobotError(f"reality file {path} cannot be read: {error}") from error


def nominal_reality(joint_names: tuple[str, ...]) -> Reality:
    """A reality equal to the sim's nominal model (no offsets, no play, no latency, no noise)."""
    n = len(joint_names)
    return Reality(
        seed=-1,
        joint_names=joint_names,
        frictionloss_scale=(1.0,) * n,
        damping_scale=(1.0,) * n,
        armature_scale=(1.0,) * n,
        torque_constant_scale=(1.0,) * n,
        backlash_rad=(0.0,) * n,
        encoder_offset_rad=(0.0,) * n,
        command_latency_s=0.0,
        position_noise_ticks=0.0,
        object_mass_scale=1.0,
        object_friction_scale=1.0,
        ambient_temperature_c=25.0,
    )


def draw_reality(seed: int, joint_names: tuple[str, ...]) -> Reality:
    """Draw a reality from ``seed``: the same seed always gives the same reality."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    values: dict[str, object] = {}
    for name, sampling in REALITY_RANGES.items():
        if name in PER_JOINT:
            values[name] = tuple(float(v) for v in sampling.sample(rng, len(joint_names)))
        else:
            values[name] = float(sampling.sample(rng))
    return Reality(seed=seed, joint_names=joint_names, **values)
