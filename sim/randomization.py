"""Domain randomization for the training environment: ranges from a file, one draw per episode, applied to a model.

The ranges live only in ``sim/configs/randomization.toml`` (or a file of the same schema); nothing here
holds a default number. Per episode the environment calls :func:`sample_episode` with its own
``np.random.Generator`` and gets an :class:`EpisodeRandomization` — every drawn value, logged with
:meth:`EpisodeRandomization.as_dict` as ``dr/<name>``. :func:`apply_to_model` writes the physical part into
an ``MjModel`` from a :class:`ModelSnapshot` of its nominal values, so episodes never compound. The rest
(latencies, noise, zero offsets, dropouts, backlash, pushes) stays in the sample for the environment.

For batched CPU stepping keep one ``MjModel`` (and one :class:`ModelSnapshot`) per simulation and call
:func:`apply_to_model` on each; :func:`randomized_fields` returns the same values as arrays without writing,
for stacking into per-world model fields.

``--no-dr`` is :func:`nominal_randomization`: every range pinned to its nominal value (scales 1, offsets,
noise, delays and probabilities 0, fingertip friction as in the MJCF), so the model stays nominal bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import mujoco
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from handrail.errors import HandrailError
from handrail.sim import leap
from handrail.toml_file import read_toml

RANDOMIZATION_SCHEMA_VERSION = 1

Distribution = Literal["uniform", "loguniform"]


class RandomizationError(HandrailError):
    """A randomization file is invalid, or a sample does not fit the model it is applied to."""


def default_randomization_path() -> Path:
    """The bundled randomization ranges, ``sim/configs/randomization.toml``."""
    return Path(str(resources.files("handrail.sim").joinpath("configs", "randomization.toml")))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Frozen):
    """A range drawn once per episode; ``loguniform`` draws uniformly in log space. Subclasses set the kind."""

    NOMINAL: ClassVar[float] = 0.0
    KIND: ClassVar[str] = "any real number"

    low: float
    high: float
    distribution: Distribution = "uniform"
    source: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low = {self.low}, high = {self.high}: both must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low = {self.low} is above high = {self.high} — swap them (low = high pins the value)")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"low = {self.low}: a loguniform range needs low > 0 — raise low or use uniform")
        self._check_kind()
        return self

    def _check_kind(self) -> None:
        """Raise ValueError when the range leaves the values its kind allows."""

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        """A float (``size=None``) or an array (size,) drawn from the range, inside [low, high]."""
        if self.low == self.high:
            return float(self.low) if size is None else np.full(size, self.low)
        if self.distribution == "loguniform":
            drawn = np.exp(rng.uniform(math.log(self.low), math.log(self.high), size))
        else:
            drawn = rng.uniform(self.low, self.high, size)
        # exp(log(x)) can land one ulp outside the range.
        drawn = np.clip(drawn, self.low, self.high)
        return float(drawn) if size is None else drawn

    @classmethod
    def pinned(cls, value: float, source: str = "") -> Range:
        return cls(low=value, high=value, source=source)


class ScaleRange(Range):
    """A multiplier of a nominal model value (nominal 1)."""

    NOMINAL: ClassVar[float] = 1.0
    KIND: ClassVar[str] = "a multiplier > 0"

    def _check_kind(self) -> None:
        if self.low <= 0:
            raise ValueError(f"low = {self.low}: a scale must be > 0 (1 keeps the nominal value)")


class OffsetRange(Range):
    """A signed offset added to a nominal value (nominal 0)."""

    KIND: ClassVar[str] = "a signed offset"


class NonNegativeRange(Range):
    """A magnitude, standard deviation or delay (nominal 0)."""

    KIND: ClassVar[str] = "a value >= 0"

    def _check_kind(self) -> None:
        if self.low < 0:
            raise ValueError(f"low = {self.low}: a magnitude or standard deviation cannot be negative — use low >= 0")


class PositiveRange(Range):
    """An absolute physical value > 0 (no nominal of its own: leaving the entry out keeps the MJCF's value)."""

    KIND: ClassVar[str] = "an absolute value > 0"

    def _check_kind(self) -> None:
        if self.low <= 0:
            raise ValueError(f"low = {self.low}: this absolute value must be > 0")


class ProbabilityRange(Range):
    """A probability per step (nominal 0)."""

    KIND: ClassVar[str] = "a probability in [0, 1]"

    def _check_kind(self) -> None:
        if self.low < 0 or self.high > 1:
            raise ValueError(f"[{self.low}, {self.high}]: a probability must lie in [0, 1]")


class StepsRange(_Frozen):
    """A whole number of control steps, drawn uniformly from ``low..high`` inclusive (nominal 0)."""

    NOMINAL: ClassVar[int] = 0
    KIND: ClassVar[str] = "whole control steps >= 0"

    low: int = Field(strict=False)
    high: int = Field(strict=False)
    distribution: Literal["uniform"] = "uniform"
    source: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> StepsRange:
        if self.low < 0:
            raise ValueError(f"low = {self.low}: a number of steps cannot be negative — use low >= 0")
        if self.low > self.high:
            raise ValueError(f"low = {self.low} is above high = {self.high} — swap them (low = high pins the value)")
        return self

    def sample(self, rng: np.random.Generator, size: None = None) -> int:
        """A whole number in [low, high]."""
        if self.low == self.high:
            return self.low
        return int(rng.integers(self.low, self.high, endpoint=True))

    @classmethod
    def pinned(cls, value: int, source: str = "") -> StepsRange:
        return cls(low=value, high=value, source=source)


class ObjectRanges(_Frozen):
    """The cube: mass, edge length and sliding friction, as multipliers of the scene's values."""

    mass_scale: ScaleRange
    size_scale: ScaleRange
    friction_scale: ScaleRange


class HandRanges(_Frozen):
    """The hand; every entry except ``fingertip_friction`` is drawn once per joint."""

    fingertip_friction: PositiveRange | None = None
    joint_damping_scale: ScaleRange
    joint_armature_scale: ScaleRange
    joint_frictionloss_scale: ScaleRange
    actuator_kp_scale: ScaleRange
    actuator_force_limit_scale: ScaleRange
    backlash_rad: NonNegativeRange
    joint_zero_offset_rad: OffsetRange


class TimingRanges(_Frozen):
    """Delays and jitter, in control periods."""

    command_latency_periods: NonNegativeRange
    control_period_jitter_std_fraction: NonNegativeRange
    joint_observation_delay_steps: StepsRange
    object_pose_latency_steps: StepsRange


class ObservationRanges(_Frozen):
    """Sensor noise: standard deviations drawn per episode, applied per step or once per episode."""

    joint_position_noise_std_rad: NonNegativeRange
    object_position_offset_std_m: NonNegativeRange
    object_position_noise_std_m: NonNegativeRange
    object_rotation_offset_std_deg: NonNegativeRange
    object_rotation_noise_std_deg: NonNegativeRange
    object_pose_dropout_probability: ProbabilityRange


class ActionRanges(_Frozen):
    """Noise on the commanded joint targets."""

    action_noise_std_rad: NonNegativeRange


class WorldRanges(_Frozen):
    """The world around the hand."""

    gravity_tilt_deg: NonNegativeRange


class PerturbationRanges(_Frozen):
    """Random pushes on the cube."""

    probability_per_step: ProbabilityRange
    force_n: NonNegativeRange
    duration_steps: StepsRange


_SECTIONS: dict[str, type[_Frozen]] = {
    "object": ObjectRanges,
    "hand": HandRanges,
    "timing": TimingRanges,
    "observation": ObservationRanges,
    "action": ActionRanges,
    "world": WorldRanges,
    "perturbation": PerturbationRanges,
}
_PER_JOINT = frozenset(name for name in HandRanges.model_fields if name != "fingertip_friction")


class RandomizationConfig(_Frozen):
    """Validated randomization ranges. ``enabled = false`` samples the nominal model and no noise."""

    schema_version: int
    enabled: bool = True
    object: ObjectRanges
    hand: HandRanges
    timing: TimingRanges
    observation: ObservationRanges
    action: ActionRanges
    world: WorldRanges
    perturbation: PerturbationRanges
    source: Path | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, version: int) -> int:
        if version != RANDOMIZATION_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is not supported (this handrail reads {RANDOMIZATION_SCHEMA_VERSION})"
                f" — set schema_version = {RANDOMIZATION_SCHEMA_VERSION} and check the fields against the bundled file"
            )
        return version

    def ranges(self) -> Iterator[tuple[str, str, Range | StepsRange | None]]:
        """(section, name, range) for every entry, in file order; an omitted optional entry gives None."""
        for section in _SECTIONS:
            values = getattr(self, section)
            for name in type(values).model_fields:
                yield section, name, getattr(values, name)


