"""The target filter: no action sequence gets a target out of the soft limits, too fast, or too far from
the hand; every change it makes is reported; the limits can only be tightened."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handrail.robot.profile import load_profile
from handrail.robot.safety_filter import (
    ACCEL_LIMIT,
    INTERVENTION_KINDS,
    NON_FINITE,
    POSITION_LIMIT,
    SPEED_LIMIT,
    TRACKING_ERROR,
    BatchTargetFilter,
    FilterResult,
    Intervention,
    SafetyFilterError,
    TargetFilter,
)
from handrail.robot.safety_limits import SafetyConfigError, SafetyLimits

PROFILE = load_profile(check_model=False)
LEAP_LIMITS = SafetyLimits.from_profile(PROFILE)
LEAP_PERIOD_S = PROFILE.control_period_s
TOLERANCE_RAD = 1e-9

ACTION_KINDS = (
    "nan",
    "partial_nan",
    "inf",
    "huge",
    "alternating_extremes",
    "random_walk",
    "jump",
    "constant",
    "uniform",
    "limits",
)
FOLLOW_KINDS = ("exact", "lag", "noise", "extreme")  # measured = previous target + offset within d / 2
ADVERSARIAL_KINDS = ("anywhere", "far", "nan", "inf", "frozen", "jumping", "follow")


@dataclass(frozen=True)
class Case:
    limits: SafetyLimits
    control_period_s: float
    start_rad: np.ndarray  # measured position at reset
    actions: np.ndarray  # (ticks, n) raw targets
    measured_kinds: tuple[str, ...]  # one per tick
    seed: int


def _random_limits(n: int, seed: int, control_period_s: float) -> SafetyLimits:
    """Random per-joint limits whose tracking window is at least two max-speed steps wide, as on the LEAP hand."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(-3.0, 1.0, n)
    max_speed = rng.uniform(0.1, 10.0, n)
    return SafetyLimits(
        soft_low_rad=low,
        soft_high_rad=low + rng.uniform(0.02, 3.0, n),
        max_speed_rad_s=max_speed,
        max_accel_rad_s2=rng.uniform(0.5, 400.0, n),
        max_tracking_error_rad=2.0 * max_speed * control_period_s * rng.uniform(1.0, 3.0, n),
        current_limit_ma=np.full(n, 350.0),
        temperature_limit_c=np.full(n, 70.0),
    )


def _segment(kind: str, length: int, limits: SafetyLimits, rng: np.random.Generator) -> np.ndarray:
    n = limits.n_joints
    low, high = limits.soft_low_rad, limits.soft_high_rad
    span = high - low
    if kind == "nan":
        return np.full((length, n), np.nan)
    if kind == "partial_nan":
        actions = rng.uniform(low - span, high + span, (length, n))
        actions[rng.random((length, n)) < 0.2] = np.nan
        return actions
    if kind == "inf":
        return rng.choice([np.inf, -np.inf, 0.0], size=(length, n))
    if kind == "huge":
        return rng.choice([1e300, -1e300, 1e12, -1e12, np.finfo(float).max], size=(length, n))
    if kind == "alternating_extremes":
        ticks = np.arange(length)[:, None] % 2 == 0
        return np.where(ticks, low - 1.0, high + 1.0)
    if kind == "random_walk":
        start = rng.uniform(low, high)
        return start + np.cumsum(rng.normal(0.0, 0.05 * span, (length, n)), axis=0)
    if kind == "jump":
        return np.repeat(rng.uniform(low - 0.5 * span, high + 0.5 * span, (1, n)), length, axis=0)
    if kind == "constant":
        return np.repeat(rng.uniform(low, high, (1, n)), length, axis=0)
    if kind == "uniform":
        return rng.uniform(low - span, high + span, (length, n))
    return np.repeat(rng.choice([0, 1], n)[None, :] * span + low, length, axis=0)  # exactly at a soft limit


