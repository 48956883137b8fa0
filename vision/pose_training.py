"""Training the cube pose CNN on a synthetic dataset: ``handrail vision train --data DIR --out RUN``.

- data: a complete dataset (:mod:`handrail.vision.dataset`), held in memory as uint8 (50 000 samples at
  128 px are 2.5 GB); the last ``val_fraction`` of its samples are a validation split, never trained on;
- AdamW, batch 64, cosine learning-rate decay after a short warm-up, over ``--epochs`` or ``--minutes``
  (whichever ends first; both are totals for the run folder, so ``--resume`` continues towards them);
- online photometric augmentation on top of the renders' own randomization (brightness, contrast, per
  channel gain, noise); no geometric augmentation, which would change the labels;
- a progress bar; one row per epoch in ``RUN/metrics.csv`` (loss terms, median/95th-percentile validation
  errors); checkpoints ``RUN/checkpoints/epoch_<N>.pt`` and ``RUN/latest.pt``
  (:mod:`handrail.vision.pose_checkpoint`: plain dicts read with ``torch.load(weights_only=True)``);
- at the end the confidence's calibration exponent is fitted on the validation split (see
  :mod:`handrail.vision.pose_model`) and stored in ``latest.pt``;
- then the model is exported to ``RUN/pose_model.onnx`` (:mod:`handrail.vision.pose_export`, with the
  onnxruntime parity check) and ``RUN/run.json`` records the config, data, wall time and final metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from handrail.errors import HandrailError
from handrail.vision.dataset import Manifest, load_samples, read_manifest
from handrail.vision.pose_checkpoint import load_pose_checkpoint, pose_errors, save_pose_checkpoint
from handrail.vision.pose_model import (
    CONFIDENCE_POSITION_SCALE_M,
    CONFIDENCE_ROTATION_SCALE_RAD,
    IMAGE_MEAN,
    IMAGE_STD,
    LossWeights,
    PoseNet,
    PoseNetConfig,
    count_parameters,
    pose_loss,
    rotation_from_quat_wxyz,
)

METRICS_FIELDS = (
    "epoch",
    "step",
    "elapsed_s",
    "learning_rate",
    "train_loss",
    "train_loss_position",
    "train_loss_rotation",
    "train_loss_confidence",
    "val_position_error_mm_median",
    "val_position_error_mm_p95",
    "val_rotation_error_deg_median",
    "val_rotation_error_deg_p95",
    "val_confidence_mean",
)


class PoseTrainError(HandrailError):
    """A pose-model training run cannot start or continue."""


@dataclasses.dataclass(frozen=True)
class PoseTrainConfig:
    """One training run. ``epochs`` and ``minutes`` are totals for the run folder; at least one is needed.

    ``min_visible_fraction``: samples showing less of the cube than this share of the image's pixels get no
    pose loss (only a confidence target of 0). ``threads``: torch intra-op threads (0: torch's default).
    """

    data: Path
    out: Path
    epochs: int | None = None
    minutes: float | None = None
    seed: int = 0
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    width: int = 24
    val_fraction: float = 0.05
    min_visible_fraction: float = 0.002
    augment: bool = True
    threads: int = 0
    max_steps: int | None = None
    resume: bool = False
    export: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs is None and self.minutes is None and self.max_steps is None:
            raise PoseTrainError("vision train: give --epochs or --minutes (or both; the first reached ends the run)")
        if self.batch_size < 2:
            raise PoseTrainError(f"vision train: batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise PoseTrainError(f"vision train: val_fraction must be in [0, 0.5), got {self.val_fraction}")


@dataclasses.dataclass(frozen=True)
class PoseTrainResult:
    """What a run wrote, and its last metrics row."""

    out: Path
    latest_checkpoint: Path
    model_path: Path | None
    metrics: dict[str, float]
    epochs: int
    steps: int
    wall_seconds: float


@dataclasses.dataclass
class _Split:
    images: np.ndarray  # (n, S, S, 3) uint8
    position_m: np.ndarray  # (n, 3)
    quat_wxyz: np.ndarray  # (n, 4)
    visible: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.images)


def train_pose_model(config: PoseTrainConfig) -> PoseTrainResult:
    """Train (or resume) a pose model; see the module docstring for what is written where.

    Raises:
        PoseTrainError: no usable data, an existing run without ``resume``, or a checkpoint not of this kind.
        DatasetError: the dataset is missing or incomplete.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    latest_path = out / "latest.pt"
    if latest_path.exists() and not config.resume:
        raise PoseTrainError(f"{out}: holds a run already — pass --resume to continue it, or use another --out")
    manifest = read_manifest(config.data)
    train_split, val_split = _load_splits(manifest, config)
    net_config = PoseNetConfig(
        image_size=int(manifest.config["view"]["size_px"]),
        fov_deg=float(manifest.config["view"]["fov_deg"]),
        width=config.width,
        depth_reference_m=float(np.median(train_split.position_m[:, 2])),
    )
    torch.manual_seed(config.seed)
    state = {"epoch": 0, "step": 0, "elapsed_s": 0.0}
    if config.resume and latest_path.exists():
        checkpoint = load_pose_checkpoint(latest_path)
        net_config = PoseNetConfig(**checkpoint["network"])
        state = {key: checkpoint[key] for key in state}
    net = PoseNet(net_config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.resume and latest_path.exists():
        net.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])

    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    metrics_path = out / "metrics.csv"
    if not metrics_path.exists():
        with metrics_path.open("w", newline="") as file:
            csv.writer(file).writerow(METRICS_FIELDS)

    steps_per_epoch = max(1, len(train_split) // config.batch_size)
    total_steps = _total_steps(config, steps_per_epoch)
    info = _run_info(config, manifest, net_config, net)
    started_s = time.monotonic() - state["elapsed_s"]
    bar = tqdm(
        total=total_steps,
        initial=min(state["step"], total_steps or 0),
        unit="step",
        desc="train",
        disable=not config.progress,
    )
    last_row: dict[str, float] = {}
    try:
        while not _finished(config, state, started_s, total_steps):
            epoch = state["epoch"] + 1
            sums = _train_epoch(net, optimizer, train_split, config, epoch, state, started_s, total_steps, bar)
            state["epoch"] = epoch
            state["elapsed_s"] = time.monotonic() - started_s
            last_row = {
                "epoch": epoch,
                "step": state["step"],
                "elapsed_s": round(state["elapsed_s"], 2),
                "learning_rate": optimizer.param_groups[0]["lr"],
                **sums,
                **_validation_metrics(net, val_split),
            }
            with metrics_path.open("a", newline="") as file:
                csv.writer(file).writerow([last_row.get(name, "") for name in METRICS_FIELDS])
            bar.set_postfix(
                loss=f"{last_row['train_loss']:.3f}",
                val_mm=f"{last_row.get('val_position_error_mm_median', math.nan):.1f}",
            )
            save_pose_checkpoint(
                net, optimizer, state, info, out / "checkpoints" / f"epoch_{epoch:04d}.pt", latest_path
            )
    finally:
        bar.close()
    net.config = dataclasses.replace(net.config, confidence_exponent=_fit_confidence_exponent(net, val_split))
    final_path = out / "checkpoints" / f"epoch_{state['epoch']:04d}.pt"
    save_pose_checkpoint(net, optimizer, state, info, final_path, latest_path)

    model_path = None
    if config.export:
        from handrail.vision.pose_export import export_pose_model

        parity_images = val_split.images[:32] if len(val_split) else train_split.images[:32]
        model_path = export_pose_model(latest_path, out / "pose_model.onnx", parity_images=parity_images).path
    wall_seconds = time.monotonic() - started_s
    run = {**info, "epochs": state["epoch"], "steps": state["step"], "wall_seconds": round(wall_seconds, 1)}
    run["final_metrics"] = last_row
    run["confidence_exponent"] = net.config.confidence_exponent
    (out / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    return PoseTrainResult(out, latest_path, model_path, last_row, state["epoch"], state["step"], wall_seconds)


def _load_splits(manifest: Manifest, config: PoseTrainConfig) -> tuple[_Split, _Split]:
    samples = load_samples(manifest.folder)
    n = len(samples["images"])
    n_val = round(n * config.val_fraction)
    if n - n_val < config.batch_size:
        raise PoseTrainError(
            f"{manifest.folder}: {n - n_val} training samples, fewer than one batch of {config.batch_size} — "
            "render more or lower --batch-size"
        )
    size = samples["images"].shape[1]
    visible = samples["cube_visible_px"] >= config.min_visible_fraction * size * size

    def split(indices: slice) -> _Split:
        return _Split(
            samples["images"][indices],
            samples["position_m"][indices].astype(np.float32),
            samples["quat_wxyz"][indices].astype(np.float32),
            visible[indices],
        )

    return split(slice(0, n - n_val)), split(slice(n - n_val, n))


def _total_steps(config: PoseTrainConfig, steps_per_epoch: int) -> int | None:
    candidates = []
    if config.epochs is not None:
        candidates.append(config.epochs * steps_per_epoch)
    if config.max_steps is not None:
        candidates.append(config.max_steps)
    return min(candidates) if candidates else None


def _progress(config: PoseTrainConfig, step: int, elapsed_s: float, total_steps: int | None) -> float:
    """How far through the run [0, 1]: the furthest of steps and wall time against their budgets."""
    fractions = [0.0]
    if total_steps:
        fractions.append(step / total_steps)
    if config.minutes is not None:
        fractions.append(elapsed_s / (60.0 * config.minutes))
    return min(1.0, max(fractions))


def _finished(config: PoseTrainConfig, state: dict[str, Any], started_s: float, total_steps: int | None) -> bool:
    return _progress(config, state["step"], time.monotonic() - started_s, total_steps) >= 1.0


def _learning_rate(config: PoseTrainConfig, step: int, progress: float, total_steps: int | None) -> float:
    warmup = config.warmup_steps if total_steps is None else min(config.warmup_steps, max(1, total_steps // 10))
    ramp = min(1.0, (step + 1) / max(1, warmup))
    return config.learning_rate * ramp * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _augment(images_uint8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Normalized float (N, 3, H, W) with random brightness, contrast, channel gain and noise."""
    x = images_uint8.to(torch.float32).permute(0, 3, 1, 2) / 255.0
    n = x.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(0.8, 1.2, 1, 1, 1) + mean + uniform(-0.08, 0.08, 1, 1, 1)
    x = x * uniform(0.9, 1.1, 3, 1, 1)
    x = x + torch.randn(x.shape, generator=generator) * uniform(0.0, 0.02, 1, 1, 1)
    return (x.clamp(0.0, 1.0) - IMAGE_MEAN) / IMAGE_STD


def _train_epoch(
    net: PoseNet,
    optimizer: torch.optim.Optimizer,
    split: _Split,
    config: PoseTrainConfig,
    epoch: int,
    state: dict[str, Any],
    started_s: float,
    total_steps: int | None,
    bar: tqdm,
) -> dict[str, float]:
    net.train()
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(split), generator=generator).numpy()
    sums: dict[str, float] = {}
    batches = 0
    for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
        if _finished(config, state, started_s, total_steps):
            break
        index = np.sort(order[start : start + config.batch_size])
        images = torch.from_numpy(split.images[index])
        x = _augment(images, generator) if config.augment else PoseNet.normalize(images)
        position_m, rotation, confidence = net.forward_normalized(x)
        true_rotation = rotation_from_quat_wxyz(torch.from_numpy(split.quat_wxyz[index]))
        loss, terms = pose_loss(
            position_m,
            rotation,
            confidence,
            torch.from_numpy(split.position_m[index]),
            true_rotation,
            torch.from_numpy(split.visible[index]),
            LossWeights(),
        )
        progress = _progress(config, state["step"], time.monotonic() - started_s, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, state["step"], progress, total_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
        state["step"] += 1
        batches += 1
        bar.update(1)
        for name in ("loss", "loss/position", "loss/rotation", "loss/confidence"):
            key = "train_" + name.replace("/", "_")
            sums[key] = sums.get(key, 0.0) + float(terms[name])
    return {key: value / max(1, batches) for key, value in sums.items()}


def _validation_metrics(net: PoseNet, split: _Split) -> dict[str, float]:
    if not len(split):
        return {}
    position_mm, rotation_deg, confidence = pose_errors(net, split.images, split.position_m, split.quat_wxyz)
    seen = split.visible
    if not seen.any():
        return {"val_confidence_mean": float(confidence.mean())}
    return {
        "val_position_error_mm_median": float(np.median(position_mm[seen])),
        "val_position_error_mm_p95": float(np.percentile(position_mm[seen], 95)),
        "val_rotation_error_deg_median": float(np.median(rotation_deg[seen])),
        "val_rotation_error_deg_p95": float(np.percentile(rotation_deg[seen], 95)),
        "val_confidence_mean": float(confidence.mean()),
    }


def _fit_confidence_exponent(net: PoseNet, split: _Split) -> float:
    """The exponent e for which ``confidence ** e`` best predicts (cross-entropy) the confidence target on
    held-back samples; 1 without any."""
    if not len(split):
        return 1.0
    position_mm, rotation_deg, confidence = pose_errors(net, split.images, split.position_m, split.quat_wxyz)
    scale_mm, scale_deg = 1000.0 * CONFIDENCE_POSITION_SCALE_M, math.degrees(CONFIDENCE_ROTATION_SCALE_RAD)
    target = np.where(split.visible, np.exp(-(position_mm / scale_mm + rotation_deg / scale_deg)), 0.0)
    candidates = np.geomspace(0.25, 16.0, 49)
    losses = []
    for exponent in candidates:
        calibrated = np.clip(np.clip(confidence, 1e-6, 1.0) ** exponent, 1e-6, 1.0 - 1e-6)
        losses.append(-np.mean(target * np.log(calibrated) + (1.0 - target) * np.log(1.0 - calibrated)))
    return float(candidates[int(np.argmin(losses))])


def _run_info(config: PoseTrainConfig, manifest: Manifest, net_config: PoseNetConfig, net: PoseNet) -> dict[str, Any]:
    return {
        "command": shlex.join(sys.argv),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "network": {**net_config.as_dict(), "parameters": count_parameters(net)},
        "crop_view": manifest.config["view"],
        "training_data": manifest.summary(),
        "data_path": str(manifest.folder),
    }
