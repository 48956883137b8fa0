"""The calibration commands of the ``handrail`` CLI: ``calibrate board``, ``calibrate camera``,
``calibrate extrinsics``.

:func:`add_calibrate_commands` registers them on the CLI's top-level subparsers. Each handler parses, calls
one library function in :mod:`handrail.calibration` and prints; errors are
:class:`~handrail.calibration.errors.CalibrationError` (a :class:`~handrail.errors.HandrailError`), which
``handrail.cli.main`` prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

_BOARD_HELP = (
    "calibration target: charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT (e.g. charuco:7x5:0.04:0.03:DICT_5X5_100) or "
    "chessboard:COLSxROWS:SQUARE_M with inner corners (e.g. chessboard:9x6:0.025)"
)
_DEFAULT_BOARD = "charuco:7x5:0.04:0.03:DICT_5X5_100"


def _cmd_calibrate_board(args: argparse.Namespace) -> int:
    import cv2

    from handrail.calibration.board import BoardSpec
    from handrail.calibration.errors import CalibrationError

    board = BoardSpec.parse(args.board)
    pixels_per_m = args.dpi / 0.0254
    image = board.image(pixels_per_m, margin_m=args.margin_mm / 1000.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # PNG's pHYs chunk is not written by OpenCV; the printed size is stated here instead.
    if not cv2.imwrite(str(out), image):
        raise CalibrationError(f"could not write {out} — check that the folder is writable")
    width_mm, height_mm = (1000.0 * length for length in board.pattern_size_m)
    print(f"wrote {out}: {board}, {image.shape[1]}x{image.shape[0]} px at {args.dpi} dpi")
    print(
        f"print at 100% (no 'fit to page'): the pattern is {width_mm:.1f} x {height_mm:.1f} mm; measure a square "
        f"({1000 * board.square_m:.1f} mm expected) and pass the measured size in --board if it differs"
    )
    return 0


def _cmd_calibrate_camera(args: argparse.Namespace) -> int:
    from handrail.calibration.board import BoardSpec
    from handrail.calibration.files import write_camera_calibration
    from handrail.calibration.intrinsics import calibrate_intrinsics, capture_views, write_coverage_image
    from handrail.vision.opencv_camera import OpenCVCamera

    board = BoardSpec.parse(args.board)
    if args.images is not None:
        camera = OpenCVCamera(Path(args.images))
        interval_s = 0.0
    else:
        camera = OpenCVCamera(int(args.device), width=args.width, height=args.height)
        interval_s = args.interval_s
        print(f"capturing {args.views} views of {board}: move and tilt the board over the whole image")
    with camera:
        n_views = args.views if args.views is not None else (10**6 if args.images is not None else 25)
        images = capture_views(
            camera, n_views, board=None if args.images is not None else board, min_interval_s=interval_s
        )
        serial = camera.serial
    print(f"{len(images)} images from {serial}")
    result = calibrate_intrinsics(images, board)
    print(result.format())
    written = write_camera_calibration(Path(args.out), result.to_file(board, camera=serial))
    print(f"wrote {written}")
    if args.coverage:
        print(f"wrote {write_coverage_image(Path(args.coverage), result)}")
    return 0


def _parse_pose(text: str):
    """``X,Y,Z,RX,RY,RZ`` (position [m], rotation vector [deg]) as a 4x4 pose."""
    import cv2
    import numpy as np

    from handrail.calibration.errors import CalibrationError
    from handrail.vision.transforms import pose_matrix

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6:
        raise CalibrationError(f"--board-pose {text!r}: give X,Y,Z,RX,RY,RZ (metres, rotation vector in degrees)")
    return pose_matrix(cv2.Rodrigues(np.radians(values[3:]))[0], values[:3])


def _cmd_calibrate_extrinsics(args: argparse.Namespace) -> int:
    from handrail.calibration.board import BoardSpec
    from handrail.calibration.errors import CalibrationError
    from handrail.calibration.extrinsics import extrinsics_from_board_on_hand
    from handrail.calibration.files import read_camera_calibration, write_extrinsics_calibration
    from handrail.calibration.intrinsics import capture_views
    from handrail.vision.opencv_camera import OpenCVCamera

    board = BoardSpec.parse(args.board)
    T_hand_board = _parse_pose(args.board_pose)
    camera_calibration = read_camera_calibration(Path(args.camera_calibration))
    intrinsics = camera_calibration.intrinsics()
    source = Path(args.images) if args.images is not None else int(args.device)
    with OpenCVCamera(source, intrinsics=intrinsics) as camera:
        images = capture_views(camera, args.views, board=board)
        serial = camera.serial
    detections = [detection for image in images if (detection := board.detect(image)) is not None]
    if not detections:
        raise CalibrationError(f"extrinsics: board {board} not found in any of {len(images)} images from {serial}")
    result = extrinsics_from_board_on_hand(detections, intrinsics, T_hand_board)
    print(result.format())
    print(f"wrote {write_extrinsics_calibration(Path(args.out), result.to_file(camera=serial))}")
    return 0


def add_calibrate_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``calibrate {board,camera,extrinsics}`` on the CLI's top-level ``subparsers``."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    calibrate = subparsers.add_parser("calibrate", help="calibrate cameras and the hand; write calibration files")
    commands = calibrate.add_subparsers(dest="calibrate_command", metavar="SUBCOMMAND", required=True)

    board = commands.add_parser("board", help="write a calibration board as a PNG to print")
    board.add_argument("--board", default=_DEFAULT_BOARD, help=_BOARD_HELP)
    board.add_argument("--out", default="board.png", help="PNG file to write")
    board.add_argument("--dpi", type=float, default=300.0, help="printer resolution [dots per inch]")
    board.add_argument("--margin-mm", type=float, default=10.0, help="white border around the pattern [mm]")
    board.set_defaults(handler=_cmd_calibrate_board)

    camera = commands.add_parser(
        "camera", help="camera intrinsics (K, distortion) from board views: a live camera or a folder of images"
    )
    source = camera.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images of the board (sorted by name)")
    source.add_argument("--device", metavar="INDEX", type=int, help="live camera index (/dev/videoINDEX)")
    camera.add_argument("--board", default=_DEFAULT_BOARD, help=_BOARD_HELP)
    camera.add_argument("--out", default="camera.toml", help="camera calibration file to write")
    camera.add_argument("--coverage", default=None, metavar="PNG", help="write the image-coverage picture here")
    camera.add_argument(
        "--views", type=int, default=None, help="views to capture (live camera: default 25; folder: default all)"
    )
    camera.add_argument("--interval-s", type=float, default=1.0, help="live camera: seconds between views")
    camera.add_argument("--width", type=int, default=None, help="live camera: ask for this image width [px]")
    camera.add_argument("--height", type=int, default=None, help="live camera: ask for this image height [px]")
    camera.set_defaults(handler=_cmd_calibrate_camera)

    extrinsics = commands.add_parser(
        "extrinsics",
        help="T_hand_camera from a board mounted at a known pose on the hand (hand-eye: from Python for now)",
    )
    source = extrinsics.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images of the mounted board")
    source.add_argument("--device", metavar="INDEX", type=int, help="live camera index (/dev/videoINDEX)")
    extrinsics.add_argument("--camera-calibration", required=True, metavar="TOML", help="the camera's intrinsics file")
    extrinsics.add_argument(
        "--board", default=_DEFAULT_BOARD, help=_BOARD_HELP.replace(" or chessboard", "; not chessboard")
    )
    extrinsics.add_argument(
        "--board-pose",
        required=True,
        metavar="X,Y,Z,RX,RY,RZ",
        help="the board frame in the hand-mount frame: position [m] and rotation vector [deg]; board frame: origin "
        "at the pattern's top-left, x along its columns, y down its rows, z into the board",
    )
    extrinsics.add_argument("--views", type=int, default=10, help="views to use (they are averaged)")
    extrinsics.add_argument("--out", default="extrinsics.toml", help="extrinsics calibration file to write")
    extrinsics.set_defaults(handler=_cmd_calibrate_extrinsics)
