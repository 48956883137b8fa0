"""Bundle a trained rotate-z policy: export it, score it, run it on the virtual hand, and write its record.

    python scripts/record_policy.py RUN [--episodes 64] [--demo-seeds 1 2 3 4 5] [--demo-seconds 30]

RUN is a ``handrail train`` run folder. Each step is one of the repo's own commands, run through the CLI
(``handrail.cli.main``), and its command line is recorded:

1. ``handrail export RUN/latest.pt --out deploy/policies/leap_rotate_z.onnx``;
2. ``handrail eval POLICY --no-dr|--dr --episodes N --json`` and the sim-to-sim check ``--sim fine``
   (the MJCF's own physics, the virtual hand's timestep and solver);
3. ``handrail demo --seconds S --reality-seed K --json`` for each seed (the virtual hand, through the
   safety layer);
4. a learning curve (``leap_rotate_z_learning.png``): the training episodes' cube angular velocity and the
   share of episodes ended by a drop or a safety stop, against environment steps, from ``progress.csv``.

The record (``deploy/policies/leap_rotate_z.json``) holds the commands, the run's facts (run.json), the
scores, the demo table and the file's SHA-256; ``tests/deploy/test_bundled_policy.py`` checks it against the
file and re-measures part of it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "policies" / "leap_rotate_z.onnx"


def _cli_json(arguments: list[str]) -> dict[str, Any]:
    """Run ``handrail ARGUMENTS --json`` as its own process, as a user does; its JSON output and exit code.

    (In one process, demos after the evaluations missed the virtual hand's 20 ms status deadlines.)
    """
    done = subprocess.run(
        [sys.executable, "-m", "handrail", *arguments], capture_output=True, text=True, check=False, cwd=ROOT
    )
    text = done.stdout
    if "{" not in text:
        raise SystemExit(f"handrail {' '.join(arguments)} printed no JSON (exit {done.returncode}):\n{done.stderr}")
    document = json.loads(text[text.index("{") :])
    document["exit_code"] = done.returncode
    return document


def _learning_curve(run: Path, out: Path, bundled_steps: int) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # SB3 starts progress.csv anew on --resume: earlier phases are kept as progress_phase*.csv beside it.
    files = [*sorted(run.glob("progress_phase*.csv")), run / "progress.csv"]
    rows = [row for path in files for row in csv.DictReader(path.open()) if row.get("task/terminated")]
    rows.sort(key=lambda row: float(row["time/total_timesteps"]))
    steps = [float(row["time/total_timesteps"]) / 1e6 for row in rows]
    spin = [float(row["task/cube_angular_velocity_z_rad_s"]) for row in rows]
    phases = [float(row["time/total_timesteps"]) / 1e6 for row in (next(csv.DictReader(p.open())) for p in files[1:])]
    failed = [float(row["task/terminated"]) for row in rows]
    ended = [float(row["rollout/ep_len_mean"]) for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(steps, spin, lw=1)
    top.axhline(1.0, color="grey", ls="--", lw=0.8, label="target 1 rad/s")
    top.set_ylabel("cube angular velocity\nabout z [rad/s]")
    top.set_title(f"rotate-z training ({run.name}): training episodes, randomized")
    for start in phases:  # a resume with new task settings (a curriculum step)
        for axis in (top, bottom):
            axis.axvline(start, color="black", lw=0.6, ls=":")
    top.axvline(bundled_steps / 1e6, color="tab:purple", lw=1.2, label="bundled checkpoint")
    bottom.axvline(bundled_steps / 1e6, color="tab:purple", lw=1.2)
    top.legend(loc="upper left")
    bottom.plot(steps, failed, lw=1, color="tab:red", label="ended by a drop or safety stop")
    bottom.set_ylabel("share of ended episodes")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("environment steps [millions]")
    twin = bottom.twinx()
    twin.plot(steps, ended, lw=0.8, color="tab:green", alpha=0.6, label="mean episode length")
    twin.set_ylabel("episode length [steps]")
    bottom.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return {"png": str(out.relative_to(ROOT)), "points": len(rows), "final_spin_rad_s": spin[-1] if spin else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    parser.add_argument("--demo-seconds", type=float, default=30.0)
    parser.add_argument("--demo-out", type=Path, default=Path("out/record"))
    parser.add_argument("--notes", action="append", default=[])
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint to bundle (default: RUN/latest.pt)")
    parser.add_argument(
        "--train-command",
        action="append",
        default=[],
        help="each training command of the run in order (its first and --resume phases); default: run.json's",
    )
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.cli import main as cli

    started = time.monotonic()
    run = args.run
    checkpoint = args.checkpoint or run / "latest.pt"
    export = ["export", str(checkpoint), "--out", str(POLICY.relative_to(ROOT))]
    if cli(export) != 0:
        raise SystemExit("export failed")
    policy = str(POLICY.relative_to(ROOT))
    evals: dict[str, Any] = {}
    for name, flags in (
        ("eval_no_dr", ["--no-dr"]),
        ("eval_dr", ["--dr"]),
        ("eval_fine_no_dr", ["--no-dr", "--sim", "fine"]),
    ):
        arguments = ["eval", policy, *flags, "--episodes", str(args.episodes), "--json"]
        evals[name] = {"command": "handrail " + " ".join(arguments), **_cli_json(arguments)}
        print(f"{name}: {evals[name]['mean_angular_velocity_rad_s']:+.3f} rad/s, drops {evals[name]['drop_rate']:.1%}")
    demos = []
    for seed in args.demo_seeds:
        out = args.demo_out / f"demo_seed{seed}"
        arguments = ["demo", "--seconds", f"{args.demo_seconds:g}", "--reality-seed", str(seed), "--json"]
        summary = _cli_json([*arguments, "--out", str(out), "--no-compare"])
        demos.append(
            {
                "command": "handrail " + " ".join(arguments),
                "reality_seed": seed,
                "rotation_rad": summary["rotation_rad"],
                "mean_angular_velocity_rad_s": summary["mean_angular_velocity_rad_s"],
                "policy_seconds": summary["policy_seconds"],
                "drops": summary["drops"],
                "first_drop_s": summary.get("first_drop_s"),
                "safe_stop": summary["safe_stop"],
                "stop_reason": summary["stop_reason"],
                "limit_violations": summary["limit_violations"],
                "limit_violations_by_kind": summary["limit_violations_by_kind"],
                "safety_interventions": summary["safety_interventions"],
                "exit_code": summary["exit_code"],
            }
        )
        print(f"demo seed {seed}: {summary['mean_angular_velocity_rad_s']:+.3f} rad/s, drops {summary['drops']}")
    record_run = json.loads((run / "run.json").read_text())
    words = (record_run.get("command") or "handrail train").split()
    from handrail.sim.checkpoint import load_checkpoint

    bundled_steps = load_checkpoint(checkpoint).num_timesteps
    curve = _learning_curve(run, POLICY.with_name("leap_rotate_z_learning.png"), bundled_steps)
    record = {
        "policy": policy,
        "sha256": hashlib.sha256(POLICY.read_bytes()).hexdigest(),
        "produced_by": [*(args.train_command or [" ".join(["handrail", *words[1:]])]), "handrail " + " ".join(export)],
        "seed": record_run.get("seed"),
        "checkpoint": {"path": str(checkpoint), "steps": bundled_steps},
        "training": record_run,
        "learning_curve": curve,
        **evals,
        "virtual_hand_demos": demos,
        "record_wall_s": round(time.monotonic() - started, 1),
        "notes": args.notes,
    }
    POLICY.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {POLICY.with_suffix('.json')}")


if __name__ == "__main__":
    main()
