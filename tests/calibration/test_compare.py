"""Sim vs real: the lag estimate, the replay against a log the sim itself wrote, and a deploy run's report."""

import json

import numpy as np
import pytest

from handrail.calibration.compare import compare_rollout, time_lag_s
from handrail.calibration.dynamics_file import DynamicsCalibration, GroupDynamics
from handrail.calibration.excitation import ExcitationConfig, excitation_targets
from handrail.calibration.joint_groups import joint_groups
from handrail.calibration.replay import Replayer, ReplayInput
from handrail.deploy.rollout_log import LogHeader, RolloutLogWriter, TickRecord
from handrail.robot.profile import load_profile
from handrail.robot.safety_limits import SafetyLimits

PERIOD_S = 1 / 30


@pytest.fixture(scope="module")
def profile():
    return load_profile()


@pytest.fixture(scope="module")
def replayer(profile):
    return Replayer(profile)


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


def test_compare_cli_writes_the_report(tmp_path, profile, replayer, calibrate_cli):
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
    assert all(np.isnan(m.lag_s) or abs(m.lag_s) < 0.3 for m in nominal.metrics)
    assert report.write(tmp_path / "report").is_file()
