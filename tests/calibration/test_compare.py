"""Sim vs real: the lag estimate, the replay against a log the sim itself wrote, and a deploy run's report.

Object pose divergence: a log whose cube the sim itself moved replays with the cube where the log put it; a log
without object poses says so; a deploy run on the virtual hand (ground-truth poses) reports the divergence.
"""

import json

import mujoco
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.calibration.compare import compare_rollout, time_lag_s
from handrail.calibration.dynamics_file import DynamicsCalibration, GroupDynamics
from handrail.calibration.excitation import ExcitationConfig, excitation_targets
from handrail.calibration.joint_groups import joint_groups
from handrail.calibration.object_divergence import rotation_angle_rad
from handrail.calibration.replay import Replayer, ReplayInput
from handrail.deploy.rollout_log import LogHeader, PoseRecord, RolloutLogWriter, TickRecord
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim import quat
from handrail.sim.model import cube_pose

PERIOD_S = 1 / 30


@pytest.mark.parametrize("delay_ticks", [-2, 0, 3])
def test_the_lag_is_how_long_the_real_joint_trails_the_sim(delay_ticks):
    time_s = np.arange(300) * PERIOD_S
    sim = np.sin(2 * np.pi * 0.7 * time_s) + 0.3 * np.sin(2 * np.pi * 1.9 * time_s)
    real = np.roll(sim, delay_ticks)  # real[t] = sim[t - delay]
    assert time_lag_s(real[10:-10], sim[10:-10], PERIOD_S) == pytest.approx(delay_ticks * PERIOD_S, abs=0.2 * PERIOD_S)


def test_a_joint_that_did_not_move_has_no_lag():
    assert np.isnan(time_lag_s(np.full(100, 0.3), np.linspace(0, 1, 100), PERIOD_S))


def synthetic_dynamics(profile) -> DynamicsCalibration:
    groups = {
        name: GroupDynamics(joints=joints, kp_scale=0.7, kv_scale=1.2, force_limit_scale=0.4, frictionloss_scale=1.5)
        for name, joints in joint_groups(profile).items()
    }
    return DynamicsCalibration(
        profile=profile.name,
        created="2025-01-31T12:00:00+00:00",
        command_latency_s=0.012,
        fit_rmse_before_rad=0.0,
        fit_rmse_after_rad=0.0,
        n_ticks=0,
        groups=groups,
    )


def write_sim_log(path, profile, replayer, dynamics) -> None:
    """A rollout log whose 'measurements' are the identified sim's replay of an excitation."""
    limits = SafetyLimits.from_profile(profile)
    targets = excitation_targets(profile, ExcitationConfig(duration_s=3.0, seed=4))
    home = np.array([joint.home_rad for joint in profile.joints])
    time_s = 100.0 + np.arange(len(targets)) * PERIOD_S
    start = ReplayInput(time_s, np.tile(home, (len(targets), 1)), np.zeros_like(targets), targets,
                        limits.max_speed_rad_s, limits.max_accel_rad_s2)  # fmt: skip
    from handrail.calibration.replay import dynamics_scales

    measured = replayer.run(start, dynamics_scales(replayer, dynamics), dynamics.command_latency_s, "servo")
    with RolloutLogWriter(path) as log:
        log.write_header(LogHeader.for_run(profile, limits=limits))
        for tick, (t, position, target) in enumerate(zip(time_s, measured, targets, strict=True)):
            zeros = np.zeros(len(profile.joints))
            log.write_tick(TickRecord(tick, t, position, zeros, zeros, zeros + 30.0, target))


def test_a_log_of_the_identified_sim_replays_exactly_with_its_parameters(tmp_path, profile, replayer):
    dynamics = synthetic_dynamics(profile)
    log_path = tmp_path / "sim.mcap"
    write_sim_log(log_path, profile, replayer, dynamics)
    report = compare_rollout(log_path, dynamics=dynamics, profile=profile, replayer=replayer)
    nominal, identified = report.replay("nominal"), report.replay("identified")
    assert identified.rmse_rad < 1e-4  # the same model, from the same state: only the log's float rounding
    assert nominal.rmse_rad > 20 * identified.rmse_rad
    # The nominal sim has no command latency: the 'real' joints trail it.
    lags = [metric.lag_s for metric in nominal.metrics if not np.isnan(metric.lag_s)]
    assert np.median(lags) > 0.005


