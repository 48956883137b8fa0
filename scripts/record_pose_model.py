"""Bundle a trained pose model: copy it to vision/models/cube_pose.onnx and write its record beside it.

    python scripts/record_pose_model.py RUN EVAL_JSON --render-command "..." --heldout-command "..."
        --eval-command "..."

RUN is a ``handrail vision train`` run folder (its ``pose_model.onnx`` and ``run.json``), EVAL_JSON the output
of ``handrail vision eval RUN --data HELDOUT --json``. The record holds the commands, the training facts from
run.json, the evaluation and the model's SHA-256 (tests/vision/test_bundled_pose_model.py checks them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "vision" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("--render-command", required=True)
    parser.add_argument("--heldout-command", required=True)
    parser.add_argument("--heldout-seed", type=int, required=True)
    parser.add_argument("--eval-command", required=True)
    parser.add_argument("--notes", action="append", default=[])
    args = parser.parse_args()

    run = json.loads((args.run / "run.json").read_text())
    # The command as a user types it (run.json has the console script's full path).
    words = run.get("command", "handrail vision train").split()
    run["command"] = " ".join(["handrail", *words[1:]])
    evaluation = json.loads(args.eval_json.read_text())
    MODELS.mkdir(parents=True, exist_ok=True)
    model = MODELS / "cube_pose.onnx"
    shutil.copyfile(args.run / "pose_model.onnx", model)
    record = {
        "model": "vision/models/cube_pose.onnx",
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "size_bytes": model.stat().st_size,
        "produced_by": [
            args.render_command,
            run["command"],
            f"cp {args.run}/pose_model.onnx vision/models/cube_pose.onnx",
        ],
        "evaluated_by": [args.heldout_command, args.eval_command],
        "training": run,
        "eval": {**evaluation, "heldout_seed": args.heldout_seed},
        "targets": {
            "median_position_error_mm": 3.0,
            "median_rotation_error_deg": 3.0,
            "frames_per_s_one_core": 200,
        },
        "notes": args.notes,
    }
    record["produced_by"].append(args.eval_command)
    (MODELS / "cube_pose.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {model} and {MODELS / 'cube_pose.json'}")


if __name__ == "__main__":
    main()
