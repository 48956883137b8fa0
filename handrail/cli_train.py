"""``handrail train`` and ``handrail eval``: PPO on the batched simulator, and a policy's task scores."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

TASK_CHOICES = ("rotate-z", "pose")


def _cmd_train(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.sim.sim_settings import TRAINING_SIM
    from handrail.sim.train import train
    from handrail.sim.train_config import RunConfig, hyperparameters_for, parse_hyper_overrides, parse_task_overrides

    config = RunConfig(
        task=args.task,
        out=Path(args.out),
        minutes=args.minutes,
        seed=args.seed,
        dr=not args.no_dr,
        resume=args.resume,
        max_steps=args.max_steps,
        checkpoint_minutes=args.checkpoint_minutes,
        nthread=args.threads,
        progress=not args.no_progress,
        episode_steps=args.episode_steps,
        task_overrides=parse_task_overrides(args.task_set),
        hyper=hyperparameters_for(args.task, args.envs, args.set),
        hyper_overrides=parse_hyper_overrides(args.set),
        dynamics=Path(args.dynamics) if args.dynamics else None,
        sim=TRAINING_SIM.with_values(dict(item.partition("=")[::2] for item in args.sim_set)) if args.sim_set else None,
        profile=Path(args.profile) if args.profile else None,
    )
    latest = train(config)
    print(f"wrote {latest} (checkpoints in {config.out / 'checkpoints'}, metrics in {config.out / 'progress.csv'})")
    print(f"next: handrail eval {latest} --task {config.task}   /   handrail export {latest} --out policy.onnx")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.sim.evaluate import evaluate, load_policy

    policy = load_policy(args.policy)
    report = evaluate(
        policy,
        args.task,
        dr=args.dr,
        episodes=args.episodes,
        seed=args.seed,
        n_envs=args.envs,
        episode_steps=args.episode_steps,
        dynamics=Path(args.dynamics) if args.dynamics else None,
        sim=args.sim,
        profile=args.profile,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format())
    return 0


def add_training_commands(commands: Any) -> None:
    """Register ``train`` and ``eval`` on the CLI's subparsers."""
    train = commands.add_parser(
        "train", help="train a policy with PPO in the randomized simulator (progress bar, checkpoints, resumable)"
    )
    train.add_argument("--task", choices=TASK_CHOICES, default="rotate-z", help="the task (default rotate-z)")
    train.add_argument("--minutes", type=float, required=True, help="wall-time budget of this run [min]")
    train.add_argument("--out", required=True, help="run folder: checkpoints, progress.csv, TensorBoard, run.json")
    train.add_argument("--seed", type=int, default=0, help="seed of the environment, policy and PPO (default 0)")
    train.add_argument("--no-dr", action="store_true", help="train without domain randomization")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest.pt")
    train.add_argument(
        "--envs",
        type=int,
        default=None,
        help="simulated hands stepped together (default 256 for rotate-z, 64 for pose)",
    )
    train.add_argument("--threads", type=int, default=0, help="physics threads (default: all CPUs)")
    train.add_argument("--episode-steps", type=int, default=None, help="episode length in control steps")
    train.add_argument("--max-steps", type=int, default=None, help="also stop after this many environment steps")
    train.add_argument("--checkpoint-minutes", type=float, default=10.0, help="checkpoint interval [min]")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a PPO setting, e.g. n_epochs=10 (with --resume: only the optimization's, e.g. ent_coef)",
    )
    train.add_argument(
        "--sim-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a simulator setting (control_rate_hz, timestep_s, integrator, solver_iterations, "
        "line_search_iterations; default 20 Hz on 10 ms Euler physics), e.g. control_rate_hz=30",
    )
    train.add_argument(
        "--task-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a task setting, e.g. drop_weight=25 (with --resume: a curriculum step)",
    )
    train.add_argument(
        "--dynamics",
        metavar="TOML",
        help="dynamics calibration (handrail calibrate dynamics): train on the identified hand, DR centred on it",
    )
    train.add_argument("--profile", default=None, help="hand profile TOML (default: the bundled LEAP hand)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("eval", help="score a checkpoint or policy file on its task in the simulator")
    evaluate.add_argument("policy", help="checkpoint (.pt or run folder) or policy file (.onnx)")
    evaluate.add_argument("--task", choices=TASK_CHOICES, default=None, help="the task (default: the policy's)")
    randomization = evaluate.add_mutually_exclusive_group()
    randomization.add_argument(
        "--dr", dest="dr", action="store_true", default=True, help="with randomization (default)"
    )
    randomization.add_argument("--no-dr", dest="dr", action="store_false", help="the nominal simulator")
    evaluate.add_argument("--episodes", type=int, default=32, help="episodes to score (default 32)")
    evaluate.add_argument("--seed", type=int, default=1000, help="evaluation seed (default 1000, unlike training's)")
    evaluate.add_argument("--envs", type=int, default=None, help="hands stepped together (default min(episodes, 32))")
    evaluate.add_argument("--episode-steps", type=int, default=None, help="episode length in control steps")
    evaluate.add_argument(
        "--dynamics", metavar="TOML", help="dynamics calibration: evaluate on the identified hand (DR centred on it)"
    )
    evaluate.add_argument(
        "--sim",
        choices=("fine",),
        default=None,
        help="'fine': the MJCF's own physics (the virtual hand's timestep and solver) at the policy's rate — the "
        "sim-to-sim check (default: the simulator the policy was trained in)",
    )
    evaluate.add_argument(
        "--profile", default=None, help="hand profile TOML: the policy's hand (default: the bundled LEAP hand)"
    )
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.set_defaults(handler=_cmd_eval)
