"""Task scores of a policy in the batched simulator: what ``handrail eval`` reports.

A policy is a checkpoint (``.pt`` or a run folder, evaluated from its numpy actor) or a policy file
(``.onnx``, evaluated with onnxruntime exactly as the hand runs it). Each hand plays the same number of
whole episodes (so that short, failed episodes are not over-counted); actions are deterministic.

Scores: for ``rotate-z`` the mean cube angular velocity about the palm normal over each episode [rad/s]
(averaged over episodes), the total rotation per episode [rad] and the drop rate (episodes that ended
with the cube off the palm); for ``pose`` the joint error at the end of the episode [rad].

With a dynamics calibration (``handrail eval --dynamics FILE``) the simulator is the identified hand: its
nominal model with ``--no-dr``, the randomization centred on it otherwise (see
:class:`~handrail.sim.batch_env.BatchHandEnv`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import DynamicsCalibration, read_dynamics_calibration
from handrail.deploy.policy_file import PolicyMetadata, metadata_from_checkpoint_info
from handrail.deploy.policy_match import PolicyMismatchError, check_policy_matches
from handrail.errors import HandrailError
from handrail.robot.profile import HandProfile, load_profile
from handrail.sim.actions import ActionMap
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.observation import ObservationSpec, uses_object_pose
from handrail.sim.sim_settings import SimSettings
from handrail.sim.tasks import POSE, ROTATE_Z

Policy = Callable[[NDArray[np.float32]], NDArray[np.float64]]


class EvalError(HandrailError):
    """A policy cannot be evaluated on the task asked for."""


@dataclass(frozen=True)
class PolicyUnderTest:
    """A policy as a function of a batch of observations, and the facts needed to build its environment."""

    act: Policy
    task: str
    history: int
    max_pose_age_s: float
    n_obs: int
    source: str
    sim: SimSettings | None = None  # the simulator it was trained in (None: the profile's rate, the MJCF's physics)
    object_pose: bool = True  # whether its observation has the object pose fields
    # Its facts as a policy file carries them (the hand, joints, limits): checked against the hand evaluated on.
    metadata: PolicyMetadata | None = None
    # How its actions become joint targets (its own map, relative or absolute); None: the hand's relative map.
    action_map: ActionMap | None = None


def load_policy(path: str | Path) -> PolicyUnderTest:
    """A checkpoint (``.pt``/run folder) or an ONNX policy file as a :class:`PolicyUnderTest`."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_policy(path)
    from handrail.sim.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    info = checkpoint.info
    return PolicyUnderTest(
        act=lambda obs: checkpoint.act(obs),
        task=info["task"],
        history=int(info["history"]),
        max_pose_age_s=float(info["max_pose_age_s"]),
        n_obs=checkpoint.n_obs,
        source=f"checkpoint {path}",
        sim=SimSettings.from_dict(info["sim"]) if info.get("sim") else None,
        object_pose=uses_object_pose(ObservationSpec.from_dict(info["observation_spec"])),
        metadata=metadata_from_checkpoint_info(info, f"checkpoint {path}"),
        action_map=ActionMap.from_dict(info["action_spec"]),
    )


