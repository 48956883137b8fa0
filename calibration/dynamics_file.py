"""The dynamics calibration file: identified sim parameters per joint group, with their fit error.

Every value is a multiplier of the MJCF's nominal parameter (the same quantities, and the same sense, as the
training randomization's ``[hand]`` scales and ``[timing].command_latency_periods``), so the file can centre
those ranges and :func:`apply_dynamics` can write it into any compiled scene of the hand.

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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import mujoco
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.files import atomic_write_text, describe_validation_error, read_toml, to_toml
from handrail.robot.profile import HandProfile

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


def read_dynamics_calibration(path: Path) -> DynamicsCalibration:
    """Read and validate a dynamics file; CalibrationFileError names the version, kind or field that is wrong."""
    path = Path(path)
    document = read_toml(path, "dynamics calibration")
    version = document.get("schema_version")
    if version != DYNAMICS_SCHEMA_VERSION:
        raise CalibrationFileError(
            f"dynamics calibration {path}: schema_version {version!r} is not supported (this handrail reads "
            f"{DYNAMICS_SCHEMA_VERSION}) — recalibrate with this handrail or upgrade it"
        )
    if document.get("kind") != "dynamics":
        raise CalibrationFileError(
            f"{path}: kind = {document.get('kind')!r}, but a 'dynamics' calibration file was expected — pass the "
            "right file"
        )
    try:
        return DynamicsCalibration.model_validate(document)
    except ValidationError as error:
        raise CalibrationFileError(describe_validation_error(f"dynamics calibration {path}", error)) from error


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


# Dynamics-file scale -> the training randomization's [hand] entry it centres.
RANDOMIZATION_ENTRIES = {
    "kp_scale": "actuator_kp_scale",
    "force_limit_scale": "actuator_force_limit_scale",
    "damping_scale": "joint_damping_scale",
    "armature_scale": "joint_armature_scale",
    "frictionloss_scale": "joint_frictionloss_scale",
}


def centre_randomization(config, dynamics: DynamicsCalibration, profile: HandProfile, control_rate_hz: float):
    """The training randomization ``config`` with its hand and latency ranges moved to centre on ``dynamics``.

    Each ``[hand]`` multiplier range is multiplied by the geometric mean (over joints) of the identified
    multiplier, keeping its width; ``backlash_rad`` is centred on the mean identified play and
    ``command_latency_periods`` on the identified latency (both keeping their width, never below 0). The
    ranges stay hand-wide: the randomization draws every joint from the same range.
    """
    dynamics.check_profile(profile)
    scales = dynamics.scales_per_joint(profile.joint_names)
    hand_updates = {}
    for scale_name, entry in RANDOMIZATION_ENTRIES.items():
        current = getattr(config.hand, entry)
        factor = float(np.exp(np.mean(np.log(scales[scale_name]))))
        hand_updates[entry] = current.model_copy(
            update={
                "low": current.low * factor,
                "high": current.high * factor,
                "source": f"{current.source}; centred x{factor:.3g} on dynamics calibration {dynamics.created}",
            }
        )
    play = float(np.mean(dynamics.backlash_per_joint(profile.joint_names)))
    hand_updates["backlash_rad"] = _recentred(config.hand.backlash_rad, play, dynamics.created)
    latency = _recentred(
        config.timing.command_latency_periods, dynamics.command_latency_s * control_rate_hz, dynamics.created
    )
    return config.model_copy(
        update={
            "hand": config.hand.model_copy(update=hand_updates),
            "timing": config.timing.model_copy(update={"command_latency_periods": latency}),
        }
    )


def _recentred(current, centre: float, created: str):
    half_width = 0.5 * (current.high - current.low)
    low = max(0.0, centre - half_width)
    return current.model_copy(
        update={"low": low, "high": low + 2 * half_width, "source": f"{current.source}; centred on {created}"}
    )
