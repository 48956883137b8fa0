"""What a training run saves: the checkpoint of a live PPO model, the policy's facts, the run's dynamics file.

:func:`make_checkpoint` turns SB3's model and normalizer into a :class:`~handrail.sim.checkpoint.Checkpoint`
(tensors, numbers and strings only); :func:`policy_info` is what the checkpoint and the exported policy say
about the policy (task, rate, simulator, profile, observation and action specs, limits, commit);
:func:`run_dynamics` keeps a run on the dynamics calibration it was started with.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from handrail.calibration.dynamics_file import DynamicsCalibration, read_dynamics_calibration
from handrail.robot.profile import HandProfile
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.checkpoint import Checkpoint
from handrail.sim.train_config import Hyperparameters, RunConfig, TrainError


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


def actor_layers(model: PPO) -> tuple[list[np.ndarray], list[np.ndarray]]:
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
    weights, biases = actor_layers(model)
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
