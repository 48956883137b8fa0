"""PoseEstimator: onnxruntime without torch, camera frames into the hand frame, fusion with outlier rejection."""

import subprocess
import sys
from pathlib import Path

import cv2
import mujoco
import numpy as np
import onnx
import pytest

from handrail.sim import leap
from handrail.vision.camera import Frame
from handrail.vision.pose_estimator import CameraCubeEstimate, FusionLimits, PoseEstimator, fuse
from handrail.vision.pose_model_file import PoseModelError
from handrail.vision.transforms import (
    T_world_body,
    T_world_site,
    invert_pose,
    matrix_from_quat_wxyz,
    pose_matrix,
    quat_wxyz_from_matrix,
    rotation_angle_deg,
)
from handrail.vision.virtual_camera import VirtualCamera

TWO_CAMERAS = ("cam_top", "cam_side")


def test_the_estimator_imports_without_torch() -> None:
    check = (
        "import sys, handrail.vision.pose_estimator, handrail.vision.pose_model_file, handrail.vision.crop_view\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "import torch\n"
        "assert 'torch' in sys.modules  # the check itself can fail\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _frames_from_scene(
    model: mujoco.MjModel, data: mujoco.MjData
) -> tuple[dict[str, Frame], dict[str, VirtualCamera], np.ndarray]:
    """One 320x240 frame per camera in TWO_CAMERAS, the cameras, and T_world_hand."""
    frames, cameras = {}, {}
    for name in TWO_CAMERAS:
        with VirtualCamera.from_scene_camera(model, data, name, width=320, height=240) as camera:
            frames[name] = camera.read()
            cameras[name] = camera
    return frames, cameras, T_world_site(model, data, leap.HAND_MOUNT_SITE_NAME)


def _estimator_for_scene(
    model_path: Path, cameras: dict[str, VirtualCamera], T_world_hand: np.ndarray, limits: FusionLimits
) -> PoseEstimator:
    estimator = PoseEstimator(model_path, limits=limits)
    for name, camera in cameras.items():
        estimator.add_camera(name, camera.intrinsics, invert_pose(T_world_hand) @ camera.T_world_camera())
    return estimator


