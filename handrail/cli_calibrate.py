"""The calibration commands of the ``handrail`` CLI: ``calibrate board``, ``calibrate camera``,
``calibrate extrinsics``, ``calibrate joints``, ``calibrate dynamics``, and ``compare``.

:func:`add_calibrate_commands` registers them on the CLI's top-level subparsers. Each handler parses, calls
one library function in :mod:`handrail.calibration` and prints; errors are
:class:`~handrail.calibration.errors.CalibrationError` (a :class:`~handrail.errors.HandrailError`), which
``handrail.cli.main`` prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from handrail.cli_types import fraction, positive

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

    if args.hand_eye:
        return _cmd_calibrate_hand_eye(args)
    if args.images is None and args.device is None:
        raise CalibrationError("extrinsics: give --images DIR or --device INDEX (or --hand-eye with the hand)")
    if args.board_pose is None or args.camera_calibration is None:
        raise CalibrationError(
            "extrinsics from a board on the hand needs --board-pose X,Y,Z,RX,RY,RZ and --camera-calibration TOML "
            "(or --hand-eye: a marker on a finger, moved by the hand)"
        )
    board = BoardSpec.parse(args.board or _DEFAULT_BOARD)
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


def _virtual_hand(args: argparse.Namespace):
    """A context manager giving a virtual hand (``VirtualHandProcess``) started for this run."""
    import contextlib

    from handrail.robot.emulator import VirtualHandProcess

    reality_out = Path(args.reality_out) if args.reality_out else None

    @contextlib.contextmanager
    def started():
        with VirtualHandProcess(args.profile, reality_seed=args.reality_seed, reality_out=reality_out) as vhand:
            print(f"virtual hand (reality seed {args.reality_seed}) on {vhand.port}")
            if reality_out is not None:
                print(f"its hidden reality: {reality_out}")
            yield vhand

    return started()


def _virtual_hand_or_port(args: argparse.Namespace):
    """A context manager giving the port: the one named, or a virtual hand started for this run."""
    import contextlib

    if not args.virtual:
        return contextlib.nullcontext(args.port)

    @contextlib.contextmanager
    def virtual_port():
        with _virtual_hand(args) as vhand:
            yield vhand.port

    return virtual_port()


def _cmd_calibrate_hand_eye(args: argparse.Namespace) -> int:
    from handrail.calibration.board import BoardSpec
    from handrail.calibration.errors import CalibrationError
    from handrail.calibration.extrinsics import pose_error
    from handrail.calibration.files import read_camera_calibration, write_extrinsics_calibration
    from handrail.calibration.hand_eye_run import HandEyeConfig, HandEyeView, run_hand_eye
    from handrail.calibration.virtual_hand_camera import DEFAULT_MARKER, VirtualHandCamera
    from handrail.robot.profile import load_profile
    from handrail.vision.opencv_camera import OpenCVCamera

    if args.images is not None or not (args.virtual or args.port):
        raise CalibrationError(
            "extrinsics --hand-eye moves the hand: give --virtual, or --port DEV with a live camera --device INDEX "
            "(not --images: a folder has no joint readings)"
        )
    profile = load_profile(args.profile, calibration=args.calibration)
    board = BoardSpec.parse(args.board or DEFAULT_MARKER)
    intrinsics = (
        read_camera_calibration(Path(args.camera_calibration)).intrinsics() if args.camera_calibration else None
    )
    # The virtual camera renders the hand as it is now; a live one queues frames from before the hand settled.
    config = HandEyeConfig(speed_scale=args.speed_scale, stale_frames=0 if args.virtual else 4)
    if args.calibration is None:
        print(
            "no --calibration: forward kinematics uses the joint readings as the profile gives them, and their "
            "encoder zero offsets go straight into the result — run `handrail calibrate joints` first and pass its file"
        )
    print(f"hand-eye: {board} on the index fingertip, through the poses at {config.speed_scale:.0%} speed")

    def on_view(view: HandEyeView) -> None:
        print(f"  pose {view.index}: " + ("target found" if view.usable else view.problem))

    if args.virtual:
        with _virtual_hand(args) as vhand:
            camera = VirtualHandCamera(
                profile, vhand.ground_truth, scene_camera=args.camera, board=board, width=args.width, height=args.height
            )
            run = run_hand_eye(
                profile, vhand.port, camera, board, intrinsics=intrinsics, config=config, on_view=on_view
            )
        error_m, error_deg = pose_error(run.extrinsics.T_hand_camera, camera.T_hand_camera)
        truth = f"virtual camera {args.camera}: {1000 * error_m:.2f} mm, {error_deg:.3f} deg from its pose in the scene"
    else:
        if args.device is None or intrinsics is None:
            raise CalibrationError(
                "extrinsics --hand-eye --port: give the live camera --device INDEX and its --camera-calibration"
            )
        camera = OpenCVCamera(int(args.device), intrinsics=intrinsics)
        run = run_hand_eye(profile, args.port, camera, board, config=config, on_view=on_view)
        truth = ""
    print(run.format())
    if truth:
        print(truth)
    print(f"wrote {write_extrinsics_calibration(Path(args.out), run.extrinsics.to_file(camera=run.camera))}")
    return 0


def _cmd_calibrate_joints(args: argparse.Namespace) -> int:
    from handrail.calibration.errors import CalibrationError
    from handrail.calibration.files import atomic_write_text
    from handrail.calibration.joints import JointCalibrationConfig, calibrate_joints
    from handrail.calibration.joints_file import (
        merge_joints_calibration,
        read_joints_calibration,
        write_joints_calibration,
    )
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile)
    # A run of some joints merges into the hand's existing file instead of replacing its 16 joints with a few;
    # that file must be this hand's overlay, checked before anything moves.
    out = Path(args.out)
    existing = None
    if out.exists():
        try:
            existing = read_joints_calibration(out)
        except CalibrationError as error:
            raise CalibrationError(
                f"{out} exists and is not a joints calibration this run could merge into ({error}) — use another "
                "--out, or remove the file"
            ) from error
    if existing is not None and existing.profile != profile.name:
        raise CalibrationError(
            f"{out} holds the calibration of profile {existing.profile!r}, not {profile.name!r} — use another --out"
        )
    config = JointCalibrationConfig(speed_scale=args.speed_scale, current_limit_ma=args.current_ma)
    joints = tuple(name.strip() for name in args.joints.split(",")) if args.joints else None
    print(
        f"calibrating the joints of {profile.name!r} against their mechanical stops at {config.current_limit_ma:g} mA "
        f"and {config.speed_scale:.0%} speed — keep the hand free of objects and fingers"
    )
    with _virtual_hand_or_port(args) as port:
        result = calibrate_joints(
            profile, port, config=config, joints=joints, on_phase=lambda phase: print(f"  phase {phase.name}")
        )
    print(result.format())
    for joint in result.wrong_directions:
        print(
            f"WARNING: {joint.joint}: the profile's direction {joint.profile_direction:+d} is wrong (measured "
            f"{joint.direction:+d}); the overlay carries the measured sign — check the servo's mounting and fix the "
            "profile"
        )
    calibration = result.to_file()
    if existing is not None:
        merged = merge_joints_calibration(existing, calibration)
        kept = sorted(set(merged.joints) - set(calibration.joints))
        if kept:
            print(f"merged into {out}: kept {len(kept)} joints calibrated earlier ({', '.join(kept)})")
        calibration = merged
    print(f"wrote {write_joints_calibration(out, calibration)}")
    if args.report:
        print(f"wrote {atomic_write_text(Path(args.report), result.to_json())}")
    return 0


def _cmd_calibrate_dynamics(args: argparse.Namespace) -> int:
    from handrail.calibration.compare import compare_rollout
    from handrail.calibration.dynamics import DynamicsFitConfig, calibrate_dynamics
    from handrail.calibration.dynamics_file import write_dynamics_calibration
    from handrail.calibration.excitation import ExcitationConfig
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile, calibration=args.calibration)
    out = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out.parent / f"{out.stem}_excitation"
    excitation = ExcitationConfig(duration_s=args.duration_s, seed=args.seed)
    fit_config = DynamicsFitConfig(grouping=args.groups, max_iterations=args.iterations)
    print(
        f"exciting {profile.name!r}: {args.repeats} x {args.duration_s:g} s of chirps and steps around home, through "
        "the safety layer"
    )
    with _virtual_hand_or_port(args) as port:
        fit, logs = calibrate_dynamics(
            profile,
            port,
            log_dir,
            excitation=excitation,
            repeats=args.repeats,
            speed_scale=args.speed_scale,
            fit_config=fit_config,
            on_log=lambda path: print(f"  logged {path}"),
        )
    print(fit.format(profile.joint_names))
    print(f"wrote {write_dynamics_calibration(out, fit.calibration)}")
    if args.report:
        report = compare_rollout(logs[0], dynamics=fit.calibration, profile=profile)
        print(f"wrote {report.write(Path(args.report))}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from handrail.calibration.compare import compare_rollout
    from handrail.calibration.dynamics_file import read_dynamics_calibration
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile, calibration=args.calibration) if args.profile or args.calibration else None
    dynamics = read_dynamics_calibration(Path(args.dynamics)) if args.dynamics else None
    report = compare_rollout(Path(args.log), dynamics=dynamics, profile=profile)
    print(report.format())
    out = Path(args.out) if args.out else Path(args.log).with_suffix("").with_name(Path(args.log).stem + "_compare")
    print(f"wrote {report.write(out)}")
    return 0


def _add_hand_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--profile", default=None, help="hand profile TOML (default: the bundled LEAP hand)")
    hand = parser.add_mutually_exclusive_group(required=required)
    hand.add_argument("--port", metavar="DEV", help="serial port of the hand, e.g. /dev/ttyUSB0")
    hand.add_argument("--virtual", action="store_true", help="start a virtual hand for this run")
    parser.add_argument("--reality-seed", type=int, default=0, help="virtual hand: seed of its hidden reality")
    parser.add_argument("--reality-out", metavar="JSON", help="virtual hand: write its hidden reality here")


def add_calibrate_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``calibrate {board,camera,extrinsics,joints,dynamics}`` and ``compare`` on the top-level parser."""
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
        help="T_hand_camera from a board mounted at a known pose on the hand, or (--hand-eye) from a marker on the "
        "index fingertip that the hand moves through several poses",
    )
    source = extrinsics.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="folder of images of the mounted board")
    source.add_argument("--device", metavar="INDEX", type=int, help="live camera index (/dev/videoINDEX)")
    extrinsics.add_argument(
        "--camera-calibration",
        metavar="TOML",
        help="the camera's intrinsics file (with --hand-eye --virtual: optional, default the scene camera's own)",
    )
    extrinsics.add_argument(
        "--board",
        default=None,
        help=_BOARD_HELP.replace(" or chessboard", "; not chessboard")
        + f" (default {_DEFAULT_BOARD}; with --hand-eye: one ArUco marker, aruco:0.03:DICT_4X4_50:7)",
    )
    extrinsics.add_argument(
        "--board-pose",
        metavar="X,Y,Z,RX,RY,RZ",
        help="the board frame in the hand-mount frame: position [m] and rotation vector [deg]; board frame: origin "
        "at the pattern's top-left, x along its columns, y down its rows, z into the board",
    )
    extrinsics.add_argument("--views", type=int, default=10, help="views to use (they are averaged)")
    extrinsics.add_argument("--out", default="extrinsics.toml", help="extrinsics calibration file to write")
    hand_eye = extrinsics.add_argument_group(
        "hand-eye",
        "--hand-eye: the marker rides on the index fingertip (its distal link) and the hand moves it through 12 poses "
        "under the safety limits; each pose's link pose is forward kinematics of the settled joint readings",
    )
    hand_eye.add_argument("--hand-eye", action="store_true", help="hand-eye calibration with the hand in the loop")
    _add_hand_arguments(hand_eye, required=False)
    hand_eye.add_argument(
        "--calibration", default=None, metavar="TOML", help="joints calibration overlay (advised: zero offsets)"
    )
    hand_eye.add_argument("--camera", default="cam_top", help="--virtual: the scene camera to render (cam_top, ...)")
    hand_eye.add_argument("--width", type=int, default=1280, help="--virtual: image width [px]")
    hand_eye.add_argument("--height", type=int, default=960, help="--virtual: image height [px]")
    hand_eye.add_argument("--speed-scale", type=fraction, default=0.5, help="fraction of the profile's speed limits")
    extrinsics.set_defaults(handler=_cmd_calibrate_extrinsics)

    joints = commands.add_parser(
        "joints",
        help="zero offsets and direction signs from the joints' mechanical stops (slow, reduced current); writes "
        "the profile's joints overlay",
    )
    _add_hand_arguments(joints)
    joints.add_argument("--out", default="joints.toml", help="joints calibration (profile overlay) to write")
    joints.add_argument("--report", metavar="JSON", help="also write how each joint was measured")
    joints.add_argument("--joints", metavar="A,B", help="calibrate only these joints (default: all)")
    joints.add_argument("--speed-scale", type=fraction, default=0.6, help="fraction of each joint's max speed")
    joints.add_argument("--current-ma", type=positive, default=250.0, help="current limit while calibrating [mA]")
    joints.set_defaults(handler=_cmd_calibrate_joints)

    dynamics = commands.add_parser(
        "dynamics",
        help="excite the hand (chirps and steps through the safety layer), log it, and fit the sim's actuator and "
        "joint parameters and the command latency with mujoco.sysid; writes a dynamics file",
    )
    _add_hand_arguments(dynamics)
    dynamics.add_argument("--calibration", default=None, help="joints calibration overlay for the profile")
    dynamics.add_argument("--out", default="dynamics.toml", help="dynamics calibration file to write")
    dynamics.add_argument("--log-dir", default=None, help="where the excitation logs go (default: beside --out)")
    dynamics.add_argument("--duration-s", type=float, default=8.0, help="length of one excitation [s]")
    dynamics.add_argument("--repeats", type=int, default=1, help="excitations, each with its own seed")
    dynamics.add_argument("--seed", type=int, default=0, help="seed of the first excitation")
    dynamics.add_argument("--speed-scale", type=fraction, default=1.0, help="fraction of the profile's speed limits")
    dynamics.add_argument(
        "--groups", choices=("joint", "type"), default="joint", help="parameters per joint, or per joint type"
    )
    dynamics.add_argument("--iterations", type=int, default=30, help="optimizer iterations at most")
    dynamics.add_argument("--report", metavar="DIR", help="also write a compare report of the first excitation")
    dynamics.set_defaults(handler=_cmd_calibrate_dynamics)

    compare = subparsers.add_parser(
        "compare",
        help="replay a rollout log in MuJoCo (nominal, and identified with --dynamics); per-joint RMSE, max error, "
        "lag, and the cube's pose divergence when the log has object poses; an HTML report with plots",
    )
    compare.add_argument("log", help="rollout log (.mcap) from handrail deploy/demo or calibrate dynamics")
    compare.add_argument("--dynamics", metavar="TOML", help="dynamics calibration file (handrail calibrate dynamics)")
    compare.add_argument("--profile", default=None, help="hand profile (default: the one in the log's header)")
    compare.add_argument("--calibration", default=None, help="joints calibration overlay for --profile")
    compare.add_argument("--out", default=None, metavar="DIR", help="report folder (default: LOG_compare/ beside it)")
    compare.set_defaults(handler=_cmd_compare)
