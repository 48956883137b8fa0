"""The rollout-log commands of the ``handrail`` CLI: ``log info`` and ``log export``.

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
