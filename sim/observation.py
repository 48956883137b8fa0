"""The one observation builder: what a policy sees each control tick, in the simulator and on the hand.

Both the training environment and the deploy control loop import :class:`ObservationBuilder`, so a policy
never meets a different layout, history order or stale-pose rule on the hand than in training. Pure numpy:
no MuJoCo, no torch (the deploy path must import it without either).

:class:`ObservationSpec` is the layout: ordered ``(name, size)`` fields. Its JSON goes into the ONNX
policy's metadata; :meth:`ObservationSpec.diff` lists in words how two layouts differ, so the runtime can
refuse a policy built for another one and say why.

Fields the builder knows (units, frames), as laid out by :func:`default_spec`:

- ``joint_position_rad`` (n * history): joint positions as the driver reports them (calibrated joint
  frame, with whatever zero-offset error and noise remain), newest first: ``[0:n]`` is this tick's
  reading, ``[n:2n]`` the previous tick's, ...
- ``previous_target_rad`` (n): the target sent last tick, *after* the safety filter.
- ``object_position_m`` (3): object centre in the hand (palm) frame [m].
- ``object_quat_wxyz`` (4): object orientation in the hand frame, unit quaternion with ``w >= 0``.
- ``object_pose_valid`` (1): 1.0 when the pose fields hold a fresh estimate (``age_s <= max_pose_age_s``),
  else 0.0.
- ``object_pose_age_s`` (1): age of the estimate in the pose fields [s], clipped to ``max_pose_age_s``;
  exactly ``max_pose_age_s`` when the pose is not valid.
- ``task`` (any size): task inputs, e.g. the rotation axis (3) for rotate-z or a target joint pose (n).

Missing or stale pose (decision): the pose fields *hold the last valid estimate* (the object does not
teleport, so the last known pose is the best guess, and the policy does not have to learn a jump to zeros
as a special case); before any valid estimate since :meth:`ObservationBuilder.reset` they hold position
zeros and the identity quaternion ``(1, 0, 0, 0)``. ``object_pose_valid`` is 0 and ``object_pose_age_s``
is ``max_pose_age_s`` (bounded, so the value stays inside what the normalizer saw in training).

Failure modes: a wrong shape or a non-finite input (NaN, inf, or a value too large for float32) raises
:class:`ObservationInputError` naming the field and the joint; the builder's history is left as it was.
The deploy loop turns that into a safe stop — an observation with NaN must never reach a policy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.errors import HandrailError
from handrail.sim.spec_json import check_spec_document

OBSERVATION_SPEC_SCHEMA_VERSION = 1

JOINT_POSITION = "joint_position_rad"
PREVIOUS_TARGET = "previous_target_rad"
OBJECT_POSITION = "object_position_m"
OBJECT_QUAT = "object_quat_wxyz"
OBJECT_POSE_VALID = "object_pose_valid"
OBJECT_POSE_AGE = "object_pose_age_s"
TASK = "task"
KNOWN_FIELDS = (
    JOINT_POSITION,
    PREVIOUS_TARGET,
    OBJECT_POSITION,
    OBJECT_QUAT,
    OBJECT_POSE_VALID,
    OBJECT_POSE_AGE,
    TASK,
)
OBJECT_FIELDS = (OBJECT_POSITION, OBJECT_QUAT, OBJECT_POSE_VALID, OBJECT_POSE_AGE)

ROTATE_Z_TASK_SIZE = 3  # the rotation axis, a unit vector in the hand frame
DEFAULT_MAX_POSE_AGE_S = 0.1
IDENTITY_QUAT_WXYZ = (1.0, 0.0, 0.0, 0.0)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class ObservationError(HandrailError):
    """Base class of the observation builder's errors."""


class ObservationSpecError(ObservationError):
    """An observation spec (or its JSON) is malformed, or does not fit the builder."""


class ObservationInputError(ObservationError):
    """An input to the builder has the wrong shape or a non-finite value; the deploy loop stops safely on it."""


