"""``handrail deploy`` and ``handrail demo``: a policy file on the hand (or the virtual hand), logged."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handrail.cli_types import fraction

DEPLOY_EXIT_CODES = """exit codes:
  0  the time is up, or an operator stop (Ctrl-C, SIGTERM): torque off
  2  bad input: profile, calibration, or a policy that does not match the hand (nothing touched)
  3  safe stop: a safety fault, a non-finite policy output or an unexpected error (torque off or hold)
  4  the hand did not start (port, power, motor ids): nothing moved; see `handrail doctor`
"""


def _cmd_deploy(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.deploy.loop import LoopConfig
    from handrail.deploy.rollout_reader import read_rollout_log
    from handrail.deploy.rollout_summary import format_deploy_summary, summarize
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile, calibration=args.calibration)
    config = LoopConfig(seconds=args.seconds)
    with _live_view(args) as view:
        outcome = _deploy_on(args, profile, config, view)
    hand = args.port or f"a virtual hand (reality seed {args.reality_seed})"
    if not outcome.started:
        doctor = "handrail doctor" + (f" --port {args.port}" if args.port else "")
        print(
            f"handrail: error: {outcome.result.stop_reason}\n"
            f"  nothing moved; check the port, the power and the motor ids with `{doctor}`",
            file=sys.stderr,
        )
        return outcome.result.exit_code
    summary = summarize(read_rollout_log(outcome.log_path))
    print(
        format_deploy_summary(
            summary, hand=hand, exit_code=outcome.result.exit_code, stop_reason=outcome.result.stop_reason
        )
    )
    return outcome.result.exit_code


@contextlib.contextmanager
def _live_view(args: argparse.Namespace) -> Iterator[Any]:
    """The Foxglove live view when ``--view`` asks for one (on 127.0.0.1 only), else None."""
    if not args.view:
        yield None
        return
    from handrail.deploy.live_view import LiveView

    with LiveView(args.view_port) as view:
        print(f"live view: {view.url} — in Foxglove: Open connection, Foxglove WebSocket, {view.url}", flush=True)
        yield view


def _deploy_on(args: argparse.Namespace, profile: Any, config: Any, view: Any) -> Any:
    from handrail.deploy.run import run_deploy

    if args.port is not None:
        from handrail.deploy.pose_source import NoPose

        return run_deploy(
            args.policy,
            profile,
            args.port,
            NoPose(),
            config=config,
            out_dir=Path(args.out),
            speed_scale=args.speed_scale,
            view=view,
        )
    else:
        from handrail.deploy.pose_source import GroundTruthPose
        from handrail.robot.emulator import VirtualHandProcess

        print(f"no --port: deploying on a virtual hand (reality seed {args.reality_seed}, pose: ground truth)")
        with VirtualHandProcess(args.profile, reality_seed=args.reality_seed) as vhand:
            return run_deploy(
                args.policy,
                profile,
                vhand.port,
                GroundTruthPose(vhand, profile),
                config=config,
                out_dir=Path(args.out),
                speed_scale=args.speed_scale,
                extra={"reality_seed": args.reality_seed},
                view=view,
            )


DEMO_EXIT_CODES = """exit codes:
  0  the run kept every limit (a safe stop by the safety layer included: stopping the hand is its job)
  1  the log shows a limit broken
  2  bad input (a policy, a profile)
  4  the virtual hand did not start: nothing ran, nothing to score
"""


def _cmd_demo(args: argparse.Namespace) -> int:
    from handrail.deploy.run import EXIT_NOT_STARTED

    with _live_view(args) as view:
        summary = _run_demo(args, view)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    if summary.exit_code == EXIT_NOT_STARTED:  # no run: no scores to print, and not a success
        print(f"handrail: error: the demo did not run: {summary.stop_reason}", file=sys.stderr)
        return EXIT_NOT_STARTED
    if not args.json:
        print(summary.format())
    return summary.demo_exit_code


def _run_demo(args: argparse.Namespace, view: Any) -> Any:
    from handrail.deploy.demo import run_demo

    return run_demo(
        view=view,
        seconds=args.seconds,
        reality_seed=args.reality_seed,
        out_dir=Path(args.out),
        policy=args.policy,
        pose=args.pose,
        pose_model=args.pose_model,
        compare=not args.no_compare,
        video=not args.no_video,
        profile_path=args.profile,
    )


def _add_view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--view", action="store_true", help="stream the loop live to Foxglove (a WebSocket server on 127.0.0.1 only)"
    )
    parser.add_argument("--view-port", type=int, default=8765, help="port of the live view (default 8765)")


def add_deploy_commands(commands: Any) -> None:
    """Register ``deploy`` and ``demo`` on the CLI's subparsers."""
    deploy = commands.add_parser(
        "deploy",
        help="run an ONNX policy on the hand at a fixed rate behind the safety layer, logged to MCAP",
        description="Run an ONNX policy on the hand at a fixed rate behind the safety layer, logged to MCAP.",
        epilog=DEPLOY_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deploy.add_argument("--policy", required=True, help="the policy file (.onnx, with handrail metadata)")
    deploy.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    deploy.add_argument("--calibration", default=None, help="joints calibration overlay TOML")
    deploy.add_argument("--port", default=None, help="serial port of the hand (default: start a virtual hand)")
    deploy.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    deploy.add_argument("--out", default="out", help="folder for the rollout log (default out/)")
    deploy.add_argument("--speed-scale", type=fraction, default=1.0, help="tighten every speed limit, in (0, 1]")
    deploy.add_argument("--reality-seed", type=int, default=0, help="reality seed of the virtual hand")
    _add_view_arguments(deploy)
    deploy.set_defaults(handler=_cmd_deploy)

    demo = commands.add_parser(
        "demo",
        help="the main job: the bundled policy turns the cube on the virtual hand; prints the scores",
        description="The main job: the bundled policy turns the cube on the virtual hand; prints the scores.",
        epilog=DEMO_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--seconds", type=float, default=30.0, help="policy run time [s] (default 30)")
    demo.add_argument("--reality-seed", type=int, default=0, help="reality seed of the virtual hand (default 0)")
    demo.add_argument("--out", default="out/demo", help="folder for the rollout log (default out/demo)")
    demo.add_argument("--policy", default=None, help="another policy file (default: the bundled one)")
    demo.add_argument(
        "--pose",
        choices=("ground-truth", "camera", "aruco"),
        default="ground-truth",
        help="object pose: the simulator's truth (default), a virtual camera + the pose CNN (camera), "
        "or a virtual camera + the ArUco baseline (aruco)",
    )
    demo.add_argument("--pose-model", default=None, help="pose model file for --pose camera (default: the bundled one)")
    demo.add_argument(
        "--profile", default=None, help="hand profile TOML of the virtual hand (default: the bundled LEAP hand)"
    )
    demo.add_argument("--no-compare", action="store_true", help="skip the sim-vs-real report of the run")
    demo.add_argument("--no-video", action="store_true", help="skip the videos of the run (handrail log video)")
    demo.add_argument("--json", action="store_true", help="machine-readable summary")
    _add_view_arguments(demo)
    demo.set_defaults(handler=_cmd_demo)
