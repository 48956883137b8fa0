"""Training checkpoints: the actor, its observation normalizer and the run's facts, in a file torch reads safely.

``handrail train`` writes one ``.pt`` file per checkpoint (``runs/NAME/checkpoints/step_<N>.pt`` and
``runs/NAME/latest.pt``); ``handrail export`` and ``handrail eval`` read them. The file is a plain dict of
tensors, numbers, strings and lists (no pickled objects), written with ``torch.save`` and read with
``torch.load(weights_only=True)``, so loading a checkpoint from someone else cannot run code.

Contents (:class:`Checkpoint`):

- the actor as a plain MLP: ``actor_weights[i]`` (out, in) and ``actor_biases[i]`` (out,), hidden layers
  followed by ``activation``, the last layer linear; its output is the action mean, clipped to [-1, 1]
  at deployment;
- the observation normalizer: ``obs_mean``/``obs_var`` (n_obs,), ``obs_epsilon``, ``clip_obs``; the
  actor sees ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``;
- ``trainer_state``: what resuming needs (the PPO policy's and optimizer's state dicts, the normalizer's
  count, the step counter), opaque to export;
- ``info``: JSON-able facts for the policy file's metadata (task, seed, DR, observation and action spec,
  control rate, profile name and fingerprint, safety limits, history, max pose age, commit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from handrail.errors import HandrailError

if TYPE_CHECKING:
    from handrail.robot.profile import HandProfile
    from handrail.sim.actions import ActionMap
    from handrail.sim.sim_settings import SimSettings

CHECKPOINT_FORMAT = "handrail-checkpoint"
CHECKPOINT_VERSION = 1
ACTIVATIONS = ("elu", "tanh", "relu")
# Keys every checkpoint's info holds (the exporter copies them into the policy file's metadata).
INFO_KEYS = (
    "task",
    "seed",
    "dr",
    "history",
    "max_pose_age_s",
    "control_rate_hz",
    "profile_name",
    "profile_fingerprint",
    "observation_spec",
    "action_spec",
    "safety_limits",
    "commit",
)


class CheckpointError(HandrailError):
    """A checkpoint file is missing, malformed, or not one of ours."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A policy's actor and normalizer plus the facts of its run. Arrays are float32 numpy."""

    actor_weights: list[np.ndarray]
    actor_biases: list[np.ndarray]
    activation: str
    obs_mean: np.ndarray
    obs_var: np.ndarray
    obs_epsilon: float
    clip_obs: float
    info: dict[str, Any]
    num_timesteps: int = 0
    trainer_state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise CheckpointError(f"activation {self.activation!r} is unknown; valid: {', '.join(ACTIVATIONS)}")
        if not self.actor_weights or len(self.actor_weights) != len(self.actor_biases):
            raise CheckpointError(
                f"the actor needs one bias per weight matrix and at least one layer; got {len(self.actor_weights)} "
                f"weights and {len(self.actor_biases)} biases"
            )
        width = self.n_obs
        for index, (weight, bias) in enumerate(zip(self.actor_weights, self.actor_biases, strict=True)):
            if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
                raise CheckpointError(
                    f"actor layer {index}: weight {weight.shape} and bias {bias.shape} do not chain from width {width}"
                )
            if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
                raise CheckpointError(f"actor layer {index} holds NaN or inf — the run diverged; use an earlier one")
            width = weight.shape[0]
        if self.obs_var.shape != self.obs_mean.shape or (self.obs_var < 0).any():
            raise CheckpointError("obs_var must match obs_mean's shape and be >= 0")
        if not (math.isfinite(self.clip_obs) and self.clip_obs > 0 and self.obs_epsilon > 0):
            raise CheckpointError("clip_obs and obs_epsilon must be positive numbers")
        missing = [key for key in INFO_KEYS if key not in self.info]
        if missing:
            raise CheckpointError(f"checkpoint info lacks {', '.join(missing)} — it was not written by handrail train")

    @property
    def n_obs(self) -> int:
        return int(self.obs_mean.shape[0])

    @property
    def n_act(self) -> int:
        return int(self.actor_weights[-1].shape[0])

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """What the actor sees for ``obs`` (..., n_obs)."""
        scaled = (obs - self.obs_mean) / np.sqrt(self.obs_var + self.obs_epsilon)
        return np.clip(scaled, -self.clip_obs, self.clip_obs)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action for ``obs`` (..., n_obs) in numpy float64 (a reference for tests)."""
        hidden = self.normalize(np.asarray(obs, dtype=np.float64))
        last = len(self.actor_weights) - 1
        for index, (weight, bias) in enumerate(zip(self.actor_weights, self.actor_biases, strict=True)):
            hidden = hidden @ weight.astype(np.float64).T + bias
            if index < last:
                hidden = _ACTIVATION_FUNCTIONS[self.activation](hidden)
        return np.clip(hidden, -1.0, 1.0)


_ACTIVATION_FUNCTIONS = {
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a crash mid-write leaves the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "actor_weights": [_tensor(w) for w in checkpoint.actor_weights],
        "actor_biases": [_tensor(b) for b in checkpoint.actor_biases],
        "activation": checkpoint.activation,
        "obs_mean": torch.from_numpy(np.asarray(checkpoint.obs_mean, dtype=np.float64)),
        "obs_var": torch.from_numpy(np.asarray(checkpoint.obs_var, dtype=np.float64)),
        "obs_epsilon": float(checkpoint.obs_epsilon),
        "clip_obs": float(checkpoint.clip_obs),
        "info_json": json.dumps(checkpoint.info, sort_keys=True),
        "num_timesteps": int(checkpoint.num_timesteps),
        "trainer_state": checkpoint.trainer_state,
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(document, partial)
    partial.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; CheckpointError names what is wrong."""
    path = Path(path)
    if path.is_dir():
        latest = path / "latest.pt"
        if not latest.is_file():
            raise CheckpointError(f"{path} is a directory without latest.pt — give a checkpoint file or a run folder")
        path = latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist — train one with `handrail train --out runs/NAME`")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds on a bad file; all mean "not a checkpoint"
        raise CheckpointError(
            f"{path} is not a readable handrail checkpoint ({type(error).__name__}: {error}); only files written "
            "by `handrail train` load, and never through pickle"
        ) from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a handrail checkpoint (no format = {CHECKPOINT_FORMAT!r})")
    if document.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {document.get('version')!r}; this handrail reads version "
            f"{CHECKPOINT_VERSION} — export it with the handrail that trained it"
        )
    try:
        info = json.loads(document["info_json"])
        return Checkpoint(
            actor_weights=[w.numpy() for w in document["actor_weights"]],
            actor_biases=[b.numpy() for b in document["actor_biases"]],
            activation=document["activation"],
            obs_mean=document["obs_mean"].numpy(),
            obs_var=document["obs_var"].numpy(),
            obs_epsilon=float(document["obs_epsilon"]),
            clip_obs=float(document["clip_obs"]),
            info=info,
            num_timesteps=int(document["num_timesteps"]),
            trainer_state=document.get("trainer_state", {}),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path} is a damaged handrail checkpoint: {type(error).__name__}: {error}") from error


