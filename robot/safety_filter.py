"""The target filter: the pure, I/O-free part of the safety layer that every joint target passes through.

Called once per control step by both the simulator and the control loop, so a policy meets the same
filter in training and on the hand. Numpy only; about 15-20 µs per tick for 16 joints.

Each tick, in priority order:

(a) a raw target with any non-finite entry (NaN, ±inf) is rejected as a whole: the target stops as
    fast as the acceleration limit allows (holding the last safe target) — one ``non_finite`` record
    with ``joint = -1``. A non-finite *measured* position means "no measurement" for that joint: its
    tracking window is skipped.
(b) the raw target is clamped into the soft limits (``position_limit``);
(c) then into the tracking window ``[measured - d, measured + d]`` (``tracking_error``);
(d) the emitted target moves from the last emitted one at most ``max_speed * dt`` per tick, and its
    per-tick velocity changes by at most ``max_accel * dt`` (``speed_limit``: the target was held back
    from the goal of (b)-(c)). The bounds are braking-distance aware: the next velocity ``u`` toward a
    soft limit at distance ``gap`` obeys ``u dt + u^2 / (2 a) <= gap`` (or ``u <= a dt`` and
    ``u dt <= gap``, a one-tick stop), so the target can always stop inside the soft limits without
    breaking the acceleration limit, and approaches its goal the same way, landing on it exactly.

When the tracking window, which moves with the measured position, leaves no velocity that meets every
limit: the soft limits and the max speed are absolute, then the target must not end further from the
measured position than the larger of ``d`` and where it already is, and the acceleration limit gives
way last (an ``accel_limit`` record: the acceleration limit was broken on that joint this tick).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.robot.errors import RobotError
from handrail.robot.safety_limits import SafetyConfigError, SafetyLimits

NON_FINITE = "non_finite"
POSITION_LIMIT = "position_limit"
TRACKING_ERROR = "tracking_error"
SPEED_LIMIT = "speed_limit"
ACCEL_LIMIT = "accel_limit"
INTERVENTION_KINDS = (NON_FINITE, POSITION_LIMIT, TRACKING_ERROR, SPEED_LIMIT, ACCEL_LIMIT)

WHOLE_ACTION = -1
# Rounding allowance [rad]. An emitted target this close to its goal is put exactly on it (`p + (g - p)`
# may miss `g` by an ulp, which would leave a target that never settles and a stream of empty
# interventions), and a bound missed by less is not reported as the acceleration limit giving way.
LANDING_TOLERANCE_RAD = 1e-12


class SafetyFilterError(RobotError):
    """The target filter was used wrongly (no reset, wrong shape, no finite measurement to start from)."""


class Intervention(NamedTuple):
    """One change the filter made to one joint's target (joint ``-1``: the whole action).

    ``raw`` is the value that stage received and ``allowed`` what it let through [rad]:
    ``position_limit``: raw target -> clamped into the soft limits; ``tracking_error``: that -> clamped
    into the tracking window; ``speed_limit``: that goal -> the emitted target; ``accel_limit``: the
    nearest target the acceleration limit allowed -> the emitted target; ``non_finite`` (joint -1): the
    first non-finite entry -> NaN (no value was let through; the target stops and holds).
    """

    joint: int
    kind: str
    raw: float
    allowed: float


@dataclass(frozen=True, eq=False)
class FilterResult:
    """The target to send [rad], shape (n,), and what the filter changed to get it."""

    target_rad: NDArray[np.float64]
    interventions: tuple[Intervention, ...]


def _records(
    kind: str, mask: NDArray[np.bool_], raw: NDArray[np.float64], allowed: NDArray[np.float64]
) -> list[Intervention]:
    joints = mask.nonzero()[0]
    return list(map(Intervention, joints.tolist(), repeat(kind), raw[joints].tolist(), allowed[joints].tolist()))


@dataclass(frozen=True, eq=False)
class _StepBounds:
    """Per-tick constants of stage (d), in position steps [rad per tick].

    The speed limit as a step, the acceleration limit as a change of step (a dt^2), and, for the braking
    curve, the same constant for three rows at once: distance to the goal, to the upper soft limit, to the
    lower (shape (3, n), or (3, 1, n) to broadcast over a batch of hands).
    """

    low: NDArray[np.float64]
    high: NDArray[np.float64]
    max_step: NDArray[np.float64]
    accel_step: NDArray[np.float64]
    accel_step_3: NDArray[np.float64]
    accel_step_sq_3: NDArray[np.float64]
    two_accel_step_3: NDArray[np.float64]

    @classmethod
    def make(cls, limits: SafetyLimits, dt: float, *, batched: bool) -> _StepBounds:
        accel_step = limits.max_accel_rad_s2 * dt * dt
        accel_step_3 = np.tile(accel_step, (3, 1))
        if batched:
            accel_step_3 = accel_step_3[:, None, :]
        return cls(
            low=limits.soft_low_rad,
            high=limits.soft_high_rad,
            max_step=limits.max_speed_rad_s * dt,
            accel_step=accel_step,
            accel_step_3=accel_step_3,
            accel_step_sq_3=accel_step_3**2,
            two_accel_step_3=2.0 * accel_step_3,
        )


def _limited_step(
    target: NDArray[np.float64],
    step: NDArray[np.float64],
    goal: NDArray[np.float64],
    window_low: NDArray[np.float64],
    window_high: NDArray[np.float64],
    bounds: _StepBounds,
    gaps: NDArray[np.float64],
) -> tuple[NDArray[np.float64], ...]:
    """Stage (d) for one hand (arrays (n,), ``gaps`` (3, n)) or a batch ((N, n), ``gaps`` (3, N, n)).

    ``gaps`` is scratch space. Returns the new target (before landing on the goal), the bounds
    ``upper``/``lower`` the absolute limits and the tracking window allow, and the acceleration interval
    ``accel_low``/``accel_high`` around coasting on.
    """
    minimum, maximum = np.minimum, np.maximum
    # The largest step after which the target can still stop, with the acceleration limit, at the goal and
    # inside each soft limit: on the braking curve s + s^2 / (2 a dt^2) = gap, or (a one-tick stop)
    # s <= a dt^2 and s <= gap.
    to_goal = goal - target
    np.abs(to_goal, out=gaps[0])
    np.subtract(bounds.high, target, out=gaps[1])
    np.subtract(target, bounds.low, out=gaps[2])
    braking = np.sqrt(bounds.accel_step_sq_3 + bounds.two_accel_step_3 * gaps)
    braking -= bounds.accel_step_3
    stop_steps = maximum(braking, minimum(gaps, bounds.accel_step_3))
    desired = target + np.copysign(stop_steps[0], to_goal)

    # Absolute: max speed and braking before the soft limits. Then the tracking window, widened to include
    # staying put, so the target never ends further from the measured position than it is. Using the window
    # clipped into the soft limits keeps every bound inside them without rounding.
    max_step = bounds.max_step
    upper = minimum(target + minimum(max_step, stop_steps[1]), maximum(window_high, target))
    lower = maximum(target - minimum(max_step, stop_steps[2]), minimum(window_low, target))
    # The acceleration interval around coasting on, moved to the nearest point of [lower, upper] where it
    # lies outside (only the moving tracking window can push it there).
    coast = target + step
    accel_low = coast - bounds.accel_step
    accel_high = coast + bounds.accel_step
    allowed_low = minimum(maximum(accel_low, lower), upper)
    allowed_high = minimum(maximum(accel_high, lower), upper)
    new_target = minimum(maximum(desired, allowed_low), allowed_high)
    return new_target, upper, lower, accel_low, accel_high


def _accel_broken(
    accel_low: NDArray[np.float64],
    accel_high: NDArray[np.float64],
    upper: NDArray[np.float64],
    lower: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Where the acceleration limit gave way. Braking along the curve meets the acceleration bound exactly;
    rounding must not report that."""
    return (accel_low > upper + LANDING_TOLERANCE_RAD) | (accel_high < lower - LANDING_TOLERANCE_RAD)