def load_randomization(path: str | Path | None = None) -> RandomizationConfig:
    """Load and validate a randomization file (default: the bundled ``sim/configs/randomization.toml``).

    Raises:
        RandomizationError: naming the file, each bad field (``hand.joint_damping_scale.low``), its value
            and the fix.
    """
    file_path = Path(path).expanduser() if path is not None else default_randomization_path()
    document = read_toml(
        file_path,
        "randomization file",
        RandomizationError,
        missing_hint=f"check the path (bundled: {default_randomization_path()})",
    )
    if "source" in document:
        raise RandomizationError(f"randomization file {file_path}: `source` is set on load — remove it from the file")
    try:
        return RandomizationConfig.model_validate({**document, "source": file_path.resolve()})
    except ValidationError as error:
        raise RandomizationError(_describe_validation_error(file_path, error)) from error


def nominal_randomization() -> RandomizationConfig:
    """Randomization off (``--no-dr``): every range pinned to its nominal value, ``enabled = false``."""
    sections: dict[str, Any] = {}
    for section, section_type in _SECTIONS.items():
        values: dict[str, Any] = {}
        for name, info in section_type.model_fields.items():
            if not info.is_required():
                continue  # optional absolute entries: left out keeps the MJCF's value
            range_type = info.annotation
            assert isinstance(range_type, type) and issubclass(range_type, Range | StepsRange)
            values[name] = range_type.pinned(range_type.NOMINAL, source="nominal (randomization off)")
        sections[section] = section_type(**values)
    return RandomizationConfig(schema_version=RANDOMIZATION_SCHEMA_VERSION, enabled=False, **sections)


