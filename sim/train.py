"""PPO training on the batched hand environment (Stable-Baselines3), with checkpoints a stranger can load safely.

``handrail train --task rotate-z --minutes 60 --out runs/NAME``:

- the environment is :class:`~handrail.sim.batch_env.BatchHandEnv` (all hands in one ``mujoco.batch.Batch``)
  behind :class:`HandVecEnv`, Stable-Baselines3's ``VecEnv`` interface — no subprocesses, no pickling;
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
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from tqdm import tqdm

from handrail.calibration.dynamics_file import DynamicsCalibration, read_dynamics_calibration
from handrail.errors import HandrailError
from handrail.robot.profile import HandProfile, load_profile
from handrail.sim.asymmetric import AsymmetricPolicy
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from handrail.sim.sim_settings import TRAINING_SIM, SimSettings
from handrail.sim.tasks import POSE, ROTATE_Z, PoseConfig, RotateZConfig

ACTIVATION_MODULES = {"elu": torch.nn.ELU, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


class TrainError(HandrailError):
    """A training run cannot start or continue."""


@dataclass(frozen=True)
class Hyperparameters:
    """PPO settings of a run (stored in its checkpoints, so ``--resume`` continues with the same ones)."""

    n_envs: int = 64
    n_steps: int = 64  # per environment and rollout: 4096 samples per update with 64 hands
    batch_size: int = 2048
    n_epochs: int = 5
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 1.0
    target_kl: float | None = 0.02
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "elu"
    log_std_init: float = -1.0
    clip_obs: float = 10.0
    history: int = 1
    # Asymmetric actor-critic: the critic also sees the privileged state (handrail.sim.privileged), with its
    # own layers (``critic_hidden``; empty = ``hidden``). Only the actor is exported.
    asymmetric: bool = False
    critic_hidden: tuple[int, ...] = ()
    # Whether the actor sees the object pose (a camera on the hand) or only proprioception.
    object_pose: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        """Settings as stored; a checkpoint from before a setting existed gets that setting's default."""
        values = dict(data)
        values["hidden"] = tuple(values.get("hidden", cls.hidden))
        values["critic_hidden"] = tuple(values.get("critic_hidden", ()))
        return cls(**values)


# Rotate-z: MuJoCo Playground's LEAP rotate-z PPO recipe (gamma 0.97, lambda 0.95, lr 3e-4, entropy 1e-2,
# 4 epochs, asymmetric actor-critic) scaled to two CPU cores: 256 hands x 32 steps per update, a (256, 128)
# actor (Playground: (512, 256, 128); ours must run ~10 k steps/s on the CPU), a proprioceptive actor with
# 3 ticks of joint history (HORA's "rotating without seeing").
ROTATE_Z_HYPERPARAMETERS = Hyperparameters(
    n_envs=256,
    n_steps=32,
    batch_size=2048,
    n_epochs=4,
    learning_rate=3e-4,
    gamma=0.97,
    gae_lambda=0.95,
    ent_coef=0.01,
    target_kl=None,
    hidden=(256, 128),
    critic_hidden=(512, 256, 128),
    log_std_init=-1.0,
    history=3,
    asymmetric=True,
    object_pose=False,
)


@dataclass
class RunConfig:
    """What ``handrail train`` was asked to do."""

    task: str
    out: Path
    minutes: float
    seed: int = 0
    dr: bool = True
    resume: bool = False
    max_steps: int | None = None  # stop after this many environment steps (tests), in addition to the time
    checkpoint_minutes: float = 10.0
    nthread: int = 0
    progress: bool = True
    episode_steps: int | None = None  # shorter (or longer) episodes than the task's default
    # Task settings other than the defaults, e.g. {"drop_weight": 25.0}; a resumed run keeps its own unless
    # new ones are given (a curriculum: train, then resume with a stricter task).
    task_overrides: dict[str, float] = field(default_factory=dict)
    hyper: Hyperparameters = field(default_factory=Hyperparameters)
    # A dynamics calibration file: the simulator is the identified hand (a resumed run keeps its own).
    dynamics: Path | None = None
    # How the simulator steps (a resumed run keeps its own); None: TRAINING_SIM.
    sim: SimSettings | None = None


