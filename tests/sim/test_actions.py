"""The action map: [-1, 1]^n -> joint targets, relative and absolute; its JSON and diff; and that whatever
the policy outputs, the target after the safety filter stays inside the limits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handrail.robot.profile import load_profile
from handrail.robot.safety_filter import NON_FINITE, TargetFilter
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.actions import ABSOLUTE, RELATIVE, ActionInputError, ActionMap, ActionSpecError

PROFILE = load_profile()
LIMITS = SafetyLimits.from_profile(PROFILE)
DT = PROFILE.control_period_s
N = LIMITS.n_joints
NAMES = PROFILE.joint_names


def _home() -> np.ndarray:
    return np.array([joint.home_rad for joint in PROFILE.joints])


# --- mapping --------------------------------------------------------------------------------------


def test_saturated_relative_action_is_exactly_the_speed_limit():
    action_map = ActionMap.from_profile(PROFILE, RELATIVE)
    np.testing.assert_array_equal(action_map.max_delta_rad, LIMITS.max_speed_rad_s * DT)
    previous = _home()
    for sign in (1.0, -1.0):
        target = action_map(np.full(N, sign * 5.0), previous)  # beyond 1: clipped
        np.testing.assert_allclose(target - previous, sign * LIMITS.max_speed_rad_s * DT, rtol=1e-12)
    np.testing.assert_allclose(action_map(np.full(N, 0.5), previous) - previous, 0.5 * LIMITS.max_speed_rad_s * DT)
    np.testing.assert_array_equal(action_map(np.zeros(N), previous), previous)


def test_relative_scale_can_be_given_per_joint():
    action_map = ActionMap.relative(NAMES, LIMITS, DT, max_delta_rad=np.full(N, 0.01))
    np.testing.assert_allclose(action_map(np.ones(N), np.zeros(N)), 0.01)


def test_absolute_action_spans_the_soft_limits():
    action_map = ActionMap.from_profile(PROFILE, ABSOLUTE)
    np.testing.assert_allclose(action_map(-np.ones(N)), LIMITS.soft_low_rad)
    np.testing.assert_allclose(action_map(np.ones(N)), LIMITS.soft_high_rad)
    np.testing.assert_allclose(action_map(np.zeros(N)), (LIMITS.soft_low_rad + LIMITS.soft_high_rad) / 2)
    np.testing.assert_allclose(action_map(np.full(N, 3.0)), LIMITS.soft_high_rad)  # clipped


def test_an_absolute_map_around_a_pose_puts_action_zero_on_it():
    centre = _home() + 0.05
    action_map = ActionMap.around(NAMES, centre, 0.6)
    assert action_map.mode == ABSOLUTE
    np.testing.assert_allclose(action_map(np.zeros(N)), centre, rtol=0, atol=1e-12)
    np.testing.assert_allclose(action_map(np.ones(N)), centre + 0.6, rtol=0, atol=1e-12)
    np.testing.assert_allclose(action_map(-np.full(N, 7.0)), centre - 0.6, rtol=0, atol=1e-12)  # clipped
    np.testing.assert_allclose(action_map(np.full(N, 0.5)), centre + 0.3, rtol=0, atol=1e-12)
    per_joint = ActionMap.around(NAMES, centre, np.linspace(0.1, 0.8, N))
    np.testing.assert_allclose(per_joint(np.ones(N)) - centre, np.linspace(0.1, 0.8, N), rtol=0, atol=1e-12)
    assert ActionMap.from_json(action_map.to_json()).diff(action_map) == []


@pytest.mark.parametrize("half_range", [0.0, -0.6, np.nan, np.inf])
def test_an_absolute_map_around_a_pose_needs_a_positive_range(half_range):
    with pytest.raises(ActionSpecError, match="half range"):
        ActionMap.around(NAMES, _home(), half_range)
    with pytest.raises(ActionSpecError, match="centre_rad"):
        ActionMap.around(NAMES, _home()[:-1], 0.6)


@pytest.mark.parametrize("mode", [RELATIVE, ABSOLUTE])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_pass_through_for_the_filter_to_reject(mode, bad):
    action_map = ActionMap.from_profile(PROFILE, mode)
    action = np.full(N, 2.0)
    action[3] = bad
    target = action_map(action, _home())
    assert not np.isfinite(target[3]) and np.isfinite(np.delete(target, 3)).all()
    if not np.isnan(bad):
        assert np.sign(target[3]) == np.sign(bad)
    safety = TargetFilter(LIMITS, DT)
    safety.reset(_home())
    result = safety(target, _home())
    assert [record.kind for record in result.interventions] == [NON_FINITE]
    assert safety.counts[NON_FINITE] == 1


def test_shapes_and_missing_previous_target_are_refused():
    action_map = ActionMap.from_profile(PROFILE, RELATIVE)
    with pytest.raises(ActionInputError, match="shape"):
        action_map(np.zeros(N + 1), np.zeros(N))
    with pytest.raises(ActionInputError, match="previous_target_rad"):
        action_map(np.zeros(N))
    with pytest.raises(ActionInputError, match="previous_target_rad needs shape"):
        action_map(np.zeros(N), np.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"mode": "velocity"}, "unknown"),
        ({"mode": RELATIVE}, "needs max_delta_rad"),
        ({"mode": RELATIVE, "max_delta_rad": np.zeros(N)}, "must be > 0"),
        ({"mode": RELATIVE, "max_delta_rad": np.ones(3)}, "shape"),
        ({"mode": RELATIVE, "max_delta_rad": np.full(N, np.nan)}, "not finite"),
        ({"mode": RELATIVE, "max_delta_rad": np.ones(N), "low_rad": np.zeros(N)}, "takes no low_rad"),
        ({"mode": ABSOLUTE, "low_rad": np.ones(N), "high_rad": np.ones(N)}, "not below"),
    ],
)
def test_malformed_maps_are_refused(kwargs, words):
    with pytest.raises(ActionSpecError, match=words):
        ActionMap(NAMES, **kwargs)


def test_repeated_joint_names_are_refused():
    with pytest.raises(ActionSpecError, match="repeat"):
        ActionMap(("a", "a"), RELATIVE, max_delta_rad=np.ones(2))


# --- the safety filter keeps every target inside the limits ---------------------------------------

actions = st.one_of(
    st.floats(-1, 1),
    st.floats(-1e6, 1e6),
    st.sampled_from([np.nan, np.inf, -np.inf, 1.0, -1.0]),
)
action_sequences = st.lists(st.lists(actions, min_size=N, max_size=N), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([RELATIVE, ABSOLUTE]), action_sequences)
def test_after_the_filter_targets_never_break_the_limits(mode, sequence):
    action_map = ActionMap.from_profile(PROFILE, mode)
    safety = TargetFilter(LIMITS, DT)
    measured = _home()
    safety.reset(measured)
    previous = safety.last_target_rad
    max_step = LIMITS.max_speed_rad_s * DT
    for action in sequence:
        sent = safety(action_map(np.array(action), previous), measured).target_rad
        assert np.isfinite(sent).all()
        assert (sent >= LIMITS.soft_low_rad).all() and (sent <= LIMITS.soft_high_rad).all()
        assert (np.abs(sent - previous) <= max_step * (1 + 1e-9) + 1e-12).all()
        previous = sent
        measured = sent  # the hand follows


# --- JSON and diff --------------------------------------------------------------------------------

joint_name_lists = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True)


@st.composite
def action_maps(draw: st.DrawFn) -> ActionMap:
    names = tuple(draw(joint_name_lists))
    n = len(names)
    floats = st.floats(1e-6, 10, allow_nan=False, allow_infinity=False)
    if draw(st.sampled_from([RELATIVE, ABSOLUTE])) == RELATIVE:
        return ActionMap(names, RELATIVE, max_delta_rad=draw(st.lists(floats, min_size=n, max_size=n)))
    low = np.array(draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(floats, min_size=n, max_size=n)))
    return ActionMap(names, ABSOLUTE, low_rad=low, high_rad=low + width)


@given(action_maps())
def test_json_round_trip(action_map):
    again = ActionMap.from_json(action_map.to_json())
    assert again.diff(action_map) == [] and action_map.diff(again) == []
    assert again.joint_names == action_map.joint_names and again.mode == action_map.mode
    for name in ("max_delta_rad", "low_rad", "high_rad"):
        mine, theirs = getattr(action_map, name), getattr(again, name)
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs)  # exact, not approximate


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: "{", "not valid JSON"),
        (lambda d: {**d, "mode": "torque"}, "mode 'torque' is unknown"),
        (lambda d: {**d, "schema_version": 2}, "schema_version 2"),
        (lambda d: {k: v for k, v in d.items() if k != "max_delta_rad"}, "missing keys"),
        (lambda d: {**d, "low_rad": [0.0]}, "unknown keys"),
        (lambda d: {**d, "joint_names": "abc"}, "list of names"),
        (lambda d: {**d, "max_delta_rad": [1.0]}, "shape"),
    ],
)
def test_from_json_names_the_problem(mutate, words):
    data = mutate(ActionMap.from_profile(PROFILE).to_dict())
    with pytest.raises(ActionSpecError, match=words):
        ActionMap.from_json(data if isinstance(data, str) else json.dumps(data))


def test_diff_names_joints_order_and_scale():
    hand = ActionMap(("a", "b", "c", "d"), RELATIVE, max_delta_rad=[0.1, 0.2, 0.3, 0.4])
    policy = ActionMap(("b", "a", "c", "e"), RELATIVE, max_delta_rad=[0.2, 0.1, 0.15, 0.5])
    problems = hand.diff(policy, this="the hand", that="the policy")
    assert problems == [
        "joint 'd' is in the hand but missing from the policy",
        "joint 'e' is in the policy but not in the hand",
        "joint order differs: the hand has a, b, c; the policy has b, a, c",
        "joint 'c': max_delta_rad is 0.3 in the hand but 0.15 in the policy",
    ]


def test_diff_names_the_mode_and_absolute_ranges():
    relative = ActionMap.from_profile(PROFILE, RELATIVE)
    absolute = ActionMap.from_profile(PROFILE, ABSOLUTE)
    assert relative.diff(absolute) == ["mode is 'relative' in this map but 'absolute' in the other map"]
    narrower = ActionMap(NAMES, ABSOLUTE, low_rad=absolute.low_rad, high_rad=absolute.high_rad - 0.1)
    problems = absolute.diff(narrower)
    assert len(problems) == N and all("high_rad" in problem for problem in problems)
    assert problems[0].startswith(f"joint {NAMES[0]!r}: high_rad is")


def test_a_slower_hand_is_a_different_action_spec():
    slower = ActionMap.relative(NAMES, LIMITS.scaled_speed(0.5), DT)
    problems = ActionMap.from_profile(PROFILE).diff(slower)
    assert len(problems) == N and all("max_delta_rad" in problem for problem in problems)