class TargetFilter:
    """Stateful per-tick filter of joint targets [rad] against :class:`SafetyLimits`.

    Holds the last emitted target and its per-tick velocity. Call :meth:`reset` with the measured
    position before the first tick (and after any pause in which the hand moved without it).
    """

    def __init__(self, limits: SafetyLimits, control_period_s: float):
        if not (math.isfinite(control_period_s) and control_period_s > 0):
            raise SafetyConfigError(f"control_period_s = {control_period_s!r} must be a positive number of seconds")
        self.limits = limits
        self.control_period_s = float(control_period_s)
        self.counts: dict[str, int] = dict.fromkeys(INTERVENTION_KINDS, 0)
        n = limits.n_joints
        dt = self.control_period_s
        self._shape = (n,)
        self._low = limits.soft_low_rad
        self._high = limits.soft_high_rad
        self._window = limits.max_tracking_error_rad
        self._bounds = _StepBounds.make(limits, dt, batched=False)
        self._gaps = np.empty((3, n))  # scratch for _limited_step
        self._inv_dt = 1.0 / dt
        self._target: NDArray[np.float64] | None = None
        self._step = np.zeros(n)  # last emitted target minus the one before [rad]

    @property
    def last_target_rad(self) -> NDArray[np.float64]:
        """The last emitted target [rad] (a copy). Raises SafetyFilterError before :meth:`reset`."""
        if self._target is None:
            raise SafetyFilterError("the target filter has no target yet — call reset(measured_rad) first")
        return self._target.copy()

    @property
    def last_velocity_rad_s(self) -> NDArray[np.float64]:
        """Per-tick velocity of the emitted target [rad/s]: (last target - the one before) / dt (a copy)."""
        return self._step * self._inv_dt

    def reset(self, measured_rad: ArrayLike) -> None:
        """Start from the measured position clipped into the soft limits, at rest. Counts are kept.

        Raises SafetyFilterError on a wrong shape or a non-finite measured position.
        """
        measured = self._as_joint_array(measured_rad, "measured_rad")
        bad = np.flatnonzero(~np.isfinite(measured))
        if bad.size:
            raise SafetyFilterError(
                f"cannot reset the target filter: measured position of joint {bad[0]} is {measured[bad[0]]} — "
                "read the hand's state again; a start needs a finite position on every joint"
            )
        self._target = np.minimum(np.maximum(measured, self._low), self._high)
        self._step = np.zeros(self._shape)

    def _as_joint_array(self, values: ArrayLike, name: str) -> NDArray[np.float64]:
        array = np.asarray(values, dtype=np.float64)
        if array.shape != self._shape:
            raise SafetyFilterError(
                f"{name} needs shape {self._shape} (one value per joint, policy order), got {array.shape}"
            )
        return array

    def __call__(self, raw_target_rad: ArrayLike, measured_rad: ArrayLike) -> FilterResult:
        """Filter one tick's raw target [rad] given the measured position [rad]; both shape (n,).

        Returns the target to send and the interventions, in stage order (non_finite, position_limit,
        tracking_error, speed_limit, accel_limit), each by joint. Raises SafetyFilterError before
        :meth:`reset` or on a wrong shape; never on values.
        """
        target = self._target
        if target is None:
            raise SafetyFilterError("the target filter has no target yet — call reset(measured_rad) first")
        raw = np.asarray(raw_target_rad, dtype=np.float64)
        measured = np.asarray(measured_rad, dtype=np.float64)
        if raw.shape != self._shape or measured.shape != self._shape:
            self._as_joint_array(raw, "raw_target_rad")
            self._as_joint_array(measured, "measured_rad")
        low, high = self._low, self._high
        minimum, maximum = np.minimum, np.maximum  # ~40 calls a tick: skip the attribute lookups
        records: list[Intervention] = []

        # The tracking window clipped into the soft limits; where it lies wholly outside them it shrinks to
        # the nearer soft limit. A sum of floats is finite only if every entry is (NaN and inf propagate);
        # huge finite values may overflow it, so a non-finite sum is checked entry by entry.
        if math.isfinite(sum(measured.tolist())) or np.isfinite(measured).all():
            window_low = maximum(measured - self._window, low)
            window_high = minimum(measured + self._window, high)
        else:  # no measurement on some joints: no tracking window there
            known = np.isfinite(measured)
            window_low = np.where(known, maximum(measured - self._window, low), low)
            window_high = np.where(known, minimum(measured + self._window, high), high)

        raw_finite = math.isfinite(sum(raw.tolist())) or bool(np.isfinite(raw).all())
        if raw_finite:
            soft_goal = minimum(maximum(raw, low), high)  # (b)
            goal = maximum(minimum(maximum(soft_goal, window_low), window_high), low)  # (c)
        else:  # (a) reject the whole action: stop as fast as allowed, and hold
            first_bad = float(raw[np.flatnonzero(~np.isfinite(raw))[0]])
            records.append(Intervention(WHOLE_ACTION, NON_FINITE, first_bad, math.nan))
            soft_goal = goal = target

        # (d) speed, acceleration and braking, shared with BatchTargetFilter.
        new_target, upper, lower, accel_low, accel_high = _limited_step(
            target, self._step, goal, window_low, window_high, self._bounds, self._gaps
        )

        if new_target.tobytes() != goal.tobytes():
            landed = np.abs(new_target - goal) <= LANDING_TOLERANCE_RAD
            np.copyto(new_target, goal, where=landed)
            if raw_finite and np.count_nonzero(landed) < landed.size:
                records += _records(SPEED_LIMIT, ~landed, goal, new_target)
        if raw_finite and raw.tobytes() != goal.tobytes():
            records[:0] = _records(POSITION_LIMIT, soft_goal != raw, raw, soft_goal) + _records(
                TRACKING_ERROR, goal != soft_goal, soft_goal, goal
            )
        if np.count_nonzero(np.greater(accel_low, upper)) or np.count_nonzero(np.less(accel_high, lower)):
            accel_broken = _accel_broken(accel_low, accel_high, upper, lower)
            if accel_broken.any():
                accel_target = minimum(maximum(new_target, accel_low), accel_high)
                records += _records(ACCEL_LIMIT, accel_broken, accel_target, new_target)

        self._step = new_target - target
        self._target = new_target
        if records:
            counts = self.counts
            for record in records:
                counts[record.kind] += 1
        return FilterResult(new_target.copy(), tuple(records))


