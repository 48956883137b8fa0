"""Asymmetric actor-critic for Stable-Baselines3: the actor sees the observation, the critic also the privileged state.

The environment hands PPO one vector per hand, ``[observation | privileged state]`` (see
:mod:`handrail.sim.privileged`), normalized as a whole by ``VecNormalize``. :class:`AsymmetricPolicy`
feeds the first ``actor_obs_size`` entries to the actor's MLP and the whole vector to the critic's, so the
exported actor (``mlp_extractor.policy_net`` + ``action_net``, :func:`~handrail.sim.train_checkpoint.actor_layers`)
takes exactly the observation builder's layout and nothing the hand cannot measure.

Why SB3 and not rsl-rl-lib: the project already trains, checkpoints (without pickle) and exports through
SB3's PPO; a critic with its own input is ~40 lines here, where a second PPO library would mean a second
checkpoint format and exporter.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.policies import ActorCriticPolicy


def _mlp(input_size: int, hidden: list[int], activation: type[torch.nn.Module]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = input_size
    for size in hidden:
        layers += [torch.nn.Linear(width, size), activation()]
        width = size
    return torch.nn.Sequential(*layers)


class SplitExtractor(torch.nn.Module):
    """SB3's ``mlp_extractor`` contract with the actor's input cut to the first ``actor_obs_size`` features."""

    def __init__(
        self,
        feature_size: int,
        actor_obs_size: int,
        actor_hidden: list[int],
        critic_hidden: list[int],
        activation: type[torch.nn.Module],
    ):
        super().__init__()
        self.actor_obs_size = actor_obs_size
        self.policy_net = _mlp(actor_obs_size, actor_hidden, activation)
        self.value_net = _mlp(feature_size, critic_hidden, activation)
        self.latent_dim_pi = actor_hidden[-1] if actor_hidden else actor_obs_size
        self.latent_dim_vf = critic_hidden[-1] if critic_hidden else feature_size

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features[..., : self.actor_obs_size])

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class AsymmetricPolicy(ActorCriticPolicy):
    """PPO's policy with :class:`SplitExtractor`; ``net_arch`` = ``{"pi": [...], "vf": [...]}``."""

    def __init__(self, *args: Any, actor_obs_size: int, **kwargs: Any):
        self.actor_obs_size = actor_obs_size
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch
        assert isinstance(arch, dict), "AsymmetricPolicy needs net_arch = {'pi': [...], 'vf': [...]}"
        self.mlp_extractor = SplitExtractor(
            self.features_dim, self.actor_obs_size, list(arch["pi"]), list(arch["vf"]), self.activation_fn
        )
