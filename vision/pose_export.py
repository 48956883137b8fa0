"""ONNX export of a pose checkpoint, per the pose-model contract (:mod:`handrail.vision.pose_model_file`).

:func:`export_pose_model` traces :class:`~handrail.vision.pose_model.ExportablePoseNet` (uint8 NHWC images in;
``position_m``, ``quat_wxyz``, ``confidence`` out; batch dimension dynamic), writes the metadata, runs
``onnx.checker`` and proves the file computes the checkpoint's network: onnxruntime against torch on the given
images and on random ones. A failed check deletes the partial file and raises :class:`PoseExportError`; the
output appears only complete (written, then renamed).

Exporter: torch's TorchScript-based one (``dynamo=False``), as for policies (:mod:`handrail.sim.export`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from handrail.errors import HandrailError
from handrail.vision.crop_view import CropView
from handrail.vision.pose_checkpoint import load_pose_checkpoint, net_from_checkpoint
from handrail.vision.pose_model import (
    CONFIDENCE_POSITION_SCALE_M,
    CONFIDENCE_ROTATION_SCALE_RAD,
    IMAGE_MEAN,
    IMAGE_STD,
    ExportablePoseNet,
    PoseNet,
)
from handrail.vision.pose_model_file import (
    INPUT_NAME,
    OUTPUT_NAMES,
    POSE_MODEL_METADATA_KEY,
    PoseModelMetadata,
)
from handrail.vision.render_config import CUBE_EDGE_M

OPSET_VERSION = 17
POSITION_ATOL_M = 1e-5  # 0.01 mm
QUAT_ATOL = 1e-4
CONFIDENCE_ATOL = 1e-4
RANDOM_PARITY_IMAGES = 4


class PoseExportError(HandrailError):
    """A pose model could not be exported, or the exported file does not compute the checkpoint's network."""


@dataclasses.dataclass(frozen=True)
class PoseExportReport:
    path: Path
    parity_images: int
    max_position_diff_m: float
    max_quat_diff: float
    max_confidence_diff: float
    size_bytes: int


def export_pose_model(
    checkpoint_path: str | Path, out_path: str | Path, *, parity_images: np.ndarray | None = None, seed: int = 0
) -> PoseExportReport:
    """Export the checkpoint (file or run folder) to ``out_path``; see the module docstring.

    ``parity_images``: (n, S, S, 3) uint8 images to compare torch and onnxruntime on (real renders exercise
    the network where it matters); random images are always added.

    Raises:
        PoseExportError: the checker fails or onnxruntime and torch disagree beyond the tolerances.
        PoseCheckpointError: the checkpoint cannot be read.
    """
    checkpoint = load_pose_checkpoint(checkpoint_path)
    net = net_from_checkpoint(checkpoint)
    info = json.loads(checkpoint["info_json"])
    metadata = PoseModelMetadata(
        crop_view=CropView.from_dict(info["crop_view"]),
        object_name="cube",
        object_size_m=CUBE_EDGE_M,
        normalization={
            "inside_graph": True,
            "formula": "(x / 255 - mean) / std, per RGB channel",
            "mean": [IMAGE_MEAN] * 3,
            "std": [IMAGE_STD] * 3,
        },
        training_data=info["training_data"],
        training={
            "epochs": checkpoint["epoch"],
            "steps": checkpoint["step"],
            "wall_seconds": round(checkpoint["elapsed_s"], 1),
            "seed": info["config"]["seed"],
            "command": info.get("command"),
        },
        network={**info["network"], **checkpoint["network"]},
        confidence={
            "meaning": "predicted exp(-(position error / position_scale_m + rotation error / rotation_scale_deg))",
            "position_scale_m": CONFIDENCE_POSITION_SCALE_M,
            "rotation_scale_deg": float(np.degrees(CONFIDENCE_ROTATION_SCALE_RAD)),
        },
    )
    size = net.config.image_size
    if metadata.input_size_px != size:
        raise PoseExportError(f"checkpoint: network input {size} px but crop view {metadata.input_size_px} px")
    model = _export_graph(net)
    entry = model.metadata_props.add()
    entry.key, entry.value = POSE_MODEL_METADATA_KEY, metadata.to_json()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise PoseExportError(f"the exported pose graph fails onnx.checker: {error}") from error

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        onnx.save(model, partial)
        images = _parity_images(parity_images, size, seed)
        diffs = _parity(net, partial, images)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    return PoseExportReport(out_path, len(images), *diffs, size_bytes=out_path.stat().st_size)


def run_onnx(model_path: Path, images: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    """The file's outputs for uint8 images (n, S, S, 3), on onnxruntime's CPU provider."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    return dict(zip(OUTPUT_NAMES, outputs, strict=True))


def _export_graph(net: PoseNet) -> onnx.ModelProto:
    size = net.config.image_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            ExportablePoseNet(net).eval(),
            (torch.zeros(1, size, size, 3, dtype=torch.uint8),),
            buffer,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET_VERSION,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _parity_images(given: np.ndarray | None, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 256, size=(RANDOM_PARITY_IMAGES, size, size, 3), dtype=np.uint8)
    if given is None or not len(given):
        return random
    given = np.asarray(given, dtype=np.uint8)
    if given.shape[1:] != (size, size, 3):
        raise PoseExportError(f"parity images are {given.shape[1:]}, the network takes ({size}, {size}, 3)")
    return np.concatenate([given, random])


def _parity(net: PoseNet, model_path: Path, images: np.ndarray) -> tuple[float, float, float]:
    onnx_outputs = run_onnx(model_path, images)
    with torch.no_grad():
        torch_outputs = [t.numpy() for t in ExportablePoseNet(net).eval()(torch.from_numpy(images))]
    expected_shapes = {"position_m": (len(images), 3), "quat_wxyz": (len(images), 4), "confidence": (len(images),)}
    for name, shape in expected_shapes.items():
        if onnx_outputs[name].shape != shape:
            raise PoseExportError(f"the exported graph's {name} has shape {onnx_outputs[name].shape}, expected {shape}")
    position_diff = float(np.max(np.abs(onnx_outputs["position_m"] - torch_outputs[0])))
    # q and -q are one rotation; w >= 0 is canonical but a w near 0 may land on either side.
    quat_diff = float(
        np.max(
            np.minimum(
                np.abs(onnx_outputs["quat_wxyz"] - torch_outputs[1]).max(1),
                np.abs(onnx_outputs["quat_wxyz"] + torch_outputs[1]).max(1),
            )
        )
    )
    confidence_diff = float(np.max(np.abs(onnx_outputs["confidence"] - torch_outputs[2])))
    if position_diff > POSITION_ATOL_M or quat_diff > QUAT_ATOL or confidence_diff > CONFIDENCE_ATOL:
        raise PoseExportError(
            f"onnxruntime and torch disagree on {len(images)} images: position by {position_diff:.3g} m (limit "
            f"{POSITION_ATOL_M:g}), quaternion by {quat_diff:.3g} (limit {QUAT_ATOL:g}), confidence by "
            f"{confidence_diff:.3g} (limit {CONFIDENCE_ATOL:g}) — the exported graph is not the torch network"
        )
    return position_diff, quat_diff, confidence_diff