@dataclass(frozen=True, eq=False)
class BatchFilterResult:
    """Targets to send for a batch of hands [rad], (N, n), and how many interventions of each kind each got (N,)."""

    target_rad: NDArray[np.float64]
    counts: dict[str, NDArray[np.int64]]


class BatchTargetFilter:
    """:class:`TargetFilter` for N hands at once (the training environment's batch of simulations).

    The same stages and the same stage-(d) arithmetic (:func:`_limited_step`), so each row's target equals,
    bit for bit, what a :class:`TargetFilter` fed that row's inputs would emit. Interventions are counted per
    kind and hand rather than listed (building N records per tick would cost more than the physics).
    """

    def __init__(self, limits: SafetyLimits, control_period_s: float, n_hands: int):
        if not (math.isfinite(control_period_s) and control_period_s > 0):
            raise SafetyConfigError(f"control_period_s = {control_period_s!r} must be a positive number of seconds")
        if n_hands < 1:
            raise SafetyFilterError(f"n_hands = {n_hands} must be at least 1")
        n = limits.n_joints
        self.limits = limits
        self.control_period_s = float(control_period_s)
        self.n_hands = n_hands
        self._shape = (n_hands, n)
        self._bounds = _StepBounds.make(limits, self.control_period_s, batched=True)
        self._window = limits.max_tracking_error_rad
        self._gaps = np.empty((3, n_hands, n))
        self.target_rad = np.zeros(self._shape)  # last emitted targets (read-only to callers)
        self._step = np.zeros(self._shape)

    def reset(self, hands: NDArray[np.intp] | slice, measured_rad: ArrayLike) -> None:
        """Restart ``hands`` (indices or a slice) at rest from their measured positions clipped into the soft limits."""
        measured = np.asarray(measured_rad, dtype=np.float64)
        if not np.isfinite(measured).all():
            raise SafetyFilterError("cannot reset the batch target filter from a non-finite measured position")
        self.target_rad[hands] = np.minimum(np.maximum(measured, self._bounds.low), self._bounds.high)
        self._step[hands] = 0.0

    def __call__(self, raw_target_rad: ArrayLike, measured_rad: ArrayLike) -> BatchFilterResult:
        """Filter one tick for every hand; ``raw_target_rad`` and ``measured_rad`` are (N, n) [rad]."""
        raw = np.asarray(raw_target_rad, dtype=np.float64)
        measured = np.asarray(measured_rad, dtype=np.float64)
        if raw.shape != self._shape or measured.shape != self._shape:
            raise SafetyFilterError(
                f"raw and measured targets need shape {self._shape}, got {raw.shape}, {measured.shape}"
            )
        low, high, target = self._bounds.low, self._bounds.high, self.target_rad
        minimum, maximum = np.minimum, np.maximum
        window_low = maximum(measured - self._window, low)
        window_high = minimum(measured + self._window, high)
        known = np.isfinite(measured)
        if not known.all():  # no measurement on some joints: no tracking window there
            window_low = np.where(known, window_low, low)
            window_high = np.where(known, window_high, high)
        finite_rows = np.isfinite(raw).all(axis=1)
        all_finite = bool(finite_rows.all())
        safe_raw = raw if all_finite else np.where(finite_rows[:, None], raw, target)
        soft_goal = minimum(maximum(safe_raw, low), high)  # (b)
        goal = maximum(minimum(maximum(soft_goal, window_low), window_high), low)  # (c)
        if not all_finite:  # (a) reject a hand's whole action: stop as fast as allowed, and hold
            soft_goal = np.where(finite_rows[:, None], soft_goal, target)
            goal = np.where(finite_rows[:, None], goal, target)
        new_target, upper, lower, accel_low, accel_high = _limited_step(
            target, self._step, goal, window_low, window_high, self._bounds, self._gaps
        )
        landed = np.abs(new_target - goal) <= LANDING_TOLERANCE_RAD
        np.copyto(new_target, goal, where=landed)
        rows = finite_rows[:, None]
        counts = {
            NON_FINITE: (~finite_rows).astype(np.int64),
            POSITION_LIMIT: np.count_nonzero((soft_goal != raw) & rows, axis=1),
            TRACKING_ERROR: np.count_nonzero((goal != soft_goal) & rows, axis=1),
            SPEED_LIMIT: np.count_nonzero(~landed & rows, axis=1),
            ACCEL_LIMIT: np.count_nonzero(_accel_broken(accel_low, accel_high, upper, lower), axis=1),
        }
        self._step = new_target - target
        self.target_rad = new_target
        return BatchFilterResult(new_target.copy(), counts)
