"""Training and evaluation on the identified hand (``--dynamics``): the run records the file, the simulator draws
around the identified values, export carries the record, resume keeps the file, and a bad file is refused."""

import json
from pathlib import Path

import numpy as np
import pytest

from handrail.calibration.dynamics_file import (
    DynamicsCalibration,
    GroupDynamics,
    apply_dynamics,
    write_dynamics_calibration,
)
from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.joint_groups import joint_groups
from handrail.cli import main
from handrail.deploy.policy_file import read_policy
from handrail.robot.profile import load_profile
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.checkpoint import load_checkpoint, untrained_checkpoint
from handrail.sim.export import export_policy
from handrail.sim.model import build_scene_for_profile
from handrail.sim.randomization import load_randomization
from handrail.sim.train import Trainer
from handrail.sim.train_checkpoint import run_dynamics
from handrail.sim.train_config import RunConfig, TrainError, hyperparameters_for

DAMPING_SCALE = 1.5
FORCE_LIMIT_SCALE = 0.5
LATENCY_S = 0.015
N_ENVS = 16
TINY = ["n_steps=16", "batch_size=128", "hidden=[16, 16]", "n_epochs=1"]
TINY_CLI = [
    "--task", "pose", "--envs", str(N_ENVS), "--episode-steps", "20", "--no-progress",
    *[item for setting in TINY for item in ("--set", setting)],
]  # fmt: skip


@pytest.fixture(scope="module")
def profile():
    return load_profile()


def identified(
    profile, damping_scale: float = DAMPING_SCALE, force_limit_scale: float = FORCE_LIMIT_SCALE
) -> DynamicsCalibration:
    groups = {
        name: GroupDynamics(
            joints=joints,
            kp_scale=0.9,
            kv_scale=0.8,
            force_limit_scale=force_limit_scale,
            damping_scale=damping_scale,
            backlash_rad=0.006,
        )
        for name, joints in joint_groups(profile, "type").items()
    }
    return DynamicsCalibration(
        profile=profile.name,
        created="2025-01-31T12:00:00+00:00",
        command_latency_s=LATENCY_S,
        fit_rmse_before_rad=0.03,
        fit_rmse_after_rad=0.004,
        n_ticks=600,
        groups=groups,
    )


@pytest.fixture(scope="module")
def dynamics_file(tmp_path_factory, profile) -> Path:
    return write_dynamics_calibration(tmp_path_factory.mktemp("dynamics") / "dynamics.toml", identified(profile))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dynamics_file) -> Trainer:
    config = RunConfig(
        task="pose",
        out=tmp_path_factory.mktemp("runs") / "identified",
        minutes=5,
        max_steps=1024,
        progress=False,
        episode_steps=20,
        hyper=hyperparameters_for("pose", N_ENVS, TINY),
        dynamics=dynamics_file,
    )
    trainer = Trainer(config)
    trainer.run()
    return trainer


def joint_values(profile, model_of, field: str, n_models: int) -> np.ndarray:
    """``field`` of the hand's joints (dof fields) in each of ``n_models`` models, (n_models, n_joints)."""
    scene = build_scene_for_profile(profile)
    dofs = [scene.joint(joint.mjcf_joint).dofadr[0] for joint in profile.joints]
    return np.array([getattr(model_of(index), field)[dofs] for index in range(n_models)])


def test_training_with_dynamics_records_the_file_in_run_json(trained, dynamics_file, profile):
    record = json.loads((trained.config.out / "run.json").read_text())["dynamics"]
    calibration = identified(profile)
    assert record["path"] == str(dynamics_file.resolve())
    assert record["fingerprint"] == calibration.fingerprint()
    assert record["fit_rmse_after_rad"] == calibration.fit_rmse_after_rad
    assert record["fingerprint"] != identified(profile, damping_scale=1.4).fingerprint()


def test_the_training_randomization_draws_around_the_identified_values(trained, profile):
    core = trained.core
    nominal_damping = joint_values(profile, lambda _: build_scene_for_profile(profile), "dof_damping", 1)[0]
    drawn = joint_values(profile, core.get_model, "dof_damping", core.n_envs) / nominal_damping
    # Each joint draws its multiplier from the bundled range; the geometric mean of that range times the
    # identified scale is where the drawn values centre (the nominal model's would be at the range's alone,
    # ranges scaled as well as the model at the square of the identified scale).
    entry = load_randomization().hand.joint_damping_scale
    assert entry.distribution == "loguniform"
    range_centre = np.sqrt(entry.low * entry.high)
    log_mean = float(np.mean(np.log(drawn)))
    assert log_mean == pytest.approx(np.log(DAMPING_SCALE * range_centre), abs=0.15)
    assert abs(log_mean - np.log(range_centre)) > 0.3
    latency = core.randomization.timing.command_latency_periods
    assert latency.low <= LATENCY_S * profile.control_rate_hz <= latency.high


