"""What a training run is asked to do: PPO hyperparameters, task settings, the run's options.

:class:`Hyperparameters` (stored in every checkpoint, so ``--resume`` continues with the same ones), the
rotate-z recipe's :data:`ROTATE_Z_HYPERPARAMETERS`, :class:`RunConfig` (``handrail train``'s arguments) and
the parsers of ``--set`` and ``--task-set``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch

from handrail.errors import HandrailError
from handrail.sim.sim_settings import SimSettings
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
    # The action map: 0 = relative (last target + action x the speed limit's step); > 0 = absolute, the task's
    # start pose ± this much [rad] (MuJoCo Playground's LEAP rotate-z: default pose + 0.6 x action).
    action_range_rad: float = 0.0

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
    # PPO settings given with --set. A new run has them in ``hyper`` already; a resumed run keeps the
    # checkpoint's settings and applies these on top (only those in RESUMABLE_SETTINGS may change mid-run).
    hyper_overrides: dict[str, Any] = field(default_factory=dict)
    hyper: Hyperparameters = field(default_factory=Hyperparameters)
    # A dynamics calibration file: the simulator is the identified hand (a resumed run keeps its own).
    dynamics: Path | None = None
    # How the simulator steps (a resumed run keeps its own); None: TRAINING_SIM.
    sim: SimSettings | None = None
    # The hand's profile (None: the bundled LEAP hand); a resumed run must be given the same hand again.
    profile: Path | None = None


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


# PPO settings a resumed run may change (``--resume --set ent_coef=0.001``): the optimization's, not the
# networks', the batch's or the observation's.
RESUMABLE_SETTINGS = ("ent_coef", "learning_rate", "clip_range", "n_epochs", "vf_coef", "max_grad_norm", "target_kl")


def parse_hyper_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` items of ``--set`` (VALUE in JSON, ``activation`` as a bare word) as a dict."""
    known = {f.name for f in dataclass_fields(Hyperparameters)}
    values: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        if name not in known or not text:
            raise TrainError(f"--set {item!r}: give NAME=VALUE with NAME one of {', '.join(sorted(known))}")
        try:
            values[name] = json.loads(text) if name != "activation" else text
        except ValueError as error:
            raise TrainError(f"--set {item!r}: VALUE is not a number or JSON list ({error})") from error
        if name in ("hidden", "critic_hidden"):
            values[name] = tuple(values[name])
    return values


def resumed_hyperparameters(stored: Hyperparameters, overrides: Mapping[str, Any]) -> Hyperparameters:
    """A resumed run's settings: the checkpoint's, with ``--set`` changes of the resumable ones."""
    current = asdict(stored)
    # Repeating the first command's --set (the same value) is fine; changing a fixed setting is not.
    fixed = sorted(
        name for name, value in overrides.items() if name not in RESUMABLE_SETTINGS and value != current[name]
    )
    if fixed:
        raise TrainError(
            f"--resume --set {', '.join(fixed)}: a resumed run keeps its networks, batch and observation; "
            f"it may change only {', '.join(RESUMABLE_SETTINGS)} — start a new run (another --out) for the rest"
        )
    return Hyperparameters.from_dict({**current, **overrides})


def hyperparameters_for(task: str, n_envs: int | None = None, overrides: Sequence[str] = ()) -> Hyperparameters:
    """The default settings of ``task``, with ``--envs`` and ``--set NAME=VALUE`` applied."""
    values = asdict(ROTATE_Z_HYPERPARAMETERS if task == ROTATE_Z else Hyperparameters())
    if n_envs is not None:
        values["n_envs"] = n_envs
    values.update(parse_hyper_overrides(overrides))
    if values["activation"] not in ACTIVATION_MODULES:
        raise TrainError(f"activation {values['activation']!r}: valid {', '.join(ACTIVATION_MODULES)}")
    hyper = Hyperparameters.from_dict(values)
    samples = hyper.n_envs * hyper.n_steps
    if samples % hyper.batch_size:
        raise TrainError(f"n_envs * n_steps = {samples} must be a multiple of batch_size = {hyper.batch_size}")
    return hyper