def untrained_checkpoint(
    profile: HandProfile,
    *,
    hidden: tuple[int, ...] = (64, 64),
    activation: str = "elu",
    history: int = 1,
    seed: int = 0,
    output_scale: float = 1.0,
    normalizer: bool = True,
    training: dict[str, Any] | None = None,
    sim: SimSettings | None = None,
    object_pose: bool = True,
    action_map: ActionMap | None = None,
) -> Checkpoint:
    """A rotate-z checkpoint with random weights for ``profile``, its info as ``handrail train`` writes it.

    For tests and benchmarks of export and deployment without training. ``output_scale`` shrinks the last
    layer (a gentle policy that moves the hand little); ``normalizer`` gives a mean and variance far from
    the identity (so that a graph without normalization shows), else zeros and ones. ``sim``: the simulator
    settings it claims (its control rate is the policy's); ``object_pose=False``: the proprioceptive layout;
    ``action_map``: its own (default: the relative map at the speed limit).
    """
    from handrail.robot.safety_limits import SafetyLimits
    from handrail.sim.actions import ActionMap
    from handrail.sim.observation import ROTATE_Z_TASK_SIZE, default_spec

    limits = SafetyLimits.from_profile(profile)
    period_s = sim.control_period_s if sim is not None else profile.control_period_s
    if action_map is None:
        action_map = ActionMap.relative(profile.joint_names, limits, period_s)
    spec = default_spec(len(profile.joints), history, ROTATE_Z_TASK_SIZE, object_pose=object_pose)
    rng = np.random.default_rng(seed)
    widths = (spec.n_obs, *hidden, action_map.n_joints)
    weights = [rng.normal(0, n_in**-0.5, (n_out, n_in)).astype(np.float32) for n_in, n_out in pairwise(widths)]
    weights[-1] *= output_scale
    biases = [rng.normal(0, 0.1, n_out).astype(np.float32) for n_out in widths[1:]]
    biases[-1] *= output_scale
    info = {
        "task": "rotate-z",
        "seed": seed,
        "dr": True,
        "history": history,
        "max_pose_age_s": 0.1,
        "control_rate_hz": 1.0 / period_s,
        "profile_name": profile.name,
        "profile_fingerprint": profile.fingerprint(),
        "observation_spec": spec.to_dict(),
        "action_spec": action_map.to_dict(),
        "safety_limits": limits.as_dict(),
        "commit": "untrained",
    }
    if training is not None:
        info["training"] = training
    if sim is not None:
        info["sim"] = sim.to_dict()
    mean = rng.normal(0.0, 2.0, spec.n_obs) if normalizer else np.zeros(spec.n_obs)
    var = rng.uniform(0.1, 4.0, spec.n_obs) if normalizer else np.ones(spec.n_obs)
    return Checkpoint(weights, biases, activation, mean, var, 1e-8, 5.0 if normalizer else 10.0, info)
