"""Held-out evaluation of the pose CNN beside the fiducial baseline: ``handrail vision eval MODEL --data DIR``.

Both methods see the same stored crop-view images with the same intrinsics (the baseline is given the crop
view's K; at full camera resolution it sees about twice as many pixels per millimetre and does better — see
``tests/vision/test_fiducial.py``). Per method: detection rate (CNN: confidence >= ``min_confidence``;
baseline: a marker pose found), median and 95th-percentile position error [mm] and rotation error [deg]
over the frames it detected, and the median wall time per frame [ms] on one CPU core (onnxruntime with one
intra-op thread, batch 1; OpenCV with one thread). The CNN answers on every frame, so its ``all_frames``
errors (confident or not) are reported too. ``common`` compares both on the frames both detected,
since the baseline tends to detect only the easy ones.

Refuses a held-out set that shares seeds with the model's training data, or whose images do not have the
model's input intrinsics.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from handrail.vision.dataset import DatasetError, check_disjoint, load_samples, read_manifest
from handrail.vision.fiducial import FiducialCubePoseEstimator
from handrail.vision.pose_estimator import FusionLimits, PoseEstimator
from handrail.vision.transforms import matrix_from_quat_wxyz, rotation_angle_deg

METHODS = ("cnn", "fiducial")
_WARMUP_FRAMES = 3


@dataclasses.dataclass(frozen=True)
class PoseEvalReport:
    """Per-method metrics (:data:`METHODS`), and both methods on the frames both detected."""

    model: str
    data: str
    n_frames: int
    methods: dict[str, dict[str, Any]]
    common: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        lines = [
            f"pose evaluation on {self.n_frames} held-out frames of {self.data}",
            f"model {self.model}",
            "",
            f"{'method':10s} {'detected':>9s} {'pos median':>11s} {'pos p95':>9s} {'rot median':>11s} {'rot p95':>9s} "
            f"{'ms/frame':>9s}",
        ]
        for name, m in self.methods.items():
            lines.append(
                f"{name:10s} {100 * m['detection_rate']:8.1f}% {_mm(m['median_position_error_mm']):>11s} "
                f"{_mm(m['p95_position_error_mm']):>9s} {_deg(m['median_rotation_error_deg']):>11s} "
                f"{_deg(m['p95_rotation_error_deg']):>9s} {m['ms_per_frame']:9.2f}"
            )
        every = self.methods["cnn"]["all_frames"]
        lines.append(
            f"{'cnn, all':10s} {100.0:8.1f}% {_mm(every['median_position_error_mm']):>11s} "
            f"{_mm(every['p95_position_error_mm']):>9s} {_deg(every['median_rotation_error_deg']):>11s} "
            f"{_deg(every['p95_rotation_error_deg']):>9s}"
        )
        lines.append("")
        lines.append(f"on the {self.common['n_frames']} frames both detected (median position, rotation):")
        for name in self.methods:
            position, rotation = (
                self.common[name]["median_position_error_mm"],
                self.common[name]["median_rotation_error_deg"],
            )
            lines.append(f"  {name:10s} {_mm(position):>11s} {_deg(rotation):>11s}")
        lines.append("ms/frame: one CPU core (onnxruntime / OpenCV with one thread), batch 1, median over frames")
        return "\n".join(lines)


def evaluate_pose_model(
    model: str | Path,
    data: str | Path,
    *,
    limit: int | None = None,
    min_confidence: float = FusionLimits.min_confidence,
    progress: bool = True,
) -> PoseEvalReport:
    """Evaluate the pose model file ``model`` and the fiducial baseline on the held-out dataset ``data``.

    Raises:
        DatasetError: the held-out set shares seeds with the training data, has other intrinsics, or is
            incomplete.
        PoseModelError: the model file is missing or not a pose model.
    """
    estimator = PoseEstimator(model, threads=1, limits=FusionLimits(min_confidence=min_confidence))
    manifest = read_manifest(data)
    check_disjoint(estimator.metadata.training_seed_ranges, manifest)
    if manifest.intrinsics != estimator.intrinsics:
        raise DatasetError(
            f"{manifest.folder}: images have intrinsics {manifest.intrinsics}, the model takes "
            f"{estimator.intrinsics} — render the held-out set with the model's --size (and crop view)"
        )
    samples = load_samples(data, limit)
    images = samples["images"]
    true_rotations = [matrix_from_quat_wxyz(q) for q in samples["quat_wxyz"]]

    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        cnn = _run_cnn(estimator, images, progress)
        fiducial = _run_fiducial(FiducialCubePoseEstimator(manifest.intrinsics), images, progress)
    finally:
        cv2.setNumThreads(previous_threads)

    results = {}
    errors = {}
    for name, (positions, rotations, detected, ms) in (("cnn", cnn), ("fiducial", fiducial)):
        position_mm = 1000.0 * np.linalg.norm(positions - samples["position_m"], axis=1)
        rotation_deg = np.array(
            [
                rotation_angle_deg(r, t) if ok else np.nan
                for r, t, ok in zip(rotations, true_rotations, detected, strict=True)
            ]
        )
        position_mm[~detected] = np.nan
        errors[name] = (position_mm, rotation_deg, detected)
        results[name] = {
            "n_frames": len(images),
            "n_detected": int(detected.sum()),
            "detection_rate": float(detected.mean()),
            **_stats(position_mm[detected], rotation_deg[detected]),
            "ms_per_frame": float(np.median(ms)),
            "frames_per_s": float(1000.0 / np.median(ms)),
        }
        if name == "cnn":  # the CNN always answers: its errors on every frame, confident or not
            every_mm = 1000.0 * np.linalg.norm(positions - samples["position_m"], axis=1)
            every_deg = np.array([rotation_angle_deg(r, t) for r, t in zip(rotations, true_rotations, strict=True)])
            results[name]["all_frames"] = _stats(every_mm, every_deg)
    both = errors["cnn"][2] & errors["fiducial"][2]
    common: dict[str, Any] = {"n_frames": int(both.sum())}
    for name, (position_mm, rotation_deg, _) in errors.items():
        common[name] = {
            "median_position_error_mm": _median(position_mm[both]),
            "median_rotation_error_deg": _median(rotation_deg[both]),
        }
    return PoseEvalReport(str(estimator.path), str(manifest.folder), len(images), results, common)


def _run_cnn(
    estimator: PoseEstimator, images: np.ndarray, progress: bool
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    for _ in range(_WARMUP_FRAMES):
        estimator.predict_crops(images[:1])
    positions, rotations, confidences, ms = [], [], [], []
    for index in tqdm(range(len(images)), desc="cnn", unit="img", disable=not progress):
        started = time.perf_counter()
        outputs = estimator.predict_crops(images[index : index + 1])
        ms.append(1000.0 * (time.perf_counter() - started))
        positions.append(outputs["position_m"][0])
        rotations.append(matrix_from_quat_wxyz(outputs["quat_wxyz"][0]))
        confidences.append(float(outputs["confidence"][0]))
    detected = np.array(confidences) >= estimator.limits.min_confidence
    return np.array(positions), rotations, detected, np.array(ms)


def _run_fiducial(
    baseline: FiducialCubePoseEstimator, images: np.ndarray, progress: bool
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    positions, rotations, detected, ms = [], [], [], []
    for image in tqdm(images, desc="fiducial", unit="img", disable=not progress):
        started = time.perf_counter()
        estimate = baseline.estimate(image)
        ms.append(1000.0 * (time.perf_counter() - started))
        detected.append(estimate is not None)
        positions.append(estimate.position_m if estimate is not None else np.full(3, np.nan))
        rotations.append(estimate.T_camera_cube[:3, :3] if estimate is not None else np.eye(3))
    return np.array(positions), rotations, np.array(detected, dtype=bool), np.array(ms)


def _stats(position_mm: np.ndarray, rotation_deg: np.ndarray) -> dict[str, float | None]:
    return {
        "median_position_error_mm": _median(position_mm),
        "p95_position_error_mm": _percentile(position_mm, 95),
        "median_rotation_error_deg": _median(rotation_deg),
        "p95_rotation_error_deg": _percentile(rotation_deg, 95),
    }


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} mm"


def _deg(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} deg"
