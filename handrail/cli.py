"""The ``handrail`` command line: parse, call one library function, print.

Each subcommand lives in a small ``_cmd_*`` function that calls into the library; every feature here is
usable from Python without the CLI.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from handrail import __version__
from handrail.cli_calibrate import add_calibrate_commands
from handrail.cli_deploy import add_deploy_commands
from handrail.cli_log import add_log_commands
from handrail.cli_policy import add_policy_commands
from handrail.cli_train import add_training_commands
from handrail.cli_types import fraction
from handrail.cli_vision import add_vision_commands
from handrail.errors import HandrailError

# What a regular install (no extras) cannot run, by command: the extra to install and the modules it brings.
# Everything else — the demo and its sim-vs-real report (matplotlib), deploy, check, emulate, compare, camera
# and joint calibration — runs on the regular dependencies.
TRAIN_EXTRA = ("train", ("torch", "onnx", "gymnasium", "stable_baselines3", "tensorboard"))
CALIBRATE_EXTRA = ("calibrate", ("scipy",))
EXTRA_FOR_COMMAND: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {
    ("train",): TRAIN_EXTRA,
    ("eval",): TRAIN_EXTRA,
    ("export",): TRAIN_EXTRA,
    ("policy", "annotate"): TRAIN_EXTRA,
    ("vision", "train"): TRAIN_EXTRA,
    ("vision", "export"): TRAIN_EXTRA,
    ("calibrate", "dynamics"): CALIBRATE_EXTRA,  # mujoco.sysid needs scipy (mujoco[sysid])
    ("calibrate", "extrinsics", "--hand-eye"): CALIBRATE_EXTRA,  # the hand-eye refinement: scipy.optimize
}


class MissingExtraError(HandrailError):
    """A command needs an optional extra that is not installed."""


def _command_path(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[str, ...]:
    """The subcommand names in ``argv`` (``("policy", "annotate")``), following the parser's subparsers."""
    path: list[str] = []
    choices = _subcommands(parser)
    for token in argv:
        if token in choices:
            path.append(token)
            choices = _subcommands(choices[token])
    return tuple(path)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def require_extra(command: Sequence[str], argv: Sequence[str] = ()) -> None:
    """Refuse ``command`` (with the options in ``argv``) when an extra it needs is missing, naming the pip
    command that installs it (MissingExtraError). Run before the command starts, so nothing moves first."""
    keys = [tuple(command[:1]), tuple(command[:2]), *((*command[:2], token) for token in argv if token[:2] == "--")]
    needed = next((EXTRA_FOR_COMMAND[key] for key in reversed(keys) if key in EXTRA_FOR_COMMAND), None)
    if needed is None:
        return
    extra, modules = needed
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(_install_hint(command, missing, extra))


def _install_hint(command: Sequence[str], modules: Sequence[str], extra: str) -> str:
    return f"`handrail {' '.join(command)}` needs {', '.join(modules)}, from the '{extra}' extra: " + (
        f"pip install 'handrail[{extra}]'"
    )


def _missing_extra_message(error: ModuleNotFoundError, command: Sequence[str]) -> str | None:
    """The install hint for a module of an extra that an import deep inside a command did not find."""
    root = (error.name or "").split(".")[0]
    for extra, modules in (TRAIN_EXTRA, CALIBRATE_EXTRA):
        if root in modules:
            return _install_hint(command, [root], extra)
    return None


def _cmd_profile_show(args: argparse.Namespace) -> int:
    from handrail.robot.profile import format_profile_table, load_profile

    profile = load_profile(args.profile, calibration=args.calibration)
    print(format_profile_table(profile))
    return 0


def _cmd_model_render(args: argparse.Namespace) -> int:
    # Headless rendering needs a GL backend chosen before mujoco is imported.
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.robot.profile import load_profile
    from handrail.sim.model import build_scene_for_profile
    from handrail.sim.render import render_home_pose

    profile = load_profile(args.profile)
    model = build_scene_for_profile(profile)
    written = render_home_pose(model, Path(args.out), width=args.width, height=args.height)
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.robot.emulator import run_emulator
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile)
    return run_emulator(
        profile,
        args.reality_seed,
        reality_out=Path(args.reality_out) if args.reality_out else None,
        faults=args.fault,
        control_path=Path(args.control) if args.control else None,
        seconds=args.seconds,
        json_ready=args.json,
    )


def _cmd_doctor(args: argparse.Namespace) -> int:
    from handrail.robot.doctor import format_reports, run_doctor
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile)
    reports = run_doctor(profile, args.port)
    print(format_reports(profile, reports))
    return 1 if any(report.warnings for report in reports) else 0


