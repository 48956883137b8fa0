"""The batched training engine: its observation builder equals the hardware's row by row (its safety filter:
tests/robot/test_safety_filter.py);
latency, backlash, auto-reset and an unstable simulation behave as documented; hands are independent."""

import numpy as np
import pytest

from handrail.sim.actions import ABSOLUTE, RELATIVE, ActionMap
from handrail.sim.batch_env import BatchHandEnv, EnvError
from handrail.sim.observation import BatchObservationBuilder, ObjectPoseEstimate, ObservationBuilder, default_spec
from handrail.sim.randomization import NonNegativeRange, nominal_randomization
from handrail.sim.tasks import POSE, ROTATE_Z


def test_batch_observation_builder_equals_the_single_builder() -> None:
    rng = np.random.default_rng(1)
    n_hands, n, history = 4, 16, 3
    spec = default_spec(n, history, 3)
    singles = [ObservationBuilder(spec, n, history) for _ in range(n_hands)]
    batch = BatchObservationBuilder(spec, n, n_hands, history)
    joints = rng.normal(size=(n_hands, n))
    position = rng.normal(size=(n_hands, 3))
    quat = rng.normal(size=(n_hands, 4))
    age = np.array([0.0, 0.05, 0.2, 0.1])
    for hand, single in enumerate(singles):
        pose = ObjectPoseEstimate(position[hand], quat[hand], age[hand], "sim")
        single.reset(joints[hand], joints[hand], pose)
    batch.reset(np.arange(n_hands), joints, position, quat, age)
    for _ in range(20):
        joints, target = rng.normal(size=(n_hands, n)), rng.normal(size=(n_hands, n))
        position, quat = rng.normal(size=(n_hands, 3)), rng.normal(size=(n_hands, 4))
        age = rng.choice([0.0, 0.033, 0.1, 0.15, 1.0], n_hands)
        task = rng.normal(size=(n_hands, 3))
        obs = batch.build(joints, target, position, quat, age, task)
        for hand, single in enumerate(singles):
            pose = ObjectPoseEstimate(position[hand], quat[hand], age[hand], "sim")
            np.testing.assert_array_equal(obs[hand], single.build(joints[hand], target[hand], pose, task[hand]))


def _pinned(**timing_and_hand: float):
    config = nominal_randomization()
    timing = {k: NonNegativeRange.pinned(v) for k, v in timing_and_hand.items() if k.startswith("command")}
    hand = {k: NonNegativeRange.pinned(v) for k, v in timing_and_hand.items() if k == "backlash_rad"}
    return config.model_copy(
        update={
            "enabled": True,
            "timing": config.timing.model_copy(update=timing),
            "hand": config.hand.model_copy(update=hand),
        }
    )


def _joints_after_one_step(latency_periods: float, action: float) -> np.ndarray:
    env = BatchHandEnv(POSE, 1, randomization=_pinned(command_latency_periods=latency_periods), seed=0, nthread=1)
    env.reset()
    env.step(np.full((1, env.n_joints), action))
    return env.get_data(0).qpos[env._qpos_ids].copy()


def test_command_latency_delays_the_motion() -> None:
    # Without latency the command acts within the period; one period late, the hand cannot tell it was sent.
    assert np.abs(_joints_after_one_step(0.0, 1.0) - _joints_after_one_step(0.0, 0.0)).max() > 0.005
    np.testing.assert_array_equal(_joints_after_one_step(1.0, 1.0), _joints_after_one_step(1.0, 0.0))
    half = np.abs(_joints_after_one_step(0.5, 1.0) - _joints_after_one_step(0.5, 0.0)).max()
    assert 0 < half < np.abs(_joints_after_one_step(0.0, 1.0) - _joints_after_one_step(0.0, 0.0)).max()


def test_backlash_swallows_small_reversals() -> None:
    play = 0.2
    env = BatchHandEnv(POSE, 1, randomization=_pinned(backlash_rad=play), seed=0, nthread=1)
    env.reset()
    for action in [1.0] * 5 + [0.0] * 30:  # move, then come to rest
        env.step(np.full((1, env.n_joints), action))
    servo = env._wire.servo_command.copy()
    command = env.target_filter.target_rad.copy()  # no zero offset, no noise: the command is the target
    assert np.abs(servo - command).max() <= play / 2 + 1e-12
    # A step back into the play leaves the servo where it is; a step out of it drags the servo along.
    env.step(0.3 * np.sign(servo - command))
    np.testing.assert_array_equal(env._wire.servo_command, servo)
    for _ in range(5):
        env.step(-np.sign(servo - command))
    assert np.abs(env._wire.servo_command - servo).min() > 0.05