def _describe_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"randomization file {path} is invalid:"]
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"] if not str(part).startswith("function-after"))
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field — remove it or check its spelling against the bundled file"
        elif problem["type"] == "missing":
            message = "missing — add it, e.g. { low = ..., high = ..., source = ... }"
        elif problem["type"] == "literal_error":
            message = f"{message} (got {problem.get('input')!r})"
        lines.append(f"  {location or '<root>'}: {message}")
    return "\n".join(lines)


def describe_ranges(config: RandomizationConfig) -> str:
    """Every range as a plain-text table (name, distribution, low, high, nominal, drawn, source)."""
    state = "enabled" if config.enabled else "disabled (nominal model, no noise)"
    rows = [("name", "distribution", "low", "high", "nominal", "drawn", "source")]
    for section, name, entry in config.ranges():
        drawn = "per joint" if section == "hand" and name in _PER_JOINT else "per episode"
        if entry is None:
            rows.append((f"{section}.{name}", "-", "-", "-", "MJCF", "not randomized", "entry left out"))
            continue
        nominal = "MJCF" if isinstance(entry, PositiveRange) else f"{type(entry).NOMINAL:g}"
        distribution = "integer" if isinstance(entry, StepsRange) else entry.distribution
        rows.append(
            (f"{section}.{name}", distribution, f"{entry.low:g}", f"{entry.high:g}", nominal, drawn, entry.source)
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [f"domain randomization: {state}; file: {config.source or '(built in code)'}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class EpisodeRandomization:
    """Everything drawn for one episode. Per-joint arrays (n_joints,) follow the profile's policy order.

    Model fields (written by :func:`apply_to_model`): the ``object_*_scale`` values, ``fingertip_friction``
    (None keeps the MJCF's), the ``joint_*_scale``/``actuator_*_scale`` arrays and the gravity tilt. The
    environment uses the rest itself; per-step noise is drawn by it with the standard deviations here. A
    cube scaled by ``object_size_scale`` needs its reset height raised by ``(scale - 1)`` half-edges.
    """

    object_mass_scale: float
    object_size_scale: float
    object_friction_scale: float
    fingertip_friction: float | None
    joint_damping_scale: np.ndarray  # (n_joints,)
    joint_armature_scale: np.ndarray  # (n_joints,)
    joint_frictionloss_scale: np.ndarray  # (n_joints,)
    actuator_kp_scale: np.ndarray  # (n_joints,)
    actuator_force_limit_scale: np.ndarray  # (n_joints,)
    backlash_rad: np.ndarray  # (n_joints,) [rad]
    joint_zero_offset_rad: np.ndarray  # (n_joints,) [rad], added to measured joint positions
    command_latency_periods: float  # [control periods]
    control_period_jitter_std_fraction: float  # std of each period's length / nominal period
    joint_observation_delay_steps: int
    object_pose_latency_steps: int
    joint_position_noise_std_rad: float  # per step [rad]
    object_position_offset_m: np.ndarray  # (3,) [m], world frame, fixed for the episode
    object_position_noise_std_m: float  # per step, per axis [m]
    object_rotation_offset_rotvec_rad: np.ndarray  # (3,) axis * angle [rad], fixed for the episode
    object_rotation_noise_std_rad: float  # per step, angle about a random axis [rad]
    object_pose_dropout_probability: float  # per step
    action_noise_std_rad: float  # per step, on joint targets [rad]
    gravity_tilt_rad: float  # angle between gravity and the world -z
    gravity_tilt_azimuth_rad: float  # direction of the tilt in the world xy plane, from +x
    perturbation_probability_per_step: float
    perturbation_force_n: float  # [N], random direction per push
    perturbation_duration_steps: int

    def __post_init__(self) -> None:
        n_joints = len(self.joint_damping_scale)
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, np.ndarray):
                continue
            expected = (3,) if field.name.startswith("object_") else (n_joints,)
            if value.shape != expected:
                raise ValueError(f"{field.name} has shape {value.shape}, expected {expected}")
            value.setflags(write=False)

    @property
    def n_joints(self) -> int:
        return len(self.joint_damping_scale)

    def as_dict(self, joint_names: Sequence[str] | None = None) -> dict[str, float]:
        """Every drawn value as ``dr/<name>`` (``dr/<name>/<joint>`` per joint, ``/x``-``/z`` for vectors)."""
        if joint_names is not None and len(joint_names) != self.n_joints:
            raise RandomizationError(f"as_dict: {len(joint_names)} joint names for {self.n_joints} joints")
        labels = list(joint_names) if joint_names is not None else [str(i) for i in range(self.n_joints)]
        logged: dict[str, float] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, np.ndarray):
                parts = ("x", "y", "z") if value.shape == (3,) and field.name.startswith("object_") else labels
                for part, element in zip(parts, value, strict=True):
                    logged[f"dr/{field.name}/{part}"] = float(element)
            else:
                logged[f"dr/{field.name}"] = float(value)
        return logged