def _onnx_policy(path: Path) -> PolicyUnderTest:
    import onnxruntime as ort

    from handrail.deploy.policy_file import read_policy

    metadata, _ = read_policy(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def act(obs: NDArray[np.float32]) -> NDArray[np.float64]:
        (action,) = session.run(["action"], {"obs": np.asarray(obs, dtype=np.float32)})
        return np.asarray(action, dtype=np.float64)

    return PolicyUnderTest(
        act=act,
        task=metadata.task,
        history=metadata.history,
        max_pose_age_s=metadata.max_pose_age_s,
        n_obs=int(metadata.observation_spec["n_obs"]),
        source=f"policy file {path}",
        sim=SimSettings.from_dict(metadata.sim) if metadata.sim else None,
        object_pose=uses_object_pose(metadata.observation),
        metadata=metadata,
        action_map=metadata.action_map,
    )


@dataclass(frozen=True)
class EvalReport:
    """Scores of ``episodes`` episodes of ``task`` (see the module docstring)."""

    task: str
    dr: bool
    episodes: int
    seed: int
    mean_return: float
    mean_episode_steps: float
    mean_angular_velocity_rad_s: float | None = None  # rotation over the whole episode length (a drop ends it)
    mean_rotation_rad: float | None = None
    drop_rate: float | None = None
    # Mean time from the start to the drop, over the episodes that dropped [s] (None: no drop).
    mean_time_to_drop_s: float | None = None
    # Episodes the hand's safety monitor would have stopped (overspeed, overcurrent, stall), and per kind.
    safety_stop_rate: float | None = None
    safety_stops: dict[str, int] | None = None
    episode_s: float | None = None
    sim: dict[str, Any] | None = None  # the simulator settings of the run
    final_joint_error_rad: float | None = None
    policy: str = ""
    dynamics: dict[str, Any] | None = None  # the dynamics calibration the sim was built from (its record)
    hand: str | None = None  # the hand profile's name
    hand_warnings: tuple[str, ...] = ()  # how the policy's hand differs without being refused (see _check_hand)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def format(self) -> str:
        lines = [
            f"{self.task}, DR {'on' if self.dr else 'off'}, {self.episodes} episodes, seed {self.seed} — {self.policy}"
        ]
        if self.hand is not None:
            lines.append(f"  hand: {self.hand}")
        lines.extend(f"  warning: {warning}" for warning in self.hand_warnings)
        if self.dynamics is not None:
            lines.append(
                f"  identified dynamics: {self.dynamics['path']} ({self.dynamics['fingerprint']}, fit RMSE "
                f"{self.dynamics['fit_rmse_after_rad']:.4f} rad)"
            )
        if self.sim is not None:
            sim = self.sim
            lines.append(
                f"  simulator: {sim['control_rate_hz']:g} Hz control, {sim['substeps']} x "
                f"{sim['timestep_s'] * 1000:.2f} ms {sim['integrator']} physics, {sim['solver_iterations']} solver "
                f"iterations, impratio {sim['impratio']:g}"
            )
        if self.mean_angular_velocity_rad_s is not None:
            lines.append(
                f"  mean cube angular velocity about z: {self.mean_angular_velocity_rad_s:+.3f} rad/s over whole "
                f"{self.episode_s:g} s episodes"
            )
            lines.append(f"  mean rotation per episode:          {self.mean_rotation_rad:+.2f} rad")
            drop_time = f" (after {self.mean_time_to_drop_s:.1f} s on average)" if self.mean_time_to_drop_s else ""
            lines.append(f"  drop rate:                          {self.drop_rate:.1%}{drop_time}")
        if self.safety_stop_rate is not None:
            kinds = ", ".join(f"{kind} {count}" for kind, count in (self.safety_stops or {}).items() if count)
            lines.append(
                f"  safety monitor would stop the hand: {self.safety_stop_rate:.1%} of episodes"
                + (f" ({kinds})" if kinds else "")
            )
        if self.final_joint_error_rad is not None:
            lines.append(f"  final joint error (norm):           {self.final_joint_error_rad:.3f} rad")
        lines.append(f"  mean return {self.mean_return:.1f}, mean episode length {self.mean_episode_steps:.0f} steps")
        return "\n".join(lines)


def evaluate(
    policy: PolicyUnderTest | Policy,
    task: str | None = None,
    *,
    dr: bool = True,
    episodes: int = 32,
    seed: int = 1000,
    n_envs: int | None = None,
    episode_steps: int | None = None,
    history: int = 1,
    dynamics: DynamicsCalibration | str | Path | None = None,
    sim: SimSettings | str | None = None,
    profile: HandProfile | str | Path | None = None,
) -> EvalReport:
    """Play ``episodes`` episodes of ``task`` with ``policy`` and score them.

    ``policy`` is a :class:`PolicyUnderTest` (its task and history are used, ``task`` must agree) or a bare
    function of observations (then ``task`` is required). Each of ``n_envs`` hands (default: up to 32)
    plays ceil(episodes / n_envs) episodes; the first ``episodes`` finished are scored. ``dynamics`` (a
    calibration or its file, which must be the default profile's) makes the simulator the identified hand.
    ``sim``: the simulator settings (default: the policy's own); ``"fine"`` is the MJCF's own physics (the
    virtual hand's timestep and solver) at the policy's control rate — the sim-to-sim check of a policy
    trained on coarse physics. ``profile``: the hand (a profile or its file; default the bundled LEAP hand),
    which must be the one the policy was trained for.
    """
    if episodes < 1:
        raise EvalError(f"--episodes {episodes} must be at least 1")
    act, source, max_pose_age_s = _unpack(policy, task)
    object_pose = True
    own_sim: SimSettings | None = None
    if isinstance(policy, PolicyUnderTest):
        object_pose, own_sim = policy.object_pose, policy.sim
        if task is not None and task != policy.task:
            raise EvalError(
                f"the policy was trained for task {policy.task!r}, not {task!r} — pass --task {policy.task}"
            )
        task, history = policy.task, policy.history
    if task not in (POSE, ROTATE_Z):
        raise EvalError(f"unknown task {task!r}; valid tasks: {POSE}, {ROTATE_Z}")
    from handrail.sim.train_config import task_config_for

    if not isinstance(profile, HandProfile):
        profile = load_profile(profile)
    hand_warnings: tuple[str, ...] = ()
    if isinstance(policy, PolicyUnderTest):
        hand_warnings = _check_hand(policy, profile)
    dynamics_path: Path | None = None
    if isinstance(dynamics, str | Path):
        dynamics_path = Path(dynamics)
        dynamics = read_dynamics_calibration(dynamics_path, profile)
    n_envs = n_envs or min(episodes, 32)
    per_hand = math.ceil(episodes / n_envs)
    sim = _simulator(sim, own_sim, profile)
    env = BatchHandEnv(
        task,
        n_envs,
        dr=dr,
        seed=seed,
        history=history,
        max_pose_age_s=max_pose_age_s,
        task_config=task_config_for(task, episode_steps),
        dynamics=dynamics,
        sim=sim,
        object_pose=object_pose,
        profile=profile,
        action_map=policy.action_map if isinstance(policy, PolicyUnderTest) else None,
    )
    if isinstance(policy, PolicyUnderTest) and policy.n_obs != env.observation_spec.n_obs:
        raise EvalError(
            f"the policy takes {policy.n_obs} observations but task {task!r} with history {history} gives "
            f"{env.observation_spec.n_obs} — it was built for another layout"
        )
    finished: list[dict[str, float]] = []
    played = np.zeros(n_envs, dtype=int)
    obs = env.reset()
    while np.min(played) < per_hand:
        result = env.step(act(obs))
        obs = result.obs
        done = np.flatnonzero(result.terminated | result.truncated)
        for hand in done.tolist():
            if played[hand] < per_hand:
                finished.append(_episode_scores(result, hand, env.control_period_s, env.task.episode_steps))
            played[hand] += 1
    scored = finished[:episodes]
    report = _report(scored, task, dr, seed, source)
    report = replace(
        report,
        sim=env.sim.to_dict(),
        episode_s=env.task.episode_steps * env.control_period_s,
        safety_stops={
            kind: int(sum(episode.get(f"stop/{kind}", 0.0) for episode in scored)) for kind in result.safety_stops
        },
        hand=profile.name,
        hand_warnings=hand_warnings,
    )
    return report if dynamics is None else replace(report, dynamics=dynamics.record(dynamics_path))


def _check_hand(policy: PolicyUnderTest, profile: HandProfile) -> tuple[str, ...]:
    """The deploy loop's check of ``policy`` against the hand: EvalError where the hand would refuse it.

    Returns the warnings (another profile name or fingerprint, e.g. the same hand in another MJCF).
    """
    if policy.metadata is None:
        return ()
    try:
        return check_policy_matches(policy.metadata, profile, source=policy.source)
    except PolicyMismatchError as error:
        raise EvalError(f"{error} (--profile)") from error


def _simulator(sim: SimSettings | str | None, own: SimSettings | None, profile: HandProfile) -> SimSettings | None:
    """The settings to evaluate in: given ones, the policy's own, or ``"fine"`` (the MJCF's physics, its rate)."""
    if sim is None or isinstance(sim, SimSettings):
        return sim if sim is not None else own
    if sim == "fine":
        from handrail.sim.model import build_scene_for_profile

        rate = own.control_rate_hz if own is not None else profile.control_rate_hz
        return SimSettings.of_model(build_scene_for_profile(profile), rate)
    raise EvalError(f"--sim {sim!r}: give 'fine' (the MJCF's own physics) or leave it out (the policy's own)")


def _unpack(policy: PolicyUnderTest | Policy, task: str | None) -> tuple[Policy, str, float]:
    from handrail.sim.observation import DEFAULT_MAX_POSE_AGE_S

    if isinstance(policy, PolicyUnderTest):
        return policy.act, policy.source, policy.max_pose_age_s
    if task is None:
        raise EvalError("a bare policy function needs the task to evaluate it on")
    return policy, getattr(policy, "__name__", "policy function"), DEFAULT_MAX_POSE_AGE_S


def _episode_scores(result: Any, hand: int, period_s: float, full_steps: int) -> dict[str, float]:
    length = int(result.episode_length[hand])
    scores = {"return": float(result.episode_return[hand]), "steps": float(length)}
    metrics = result.episode_metrics
    if "cube_angular_velocity_z_rad_s" in metrics:
        spin = float(metrics["cube_angular_velocity_z_rad_s"][hand])
        dropped = bool(metrics["dropped"][hand] > 0)
        scores["rotation"] = spin * length * period_s
        # Over the whole episode: the time after a drop or a safety stop turns nothing.
        scores["spin"] = scores["rotation"] / (full_steps * period_s)
        scores["dropped"] = float(dropped)
        scores["time_to_drop_s"] = length * period_s if dropped else math.nan
        scores["safety_stop"] = float(result.terminated[hand] and not dropped)
        for kind, stopped in result.safety_stops.items():
            scores[f"stop/{kind}"] = float(stopped[hand] and not dropped)
    if "final_joint_error_rad" in result.metrics:
        scores["final_error"] = float(result.metrics["final_joint_error_rad"][hand])
    return scores


def _report(episodes: list[dict[str, float]], task: str, dr: bool, seed: int, source: str) -> EvalReport:
    def mean(key: str) -> float:
        return float(np.mean([episode[key] for episode in episodes]))

    extra: dict[str, float | None] = {}
    if task == ROTATE_Z:
        drop_times = [episode["time_to_drop_s"] for episode in episodes if episode["dropped"]]
        extra = {
            "mean_angular_velocity_rad_s": mean("spin"),
            "mean_rotation_rad": mean("rotation"),
            "drop_rate": mean("dropped"),
            "mean_time_to_drop_s": float(np.mean(drop_times)) if drop_times else None,
            "safety_stop_rate": mean("safety_stop"),
        }
    else:
        extra = {"final_joint_error_rad": mean("final_error")}
    return EvalReport(
        task=task,
        dr=dr,
        episodes=len(episodes),
        seed=seed,
        mean_return=mean("return"),
        mean_episode_steps=mean("steps"),
        policy=source,
        **extra,
    )
