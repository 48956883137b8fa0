"""Dynamics identification: the fit on a log the sim wrote with known parameters, the file, and the virtual hand."""

import numpy as np
import pytest

from handrail.calibration.compare import compare_rollout
from handrail.calibration.dynamics import DynamicsFitConfig, fit_dynamics
from handrail.calibration.dynamics_file import (
    DynamicsCalibration,
    GroupDynamics,
    apply_dynamics,
    centre_randomization,
    read_dynamics_calibration,
    write_dynamics_calibration,
)
from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.excitation import ExcitationConfig, excitation_targets
from handrail.calibration.joint_groups import joint_groups
from handrail.calibration.replay import ReplayInput, dynamics_scales
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.model import build_scene_for_profile
from handrail.sim.randomization import load_randomization

PERIOD_S = 1 / 30


def known_dynamics(profile) -> DynamicsCalibration:
    groups = {
        name: GroupDynamics(
            joints=joints,
            kp_scale=0.9,
            kv_scale=0.8,
            force_limit_scale=0.5,
            damping_scale=1.5,
            frictionloss_scale=1.3,
            backlash_rad=0.006,
        )
        for name, joints in joint_groups(profile, "type").items()
    }
    return DynamicsCalibration(
        profile=profile.name,
        created="2025-01-31T12:00:00+00:00",
        command_latency_s=0.015,
        fit_rmse_before_rad=0.0,
        fit_rmse_after_rad=0.0,
        n_ticks=0,
        groups=groups,
    )


def simulated_excitation(profile, replayer, dynamics, seed: int) -> ReplayInput:
    """An excitation 'measured' on the sim with ``dynamics``."""
    limits = SafetyLimits.from_profile(profile)
    targets = excitation_targets(profile, ExcitationConfig(duration_s=3.0, seed=seed))
    home = np.array([joint.home_rad for joint in profile.joints])
    time_s = np.arange(len(targets)) * PERIOD_S
    stand_in = ReplayInput(
        time_s, np.tile(home, (len(targets), 1)), np.zeros_like(targets), targets,
        limits.max_speed_rad_s, limits.max_accel_rad_s2,
    )  # fmt: skip
    measured = replayer.run(
        stand_in,
        dynamics_scales(replayer, dynamics),
        dynamics.command_latency_s,
        "servo",
        dynamics.backlash_per_joint(profile.joint_names),
    )
    return ReplayInput(
        time_s, measured, np.zeros_like(targets), targets, limits.max_speed_rad_s, limits.max_accel_rad_s2
    )


@pytest.mark.slow
def test_the_fit_recovers_parameters_the_sim_was_run_with(profile, replayer):
    """Slow tier (the suite's budget): the fast tier fits the virtual hand's run (calibrate dynamics)."""
    truth = known_dynamics(profile)
    data = simulated_excitation(profile, replayer, truth, seed=1)
    fit = fit_dynamics(profile, [data], config=DynamicsFitConfig(grouping="type", max_iterations=20), replayer=replayer)
    found = fit.calibration
    assert found.fit_rmse_after_rad < found.fit_rmse_before_rad / 10
    assert found.command_latency_s == pytest.approx(truth.command_latency_s, abs=0.001)
    for name, group in found.groups.items():
        assert group.kp_scale == pytest.approx(0.9, rel=0.05), name
        assert group.backlash_rad == pytest.approx(0.006, abs=0.001), name
    # Fingers lifting against gravity saturate: their force limit shows (abduction never needs it).
    assert found.groups["mcp"].force_limit_scale == pytest.approx(0.5, rel=0.15)
    # Fresh data from the same 'hand': the identified model replays it far better than the nominal one.
    fresh = simulated_excitation(profile, replayer, truth, seed=2)
    nominal_error = replayer.run(fresh) - fresh.position_rad
    identified_error = (
        replayer.run(
            fresh,
            dynamics_scales(replayer, found),
            found.command_latency_s,
            "servo",
            found.backlash_per_joint(profile.joint_names),
        )
        - fresh.position_rad
    )
    assert np.sqrt(np.mean(identified_error**2)) < np.sqrt(np.mean(nominal_error**2)) / 5