def sample_episode(config: RandomizationConfig, rng: np.random.Generator, n_joints: int) -> EpisodeRandomization:
    """Draw one episode's randomization; the same config and generator state give the same sample.

    Give it a generator of its own (e.g. ``np.random.default_rng(seed_sequence.spawn(1)[0])``) so that
    switching randomization off does not shift the environment's other random streams.
    """
    if n_joints < 1:
        raise RandomizationError(f"sample_episode: n_joints = {n_joints}; give the hand's number of joints")
    if not config.enabled:
        config = nominal_randomization()
    hand, timing, observation = config.hand, config.timing, config.observation
    return EpisodeRandomization(
        object_mass_scale=config.object.mass_scale.sample(rng),
        object_size_scale=config.object.size_scale.sample(rng),
        object_friction_scale=config.object.friction_scale.sample(rng),
        fingertip_friction=None if hand.fingertip_friction is None else hand.fingertip_friction.sample(rng),
        joint_damping_scale=hand.joint_damping_scale.sample(rng, n_joints),
        joint_armature_scale=hand.joint_armature_scale.sample(rng, n_joints),
        joint_frictionloss_scale=hand.joint_frictionloss_scale.sample(rng, n_joints),
        actuator_kp_scale=hand.actuator_kp_scale.sample(rng, n_joints),
        actuator_force_limit_scale=hand.actuator_force_limit_scale.sample(rng, n_joints),
        backlash_rad=hand.backlash_rad.sample(rng, n_joints),
        joint_zero_offset_rad=hand.joint_zero_offset_rad.sample(rng, n_joints),
        command_latency_periods=timing.command_latency_periods.sample(rng),
        control_period_jitter_std_fraction=timing.control_period_jitter_std_fraction.sample(rng),
        joint_observation_delay_steps=timing.joint_observation_delay_steps.sample(rng),
        object_pose_latency_steps=timing.object_pose_latency_steps.sample(rng),
        joint_position_noise_std_rad=observation.joint_position_noise_std_rad.sample(rng),
        object_position_offset_m=_gaussian_vector(rng, observation.object_position_offset_std_m.sample(rng)),
        object_position_noise_std_m=observation.object_position_noise_std_m.sample(rng),
        object_rotation_offset_rotvec_rad=_random_rotvec(
            rng, math.radians(observation.object_rotation_offset_std_deg.sample(rng))
        ),
        object_rotation_noise_std_rad=math.radians(observation.object_rotation_noise_std_deg.sample(rng)),
        object_pose_dropout_probability=observation.object_pose_dropout_probability.sample(rng),
        action_noise_std_rad=config.action.action_noise_std_rad.sample(rng),
        gravity_tilt_rad=math.radians(config.world.gravity_tilt_deg.sample(rng)),
        gravity_tilt_azimuth_rad=float(rng.uniform(0.0, 2.0 * math.pi)) if config.enabled else 0.0,
        perturbation_probability_per_step=config.perturbation.probability_per_step.sample(rng),
        perturbation_force_n=config.perturbation.force_n.sample(rng),
        perturbation_duration_steps=config.perturbation.duration_steps.sample(rng),
    )