@dataclass(frozen=True)
class ObservationSpec:
    """The observation layout: ordered ``(name, size)`` fields, concatenated into one float32 vector.

    Raises ObservationSpecError when there are no fields, a name is empty or repeated, or a size is not a
    positive integer.
    """

    fields: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        try:
            fields = tuple((name, size) for name, size in self.fields)
        except (TypeError, ValueError) as error:
            raise ObservationSpecError(
                f"observation spec fields must be (name, size) pairs, got {self.fields!r}"
            ) from error
        if not fields:
            raise ObservationSpecError("observation spec has no fields — give at least one (name, size) pair")
        seen: set[str] = set()
        for index, (name, size) in enumerate(fields):
            if not isinstance(name, str) or not name:
                raise ObservationSpecError(f"observation field {index}: name {name!r} must be a non-empty string")
            if name in seen:
                raise ObservationSpecError(f"observation field {name!r} appears twice — names must be unique")
            seen.add(name)
            if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
                raise ObservationSpecError(f"observation field {name!r}: size {size!r} must be a positive integer")
        object.__setattr__(self, "fields", tuple((name, int(size)) for name, size in fields))

    @property
    def n_obs(self) -> int:
        """Length of the observation vector."""
        return sum(size for _, size in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    def size(self, name: str) -> int:
        """Size of field ``name``; raises ObservationSpecError listing the valid names."""
        for field_name, size in self.fields:
            if field_name == name:
                return size
        raise ObservationSpecError(f"observation spec has no field {name!r}; fields: {', '.join(self.names)}")

    def slices(self) -> dict[str, slice]:
        """Field name -> its slice of the observation vector, in layout order."""
        result: dict[str, slice] = {}
        start = 0
        for name, size in self.fields:
            result[name] = slice(start, start + size)
            start += size
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": OBSERVATION_SPEC_SCHEMA_VERSION,
            "fields": [{"name": name, "size": size} for name, size in self.fields],
            "n_obs": self.n_obs,
        }

    def to_json(self) -> str:
        """The spec as JSON, for the policy file's metadata."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationSpec:
        """Inverse of :meth:`to_dict`; raises ObservationSpecError naming the problem."""
        check_spec_document(
            data,
            "observation spec",
            {"schema_version", "fields", "n_obs"},
            OBSERVATION_SPEC_SCHEMA_VERSION,
            ObservationSpecError,
        )
        entries = data["fields"]
        if not isinstance(entries, list):
            raise ObservationSpecError(f"observation spec 'fields' must be a list, got {type(entries).__name__}")
        fields = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or set(entry) != {"name", "size"}:
                raise ObservationSpecError(
                    f"observation spec field {index}: {entry!r} must be an object with exactly 'name' and 'size'"
                )
            fields.append((entry["name"], entry["size"]))
        spec = cls(tuple(fields))
        if data["n_obs"] != spec.n_obs:
            raise ObservationSpecError(
                f"observation spec says n_obs = {data['n_obs']!r} but its fields add up to {spec.n_obs} — "
                "the file is inconsistent; re-export it"
            )
        return spec

    @classmethod
    def from_json(cls, text: str | bytes) -> ObservationSpec:
        """Parse :meth:`to_json` output; raises ObservationSpecError naming the problem."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise ObservationSpecError(f"observation spec is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def diff(self, other: ObservationSpec, *, this: str = "this spec", that: str = "the other spec") -> list[str]:
        """Every difference from ``self`` to ``other``, in words; empty when the layouts are identical.

        ``this`` and ``that`` name the two sides in the messages, e.g. ``this="the hand", that="the policy"``.
        """
        problems: list[str] = []
        mine, theirs = dict(self.fields), dict(other.fields)
        for name, size in self.fields:
            if name not in theirs:
                problems.append(f"field {name!r} (size {size}) is in {this} but missing from {that}")
            elif theirs[name] != size:
                problems.append(f"field {name!r} has size {size} in {this} but {theirs[name]} in {that}")
        for name, size in other.fields:
            if name not in mine:
                problems.append(f"field {name!r} (size {size}) is in {that} but not in {this}")
        common_mine = [name for name in self.names if name in theirs]
        common_theirs = [name for name in other.names if name in mine]
        if common_mine != common_theirs:
            problems.append(
                f"fields are in a different order: {this} has {', '.join(common_mine)}; "
                f"{that} has {', '.join(common_theirs)}"
            )
        if self.n_obs != other.n_obs:
            problems.append(f"n_obs is {self.n_obs} in {this} but {other.n_obs} in {that}")
        return problems