def test_compare_cli_writes_the_report(tmp_path, profile, replayer, calibrate_cli, capsys):
    from handrail.calibration.dynamics_file import write_dynamics_calibration

    dynamics = synthetic_dynamics(profile)
    log_path = tmp_path / "sim.mcap"
    write_sim_log(log_path, profile, replayer, dynamics)
    dynamics_path = write_dynamics_calibration(tmp_path / "dynamics.toml", dynamics)
    out = tmp_path / "report"
    assert calibrate_cli(["compare", str(log_path), "--dynamics", str(dynamics_path), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["joints"]) == set(profile.joint_names)
    assert metrics["overall_rmse_rad"]["identified"] < metrics["overall_rmse_rad"]["nominal"]
    assert (out / "joints.png").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "joints.png" in page and "index_pip" in page
    # An excitation-like log has no object pose: no divergence, and the report says why.
    assert metrics["object"]["reported"] is False
    assert "the log has no object pose" in metrics["object"]["reason"]
    assert "Not reported: the log has no object pose" in page
    assert not (out / "object.png").exists()
    assert "object: not reported — the log has no object pose" in capsys.readouterr().out


def test_compare_a_deploy_run_on_the_virtual_hand(tmp_path, profile, replayer):
    """A gentle policy's rollout on the virtual hand replays in the nominal sim within a few degrees."""
    from handrail.deploy.loop import LoopConfig
    from handrail.deploy.pose_source import GroundTruthPose
    from handrail.deploy.run import run_deploy
    from handrail.robot.emulator import VirtualHandProcess
    from handrail.sim.checkpoint import untrained_checkpoint
    from handrail.sim.export import export_policy

    checkpoint = untrained_checkpoint(profile, hidden=(64, 64), output_scale=0.02, normalizer=False)
    policy = export_policy(checkpoint, tmp_path / "policy.onnx", parity_samples=50).path
    with VirtualHandProcess(reality_seed=6) as vhand:
        outcome = run_deploy(
            policy,
            profile,
            vhand.port,
            GroundTruthPose(vhand, profile),
            config=LoopConfig(seconds=2.0, startup_timeout_s=6.0, status_interval_s=0),
            log_path=tmp_path / "rollout.mcap",
        )
    assert outcome.result.exit_code == 0, outcome.result.stop_reason
    report = compare_rollout(tmp_path / "rollout.mcap", profile=profile, replayer=replayer)
    nominal = report.replay("nominal")
    assert report.time_s[-1] > 1.5
    assert np.degrees(nominal.rmse_rad) < 5.0, report.format()
    # Per joint the lag of a 2 s, barely moving rollout is noisy (a drift peaks the cross-correlation at a window
    # edge now and then: one joint at >= 0.3 s failed one CI run in many); typically it is within a few ticks.
    lags_s = np.array([m.lag_s for m in nominal.metrics if not np.isnan(m.lag_s)])
    assert lags_s.size and np.median(np.abs(lags_s)) < 0.1, report.format()
    assert np.mean(np.abs(lags_s) < 0.3) >= 0.75, report.format()
    # The log has the simulator's cube (in the hand frame, from the pose source's own conversion): the replay
    # starts its cube there, and the gentle policy leaves both cubes resting on the palm. A replay that put the
    # logged hand-frame pose into the world frame unconverted would drop its cube 25 cm at once.
    logged, cube = report.logged_object, nominal.object_divergence
    assert logged is not None and cube is not None, report.object_absent_reason
    assert logged.source == "ground_truth" and logged.time_s.size > 40
    assert cube.position_error_m[0] < 1e-3
    assert cube.metrics.position_max_m < 2e-3, report.format()
    assert np.degrees(cube.metrics.rotation_max_rad) < 2.0, report.format()
    assert report.write(tmp_path / "report").is_file()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["object"]["reported"] is True
    assert set(metrics["object"]["replays"]["nominal"]) >= {"position_rmse_mm", "rotation_final_deg", "rotation_z_deg"}
    assert (tmp_path / "report" / "object.png").stat().st_size > 10_000
    assert "object.png" in (tmp_path / "report" / "report.html").read_text()


# Where the cube-moving logs start the cube: off its resting place across the palm (world frame) and turned
# about the vertical, so that a replay that left the cube where the scene rests it would start visibly off.
CUBE_SHIFT_WORLD_M = np.array([0.004, -0.006, 0.0])
CUBE_TURN_RAD = np.radians(20.0)
STEPS_PER_TICK = 16  # physics steps (2 ms) per logged tick


def resting_cube_in_hand(replayer: Replayer) -> tuple[np.ndarray, np.ndarray]:
    """Where the scene's home keyframe rests the cube, in the hand frame: position [m], orientation (wxyz)."""
    data = mujoco.MjData(replayer.model)
    mujoco.mj_resetDataKeyframe(replayer.model, data, 0)
    mujoco.mj_forward(replayer.model, data)
    pose = cube_pose(replayer.model, data)
    return replayer.hand_frame.points_to_hand(pose.position_m), replayer.hand_frame.rotations_to_hand(pose.quat_wxyz)


def write_sim_log_with_cube(path, profile, replayer, first_pose_tick: int = 0) -> None:
    """A rollout log of plain MuJoCo stepping the nominal scene through an excitation, the cube started moved.

    Independent of the replay code: the scene is stepped with ``mj_step``, each tick's targets held for its
    steps, the cube's pose turned into the palm frame here. Ticks before ``first_pose_tick`` have no pose.
    """
    model = replayer.model
    replayer.nominal.apply(model, replayer.nominal_scales())
    limits = SafetyLimits.from_profile(profile)
    targets = excitation_targets(profile, ExcitationConfig(duration_s=2.0, seed=5))
    period_s = STEPS_PER_TICK * model.opt.timestep
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, 0)
    cube = replayer.cube_qpos_id
    data.qpos[cube : cube + 3] += CUBE_SHIFT_WORLD_M
    turn = quat.from_rotvec(np.array([0.0, 0.0, CUBE_TURN_RAD]))
    data.qpos[cube + 3 : cube + 7] = quat.multiply(turn, data.qpos[cube + 3 : cube + 7])
    mujoco.mj_forward(model, data)
    palm = model.body("palm").id
    palm_position, palm_inverse = data.xpos[palm].copy(), quat.conjugate(data.xquat[palm])
    zeros = np.zeros(len(profile.joints))
    with RolloutLogWriter(path) as log:
        log.write_header(LogHeader.for_run(profile, limits=limits))
        for tick, target in enumerate(targets):
            pose = None
            if tick >= first_pose_tick:
                world = cube_pose(model, data)
                position_m = quat.rotate(palm_inverse, world.position_m - palm_position)
                pose = PoseRecord(position_m, quat.multiply(palm_inverse, world.quat_wxyz), 0.0, "ground_truth", True)
            joints = data.qpos[replayer.qpos_ids].copy()
            log.write_tick(
                TickRecord(tick, 100.0 + tick * period_s, joints, zeros, zeros, zeros + 30.0, target, pose=pose)
            )
            data.ctrl[replayer.actuator_ids] = target
            mujoco.mj_step(model, data, nstep=STEPS_PER_TICK)


