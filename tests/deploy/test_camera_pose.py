"""The camera path as the loop's pose source on the virtual hand: the pose CNN and the ArUco baseline each
deliver the cube's pose in the hand frame close to the simulator's truth, with its age, under their own name."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from handrail.deploy.camera_pose import (
    CAMERA_FIDUCIAL,
    CAMERA_MODEL,
    VirtualCameraFiducialPose,
    VirtualCameraModelPose,
)
from handrail.deploy.pose_source import GROUND_TRUTH, GroundTruthPose
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import default_profile_path, load_profile
from handrail.sim import quat
from handrail.vision.pose_model_file import PoseModelError

os.environ.setdefault("MUJOCO_GL", "egl")

# The bundled CNN's held-out median is a few mm / degrees (vision/models/cube_pose.json); one resting pose
# may sit in its tail, so the bound is looser than the median and far below what a broken frame chain gives
# (the cube is 5 cm; a wrong camera transform or crop view is off by centimetres or tens of degrees).
MODEL_MAX_POSITION_ERROR_M = 0.012
MODEL_MAX_ROTATION_ERROR_DEG = 12.0
ARUCO_MAX_POSITION_ERROR_M = 0.005
ARUCO_MAX_ROTATION_ERROR_DEG = 3.0


@pytest.fixture(scope="module")
def resting_hand():
    """A virtual hand at rest, torque off, the cube settled in the palm; its ground truth in the hand frame."""
    profile = load_profile()
    with VirtualHandProcess(default_profile_path(), reality_seed=0) as vhand:
        time.sleep(1.0)  # let the cube settle
        truth_source = GroundTruthPose(vhand, profile)
        truth = _wait_for(truth_source)
        truth_source.close()
        yield vhand, profile, truth


def _wait_for(source, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        estimate = source.latest()
        if estimate is not None:
            return estimate
        time.sleep(0.05)
    raise AssertionError(f"{source.name}: no pose within {timeout_s} s")


def _errors(estimate, truth) -> tuple[float, float]:
    position_error_m = float(np.linalg.norm(estimate.position_m - truth.position_m))
    relative = quat.multiply(quat.conjugate(truth.quat_wxyz), estimate.quat_wxyz)
    rotation_error_deg = float(np.degrees(2 * np.arccos(np.clip(abs(relative[0]), 0.0, 1.0))))
    return position_error_m, rotation_error_deg


def test_the_pose_cnn_sees_the_cube_where_it_is(resting_hand) -> None:
    vhand, profile, truth = resting_hand
    assert truth.source == GROUND_TRUTH
    source = VirtualCameraModelPose(vhand, profile)
    try:
        estimate = _wait_for(source)
        time.sleep(0.3)
        estimate = source.latest()
    finally:
        source.close()
    assert estimate.source == CAMERA_MODEL
    assert 0.0 <= estimate.age_s < 1.0
    position_error_m, rotation_error_deg = _errors(estimate, truth)
    assert position_error_m < MODEL_MAX_POSITION_ERROR_M, (position_error_m, estimate, truth)
    assert rotation_error_deg < MODEL_MAX_ROTATION_ERROR_DEG, (rotation_error_deg, estimate, truth)
    assert source.frames >= source.detections >= 1


def test_the_aruco_baseline_sees_the_cube_where_it_is(resting_hand) -> None:
    vhand, profile, truth = resting_hand
    source = VirtualCameraFiducialPose(vhand, profile)
    try:
        estimate = _wait_for(source)
    finally:
        source.close()
    assert estimate.source == CAMERA_FIDUCIAL
    position_error_m, rotation_error_deg = _errors(estimate, truth)
    assert position_error_m < ARUCO_MAX_POSITION_ERROR_M, (position_error_m, estimate, truth)
    assert rotation_error_deg < ARUCO_MAX_ROTATION_ERROR_DEG, (rotation_error_deg, estimate, truth)


def test_a_missing_pose_model_is_refused_with_the_fix(resting_hand, tmp_path) -> None:
    vhand, profile, _ = resting_hand
    with pytest.raises(PoseModelError, match="handrail vision train"):
        VirtualCameraModelPose(vhand, profile, model=tmp_path / "nothing.onnx")