class HandVecEnv(VecEnv):
    """Stable-Baselines3's vectorized-environment interface over one :class:`BatchHandEnv`."""

    def __init__(self, core: BatchHandEnv):
        self.core = core
        self.actor_obs_size = core.observation_spec.n_obs
        privileged = core.privileged_state.size if core.privileged_state is not None else 0
        observation_space = gym.spaces.Box(-np.inf, np.inf, (self.actor_obs_size + privileged,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (core.n_joints,), np.float32)
        super().__init__(core.n_envs, observation_space, action_space)
        self._actions: np.ndarray | None = None
        self._started_s = time.monotonic()

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        if seed is not None:
            self.core.seed(seed)
        self._reset_seeds()
        obs = self.core.reset()
        if self.core.privileged_state is None:
            return obs
        return np.concatenate((obs, self.core.privileged_state.build(None)), axis=1)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None
        result = self.core.step(self._actions)
        done = result.terminated | result.truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        obs, terminal_obs = result.obs, result.terminal_obs
        if result.privileged is not None:
            obs = np.concatenate((obs, result.privileged), axis=1)
            if terminal_obs is not None and result.terminal_privileged is not None:
                terminal_obs = np.concatenate((terminal_obs, result.terminal_privileged), axis=1)
        if done.any():
            assert terminal_obs is not None and result.episode_return is not None
            assert result.episode_length is not None
            elapsed_s = time.monotonic() - self._started_s
            for hand in np.flatnonzero(done).tolist():
                info = infos[hand]
                info["terminal_observation"] = terminal_obs[hand]
                info["TimeLimit.truncated"] = bool(result.truncated[hand])
                info["episode"] = {
                    "r": float(result.episode_return[hand]),
                    "l": int(result.episode_length[hand]),
                    "t": elapsed_s,
                }
                info["task"] = {name: float(values[hand]) for name, values in result.episode_metrics.items()}
                info["task"]["terminated"] = float(result.terminated[hand])
                # Per episode, not per step: the share of episodes a drop or a safety stop ended.
                for name in ("dropped", "safety_stop"):
                    if name in result.episode_metrics:
                        info["task"][f"episode_{name}"] = float(result.episode_metrics[name][hand] > 0)
        return obs, result.reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.core, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        raise TrainError(f"HandVecEnv cannot set {attr_name!r} per environment")

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        raise TrainError(f"HandVecEnv has no per-environment method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


def current_commit() -> str:
    """The checkout's commit (with ``+dirty`` when it has changes), or ``"unknown"`` outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def policy_info(core: BatchHandEnv, seed: int) -> dict[str, Any]:
    """The facts of a policy trained on ``core`` that its checkpoints and policy file carry."""
    profile = core.profile
    return {
        "task": core.task.name,
        "seed": seed,
        "dr": core.dr,
        "history": core.history,
        "max_pose_age_s": core.max_pose_age_s,
        "control_rate_hz": core.sim.control_rate_hz,
        "sim": core.sim.to_dict(),
        "profile_name": profile.name,
        "profile_fingerprint": profile.fingerprint(),
        "observation_spec": core.observation_spec.to_dict(),
        "action_spec": core.action_map.to_dict(),
        "safety_limits": core.safety_limits.as_dict(),
        "start_pose_rad": core.start_pose_rad.tolist(),
        "commit": current_commit(),
    }


def _actor_layers(model: PPO) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The deterministic actor of an SB3 MLP policy as (weights, biases), input to output."""
    layers = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    layers.append(model.policy.action_net)
    weights = [layer.weight.detach().cpu().numpy().copy() for layer in layers]
    biases = [layer.bias.detach().cpu().numpy().copy() for layer in layers]
    return weights, biases


def make_checkpoint(
    model: PPO,
    normalizer: VecNormalize,
    hyper: Hyperparameters,
    info: dict[str, Any],
    episode_steps: int | None = None,
    task_overrides: dict[str, float] | None = None,
    dynamics: RunDynamics | None = None,
) -> Checkpoint:
    """Everything export and resume need, from a live PPO model and its normalizer.

    ``dynamics`` (the run's dynamics calibration) is kept so that a resumed run trains on the same identified hand.
    """
    weights, biases = _actor_layers(model)
    obs_rms, ret_rms = normalizer.obs_rms, normalizer.ret_rms
    # The actor reads the first columns (the observation); the critic's privileged columns are not exported.
    actor_obs_size = weights[0].shape[1]
    trainer_state = {
        "obs_mean_full": torch.from_numpy(np.asarray(obs_rms.mean, dtype=np.float64).copy()),
        "obs_var_full": torch.from_numpy(np.asarray(obs_rms.var, dtype=np.float64).copy()),
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "obs_count": float(obs_rms.count),
        "ret_mean": float(ret_rms.mean),
        "ret_var": float(ret_rms.var),
        "ret_count": float(ret_rms.count),
        "hyperparameters_json": json.dumps(asdict(hyper)),
        "episode_steps_json": json.dumps(episode_steps),
        "task_overrides_json": json.dumps(task_overrides or {}),
        "dynamics_json": dynamics.to_json() if dynamics is not None else "null",
    }
    return Checkpoint(
        actor_weights=weights,
        actor_biases=biases,
        activation=hyper.activation,
        obs_mean=np.asarray(obs_rms.mean, dtype=np.float64)[:actor_obs_size].copy(),
        obs_var=np.asarray(obs_rms.var, dtype=np.float64)[:actor_obs_size].copy(),
        obs_epsilon=float(normalizer.epsilon),
        clip_obs=float(normalizer.clip_obs),
        info=info,
        num_timesteps=int(model.num_timesteps),
        trainer_state=trainer_state,
    )


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
            config.hyper = Hyperparameters.from_dict(json.loads(resumed.trainer_state["hyperparameters_json"]))
            config.task, config.seed, config.dr = resumed.info["task"], resumed.info["seed"], resumed.info["dr"]
            config.episode_steps = json.loads(resumed.trainer_state.get("episode_steps_json", "null"))
            # A checkpoint from before the simulator settings were recorded ran the MJCF's physics at 30 Hz.
            kept_sim = resumed.info.get("sim")
            config.sim = SimSettings.from_dict(kept_sim) if kept_sim is not None else None
            if not config.task_overrides:
                config.task_overrides = json.loads(resumed.trainer_state.get("task_overrides_json", "{}"))
        hyper = config.hyper
        profile = load_profile()
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


@dataclass(frozen=True)
class RunDynamics:
    """The dynamics calibration a run trains on, and what ``run.json`` records about it (path, fingerprint, fit)."""

    calibration: DynamicsCalibration
    record: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"record": self.record, "calibration": self.calibration.model_dump(mode="json")})

    @classmethod
    def from_json(cls, text: str) -> RunDynamics | None:
        """The form a checkpoint keeps (``"null"``: the run has none)."""
        try:
            document = json.loads(text)
            if document is None:
                return None
            return cls(DynamicsCalibration.model_validate(document["calibration"]), dict(document["record"]))
        except (ValueError, KeyError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            raise TrainError(
                f"the checkpoint's dynamics calibration is damaged ({type(error).__name__}: {error}) — resume from "
                "another checkpoint (copy one of checkpoints/ to latest.pt)"
            ) from error


def run_dynamics(config: RunConfig, profile: HandProfile, resumed: Checkpoint | None = None) -> RunDynamics | None:
    """The dynamics calibration the run trains on, or None.

    A new run reads ``config.dynamics`` (which must be ``profile``'s hand). A resumed run keeps the calibration
    its checkpoint holds: ``--dynamics`` may only name a file with the same content (fingerprint), and a run
    started without one cannot take one later. Raises TrainError, or CalibrationFileError for a bad file, naming
    the fix.
    """
    given = read_dynamics_calibration(config.dynamics, profile) if config.dynamics is not None else None
    if resumed is None:
        return None if given is None else RunDynamics(given, given.record(config.dynamics))
    kept = RunDynamics.from_json(resumed.trainer_state.get("dynamics_json", "null"))
    if kept is None:
        if given is not None:
            raise TrainError(
                f"--dynamics {config.dynamics}: the run in {config.out} was started without a dynamics file and a "
                "resumed run keeps its simulator — resume without --dynamics, or start a new run (another --out) "
                "with it"
            )
        return None
    if given is not None and given.fingerprint() != kept.record["fingerprint"]:
        raise TrainError(
            f"--dynamics {config.dynamics} (fingerprint {given.fingerprint()}) is not the dynamics file the run in "
            f"{config.out} was started with ({kept.record['path']}, fingerprint {kept.record['fingerprint']}) — "
            "resume without --dynamics to keep the run's own, or start a new run (another --out) with this one"
        )
    kept.calibration.check_profile(profile)
    return kept


def train(config: RunConfig) -> Path:
    """Run :class:`Trainer` for ``config``; returns the path of the final checkpoint (``latest.pt``)."""
    return Trainer(config).run()


def task_config_for(
    task: str, episode_steps: int | None, overrides: Mapping[str, float] | None = None
) -> PoseConfig | RotateZConfig | None:
    """The task's configuration with another episode length and settings, or None to keep the defaults."""
    values: dict[str, Any] = dict(overrides or {})
    if episode_steps is not None:
        if episode_steps < 1:
            raise TrainError(f"--episode-steps {episode_steps} must be at least 1")
        values["episode_steps"] = episode_steps
    if not values:
        return None
    config_type = PoseConfig if task == POSE else RotateZConfig
    known = {f.name for f in dataclass_fields(config_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainError(
            f"--task-set {', '.join(unknown)}: not a setting of task {task!r}; valid: {', '.join(sorted(known))}"
        )
    return config_type(**values)


def parse_task_overrides(items: Sequence[str]) -> dict[str, float]:
    """``NAME=VALUE`` items of ``--task-set`` as a dict of numbers."""
    overrides: dict[str, float] = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            overrides[name] = float(text)
        except ValueError as error:
            raise TrainError(f"--task-set {item!r}: give NAME=NUMBER, e.g. drop_weight=25") from error
    return overrides


def hyperparameters_for(task: str, n_envs: int | None = None, overrides: Sequence[str] = ()) -> Hyperparameters:
    """The default settings of ``task``, with ``--envs`` and ``--set NAME=VALUE`` applied."""
    values = asdict(ROTATE_Z_HYPERPARAMETERS if task == ROTATE_Z else Hyperparameters())
    if n_envs is not None:
        values["n_envs"] = n_envs
    for item in overrides:
        name, _, text = item.partition("=")
        if name not in values or not text:
            raise TrainError(f"--set {item!r}: give NAME=VALUE with NAME one of {', '.join(sorted(values))}")
        values[name] = json.loads(text) if name != "activation" else text
        if name in ("hidden", "critic_hidden"):
            values[name] = tuple(values[name])
    if values["activation"] not in ACTIVATION_MODULES:
        raise TrainError(f"activation {values['activation']!r}: valid {', '.join(ACTIVATION_MODULES)}")
    hyper = Hyperparameters.from_dict(values)
    samples = hyper.n_envs * hyper.n_steps
    if samples % hyper.batch_size:
        raise TrainError(f"n_envs * n_steps = {samples} must be a multiple of batch_size = {hyper.batch_size}")
    return hyper
