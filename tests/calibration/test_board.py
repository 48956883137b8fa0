"""Board specs parse, print back, and their detections land on the board's own corner coordinates."""

import cv2
import numpy as np
import pytest

from handrail.calibration.board import BoardSpec
from handrail.calibration.errors import BoardSpecError

SPECS = ["charuco:7x5:0.04:0.03:DICT_5X5_100", "chessboard:9x6:0.025", "aruco:0.03:DICT_4X4_50:7"]


@pytest.mark.parametrize("spec", SPECS)
def test_spec_round_trips_through_its_string(spec):
    assert str(BoardSpec.parse(spec)) == spec
    assert BoardSpec.parse(str(BoardSpec.parse(spec))) == BoardSpec.parse(spec)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("charuco:7x5:0.04:0.05:DICT_5X5_100", "smaller than the square"),
        ("charuco:7:0.04:0.03:DICT_5X5_100", "COLSxROWS"),
        ("charuco:7x5:0.04:0.03:DICT_9X9_1", "unknown ArUco dictionary"),
        ("chessboard:9x6:25", "in metres"),
        ("chessboard:6x6:0.025", "different counts"),
        ("aruco:0.03:DICT_4X4_50:99", "not in DICT_4X4_50"),
        ("circles:4x11:0.02", "unknown kind"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(spec, named):
    with pytest.raises(BoardSpecError, match=named) as caught:
        BoardSpec.parse(spec)
    assert "charuco:7x5:0.04:0.03:DICT_5X5_100" in str(caught.value)  # shows an accepted form


@pytest.mark.parametrize("spec", SPECS)
def test_detected_corners_sit_where_the_printed_image_puts_them(spec):
    board = BoardSpec.parse(spec)
    pixels_per_m, margin_m = 2000.0, 0.02
    image = cv2.GaussianBlur(board.image(pixels_per_m, margin_m), (5, 5), 1.0)
    detection = board.detect(image)
    assert detection is not None
    assert detection.n_corners == len(board.corners_m)
    origin = np.array(board.pattern_origin_m)
    expected_px = (detection.object_points_m[:, :2] - origin + margin_m) * pixels_per_m - 0.5
    if board.kind == "chessboard":
        # OpenCV may list a chessboard's corners from either end; the grid is the same point set.
        reversed_error = np.abs(detection.image_points_px[::-1] - expected_px).max()
        error = min(np.abs(detection.image_points_px - expected_px).max(), reversed_error)
    else:
        error = np.abs(detection.image_points_px - expected_px).max()
    # A marker's outer corner is not a saddle point: cornerSubPix alone puts it 0.2 px inside; its fitted edges do not.
    assert error < 0.05


def test_a_blank_image_has_no_board():
    board = BoardSpec.parse(SPECS[0])
    assert board.detect(np.full((240, 320, 3), 200, np.uint8)) is None
