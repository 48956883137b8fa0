"""The cube's pose in the hand frame from one or more cameras, with the pose model on onnxruntime.

No torch here (the robot side runs this): onnxruntime, OpenCV and numpy only.

Per camera (known intrinsics, ``T_hand_camera`` 4x4 with an OpenCV camera frame): the frame is resampled
into the model's crop view (:mod:`handrail.vision.crop_view`), the model gives ``T_crop_cube`` and a
confidence, and ``T_hand_cube = T_hand_camera @ T_camera_crop @ T_crop_cube``. All cameras' crops go through
the model as one batch.

Fusion (:func:`fuse`): estimates below ``min_confidence`` are dropped; of the rest, the largest group that
agrees with one member within ``max_position_disagreement_m`` and ``max_rotation_disagreement_deg`` wins (by
total confidence; a lone camera against another that disagrees loses if its confidence is lower), the others
are rejected as outliers; the winners are averaged with their confidences as weights (positions
arithmetically, orientations as the principal eigenvector of the weighted sum of q q^T, which is blind to
q / -q). The fused estimate carries the **oldest** contributing frame's timestamp, so its age is never
understated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from handrail.vision.camera import Frame, Intrinsics
from handrail.vision.crop_view import CropWarper
from handrail.vision.pose_model_file import (
    INPUT_NAME,
    OUTPUT_NAMES,
    PoseModelError,
    PoseModelMetadata,
    metadata_from_custom_map,
    resolve_model_path,
)
from handrail.vision.transforms import matrix_from_quat_wxyz, pose_matrix, quat_wxyz_from_matrix, rotation_angle_deg


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class CameraCubeEstimate:
    """One camera's estimate: the cube in that camera's frame and in the hand frame.

    ``T_camera_cube``, ``T_hand_cube``: (4, 4); ``confidence`` in (0, 1); ``timestamp_s``: the frame's host
    monotonic time [s].
    """

    camera: str
    T_camera_cube: np.ndarray
    T_hand_cube: np.ndarray
    confidence: float
    timestamp_s: float


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class CubeInHandEstimate:
    """The fused cube pose in the hand frame.

    Attributes:
        position_m: (3,) cube centre in the hand frame [m].
        quat_wxyz: (4,) cube orientation in the hand frame, w >= 0.
        confidence: the highest confidence among the cameras used.
        timestamp_s: host monotonic time [s] of the oldest frame used.
        cameras_used: cameras whose estimates were averaged.
        cameras_rejected: cameras dropped for low confidence or as outliers.
        per_camera: every camera's own estimate.
    """

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    confidence: float
    timestamp_s: float
    cameras_used: tuple[str, ...]
    cameras_rejected: tuple[str, ...]
    per_camera: tuple[CameraCubeEstimate, ...]

    @property
    def T_hand_cube(self) -> np.ndarray:
        return pose_matrix(matrix_from_quat_wxyz(self.quat_wxyz), self.position_m)

    def age_s(self, now_s: float | None = None) -> float:
        """Seconds since the oldest frame used was taken (``now_s``: a ``time.monotonic()`` reading)."""
        return (time.monotonic() if now_s is None else now_s) - self.timestamp_s


@dataclasses.dataclass(frozen=True)
class FusionLimits:
    """When estimates count: minimum confidence, and how far two may differ and still agree."""

    min_confidence: float = 0.2
    max_position_disagreement_m: float = 0.015
    max_rotation_disagreement_deg: float = 20.0


class PoseEstimator:
    """Runs a pose model file on frames from cameras registered with :meth:`add_camera`.

    Args:
        model: the ONNX file (or a training run folder holding ``pose_model.onnx``).
        threads: onnxruntime intra-op threads (1: one CPU core).
        limits: fusion thresholds.

    Raises:
        PoseModelError: the file is missing, is not a pose model, or its inputs and outputs break the contract.
    """

    def __init__(self, model: str | Path, *, threads: int = 1, limits: FusionLimits = FusionLimits()) -> None:
        import onnxruntime

        self.path = resolve_model_path(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.metadata: PoseModelMetadata = metadata_from_custom_map(
            dict(self._session.get_modelmeta().custom_metadata_map), str(self.path)
        )
        self._check_io()
        self.limits = limits
        self._cameras: dict[str, tuple[CropWarper, np.ndarray]] = {}

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the model's input images (its crop view)."""
        return self.metadata.intrinsics

    def add_camera(self, name: str, intrinsics: Intrinsics, T_hand_camera: np.ndarray) -> None:
        """Register a camera: its calibrated intrinsics (distortion included) and its pose in the hand frame.

        Raises:
            ValueError: the crop view's aim point is not in front of this camera.
        """
        T_hand_camera = np.asarray(T_hand_camera, dtype=float)
        warper = self.metadata.crop_view.warper(intrinsics, T_hand_camera)
        T_hand_crop = T_hand_camera @ pose_matrix(warper.R_camera_crop, np.zeros(3))
        self._cameras[name] = (warper, T_hand_crop)

    def crop(self, name: str, image_rgb: np.ndarray) -> np.ndarray:
        """A registered camera's frame resampled into the model's input (S, S, 3) uint8."""
        return self._camera(name)[0].warp(image_rgb)

    def predict_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Raw model outputs for crop-view images (n, S, S, 3) uint8: ``position_m`` (n, 3) and ``quat_wxyz``
        (n, 4) in the crop camera frame, ``confidence`` (n,)."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        size = self.metadata.input_size_px
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"pose estimator: crops must be (n, {size}, {size}, 3) uint8, got {crops.shape}")
        outputs = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: crops})
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))

    def estimate(self, frames: Mapping[str, Frame]) -> CubeInHandEstimate | None:
        """The fused cube pose in the hand frame from one frame per registered camera (name -> frame);
        ``None`` when no camera's estimate reaches ``min_confidence``.

        Raises:
            PoseModelError: a frame comes from a camera that was not registered.
        """
        if not frames:
            return None
        names = list(frames)
        crops = np.stack([self.crop(name, frames[name].image) for name in names])
        outputs = self.predict_crops(crops)
        estimates = []
        for row, name in enumerate(names):
            T_crop_cube = pose_matrix(matrix_from_quat_wxyz(outputs["quat_wxyz"][row]), outputs["position_m"][row])
            T_hand_crop = self._cameras[name][1]
            warper = self._cameras[name][0]
            estimates.append(
                CameraCubeEstimate(
                    camera=name,
                    T_camera_cube=pose_matrix(warper.R_camera_crop, np.zeros(3)) @ T_crop_cube,
                    T_hand_cube=T_hand_crop @ T_crop_cube,
                    confidence=float(outputs["confidence"][row]),
                    timestamp_s=frames[name].timestamp_s,
                )
            )
        return fuse(estimates, self.limits)

    def _camera(self, name: str) -> tuple[CropWarper, np.ndarray]:
        if name not in self._cameras:
            raise PoseModelError(f"pose estimator: no camera {name!r} registered; registered: {sorted(self._cameras)}")
        return self._cameras[name]

    def _check_io(self) -> None:
        size = self.metadata.input_size_px
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        problems = []
        if set(inputs) != {INPUT_NAME}:
            problems.append(f"inputs {sorted(inputs)} (want [{INPUT_NAME!r}])")
        elif inputs[INPUT_NAME].type != "tensor(uint8)" or list(inputs[INPUT_NAME].shape[1:]) != [size, size, 3]:
            problems.append(
                f"input {inputs[INPUT_NAME].type} {inputs[INPUT_NAME].shape} (want uint8 [batch, {size}, {size}, 3])"
            )
        if outputs != set(OUTPUT_NAMES):
            problems.append(f"outputs {sorted(outputs)} (want {list(OUTPUT_NAMES)})")
        if problems:
            raise PoseModelError(f"{self.path}: breaks the pose-model contract: " + "; ".join(problems))


