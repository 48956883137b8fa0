"""The committed pose model: its record beside it says how it was made and how well it does, and is true.

The record (``vision/models/cube_pose.json``) names the model file's SHA-256, the commands that produced it,
the training run's facts and the held-out evaluation (CNN and ArUco baseline side by side). These tests check
that the record describes *this* file, that the file keeps the pose-model contract on onnxruntime, and that
the held-out set of the evaluation was rendered with seeds the model never trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from handrail.vision.pose_estimator import PoseEstimator
from handrail.vision.pose_model_file import bundled_pose_model_path


@pytest.fixture(scope="module")
def model_path() -> Path:
    return bundled_pose_model_path()


@pytest.fixture(scope="module")
def record(model_path: Path) -> dict:
    return json.loads(model_path.with_suffix(".json").read_text())


def test_the_record_describes_this_file(model_path: Path, record: dict) -> None:
    assert record["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert model_path.stat().st_size < 8_000_000  # "small: a few MB"
    commands = " ".join(record["produced_by"])
    for step in ("handrail vision render", "handrail vision train", "handrail vision eval"):
        assert step in commands
    assert record["training"]["wall_seconds"] > 0 and record["training"]["training_data"]["n"] > 0


def test_the_record_reports_the_cnn_beside_the_baseline(record: dict) -> None:
    methods = record["eval"]["methods"]
    assert {"cnn", "fiducial"} <= set(methods)
    for name in ("cnn", "fiducial"):
        for key in ("median_position_error_mm", "median_rotation_error_deg", "detection_rate", "ms_per_frame"):
            assert np.isfinite(methods[name][key]), (name, key)
    assert record["eval"]["n_frames"] >= 1000


def test_the_held_out_seed_was_never_trained_on(model_path: Path, record: dict) -> None:
    estimator = PoseEstimator(model_path)  # also: the file keeps the pose-model contract
    trained_seeds = {seed for seed, _, _ in estimator.metadata.training_seed_ranges}
    assert trained_seeds, "the model file does not say which seeds it was trained on"
    assert record["eval"]["heldout_seed"] not in trained_seeds


def test_the_model_runs_on_one_core_on_a_crop(model_path: Path) -> None:
    estimator = PoseEstimator(model_path, threads=1)
    size = estimator.metadata.input_size_px
    crops = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    outputs = estimator.predict_crops(crops)
    assert outputs["position_m"].shape == (2, 3) and outputs["quat_wxyz"].shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(outputs["quat_wxyz"], axis=1), 1.0, atol=1e-4)
    assert ((outputs["confidence"] >= 0) & (outputs["confidence"] <= 1)).all()