def _gaussian_vector(rng: np.random.Generator, std: float) -> np.ndarray:
    """(3,) with each component ~ N(0, std); exact zeros for std = 0."""
    return np.zeros(3) if std == 0 else rng.normal(0.0, std, 3)


def _random_rotvec(rng: np.random.Generator, angle_std_rad: float) -> np.ndarray:
    """(3,) rotation vector: a uniformly random axis times an angle ~ N(0, angle_std_rad); zeros for std = 0."""
    if angle_std_rad == 0:
        return np.zeros(3)
    axis = rng.normal(size=3)
    return axis / np.linalg.norm(axis) * rng.normal(0.0, angle_std_rad)


# ---- the model side ------------------------------------------------------------------------------------------

# Model arrays apply_to_model may write; "opt.gravity" is model.opt.gravity.
SNAPSHOT_FIELDS = (
    "body_mass",
    "body_inertia",
    "geom_size",
    "geom_pos",
    "geom_rbound",
    "geom_aabb",
    "geom_friction",
    "dof_damping",
    "dof_armature",
    "dof_frictionloss",
    "actuator_gainprm",
    "actuator_biasprm",
    "actuator_forcerange",
    "opt.gravity",
)
# Geom types whose size a scale can change safely (meshes and height fields keep their own vertices).
_SCALABLE_GEOM_TYPES = frozenset(
    int(t)
    for t in (
        mujoco.mjtGeom.mjGEOM_SPHERE,
        mujoco.mjtGeom.mjGEOM_CAPSULE,
        mujoco.mjtGeom.mjGEOM_ELLIPSOID,
        mujoco.mjtGeom.mjGEOM_CYLINDER,
        mujoco.mjtGeom.mjGEOM_BOX,
    )
)


def _model_array(model: mujoco.MjModel, name: str) -> np.ndarray:
    return model.opt.gravity if name == "opt.gravity" else getattr(model, name)


@dataclass(frozen=True)
class ModelSnapshot:
    """Read-only copies of a model's nominal values for :data:`SNAPSHOT_FIELDS`; take it once, before any DR."""

    arrays: Mapping[str, np.ndarray]

    @classmethod
    def take(cls, model: mujoco.MjModel) -> ModelSnapshot:
        arrays = {}
        for name in SNAPSHOT_FIELDS:
            copy = np.array(_model_array(model, name), copy=True)
            copy.setflags(write=False)
            arrays[name] = copy
        return cls(arrays=arrays)


