"""Hand profiles: one validated file per hand, in policy order, plus the calibration overlay.

A profile (``robot/profiles/*.toml``) names, for each joint in the order the policy sees them, its MJCF
joint and actuator, motor id, direction (+1/-1), gear ratio, zero offset [rad], soft position limits [rad], home
position [rad], max speed [rad/s], max acceleration [rad/s^2], current limit [mA] and temperature limit
[degC]; the bus (port, baud, protocol, motor model); and the control rate [Hz]. ``[joint_defaults]``
gives hand-wide values that a joint entry may tighten for itself but never loosen.

A calibration overlay (a separate TOML written by the calibration stage) replaces zero offsets and
directions and may tighten limits; a recalibration never edits the profile itself.

Every problem raises :class:`~handrail.robot.errors.ProfileError` naming the file, the field, the value
and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from handrail.robot.errors import ProfileError
from handrail.toml_file import read_toml

PROFILE_SCHEMA_VERSION = 1
CALIBRATION_SCHEMA_VERSION = 1

# Baud rates an X-series servo accepts (ROBOTIS e-manual, Baud Rate register).
DYNAMIXEL_BAUD_RATES = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 4_500_000)

# Limits that a joint entry or a calibration overlay may tighten but never loosen.
TIGHTEN_ONLY_LIMITS = (
    "max_speed_rad_s",
    "max_accel_rad_s2",
    "max_tracking_error_rad",
    "current_limit_ma",
    "temperature_limit_c",
)

_FIELD_FIXES = {
    "motor_id": "use the servo's bus id, 0-252",
    "direction": "use 1 when the joint angle grows with the motor angle, -1 when it shrinks",
    "gear_ratio": "give motor turns per joint turn, 1.0 for a direct-drive servo horn",
    "max_speed_rad_s": "give a positive speed in rad/s (LEAP default: 3.0)",
    "max_accel_rad_s2": "give a positive acceleration in rad/s^2",
    "max_tracking_error_rad": "give the largest target-to-measured distance in rad, e.g. 0.25",
    "current_limit_ma": "give a positive current in mA (XC330 default for LEAP: 350)",
    "temperature_limit_c": "give a temperature in degC between 20 and 100 (XC330 default: 70)",
    "control_rate_hz": "give the control loop rate in Hz, e.g. 30",
    "baud": f"use one of {', '.join(str(b) for b in DYNAMIXEL_BAUD_RATES)}",
    "timeout_ms": "give the status-packet timeout in ms, e.g. 20",
    "bus_watchdog_ms": "give 20-2540 ms (Bus Watchdog counts in 20 ms steps)",
    "protocol": "handrail speaks Dynamixel Protocol 2.0 only: set protocol = 2.0",
}


def _is_number(value: object) -> bool:
    """A TOML number: an int or a float, not a bool and not text ("45" is text, however it reads)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _only_numbers(value: object) -> bool:
    """A number, or a list of numbers (soft limits, a mount pose)."""
    return all(_is_number(item) for item in (value if isinstance(value, list | tuple) else [value]))


