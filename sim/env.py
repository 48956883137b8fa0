"""The training environment as a Gymnasium env: one simulated hand with its cube, seen and driven as the hand is.

:class:`HandEnv` is :class:`~handrail.sim.batch_env.BatchHandEnv` with one hand and no automatic reset:
the same physics, randomization, safety filter and observation builder the batched training uses (see
that module for what is modelled). One :meth:`HandEnv.step` is one control period of the profile.

Registered as ``handrail/LeapPose-v0`` and ``handrail/LeapRotateZ-v0`` by :func:`register_envs` (run on
import of this module). For training, :class:`~handrail.sim.batch_env.BatchHandEnv` steps many hands at
once at near raw MuJoCo speed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import DynamicsCalibration
from handrail.robot.profile import HandProfile
from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.observation import DEFAULT_MAX_POSE_AGE_S
from handrail.sim.randomization import EpisodeRandomization, RandomizationConfig
from handrail.sim.tasks import POSE, ROTATE_Z, PoseConfig, RotateZConfig

ENV_IDS = {POSE: "handrail/LeapPose-v0", ROTATE_Z: "handrail/LeapRotateZ-v0"}
_SEED_BOUND = 2**63


class HandEnv(gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """The hand in MuJoCo with one task (``"pose"`` or ``"rotate-z"``), randomized per episode.

    Exposes ``observation_spec``, ``action_map`` and ``safety_limits`` (what the exporter writes into the
    policy file), ``profile``, ``core`` (the one-hand :class:`BatchHandEnv`), ``model``/``data`` (copies of
    the simulation's current model and state) and ``episode_randomization`` (the current draw). With ``dynamics``
    (a dynamics calibration) the hand is the identified one, as in :class:`BatchHandEnv`.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        task: str = ROTATE_Z,
        *,
        dr: bool = True,
        profile: HandProfile | None = None,
        randomization: RandomizationConfig | None = None,
        task_config: PoseConfig | RotateZConfig | None = None,
        history: int = 1,
        max_pose_age_s: float = DEFAULT_MAX_POSE_AGE_S,
        dynamics: DynamicsCalibration | None = None,
    ):
        self.core = BatchHandEnv(
            task,
            1,
            dr=dr,
            profile=profile,
            randomization=randomization,
            task_config=task_config,
            history=history,
            max_pose_age_s=max_pose_age_s,
            nthread=1,
            autoreset=False,
            dynamics=dynamics,
        )
        core = self.core
        self.profile = core.profile
        self.task = core.task
        self.control_period_s = core.control_period_s
        self.n_joints = core.n_joints
        self.safety_limits = core.safety_limits
        self.action_map = core.action_map
        self.observation_spec = core.observation_spec
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.observation_spec.n_obs,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.n_joints,), np.float32)
        self._seeded = False

    @property
    def model(self) -> mujoco.MjModel:
        return self.core.get_model(0)

    @property
    def data(self) -> mujoco.MjData:
        return self.core.get_data(0)

    @property
    def episode_randomization(self) -> EpisodeRandomization | None:
        return self.core.samples[0]

    @property
    def last_target_rad(self) -> NDArray[np.float64]:
        """The target the safety filter let through last [rad]."""
        return self.core.target_filter.target_rad[0].copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.core.seed(seed if seed is not None else int(self.np_random.integers(_SEED_BOUND)))
            self._seeded = True
        obs = self.core.reset()[0]
        sample = self.core.samples[0]
        assert sample is not None
        return obs, dict(sample.as_dict(self.profile.joint_names))

    def step(self, action: NDArray[np.float32]) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        if self.core.samples[0] is None:
            raise gym.error.ResetNeeded("HandEnv.step() before reset() — call reset() first")
        result = self.core.step(np.asarray(action, dtype=np.float64)[None, :])
        info: dict[str, Any] = {f"reward/{name}": float(value[0]) for name, value in result.reward_terms.items()}
        for name, value in result.metrics.items():
            info[name] = bool(value[0]) if name == "dropped" else float(value[0])
        info["interventions"] = {kind: int(counts[0]) for kind, counts in result.interventions.items()}
        info["interventions_this_step"] = int(result.interventions_step[0])
        info["filtered_target_rad"] = result.filtered_target_rad[0]
        return result.obs[0], float(result.reward[0]), bool(result.terminated[0]), bool(result.truncated[0]), info


def register_envs() -> None:
    """Register ``handrail/LeapPose-v0`` and ``handrail/LeapRotateZ-v0`` with gymnasium (idempotent).

    Episodes end through the task's own truncation, so no TimeLimit wrapper is added.
    """
    for task, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="handrail.sim.env:HandEnv", kwargs={"task": task})


register_envs()