@dataclass(frozen=True)
class RandomizationTargets:
    """Where the randomization lands in one compiled scene; ids follow the profile's policy order."""

    cube_body_id: int
    cube_geom_ids: tuple[int, ...]  # every geom of the cube body: the collision box and the drawn faces
    cube_collision_geom_ids: tuple[int, ...]
    fingertip_geom_ids: tuple[int, ...]  # one per tip site, the colliding geom nearest the site
    dof_ids: tuple[int, ...]  # (n_joints,)
    actuator_ids: tuple[int, ...]  # (n_joints,)
    cube_is_resizable: bool  # every cube geom is a primitive (box, sphere, ...), so its size can be scaled

    @classmethod
    def find(
        cls,
        model: mujoco.MjModel,
        joint_names: Sequence[str] = leap.JOINT_NAMES,
        actuator_names: Sequence[str] = leap.ACTUATOR_NAMES,
        tip_site_names: Sequence[str] = leap.FINGERTIP_SITE_NAMES,
    ) -> RandomizationTargets:
        """Look the targets up by name; RandomizationError names what is missing or unsuitable.

        ``joint_names``/``actuator_names`` are the MJCF names in policy order (a profile's ``mjcf_joint`` and
        ``mjcf_actuator``), ``tip_site_names`` the scene's fingertip sites (``BatchHandEnv.fingertip_sites``).
        Every actuator must be a position servo (``biasprm[1] = -gainprm[0]``), since the kp scale keeps that
        relation.
        """
        if len(joint_names) != len(actuator_names):
            raise RandomizationError(f"{len(joint_names)} joint names but {len(actuator_names)} actuator names")
        cube_body_id = _id(model, mujoco.mjtObj.mjOBJ_BODY, leap.CUBE_BODY_NAME, "body")
        cube_geom_ids = tuple(int(g) for g in np.flatnonzero(model.geom_bodyid == cube_body_id))
        cube_collision = tuple(g for g in cube_geom_ids if _collides(model, g))
        if not cube_collision:
            raise RandomizationError(f"body '{leap.CUBE_BODY_NAME}' has no colliding geom to randomize")
        tips = []
        for site_name in tip_site_names:
            site_id = _id(model, mujoco.mjtObj.mjOBJ_SITE, site_name, "site")
            body_id = model.site_bodyid[site_id]
            candidates = [int(g) for g in np.flatnonzero(model.geom_bodyid == body_id) if _collides(model, g)]
            if not candidates:
                raise RandomizationError(f"tip site '{site_name}': its body has no colliding geom (the fingertip)")
            distances = [np.linalg.norm(model.geom_pos[g] - model.site_pos[site_id]) for g in candidates]
            tips.append(candidates[int(np.argmin(distances))])
        dof_ids = []
        for name in joint_names:
            joint_id = _id(model, mujoco.mjtObj.mjOBJ_JOINT, name, "joint")
            dof_ids.append(int(model.jnt_dofadr[joint_id]))
        actuator_ids = []
        for name in actuator_names:
            actuator_id = _id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name, "actuator")
            if model.actuator_biasprm[actuator_id, 1] != -model.actuator_gainprm[actuator_id, 0]:
                raise RandomizationError(
                    f"actuator '{name}' is not a position servo (biasprm[1] != -gainprm[0]); kp randomization "
                    f"needs <position> actuators"
                )
            actuator_ids.append(actuator_id)
        return cls(
            cube_body_id=cube_body_id,
            cube_geom_ids=cube_geom_ids,
            cube_collision_geom_ids=cube_collision,
            fingertip_geom_ids=tuple(tips),
            dof_ids=tuple(dof_ids),
            actuator_ids=tuple(actuator_ids),
            cube_is_resizable=all(int(model.geom_type[g]) in _SCALABLE_GEOM_TYPES for g in cube_geom_ids),
        )


def _id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str, what: str) -> int:
    object_id = mujoco.mj_name2id(model, kind, name)
    if object_id < 0:
        raise RandomizationError(f"the model has no {what} named '{name}' — check the scene and the hand MJCF names")
    return int(object_id)


def _collides(model: mujoco.MjModel, geom_id: int) -> bool:
    return bool(model.geom_contype[geom_id] or model.geom_conaffinity[geom_id])


