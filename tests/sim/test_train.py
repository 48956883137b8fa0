"""Training through the CLI with a tiny budget: it learns (the pose task's final joint error falls clearly
below a random policy's), it writes checkpoints, CSV and TensorBoard metrics, it resumes, and its
checkpoints load without unpickling anything."""

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from handrail.cli import main
from handrail.sim.checkpoint import CheckpointError, load_checkpoint
from handrail.sim.evaluate import evaluate, load_policy

EPISODE_STEPS = 40
TINY_STEPS = 75_000
TINY = [
    "--task", "pose", "--no-dr", "--envs", "32", "--episode-steps", str(EPISODE_STEPS), "--seed", "0",
    "--set", "n_steps=16", "--set", "batch_size=256", "--set", "hidden=[64, 64]", "--set", "learning_rate=0.003",
    "--set", "n_epochs=10", "--set", "gamma=0.9", "--set", "log_std_init=-0.5", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pose"
    # 75 k steps (~39 s here): the trained error is 0.69 x a random policy's (150 k steps took 80 s of the suite)
    assert main(["train", *TINY, "--minutes", "10", "--max-steps", str(TINY_STEPS), "--out", str(out)]) == 0
    return out


def test_tiny_budget_learns_the_pose_task(trained_run: Path) -> None:
    rng = np.random.default_rng(0)

    def random_policy(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1, 1, (len(obs), 16))

    kwargs = {"dr": False, "episodes": 32, "episode_steps": EPISODE_STEPS, "seed": 7}
    trained = evaluate(load_policy(trained_run / "latest.pt"), **kwargs)
    random = evaluate(random_policy, "pose", **kwargs)
    assert trained.final_joint_error_rad is not None and random.final_joint_error_rad is not None
    assert trained.final_joint_error_rad < 0.85 * random.final_joint_error_rad, (trained, random)


def test_run_folder_has_checkpoints_metrics_and_record(trained_run: Path) -> None:
    assert sorted((trained_run / "checkpoints").glob("step_*.pt"))
    rows = list(csv.DictReader((trained_run / "progress.csv").open()))
    errors = [float(row["task/final_joint_error_rad"]) for row in rows if row.get("task/final_joint_error_rad")]
    assert len(errors) > 5
    assert list(trained_run.glob("events.out.tfevents.*"))
    record = json.loads((trained_run / "run.json").read_text())
    assert record["task"] == "pose" and record["steps"] >= TINY_STEPS and record["wall_s"] > 0


def test_resume_continues_the_step_counter(trained_run: Path) -> None:
    before = load_checkpoint(trained_run / "latest.pt").num_timesteps
    resume = ["train", *TINY, "--minutes", "5", "--max-steps", "1024", "--out", str(trained_run), "--resume"]
    assert main([*resume, "--set", "ent_coef=0.005"]) == 0
    after = load_checkpoint(trained_run / "latest.pt")
    assert after.num_timesteps >= before + 1024
    # The optimization setting changed; the first command's other --set values are the run's own.
    hyper = json.loads(after.trainer_state["hyperparameters_json"])
    assert hyper["ent_coef"] == 0.005 and hyper["hidden"] == [64, 64]
    assert main([*resume, "--set", "hidden=[32]"]) == 2
    np.testing.assert_array_equal(after.obs_mean.shape, (57,))


def test_existing_run_is_not_overwritten_without_resume(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *TINY, "--minutes", "1", "--out", str(trained_run)]) == 2
    assert "--resume" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "handrail-checkpoint", "version": 1, "payload": _Payload()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="never through pickle"):
        load_checkpoint(path)
    (tmp_path / "garbage.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pt")