def test_autoreset_returns_terminal_observations_and_episode_stats() -> None:
    env = BatchHandEnv(ROTATE_Z, 3, dr=False, seed=0, nthread=1)
    env.reset()
    env.set_cube_position(1, env.cube_world_position(1) + np.array([0.3, 0.0, 0.0]))
    result = env.step(np.zeros((3, env.n_joints)))
    assert result.terminated.tolist() == [False, True, False]
    assert result.terminal_obs is not None and result.episode_length is not None
    assert result.episode_length[1] == 1 and result.episode_metrics["dropped"][1] == 1.0
    # The hand was reset: its cube is back on the palm and its next observation is a fresh episode's.
    assert np.linalg.norm(env.cube_world_position(1) - env.cube_world_position(0)) < 0.05
    assert not np.array_equal(result.terminal_obs[1], result.obs[1])


def test_unstable_simulation_is_truncated_not_crashed(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to MUJOCO_LOG.TXT in the working directory
    env = BatchHandEnv(ROTATE_Z, 2, dr=False, seed=0, nthread=1)
    env.reset()
    env._qvel[0] = 1e12  # MuJoCo detects the blow-up and resets the simulation
    result = env.step(np.zeros((2, env.n_joints)))
    assert result.truncated.tolist() == [True, False]
    assert np.isfinite(result.obs).all()


def test_same_seed_same_batch_and_hands_differ() -> None:
    def run() -> np.ndarray:
        env = BatchHandEnv(ROTATE_Z, 3, dr=True, seed=5, nthread=2)
        observations = [env.reset()]
        actions = np.random.default_rng(2).uniform(-1, 1, (10, 3, env.n_joints))
        observations += [env.step(action).obs for action in actions]
        return np.stack(observations)

    first, second = run(), run()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[:, 0], first[:, 1])


def test_an_action_range_maps_actions_around_the_start_pose() -> None:
    env = BatchHandEnv(ROTATE_Z, 2, dr=False, seed=0, nthread=1, action_range_rad=0.6)
    assert env.action_map.mode == ABSOLUTE
    limits = env.safety_limits
    env.reset()
    actions = np.stack([np.zeros(env.n_joints), np.ones(env.n_joints)])
    for _ in range(20):  # 1 s: every joint's target reaches its goal at the speed limit
        env.step(actions)
    np.testing.assert_allclose(env.target_filter.target_rad[0], env.start_pose_rad, rtol=0, atol=1e-9)
    wanted = np.clip(env.start_pose_rad + 0.6, limits.soft_low_rad, limits.soft_high_rad)
    # (within the tracking window: a finger the cube blocks keeps its target near where it is)
    np.testing.assert_allclose(env.target_filter.target_rad[1], wanted, rtol=0, atol=0.01)
    assert BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1).action_map.mode == RELATIVE


def test_a_bad_action_range_or_a_map_for_other_joints_is_refused() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(EnvError, match="action_range_rad"):
            BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1, action_range_rad=bad)
    env = BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1)
    names = list(reversed(env.profile.joint_names))
    other_order = ActionMap.around(names, env.start_pose_rad, 0.6)
    with pytest.raises(EnvError, match="the action map drives"):
        BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1, action_map=other_order)


def test_a_hand_in_another_mjcf_starts_rotate_z_by_joint_name_when_the_pose_is_clear(tmp_path, caplog) -> None:
    """The same hand with other MJCF joint names gets the grasp-ready pose by its profile's joint names; a
    geometry in which that pose overlaps the cube (boxes instead of capsules) starts from home, and says so."""
    import re
    from pathlib import Path

    from handrail.robot.profile import load_profile

    bundled = load_profile()
    text = re.sub(r'<joint name="(\w+)"', r'<joint name="zz_\1"', Path(bundled.mjcf).read_text())
    text = re.sub(r'<position name="(\w+)" joint="(\w+)"', r'<position name="zz_\1" joint="zz_\2"', text)
    (tmp_path / "renamed.xml").write_text(text)
    profile_text = Path(bundled.source).read_text()
    profile_text = re.sub(r'^mjcf = ".*"', 'mjcf = "renamed.xml"', profile_text, flags=re.M)
    profile_text = re.sub(r'^(mjcf_joint|mjcf_actuator) = "(\w+)"', r'\1 = "zz_\2"', profile_text, flags=re.M)
    (tmp_path / "renamed.toml").write_text(profile_text)
    renamed = BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1, profile=load_profile(tmp_path / "renamed.toml"))
    ours = BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1)
    np.testing.assert_array_equal(renamed.start_pose_rad, ours.start_pose_rad)
    # Fatter fingers: the same angles would press them into the cube.
    fat = text.replace('type="sphere" size="0.012"', 'type="sphere" size="0.03"')  # the fingertip spheres
    assert fat != text
    (tmp_path / "renamed.xml").write_text(fat)
    with caplog.at_level("INFO", logger="handrail.sim.batch_env"):
        env = BatchHandEnv(ROTATE_Z, 1, dr=False, seed=0, nthread=1, profile=load_profile(tmp_path / "renamed.toml"))
    np.testing.assert_array_equal(env.start_pose_rad, [joint.home_rad for joint in env.profile.joints])
    assert "overlaps by" in caplog.text and "starting from home" in caplog.text
