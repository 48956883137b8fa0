"""Frame and Intrinsics: the shapes, conventions and refusals every camera relies on."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.vision.camera import Frame, Intrinsics
from handrail.vision.transforms import (
    R_MUJOCO_CAMERA_OPENCV_CAMERA,
    invert_pose,
    look_at,
    matrix_from_quat_wxyz,
    pose_matrix,
    quat_wxyz_from_matrix,
    rotation_angle_deg,
    transform_points,
)

unit_quaternions = st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)


def test_a_frame_must_be_an_rgb_uint8_image() -> None:
    frame = Frame(image=np.zeros((4, 6, 3), dtype=np.uint8), timestamp_s=1.0, frame_index=0)
    assert (frame.width, frame.height) == (6, 4)
    for bad in (np.zeros((4, 6), dtype=np.uint8), np.zeros((4, 6, 3), dtype=np.float32), np.zeros((4, 6, 4), np.uint8)):
        with pytest.raises(ValueError, match=r"\(height, width, 3\) uint8 RGB"):
            Frame(image=bad, timestamp_s=1.0, frame_index=0)


def test_intrinsics_round_trip_through_K_and_project_through_the_principal_point() -> None:
    intrinsics = Intrinsics(fx=600.0, fy=590.0, cx=320.5, cy=241.0, width=640, height=480, distortion=(0.1, 0, 0, 0))
    assert Intrinsics.from_K(intrinsics.K, 640, 480, intrinsics.distortion) == intrinsics
    np.testing.assert_allclose(intrinsics.project([[0.0, 0.0, 1.0]]), [[320.5, 241.0]])
    np.testing.assert_allclose(
        intrinsics.project([[0.1, -0.05, 1.0]])[0], [380.5 + 6.0 * 0.0125, 211.5 - 2.95 * 0.0125]
    )
    assert np.isnan(intrinsics.project([[0.0, 0.0, -1.0]])).all()


def test_intrinsics_refuse_what_no_camera_has() -> None:
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        Intrinsics(fx=0.0, fy=1.0, cx=0.0, cy=0.0, width=10, height=10)
    with pytest.raises(ValueError, match="takes 4, 5 or 8"):
        Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=10, height=10, distortion=(0.1, 0.2))
    with pytest.raises(ValueError, match=r"K must be \[\[fx, 0, cx\]"):
        Intrinsics.from_K(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), 10, 10)


def test_a_nominal_guess_is_marked_and_centred() -> None:
    guess = Intrinsics.nominal_guess(640, 480, horizontal_fov_deg=90.0)
    assert guess.nominal
    assert guess.fx == pytest.approx(320.0) and guess.fy == guess.fx
    assert (guess.cx, guess.cy) == (319.5, 239.5)


@given(unit_quaternions)
def test_quaternions_and_matrices_round_trip(quat: list[float]) -> None:
    rotation = matrix_from_quat_wxyz(np.array(quat))
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(matrix_from_quat_wxyz(quat_wxyz_from_matrix(rotation)), rotation, atol=1e-9)
    assert quat_wxyz_from_matrix(rotation)[0] >= 0.0


@given(unit_quaternions, st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3))
def test_a_pose_and_its_inverse_cancel(quat: list[float], translation_m: list[float]) -> None:
    T_a_b = pose_matrix(matrix_from_quat_wxyz(np.array(quat)), np.array(translation_m))
    np.testing.assert_allclose(invert_pose(T_a_b) @ T_a_b, np.eye(4), atol=1e-9)
    point_b = np.array([[0.1, -0.2, 0.3]])
    np.testing.assert_allclose(transform_points(invert_pose(T_a_b), transform_points(T_a_b, point_b)), point_b)


def test_look_at_points_the_optical_axis_at_the_target_with_image_up_towards_world_up() -> None:
    T_world_camera = look_at([0.5, 0.2, 0.6], [0.0, 0.0, 0.25])
    target_camera = transform_points(invert_pose(T_world_camera), [[0.0, 0.0, 0.25]])[0]
    np.testing.assert_allclose(target_camera[:2], [0.0, 0.0], atol=1e-12)
    assert target_camera[2] > 0
    assert T_world_camera[:3, 1] @ np.array([0.0, 0.0, 1.0]) < 0  # camera y (image down) points down
    assert rotation_angle_deg(T_world_camera[:3, :3], T_world_camera[:3, :3]) == 0.0
    with pytest.raises(ValueError, match="no direction off world_up"):
        look_at([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])


def test_the_mujoco_camera_frame_is_the_opencv_frame_turned_about_x() -> None:
    # MuJoCo looks down its -z with y up; OpenCV looks down +z with y down.
    np.testing.assert_array_equal(R_MUJOCO_CAMERA_OPENCV_CAMERA @ [0.0, 0.0, 1.0], [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(R_MUJOCO_CAMERA_OPENCV_CAMERA @ [0.0, 1.0, 0.0], [0.0, -1.0, 0.0])
    assert rotation_angle_deg(np.eye(3), R_MUJOCO_CAMERA_OPENCV_CAMERA) == pytest.approx(180.0)
