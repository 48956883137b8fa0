"""Pose-model checkpoints (read with ``torch.load(weights_only=True)``) and batch inference with torch.

A checkpoint is a plain dict: ``format``, ``version``, ``network`` (the :class:`PoseNetConfig` as a dict),
``model_state`` and ``optimizer_state`` (state dicts), ``epoch``, ``step``, ``elapsed_s`` (training wall time
so far [s]) and ``info_json`` (the run's facts as JSON: config, crop view, training-data summary). Nothing in it
is a pickled object, so loading someone else's checkpoint cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handrail.errors import HandrailError
from handrail.vision.pose_model import PoseNet, PoseNetConfig, rotation_from_quat_wxyz

CHECKPOINT_FORMAT = "handrail-pose-checkpoint"
CHECKPOINT_VERSION = 1


class PoseCheckpointError(HandrailError):
    """A pose checkpoint is missing, unreadable, or not one of ours."""


def load_pose_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as a dict, read with ``torch.load(weights_only=True)`` (no code runs from the file).

    Raises:
        PoseCheckpointError: missing, unreadable, or not a pose checkpoint of this version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise PoseCheckpointError(f"{path}: no pose checkpoint — train one with `handrail vision train`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a bad file
        raise PoseCheckpointError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise PoseCheckpointError(f"{path}: not a pose-model checkpoint (format {CHECKPOINT_FORMAT!r})")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise PoseCheckpointError(
            f"{path}: checkpoint version {checkpoint.get('version')!r}; this handrail reads {CHECKPOINT_VERSION}"
        )
    return checkpoint


def net_from_checkpoint(checkpoint: dict[str, Any]) -> PoseNet:
    """The network of a checkpoint, in eval mode."""
    net = PoseNet(PoseNetConfig(**checkpoint["network"]))
    net.load_state_dict(checkpoint["model_state"])
    return net.eval()


def predict(net: PoseNet, images: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Position (n, 3) [m], rotation (n, 3, 3) and confidence (n,) for uint8 images (n, S, S, 3), eval mode."""
    was_training = net.training
    net.eval()
    positions, rotations, confidences = [], [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            position_m, rotation, confidence = net(torch.from_numpy(images[start : start + batch_size]))
            positions.append(position_m.numpy())
            rotations.append(rotation.numpy())
            confidences.append(confidence.numpy())
    net.train(was_training)
    return {
        "position_m": np.concatenate(positions),
        "rotation": np.concatenate(rotations),
        "confidence": np.concatenate(confidences),
    }


def pose_errors(
    net: PoseNet, images: np.ndarray, position_m: np.ndarray, quat_wxyz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position error [mm] (n,), rotation error [deg] (n,) and confidence (n,) of ``net`` on labelled images."""
    predicted = predict(net, images)
    position_error_mm = 1000.0 * np.linalg.norm(predicted["position_m"] - position_m, axis=1)
    true_rotation = rotation_from_quat_wxyz(torch.from_numpy(np.asarray(quat_wxyz, dtype=np.float32))).numpy()
    relative = np.einsum("nji,njk->nik", predicted["rotation"], true_rotation)
    cosine = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return position_error_mm, np.degrees(np.arccos(cosine)), predicted["confidence"]


def save_pose_checkpoint(
    net: PoseNet,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    info: dict[str, Any],
    path: Path,
    latest_path: Path,
) -> None:
    """Write the checkpoint to ``path`` and ``latest_path`` (each written, then renamed: never half a file).

    ``state``: ``epoch``, ``step``, ``elapsed_s``; ``info``: JSON-able facts of the run.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "network": net.config.as_dict(),
        "model_state": net.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "epoch": int(state["epoch"]),
        "step": int(state["step"]),
        "elapsed_s": float(state["elapsed_s"]),
        "info_json": json.dumps(info, default=str),
    }
    for target in (path, latest_path):
        partial = target.with_name(target.name + ".partial")
        torch.save(checkpoint, partial)
        partial.replace(target)
