"""``handrail vision eval``: the CNN and the fiducial baseline side by side on a held-out set, as a table or JSON."""

import json
from pathlib import Path

import pytest

from handrail.cli_vision import main
from handrail.vision.pose_eval import METHODS

PER_METHOD_KEYS = {
    "median_position_error_mm",
    "p95_position_error_mm",
    "median_rotation_error_deg",
    "p95_rotation_error_deg",
    "detection_rate",
    "ms_per_frame",
}


def test_eval_prints_both_methods_as_json_and_as_a_table(
    tiny_run: Path, heldout_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tiny_run / "pose_model.onnx"), "--data", str(heldout_dataset), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_frames"] == 16 and set(report["methods"]) == set(METHODS)
    for name in METHODS:
        metrics = report["methods"][name]
        assert PER_METHOD_KEYS <= set(metrics), name
        assert 0.0 <= metrics["detection_rate"] <= 1.0 and metrics["ms_per_frame"] > 0.0
    cnn = report["methods"]["cnn"]
    assert cnn["median_position_error_mm"] is None or cnn["median_position_error_mm"] >= 0.0
    assert main(["eval", str(tiny_run), "--data", str(heldout_dataset), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "cnn" in table and "fiducial" in table and "ms/frame" in table


def test_eval_refuses_the_training_data(tiny_run: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tiny_run), "--data", str(tiny_dataset), "--json"]) == 2
    assert "which the model was trained on" in capsys.readouterr().err