def test_the_dynamics_file_round_trips_and_loads_into_the_sim(tmp_path, profile):
    dynamics = known_dynamics(profile)
    path = write_dynamics_calibration(tmp_path / "dynamics.toml", dynamics)
    assert read_dynamics_calibration(path) == dynamics
    model = build_scene_for_profile(profile)
    kp_before = model.actuator("if_mcp_act").gainprm[0]
    damping_before = model.dof_damping[model.joint("if_mcp").dofadr[0]]
    apply_dynamics(model, profile, dynamics)
    assert model.actuator("if_mcp_act").gainprm[0] == pytest.approx(0.9 * kp_before)
    assert model.actuator("if_mcp_act").biasprm[1] == pytest.approx(-0.9 * kp_before)
    assert model.dof_damping[model.joint("if_mcp").dofadr[0]] == pytest.approx(1.5 * damping_before)


def test_the_dynamics_file_centres_the_training_randomization(profile):
    config = load_randomization()
    dynamics = known_dynamics(profile)
    centred = centre_randomization(config, dynamics, profile, profile.control_rate_hz)
    # The multipliers act on the model apply_dynamics wrote the identified values into: scaling them as well
    # would count the identification twice (tests/sim/test_train_dynamics.py checks the drawn values).
    for name in ("actuator_kp_scale", "joint_damping_scale", "actuator_force_limit_scale"):
        entry, original = getattr(centred.hand, name), getattr(config.hand, name)
        assert (entry.low, entry.high) == (original.low, original.high), name
        assert dynamics.fingerprint() in entry.source, name
    # Absolute ranges keep their width and hold the identified value (0.015 s = 0.45 periods at 30 Hz).
    latency, original = centred.timing.command_latency_periods, config.timing.command_latency_periods
    assert latency.low <= 0.45 <= latency.high
    assert latency.high - latency.low == pytest.approx(original.high - original.low)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("schema_version = 1", "schema_version = 2"), "schema_version 2 is not supported"),
        (lambda text: text.replace('kind = "dynamics"', 'kind = "joints"'), "kind = 'joints'"),
        (lambda text: text.replace("kp_scale = 0.9", "kp_scale = -0.9", 1), r"groups\.\w+\.kp_scale"),
        (lambda text: text.replace("command_latency_s = 0.015", "command_latency_s = 3.0"), "command_latency_s"),
        (lambda text: text + "\nextra = 1\n", "unknown field"),
    ],
)
def test_malformed_dynamics_files_are_rejected_naming_the_field(tmp_path, profile, edit, message):
    path = write_dynamics_calibration(tmp_path / "dynamics.toml", known_dynamics(profile))
    path.write_text(edit(path.read_text()))
    with pytest.raises(CalibrationFileError, match=message):
        read_dynamics_calibration(path)


def test_calibrate_dynamics_on_the_virtual_hand(tmp_path, calibrate_cli, profile, replayer):
    """A short excitation through the CLI: a dynamics file that replays the excitation better than nominal."""
    out = tmp_path / "dynamics.toml"
    argv = ["calibrate", "dynamics", "--virtual", "--reality-seed", "3", "--out", str(out)]
    argv += ["--duration-s", "2", "--iterations", "4", "--report", str(tmp_path / "report")]
    assert calibrate_cli(argv) == 0
    dynamics = read_dynamics_calibration(out)
    assert dynamics.fit_rmse_after_rad < 0.7 * dynamics.fit_rmse_before_rad
    assert 0.0 < dynamics.command_latency_s < 0.05
    assert (tmp_path / "report" / "report.html").is_file()
    (log,) = (tmp_path / "dynamics_excitation").glob("excitation_*_0.mcap")
    report = compare_rollout(log, dynamics=dynamics, profile=profile, replayer=replayer)
    assert report.replay("identified").rmse_rad < report.replay("nominal").rmse_rad
