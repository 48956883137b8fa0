"""The dynamics calibration file: identified sim parameters per joint group, with their fit error.

Every value is a multiplier of the MJCF's nominal parameter (the same quantities, and the same sense, as the
training randomization's ``[hand]`` scales and ``[timing].command_latency_periods``), so
:func:`apply_dynamics` can write it into any compiled scene of the hand (the training environment's nominal
model with ``--dynamics``) and :func:`centre_randomization` can centre the training ranges on it.

Format (``kind = "dynamics"``)::

    schema_version = 1
    kind = "dynamics"
    profile = "leap_right"
    created = "2025-01-31T12:00:00+00:00"
    command_latency_s = 0.021          # from the host's write to the joint's response (bus, servo, loop)
    fit_rmse_before_rad = 0.031        # replay RMSE of the excitation, nominal model
    fit_rmse_after_rad = 0.004         # ... with these parameters
    n_ticks = 600

    [groups.mcp]
    joints = ["index_mcp", "middle_mcp", "ring_mcp"]
    kp_scale = 0.71                    # x actuator kp (gain and the matching bias)
    kv_scale = 0.3                     # x actuator kv (velocity feedback)
    force_limit_scale = 0.36           # x actuator forcerange
    damping_scale = 1.2                # x joint damping
    armature_scale = 1.0               # x joint armature
    frictionloss_scale = 1.4           # x joint frictionloss
    backlash_rad = 0.008               # gear play between encoder and link [rad] (absolute, not a multiplier)

The command model these values belong to (the servo's set-point profile and velocity feed-forward, the
latency, the play) is described in :mod:`handrail.calibration.replay`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mujoco
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.files import atomic_write_text, read_calibration_file, to_toml
from handrail.robot.profile import HandProfile

if TYPE_CHECKING:
    from handrail.sim.randomization import NonNegativeRange, RandomizationConfig

DYNAMICS_SCHEMA_VERSION = 1
SCALE_NAMES = (
    "kp_scale",
    "kv_scale",
    "force_limit_scale",
    "damping_scale",
    "armature_scale",
    "frictionloss_scale",
)


class GroupDynamics(BaseModel):
    """The multipliers of one joint group (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    joints: tuple[str, ...] = Field(min_length=1)
    kp_scale: float = 1.0
    kv_scale: float = 1.0
    force_limit_scale: float = 1.0
    damping_scale: float = 1.0
    armature_scale: float = 1.0
    frictionloss_scale: float = 1.0
    backlash_rad: float = Field(default=0.0, ge=0.0, le=0.1)

    @field_validator(*SCALE_NAMES)
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError("must be a finite multiplier > 0")
        return value


class DynamicsCalibration(BaseModel):
    """Identified dynamics of one hand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DYNAMICS_SCHEMA_VERSION
    kind: Literal["dynamics"] = "dynamics"
    profile: str
    created: str
    command_latency_s: float = Field(ge=0.0, le=0.5)
    fit_rmse_before_rad: float = Field(ge=0.0)
    fit_rmse_after_rad: float = Field(ge=0.0)
    n_ticks: int = Field(ge=0)
    groups: dict[str, GroupDynamics]

    @model_validator(mode="after")
    def _each_joint_once(self) -> DynamicsCalibration:
        seen: dict[str, str] = {}
        for group, dynamics in self.groups.items():
            for joint in dynamics.joints:
                if joint in seen:
                    raise ValueError(f"joint {joint!r} is in groups {seen[joint]!r} and {group!r}; give it one group")
                seen[joint] = group
        return self

    def scales_per_joint(self, joint_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Each scale as an array over ``joint_names`` (1.0 for joints in no group)."""
        scales = {name: np.ones(len(joint_names)) for name in SCALE_NAMES}
        for dynamics in self.groups.values():
            for joint in dynamics.joints:
                if joint in joint_names:
                    for name in SCALE_NAMES:
                        scales[name][joint_names.index(joint)] = getattr(dynamics, name)
        return scales

    def backlash_per_joint(self, joint_names: tuple[str, ...]) -> np.ndarray:
        """Gear play [rad] per joint of ``joint_names`` (0 for joints in no group)."""
        play = np.zeros(len(joint_names))
        for dynamics in self.groups.values():
            for joint in dynamics.joints:
                if joint in joint_names:
                    play[joint_names.index(joint)] = dynamics.backlash_rad
        return play

    def fingerprint(self) -> str:
        """Short SHA-256 of the file's content (every field; not its formatting, comments or path)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def record(self, path: Path | str | None) -> dict[str, Any]:
        """What a training run, its policy's metadata and an evaluation record about this file (JSON-able)."""
        return {
            "path": None if path is None else str(Path(path).resolve()),
            "fingerprint": self.fingerprint(),
            "profile": self.profile,
            "created": self.created,
            "command_latency_s": self.command_latency_s,
            "fit_rmse_before_rad": self.fit_rmse_before_rad,
            "fit_rmse_after_rad": self.fit_rmse_after_rad,
            "n_ticks": self.n_ticks,
        }

    def check_profile(self, profile: HandProfile) -> None:
        """Raise CalibrationFileError if this file is for another hand or names joints the profile lacks."""
        if self.profile != profile.name:
            raise CalibrationFileError(
                f"dynamics calibration is for profile {self.profile!r}, not {profile.name!r} — use this hand's file"
            )
        unknown = {joint for group in self.groups.values() for joint in group.joints} - set(profile.joint_names)
        if unknown:
            raise CalibrationFileError(
                f"dynamics calibration: groups name joints {sorted(unknown)} that profile {profile.name!r} lacks"
            )


def write_dynamics_calibration(path: Path, calibration: DynamicsCalibration) -> Path:
    """Write atomically (a crash leaves the previous file)."""
    return atomic_write_text(Path(path), to_toml(calibration.model_dump()))


def read_dynamics_calibration(path: Path, profile: HandProfile | None = None) -> DynamicsCalibration:
    """Read and validate a dynamics file; CalibrationFileError names the version, kind or field that is wrong.

    With ``profile``, the file must also be that hand's (:meth:`DynamicsCalibration.check_profile`).
    """
    path = Path(path)
    calibration = read_calibration_file(
        path,
        DynamicsCalibration,
        "dynamics",
        DYNAMICS_SCHEMA_VERSION,
        validation_hint="`handrail calibrate dynamics` writes every field: fix the file or identify the hand again",
    )
    if profile is not None:
        try:
            calibration.check_profile(profile)
        except CalibrationFileError as error:
            raise CalibrationFileError(f"{path}: {error}") from error
    return calibration


class NominalHandParameters:
    """The hand's nominal actuator and joint parameters in a compiled model, so scales can be applied again."""

    def __init__(self, model: mujoco.MjModel, profile: HandProfile):
        self.joint_names = profile.joint_names
        self.actuator_ids = np.array([model.actuator(joint.mjcf_actuator).id for joint in profile.joints])
        self.dof_ids = np.array([model.joint(joint.mjcf_joint).dofadr[0] for joint in profile.joints])
        self.kp = model.actuator_gainprm[self.actuator_ids, 0].copy()
        self.kv = -model.actuator_biasprm[self.actuator_ids, 2].copy()
        self.forcerange = model.actuator_forcerange[self.actuator_ids].copy()
        self.damping = model.dof_damping[self.dof_ids].copy()
        self.armature = model.dof_armature[self.dof_ids].copy()
        self.frictionloss = model.dof_frictionloss[self.dof_ids].copy()

    def apply(self, model: mujoco.MjModel, scales: Mapping[str, np.ndarray]) -> None:
        """Write nominal x ``scales`` (arrays over the profile's joints, keys of :data:`SCALE_NAMES`) into ``model``."""
        kp = self.kp * scales["kp_scale"]
        model.actuator_gainprm[self.actuator_ids, 0] = kp
        model.actuator_biasprm[self.actuator_ids, 1] = -kp
        model.actuator_biasprm[self.actuator_ids, 2] = -self.kv * scales["kv_scale"]
        model.actuator_forcerange[self.actuator_ids] = self.forcerange * scales["force_limit_scale"][:, None]
        model.dof_damping[self.dof_ids] = self.damping * scales["damping_scale"]
        model.dof_armature[self.dof_ids] = self.armature * scales["armature_scale"]
        model.dof_frictionloss[self.dof_ids] = self.frictionloss * scales["frictionloss_scale"]


def apply_dynamics(model: mujoco.MjModel, profile: HandProfile, dynamics: DynamicsCalibration) -> mujoco.MjModel:
    """Write ``dynamics`` into a freshly compiled scene of ``profile``'s hand (in place; returned for chaining).

    The command latency is not a model parameter: whoever steps the model delays commands by
    ``dynamics.command_latency_s`` (the replay in :mod:`~handrail.calibration.replay` does).
    """
    dynamics.check_profile(profile)
    NominalHandParameters(model, profile).apply(model, dynamics.scales_per_joint(profile.joint_names))
    return model


def centre_randomization(
    config: RandomizationConfig, dynamics: DynamicsCalibration, profile: HandProfile, control_rate_hz: float
) -> RandomizationConfig:
    """The training randomization ``config`` centred on ``dynamics``, for a model :func:`apply_dynamics` wrote it into.

    The ``[hand]`` multipliers keep their numbers: they multiply the model's values, and those are now the
    identified ones, joint by joint (kv included, which no range randomizes), so every drawn value is centred on
    the identified parameter of its own joint; their ``source`` says so. Scaling the ranges as well would count
    the identification twice. ``backlash_rad`` and ``command_latency_periods`` are absolute and belong to the
    environment, not the model: they are moved to centre on the mean identified play and on the identified
    latency (at ``control_rate_hz``), keeping their width, never below 0.
    """
    dynamics.check_profile(profile)
    label = f"dynamics calibration {dynamics.created} ({dynamics.fingerprint()})"
    hand_updates: dict[str, Any] = {}
    for name, entry in config.hand:
        if name in ("backlash_rad", "fingertip_friction", "joint_zero_offset_rad") or entry is None:
            continue
        hand_updates[name] = entry.model_copy(update={"source": f"{entry.source}; x the identified model of {label}"})
    play_rad = float(np.mean(dynamics.backlash_per_joint(profile.joint_names)))
    hand_updates["backlash_rad"] = _recentred(config.hand.backlash_rad, play_rad, label)
    latency = _recentred(config.timing.command_latency_periods, dynamics.command_latency_s * control_rate_hz, label)
    return config.model_copy(
        update={
            "hand": config.hand.model_copy(update=hand_updates),
            "timing": config.timing.model_copy(update={"command_latency_periods": latency}),
        }
    )


def _recentred(current: NonNegativeRange, centre: float, label: str) -> NonNegativeRange:
    half_width = 0.5 * (current.high - current.low)
    low = max(0.0, centre - half_width)
    return current.model_copy(
        update={"low": low, "high": low + 2 * half_width, "source": f"{current.source}; centred on {label}"}
    )
