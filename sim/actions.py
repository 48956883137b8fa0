"""The action mapping: a policy's action in [-1, 1]^n -> raw joint targets [rad], for sim and hand alike.

Two modes:

- ``relative``: ``target = previous_target + action * max_delta_rad``. ``previous_target`` is the target
  sent last tick *after* the safety filter (``TargetFilter.last_target_rad``). By default ``max_delta_rad``
  is ``max_speed_rad_s * control_period_s`` from :class:`~handrail.robot.safety_limits.SafetyLimits`, so a
  saturated action asks for exactly the speed limit.
- ``absolute``: ``target = low + (action + 1) / 2 * (high - low)``: over the soft limits, or (``around``) a
  pose ± a range, as MuJoCo Playground's LEAP rotate-z maps its actions (its default pose ± 0.6 rad).

Actions are clipped to [-1, 1]; a non-finite entry (NaN, ±inf) passes through unchanged so that the target
becomes non-finite and the safety filter rejects and counts it. No limit is enforced here: the targets go
through :class:`~handrail.robot.safety_filter.TargetFilter`, the one safety layer.

The map's JSON goes into the policy file's metadata (the "action spec": joint order, how an action maps
to joint targets). At deploy time the map is read *from the policy*, not rebuilt from the hand's current
limits: ``--speed-scale`` tightens the filter, not the meaning of an action the policy learned.
:meth:`ActionMap.diff` says what differs from the map the hand expects. Pure numpy; no torch, no MuJoCo.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.errors import HandrailError
from handrail.robot.profile import HandProfile
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.spec_json import check_spec_document

ACTION_SPEC_SCHEMA_VERSION = 1
RELATIVE = "relative"
ABSOLUTE = "absolute"
ACTION_MODES = (RELATIVE, ABSOLUTE)
# Parameters of each mode, in JSON order.
MODE_PARAMETERS = {RELATIVE: ("max_delta_rad",), ABSOLUTE: ("low_rad", "high_rad")}
# Scales read from a policy file equal the hand's when they agree this closely (JSON round trips are exact;
# this only absorbs arithmetic done differently on the two sides).
SCALE_RTOL = 1e-9


class ActionError(HandrailError):
    """Base class of the action mapping's errors."""


class ActionSpecError(ActionError):
    """An action map (or its JSON) is malformed."""


class ActionInputError(ActionError):
    """An action or previous target has the wrong shape."""


