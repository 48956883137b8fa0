"""Shared by the vision tests: the scene with the bundled hand, and one tiny render -> train -> export pipeline
per session (rendering needs ``MUJOCO_GL=egl`` headless, which the top-level conftest sets)."""

from pathlib import Path
from types import SimpleNamespace

import mujoco
import pytest

from handrail.robot.profile import load_profile
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile


@pytest.fixture(scope="session")
def scene_model() -> mujoco.MjModel:
    return build_scene_for_profile(load_profile())


@pytest.fixture
def home_data(scene_model: mujoco.MjModel) -> mujoco.MjData:
    """Fresh data at the ``home`` keyframe, forwarded: the cube at rest on the palm."""
    data = mujoco.MjData(scene_model)
    mujoco.mj_resetDataKeyframe(scene_model, data, scene_model.key(leap.HOME_KEYFRAME_NAME).id)
    mujoco.mj_forward(scene_model, data)
    return data


# --- The tiny render -> train -> export pipeline the pose-model tests share (one of each per session). ---

TINY_SIZE_PX = 64  # crop-view size of the tiny datasets (the real model uses 128)
TINY_N = 64
TINY_SHARD_SIZE = 32
HELDOUT_SEED = 1
TINY_TRAIN_ARGS = ("--epochs", "20", "--batch-size", "16", "--width", "8", "--threads", "1", "--no-progress")


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The tiny pipeline's settings, for the tests to compare against."""
    return SimpleNamespace(
        size_px=TINY_SIZE_PX,
        n=TINY_N,
        shard_size=TINY_SHARD_SIZE,
        heldout_seed=HELDOUT_SEED,
        train_args=TINY_TRAIN_ARGS,
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 renders from all three cameras at 64 px, seed 0, two shards, rendered in-process through the CLI."""
    from handrail.cli_vision import main

    out = tmp_path_factory.mktemp("vision") / "train_data"
    args = ["--n", str(TINY_N), "--size", str(TINY_SIZE_PX), "--shard-size", str(TINY_SHARD_SIZE), "--camera", "all"]
    assert main(["render", *args, "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def heldout_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 renders with another seed, rendered by two spawned workers (two shards of 8)."""
    from handrail.cli_vision import main

    out = tmp_path_factory.mktemp("vision") / "heldout_data"
    args = ["--n", "16", "--size", str(TINY_SIZE_PX), "--shard-size", "8", "--camera", "all", "--workers", "2"]
    assert main(["render", *args, "--seed", str(HELDOUT_SEED), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pose model trained for 20 tiny epochs (60 steps, width 8) on ``tiny_dataset`` and exported."""
    from handrail.cli_vision import main

    out = tmp_path_factory.mktemp("vision") / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(out), *TINY_TRAIN_ARGS]) == 0
    return out
