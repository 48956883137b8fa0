"""PPO training on the batched hand environment (Stable-Baselines3), with checkpoints a stranger can load safely.

``handrail train --task rotate-z --minutes 60 --out runs/NAME``:

- the environment is :class:`~handrail.sim.batch_env.BatchHandEnv` (all hands in one ``mujoco.batch.Batch``)
  behind :class:`~handrail.sim.vec_env.HandVecEnv`, Stable-Baselines3's ``VecEnv`` interface — no subprocesses,
  no pickling;
- observations are normalized by running statistics (SB3's ``VecNormalize``), rewards by the running
  return's scale; the observation statistics go into every checkpoint and, at export, into the graph;
- a progress bar over the time budget; metrics to ``runs/NAME/progress.csv`` and TensorBoard
  (``runs/NAME/tb``), including the task's scores (cube angular velocity, drop rate, joint error);
- checkpoints (:mod:`handrail.sim.checkpoint`) every ``--checkpoint-minutes`` and at the end, as
  ``runs/NAME/checkpoints/step_<N>.pt`` and ``runs/NAME/latest.pt``; ``--resume`` continues a run from
  ``latest.pt`` with its hyperparameters, optimizer state, normalizer and step counter;
- ``runs/NAME/run.json``: command, seed, hyperparameters, wall time, steps, and the dynamics calibration
  (``--dynamics FILE``: path, fingerprint, fit error) the simulator was built from, which export copies into
  the policy file's ``training`` facts;
- ``--dynamics FILE`` (``handrail calibrate dynamics``): the simulator is the identified hand and the
  randomization is centred on it (see :class:`~handrail.sim.batch_env.BatchHandEnv`); the calibration is kept
  in the checkpoints, so ``--resume`` continues on the same one and refuses another.

SB3's own ``save``/``load`` are not used: they unpickle (cloudpickle) parts of the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize
from tqdm import tqdm

from handrail.robot.profile import load_profile
from handrail.sim.asymmetric import AsymmetricPolicy
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from handrail.sim.sim_settings import TRAINING_SIM, SimSettings
from handrail.sim.tasks import POSE, ROTATE_Z
from handrail.sim.train_checkpoint import make_checkpoint, policy_info, run_dynamics
from handrail.sim.train_config import (
    ACTIVATION_MODULES,
    Hyperparameters,
    RunConfig,
    TrainError,
    resumed_hyperparameters,
    task_config_for,
)
from handrail.sim.vec_env import HandVecEnv


class _Progress(BaseCallback):
    """Progress bar over the time budget, task metrics to the logger, periodic checkpoints, the stop."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.trainer = trainer
        self._episodes: list[dict[str, float]] = []
        self._bar: tqdm | None = None
        self._last_checkpoint_s = time.monotonic()

    def _on_training_start(self) -> None:
        config = self.trainer.config
        if config.progress:
            self._bar = tqdm(
                total=round(config.minutes * 60),
                unit="s",
                desc=f"train {config.task}",
                file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
            )

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "task" in info:
                self._episodes.append(info["task"])
        trainer = self.trainer
        elapsed_s = time.monotonic() - trainer.started_s
        if self._bar is not None:
            shown = min(int(elapsed_s), self._bar.total)
            if shown > self._bar.n:
                self._bar.update(shown - self._bar.n)
        if time.monotonic() - self._last_checkpoint_s >= trainer.config.checkpoint_minutes * 60:
            trainer.save()
            self._last_checkpoint_s = time.monotonic()
        return not trainer.budget_spent()

    def _on_rollout_end(self) -> None:
        if not self._episodes:
            return
        keys = set().union(*self._episodes)
        means = {key: float(np.mean([e[key] for e in self._episodes if key in e])) for key in sorted(keys)}
        for key, value in means.items():
            self.logger.record(f"task/{key}", value)
        self.logger.record("time/steps_per_s", self.trainer.steps_per_s())
        if self._bar is not None:
            keys = ("cube_angular_velocity_z_rad_s", "dropped", "final_joint_error_rad")
            shown = {k: means[k] for k in keys if k in means}
            self._bar.set_postfix({k.split("_rad")[0][:18]: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
        self._episodes.clear()

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Trainer:
    """One training run: environment, normalizer, PPO, logging and checkpoints in ``config.out``."""

    def __init__(self, config: RunConfig):
        if config.task not in (POSE, ROTATE_Z):
            raise TrainError(f"unknown task {config.task!r}; valid tasks: {POSE}, {ROTATE_Z}")
        if not (config.minutes > 0 and math.isfinite(config.minutes)):
            raise TrainError(f"--minutes {config.minutes} must be a positive number")
        self.config = config
        out = config.out
        latest = out / "latest.pt"
        resumed: Checkpoint | None = None
        if latest.exists() and not config.resume:
            raise TrainError(f"{out} already holds a run — pass --resume to continue it, or choose another --out")
        if config.resume:
            if not latest.exists():
                raise TrainError(f"--resume: {latest} does not exist — start the run without --resume")
            resumed = load_checkpoint(latest)
            stored = Hyperparameters.from_dict(json.loads(resumed.trainer_state["hyperparameters_json"]))
            config.hyper = resumed_hyperparameters(stored, config.hyper_overrides)
            config.task, config.seed, config.dr = resumed.info["task"], resumed.info["seed"], resumed.info["dr"]
            config.episode_steps = json.loads(resumed.trainer_state.get("episode_steps_json", "null"))
            # A checkpoint from before the simulator settings were recorded ran the MJCF's physics at 30 Hz.
            kept_sim = resumed.info.get("sim")
            config.sim = SimSettings.from_dict(kept_sim) if kept_sim is not None else None
            if not config.task_overrides:
                config.task_overrides = json.loads(resumed.trainer_state.get("task_overrides_json", "{}"))
        hyper = config.hyper
        profile = load_profile(config.profile)
        if resumed is not None and resumed.info.get("profile_fingerprint") != profile.fingerprint():
            raise TrainError(
                f"--resume: the run in {out} trains hand {resumed.info.get('profile_name')!r} (profile fingerprint "
                f"{resumed.info.get('profile_fingerprint')}), not {profile.name!r} ({profile.fingerprint()}) from "
                f"{profile.source} — pass the run's own --profile"
            )
        sim = config.sim if config.sim is not None else (None if resumed is not None else TRAINING_SIM)
        self.dynamics = run_dynamics(config, profile, resumed)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.core = BatchHandEnv(
            config.task,
            hyper.n_envs,
            dr=config.dr,
            profile=profile,
            dynamics=None if self.dynamics is None else self.dynamics.calibration,
            history=hyper.history,
            seed=config.seed,
            nthread=config.nthread,
            task_config=task_config_for(config.task, config.episode_steps, config.task_overrides),
            sim=sim,
            object_pose=hyper.object_pose,
            privileged=hyper.asymmetric,
            action_range_rad=hyper.action_range_rad,
        )
        self.info = policy_info(self.core, config.seed)
        venv = HandVecEnv(self.core)
        venv.seed(config.seed)
        self.normalizer = VecNormalize(
            venv, norm_obs=True, norm_reward=True, clip_obs=hyper.clip_obs, gamma=hyper.gamma
        )
        policy_kwargs: dict[str, Any] = {
            "net_arch": {"pi": list(hyper.hidden), "vf": list(hyper.critic_hidden or hyper.hidden)},
            "activation_fn": ACTIVATION_MODULES[hyper.activation],
            "log_std_init": hyper.log_std_init,
        }
        if hyper.asymmetric:
            policy_kwargs["actor_obs_size"] = venv.actor_obs_size
        self.model = PPO(
            AsymmetricPolicy if hyper.asymmetric else "MlpPolicy",
            self.normalizer,
            n_steps=hyper.n_steps,
            batch_size=hyper.batch_size,
            n_epochs=hyper.n_epochs,
            learning_rate=hyper.learning_rate,
            gamma=hyper.gamma,
            gae_lambda=hyper.gae_lambda,
            clip_range=hyper.clip_range,
            ent_coef=hyper.ent_coef,
            vf_coef=hyper.vf_coef,
            max_grad_norm=hyper.max_grad_norm,
            target_kl=hyper.target_kl,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            device="cpu",
            verbose=0,
        )
        self.model.set_logger(configure(str(out), ["csv", "tensorboard"]))
        if resumed is not None:
            self._restore(resumed)
        self.started_s = time.monotonic()
        self._start_steps = self.model.num_timesteps
        self.wall_s_before = float(self._read_run().get("wall_s", 0.0)) if resumed is not None else 0.0

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.trainer_state
        self.model.policy.load_state_dict(state["policy"])
        self.model.policy.optimizer.load_state_dict(state["optimizer"])
        obs_rms, ret_rms = self.normalizer.obs_rms, self.normalizer.ret_rms
        if "obs_mean_full" in state:
            obs_rms.mean, obs_rms.var = state["obs_mean_full"].numpy().copy(), state["obs_var_full"].numpy().copy()
        else:
            obs_rms.mean, obs_rms.var = checkpoint.obs_mean.copy(), checkpoint.obs_var.copy()
        obs_rms.count = state["obs_count"]
        ret_rms.mean, ret_rms.var, ret_rms.count = state["ret_mean"], state["ret_var"], state["ret_count"]
        self.model.num_timesteps = checkpoint.num_timesteps

    def budget_spent(self) -> bool:
        config = self.config
        if time.monotonic() - self.started_s >= config.minutes * 60:
            return True
        return config.max_steps is not None and self.model.num_timesteps - self._start_steps >= config.max_steps

    def steps_per_s(self) -> float:
        return (self.model.num_timesteps - self._start_steps) / max(time.monotonic() - self.started_s, 1e-9)

    def save(self) -> Path:
        """Write ``checkpoints/step_<N>.pt``, ``latest.pt`` and ``run.json``; returns latest.pt's path."""
        config = self.config
        checkpoint = make_checkpoint(
            self.model,
            self.normalizer,
            config.hyper,
            self.info,
            config.episode_steps,
            config.task_overrides,
            self.dynamics,
        )
        out = self.config.out
        save_checkpoint(checkpoint, out / "checkpoints" / f"step_{self.model.num_timesteps:010d}.pt")
        latest = save_checkpoint(checkpoint, out / "latest.pt")
        self._write_run()
        return latest

    def _read_run(self) -> dict[str, Any]:
        path = self.config.out / "run.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_run(self) -> None:
        config = self.config
        record = {
            "command": " ".join(["handrail", *sys.argv[1:]]) if sys.argv and "handrail" in sys.argv[0] else None,
            "task": config.task,
            "seed": config.seed,
            "dr": config.dr,
            "steps": int(self.model.num_timesteps),
            "wall_s": round(self.wall_s_before + time.monotonic() - self.started_s, 1),
            "steps_per_s": round(self.steps_per_s(), 1),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "hyperparameters": asdict(config.hyper),
            "commit": self.info["commit"],
            "dynamics": None if self.dynamics is None else self.dynamics.record,
        }
        path = config.out / "run.json"
        partial = path.with_name("run.json.partial")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(path)

    def run(self) -> Path:
        """Train until the budget is spent (or Ctrl-C / SIGTERM), then save; returns the latest checkpoint's path."""
        with _sigterm_interrupts():
            try:
                self.model.learn(
                    total_timesteps=10**12, callback=_Progress(self), reset_num_timesteps=False, progress_bar=False
                )
            except KeyboardInterrupt:
                print("interrupted: saving a checkpoint", file=sys.stderr)
        return self.save()


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a background run's stop, where SIGINT may be ignored) ends training like Ctrl-C: with a save."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config: RunConfig) -> Path:
    """Run :class:`Trainer` for ``config``; returns the path of the final checkpoint (``latest.pt``)."""
    return Trainer(config).run()
