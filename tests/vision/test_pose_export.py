"""The exported pose model file: the contract's inputs, outputs and metadata; onnxruntime computes torch's network."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from handrail.cli_vision import main
from handrail.vision.dataset import load_samples
from handrail.vision.pose_checkpoint import load_pose_checkpoint, net_from_checkpoint
from handrail.vision.pose_export import PoseExportError, _parity, run_onnx
from handrail.vision.pose_model import ExportablePoseNet, PoseNet, PoseNetConfig
from handrail.vision.pose_model_file import POSE_MODEL_METADATA_KEY


def test_the_file_follows_the_pose_model_contract(tiny_run: Path, tiny: SimpleNamespace) -> None:
    model = onnx.load(tiny_run / "pose_model.onnx")
    onnx.checker.check_model(model)
    (image,) = model.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", tiny.size_px, tiny.size_px, 3]
    assert [o.name for o in model.graph.output] == ["position_m", "quat_wxyz", "confidence"]
    metadata = json.loads({p.key: p.value for p in model.metadata_props}[POSE_MODEL_METADATA_KEY])
    assert metadata["object"] == {"name": "cube", "size_m": 0.06}
    assert metadata["input"]["dtype"] == "uint8" and metadata["normalization"]["inside_graph"]
    assert metadata["intrinsics"]["width"] == tiny.size_px and metadata["crop_view"]["fov_deg"] == 28.0
    assert metadata["training_data"]["seed_ranges"] == [[0, 0, tiny.n]]
    assert metadata["training_data"]["cameras"] == ["cam_top", "cam_side", "cam_front"]
    exponent = load_pose_checkpoint(tiny_run)["network"]["confidence_exponent"]
    assert metadata["network"]["confidence_exponent"] == exponent > 0.0  # the calibrated confidence is exported
    assert (tiny_run / "pose_model.onnx").stat().st_size < 5e6


def test_onnxruntime_matches_torch_on_renders(tiny_run: Path, tiny_dataset: Path) -> None:
    net = net_from_checkpoint(load_pose_checkpoint(tiny_run))
    images = load_samples(tiny_dataset, limit=16)["images"]
    onnx_outputs = run_onnx(tiny_run / "pose_model.onnx", images)
    with torch.no_grad():
        position_m, quat_wxyz, confidence = (t.numpy() for t in ExportablePoseNet(net)(torch.from_numpy(images)))
    np.testing.assert_allclose(onnx_outputs["position_m"], position_m, atol=1e-5)
    np.testing.assert_allclose(np.abs(onnx_outputs["quat_wxyz"]), np.abs(quat_wxyz), atol=1e-4)
    np.testing.assert_allclose(onnx_outputs["confidence"], confidence, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(onnx_outputs["quat_wxyz"], axis=1), 1.0, atol=1e-5)


def test_the_parity_check_catches_a_different_network(tiny_run: Path, tiny_dataset: Path) -> None:
    checkpoint = load_pose_checkpoint(tiny_run)
    torch.manual_seed(123)
    other = PoseNet(PoseNetConfig(**checkpoint["network"])).eval()
    images = load_samples(tiny_dataset, limit=4)["images"]
    with pytest.raises(PoseExportError, match="disagree"):
        _parity(other, tiny_run / "pose_model.onnx", images)


def test_export_through_the_cli(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again.onnx"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    assert "onnxruntime vs torch" in capsys.readouterr().out
    assert out.is_file() and not out.with_name("again.onnx.partial").exists()