@st.composite
def cases(draw: st.DrawFn, measured_kinds: tuple[str, ...]) -> Case:
    seed = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        limits, control_period_s = LEAP_LIMITS, LEAP_PERIOD_S
    else:
        control_period_s = draw(st.sampled_from([0.002, 0.01, 1 / 30, 0.1]))
        limits = _random_limits(draw(st.integers(1, 16)), seed, control_period_s)
    segments = draw(st.lists(st.tuples(st.sampled_from(ACTION_KINDS), st.integers(1, 20)), min_size=1, max_size=4))
    rng = np.random.default_rng(seed)
    actions = np.concatenate([_segment(kind, length, limits, rng) for kind, length in segments])
    kinds = draw(st.lists(st.sampled_from(measured_kinds), min_size=1, max_size=4))
    start = rng.uniform(limits.soft_low_rad - 0.3, limits.soft_high_rad + 0.3)
    per_tick = tuple(kinds[(tick * len(kinds)) // len(actions)] for tick in range(len(actions)))
    return Case(limits, control_period_s, start, actions, per_tick, seed)


def _follow(kind: str, target: np.ndarray, window: np.ndarray, tick: int, rng: np.random.Generator) -> np.ndarray:
    """A hand that follows the target with a bounded lag or noise: within half the tracking window."""
    half = 0.5 * window
    if kind == "exact":
        return target.copy()
    if kind == "lag":
        return target - half
    if kind == "noise":
        return target + rng.uniform(-half, half)
    return target + (half if tick % 2 else -half)


def _adversarial(kind: str, case: Case, target: np.ndarray, tick: int, rng: np.random.Generator) -> np.ndarray:
    """A measured position anywhere: out of the limits, jumping, frozen, NaN or inf."""
    low, high = case.limits.soft_low_rad, case.limits.soft_high_rad
    n = case.limits.n_joints
    if kind == "anywhere":
        return rng.uniform(low - 1.0, high + 1.0)
    if kind == "far":
        return np.where(rng.random(n) < 0.5, low - 5.0, high + 5.0)
    if kind == "nan":
        measured = rng.uniform(low, high)
        measured[rng.random(n) < 0.5] = np.nan
        return measured
    if kind == "inf":
        return rng.choice([np.inf, -np.inf, 0.0], size=n)
    if kind == "frozen":
        return case.start_rad.copy()
    if kind == "jumping":
        return np.where(tick % 2 == 0, low, high)
    return target + rng.uniform(-3.0, 3.0, n) * case.limits.max_tracking_error_rad


def _run(filter_: TargetFilter, case: Case, adversarial: bool):
    """Targets (ticks + 1, n) with the reset target first, measured (ticks, n), the results."""
    rng = np.random.default_rng(case.seed + 1)
    filter_.reset(case.start_rad)
    targets = [filter_.last_target_rad]
    measured_all, results = [], []
    for tick, (action, kind) in enumerate(zip(case.actions, case.measured_kinds, strict=True)):
        if adversarial:
            measured = _adversarial(kind, case, targets[-1], tick, rng)
        else:
            measured = _follow(kind, targets[-1], case.limits.max_tracking_error_rad, tick, rng)
        result = filter_(action, measured)
        targets.append(result.target_rad)
        measured_all.append(measured)
        results.append(result)
    return np.array(targets), np.array(measured_all), results


def _check_absolute(limits: SafetyLimits, control_period_s: float, targets: np.ndarray) -> None:
    assert np.all(np.isfinite(targets)), "a target is not finite"
    outside = (targets < limits.soft_low_rad) | (targets > limits.soft_high_rad)
    assert not outside.any(), f"soft limits broken at (tick, joint) {np.argwhere(outside)[:3].tolist()}"
    steps = np.diff(targets, axis=0)
    too_fast = np.abs(steps) > limits.max_speed_rad_s * control_period_s + TOLERANCE_RAD
    assert not too_fast.any(), (
        f"speed limit broken at (tick, joint) {np.argwhere(too_fast)[:3].tolist()}: "
        f"{np.abs(steps)[too_fast][:3] / control_period_s} rad/s > {limits.max_speed_rad_s}"
    )


def _accel_violations(limits: SafetyLimits, control_period_s: float, targets: np.ndarray) -> np.ndarray:
    """(ticks, n) where the per-tick velocity changed by more than max_accel * dt (from rest at reset)."""
    steps = np.diff(targets, axis=0, prepend=targets[:1])  # the reset target is at rest
    changes = np.abs(np.diff(steps, axis=0))  # step k+1 - step k = (velocity change) * dt
    return changes > limits.max_accel_rad_s2 * control_period_s**2 + TOLERANCE_RAD


def check_realistic(filter_: TargetFilter, case: Case) -> None:
    """Every tick: soft limits, max speed, max acceleration, tracking window — all at once."""
    targets, measured, _ = _run(filter_, case, adversarial=False)
    _check_absolute(case.limits, case.control_period_s, targets)
    jerky = _accel_violations(case.limits, case.control_period_s, targets)
    assert not jerky.any(), f"acceleration limit broken at (tick, joint) {np.argwhere(jerky)[:3].tolist()}"
    lead = np.abs(targets[1:] - measured)
    far = lead > case.limits.max_tracking_error_rad + TOLERANCE_RAD
    assert not far.any(), f"tracking window broken at (tick, joint) {np.argwhere(far)[:3].tolist()}"
    assert filter_.counts[ACCEL_LIMIT] == 0


def check_adversarial(filter_: TargetFilter, case: Case) -> None:
    """Measured anywhere: limits and speed hold, the target never runs further from the measured position
    than the larger of d and where it was, and every broken acceleration limit is reported."""
    targets, measured, results = _run(filter_, case, adversarial=True)
    _check_absolute(case.limits, case.control_period_s, targets)
    known = np.isfinite(measured)
    allowed_rad = np.maximum(case.limits.max_tracking_error_rad, np.abs(targets[:-1] - measured))
    ran_off = known & (np.abs(targets[1:] - measured) > allowed_rad + TOLERANCE_RAD)
    assert not ran_off.any(), f"target ran away from the measured position at {np.argwhere(ran_off)[:3].tolist()}"
    reported = np.zeros_like(known)
    for tick, result in enumerate(results):
        for record in result.interventions:
            if record.kind == ACCEL_LIMIT:
                reported[tick, record.joint] = True
    jerky = _accel_violations(case.limits, case.control_period_s, targets)
    unreported = jerky & ~reported
    assert not unreported.any(), f"unreported acceleration violation at {np.argwhere(unreported)[:3].tolist()}"


PROPERTY_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
# Only scripts/mutation_test.sh lowers this (one test run per mutant); CI and `make test` run the full counts.
EXAMPLES_SCALE = float(os.environ.get("HANDRAIL_PROPERTY_EXAMPLES_SCALE", "1"))


def _examples(count: int) -> int:
    return max(20, round(count * EXAMPLES_SCALE))


# The fast tier (every `make test`) runs 900 and 600 cases; the slow tier (`pytest -m slow`) ~65 x as many.
@settings(max_examples=_examples(900), **PROPERTY_SETTINGS)
@given(cases(FOLLOW_KINDS))
def test_every_tick_respects_every_limit_when_the_hand_follows(case):
    check_realistic(TargetFilter(case.limits, case.control_period_s), case)


@settings(max_examples=_examples(600), **PROPERTY_SETTINGS)
@given(cases(ADVERSARIAL_KINDS))
def test_absolute_limits_hold_whatever_the_measured_position(case):
    check_adversarial(TargetFilter(case.limits, case.control_period_s), case)


@pytest.mark.slow
@settings(max_examples=_examples(60_000), **PROPERTY_SETTINGS)
@given(cases(FOLLOW_KINDS))
def test_every_tick_respects_every_limit_when_the_hand_follows_slow(case):
    check_realistic(TargetFilter(case.limits, case.control_period_s), case)


@pytest.mark.slow
@settings(max_examples=_examples(40_000), **PROPERTY_SETTINGS)
@given(cases(ADVERSARIAL_KINDS))
def test_absolute_limits_hold_whatever_the_measured_position_slow(case):
    check_adversarial(TargetFilter(case.limits, case.control_period_s), case)


class _ClipOnlyFilter(TargetFilter):
    """Deliberately broken: soft limits and tracking window, but no rate limiting."""

    def __call__(self, raw_target_rad, measured_rad):
        raw = np.asarray(raw_target_rad, dtype=np.float64)
        if np.all(np.isfinite(raw)):
            window = self.limits.max_tracking_error_rad
            target = np.clip(np.clip(raw, measured_rad - window, measured_rad + window), self._low, self._high)
            self._target = target
        return FilterResult(self._target.copy(), ())


def _square_wave_case(ticks: int = 60) -> Case:
    high = (np.arange(ticks) // 15 % 2 == 1)[:, None]
    actions = np.where(high, LEAP_LIMITS.soft_high_rad, LEAP_LIMITS.soft_low_rad)
    return Case(LEAP_LIMITS, LEAP_PERIOD_S, np.zeros(16), actions, ("exact",) * ticks, seed=0)


def test_the_property_check_catches_a_filter_without_rate_limiting():
    check_realistic(TargetFilter(LEAP_LIMITS, LEAP_PERIOD_S), _square_wave_case())
    with pytest.raises(AssertionError, match="speed limit broken"):
        check_realistic(_ClipOnlyFilter(LEAP_LIMITS, LEAP_PERIOD_S), _square_wave_case())


def _leap_filter(start: np.ndarray | None = None) -> TargetFilter:
    filter_ = TargetFilter(LEAP_LIMITS, LEAP_PERIOD_S)
    filter_.reset(np.zeros(16) if start is None else start)
    return filter_


def _kinds(result: FilterResult) -> set[str]:
    return {record.kind for record in result.interventions}


def test_a_nan_action_holds_the_last_target_and_is_counted():
    filter_ = _leap_filter()
    action = np.zeros(16)
    action[5] = np.nan
    result = filter_(action, np.zeros(16))
    assert np.array_equal(result.target_rad, np.zeros(16))
    (record,) = result.interventions
    assert record.joint == -1 and record.kind == NON_FINITE and math.isnan(record.raw)
    assert filter_.counts[NON_FINITE] == 1
    action[5] = -np.inf
    assert filter_(action, np.zeros(16)).interventions[0].raw == -np.inf
    assert filter_.counts[NON_FINITE] == 2
    action[9] = np.nan  # two bad entries: the record carries the first
    assert filter_(action, np.zeros(16)).interventions[0].raw == -np.inf


def test_a_nan_action_while_moving_stops_within_the_acceleration_limit():
    filter_ = _leap_filter(LEAP_LIMITS.soft_low_rad)
    for _ in range(3):
        filter_(LEAP_LIMITS.soft_high_rad, filter_.last_target_rad)
    moving = filter_.last_velocity_rad_s
    assert np.all(moving > 1.0)
    targets = [filter_.last_target_rad]
    for _ in range(10):
        targets.append(filter_(np.full(16, np.nan), filter_.last_target_rad).target_rad)
    velocities = np.diff(targets, axis=0) / LEAP_PERIOD_S
    changes = np.abs(np.diff(np.vstack([moving, velocities]), axis=0))
    assert np.all(changes <= LEAP_LIMITS.max_accel_rad_s2 * LEAP_PERIOD_S + 1e-6)
    assert np.array_equal(targets[-1], targets[-2]), "the target holds still once stopped"
    assert filter_.counts[NON_FINITE] == 10


def test_each_clamp_is_reported_with_joint_raw_and_allowed():
    filter_ = _leap_filter()
    high = LEAP_LIMITS.soft_high_rad
    action = np.zeros(16)
    action[3] = high[3] + 1.0  # beyond the soft limit (and the window)
    action[7] = 0.2  # inside the soft limits, beyond the tracking window around 0.1
    action[9] = 0.05  # inside both, but more than one tick away
    measured = np.zeros(16)
    measured[7] = -0.1
    result = filter_(action, measured)
    records = {(record.joint, record.kind): record for record in result.interventions}
    assert records[3, POSITION_LIMIT] == Intervention(3, POSITION_LIMIT, high[3] + 1.0, high[3])
    window = LEAP_LIMITS.max_tracking_error_rad
    assert records[3, TRACKING_ERROR] == Intervention(3, TRACKING_ERROR, high[3], window[3])
    assert records[7, TRACKING_ERROR] == Intervention(7, TRACKING_ERROR, 0.2, pytest.approx(-0.1 + window[7]))
    assert (7, POSITION_LIMIT) not in records
    speed = records[9, SPEED_LIMIT]
    assert speed.raw == 0.05 and speed.allowed == result.target_rad[9]
    assert 0 < speed.allowed <= LEAP_LIMITS.max_accel_rad_s2[9] * LEAP_PERIOD_S**2 + TOLERANCE_RAD
    untouched = set(range(16)) - {3, 7, 9}
    assert not any(record.joint in untouched for record in result.interventions)
    assert filter_.counts[POSITION_LIMIT] == 1 and filter_.counts[TRACKING_ERROR] == 2


def test_a_moving_tracking_window_breaks_the_acceleration_limit_and_says_so():
    filter_ = _leap_filter(LEAP_LIMITS.soft_low_rad)
    for _ in range(3):
        result = filter_(LEAP_LIMITS.soft_high_rad, filter_.last_target_rad)
    assert ACCEL_LIMIT not in _kinds(result)
    target = filter_.last_target_rad
    measured = target - LEAP_LIMITS.max_tracking_error_rad  # the hand fell behind by a whole window
    result = filter_(LEAP_LIMITS.soft_high_rad, measured)
    assert np.allclose(result.target_rad, target), "the target may not lead further: it stops at once"
    accel = [record for record in result.interventions if record.kind == ACCEL_LIMIT]
    assert [record.joint for record in accel] == list(range(16))
    assert all(record.raw > record.allowed for record in accel)
    assert filter_.counts[ACCEL_LIMIT] == 16


def test_a_non_finite_measurement_skips_only_that_joints_tracking_window():
    filter_ = _leap_filter()
    measured = np.zeros(16)
    measured[2] = np.nan
    measured[4] = 0.5  # window [0.25, 0.75]: the target stays put, nearest to it
    action = np.full(16, 0.01)
    result = filter_(action, measured)
    assert result.target_rad[2] == 0.01
    assert TRACKING_ERROR not in {record.kind for record in result.interventions if record.joint == 2}
    assert (4, TRACKING_ERROR) in {(record.joint, record.kind) for record in result.interventions}


def test_a_constant_action_is_reached_exactly_and_then_nothing_is_reported():
    filter_ = _leap_filter()
    low, high = LEAP_LIMITS.soft_low_rad, LEAP_LIMITS.soft_high_rad
    goal = low + (high - low) * np.linspace(0.1, 0.9, 16)
    for _ in range(30):
        result = filter_(goal, filter_.last_target_rad)
    assert np.array_equal(result.target_rad, goal)
    assert result.interventions == ()
    assert np.array_equal(filter_.last_velocity_rad_s, np.zeros(16))


def test_a_long_move_is_time_optimal_within_the_speed_and_acceleration_limits():
    # From rest to rest across 90 % of each joint's range: the target lands within half a tick of the continuous
    # minimum-time profile (accelerate, cruise, brake), and not more than a tick sooner (the limits hold).
    low, high = LEAP_LIMITS.soft_low_rad, LEAP_LIMITS.soft_high_rad
    start, goal = low + 0.05 * (high - low), low + 0.95 * (high - low)
    filter_ = _leap_filter(start)
    landed_tick = np.zeros(16)
    for tick in range(1, 200):
        before = filter_.last_target_rad
        landed_tick[(filter_(goal, before).target_rad == goal) & (landed_tick == 0)] = tick
        if tick == 3:  # the reported velocity is this tick's step over the period
            np.testing.assert_allclose(filter_.last_velocity_rad_s, (filter_.last_target_rad - before) / LEAP_PERIOD_S)
    v, a, d = LEAP_LIMITS.max_speed_rad_s, LEAP_LIMITS.max_accel_rad_s2, goal - start
    minimum_ticks = np.where(d > v * v / a, d / v + v / a, 2 * np.sqrt(d / a)) / LEAP_PERIOD_S
    assert np.all(landed_tick <= minimum_ticks + 0.5) and np.all(landed_tick >= minimum_ticks - 1.0)


def test_the_reported_velocity_is_the_step_over_the_period_at_20_hz_too():
    filter_ = TargetFilter(LEAP_LIMITS, 0.05)  # 1 / 0.05 is 20 in floats; 1 // 0.05 is 19
    filter_.reset(np.zeros(16))
    filter_(np.full(16, 0.3), np.zeros(16))
    np.testing.assert_allclose(filter_.last_velocity_rad_s, filter_.last_target_rad / 0.05)


def test_the_target_brakes_into_the_soft_limit_without_overshoot():
    filter_ = _leap_filter()
    high = LEAP_LIMITS.soft_high_rad
    targets = [filter_(high, filter_.last_target_rad).target_rad for _ in range(60)]
    assert np.array_equal(targets[-1], high)
    assert filter_.counts[POSITION_LIMIT] == 0  # asking for the limit itself is not a clamp


def test_reset_clips_the_measured_position_into_the_soft_limits():
    filter_ = _leap_filter(LEAP_LIMITS.soft_high_rad + 0.5)
    assert np.array_equal(filter_.last_target_rad, LEAP_LIMITS.soft_high_rad)
    with pytest.raises(SafetyFilterError, match="joint 1 is nan"):
        filter_.reset(np.array([0.0, np.nan] + [0.0] * 14))


def test_misuse_is_refused_with_a_message():
    filter_ = TargetFilter(LEAP_LIMITS, LEAP_PERIOD_S)
    with pytest.raises(SafetyFilterError, match="call reset"):
        filter_(np.zeros(16), np.zeros(16))
    filter_.reset(np.zeros(16))
    for raw, measured in ((np.zeros(15), np.zeros(16)), (np.zeros(17), np.zeros(16)), (np.zeros(16), np.zeros(15))):
        with pytest.raises(SafetyFilterError, match=r"needs shape \(16,\)"):
            filter_(raw, measured)
    with pytest.raises(SafetyFilterError, match=r"needs shape \(16,\)"):
        filter_(np.zeros(16), np.zeros(17))
    for period in (0.0, -0.05, math.inf):
        with pytest.raises(SafetyConfigError, match="control_period_s"):
            TargetFilter(LEAP_LIMITS, period)
    measured = np.zeros(16)
    measured[[2, 5]] = np.nan, np.inf
    with pytest.raises(SafetyFilterError, match=r"measured position of joint 2 is nan — read the hand's state again"):
        filter_.reset(measured)  # the first bad joint, with its value


def test_speed_scale_only_tightens():
    half = SafetyLimits.from_profile(PROFILE, speed_scale=0.5)
    assert np.allclose(half.max_speed_rad_s, 0.5 * LEAP_LIMITS.max_speed_rad_s)
    assert np.allclose(half.max_accel_rad_s2, 0.5 * LEAP_LIMITS.max_accel_rad_s2)
    assert np.array_equal(half.soft_high_rad, LEAP_LIMITS.soft_high_rad)
    for bad in (1.5, 0.0, -1.0, math.nan, math.inf):
        with pytest.raises(SafetyConfigError, match=r"--speed-scale can only tighten limits: give a value in \(0, 1\]"):
            SafetyLimits.from_profile(PROFILE, speed_scale=bad)


def test_limits_come_from_the_profile_and_round_trip_as_a_dict():
    joint = PROFILE.joints[4]
    assert LEAP_LIMITS.n_joints == 16
    assert LEAP_LIMITS.soft_low_rad[4] == joint.soft_limits_rad[0]
    assert LEAP_LIMITS.max_tracking_error_rad[4] == joint.max_tracking_error_rad
    as_dict = LEAP_LIMITS.as_dict()
    assert all(type(value) is float for values in as_dict.values() for value in values)
    assert SafetyLimits.from_dict(as_dict).equals(LEAP_LIMITS)
    with pytest.raises(ValueError):
        LEAP_LIMITS.max_speed_rad_s[0] = 100.0  # read-only


def test_tightened_takes_the_stricter_of_each_limit():
    values = LEAP_LIMITS.as_arrays()
    looser = SafetyLimits(**{**values, "max_speed_rad_s": values["max_speed_rad_s"] * 2})
    narrower = SafetyLimits(
        **{
            **values,
            "soft_high_rad": values["soft_high_rad"] - 0.1,
            "current_limit_ma": values["current_limit_ma"] * 0.5,
        }
    )
    combined = looser.tightened(narrower)
    assert np.array_equal(combined.max_speed_rad_s, LEAP_LIMITS.max_speed_rad_s)
    assert np.array_equal(combined.soft_high_rad, LEAP_LIMITS.soft_high_rad - 0.1)
    assert np.array_equal(combined.current_limit_ma, LEAP_LIMITS.current_limit_ma * 0.5)
    assert combined.equals(narrower.tightened(looser))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_speed_rad_s", 0.0, r"max_speed_rad_s\[0\] = 0.0 must be > 0"),
        ("max_accel_rad_s2", np.nan, r"max_accel_rad_s2\[0\] = nan is not a finite number"),
        ("soft_high_rad", -5.0, "soft_low_rad .* is not below soft_high_rad"),
    ],
)
def test_malformed_limits_name_the_field(field, value, message):
    values = {name: array.copy() for name, array in LEAP_LIMITS.as_arrays().items()}
    values[field][0] = value
    with pytest.raises(SafetyConfigError, match=message):
        SafetyLimits(**values)
    with pytest.raises(SafetyConfigError, match="current_limit_ma has 15 values"):
        SafetyLimits(**{**LEAP_LIMITS.as_arrays(), "current_limit_ma": np.ones(15)})


# ---- the training batch's filter ----------------------------------------------------------------------------


def test_batch_filter_equals_one_filter_per_hand() -> None:
    limits = LEAP_LIMITS
    rng = np.random.default_rng(0)
    n_hands, n = 6, limits.n_joints
    dt = 1 / 30
    singles = [TargetFilter(limits, dt) for _ in range(n_hands)]
    batch = BatchTargetFilter(limits, dt, n_hands)
    start = rng.uniform(limits.soft_low_rad, limits.soft_high_rad, (n_hands, n))
    for hand, single in enumerate(singles):
        single.reset(start[hand])
    batch.reset(np.arange(n_hands), start)
    measured = start.copy()
    totals = np.zeros((n_hands, len(INTERVENTION_KINDS)), dtype=int)
    for tick in range(300):
        raw = measured + rng.normal(0, 0.5, (n_hands, n)) * (1 + 5 * (tick % 37 == 0))
        raw[tick % n_hands, tick % n] = np.nan if tick % 11 == 0 else raw[tick % n_hands, tick % n]
        measured_now = measured.copy()
        measured_now[(tick + 1) % n_hands, (tick * 3) % n] = np.nan if tick % 13 == 0 else 0.0
        measured_now = np.where(np.isnan(measured_now), np.nan, measured)
        result = batch(raw, measured_now)
        for hand, single in enumerate(singles):
            expected = single(raw[hand], measured_now[hand])
            np.testing.assert_array_equal(result.target_rad[hand], expected.target_rad)
        totals += np.stack([result.counts[kind] for kind in INTERVENTION_KINDS], axis=1)
        # The hand lags its target a little, as a servo does.
        measured = measured + 0.7 * (result.target_rad - measured)
    for hand, single in enumerate(singles):
        assert totals[hand].tolist() == [single.counts[kind] for kind in INTERVENTION_KINDS]
    assert totals.sum() > 0 and totals[:, INTERVENTION_KINDS.index("non_finite")].sum() > 0


def test_the_batch_filter_refuses_misuse_with_a_message() -> None:
    n = LEAP_LIMITS.n_joints
    with pytest.raises(SafetyFilterError, match="n_hands = 0"):
        BatchTargetFilter(LEAP_LIMITS, LEAP_PERIOD_S, 0)
    for period in (0.0, -1.0, math.nan):
        with pytest.raises(SafetyConfigError, match="control_period_s"):
            BatchTargetFilter(LEAP_LIMITS, period, 2)
    batch = BatchTargetFilter(LEAP_LIMITS, LEAP_PERIOD_S, 2)
    with pytest.raises(SafetyFilterError, match="non-finite"):
        batch.reset(slice(None), np.full((2, n), np.nan))
    good = np.zeros((2, n))
    wrong = (np.zeros((3, n)), np.zeros((1, n)), np.zeros((2, n + 1)), np.zeros((2, n - 1)), np.zeros(n))
    for raw, measured in [(shape, good) for shape in wrong] + [(good, shape) for shape in wrong]:
        with pytest.raises(SafetyFilterError, match=r"need shape \(2, 16\)"):
            batch(raw, measured)
    assert BatchTargetFilter(LEAP_LIMITS, LEAP_PERIOD_S, 1).n_hands == 1  # one hand is a batch too
    result = batch(good, good)  # the right shapes pass
    assert result.target_rad.shape == (2, n) and all(result.counts[kind].shape == (2,) for kind in INTERVENTION_KINDS)


def test_a_batch_hand_with_a_non_finite_action_holds_even_outside_its_tracking_window() -> None:
    # Hand 0's action is NaN while its measured position is 0.5 rad from its target (beyond the 0.3 rad window):
    # it holds its target as a single filter does, rather than following the window.
    start = (LEAP_LIMITS.soft_low_rad + LEAP_LIMITS.soft_high_rad) / 2
    batch, single = BatchTargetFilter(LEAP_LIMITS, LEAP_PERIOD_S, 2), _leap_filter(start)
    batch.reset(slice(None), np.stack([start, start]))
    measured = start + 0.5
    raw = np.stack([np.full(16, np.nan), start])
    result = batch(raw, np.stack([measured, measured]))
    np.testing.assert_array_equal(result.target_rad[0], single(raw[0], measured).target_rad)
    np.testing.assert_array_equal(result.target_rad[0], start)
    assert result.counts[NON_FINITE].tolist() == [1, 0]