def randomized_fields(
    nominal: ModelSnapshot, sample: EpisodeRandomization, targets: RandomizationTargets
) -> dict[str, np.ndarray]:
    """The model arrays for ``sample``, computed from the nominal snapshot; nothing is written.

    Keys are :data:`SNAPSHOT_FIELDS`. Stack the dicts of several samples for per-world batched fields.
    """
    if len(targets.dof_ids) != sample.n_joints:
        raise RandomizationError(
            f"the sample has {sample.n_joints} joints but the model targets {len(targets.dof_ids)} — draw it "
            f"with n_joints = {len(targets.dof_ids)}"
        )
    out = {name: array.copy() for name, array in nominal.arrays.items()}
    cube, size_scale = targets.cube_body_id, sample.object_size_scale
    out["body_mass"][cube] *= sample.object_mass_scale
    # A box's inertia is m (a^2 + b^2) / 12: it grows with the mass and with the square of the edge.
    out["body_inertia"][cube] *= sample.object_mass_scale * size_scale**2
    if size_scale != 1.0:
        if not targets.cube_is_resizable:
            raise RandomizationError(
                "the cube has a mesh or height-field geom, whose size a scale cannot change — pin "
                "object.size_scale to 1 (low = high = 1)"
            )
        ids = list(targets.cube_geom_ids)
        # Scaling about the body origin scales each geom's size, its offset and its bounding volumes alike.
        for name in ("geom_size", "geom_pos", "geom_rbound", "geom_aabb"):
            out[name][ids] *= size_scale
    out["geom_friction"][list(targets.cube_collision_geom_ids), 0] *= sample.object_friction_scale
    if sample.fingertip_friction is not None:
        out["geom_friction"][list(targets.fingertip_geom_ids), 0] = sample.fingertip_friction
    dofs, actuators = list(targets.dof_ids), list(targets.actuator_ids)
    out["dof_damping"][dofs] *= sample.joint_damping_scale
    out["dof_armature"][dofs] *= sample.joint_armature_scale
    out["dof_frictionloss"][dofs] *= sample.joint_frictionloss_scale
    out["actuator_gainprm"][actuators, 0] *= sample.actuator_kp_scale
    out["actuator_biasprm"][actuators, 1] = -out["actuator_gainprm"][actuators, 0]
    out["actuator_forcerange"][actuators] *= sample.actuator_force_limit_scale[:, None]
    out["opt.gravity"] = _tilted(out["opt.gravity"], sample.gravity_tilt_rad, sample.gravity_tilt_azimuth_rad)
    return out


def _tilted(gravity: np.ndarray, tilt_rad: float, azimuth_rad: float) -> np.ndarray:
    """``gravity`` turned by ``tilt_rad`` about the horizontal axis perpendicular to the azimuth direction."""
    if tilt_rad == 0.0:
        return gravity
    axis = np.array([-math.sin(azimuth_rad), math.cos(azimuth_rad), 0.0])
    # Rodrigues' rotation formula.
    return (
        gravity * math.cos(tilt_rad)
        + np.cross(axis, gravity) * math.sin(tilt_rad)
        + axis * float(axis @ gravity) * (1.0 - math.cos(tilt_rad))
    )


def apply_to_model(
    model: mujoco.MjModel,
    nominal: ModelSnapshot,
    sample: EpisodeRandomization,
    targets: RandomizationTargets,
    *,
    recompute_constants: bool = True,
) -> None:
    """Write ``sample`` into ``model`` from the nominal snapshot (episodes never compound).

    With ``recompute_constants`` it then runs ``mj_setConst`` on a scratch ``MjData`` so that the derived
    constants (subtree masses, inverse weights used by constraint softness, the bounding-volume tree the
    collision midphase uses) follow the new masses, armature and cube size; a resized cube needs it.
    Call it between episodes, before ``mj_resetData``. For several simulations give each its own
    model and snapshot.
    """
    for name, array in nominal.arrays.items():
        if _model_array(model, name).shape != array.shape:
            raise RandomizationError(
                f"the snapshot's {name} has shape {array.shape} but the model's is "
                f"{_model_array(model, name).shape} — take the snapshot from this model"
            )
    if not recompute_constants and sample.object_size_scale != 1.0:
        raise RandomizationError(
            "a resized cube needs recompute_constants=True (mj_setConst rebuilds its bounding volumes)"
        )
    for name, array in randomized_fields(nominal, sample, targets).items():
        _model_array(model, name)[...] = array
    if recompute_constants:
        mujoco.mj_setConst(model, mujoco.MjData(model))