def _cmd_check(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.robot.check_hand import check_hand
    from handrail.robot.emulator import VirtualHandProcess
    from handrail.robot.profile import load_profile
    from handrail.robot.safety_limits import SafetyLimits

    profile = load_profile(args.profile, calibration=args.calibration)
    SafetyLimits.from_profile(profile, speed_scale=args.speed_scale)  # refuse a loosening scale up front
    if args.port is None:
        print(f"no --port: checking a virtual hand (reality seed {args.reality_seed})")
        with VirtualHandProcess(args.profile, reality_seed=args.reality_seed) as vhand:
            report = check_hand(profile, vhand.port, speed_scale=args.speed_scale, seconds=args.seconds)
    else:
        report = check_hand(profile, args.port, speed_scale=args.speed_scale, seconds=args.seconds)
    print(report.format())
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="handrail",
        description="Sim-to-real for dexterous hands: train in randomized MuJoCo, deploy safely.",
    )
    parser.add_argument("--version", action="version", version=f"handrail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    profile = commands.add_parser("profile", help="inspect and validate hand profiles")
    profile_commands = profile.add_subparsers(dest="profile_command", metavar="SUBCOMMAND", required=True)
    show = profile_commands.add_parser("show", help="validate a hand profile and print it as a table")
    show.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    show.add_argument("--calibration", default=None, help="calibration overlay TOML to apply")
    show.set_defaults(handler=_cmd_profile_show)

    model = commands.add_parser("model", help="the MuJoCo model of the hand and its scene")
    model_commands = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    render = model_commands.add_parser(
        "render", help="render the hand in its home pose from every scene camera (one PNG per camera)"
    )
    render.add_argument("--out", default="hand.png", help="base path; writes <stem>_<camera>.png beside it")
    render.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    render.add_argument("--width", type=int, default=640, help="image width in pixels")
    render.add_argument("--height", type=int, default=480, help="image height in pixels")
    render.set_defaults(handler=_cmd_model_render)

    emulate = commands.add_parser(
        "emulate",
        help="run the virtual hand: MuJoCo behind a pseudo-terminal speaking Dynamixel Protocol 2.0",
    )
    emulate.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    emulate.add_argument("--reality-seed", type=int, default=0, help="seed of the hidden reality (default 0)")
    emulate.add_argument("--reality-out", default=None, help="write the drawn reality (sealed copy) as JSON here")
    emulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[=VALUE]",
        help="fault at start, repeatable: drop=0.5, lose=2 (the next N packets), corrupt=0.5, delay=100 (ms), "
        "disconnect, stuck=JOINT, overload=JOINT, overheat=JOINT, heat=JOINT (a slow ramp)",
    )
    emulate.add_argument("--control", default=None, help="control socket path (default: a fresh temp folder)")
    emulate.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    emulate.add_argument("--json", action="store_true", help="print the ready line as JSON (for programs)")
    emulate.set_defaults(handler=_cmd_emulate)

    doctor = commands.add_parser("doctor", help="check serial ports: what answers, latency timer, permissions")
    doctor.add_argument("--port", default=None, help="only this port (default: every serial port found)")
    doctor.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    doctor.set_defaults(handler=_cmd_doctor)

    check = commands.add_parser(
        "check", help="conformance run behind the safety layer: every joint follows a slow sine under the limits"
    )
    check.add_argument("--port", default=None, help="serial port of the hand (default: start a virtual hand)")
    check.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    check.add_argument("--calibration", default=None, help="calibration overlay TOML to apply")
    check.add_argument(
        "--speed-scale", type=fraction, default=1.0, help="tighten every speed limit by this factor, in (0, 1]"
    )
    check.add_argument("--seconds", type=float, default=4.0, help="duration of the run")
    check.add_argument("--reality-seed", type=int, default=0, help="reality seed of the virtual hand")
    check.set_defaults(handler=_cmd_check)
    add_training_commands(commands)
    add_policy_commands(commands)
    add_log_commands(commands)
    add_deploy_commands(commands)
    add_calibrate_commands(commands)
    add_vision_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 2 usage or input error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    command = _command_path(parser, argv)
    try:
        require_extra(command, argv)
        return handler(args)
    except HandrailError as error:
        print(f"handrail: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        message = _missing_extra_message(error, command)
        if message is None:
            raise
        print(f"handrail: error: {message}", file=sys.stderr)
        return 2
