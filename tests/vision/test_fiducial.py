"""The fiducial baseline recovers the cube's pose from renders of the scene cameras."""

import contextlib

import cv2
import mujoco
import numpy as np
import pytest

from handrail.sim import leap
from handrail.vision.camera import Intrinsics
from handrail.vision.cube_markers import CUBE_MARKERS
from handrail.vision.fiducial import CubePoseEstimate, FiducialCubePoseEstimator
from handrail.vision.transforms import T_world_body, invert_pose, matrix_from_quat_wxyz, rotation_angle_deg
from handrail.vision.virtual_camera import VirtualCamera

MAX_POSITION_ERROR_MM = 3.0
MAX_ROTATION_ERROR_DEG = 2.0
N_RANDOM_POSES = 3


def _place_cube(model: mujoco.MjModel, data: mujoco.MjData, position_m: np.ndarray, quat_wxyz: np.ndarray) -> None:
    """Put the cube at a world pose and forward ``data`` (no physics: it may float above the palm)."""
    address = model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id]
    data.qpos[address : address + 3] = position_m
    data.qpos[address + 3 : address + 7] = quat_wxyz / np.linalg.norm(quat_wxyz)
    mujoco.mj_forward(model, data)


def _errors(estimate: CubePoseEstimate, T_camera_cube: np.ndarray) -> tuple[float, float]:
    """Position error [mm] and rotation error [deg] of an estimate against the true T_camera_cube."""
    position_error_mm = 1000.0 * float(np.linalg.norm(estimate.position_m - T_camera_cube[:3, 3]))
    return position_error_mm, rotation_angle_deg(matrix_from_quat_wxyz(estimate.quat_wxyz), T_camera_cube[:3, :3])


