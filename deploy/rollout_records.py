"""The records of a rollout log: its header, one control tick, an object pose; topics, phases, kinds.

Plain frozen dataclasses the control loop fills in and :class:`~handrail.deploy.rollout_log.RolloutLogWriter`
writes (``/header``, ``/tick``, ``/event``); :mod:`handrail.deploy.rollout_log` re-exports them, so callers
import everything from there. Units are in the names: [rad], [rad/s], [mA], [degC], [m], [s], [ms].
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import ArrayLike

from handrail import __version__
from handrail.errors import HandrailError

if TYPE_CHECKING:
    from handrail.robot.profile import HandProfile
    from handrail.robot.safety_limits import SafetyLimits

LOG_SCHEMA_VERSION = 1
HEADER_TOPIC = "/header"
TICK_TOPIC = "/tick"
EVENT_TOPIC = "/event"
MESSAGE_ENCODING = "json"
SCHEMA_ENCODING = "jsonschema"

# Per-tick latency phases [ms], in loop order; "total" is the whole tick, read to write.
PHASES = ("read", "pose", "observe", "infer", "filter", "write", "total")
FAULT, SAFE_STOP, OPERATOR_STOP, START, STOP, INFO = "fault", "safe_stop", "operator_stop", "start", "stop", "info"
EVENT_KINDS = (FAULT, SAFE_STOP, OPERATOR_STOP, START, STOP, INFO)
VERSIONED_PACKAGES = ("mujoco", "onnxruntime", "numpy", "mcap")


class RolloutLogError(HandrailError):
    """A rollout log cannot be written or read: bad input to the writer, not MCAP, not a handrail log."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes: the fingerprint of a policy or calibration file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_versions() -> dict[str, str]:
    """Versions of handrail, Python and the packages a rollout depends on ("not installed" when absent)."""
    versions = {"handrail": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass(frozen=True)
class LogHeader:
    """What a rollout ran with, written once at the start of the log (``/header``).

    Attributes:
        profile_name, profile_fingerprint: the hand profile (with its calibration overlay applied).
        joint_names: joints in policy order; every per-joint array of a tick has this length.
        control_rate_hz: the loop's target rate [Hz].
        start_time_iso: wall-clock start, ISO 8601 with time zone.
        start_monotonic_s: ``time.monotonic()`` at the same instant [s]; tick times are on this clock.
        profile: the whole profile as JSON (limits, motor ids, bus), so the log stands on its own.
        calibration: ``{"path", "sha256", "content"}`` of the joints calibration overlay, or None.
        policy_sha256: SHA-256 of the policy file, or None when no policy ran (e.g. a conformance check).
        policy_metadata: the policy file's handrail metadata (JSON), or None.
        safety_limits: the limits the safety layer enforced (``SafetyLimits.as_dict()``), or None.
        versions: handrail, python, mujoco, onnxruntime, numpy, mcap.
        extra: anything else the run wants on record (reality seed, pose source, command line).
    """

    profile_name: str
    profile_fingerprint: str
    joint_names: tuple[str, ...]
    control_rate_hz: float
    start_time_iso: str
    start_monotonic_s: float
    profile: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    policy_sha256: str | None = None
    policy_metadata: dict[str, Any] | None = None
    safety_limits: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=runtime_versions)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = LOG_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.joint_names:
            raise RolloutLogError("LogHeader.joint_names is empty — pass the profile's joints in policy order")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise RolloutLogError(f"LogHeader.control_rate_hz = {self.control_rate_hz!r} must be a positive number")
        object.__setattr__(self, "joint_names", tuple(self.joint_names))

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def start_unix_ns(self) -> int:
        """The start time as nanoseconds since the Unix epoch."""
        return int(datetime.fromisoformat(self.start_time_iso).timestamp() * 1e9)

    @classmethod
    def for_run(
        cls,
        profile: HandProfile,
        *,
        policy_path: str | Path | None = None,
        policy_metadata: Mapping[str, Any] | None = None,
        limits: SafetyLimits | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> LogHeader:
        """The header of a run starting now on ``profile`` (its calibration read from ``calibration_source``).

        ``policy_metadata`` is the policy's metadata as JSON (``json.loads(PolicyMetadata.to_json())``).
        """
        calibration = None
        if profile.calibration_source is not None:
            source = Path(profile.calibration_source)
            calibration = {
                "path": str(source),
                "sha256": file_sha256(source),
                "content": tomllib.loads(source.read_text()),
            }
        return cls(
            profile_name=profile.name,
            profile_fingerprint=profile.fingerprint(),
            joint_names=profile.joint_names,
            control_rate_hz=profile.control_rate_hz,
            start_time_iso=datetime.now(UTC).isoformat(),
            start_monotonic_s=time.monotonic(),
            profile=profile.model_dump(mode="json"),
            calibration=calibration,
            policy_sha256=file_sha256(policy_path) if policy_path is not None else None,
            policy_metadata=dict(policy_metadata) if policy_metadata is not None else None,
            safety_limits=limits.as_dict() if limits is not None else None,
            extra=dict(extra or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "joint_names": list(self.joint_names)}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: str = "the header") -> LogHeader:
        version_ = document.get("schema_version")
        if version_ != LOG_SCHEMA_VERSION:
            raise RolloutLogError(
                f"{source}: rollout log schema_version {version_!r} is not supported (this handrail reads "
                f"{LOG_SCHEMA_VERSION}) — read it with the handrail version that wrote it ({_writer_of(document)})"
            )
        known = set(cls.__dataclass_fields__)
        fields_ = {"versions": {}, **{key: value for key, value in document.items() if key in known}}
        try:
            return cls(**fields_)
        except TypeError as error:
            raise RolloutLogError(f"{source}: malformed rollout log header: {error}") from error


def _writer_of(document: Mapping[str, Any]) -> str:
    versions = document.get("versions")
    return f"handrail {versions.get('handrail', '?')}" if isinstance(versions, Mapping) else "unknown"


@dataclass(frozen=True, slots=True)
class PoseRecord:
    """The object pose estimate the loop used this tick, in the hand (palm) frame.

    ``position_m`` (3,) [m]; ``quat_wxyz`` (4,) unit quaternion, w first; ``age_s`` since the image it came
    from [s]; ``source`` names where it came from (``"ground_truth"`` for the virtual hand's simulator,
    ``"fiducial"``, ``"pose_model"``); ``valid`` is False when it was too old or missing (the observation
    then held the last valid estimate).
    """

    position_m: ArrayLike
    quat_wxyz: ArrayLike
    age_s: float
    source: str
    valid: bool


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One control tick, as the loop saw and did it. Per-joint arrays have shape (n_joints,), policy order.

    Attributes:
        tick: tick index from the start of the run (0, 1, ...).
        time_s: monotonic time at the start of the tick [s] (``time.monotonic()``).
        position_rad, velocity_rad_s, current_ma, temperature_c: measured state [rad], [rad/s], [mA], [degC].
        target_rad: the targets commanded after the safety layer [rad].
        action: the raw policy output in [-1, 1], (n_act,); None when no policy ran (the startup ramp).
        interventions: what the safety layer changed (``robot.safety_filter.Intervention`` or any
            ``(joint, kind, raw, allowed)``; joint -1 is the whole action).
        pose: the object pose estimate used, or None when the loop has no pose source.
        latency_ms: phase name -> duration [ms] for the phases of :data:`PHASES`; missing phases are null.
        missed_deadline: the tick ended after its deadline.
    """

    tick: int
    time_s: float
    position_rad: ArrayLike
    velocity_rad_s: ArrayLike
    current_ma: ArrayLike
    temperature_c: ArrayLike
    target_rad: ArrayLike
    action: ArrayLike | None = None
    interventions: Sequence[Sequence[Any]] = ()
    pose: PoseRecord | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    missed_deadline: bool = False


JOINT_ARRAYS = ("position_rad", "velocity_rad_s", "current_ma", "temperature_c", "target_rad")
