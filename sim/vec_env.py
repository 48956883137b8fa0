"""Stable-Baselines3's ``VecEnv`` interface over one :class:`~handrail.sim.batch_env.BatchHandEnv`.

No subprocesses and no pickling: SB3 steps all hands of the batched engine at once. With an asymmetric
actor-critic the observation SB3 sees is the actor's observation followed by the critic's privileged state.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from handrail.sim.batch_env import BatchHandEnv
from handrail.sim.train_config import TrainError


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