def test_the_identified_model_is_the_simulator_under_the_servo_torque_cap(profile):
    """The file's multipliers act on the MJCF's values (as identified); each force limit is then the identified
    one or the current-limited torque, whichever is lower (a fit that pushes a force limit up is a joint the
    excitation never loaded, not a stronger servo)."""
    calibration = identified(profile)
    env = BatchHandEnv("pose", 2, dr=False, dynamics=calibration, seed=0)
    expected = apply_dynamics(build_scene_for_profile(profile), profile, calibration)
    ids = [expected.actuator(joint.mjcf_actuator).id for joint in profile.joints]
    capped = BatchHandEnv("pose", 1, dr=False, seed=0).model.actuator_forcerange[ids]
    np.testing.assert_array_equal(
        env.model.actuator_forcerange[ids, 1], np.minimum(expected.actuator_forcerange[ids, 1], capped[:, 1])
    )
    np.testing.assert_array_equal(env.model.actuator_biasprm[ids], expected.actuator_biasprm[ids])
    np.testing.assert_array_equal(env.model.dof_damping, expected.dof_damping)
    # A weaker identified servo is simulated as identified; a stronger one never beyond the current limit.
    weaker = BatchHandEnv("pose", 1, dr=False, dynamics=identified(profile, force_limit_scale=0.2), seed=0)
    assert (weaker.model.actuator_forcerange[ids, 1] < capped[:, 1]).all()
    stronger = BatchHandEnv("pose", 1, dr=False, dynamics=identified(profile, force_limit_scale=3.0), seed=0)
    np.testing.assert_array_equal(stronger.model.actuator_forcerange[ids], capped)
    # Without randomization every episode has the identified latency and play, not zero.
    env.reset()
    sample = env.samples[0]
    assert sample is not None
    assert sample.command_latency_periods == pytest.approx(LATENCY_S * profile.control_rate_hz)
    np.testing.assert_array_equal(sample.backlash_rad, calibration.backlash_per_joint(profile.joint_names))


def test_export_carries_the_dynamics_record(trained, tmp_path, profile):
    export_policy(trained.config.out / "latest.pt", tmp_path / "policy.onnx", parity_samples=8)
    metadata, _ = read_policy(tmp_path / "policy.onnx")
    assert metadata.training is not None
    assert metadata.training["dynamics"]["fingerprint"] == identified(profile).fingerprint()


def test_eval_with_dynamics_runs_on_the_identified_hand(trained, dynamics_file, profile, capsys):
    latest = str(trained.config.out / "latest.pt")
    short = ["--episodes", "2", "--envs", "2", "--episode-steps", "5", "--json"]
    for randomization in ("--dr", "--no-dr"):
        assert main(["eval", latest, randomization, "--dynamics", str(dynamics_file), *short]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["dr"] == (randomization == "--dr")
        assert report["dynamics"]["fingerprint"] == identified(profile).fingerprint()
        assert report["episodes"] == 2


def test_resume_keeps_the_run_dynamics_and_refuses_another(trained, tmp_path, dynamics_file, profile, capsys):
    out = trained.config.out
    other = write_dynamics_calibration(tmp_path / "other.toml", identified(profile, damping_scale=1.4))
    steps = load_checkpoint(out / "latest.pt").num_timesteps
    resume = ["train", *TINY_CLI, "--minutes", "5", "--max-steps", "256", "--out", str(out), "--resume"]
    assert main([*resume, "--dynamics", str(other)]) == 2
    error = capsys.readouterr().err
    assert "is not the dynamics file the run" in error and str(dynamics_file.resolve()) in error
    assert load_checkpoint(out / "latest.pt").num_timesteps == steps
    # Without --dynamics the run goes on with its own (kept in the checkpoint), and says so in run.json.
    assert main(resume) == 0
    assert load_checkpoint(out / "latest.pt").num_timesteps > steps
    record = json.loads((out / "run.json").read_text())["dynamics"]
    assert record["fingerprint"] == identified(profile).fingerprint()


def test_a_run_started_without_dynamics_cannot_resume_with_one(tmp_path, dynamics_file, profile):
    config = RunConfig(task="pose", out=tmp_path, minutes=1, resume=True, dynamics=dynamics_file)
    with pytest.raises(TrainError, match="started without a dynamics file"):
        run_dynamics(config, profile, untrained_checkpoint(profile))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace('profile = "leap_right"', 'profile = "other_hand"'), "use this hand's file"),
        (lambda text: text.replace("schema_version = 1", "schema_version = 2"), "recalibrate with this handrail"),
        (lambda text: text.replace("command_latency_s = 0.015\n", ""), "command_latency_s: missing"),
    ],
)
def test_train_refuses_a_bad_dynamics_file_naming_the_field(tmp_path, dynamics_file, edit, message, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(dynamics_file.read_text()))
    out = tmp_path / "run"
    assert main(["train", *TINY_CLI, "--minutes", "1", "--out", str(out), "--dynamics", str(bad)]) == 2
    error = capsys.readouterr().err
    assert message in error and str(bad) in error
    assert not out.exists()
    with pytest.raises(CalibrationFileError, match=message):
        run_dynamics(RunConfig(task="pose", out=out, minutes=1, dynamics=bad), load_profile())