def _joint_array(values: ArrayLike, n_joints: int, name: str) -> NDArray[np.float64]:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ActionSpecError(f"action map {name} is not an array of numbers: {error}") from error
    if array.shape != (n_joints,):
        raise ActionSpecError(f"action map {name} needs one value per joint, shape ({n_joints},); got {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ActionSpecError(f"action map {name}[{bad[0]}] = {array[bad[0]]} is not finite — give a finite value")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ActionMap:
    """How an action in [-1, 1]^n becomes raw joint targets [rad], joints in ``joint_names`` (policy) order.

    ``relative`` needs ``max_delta_rad`` (n,) > 0 [rad per tick]; ``absolute`` needs ``low_rad`` < ``high_rad``
    (n,) [rad]; the other mode's parameters stay None. Raises ActionSpecError naming the field otherwise.
    """

    joint_names: tuple[str, ...]
    mode: str
    max_delta_rad: NDArray[np.float64] | None = None
    low_rad: NDArray[np.float64] | None = None
    high_rad: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        names = tuple(self.joint_names)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ActionSpecError(f"action map joint_names {self.joint_names!r} must be non-empty strings")
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise ActionSpecError(f"action map joint_names repeat {repeated} — each joint appears once")
        object.__setattr__(self, "joint_names", names)
        if self.mode not in ACTION_MODES:
            raise ActionSpecError(f"action map mode {self.mode!r} is unknown; valid modes: {', '.join(ACTION_MODES)}")
        wanted = MODE_PARAMETERS[self.mode]
        for name in ("max_delta_rad", "low_rad", "high_rad"):
            value = getattr(self, name)
            if name not in wanted:
                if value is not None:
                    raise ActionSpecError(f"action map mode {self.mode!r} takes no {name} — leave it out")
                continue
            if value is None:
                raise ActionSpecError(f"action map mode {self.mode!r} needs {name}")
            object.__setattr__(self, name, _joint_array(value, len(names), name))
        if self.max_delta_rad is not None:
            bad = np.flatnonzero(self.max_delta_rad <= 0)
            if bad.size:
                raise ActionSpecError(
                    f"action map max_delta_rad of joint {names[bad[0]]} = {self.max_delta_rad[bad[0]]} must be > 0"
                )
        if self.low_rad is not None and self.high_rad is not None:
            bad = np.flatnonzero(~(self.low_rad < self.high_rad))
            if bad.size:
                joint = bad[0]
                raise ActionSpecError(
                    f"action map of joint {names[joint]}: low_rad {self.low_rad[joint]} is not below "
                    f"high_rad {self.high_rad[joint]}"
                )

    @classmethod
    def relative(
        cls,
        joint_names: Sequence[str],
        limits: SafetyLimits,
        control_period_s: float,
        max_delta_rad: ArrayLike | None = None,
    ) -> ActionMap:
        """Relative map; ``max_delta_rad`` defaults to ``max_speed_rad_s * control_period_s`` per joint."""
        if not (math.isfinite(control_period_s) and control_period_s > 0):
            raise ActionSpecError(f"control_period_s = {control_period_s!r} must be a positive number of seconds")
        if max_delta_rad is None:
            max_delta_rad = limits.max_speed_rad_s * float(control_period_s)
        return cls(tuple(joint_names), RELATIVE, max_delta_rad=max_delta_rad)

    @classmethod
    def absolute(cls, joint_names: Sequence[str], limits: SafetyLimits) -> ActionMap:
        """Absolute map over the soft limits."""
        return cls(tuple(joint_names), ABSOLUTE, low_rad=limits.soft_low_rad, high_rad=limits.soft_high_rad)

    @classmethod
    def around(cls, joint_names: Sequence[str], centre_rad: ArrayLike, half_range_rad: float | ArrayLike) -> ActionMap:
        """Absolute map ``centre ± half_range``: action 0 is the centre pose (e.g. a task's start pose).

        The range may reach past the soft limits: the safety filter clamps every target to them, so an action
        means the same on every hand whatever its limits.
        """
        centre = _joint_array(centre_rad, len(tuple(joint_names)), "centre_rad")
        half = np.broadcast_to(np.asarray(half_range_rad, dtype=np.float64), centre.shape)
        if not bool(np.all(np.isfinite(half) & (half > 0))):
            raise ActionSpecError(f"action map half range {half_range_rad!r} must be finite and > 0 [rad]")
        return cls(tuple(joint_names), ABSOLUTE, low_rad=centre - half, high_rad=centre + half)

    @classmethod
    def from_profile(cls, profile: HandProfile, mode: str = RELATIVE) -> ActionMap:
        """The map for ``profile`` at full speed (``speed_scale`` 1: the scale is part of the policy's meaning)."""
        limits = SafetyLimits.from_profile(profile)
        if mode == RELATIVE:
            return cls.relative(profile.joint_names, limits, profile.control_period_s)
        if mode == ABSOLUTE:
            return cls.absolute(profile.joint_names, limits)
        raise ActionSpecError(f"action map mode {mode!r} is unknown; valid modes: {', '.join(ACTION_MODES)}")

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def __call__(self, action: ArrayLike, previous_target_rad: ArrayLike | None = None) -> NDArray[np.float64]:
        """Raw joint targets [rad], shape (n,) — or (N, n) for a batch of N hands — float64, for the safety filter.

        ``action`` (n,) or (N, n) is clipped to [-1, 1], non-finite entries kept as they are.
        ``previous_target_rad`` of the same shape [rad], the last filtered target, is needed in relative mode
        and ignored in absolute mode. Raises ActionInputError on a wrong shape or a missing previous target;
        never on values.
        """
        n = len(self.joint_names)
        raw = np.asarray(action, dtype=np.float64)
        if raw.ndim not in (1, 2) or raw.shape[-1] != n:
            raise ActionInputError(
                f"action needs shape ({n},) (one value per joint, policy order) or (N, {n}), got {raw.shape}"
            )
        clipped = np.minimum(np.maximum(raw, -1.0), 1.0)
        finite = math.isfinite(sum(raw.tolist())) if raw.ndim == 1 else bool(np.isfinite(raw).all())
        if not finite:
            clipped = np.where(np.isfinite(raw), clipped, raw)  # NaN/inf reach the filter, which rejects them
        if self.max_delta_rad is not None:
            if previous_target_rad is None:
                raise ActionInputError("a relative action map needs previous_target_rad (the last filtered target)")
            previous = np.asarray(previous_target_rad, dtype=np.float64)
            if previous.shape != raw.shape:
                raise ActionInputError(f"previous_target_rad needs shape {raw.shape}, got {previous.shape}")
            return previous + clipped * self.max_delta_rad
        assert self.low_rad is not None and self.high_rad is not None
        return self.low_rad + (clipped + 1.0) * 0.5 * (self.high_rad - self.low_rad)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema_version": ACTION_SPEC_SCHEMA_VERSION,
            "mode": self.mode,
            "joint_names": list(self.joint_names),
        }
        for name in MODE_PARAMETERS[self.mode]:
            data[name] = [float(value) for value in getattr(self, name)]
        return data

    def to_json(self) -> str:
        """The map as JSON, for the policy file's metadata (floats round-trip exactly)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionMap:
        """Inverse of :meth:`to_dict`; raises ActionSpecError naming the problem."""
        if not isinstance(data, Mapping):
            raise ActionSpecError(f"action spec must be a JSON object, got {type(data).__name__}")
        mode = data.get("mode")
        if mode not in ACTION_MODES:
            raise ActionSpecError(f"action spec mode {mode!r} is unknown; valid modes: {', '.join(ACTION_MODES)}")
        expected = {"schema_version", "mode", "joint_names", *MODE_PARAMETERS[mode]}
        check_spec_document(data, f"action spec ({mode})", expected, ACTION_SPEC_SCHEMA_VERSION, ActionSpecError)
        names = data["joint_names"]
        if not isinstance(names, list):
            raise ActionSpecError(f"action spec joint_names must be a list of names, got {type(names).__name__}")
        parameters = {name: data[name] for name in MODE_PARAMETERS[mode]}
        return cls(tuple(names), mode, **parameters)

    @classmethod
    def from_json(cls, text: str | bytes) -> ActionMap:
        """Parse :meth:`to_json` output; raises ActionSpecError naming the problem."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise ActionSpecError(f"action spec is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def diff(self, other: ActionMap, *, this: str = "this map", that: str = "the other map") -> list[str]:
        """Every difference from ``self`` to ``other`` in words (joints, their order, mode, scale); empty if none."""
        problems: list[str] = []
        theirs = set(other.joint_names)
        mine = set(self.joint_names)
        for name in self.joint_names:
            if name not in theirs:
                problems.append(f"joint {name!r} is in {this} but missing from {that}")
        for name in other.joint_names:
            if name not in mine:
                problems.append(f"joint {name!r} is in {that} but not in {this}")
        common_mine = [name for name in self.joint_names if name in theirs]
        common_theirs = [name for name in other.joint_names if name in mine]
        if common_mine != common_theirs:
            problems.append(
                f"joint order differs: {this} has {', '.join(common_mine)}; {that} has {', '.join(common_theirs)}"
            )
        if self.mode != other.mode:
            problems.append(f"mode is {self.mode!r} in {this} but {other.mode!r} in {that}")
            return problems
        their_index = {name: index for index, name in enumerate(other.joint_names)}
        for parameter in MODE_PARAMETERS[self.mode]:
            my_values, their_values = getattr(self, parameter), getattr(other, parameter)
            for index, name in enumerate(self.joint_names):
                if name not in their_index:
                    continue
                mine_value, their_value = float(my_values[index]), float(their_values[their_index[name]])
                if not math.isclose(mine_value, their_value, rel_tol=SCALE_RTOL, abs_tol=1e-12):
                    problems.append(
                        f"joint {name!r}: {parameter} is {mine_value:.6g} in {this} but {their_value:.6g} in {that}"
                    )
        return problems