def test_the_estimator_runs_the_exported_model_on_two_cameras(
    tiny_run: Path, scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    frames, cameras, T_world_hand = _frames_from_scene(scene_model, home_data)
    estimator = _estimator_for_scene(tiny_run, cameras, T_world_hand, FusionLimits(min_confidence=0.0))
    crop = estimator.crop("cam_top", frames["cam_top"].image)
    assert crop.shape == (estimator.metadata.input_size_px,) * 2 + (3,) and crop.dtype == np.uint8
    estimate = estimator.estimate(frames)
    assert estimate is not None
    assert estimate.position_m.shape == (3,) and np.isfinite(estimate.position_m).all()
    assert estimate.quat_wxyz.shape == (4,) and estimate.quat_wxyz[0] >= 0
    assert np.isclose(np.linalg.norm(estimate.quat_wxyz), 1.0)
    assert [e.camera for e in estimate.per_camera] == list(TWO_CAMERAS)
    assert set(estimate.cameras_used) | set(estimate.cameras_rejected) == set(TWO_CAMERAS)
    assert estimate.timestamp_s == min(frames[name].timestamp_s for name in estimate.cameras_used)
    assert 0.0 <= estimate.age_s() < 60.0
    for per_camera in estimate.per_camera:
        T_hand_camera = invert_pose(T_world_hand) @ cameras[per_camera.camera].T_world_camera()
        np.testing.assert_allclose(per_camera.T_hand_cube, T_hand_camera @ per_camera.T_camera_cube, atol=1e-9)
    with pytest.raises(PoseModelError, match="no camera 'cam_front' registered"):
        estimator.estimate({"cam_front": frames["cam_top"]})


def test_a_perfect_model_gives_the_true_cube_pose_in_the_hand_frame(
    tiny_run: Path, scene_model: mujoco.MjModel, home_data: mujoco.MjData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain crop -> camera -> hand, with the network replaced by the truth in each camera's crop frame."""
    frames, cameras, T_world_hand = _frames_from_scene(scene_model, home_data)
    estimator = _estimator_for_scene(tiny_run, cameras, T_world_hand, FusionLimits())
    T_hand_cube = invert_pose(T_world_hand) @ T_world_body(scene_model, home_data, leap.CUBE_BODY_NAME)
    view = estimator.metadata.crop_view
    truths = []
    for name in TWO_CAMERAS:
        T_hand_camera = invert_pose(T_world_hand) @ cameras[name].T_world_camera()
        truths.append(invert_pose(view.T_hand_crop(T_hand_camera)) @ T_hand_cube)

    def perfect(crops: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "position_m": np.array([T[:3, 3] for T in truths], dtype=np.float32),
            "quat_wxyz": np.array([quat_wxyz_from_matrix(T[:3, :3]) for T in truths], dtype=np.float32),
            "confidence": np.array([0.9, 0.8], dtype=np.float32),
        }

    monkeypatch.setattr(estimator, "predict_crops", perfect)
    estimate = estimator.estimate(frames)
    assert estimate is not None and estimate.cameras_used == TWO_CAMERAS
    np.testing.assert_allclose(estimate.position_m, T_hand_cube[:3, 3], atol=1e-6)
    assert rotation_angle_deg(matrix_from_quat_wxyz(estimate.quat_wxyz), T_hand_cube[:3, :3]) < 1e-3


def _estimate(camera: str, position_m: tuple[float, ...], angle_deg: float, confidence: float, t_s: float = 0.0):
    rotation, _ = cv2.Rodrigues(np.radians([0.0, 0.0, angle_deg]))
    T_hand_cube = pose_matrix(rotation, np.array(position_m))
    return CameraCubeEstimate(camera, T_hand_cube, T_hand_cube, confidence, t_s)


def test_fusion_averages_agreeing_cameras_by_confidence() -> None:
    fused = fuse([_estimate("a", (0.0, 0.0, 0.0), 0.0, 0.75, 1.0), _estimate("b", (0.004, 0.0, 0.0), 8.0, 0.25, 2.0)])
    assert fused is not None and fused.cameras_used == ("a", "b") and fused.cameras_rejected == ()
    np.testing.assert_allclose(fused.position_m, [0.001, 0.0, 0.0], atol=1e-12)
    assert abs(rotation_angle_deg(matrix_from_quat_wxyz(fused.quat_wxyz), np.eye(3)) - 2.0) < 0.05
    assert fused.timestamp_s == 1.0 and fused.confidence == 0.75


def test_fusion_rejects_the_outlier() -> None:
    cameras = [
        _estimate("top", (0.05, 0.0, 0.03), 10.0, 0.6),
        _estimate("side", (0.052, 0.001, 0.03), 12.0, 0.5),
        _estimate("front", (0.09, 0.0, 0.03), 10.0, 0.9),  # confident, but 4 cm off the other two
    ]
    fused = fuse(cameras)
    assert fused is not None and fused.cameras_used == ("top", "side") and fused.cameras_rejected == ("front",)
    flipped = [cameras[0], cameras[1], _estimate("front", (0.05, 0.0, 0.03), 100.0, 0.9)]  # 90 degrees off
    assert fuse(flipped).cameras_rejected == ("front",)


def test_fusion_of_two_disagreeing_cameras_keeps_the_more_confident() -> None:
    fused = fuse([_estimate("a", (0.0, 0.0, 0.0), 0.0, 0.3), _estimate("b", (0.05, 0.0, 0.0), 0.0, 0.7)])
    assert fused is not None and fused.cameras_used == ("b",) and fused.cameras_rejected == ("a",)
    np.testing.assert_allclose(fused.position_m, [0.05, 0.0, 0.0])


def test_fusion_without_a_confident_camera_gives_nothing() -> None:
    assert fuse([_estimate("a", (0.0, 0.0, 0.0), 0.0, 0.1)], FusionLimits(min_confidence=0.2)) is None
    assert fuse([]) is None


def test_fusion_is_blind_to_the_quaternion_sign() -> None:
    """Rotations near 180 degrees about z have quaternions of either sign; the average must not cancel them."""
    fused = fuse([_estimate("a", (0.0, 0.0, 0.0), 179.0, 0.5), _estimate("b", (0.0, 0.0, 0.0), -179.0, 0.5)])
    assert fused is not None
    assert abs(rotation_angle_deg(matrix_from_quat_wxyz(fused.quat_wxyz), np.diag([-1.0, -1.0, 1.0]))) < 0.01


def test_a_file_without_pose_metadata_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    model = onnx.load(tiny_run / "pose_model.onnx")
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(PoseModelError, match="not a handrail pose model"):
        PoseEstimator(tmp_path / "bare.onnx")
    with pytest.raises(PoseModelError, match="no pose model file"):
        PoseEstimator(tmp_path / "missing.onnx")