def fuse(estimates: Sequence[CameraCubeEstimate], limits: FusionLimits = FusionLimits()) -> CubeInHandEstimate | None:
    """Fuse per-camera estimates in the hand frame (see the module docstring); ``None`` if none is confident."""
    confident = [e for e in estimates if e.confidence >= limits.min_confidence]
    if not confident:
        return None
    best_group: list[CameraCubeEstimate] = []
    best_score = (-1.0, 0)
    for anchor in confident:
        group = [e for e in confident if _agree(anchor, e, limits)]
        score = (sum(e.confidence for e in group), len(group))
        if score > best_score:
            best_group, best_score = group, score
    weights = np.array([e.confidence for e in best_group])
    weights = weights / weights.sum()
    position_m = np.sum([w * e.T_hand_cube[:3, 3] for w, e in zip(weights, best_group, strict=True)], axis=0)
    quats = np.array([quat_wxyz_from_matrix(e.T_hand_cube[:3, :3]) for e in best_group])
    scatter = (weights[:, None] * quats).T @ quats  # (4, 4), the same for q and -q
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    quat_wxyz = eigenvectors[:, np.argmax(eigenvalues)]
    quat_wxyz = quat_wxyz if quat_wxyz[0] >= 0 else -quat_wxyz
    used = {e.camera for e in best_group}
    return CubeInHandEstimate(
        position_m=position_m,
        quat_wxyz=quat_wxyz,
        confidence=float(max(e.confidence for e in best_group)),
        timestamp_s=min(e.timestamp_s for e in best_group),
        cameras_used=tuple(e.camera for e in best_group),
        cameras_rejected=tuple(e.camera for e in estimates if e.camera not in used),
        per_camera=tuple(estimates),
    )


def _agree(a: CameraCubeEstimate, b: CameraCubeEstimate, limits: FusionLimits) -> bool:
    distance_m = float(np.linalg.norm(a.T_hand_cube[:3, 3] - b.T_hand_cube[:3, 3]))
    angle_deg = rotation_angle_deg(a.T_hand_cube[:3, :3], b.T_hand_cube[:3, :3])
    return distance_m <= limits.max_position_disagreement_m and angle_deg <= limits.max_rotation_disagreement_deg