def _cube_poses(model: mujoco.MjModel, data: mujoco.MjData) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The cube at rest on the palm, then seeded random orientations 1-4 cm above it."""
    address = model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id]
    rest_position_m, rest_quat = data.qpos[address : address + 3].copy(), data.qpos[address + 3 : address + 7].copy()
    poses = [("at rest", rest_position_m, rest_quat)]
    rng = np.random.default_rng(7)
    for index in range(N_RANDOM_POSES):
        offset_m = rng.uniform([-0.01, -0.01, 0.01], [0.01, 0.01, 0.04])
        poses.append((f"random {index}", rest_position_m + offset_m, rng.normal(size=4)))
    return poses


def test_the_baseline_recovers_the_cube_pose_from_the_scene_cameras(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    poses = _cube_poses(scene_model, home_data)
    results: dict[tuple[str, str], tuple[float, float, int] | None] = {}
    with contextlib.ExitStack() as stack:
        cameras = [
            stack.enter_context(VirtualCamera.from_scene_camera(scene_model, home_data, name))
            for name in leap.CAMERA_NAMES
        ]
        for label, position_m, quat_wxyz in poses:
            _place_cube(scene_model, home_data, position_m, quat_wxyz)
            T_world_cube = T_world_body(scene_model, home_data, leap.CUBE_BODY_NAME)
            for camera in cameras:
                estimate = FiducialCubePoseEstimator(camera.intrinsics).estimate(camera.read().image)
                T_camera_cube = invert_pose(camera.T_world_camera()) @ T_world_cube
                results[label, camera.name] = (
                    None if estimate is None else (*_errors(estimate, T_camera_cube), estimate.n_markers)
                )
    print("\nfiducial baseline on 640x480 renders (position mm, rotation deg, markers):")
    for (label, name), result in results.items():
        measured = "not seen" if result is None else f"{result[0]:6.2f} mm {result[1]:5.2f} deg {result[2]}"
        print(f"  {label:9s} {name:9s} {measured}")

    seen = [result for result in results.values() if result is not None]
    assert all(results["at rest", name] is not None for name in leap.CAMERA_NAMES)
    for label, _, _ in poses:
        per_camera = [results[label, name] for name in leap.CAMERA_NAMES if results[label, name] is not None]
        best_mm = min(result[0] for result in per_camera)
        best_deg = min(result[1] for result in per_camera)
        assert best_mm < MAX_POSITION_ERROR_MM and best_deg < MAX_ROTATION_ERROR_DEG, (label, per_camera)
    assert np.median([result[0] for result in seen]) < 2.5
    assert np.median([result[1] for result in seen]) < 1.0


def test_wrong_intrinsics_show_up_as_pose_error(scene_model: mujoco.MjModel, home_data: mujoco.MjData) -> None:
    with VirtualCamera.from_scene_camera(scene_model, home_data, "cam_side") as camera:
        image = camera.read().image
        T_camera_cube = invert_pose(camera.T_world_camera()) @ T_world_body(scene_model, home_data, leap.CUBE_BODY_NAME)
    right = FiducialCubePoseEstimator(camera.intrinsics).estimate(image)
    scaled = camera.intrinsics.K * np.array([[1.05], [1.05], [1.0]])
    wrong = FiducialCubePoseEstimator(Intrinsics.from_K(scaled, 640, 480)).estimate(image)
    assert right is not None and wrong is not None
    assert _errors(right, T_camera_cube)[0] < MAX_POSITION_ERROR_MM < _errors(wrong, T_camera_cube)[0]


def test_one_marker_is_enough(scene_model: mujoco.MjModel, home_data: mujoco.MjData) -> None:
    # From straight above, the cube at rest shows only its top face.
    with VirtualCamera.from_scene_camera(scene_model, home_data, "cam_top") as camera:
        image = camera.read().image
        T_camera_cube = invert_pose(camera.T_world_camera()) @ T_world_body(scene_model, home_data, leap.CUBE_BODY_NAME)
    estimate = FiducialCubePoseEstimator(camera.intrinsics).estimate(image)
    assert estimate is not None and estimate.marker_ids == (dict(CUBE_MARKERS.face_marker_ids)["pz"],)
    position_error_mm, rotation_error_deg = _errors(estimate, T_camera_cube)
    assert position_error_mm < MAX_POSITION_ERROR_MM and rotation_error_deg < MAX_ROTATION_ERROR_DEG
    np.testing.assert_allclose(estimate.T_camera_cube[:3, :3], matrix_from_quat_wxyz(estimate.quat_wxyz), atol=1e-9)
    assert estimate.quat_wxyz[0] >= 0.0


def test_no_known_marker_means_no_estimate() -> None:
    intrinsics = Intrinsics.nominal_guess(320, 240)
    estimator = FiducialCubePoseEstimator(intrinsics)
    assert estimator.estimate(np.full((240, 320, 3), 128, dtype=np.uint8)) is None
    # A marker of the same dictionary that is on no face is ignored.
    stranger = cv2.aruco.generateImageMarker(CUBE_MARKERS.dictionary, 17, 120, borderBits=1)
    image = np.full((240, 320), 255, dtype=np.uint8)
    image[60:180, 100:220] = stranger
    image_rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    assert cv2.aruco.ArucoDetector(CUBE_MARKERS.dictionary).detectMarkers(image_rgb)[1].ravel().tolist() == [17]
    assert estimator.detect(image_rgb) == []
    assert estimator.estimate(image_rgb) is None


@pytest.mark.parametrize("face", ["px", "nz"])
def test_a_printed_marker_alone_gives_the_face_pose(face: str) -> None:
    """A synthetic, distortion-free view of one marker: the pose is exact to well under a millimetre."""
    intrinsics = Intrinsics(fx=800.0, fy=800.0, cx=319.5, cy=239.5, width=640, height=480)
    estimator = FiducialCubePoseEstimator(intrinsics)
    # The face seen head-on from 0.3 m, marker upright: camera x = face right, camera y = face down.
    right, up, normal = CUBE_MARKERS.face_frame(face).T
    R_camera_cube = np.stack([right, -up, -normal])
    t_camera_cube = np.array([0.004, -0.003, 0.3]) - R_camera_cube @ CUBE_MARKERS.face_center_m(face)
    T_camera_cube = np.eye(4)
    T_camera_cube[:3, :3], T_camera_cube[:3, 3] = R_camera_cube, t_camera_cube
    marker_id = dict(CUBE_MARKERS.face_marker_ids)[face]
    corners_px = intrinsics.project(
        CUBE_MARKERS.corners_in_cube_frame(marker_id) @ R_camera_cube.T + t_camera_cube
    ).astype(np.float32)
    side_px = 240
    marker = cv2.aruco.generateImageMarker(CUBE_MARKERS.dictionary, marker_id, side_px, borderBits=1)
    source = np.array([[0, 0], [side_px, 0], [side_px, side_px], [0, side_px]], dtype=np.float32) - 0.5
    warp = cv2.getPerspectiveTransform(source, corners_px)
    image = cv2.warpPerspective(marker, warp, (640, 480), flags=cv2.INTER_AREA, borderValue=255)
    estimate = estimator.estimate(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    assert estimate is not None and estimate.marker_ids == (marker_id,)
    position_error_mm, rotation_error_deg = _errors(estimate, T_camera_cube)
    assert position_error_mm < 1.0 and rotation_error_deg < 1.0
