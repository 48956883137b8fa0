"""The vision commands of the ``handrail`` CLI: ``vision render``, ``vision train``, ``vision export``, ``vision eval``.

:func:`add_vision_commands` registers them on the CLI's top-level subparsers. Each handler parses, calls one
library function (:mod:`handrail.vision.dataset`, ``pose_training``, ``pose_export``, ``pose_eval``) and
prints. Heavy imports (MuJoCo, torch) happen inside the handlers, so ``handrail --help`` stays fast.
:func:`main` runs ``handrail vision ...`` on its own (``python -m handrail.cli_vision render ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cmd_render(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.sim import leap
    from handrail.vision.crop_view import CropView
    from handrail.vision.dataset import DatasetError, render_dataset
    from handrail.vision.render_config import RenderConfig

    cameras = tuple(leap.CAMERA_NAMES) if args.camera == ["all"] else tuple(args.camera or ["cam_top"])
    try:
        config = RenderConfig(cameras=cameras, view=CropView(size_px=args.size), profile=args.profile)
    except ValueError as error:
        raise DatasetError(f"vision render: {error}") from error
    manifest = render_dataset(
        config,
        args.n,
        Path(args.out),
        seed=args.seed,
        workers=args.workers,
        shard_size=args.shard_size,
        progress=not args.no_progress,
    )
    print(
        f"wrote {manifest.n} samples ({len(manifest.shards)} shards, seed {manifest.seed}, cameras "
        f"{', '.join(cameras)}) to {manifest.folder}; {manifest.raw['render_seconds']} s of rendering in all"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from handrail.vision.pose_training import PoseTrainConfig, train_pose_model

    config = PoseTrainConfig(
        data=Path(args.data),
        out=Path(args.out),
        epochs=args.epochs,
        minutes=args.minutes,
        seed=args.seed,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        width=args.width,
        threads=args.threads,
        max_steps=args.max_steps,
        resume=args.resume,
        export=not args.no_export,
        progress=not args.no_progress,
    )
    result = train_pose_model(config)
    print(f"trained {result.epochs} epochs ({result.steps} steps) in {result.wall_seconds:.0f} s: {result.metrics}")
    print(f"checkpoint {result.latest_checkpoint}; metrics {result.out / 'metrics.csv'}")
    if result.model_path is not None:
        print(f"wrote {result.model_path}")
        print(f"next: handrail vision eval {result.model_path} --data HELDOUT   (render HELDOUT with another --seed)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from handrail.vision.pose_export import export_pose_model

    report = export_pose_model(Path(args.checkpoint), Path(args.out))
    print(
        f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB); onnxruntime vs torch on {report.parity_images} "
        f"images: position {report.max_position_diff_m:.2g} m, quaternion {report.max_quat_diff:.2g}, "
        f"confidence {report.max_confidence_diff:.2g}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from handrail.vision.pose_eval import evaluate_pose_model

    report = evaluate_pose_model(
        Path(args.model),
        Path(args.data),
        limit=args.limit,
        min_confidence=args.min_confidence,
        progress=not args.no_progress and not args.json,
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.format())
    return 0


def add_vision_commands(commands: Any) -> None:
    """Register ``vision {render,train,export,eval}`` on the CLI's top-level subparsers."""
    vision = commands.add_parser("vision", help="synthetic renders, the cube pose CNN and its evaluation")
    subcommands = vision.add_subparsers(dest="vision_command", metavar="SUBCOMMAND", required=True)

    render = subcommands.add_parser(
        "render", help="render a domain-randomized dataset of the cube in the hand (progress bar, workers, resumable)"
    )
    render.add_argument("--n", type=int, required=True, help="number of samples")
    render.add_argument("--out", required=True, help="dataset folder (an existing one with the same settings resumes)")
    render.add_argument(
        "--seed", type=int, default=0, help="randomization seed; held-out sets need another (default 0)"
    )
    render.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    render.add_argument(
        "--camera",
        action="append",
        default=None,
        help="scene camera to jitter around, repeatable, or 'all' (default cam_top)",
    )
    render.add_argument("--size", type=int, default=128, help="crop-view image size [px] (default 128)")
    render.add_argument("--shard-size", type=int, default=256, help="samples per shard file (default 256)")
    render.add_argument("--profile", default=None, help="profile TOML (default: the bundled LEAP hand)")
    render.add_argument("--no-progress", action="store_true", help="no progress bar")
    render.set_defaults(handler=_cmd_render)

    train = subcommands.add_parser(
        "train", help="train the pose CNN on a rendered dataset, then export it to RUN/pose_model.onnx"
    )
    train.add_argument("--data", required=True, help="dataset folder from `handrail vision render`")
    train.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, run.json, pose_model.onnx")
    train.add_argument("--epochs", type=int, default=None, help="total epochs of the run")
    train.add_argument("--minutes", type=float, default=None, help="total wall-time budget of the run [min]")
    train.add_argument("--seed", type=int, default=0, help="seed of the initialization and batches (default 0)")
    train.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    train.add_argument("--width", type=int, default=24, help="network width: channels of the first stage (default 24)")
    train.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    train.add_argument("--max-steps", type=int, default=None, help="also stop after this many optimizer steps")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest.pt")
    train.add_argument("--no-export", action="store_true", help="do not export pose_model.onnx at the end")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_cmd_train)

    export = subcommands.add_parser("export", help="export a pose checkpoint to ONNX (checker + onnxruntime parity)")
    export.add_argument("checkpoint", help="checkpoint .pt or run folder (its latest.pt)")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.set_defaults(handler=_cmd_export)

    evaluate = subcommands.add_parser(
        "eval", help="CNN and fiducial baseline side by side on a held-out dataset (errors, detection, ms/frame)"
    )
    evaluate.add_argument("model", help="pose model .onnx (or a run folder holding pose_model.onnx)")
    evaluate.add_argument("--data", required=True, help="held-out dataset rendered with seeds unseen in training")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N frames")
    evaluate.add_argument(
        "--min-confidence", type=float, default=0.2, help="CNN estimates below this count as not detected (0.2)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_cmd_eval)


def main(argv: Sequence[str] | None = None) -> int:
    """``handrail vision ...`` on its own: ``argv`` starts at the subcommand (``["render", "--n", "64", ...]``)."""
    from handrail.errors import HandrailError

    parser = argparse.ArgumentParser(prog="handrail")
    add_vision_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["vision", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except HandrailError as error:
        print(f"handrail: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