def test_the_replay_starts_the_cube_where_the_log_has_it(tmp_path, profile, replayer):
    log_path = tmp_path / "cube.mcap"
    write_sim_log_with_cube(log_path, profile, replayer)
    report = compare_rollout(log_path, profile=profile, replayer=replayer)
    logged, divergence = report.logged_object, report.replay("nominal").object_divergence
    assert logged is not None and divergence is not None, report.object_absent_reason
    # Left where the scene rests it, the replay's cube would start this far off the logged one.
    rest_position, rest_quat = resting_cube_in_hand(replayer)
    assert np.linalg.norm(logged.position_m[0] - rest_position) > 5e-3
    assert np.degrees(rotation_angle_rad(logged.quat_wxyz[0], rest_quat)) > 15.0
    assert divergence.position_error_m[0] < 1e-6 and divergence.rotation_error_rad[0] < 1e-6
    # The same model from the same state, the same commands: the whole run replays exactly, its turn too.
    assert divergence.metrics.position_max_m < 1e-6, report.format()
    assert divergence.metrics.rotation_max_rad < 1e-5, report.format()
    assert divergence.metrics.rotation_z_rad == pytest.approx(logged.rotation_z_rad, abs=1e-6)
    assert "object pose, sim vs real (ground_truth" in report.format()


def test_a_log_whose_first_tick_lacks_a_pose_says_it_cannot_place_the_cube(tmp_path, profile, replayer):
    log_path = tmp_path / "late.mcap"
    write_sim_log_with_cube(log_path, profile, replayer, first_pose_tick=5)
    report = compare_rollout(log_path, profile=profile, replayer=replayer)
    assert report.logged_object is None and report.replay("nominal").object_divergence is None
    assert "first tick has no object pose (the first is at tick 5)" in report.object_absent_reason
    assert report.as_dict()["object"]["reported"] is False


unit_quaternions = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
    lambda values: np.linalg.norm(values) > 0.1
)


@given(unit_quaternions, st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3), st.floats(0.0, np.pi))
def test_the_rotation_error_is_the_angle_between_the_orientations(base, axis, angle_rad):
    base = np.array(base) / np.linalg.norm(base)
    axis = np.array(axis)
    if np.linalg.norm(axis) < 0.1:
        axis = np.array([0.0, 0.0, 1.0])
    turned = quat.multiply(base, quat.from_rotvec(axis / np.linalg.norm(axis) * angle_rad))
    assert rotation_angle_rad(base, turned) == pytest.approx(angle_rad, abs=1e-6)
    assert rotation_angle_rad(-base, turned) == pytest.approx(angle_rad, abs=1e-6)  # q and -q: one orientation
