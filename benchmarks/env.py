"""Training-environment throughput against raw batched MuJoCo stepping of the same simulations, same run.

    python benchmarks/env.py [--envs 256] [--threads 0] [--seconds 10] [--task rotate-z] [--no-dr] [--sim mjcf]

The environment as ``handrail train --task rotate-z`` builds it: the training simulator (20 Hz on 10 ms
Euler physics, :data:`~handrail.sim.sim_settings.TRAINING_SIM`; ``--sim mjcf``: the MJCF's 2 ms
implicit-fast physics at the profile's 30 Hz, the old setting), 3 ticks of joint history, the critic's
privileged state and the safety monitor.

1. ``BatchHandEnv.step`` with random actions (Gaussian with the untrained policy's std, e^-1, as training
   starts; ``--action-std``): action map, safety filter, latency/backlash/noise, batched physics
   (``mujoco.batch.Batch.rollout``), camera pipeline, observation builder, monitor, privileged state,
   reward, auto-reset.
2. The reference: the same ``Batch`` (same randomized per-simulation models, the states the env left)
   advanced by ``rollout`` over the same number of substeps per control step with held controls and
   nothing else — what a perfect environment would cost.
3. For scale: a Python loop of ``mj_step`` over one ``MjData`` per simulation on this thread.

Prints control steps/s (one control step = all substeps of one period for one hand), physics steps/s and
the ratios. The target for (1)/(2) is >= 0.85.
"""

from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.sim_settings import TRAINING_SIM


def env_rate(env: BatchHandEnv, seconds: float, rng: np.random.Generator, action_std: float) -> float:
    """Control steps per second of the whole environment, random actions."""
    shape = (env.n_envs, env.n_joints)
    for _ in range(3):
        env.step(np.clip(rng.normal(0, action_std, shape), -1, 1))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(np.clip(rng.normal(0, action_std, shape), -1, 1))
        steps += 1
    return steps * env.n_envs / (time.perf_counter() - start)


def raw_rate(env: BatchHandEnv, seconds: float) -> float:
    """Control steps per second of the env's own batch stepped with held controls and no env logic."""
    batch, substeps = env.batch, env.n_substeps
    ctrl = batch.bind("ctrl").copy()
    controls = np.repeat(ctrl[:, None, :], substeps, axis=1)
    batch.rollout(substeps, control=controls, record=())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch.rollout(substeps, control=controls, record=())
        steps += 1
    return steps * env.n_envs / (time.perf_counter() - start)


def python_loop_rate(env: BatchHandEnv, seconds: float) -> float:
    """Control steps per second of a plain Python loop of mj_step over the simulations, one thread."""
    sims = [(env.get_model(i), env.get_data(i)) for i in range(min(env.n_envs, 16))]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for model, data in sims:
            mujoco.mj_step(model, data, nstep=env.n_substeps)
        steps += len(sims)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=256, help="simulations in the batch (training's 256)")
    parser.add_argument("--threads", type=int, default=0, help="physics threads (0: all CPUs)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall time per measurement [s]")
    parser.add_argument("--task", default="rotate-z", choices=("rotate-z", "pose"))
    parser.add_argument("--no-dr", action="store_true", help="nominal model, no randomization")
    parser.add_argument("--sim", choices=("training", "mjcf"), default="training", help="simulator settings")
    parser.add_argument("--action-std", type=float, default=float(np.exp(-1)), help="random actions' std")
    args = parser.parse_args()

    env = BatchHandEnv(
        args.task,
        args.envs,
        dr=not args.no_dr,
        seed=0,
        nthread=args.threads,
        sim=TRAINING_SIM if args.sim == "training" else None,
        history=3,
        object_pose=False,
        privileged=True,
    )
    env.reset()
    rng = np.random.default_rng(0)
    rates = {}
    # Interleaved twice, so that drift in the machine's speed hits both sides alike.
    for round_index in range(2):
        rates.setdefault("env", []).append(env_rate(env, args.seconds / 2, rng, args.action_std))
        rates.setdefault("raw", []).append(raw_rate(env, args.seconds / 2))
        del round_index
    env_steps, raw_steps = float(np.mean(rates["env"])), float(np.mean(rates["raw"]))
    loop_steps = python_loop_rate(env, args.seconds / 2)
    substeps = env.n_substeps
    print(
        f"mujoco {mujoco.__version__}, task {args.task}, DR {'off' if args.no_dr else 'on'}, {args.envs} simulations, "
        f"{env.batch.nthread} threads, {env.sim.control_rate_hz:g} Hz control, {substeps} substeps of "
        f"{env.model.opt.timestep * 1e3:.2f} ms ({env.sim.integrator}, {env.sim.solver_iterations} iterations)"
    )
    print(f"{'':38}{'control steps/s':>16}{'physics steps/s':>17}{'ratio':>8}")
    for label, rate in (
        ("BatchHandEnv.step (random actions)", env_steps),
        ("raw Batch.rollout, same simulations", raw_steps),
        ("Python loop of mj_step, one thread", loop_steps),
    ):
        print(f"{label:38}{rate:16,.0f}{rate * substeps:17,.0f}{rate / raw_steps:8.2f}")
    print(f"env / raw batched stepping = {env_steps / raw_steps:.2f} (target >= 0.85)")
    print(f"simulated seconds per wall second: {env_steps / env.sim.control_rate_hz:,.0f}")


if __name__ == "__main__":
    main()
