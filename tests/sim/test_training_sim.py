"""The training simulator: its timing and solver come from configuration and travel with the policy; it is
stable over the randomization ranges; the hand's safety monitor ends episodes in it as on the hand.

Bounds are written out here, not read from the product's defaults.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mujoco
import numpy as np
import pytest

from handrail.deploy.policy_file import read_policy
from handrail.robot.profile import load_profile
from handrail.robot.safety_monitor import STALL
from handrail.sim.actions import ActionMap
from handrail.sim.batch_env import BatchHandEnv, EnvError
from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
from handrail.sim.evaluate import evaluate, load_policy
from handrail.sim.export import export_policy
from handrail.sim.model import build_scene_for_profile
from handrail.sim.sim_settings import TRAINING_SIM, SimSettings, SimSettingsError


def _env(n_envs: int, sim: SimSettings | None = TRAINING_SIM, **kwargs) -> BatchHandEnv:
    return BatchHandEnv("rotate-z", n_envs, seed=11, sim=sim, history=3, object_pose=False, **kwargs)


def test_training_settings_reach_the_model() -> None:
    env = _env(2)
    assert TRAINING_SIM.control_rate_hz == 20.0 and TRAINING_SIM.timestep_s == 0.01
    assert env.control_period_s == pytest.approx(0.05)
    assert env.n_substeps == 5
    assert env.model.opt.timestep == pytest.approx(0.01)
    assert env.model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert (env.model.opt.iterations, env.model.opt.ls_iterations) == (50, 50)
    assert env.model.opt.impratio == pytest.approx(10.0)  # the scene's
    assert env.task.episode_steps == 400  # 20 s at 20 Hz
    assert env.action_map.max_delta_rad == pytest.approx(env.safety_limits.max_speed_rad_s * 0.05)
    # Without settings: the MJCF's physics at the profile's rate (what older policies were trained on).
    legacy = _env(1, sim=None)
    assert legacy.control_period_s == pytest.approx(1 / 30) and legacy.n_substeps == 17
    assert legacy.model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST


def test_the_settings_are_recorded_in_the_policy_and_rebuild_its_simulator(tmp_path: Path) -> None:
    profile = load_profile()
    sim = SimSettings(control_rate_hz=25.0, timestep_s=0.008, solver_iterations=6)
    checkpoint = untrained_checkpoint(profile, history=3, sim=sim, object_pose=False, output_scale=0.0)
    policy = export_policy(save_checkpoint(checkpoint, tmp_path / "c.pt"), tmp_path / "p.onnx", parity_samples=20).path
    metadata, _ = read_policy(policy)
    assert metadata.control_rate_hz == 25.0
    assert metadata.sim == {**sim.to_dict(), "substeps": 5}
    assert "object_position_m" not in metadata.observation.names
    report = evaluate(load_policy(policy), episodes=2, episode_steps=10, dr=False)
    assert report.sim == metadata.sim
    fine = evaluate(load_policy(policy), episodes=2, episode_steps=10, dr=False, sim="fine")
    assert fine.sim is not None and fine.sim["timestep_s"] == pytest.approx(0.002)
    assert fine.sim["integrator"] == "implicitfast" and fine.sim["control_rate_hz"] == 25.0


def test_bad_settings_are_refused_with_the_name() -> None:
    with pytest.raises(SimSettingsError, match="timestep_s"):
        SimSettings(timestep_s=0.1)  # longer than the 50 ms period
    with pytest.raises(SimSettingsError, match="integrator"):
        SimSettings(integrator="verlet")
    with pytest.raises(SimSettingsError, match="control_rate_hz"):
        TRAINING_SIM.with_values({"control_rate_hz": "nan"})
    with pytest.raises(SimSettingsError, match="valid names"):
        TRAINING_SIM.with_values({"timestep": "0.01"})


def _max_cube_spin(env: BatchHandEnv, action_std: float, steps: int) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    env.reset()
    spin, ended = 0.0, 0
    for _ in range(steps):
        result = env.step(np.clip(rng.normal(0.0, action_std, (env.n_envs, env.n_joints)), -1, 1))
        spin = max(spin, float(np.abs(result.metrics["cube_angular_velocity_z_rad_s"]).max()))
        ended += int((result.terminated | result.truncated).sum())
    return spin, ended


def test_the_coarse_simulator_is_stable_over_the_randomization() -> None:
    # A held hand keeps the cube on every randomized hand (random pushes on the cube included), no simulation
    # goes unstable, and the cube turns no more than in the MJCF's fine physics under the same draws.
    spin, ended = _max_cube_spin(_env(48, dr=True), 0.0, 40)
    fine = SimSettings.of_model(build_scene_for_profile(load_profile()), 20.0)
    assert fine.timestep_s == pytest.approx(0.002)
    fine_spin, _ = _max_cube_spin(_env(48, sim=fine, dr=True), 0.0, 40)
    assert ended == 0, ended
    assert spin < 2.0 * fine_spin + 0.2, (spin, fine_spin)
    # Fingers moving at random (the untrained policy's std) do not fling the cube at absurd speeds.
    spin, _ = _max_cube_spin(_env(48, dr=True), 0.37, 40)
    assert spin < 30.0, spin


def test_the_scenes_impratio_is_unstable_with_a_short_solver_budget() -> None:
    # Why 50 solver iterations: Playground's 5 (line search 8) with the scene's impratio 10 at 10 ms lets a
    # finger fling the cube (the check above must be able to see that).
    unstable = SimSettings(solver_iterations=5, line_search_iterations=8)
    spin, _ = _max_cube_spin(_env(48, sim=unstable, dr=True), 0.37, 40)
    assert spin > 30.0, spin


def test_the_safety_monitor_ends_a_training_episode_like_it_stops_the_hand() -> None:
    # Fingers closing on the cube push at the current limit without moving: the stall the hand's monitor
    # stops on. In training that is the end of the episode, a failure with its own penalty, not a drop.
    env = _env(8, dr=False)
    env.reset()
    closing = np.zeros((8, env.n_joints))
    for index, name in enumerate(env.profile.joint_names):
        if name.endswith(("_mcp", "_pip", "_dip")) and not name.startswith("thumb"):
            closing[:, index] = 1.0
    steps, pushed_before_the_stop = 0, False
    weight = env.task.config.pushing_weight
    while steps < 80:
        result = env.step(closing)
        steps += 1
        # Every step a joint pushes (a stall but for the speed) costs, from the first such step on.
        pushing = result.metrics["pushing_joints"]
        assert np.allclose(result.reward_terms["pushing"], -weight * pushing * env.control_period_s)
        pushed_before_the_stop |= bool(pushing.any() and not result.terminated.any())
        if result.terminated.any():
            break
    assert weight > 0 and pushed_before_the_stop
    stopped = result.safety_stops[STALL]
    assert stopped.any(), "no stall within 4 s of fingers closing on the cube"
    assert steps * env.control_period_s >= 1.0  # the monitor's stall time, not sooner
    assert (result.terminated[stopped]).all() and not result.metrics["dropped"][stopped].any()
    assert (result.reward_terms["safety_stop"][stopped] < 0).all()
    assert (result.reward_terms["safety_stop"][~result.terminated] == 0).all()


def test_eval_reports_how_often_the_monitor_would_stop_the_hand_and_when_the_cube_drops() -> None:
    names = load_profile().joint_names
    closing_joints = np.array(
        [name.endswith(("_mcp", "_pip", "_dip")) and not name.startswith("thumb") for name in names]
    )

    def closing(obs: np.ndarray) -> np.ndarray:
        return np.tile(closing_joints.astype(np.float64), (len(obs), 1))

    report = evaluate(closing, "rotate-z", dr=False, episodes=4, episode_steps=60, sim=TRAINING_SIM)
    assert report.safety_stop_rate == 1.0 and report.drop_rate == 0.0
    assert report.safety_stops == {"overspeed": 0, "overcurrent": 0, "position_limit": 0, "stall": 4}
    assert report.mean_time_to_drop_s is None
    # Stopped after ~1.3 s of 3 s: the rotation counts over the whole episode, not the time before the stop.
    assert report.episode_s == pytest.approx(3.0)
    assert abs(report.mean_angular_velocity_rad_s) <= abs(report.mean_rotation_rad) / 3.0 + 1e-9
    assert "safety monitor would stop the hand: 100.0% of episodes (stall 4)" in report.format()


def test_eval_maps_actions_with_the_policys_own_map(tmp_path: Path) -> None:
    profile = load_profile()
    home = np.array([joint.home_rad for joint in profile.joints])
    around = ActionMap.around(profile.joint_names, home, 0.6)
    checkpoint = untrained_checkpoint(profile, object_pose=False, output_scale=0.0, action_map=around)
    saved = save_checkpoint(checkpoint, tmp_path / "c.pt")
    policy = export_policy(saved, tmp_path / "p.onnx", parity_samples=20).path
    for loaded in (load_policy(policy), load_policy(saved)):
        assert loaded.action_map is not None and loaded.action_map.diff(around) == []
    assert evaluate(load_policy(policy), episodes=1, episode_steps=5, dr=False).episodes == 1
    reversed_map = ActionMap.around(tuple(reversed(profile.joint_names)), home, 0.6)
    with pytest.raises(EnvError, match="the action map drives"):
        evaluate(replace(load_policy(policy), metadata=None, action_map=reversed_map), episodes=1, episode_steps=5)
