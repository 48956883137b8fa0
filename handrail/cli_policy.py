"""The policy-file commands of the ``handrail`` CLI: ``export`` and ``policy info|annotate|check``.

:func:`add_policy_commands` registers them on the CLI's top-level subparsers. Each handler parses, calls one
library function (:mod:`handrail.sim.export`, :mod:`handrail.deploy.policy_file`,
:mod:`handrail.deploy.policy_match`) and prints; errors are :class:`~handrail.errors.HandrailError`, which
``handrail.cli.main`` prints and turns into exit code 2. torch is imported only by ``export`` and
``annotate --from-checkpoint``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    from handrail.sim.export import export_policy

    report = export_policy(
        Path(args.checkpoint),
        Path(args.out),
        parity_samples=args.parity_samples,
        seed=args.seed,
        profile=Path(args.profile) if args.profile else None,
    )
    print(report.format())
    return 0


def _cmd_policy_info(args: argparse.Namespace) -> int:
    from handrail.deploy.policy_file import describe_policy

    print(describe_policy(Path(args.file)))
    return 0


def _read_metadata_json(path: Path) -> dict[str, Any]:
    from handrail.deploy.policy_file import PolicyFileError

    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise PolicyFileError(f"--metadata {path} cannot be read: {error}") from error
    except ValueError as error:
        raise PolicyFileError(f"--metadata {path} is not valid JSON: {error} — fix the file") from error
    if not isinstance(document, dict):
        raise PolicyFileError(f"--metadata {path} must hold a JSON object of policy metadata fields")
    return document


def _cmd_policy_annotate(args: argparse.Namespace) -> int:
    from handrail.sim.export import annotate_policy

    if args.from_checkpoint is not None:
        from handrail.sim.checkpoint import load_checkpoint

        metadata: dict[str, Any] = dict(load_checkpoint(Path(args.from_checkpoint)).info)
        source = f"checkpoint {args.from_checkpoint}"
    else:
        metadata = _read_metadata_json(Path(args.metadata))
        source = f"--metadata {args.metadata}"
    out = Path(args.out) if args.out is not None else Path(args.file)
    written = annotate_policy(Path(args.file), out, metadata, source=source)
    print(f"wrote {out}: {written.task} policy for {written.profile_name} ({written.n_obs} obs -> {written.n_act})")
    return 0


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from handrail.deploy.policy_match import check_policy_file
    from handrail.robot.profile import load_profile

    profile = load_profile(args.profile, calibration=args.calibration)
    _, warnings = check_policy_file(Path(args.file), profile, history=args.history)
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"policy {args.file} matches hand {profile.name!r}: joints, control rate, observation and safety limits")
    return 0


def add_policy_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``policy {info,annotate,check}`` on the CLI's top-level ``subparsers``."""
    export = subparsers.add_parser(
        "export", help="export a training checkpoint to an ONNX policy file, checked for parity with onnxruntime"
    )
    export.add_argument("checkpoint", help="checkpoint .pt file, or a run folder (uses its latest.pt)")
    export.add_argument("--out", required=True, help="policy file to write, e.g. policy.onnx")
    export.add_argument("--parity-samples", type=int, default=1000, help="random observations for the parity check")
    export.add_argument("--seed", type=int, default=0, help="seed of the parity observations")
    export.add_argument(
        "--profile", default=None, help="hand profile TOML the checkpoint must have been trained for (a check)"
    )
    export.set_defaults(handler=_cmd_export)

    policy = subparsers.add_parser("policy", help="inspect, annotate and check ONNX policy files")
    commands = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)

    info = commands.add_parser("info", help="print a policy file's metadata and inputs/outputs")
    info.add_argument("file", help="policy .onnx")
    info.set_defaults(handler=_cmd_policy_info)

    annotate = commands.add_parser(
        "annotate", help="add handrail metadata to an ONNX policy (e.g. one exported by another tool)"
    )
    annotate.add_argument("file", help="ONNX file to annotate")
    annotate.add_argument("--out", default=None, help="file to write (default: replace FILE in place)")
    source = annotate.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-checkpoint", default=None, help="take the metadata from this training checkpoint")
    source.add_argument("--metadata", default=None, help="take the metadata from this JSON file")
    annotate.set_defaults(handler=_cmd_policy_annotate)

    check = commands.add_parser("check", help="refuse a policy whose metadata does not match the hand, listing why")
    check.add_argument("file", help="policy .onnx")
    check.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    check.add_argument("--calibration", default=None, help="calibration overlay TOML to apply")
    check.add_argument(
        "--history", type=int, default=None, help="observation history the runtime will build (default: the policy's)"
    )
    check.set_defaults(handler=_cmd_policy_check)