def default_spec(
    n_joints: int, history: int = 1, task_size: int = ROTATE_Z_TASK_SIZE, *, object_pose: bool = True
) -> ObservationSpec:
    """The layout for the in-hand tasks: joints, last target, object pose with validity and age, task.

    ``task_size``: 3 for rotate-z (the rotation axis), ``n_joints`` for a target joint pose.
    ``object_pose=False``: the proprioceptive layout (no object fields), for a policy that needs no camera.
    """
    for name, value in (("n_joints", n_joints), ("history", history), ("task_size", task_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ObservationSpecError(f"default_spec: {name} = {value!r} must be a positive integer")
    joints = (
        (JOINT_POSITION, n_joints * history),  # 16 * history, newest first
        (PREVIOUS_TARGET, n_joints),  # 16
    )
    object_fields = (
        (OBJECT_POSITION, 3),
        (OBJECT_QUAT, 4),
        (OBJECT_POSE_VALID, 1),
        (OBJECT_POSE_AGE, 1),
    )
    task = ((TASK, task_size),)  # 3 (rotate-z axis) or 16 (target pose)
    return ObservationSpec(joints + (object_fields if object_pose else ()) + task)


def uses_object_pose(spec: ObservationSpec) -> bool:
    """Whether a layout has any object-pose field (a policy without them needs no pose source)."""
    return any(name in spec.names for name in OBJECT_FIELDS)


def _finite_vector(values: ArrayLike, shape: tuple[int, ...], name: str) -> NDArray[np.float64]:
    """``values`` as float64 of ``shape``; ObservationInputError on another shape or a non-finite entry.

    Entries beyond float32's range count as non-finite: they would become inf in the observation.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ObservationInputError(f"{name} is not an array of numbers: {error}") from error
    if array.shape != shape:
        raise ObservationInputError(f"{name} needs shape {shape}, got {array.shape}")
    # One check catches NaN (every comparison is false), inf, and values float32 cannot hold.
    if array.size and not float(np.abs(array).max()) <= _FLOAT32_MAX:
        bad = int(np.flatnonzero(~(np.abs(array) <= _FLOAT32_MAX))[0])
        raise ObservationInputError(
            f"{name}[{bad}] = {array.flat[bad]} is not a finite float32 number — no observation can be built; "
            "stop safely and check the sensor that produced it"
        )
    return array


@dataclass(frozen=True, eq=False)
class ObjectPoseEstimate:
    """One estimate of the object's pose in the hand (palm) frame, and how old it is.

    ``position_m`` (3,) [m]; ``quat_wxyz`` (4,), stored unit-normalized with the canonical sign (``w >= 0``;
    when ``w == 0``, the first non-zero of x, y, z positive), so q and -q give the same observation;
    ``age_s`` [s] from the moment the image (or sim state) was taken to now; ``source`` e.g.
    ``"ground_truth"`` or ``"camera"``. Arrays are read-only float64.

    Raises ObservationInputError on a wrong shape, a non-finite value, a zero quaternion, a negative age or
    an empty source.
    """

    position_m: NDArray[np.float64]
    quat_wxyz: NDArray[np.float64]
    age_s: float
    source: str

    def __post_init__(self) -> None:
        position = _finite_vector(self.position_m, (3,), "object pose position_m").copy()
        quat = _finite_vector(self.quat_wxyz, (4,), "object pose quat_wxyz").copy()
        norm = math.sqrt(float(quat @ quat))
        if not (norm > 1e-9 and math.isfinite(norm)):
            raise ObservationInputError(f"object pose quat_wxyz {quat.tolist()} has norm {norm} — not a rotation")
        quat /= norm
        nonzero = np.flatnonzero(quat)
        if quat[nonzero[0]] < 0:
            quat = -quat + 0.0  # + 0.0 turns -0.0 into 0.0
        try:
            age_s = float(self.age_s)
        except (TypeError, ValueError):
            age_s = math.nan
        if not (math.isfinite(age_s) and age_s >= 0):
            raise ObservationInputError(f"object pose age_s = {self.age_s!r} must be a finite number >= 0 [s]")
        if not isinstance(self.source, str) or not self.source:
            raise ObservationInputError(f"object pose source {self.source!r} must name where it came from")
        position.setflags(write=False)
        quat.setflags(write=False)
        object.__setattr__(self, "position_m", position)
        object.__setattr__(self, "quat_wxyz", quat)
        object.__setattr__(self, "age_s", age_s)


class ObservationBuilder:
    """Builds the float32 observation of :class:`ObservationSpec` each tick; keeps the joint history.

    ``spec`` may hold any of the known fields (see the module docstring) in any order; their sizes must
    match ``n_joints`` and ``history``. A pose older than ``max_pose_age_s`` [s] counts as missing.
    Call :meth:`reset` before the first :meth:`build` of an episode.
    """

    def __init__(
        self,
        spec: ObservationSpec,
        n_joints: int,
        history: int = 1,
        *,
        max_pose_age_s: float = DEFAULT_MAX_POSE_AGE_S,
    ):
        if isinstance(n_joints, bool) or not isinstance(n_joints, int) or n_joints <= 0:
            raise ObservationSpecError(f"n_joints = {n_joints!r} must be a positive integer")
        if isinstance(history, bool) or not isinstance(history, int) or history <= 0:
            raise ObservationSpecError(f"history = {history!r} must be a positive integer (1: this tick only)")
        if not (math.isfinite(max_pose_age_s) and max_pose_age_s > 0):
            raise ObservationSpecError(f"max_pose_age_s = {max_pose_age_s!r} must be a positive number of seconds")
        fixed_sizes = {
            JOINT_POSITION: n_joints * history,
            PREVIOUS_TARGET: n_joints,
            OBJECT_POSITION: 3,
            OBJECT_QUAT: 4,
            OBJECT_POSE_VALID: 1,
            OBJECT_POSE_AGE: 1,
        }
        for name, size in spec.fields:
            if name not in KNOWN_FIELDS:
                raise ObservationSpecError(
                    f"observation field {name!r} is unknown to the builder; known fields: {', '.join(KNOWN_FIELDS)}"
                )
            if name in fixed_sizes and size != fixed_sizes[name]:
                raise ObservationSpecError(
                    f"observation field {name!r} has size {size} but {n_joints} joints with history {history} "
                    f"need {fixed_sizes[name]} — build the spec with default_spec({n_joints}, history={history})"
                )
        self.spec = spec
        self.n_joints = n_joints
        self.history = history
        self.max_pose_age_s = float(max_pose_age_s)
        self._slices = spec.slices()
        self._has_object = any(name in self._slices for name in OBJECT_FIELDS)
        self._task_shape = (spec.size(TASK),) if TASK in self._slices else None
        self._joint_shape = (n_joints,)
        self._joint_history = np.zeros((history, n_joints))  # newest first
        self._previous_target: NDArray[np.float64] | None = None
        self._held_position = np.zeros(3)
        self._held_quat = np.array(IDENTITY_QUAT_WXYZ)

    @property
    def previous_target_rad(self) -> NDArray[np.float64]:
        """The last target given to :meth:`reset` or :meth:`build` [rad] (a copy)."""
        if self._previous_target is None:
            raise ObservationSpecError("the observation builder has no state yet — call reset() first")
        return self._previous_target.copy()

    def reset(
        self,
        joint_position_rad: ArrayLike,
        target_rad: ArrayLike,
        object_pose: ObjectPoseEstimate | None = None,
    ) -> None:
        """Start an episode: the whole history is this joint reading, the held pose the given one (if valid).

        Raises ObservationInputError on a wrong shape or a non-finite value.
        """
        joints = _finite_vector(joint_position_rad, self._joint_shape, JOINT_POSITION)
        target = _finite_vector(target_rad, self._joint_shape, "target_rad")
        self._joint_history[:] = joints
        self._previous_target = target.copy()
        self._held_position = np.zeros(3)
        self._held_quat = np.array(IDENTITY_QUAT_WXYZ)
        if object_pose is not None and object_pose.age_s <= self.max_pose_age_s:
            self._held_position = np.array(object_pose.position_m)
            self._held_quat = np.array(object_pose.quat_wxyz)

    def build(
        self,
        joint_position_rad: ArrayLike,
        previous_target_rad: ArrayLike,
        object_pose: ObjectPoseEstimate | None = None,
        task_input: ArrayLike | None = None,
    ) -> NDArray[np.float32]:
        """This tick's observation, shape (n_obs,) float32; shifts the joint history by one tick.

        ``joint_position_rad`` (n,) as the driver reports it; ``previous_target_rad`` (n,) the target sent
        last tick after the safety filter; ``object_pose`` None when there is no estimate (ignored when the
        spec has no object fields); ``task_input`` of the ``task`` field's size (ignored without one).
        Raises ObservationInputError (history untouched) on a wrong shape or non-finite value, and
        ObservationSpecError before :meth:`reset`.
        """
        if self._previous_target is None:
            raise ObservationSpecError("the observation builder has no state yet — call reset() first")
        joints = _finite_vector(joint_position_rad, self._joint_shape, JOINT_POSITION)
        target = _finite_vector(previous_target_rad, self._joint_shape, PREVIOUS_TARGET)
        task = None
        if self._task_shape is not None:
            if task_input is None:
                raise ObservationInputError(f"the spec has a task field of size {self._task_shape[0]}: give task_input")
            task = _finite_vector(task_input, self._task_shape, TASK)
        pose_valid = object_pose is not None and object_pose.age_s <= self.max_pose_age_s
        if pose_valid:
            assert object_pose is not None
            age_s = object_pose.age_s
        else:
            age_s = self.max_pose_age_s
        # Everything checked: now change state.
        history = self._joint_history
        if self.history > 1:
            history[1:] = history[:-1]  # numpy copies overlapping slices safely
        history[0] = joints
        self._previous_target = target.copy()
        if pose_valid:
            assert object_pose is not None
            self._held_position = np.array(object_pose.position_m)
            self._held_quat = np.array(object_pose.quat_wxyz)

        obs = np.empty(self.spec.n_obs, dtype=np.float32)
        slices = self._slices
        for name, where in slices.items():
            if name == JOINT_POSITION:
                obs[where] = history.reshape(-1)  # n * history, newest first
            elif name == PREVIOUS_TARGET:
                obs[where] = target  # n
            elif name == OBJECT_POSITION:
                obs[where] = self._held_position  # 3, hand frame [m]
            elif name == OBJECT_QUAT:
                obs[where] = self._held_quat  # 4, wxyz, w >= 0
            elif name == OBJECT_POSE_VALID:
                obs[where] = 1.0 if pose_valid else 0.0  # 1
            elif name == OBJECT_POSE_AGE:
                obs[where] = age_s  # 1, [s], clipped to max_pose_age_s
            else:
                obs[where] = task  # task_size
        return obs


def canonical_quat_wxyz(quat: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit quaternions (..., 4) with :class:`ObjectPoseEstimate`'s sign rule (first non-zero component > 0)."""
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(quat, -1, 0)
    leading = np.where(w != 0, w, np.where(x != 0, x, np.where(y != 0, y, z)))
    return np.where((leading < 0)[..., None], -quat, quat) + 0.0  # + 0.0 turns -0.0 into 0.0


class BatchObservationBuilder:
    """:class:`ObservationBuilder` for N hands at once, with the same layout, history and stale-pose rules.

    For the training environment, whose inputs come from the simulator (finite by construction, so the
    per-value checks of the single builder are left out). The pose arrives as arrays: position (N, 3),
    quaternion (N, 4), age (N,) [s]; a hand whose camera has produced nothing passes an age above
    ``max_pose_age_s``. Each row equals what an ObservationBuilder fed that row would build.
    """

    def __init__(
        self,
        spec: ObservationSpec,
        n_joints: int,
        n_hands: int,
        history: int = 1,
        *,
        max_pose_age_s: float = DEFAULT_MAX_POSE_AGE_S,
    ):
        # The single builder validates the spec against n_joints and history, and owns the rules.
        self._reference = ObservationBuilder(spec, n_joints, history, max_pose_age_s=max_pose_age_s)
        self.spec = spec
        self.n_joints = n_joints
        self.n_hands = n_hands
        self.history = history
        self.max_pose_age_s = float(max_pose_age_s)
        self._slices = spec.slices()
        self._joint_history = np.zeros((n_hands, history, n_joints))  # newest first
        self._held_position = np.zeros((n_hands, 3))
        self._held_quat = np.tile(np.array(IDENTITY_QUAT_WXYZ), (n_hands, 1))

    def reset(
        self,
        hands: NDArray[np.intp],
        joint_position_rad: NDArray[np.float64],
        position_m: NDArray[np.float64],
        quat_wxyz: NDArray[np.float64],
        age_s: NDArray[np.float64],
    ) -> None:
        """Start episodes for ``hands``: history = this reading; held pose = the given one where fresh."""
        self._joint_history[hands] = joint_position_rad[:, None, :]
        fresh = age_s <= self.max_pose_age_s
        self._held_position[hands] = np.where(fresh[:, None], position_m, 0.0)
        identity = np.array(IDENTITY_QUAT_WXYZ)
        self._held_quat[hands] = np.where(fresh[:, None], canonical_quat_wxyz(quat_wxyz), identity)

    def build(
        self,
        joint_position_rad: NDArray[np.float64],
        previous_target_rad: NDArray[np.float64],
        position_m: NDArray[np.float64],
        quat_wxyz: NDArray[np.float64],
        age_s: NDArray[np.float64],
        task_input: NDArray[np.float64] | None,
        hands: NDArray[np.intp] | None = None,
    ) -> NDArray[np.float32]:
        """This tick's observations (N, n_obs) float32; shifts the hands' joint histories by one tick.

        Inputs have one row per hand in ``hands`` (all hands when None), whose rows are returned.
        """
        index = slice(None) if hands is None else hands
        history = self._joint_history[index]
        if self.history > 1:
            history[:, 1:] = history[:, :-1]
        history[:, 0] = joint_position_rad
        self._joint_history[index] = history
        fresh = age_s <= self.max_pose_age_s
        held_position = np.where(fresh[:, None], position_m, self._held_position[index])
        held_quat = np.where(fresh[:, None], canonical_quat_wxyz(quat_wxyz), self._held_quat[index])
        self._held_position[index] = held_position
        self._held_quat[index] = held_quat
        obs = np.empty((len(history), self.spec.n_obs), dtype=np.float32)
        for name, where in self._slices.items():
            if name == JOINT_POSITION:
                obs[:, where] = history.reshape(len(history), -1)
            elif name == PREVIOUS_TARGET:
                obs[:, where] = previous_target_rad
            elif name == OBJECT_POSITION:
                obs[:, where] = held_position
            elif name == OBJECT_QUAT:
                obs[:, where] = held_quat
            elif name == OBJECT_POSE_VALID:
                obs[:, where.start] = fresh
            elif name == OBJECT_POSE_AGE:
                obs[:, where.start] = np.where(fresh, age_s, self.max_pose_age_s)
            else:
                obs[:, where] = task_input
        return obs
