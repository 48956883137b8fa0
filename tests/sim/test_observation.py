"""The observation builder: one layout for sim and hand, its JSON in the policy file, its diff in words,
the joint history, stale or missing object poses, and refusal of non-finite inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import timeit

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.sim.observation import (
    IDENTITY_QUAT_WXYZ,
    ObjectPoseEstimate,
    ObservationBuilder,
    ObservationInputError,
    ObservationSpec,
    ObservationSpecError,
    default_spec,
)

N = 16


def _pose(position=(0.01, 0.02, 0.1), quat=(1.0, 0.0, 0.0, 0.0), age_s=0.01, source="camera"):
    return ObjectPoseEstimate(np.array(position), np.array(quat), age_s, source)


def _builder(history: int = 1, task_size: int = 3, max_pose_age_s: float = 0.1) -> ObservationBuilder:
    builder = ObservationBuilder(default_spec(N, history, task_size), N, history, max_pose_age_s=max_pose_age_s)
    builder.reset(np.zeros(N), np.zeros(N))
    return builder


AXIS = np.array([0.0, 0.0, 1.0])


# --- layout ---------------------------------------------------------------------------------------


def test_default_layout_and_slices():
    spec = default_spec(N, history=3, task_size=3)
    assert spec.names == (
        "joint_position_rad",
        "previous_target_rad",
        "object_position_m",
        "object_quat_wxyz",
        "object_pose_valid",
        "object_pose_age_s",
        "task",
    )
    assert spec.n_obs == 48 + 16 + 3 + 4 + 1 + 1 + 3
    slices = spec.slices()
    assert slices["joint_position_rad"] == slice(0, 48)
    assert slices["previous_target_rad"] == slice(48, 64)
    assert slices["task"] == slice(73, 76)
    covered = np.zeros(spec.n_obs, dtype=int)
    for where in slices.values():
        covered[where] += 1
    assert (covered == 1).all()  # the slices tile the vector
    assert default_spec(N, task_size=N).size("task") == N


@pytest.mark.parametrize(
    "fields",
    [(), (("a", 0),), (("a", -1),), (("a", 1.5),), (("a", True),), (("", 1),), (("a", 1), ("a", 2))],
)
def test_malformed_specs_are_refused(fields):
    with pytest.raises(ObservationSpecError):
        ObservationSpec(fields)


# --- JSON -----------------------------------------------------------------------------------------

field_names = st.text(min_size=1, max_size=12)
specs = st.lists(st.tuples(field_names, st.integers(1, 64)), min_size=1, max_size=10, unique_by=lambda f: f[0]).map(
    lambda fields: ObservationSpec(tuple(fields))
)


@given(specs)
def test_json_round_trip(spec):
    again = ObservationSpec.from_json(spec.to_json())
    assert again == spec
    assert again.diff(spec) == []


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: "not json", "not valid JSON"),
        (lambda d: [1, 2], "JSON object"),
        (lambda d: {**d, "schema_version": 99}, "schema_version 99"),
        (lambda d: {k: v for k, v in d.items() if k != "n_obs"}, "missing keys ['n_obs']"),
        (lambda d: {**d, "extra": 1}, "unknown keys ['extra']"),
        (lambda d: {**d, "n_obs": 5}, "n_obs = 5"),
        (lambda d: {**d, "fields": "abc"}, "'fields' must be a list"),
        (lambda d: {**d, "fields": [{"name": "a"}]}, "field 0"),
        (lambda d: {**d, "fields": [{"name": "a", "size": 0}], "n_obs": 0}, "positive integer"),
    ],
)
def test_from_json_names_the_problem(mutate, words):
    data = mutate(default_spec(N).to_dict())
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ObservationSpecError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ObservationSpec.from_json(text)


# --- diff -----------------------------------------------------------------------------------------


def test_diff_names_every_difference():
    hand = ObservationSpec((("a", 3), ("b", 4), ("c", 1), ("d", 2)))
    policy = ObservationSpec((("c", 1), ("b", 5), ("a", 3), ("e", 7)))
    problems = hand.diff(policy, this="the hand", that="the policy")
    text = "\n".join(problems)
    assert "field 'd' (size 2) is in the hand but missing from the policy" in text
    assert "field 'e' (size 7) is in the policy but not in the hand" in text
    assert "field 'b' has size 4 in the hand but 5 in the policy" in text
    assert "different order: the hand has a, b, c; the policy has c, b, a" in text
    assert "n_obs is 10 in the hand but 16 in the policy" in text
    assert len(problems) == 5


def test_diff_of_a_history_change_says_which_size():
    problems = default_spec(N, history=1).diff(default_spec(N, history=2))
    assert problems[0] == "field 'joint_position_rad' has size 16 in this spec but 32 in the other spec"


# --- builder --------------------------------------------------------------------------------------


def test_build_puts_each_input_in_its_field():
    builder = _builder()
    joints, target = np.linspace(-1, 1, N), np.linspace(0, 0.5, N)
    obs = builder.build(joints, target, _pose(age_s=0.02), AXIS)
    assert obs.dtype == np.float32 and obs.shape == (builder.spec.n_obs,)
    s = builder.spec.slices()
    np.testing.assert_allclose(obs[s["joint_position_rad"]], joints, rtol=1e-6)
    np.testing.assert_allclose(obs[s["previous_target_rad"]], target, rtol=1e-6)
    np.testing.assert_allclose(obs[s["object_position_m"]], [0.01, 0.02, 0.1], rtol=1e-6)
    np.testing.assert_allclose(obs[s["object_quat_wxyz"]], IDENTITY_QUAT_WXYZ)
    assert obs[s["object_pose_valid"]] == 1.0
    assert obs[s["object_pose_age_s"]] == pytest.approx(0.02)
    np.testing.assert_allclose(obs[s["task"]], AXIS)


def test_history_shifts_newest_first():
    builder = ObservationBuilder(default_spec(N, history=3), N, history=3)
    builder.reset(np.full(N, 7.0), np.zeros(N))
    where = builder.spec.slices()["joint_position_rad"]
    first = builder.build(np.full(N, 1.0), np.zeros(N), None, AXIS)[where].reshape(3, N)
    np.testing.assert_array_equal(first[:, 0], [1.0, 7.0, 7.0])  # reset fills the history
    builder.build(np.full(N, 2.0), np.zeros(N), None, AXIS)
    third = builder.build(np.full(N, 3.0), np.zeros(N), None, AXIS)[where].reshape(3, N)
    np.testing.assert_array_equal(third[:, 0], [3.0, 2.0, 1.0])
    builder.reset(np.full(N, 9.0), np.zeros(N))
    again = builder.build(np.full(N, 4.0), np.zeros(N), None, AXIS)[where].reshape(3, N)
    np.testing.assert_array_equal(again[:, 0], [4.0, 9.0, 9.0])


def test_missing_pose_before_any_estimate_is_zeros_and_identity():
    builder = _builder()
    s = builder.spec.slices()
    obs = builder.build(np.zeros(N), np.zeros(N), None, AXIS)
    np.testing.assert_array_equal(obs[s["object_position_m"]], [0, 0, 0])
    np.testing.assert_array_equal(obs[s["object_quat_wxyz"]], IDENTITY_QUAT_WXYZ)
    assert obs[s["object_pose_valid"]] == 0.0
    assert obs[s["object_pose_age_s"]] == pytest.approx(0.1)


@pytest.mark.parametrize("replacement", [None, "stale"])
def test_missing_or_stale_pose_holds_the_last_valid_one(replacement):
    builder = _builder(max_pose_age_s=0.1)
    s = builder.spec.slices()
    fresh = _pose(position=(0.1, 0.2, 0.3), quat=(0.0, 1.0, 0.0, 0.0), age_s=0.05)
    builder.build(np.zeros(N), np.zeros(N), fresh, AXIS)
    stale = _pose(position=(9.0, 9.0, 9.0), age_s=0.1001) if replacement else None
    obs = builder.build(np.zeros(N), np.zeros(N), stale, AXIS)
    np.testing.assert_allclose(obs[s["object_position_m"]], [0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(obs[s["object_quat_wxyz"]], [0.0, 1.0, 0.0, 0.0])
    assert obs[s["object_pose_valid"]] == 0.0
    assert obs[s["object_pose_age_s"]] == pytest.approx(0.1)
    # exactly at the age limit still counts as fresh
    obs = builder.build(np.zeros(N), np.zeros(N), _pose(age_s=0.1), AXIS)
    assert obs[s["object_pose_valid"]] == 1.0


def test_reset_forgets_the_held_pose():
    builder = _builder()
    builder.build(np.zeros(N), np.zeros(N), _pose(position=(1.0, 1.0, 1.0)), AXIS)
    builder.reset(np.zeros(N), np.zeros(N))
    obs = builder.build(np.zeros(N), np.zeros(N), None, AXIS)
    np.testing.assert_array_equal(obs[builder.spec.slices()["object_position_m"]], [0, 0, 0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
@pytest.mark.parametrize("argument", ["joints", "target", "task"])
def test_non_finite_inputs_are_refused_and_leave_the_history(bad, argument):
    builder = ObservationBuilder(default_spec(N, history=2), N, history=2)
    builder.reset(np.ones(N), np.zeros(N))
    inputs = {"joints": np.zeros(N), "target": np.zeros(N), "task": AXIS.copy()}
    inputs[argument][1] = bad
    with pytest.raises(ObservationInputError, match=r"\[1\] = .* not a finite"):
        builder.build(inputs["joints"], inputs["target"], None, inputs["task"])
    obs = builder.build(np.full(N, 2.0), np.zeros(N), None, AXIS)
    history = obs[builder.spec.slices()["joint_position_rad"]].reshape(2, N)
    np.testing.assert_array_equal(history[:, 0], [2.0, 1.0])  # the refused tick left no trace


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"position": (0.0, np.nan, 0.0)}, "position_m"),
        ({"quat": (np.nan, 0.0, 0.0, 1.0)}, "quat_wxyz"),
        ({"quat": (0.0, 0.0, 0.0, 0.0)}, "not a rotation"),
        ({"age_s": np.nan}, "age_s"),
        ({"age_s": -0.1}, "age_s"),
        ({"source": ""}, "source"),
        ({"position": (0.0, 0.0)}, "shape"),
    ],
)
def test_bad_pose_estimates_are_refused(kwargs, words):
    with pytest.raises(ObservationInputError, match=words):
        _pose(**kwargs)


def test_wrong_shapes_are_refused():
    builder = _builder()
    with pytest.raises(ObservationInputError, match="shape"):
        builder.build(np.zeros(N + 1), np.zeros(N), None, AXIS)
    with pytest.raises(ObservationInputError, match="shape"):
        builder.build(np.zeros(N), np.zeros(N), None, np.zeros(4))
    with pytest.raises(ObservationInputError, match="task_input"):
        builder.build(np.zeros(N), np.zeros(N), None, None)


def test_builder_needs_reset_and_a_matching_spec():
    builder = ObservationBuilder(default_spec(N), N)
    with pytest.raises(ObservationSpecError, match="reset"):
        builder.build(np.zeros(N), np.zeros(N), None, AXIS)
    with pytest.raises(ObservationSpecError, match="need 32"):
        ObservationBuilder(default_spec(N, history=1), N, history=2)
    with pytest.raises(ObservationSpecError, match="unknown to the builder"):
        ObservationBuilder(ObservationSpec((("joint_velocity", N),)), N)


def test_a_spec_without_object_fields_ignores_the_pose():
    spec = ObservationSpec((("joint_position_rad", N), ("task", N)))
    builder = ObservationBuilder(spec, N)
    builder.reset(np.zeros(N), np.zeros(N))
    obs = builder.build(np.ones(N), np.zeros(N), None, np.full(N, 0.5))
    np.testing.assert_array_equal(obs, np.r_[np.ones(N), np.full(N, 0.5)])


# --- quaternion sign ------------------------------------------------------------------------------

quats = st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 1e-3)


@given(quats)
def test_quaternion_is_unit_with_canonical_sign(quat):
    q = _pose(quat=quat).quat_wxyz
    minus_q = _pose(quat=[-value for value in quat]).quat_wxyz
    assert np.linalg.norm(q) == pytest.approx(1.0)
    assert q[0] >= 0
    np.testing.assert_array_equal(q, minus_q)  # q and -q are the same rotation, the same observation
    np.testing.assert_allclose(np.abs(q), np.abs(np.asarray(quat)) / np.linalg.norm(quat), atol=1e-12)


def test_canonical_sign_when_w_is_zero():
    np.testing.assert_array_equal(_pose(quat=(0.0, 0.0, -1.0, 0.0)).quat_wxyz, [0.0, 0.0, 1.0, 0.0])


# --- cost and imports -----------------------------------------------------------------------------


def test_build_is_cheap():
    builder = _builder(history=3)
    joints, pose = np.zeros(N), _pose()
    seconds = min(timeit.repeat(lambda: builder.build(joints, joints, pose, AXIS), number=200, repeat=5)) / 200
    assert seconds < 200e-6  # ~10 µs on a desktop core; generous for CI


def test_importing_observation_and_actions_pulls_in_neither_torch_nor_mujoco():
    code = (
        "import sys, handrail.sim.observation, handrail.sim.actions\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mujoco'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # the check can fail: the same probe after importing mujoco reports it
    broken = subprocess.run([sys.executable, "-c", "import mujoco\n" + code], capture_output=True, text=True)
    assert broken.returncode != 0 and "mujoco" in broken.stderr
