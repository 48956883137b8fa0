"""The rollout-log commands of the ``handrail`` CLI: ``log info``, ``log export`` and ``log video``.

:func:`add_log_commands` registers them on the CLI's top-level subparsers. Each handler reads the log with
:func:`handrail.deploy.rollout_reader.read_rollout_log`, calls one library function and prints; errors are
:class:`~handrail.deploy.rollout_log.RolloutLogError` (a :class:`~handrail.errors.HandrailError`), which
``handrail.cli.main`` prints and turns into exit code 2. A log cut short by a crash is read up to its last
complete chunk and reported as truncated, not refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from handrail.cli_types import positive


def _cmd_log_info(args: argparse.Namespace) -> int:
    from handrail.deploy.rollout_reader import read_rollout_log
    from handrail.deploy.rollout_summary import format_summary, summarize

    summary = summarize(read_rollout_log(Path(args.file)))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_log_export(args: argparse.Namespace) -> int:
    from handrail.deploy.rollout_reader import export_csv, read_rollout_log

    log = read_rollout_log(Path(args.file))
    if log.truncated:
        print(f"note: {args.file} is truncated ({log.truncation_reason}); exporting the {log.n_ticks} ticks it holds")
    for path in export_csv(log, Path(args.csv)):
        print(f"wrote {path}")
    return 0


def _cmd_log_video(args: argparse.Namespace) -> int:
    from handrail.deploy.log_video import VideoConfig, render_log_video
    from handrail.robot.profile import load_profile

    cameras = tuple(name.strip() for name in args.camera.split(",")) if args.camera else ("cam_front",)
    config = VideoConfig(cameras=cameras, fps=args.fps, speed=args.speed, width=args.width, height=args.height)
    profile = load_profile(args.profile)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".webm")
    print(render_log_video(Path(args.file), out, profile, config).format())
    return 0


def add_log_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``log {info,export}`` on the CLI's top-level ``subparsers``."""
    log = subparsers.add_parser("log", help="summarize and export rollout logs (MCAP)")
    commands = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)

    info = commands.add_parser(
        "info", help="summarize a rollout log: duration, rate, tick-time percentiles, faults, interventions"
    )
    info.add_argument("file", help="rollout log .mcap (a truncated one from a crash is fine)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON (for programs)")
    info.set_defaults(handler=_cmd_log_info)

    export = commands.add_parser(
        "export", help="write a rollout log as CSV (ticks, interventions, events) plus header.json, for pandas"
    )
    export.add_argument("file", help="rollout log .mcap")
    export.add_argument("--csv", required=True, metavar="DIR", help="folder to write the CSV files into")
    export.set_defaults(handler=_cmd_log_export)

    video = commands.add_parser(
        "video",
        help="render a rollout log as a video (WebM): the measured joints and the logged cube in the hand's scene",
    )
    video.add_argument("file", help="rollout log .mcap (a truncated one from a crash is fine)")
    video.add_argument("--out", help="video file to write, *.webm (default: beside the log)")
    video.add_argument("--profile", help="hand profile TOML (default: the bundled LEAP hand)")
    video.add_argument("--camera", default="cam_front", help="scene camera(s), comma-separated, or all (side by side)")
    video.add_argument("--speed", type=positive, default=1.0, help="log seconds per video second (2: twice as fast)")
    video.add_argument("--fps", type=positive, default=15.0, help="frames per second of the video")
    video.add_argument("--width", type=int, default=400, help="width of each camera's view [px]")
    video.add_argument("--height", type=int, default=300, help="height of each camera's view [px]")
    video.set_defaults(handler=_cmd_log_video)
