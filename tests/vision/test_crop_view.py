"""The crop view: aimed at its hand-frame point, and a resampled full frame equals a render through it."""

import math

import cv2
import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handrail.sim import leap
from handrail.vision.camera import Intrinsics
from handrail.vision.crop_view import CropView, rotation_between
from handrail.vision.transforms import (
    T_world_opencv_camera_of_mujoco_camera,
    T_world_site,
    invert_pose,
    look_at,
    transform_points,
)
from handrail.vision.virtual_camera import VirtualCamera

VIEW = CropView()


@pytest.mark.parametrize("camera_name", leap.CAMERA_NAMES)
def test_the_aim_point_lands_on_the_crop_centre(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData, camera_name: str
) -> None:
    T_world_hand = T_world_site(scene_model, home_data, leap.HAND_MOUNT_SITE_NAME)
    T_hand_camera = invert_pose(T_world_hand) @ T_world_opencv_camera_of_mujoco_camera(
        scene_model, home_data, camera_name
    )
    T_crop_hand = invert_pose(VIEW.T_hand_crop(T_hand_camera))
    pixel = VIEW.intrinsics.project(transform_points(T_crop_hand, VIEW.roi_center_hand_m))[0]
    np.testing.assert_allclose(pixel, [VIEW.intrinsics.cx, VIEW.intrinsics.cy], atol=1e-6)
    # The smallest rotation turns about an axis in the image plane: no roll about the optical axis.
    R_camera_crop = VIEW.R_camera_crop(T_hand_camera)
    axis = cv2.Rodrigues(R_camera_crop)[0].ravel()
    assert abs(axis[2]) < 1e-9


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.1),
    st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.1),
)
def test_rotation_between_takes_one_direction_onto_the_other(a: list[float], b: list[float]) -> None:
    a_unit, b_unit = np.array(a) / np.linalg.norm(a), np.array(b) / np.linalg.norm(b)
    if a_unit @ b_unit < -0.999:
        return
    rotation = rotation_between(a_unit, b_unit)
    np.testing.assert_allclose(rotation @ a_unit, b_unit, atol=1e-9)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    assert math.isclose(np.linalg.det(rotation), 1.0, abs_tol=1e-9)


def test_an_aim_point_behind_the_camera_is_refused() -> None:
    looking_away = look_at(np.array([0.0, 0.0, 0.5]), np.array([0.0, 0.0, 1.0]), world_up=np.array([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="not in front"):
        VIEW.R_camera_crop(looking_away)


def test_a_resampled_full_frame_matches_a_render_through_the_crop_view(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    T_world_hand = T_world_site(scene_model, home_data, leap.HAND_MOUNT_SITE_NAME)
    T_world_camera = T_world_opencv_camera_of_mujoco_camera(scene_model, home_data, "cam_side")
    T_hand_camera = invert_pose(T_world_hand) @ T_world_camera
    full_intrinsics = Intrinsics(fx=560.0, fy=560.0, cx=321.0, cy=236.0, width=640, height=480)
    with VirtualCamera(scene_model, home_data, full_intrinsics, T_world_camera=T_world_camera) as full_camera:
        full_frame = full_camera.read().image
    T_world_crop = T_world_hand @ VIEW.T_hand_crop(T_hand_camera)
    with VirtualCamera(scene_model, home_data, VIEW.intrinsics, T_world_camera=T_world_crop) as crop_camera:
        direct = crop_camera.read().image
    warped = VIEW.warper(full_intrinsics, T_hand_camera).warp(full_frame)
    assert warped.shape == direct.shape == (VIEW.size_px, VIEW.size_px, 3)
    difference = np.abs(cv2.GaussianBlur(warped, (5, 5), 1.0).astype(float) - cv2.GaussianBlur(direct, (5, 5), 1.0))
    assert difference.mean() < 4.0, difference.mean()
    # The same frame resampled for a camera turned by 2 degrees is visibly different: the check can fail.
    turned = T_hand_camera @ np.block([[cv2.Rodrigues(np.radians([0.0, 2.0, 0.0]))[0], np.zeros((3, 1))], [0, 0, 0, 1]])
    wrong = VIEW.warper(full_intrinsics, turned).warp(full_frame)
    wrong_difference = np.abs(
        cv2.GaussianBlur(wrong, (5, 5), 1.0).astype(float) - cv2.GaussianBlur(direct, (5, 5), 1.0)
    )
    assert wrong_difference.mean() > 2.0 * difference.mean(), (difference.mean(), wrong_difference.mean())


def test_a_frame_of_another_size_is_refused() -> None:
    intrinsics = Intrinsics.nominal_guess(320, 240)
    T_hand_camera = look_at(np.array([0.05, 0.0, 0.45]), np.array(VIEW.roi_center_hand_m), world_up=(1.0, 0.0, 0.0))
    warper = VIEW.warper(intrinsics, T_hand_camera)
    assert warper.warp(np.zeros((240, 320, 3), np.uint8)).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="intrinsics are for 320x240"):
        warper.warp(np.zeros((480, 640, 3), np.uint8))