def _wants_numbers(annotation: object) -> bool:
    """Whether a field holds numbers (float, int, an optional one, a tuple of them or a numeric Literal)."""
    if annotation in (float, int):
        return True
    arguments = get_args(annotation)
    if get_origin(annotation) is Literal:
        return all(_is_number(argument) for argument in arguments)
    return bool(arguments) and all(
        argument is type(None) or _wants_numbers(argument) for argument in arguments if argument is not Ellipsis
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Lax validation would read "45" as 45.0 after the tighten-only checks on the raw values let it past.
        if info.field_name is None or not _wants_numbers(cls.model_fields[info.field_name].annotation):
            return value
        if value is None or _only_numbers(value):
            return value
        raise ValueError(f"{value!r} is not a number — write it without quotes (and not true/false)")


class BusSpec(_Frozen):
    """The serial bus the hand's servos share."""

    port: str = Field(min_length=1)
    baud: int
    protocol: Literal[2.0]
    motor_model: str = Field(min_length=1)
    timeout_ms: float = Field(gt=0, le=1000)
    fast_sync_read: bool = True
    # A status packet that times out or arrives corrupt is asked for again this many times, at once,
    # before it is a comms fault (a USB-serial link loses the odd packet; a cut cable loses them all).
    retries: int = Field(1, ge=0, le=3)

    @field_validator("baud")
    @classmethod
    def _baud_is_dynamixel(cls, baud: int) -> int:
        if baud not in DYNAMIXEL_BAUD_RATES:
            raise ValueError(f"{baud} is not a Dynamixel baud rate")
        return baud


class ServoSpec(_Frozen):
    """Servo-side settings written by ``configure``: position gains (register units) and bus watchdog."""

    position_p_gain: int = Field(ge=0, le=16383)
    position_i_gain: int = Field(ge=0, le=16383)
    position_d_gain: int = Field(ge=0, le=16383)
    bus_watchdog_ms: int = Field(ge=20, le=2540)
    return_delay_us: int = Field(ge=0, le=508)


class MountSpec(_Frozen):
    """How the hand MJCF sits in the scene: the pose of the MJCF's own world frame in the hand frame.

    The hand frame is the scene's: palm surface at z = 0 facing +z, fingers along +x, the cube resting on
    the palm at about (0.048, 0.004, 0.03) m. A model whose palm already lies so (the bundled one) needs no
    mount; one that puts its palm elsewhere (MuJoCo Menagerie's LEAP hand: 0.1 m up and turned over) is
    moved by this pose instead of an edited file.
    """

    position_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    @model_validator(mode="after")
    def _finite_unit_quaternion(self) -> MountSpec:
        if not all(math.isfinite(v) for v in (*self.position_m, *self.quat_wxyz)):
            raise ValueError("position_m and quat_wxyz must be finite numbers")
        norm = math.sqrt(sum(v * v for v in self.quat_wxyz))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(
                f"quat_wxyz {list(self.quat_wxyz)} has norm {norm:.4f}, not 1 — give a unit quaternion, w first"
            )
        return self


# The bundled model's fingertip sites; a profile names its own (a site, geom or body of its MJCF).
DEFAULT_FINGERTIPS = ("if_tip", "mf_tip", "rf_tip", "th_tip")


class JointSpec(_Frozen):
    """One actuated joint of the hand, in joint units (rad, rad/s, mA, degC)."""

    name: str = Field(min_length=1)
    mjcf_joint: str = Field(min_length=1)
    mjcf_actuator: str = Field(min_length=1)
    motor_id: int = Field(ge=0, le=252)
    direction: Literal[1, -1]
    gear_ratio: float = Field(gt=0)
    zero_offset_rad: float
    soft_limits_rad: tuple[float, float]
    home_rad: float
    max_speed_rad_s: float = Field(gt=0)
    max_accel_rad_s2: float = Field(gt=0)
    max_tracking_error_rad: float = Field(gt=0, le=3.2)
    current_limit_ma: float = Field(gt=0)
    temperature_limit_c: float = Field(ge=20, le=100)

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> JointSpec:
        low_rad, high_rad = self.soft_limits_rad
        if not all(math.isfinite(v) for v in (low_rad, high_rad, self.home_rad, self.zero_offset_rad)):
            raise ValueError("soft_limits_rad, home_rad and zero_offset_rad must be finite numbers")
        if not low_rad < high_rad:
            raise ValueError(f"soft_limits_rad = [{low_rad}, {high_rad}]: the lower limit must be below the upper")
        if not low_rad <= self.home_rad <= high_rad:
            raise ValueError(f"home_rad = {self.home_rad} lies outside soft_limits_rad [{low_rad}, {high_rad}]")
        return self


class HandProfile(_Frozen):
    """A validated hand profile. ``joints`` are in policy order."""

    schema_version: int
    name: str = Field(min_length=1)
    description: str = ""
    mjcf: Path
    control_rate_hz: float = Field(gt=0, le=1000)
    # The fastest control loop the hand allows [Hz] (None: control_rate_hz); a policy runs at its own rate.
    max_control_rate_hz: float | None = Field(default=None, gt=0, le=1000)
    bus: BusSpec
    servo: ServoSpec
    joints: tuple[JointSpec, ...] = Field(min_length=1)
    mount: MountSpec = MountSpec()
    # The MJCF's fingertips (each a site, else a geom, else a body name): what the training reward and the
    # privileged observation measure. The bundled hand's are sites; MuJoCo Menagerie's LEAP hand's are geoms.
    fingertips: tuple[str, ...] = Field(default=DEFAULT_FINGERTIPS, min_length=1)
    source: Path | None = None
    calibration_source: Path | None = None

    @property
    def control_period_s(self) -> float:
        """Control loop period [s]."""
        return 1.0 / self.control_rate_hz

    @property
    def max_rate_hz(self) -> float:
        """The fastest control loop the hand allows [Hz]."""
        return self.max_control_rate_hz if self.max_control_rate_hz is not None else self.control_rate_hz

    def at_rate(self, control_rate_hz: float) -> HandProfile:
        """This hand run at ``control_rate_hz`` (a policy's own rate); ProfileError when the hand does not allow it.

        Above :attr:`max_rate_hz`, or so slow that the tracking window no longer covers two ticks at full speed
        (the safety filter could not keep speed and window at once), is refused with the fix.
        """
        rate = float(control_rate_hz)
        if not (math.isfinite(rate) and 0 < rate <= self.max_rate_hz):
            raise ProfileError(
                f"profile {self.name!r}: control rate {control_rate_hz!r} Hz is not allowed on this hand (at most "
                f"{self.max_rate_hz:g} Hz, max_control_rate_hz) — use a policy trained at a rate the hand allows"
            )
        if rate == self.control_rate_hz:
            return self
        data = self.model_dump()
        data["control_rate_hz"] = rate
        try:
            return type(self).model_validate(data)
        except ValidationError as error:
            raise ProfileError(f"profile {self.name!r} at {rate:g} Hz: {error.errors()[0]['msg']}") from error

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joint names in policy order."""
        return tuple(joint.name for joint in self.joints)

    @property
    def motor_ids(self) -> tuple[int, ...]:
        """Motor ids in policy order."""
        return tuple(joint.motor_id for joint in self.joints)

    def joint(self, name: str) -> JointSpec:
        """The joint called ``name``; raises ProfileError listing the valid names."""
        for joint in self.joints:
            if joint.name == name:
                return joint
        raise ProfileError(f"profile {self.name!r} has no joint {name!r}; valid names: {', '.join(self.joint_names)}")

    def fingerprint(self) -> str:
        """Short SHA-256 over everything a policy depends on (joint order, names, limits, rate, bus model).

        The MJCF path, the description and the source files are left out so that the same hand gives the
        same fingerprint on every machine.
        """
        # The rate is left out too: a policy carries its own and the runtime checks it against max_rate_hz.
        # The mount and the fingertips say how the simulator places and measures the MJCF, not what the policy
        # commands: left out like the MJCF path.
        # How often the host asks again for a lost reply is how it talks to the hand, not the hand.
        excluded: dict[str, Any] = {
            name: True
            for name in (
                "mjcf",
                "description",
                "source",
                "calibration_source",
                "control_rate_hz",
                "max_control_rate_hz",
                "mount",
                "fingertips",
            )
        }
        excluded["bus"] = {"retries": True}
        payload = self.model_dump(mode="json", exclude=excluded)
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, version: int) -> int:
        if version != PROFILE_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is not supported (this handrail reads {PROFILE_SCHEMA_VERSION})"
            )
        return version

    @model_validator(mode="after")
    def _limits_fit_the_servo(self) -> HandProfile:
        # A limit the servo cannot reach is a typo (or 1e308, which overflowed configure's register arithmetic):
        # the joint may not be faster than the motor's no-load speed, accelerate beyond what the Profile
        # Acceleration register holds, or draw more than the stall current.
        from handrail.robot.motors import MOTORS

        motor = MOTORS.get(self.bus.motor_model)
        if motor is None:
            return self  # an unknown model is refused, naming the known ones, when a bus or a virtual hand opens
        max_accel_raw = 32767  # Profile Acceleration register range 0-32767 (X series)
        for index, joint in enumerate(self.joints):
            where = f"joints[{index}] ({joint.name})"
            speed_limit = motor.no_load_speed_rad_s / joint.gear_ratio
            accel_limit = max_accel_raw * motor.profile_acceleration_rad_s2_per_lsb / joint.gear_ratio
            current_limit = motor.stall_current_a * 1000.0
            for field, value, limit, unit in (
                ("max_speed_rad_s", joint.max_speed_rad_s, speed_limit, "rad/s, its no-load speed"),
                ("max_accel_rad_s2", joint.max_accel_rad_s2, accel_limit, "rad/s², its Profile Acceleration range"),
                ("current_limit_ma", joint.current_limit_ma, current_limit, "mA, its stall current"),
            ):
                if not value <= limit:
                    raise ValueError(
                        f"{where}: {field} = {value:g} is beyond what a {motor.model_name} can do ({limit:.4g} "
                        f"{unit}) — check the value and its unit"
                    )
        return self

    @model_validator(mode="after")
    def _tracking_window_fits_the_speed(self) -> HandProfile:
        # The safety filter can keep speed, acceleration and the tracking window all at once only if a
        # hand that follows its target may lag by two ticks at full speed.
        for index, joint in enumerate(self.joints):
            needed_rad = 2.0 * joint.max_speed_rad_s / self.control_rate_hz
            if joint.max_tracking_error_rad < needed_rad:
                raise ValueError(
                    f"joints[{index}] ({joint.name}): max_tracking_error_rad = {joint.max_tracking_error_rad} is below "
                    f"2 x max_speed_rad_s / control_rate_hz = {needed_rad:.3f} rad — raise it, or lower the speed"
                )
        return self

    @field_validator("fingertips")
    @classmethod
    def _distinct_fingertips(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name for name in names) or len(set(names)) != len(names):
            raise ValueError(f"fingertips {list(names)}: give distinct, non-empty site, geom or body names")
        return names

    @model_validator(mode="after")
    def _unique_names_and_ids(self) -> HandProfile:
        for field in ("name", "motor_id", "mjcf_joint", "mjcf_actuator"):
            seen: dict[object, int] = {}
            for index, joint in enumerate(self.joints):
                value = getattr(joint, field)
                if value in seen:
                    raise ValueError(
                        f"joints[{index}] ({joint.name}) repeats {field} = {value!r} of joints[{seen[value]}]; "
                        f"each joint needs its own {field}"
                    )
                seen[value] = index
        return self


def default_profile_path() -> Path:
    """The bundled LEAP-class hand profile."""
    return Path(str(resources.files("handrail.robot").joinpath("profiles", "leap.toml")))


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    return read_toml(path, what, ProfileError, missing_hint=f"check the path (bundled: {default_profile_path()})")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_validation_error(path: Path, error: ValidationError, document: Mapping[str, Any]) -> str:
    lines = [f"profile {path} is invalid:"]
    repeats: dict[tuple[str, str, str], int] = {}
    keys: list[tuple[str, str, str]] = []
    for problem in error.errors():
        location = problem["loc"]
        field_path = ""
        for part in location:
            field_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if field_path else str(part))
        joint_hint = ""
        if len(location) >= 2 and location[0] == "joints" and isinstance(location[1], int):
            joints = document.get("joints", [])
            if location[1] < len(joints) and isinstance(joints[location[1]], Mapping):
                joint_hint = f" (joint {joints[location[1]].get('name', '?')!r})"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field — remove it or check its spelling"
        elif problem["type"] == "missing":
            message = "missing — add it"
        got = problem.get("input")
        # A scalar that was given is worth repeating; a whole table or list (a root or joint check) is not.
        got_text = (
            f" (got {_short(got)})"
            if problem["type"] not in ("missing", "extra_forbidden")
            and got is not None
            and location
            and not isinstance(got, Mapping | list | tuple)
            and "is not a number" not in message
            else ""
        )
        if problem["type"] == "too_short" and location == ("joints",) and len(error.errors()) > 1:
            continue  # every joint failed above; "no joints left" adds nothing
        leaf = str(location[-1]) if location else ""
        fix = _FIELD_FIXES.get(leaf, "")
        fix_text = f" — {fix}" if fix and problem["type"] != "extra_forbidden" else ""
        # The same problem on many joints (a hand-wide value from [joint_defaults]) is one line.
        same = (re.sub(r"^joints\[\d+\]", "joints[*]", field_path), message, got_text)
        if same in repeats:
            repeats[same] += 1
            continue
        repeats[same] = 1
        lines.append(f"  {field_path or '<root>'}{joint_hint}: {message}{got_text}{fix_text}")
        keys.append(same)
    for index, key in enumerate(keys):
        if repeats[key] > 1:
            lines[index + 1] += f" (and {repeats[key] - 1} more joints: a [joint_defaults] value?)"
    return "\n".join(lines)


def _check_numbers(entries: Mapping[str, Any], where: str) -> None:
    """ProfileError for a joint field that wants a number but holds text or a bool (a quoted "45")."""
    for field, value in entries.items():
        spec = JointSpec.model_fields.get(field)
        if spec is None or not _wants_numbers(spec.annotation):
            continue
        if not _only_numbers(value):
            raise ProfileError(f"{where}: {field} = {_short(value)} is not a number — write it without quotes")


def _merge_joint_defaults(path: Path, document: dict[str, Any]) -> dict[str, Any]:
    """Fill each joint from ``[joint_defaults]``; a joint may tighten a limit but not loosen it."""
    document = dict(document)
    defaults = document.pop("joint_defaults", {})
    if not isinstance(defaults, Mapping):
        raise ProfileError(f"profile {path}: [joint_defaults] must be a table")
    joints = document.get("joints")
    if not isinstance(joints, list):
        raise ProfileError(f"profile {path}: no [[joints]] entries — list every actuated joint in policy order")
    _check_numbers(defaults, f"profile {path}: [joint_defaults]")
    merged = []
    for index, joint in enumerate(joints):
        if not isinstance(joint, Mapping):
            raise ProfileError(f"profile {path}: joints[{index}] must be a table")
        _check_numbers(joint, f"profile {path}: joints[{index}] ({joint.get('name', '?')!r})")
        entry = {**defaults, **joint}
        for limit in TIGHTEN_ONLY_LIMITS:
            if limit in joint and limit in defaults:
                own, hand_wide = joint[limit], defaults[limit]
                if isinstance(own, int | float) and isinstance(hand_wide, int | float) and own > hand_wide:
                    raise ProfileError(
                        f"profile {path}: joints[{index}] ({joint.get('name', '?')!r}) sets {limit} = {own}, "
                        f"above the hand-wide {hand_wide} in [joint_defaults] — a joint may only tighten a limit; "
                        f"raise [joint_defaults].{limit} if the hardware really allows it"
                    )
        merged.append(entry)
    document["joints"] = merged
    return document


def _resolve_mjcf(path: Path, document: dict[str, Any]) -> None:
    mjcf = document.get("mjcf")
    if isinstance(mjcf, str):
        # `${MENAGERIE}/leap_hand/right_hand.xml`: a model outside this repository, found through a variable.
        unset = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", mjcf)) - set(os.environ))
        if unset:
            raise ProfileError(
                f"profile {path}: mjcf = {mjcf!r} uses the environment variable {', '.join(unset)}, which is not "
                f"set — export it (e.g. `export {unset[0]}=/path/to/mujoco_menagerie`) or give a path"
            )
        candidate = Path(os.path.expandvars(mjcf)).expanduser()
        if not candidate.is_absolute():
            candidate = (path.parent / candidate).resolve()
        document["mjcf"] = candidate


def check_against_model(profile: HandProfile) -> None:
    """Check that every joint and actuator exists in the profile's MJCF and that limits fit its ranges.

    Raises ProfileError listing every problem with its fix.
    """
    import mujoco  # deferred: profile inspection without a model check needs no MuJoCo

    if not profile.mjcf.is_file():
        raise ProfileError(
            f"profile {profile.source}: mjcf = {profile.mjcf} does not exist — point `mjcf` at the hand's MJCF "
            "(relative paths resolve from the profile's folder)"
        )
    try:
        model = mujoco.MjModel.from_xml_path(str(profile.mjcf))
    except ValueError as error:
        raise ProfileError(f"profile {profile.source}: MuJoCo cannot load {profile.mjcf}: {error}") from error

    problems: list[str] = []
    model_joints = [model.joint(i).name for i in range(model.njnt)]
    model_actuators = [model.actuator(i).name for i in range(model.nu)]
    for index, joint in enumerate(profile.joints):
        where = f"joints[{index}] ({joint.name})"
        joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.mjcf_joint)
        if joint_id < 0:
            problems.append(
                f"{where}: mjcf_joint {joint.mjcf_joint!r} is not a joint of {profile.mjcf.name} — "
                f"use one of {', '.join(model_joints)}"
            )
            continue
        actuator_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, joint.mjcf_actuator)
        if actuator_id < 0:
            problems.append(
                f"{where}: mjcf_actuator {joint.mjcf_actuator!r} is not an actuator of {profile.mjcf.name} — "
                f"use one of {', '.join(model_actuators)}"
            )
        elif model.actuator_trnid[actuator_id, 0] != joint_id:
            driven = model.joint(int(model.actuator_trnid[actuator_id, 0])).name
            problems.append(
                f"{where}: actuator {joint.mjcf_actuator!r} drives joint {driven!r}, not {joint.mjcf_joint!r} — "
                "pair each joint with its own actuator"
            )
        if model.jnt_limited[joint_id]:
            low_rad, high_rad = (float(v) for v in model.jnt_range[joint_id])
            soft_low, soft_high = joint.soft_limits_rad
            if soft_low < low_rad - 1e-9 or soft_high > high_rad + 1e-9:
                problems.append(
                    f"{where}: soft_limits_rad [{soft_low}, {soft_high}] leave the model's range "
                    f"[{low_rad:.4g}, {high_rad:.4g}] of {joint.mjcf_joint!r} — keep soft limits inside it"
                )
    if problems:
        raise ProfileError(f"profile {profile.source} does not match {profile.mjcf}:\n  " + "\n  ".join(problems))


def _apply_calibration(profile_doc: dict[str, Any], calibration_path: Path) -> None:
    """Overlay zero offsets, directions and tightened limits from a joints calibration file."""
    document = _read_toml(calibration_path, "calibration")
    version = document.get("schema_version")
    if version != CALIBRATION_SCHEMA_VERSION:
        raise ProfileError(
            f"calibration {calibration_path}: schema_version {version!r} is not supported "
            f"(this handrail reads {CALIBRATION_SCHEMA_VERSION}) — recalibrate or upgrade handrail"
        )
    for_profile = document.get("profile")
    if for_profile != profile_doc.get("name"):
        raise ProfileError(
            f"calibration {calibration_path} was made for profile {for_profile!r}, not {profile_doc.get('name')!r} "
            "— use the calibration of this hand"
        )
    unknown_top = set(document) - {"schema_version", "profile", "kind", "created", "joints"}
    if unknown_top:
        raise ProfileError(f"calibration {calibration_path}: unknown fields {sorted(unknown_top)} — remove them")
    overrides = document.get("joints", {})
    where = f"calibration {calibration_path}"
    if not isinstance(overrides, Mapping):
        raise ProfileError(f"{where}: joints = {_short(overrides)} must be tables, one per joint: [joints.NAME]")
    joints_by_name = {joint.get("name"): joint for joint in profile_doc["joints"]}
    for name, values in overrides.items():
        if name not in joints_by_name:
            raise ProfileError(
                f"{where}: joint {name!r} is not in the profile — "
                f"valid names: {', '.join(str(n) for n in joints_by_name)}"
            )
        if not isinstance(values, Mapping):
            raise ProfileError(f"{where}: joints.{name} = {_short(values)} must be a table ([joints.{name}])")
        _overlay_joint(where, name, values, joints_by_name[name])


# The largest zero offset a calibration may set [rad]: ``calibrate joints`` measures offsets against the
# mechanical stops and refuses larger ones (an encoder offset is small; its direction test relies on it).
MAX_ZERO_OFFSET_RAD = 0.25
# How ``calibrate joints`` checked a joint's sign against the stops (see handrail.calibration.joints).
DIRECTION_CHECKS = ("confirmed", "wrong", "unverified")
OVERLAY_FIELDS = ("zero_offset_rad", "direction", "direction_check", *TIGHTEN_ONLY_LIMITS)


def _overlay_joint(where: str, name: str, values: Mapping[str, Any], joint: dict[str, Any]) -> None:
    """Check one joint's overlay entry and lay it over the profile's ``joint`` (a raw, merged entry)."""
    for field, value in values.items():
        if field not in OVERLAY_FIELDS:
            allowed = ", ".join(sorted(OVERLAY_FIELDS))
            raise ProfileError(f"{where}: joints.{name}.{field} cannot be calibrated — allowed fields: {allowed}")
        if field == "direction_check":
            if value not in DIRECTION_CHECKS:
                checks = ", ".join(DIRECTION_CHECKS)
                raise ProfileError(f"{where}: joints.{name}.direction_check = {_short(value)} — give one of {checks}")
            continue
        if not _is_number(value) or not math.isfinite(value):
            raise ProfileError(f"{where}: joints.{name}.{field} = {_short(value)} must be a finite number")
        current = joint.get(field)
        if field in TIGHTEN_ONLY_LIMITS:
            if value <= 0:
                raise ProfileError(f"{where}: joints.{name}.{field} = {value} must be > 0")
            if _is_number(current) and value > current:
                raise ProfileError(
                    f"{where}: joints.{name}.{field} = {value} loosens the profile's {current}"
                    " — a calibration may only tighten limits"
                )
    offset = values.get("zero_offset_rad")
    if offset is not None and abs(offset) > MAX_ZERO_OFFSET_RAD:
        raise ProfileError(
            f"{where}: joints.{name}.zero_offset_rad = {offset} is beyond ±{MAX_ZERO_OFFSET_RAD} rad, more than "
            "`handrail calibrate joints` measures against the stops — recalibrate, or check the servo's horn"
        )
    direction = values.get("direction")
    if direction is not None and direction not in (1, -1):
        raise ProfileError(f"{where}: joints.{name}.direction = {direction} must be 1 or -1")
    if direction is not None and direction != joint.get("direction") and values.get("direction_check") != "wrong":
        raise ProfileError(
            f"{where}: joints.{name}.direction = {direction} flips the profile's {joint.get('direction')} without "
            'a measurement (direction_check = "wrong" is what `handrail calibrate joints` writes when the stops '
            "show the profile's sign is wrong) — recalibrate, or fix the direction in the profile"
        )
    joint.update({field: value for field, value in values.items() if field != "direction_check"})


def load_profile(
    path: str | Path | None = None,
    *,
    calibration: str | Path | None = None,
    check_model: bool = True,
) -> HandProfile:
    """Load and validate a hand profile (default: the bundled LEAP hand), optionally with its overlay.

    Args:
        path: profile TOML; ``None`` means :func:`default_profile_path`.
        calibration: joints calibration TOML overlaying zero offsets, directions, tightened limits.
        check_model: also load the MJCF and check names and ranges against it (needs MuJoCo).

    Raises:
        ProfileError: naming the file, the field, the value and the fix.
    """
    profile_path = Path(path).expanduser() if path is not None else default_profile_path()
    document = _read_toml(profile_path, "profile")
    document = _merge_joint_defaults(profile_path, document)
    _resolve_mjcf(profile_path, document)
    calibration_path = Path(calibration).expanduser() if calibration is not None else None
    if calibration_path is not None:
        _apply_calibration(document, calibration_path)
    try:
        profile = HandProfile.model_validate(
            {**document, "source": profile_path.resolve(), "calibration_source": calibration_path}
        )
    except ValidationError as error:
        raise ProfileError(_describe_validation_error(profile_path, error, document)) from error
    if check_model:
        check_against_model(profile)
    return profile


def format_profile_table(profile: HandProfile, width: int = 160) -> str:
    """The profile as a human-readable table (what ``handrail profile show`` prints)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hand profile {profile.name!r} — {len(profile.joints)} joints in policy order")
    table.caption = (
        "units: zero, soft limits, home, track [rad]; speed [rad/s]; accel [rad/s²]; current [mA]; temp [°C]"
    )
    for header in (
        "#",
        "joint",
        "mjcf joint",
        "actuator",
        "motor",
        "dir",
        "gear",
        "zero",
        "soft limits",
        "home",
        "speed",
        "accel",
        "track",
        "current",
        "temp",
    ):
        table.add_column(header, justify="left" if header in ("joint", "mjcf joint", "actuator") else "right")
    for index, joint in enumerate(profile.joints):
        low_rad, high_rad = joint.soft_limits_rad
        table.add_row(
            str(index),
            joint.name,
            joint.mjcf_joint,
            joint.mjcf_actuator,
            str(joint.motor_id),
            f"{joint.direction:+d}",
            f"{joint.gear_ratio:g}",
            f"{joint.zero_offset_rad:+.4f}",
            f"[{low_rad:+.3f}, {high_rad:+.3f}]",
            f"{joint.home_rad:+.3f}",
            f"{joint.max_speed_rad_s:.2f}",
            f"{joint.max_accel_rad_s2:.1f}",
            f"{joint.max_tracking_error_rad:.2f}",
            f"{joint.current_limit_ma:.0f}",
            f"{joint.temperature_limit_c:.0f}",
        )
    buffer = io.StringIO()
    # Header lines print with markup off: paths and values may contain "[...]".
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None, markup=False)
    console.print(f"profile:      {profile.source}")
    if profile.calibration_source is not None:
        console.print(f"calibration:  {profile.calibration_source}")
    console.print(f"description:  {profile.description}")
    console.print(f"mjcf:         {profile.mjcf}")
    console.print(
        f"bus:          {profile.bus.port} @ {profile.bus.baud} baud, Dynamixel protocol {profile.bus.protocol}, "
        f"{profile.bus.motor_model}"
    )
    console.print(f"control rate: {profile.control_rate_hz:g} Hz ({profile.control_period_s * 1000:.1f} ms period)")
    console.print(f"fingerprint:  {profile.fingerprint()}")
    console.print(table)
    return buffer.getvalue()
