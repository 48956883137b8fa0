"""Camera intrinsics recovered from virtual-camera renders of a board at random poses, with known K."""

import cv2
import numpy as np
import pytest

from handrail.calibration.board import BoardSpec
from handrail.calibration.errors import CalibrationError
from handrail.calibration.files import read_camera_calibration
from handrail.calibration.intrinsics import calibrate_intrinsics


def _assert_recovers(result, truth):
    assert result.K[0, 0] == pytest.approx(truth.fx, rel=0.005)
    assert result.K[1, 1] == pytest.approx(truth.fy, rel=0.005)
    assert result.K[0, 2] == pytest.approx(truth.cx, abs=2.0)
    assert result.K[1, 2] == pytest.approx(truth.cy, abs=2.0)
    assert result.rms_px <= 0.2


def test_charuco_views_recover_the_virtual_cameras_intrinsics(charuco_views, true_intrinsics):
    result = calibrate_intrinsics(charuco_views, BoardSpec.parse("charuco:7x5:0.04:0.03:DICT_5X5_100"))
    assert result.n_used == len(charuco_views)
    _assert_recovers(result, true_intrinsics)
    assert all(view.rms_px <= 0.3 for view in result.views)
    assert result.coverage > 0.5
    assert result.coverage_image.shape == (480, 640, 3)


def test_chessboard_views_recover_the_virtual_cameras_intrinsics(board_view_renderer, true_intrinsics):
    views = board_view_renderer("chessboard:9x6:0.025", 10, seed=5)
    result = calibrate_intrinsics(views, BoardSpec.parse("chessboard:9x6:0.025"))
    _assert_recovers(result, true_intrinsics)


def test_bad_views_are_rejected_with_their_reason(charuco_views, true_intrinsics):
    board = BoardSpec.parse("charuco:7x5:0.04:0.03:DICT_5X5_100")
    blank = np.full_like(charuco_views[0], 90)
    small = cv2.resize(charuco_views[1], (320, 240))
    # Another camera's view (stretched 25% along x): its board is found, but no single K explains it.
    stretched = cv2.resize(charuco_views[2], None, fx=1.25, fy=1.0)[:, :640]
    result = calibrate_intrinsics([blank, small, stretched, *charuco_views[3:]], board)
    reasons = {view.index: view.reason for view in result.views if not view.accepted}
    assert "board charuco:7x5:0.04:0.03:DICT_5X5_100 not found" in reasons[0]
    assert "image is 320x240, the first was 640x480" in reasons[1]
    assert "reprojection RMS" in reasons[2]
    assert set(reasons) == {0, 1, 2}
    _assert_recovers(result, true_intrinsics)


def test_too_few_views_is_an_error_that_lists_the_rejections(charuco_views):
    board = BoardSpec.parse("charuco:7x5:0.04:0.03:DICT_5X5_100")
    blank = np.full_like(charuco_views[0], 90)
    with pytest.raises(CalibrationError, match=r"2 usable views, need at least 4(.|\n)*view 2: board .* not found"):
        calibrate_intrinsics([*charuco_views[:2], blank], board)


def test_calibrate_camera_cli_on_a_folder_writes_a_file_the_reader_accepts(
    tmp_path, charuco_views, true_intrinsics, calibrate_cli, capsys
):
    folder = tmp_path / "views"
    folder.mkdir()
    for index, image in enumerate(charuco_views):
        cv2.imwrite(str(folder / f"view_{index:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out, coverage = tmp_path / "camera.toml", tmp_path / "coverage.png"
    code = calibrate_cli(
        ["calibrate", "camera", "--images", str(folder), "--out", str(out), "--coverage", str(coverage)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "overall RMS" in printed and "view  14: used" in printed
    calibration = read_camera_calibration(out)
    assert calibration.n_views == len(charuco_views)
    assert calibration.board == "charuco:7x5:0.04:0.03:DICT_5X5_100"
    intrinsics = calibration.intrinsics()
    assert intrinsics.fx == pytest.approx(true_intrinsics.fx, rel=0.005)
    assert cv2.imread(str(coverage)).shape == (480, 640, 3)


def test_calibrate_board_cli_writes_a_printable_board_that_detects(tmp_path, calibrate_cli):
    out = tmp_path / "board.png"
    assert calibrate_cli(["calibrate", "board", "--out", str(out), "--dpi", "100"]) == 0
    image = cv2.imread(str(out))
    board = BoardSpec.parse("charuco:7x5:0.04:0.03:DICT_5X5_100")
    assert abs(image.shape[1] - (0.28 + 0.02) * 100 / 0.0254) < 2  # 280 mm pattern + 2 x 10 mm margin
    assert board.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).n_corners == 24
