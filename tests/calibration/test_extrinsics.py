"""T_hand_camera recovered on the virtual setup: a board at a known pose on the hand, and hand-eye
calibration with a marker riding on the index fingertip through random finger poses."""

import cv2
import mujoco
import numpy as np
import pytest

from handrail.calibration.board import BoardSpec
from handrail.calibration.errors import CalibrationError
from handrail.calibration.extrinsics import extrinsics_from_board_on_hand, extrinsics_from_hand_eye, pose_error
from handrail.calibration.files import (
    CameraCalibration,
    read_extrinsics_calibration,
    write_camera_calibration,
)
from handrail.calibration.virtual_board import VirtualBoardScene, hand_scene_with_board
from handrail.sim import leap
from handrail.vision.camera import Intrinsics
from handrail.vision.transforms import T_world_body, T_world_site, invert_pose, look_at, pose_matrix
from handrail.vision.virtual_camera import ImageNoise, VirtualCamera

MAX_ERROR_M, MAX_ERROR_DEG = 0.002, 0.5
# Above the palm, looking at the fingers, image-up towards the fingertips (the hand frame's +x).
T_HAND_CAMERA = look_at([0.15, 0.06, 0.32], [0.17, 0.0, 0.0], world_up=(1.0, 0.0, 0.0))
# A board lying face-up over the palm and fingers: its columns along the hand's +y, rows along +x.
BOARD_ON_PALM = pose_matrix(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]), [0.07, -0.14, 0.0])
BOARD_ON_PALM_ARGUMENT = f"0.07,-0.14,0,{180 / 2**0.5!r},{180 / 2**0.5!r},0"


def _board_on_hand_views(true_intrinsics, T_hand_board, n_views=3):
    board = BoardSpec.parse("charuco:7x5:0.04:0.03:DICT_5X5_100")
    scene = VirtualBoardScene(board)  # its world frame is the hand-mount frame
    scene.set_board_pose(T_hand_board)
    camera = VirtualCamera(
        scene.model, scene.data, true_intrinsics, T_hand_camera=T_HAND_CAMERA, noise=ImageNoise(read_noise_std=1.5)
    )
    with camera:
        return board, [camera.read().image for _ in range(n_views)]


def test_board_on_hand_recovers_the_camera_pose(true_intrinsics):
    T_hand_board = BOARD_ON_PALM
    board, images = _board_on_hand_views(true_intrinsics, T_hand_board)
    result = extrinsics_from_board_on_hand([board.detect(image) for image in images], true_intrinsics, T_hand_board)
    error_m, error_deg = pose_error(result.T_hand_camera, T_HAND_CAMERA)
    assert error_m <= MAX_ERROR_M and error_deg <= MAX_ERROR_DEG
    assert result.rms_px < 0.3
    # The board's pose matters: the same views with a board pose 1 cm off give a camera 1 cm off.
    shifted = extrinsics_from_board_on_hand(
        [board.detect(image) for image in images],
        true_intrinsics,
        pose_matrix(T_hand_board[:3, :3], T_hand_board[:3, 3] + [0.01, 0, 0]),
    )
    assert pose_error(shifted.T_hand_camera, T_HAND_CAMERA)[0] > 0.009


def test_calibrate_extrinsics_cli_writes_the_file(tmp_path, true_intrinsics, calibrate_cli, capsys):
    T_hand_board = BOARD_ON_PALM
    _, images = _board_on_hand_views(true_intrinsics, T_hand_board, n_views=2)
    folder = tmp_path / "views"
    folder.mkdir()
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    camera_file = write_camera_calibration(
        tmp_path / "camera.toml",
        CameraCalibration(
            schema_version=1, camera="virtual", date="2025-01-31T12:00:00+00:00",
            board="charuco:7x5:0.04:0.03:DICT_5X5_100", image_width=640, image_height=480,
            K=tuple(tuple(row) for row in true_intrinsics.K.tolist()), distortion=(0.0,) * 5, rms_px=0.1, n_views=10,
        ),
    )  # fmt: skip
    out = tmp_path / "extrinsics.toml"
    argv = ["calibrate", "extrinsics", "--images", str(folder), "--camera-calibration", str(camera_file),
            "--board-pose", BOARD_ON_PALM_ARGUMENT, "--out", str(out)]  # fmt: skip
    assert calibrate_cli(argv) == 0
    assert "T_hand_camera (board_on_hand, 2 views" in capsys.readouterr().out
    written = read_extrinsics_calibration(out)
    error_m, error_deg = pose_error(written.T_hand_camera_matrix, T_HAND_CAMERA)
    assert error_m <= MAX_ERROR_M and error_deg <= MAX_ERROR_DEG


@pytest.fixture(scope="module")
def fingertip_marker_views():
    """(T_hand_link per view, detections, intrinsics): an ArUco marker on the index distal link, random finger
    poses within the joint ranges, rendered by a camera at T_HAND_CAMERA."""
    board = BoardSpec.parse("aruco:0.03:DICT_4X4_50:7")
    T_link_board = pose_matrix(np.diag([1.0, -1.0, -1.0]), [0.02, 0.0, 0.013])  # on the back of the distal link
    model = hand_scene_with_board(board, "if_dip_link", T_link_board)
    data = mujoco.MjData(model)
    intrinsics = Intrinsics(fx=1216.0, fy=1210.0, cx=642.5, cy=477.5, width=1280, height=960)
    camera = VirtualCamera(model, data, intrinsics, T_hand_camera=T_HAND_CAMERA, noise=ImageNoise(read_noise_std=1.0))
    rng = np.random.default_rng(0)
    ranges = {"if_abd": (-0.3, 0.3), "if_mcp": (-0.2, 0.7), "if_pip": (0.0, 0.4), "if_dip": (0.0, 0.3)}
    links, detections = [], []
    with camera:
        for _ in range(12):
            for joint, (low, high) in ranges.items():
                data.qpos[model.joint(joint).qposadr[0]] = rng.uniform(low, high)
            mujoco.mj_forward(model, data)
            detection = board.detect(camera.read().image)
            if detection is not None:
                T_world_hand = T_world_site(model, data, leap.HAND_MOUNT_SITE_NAME)
                links.append(invert_pose(T_world_hand) @ T_world_body(model, data, "if_dip_link"))
                detections.append(detection)
    return links, detections, intrinsics, T_link_board


def test_hand_eye_with_a_fingertip_marker_recovers_the_camera_pose(fingertip_marker_views):
    links, detections, intrinsics, T_link_board = fingertip_marker_views
    assert len(detections) >= 10
    result = extrinsics_from_hand_eye(links, detections, intrinsics)
    error_m, error_deg = pose_error(result.T_hand_camera, T_HAND_CAMERA)
    assert error_m <= MAX_ERROR_M and error_deg <= MAX_ERROR_DEG, (error_m, error_deg)
    assert pose_error(result.T_link_board, T_link_board)[0] < 0.005


def test_hand_eye_refuses_a_motion_about_one_axis(fingertip_marker_views):
    links, detections, intrinsics, _ = fingertip_marker_views
    one_axis = [pose_matrix(cv2.Rodrigues(np.array([0.0, 0.1 * i, 0.0]))[0], [0, 0, 0]) for i in range(len(links))]
    with pytest.raises(CalibrationError, match="fewer than two distinct axes"):
        extrinsics_from_hand_eye(one_axis, detections, intrinsics)
