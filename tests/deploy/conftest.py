"""Policy files for the deploy tests: one untrained checkpoint for the bundled hand, exported once."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pytest

from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.actions import ActionMap
from handrail.sim.observation import default_spec


def untrained_checkpoint(profile: HandProfile, *, history: int = 1, seed: int = 0):
    """A checkpoint with random weights and a non-trivial normalizer, its info as `handrail train` writes it."""
    from handrail.sim.checkpoint import Checkpoint

    limits = SafetyLimits.from_profile(profile)
    action_map = ActionMap.relative(profile.joint_names, limits, profile.control_period_s)
    spec = default_spec(len(profile.joints), history, 3)
    rng = np.random.default_rng(seed)
    widths = (spec.n_obs, 64, 64, action_map.n_joints)
    weights = [
        rng.normal(0, n_in**-0.5, (n_out, n_in)).astype(np.float32) for n_in, n_out in itertools.pairwise(widths)
    ]
    biases = [rng.normal(0, 0.1, n_out).astype(np.float32) for n_out in widths[1:]]
    info = {
        "task": "rotate-z",
        "seed": seed,
        "dr": {"enabled": True, "source": "sim/configs/randomization.toml"},
        "history": history,
        "max_pose_age_s": 0.1,
        "control_rate_hz": profile.control_rate_hz,
        "profile_name": profile.name,
        "profile_fingerprint": profile.fingerprint(),
        "observation_spec": spec.to_dict(),
        "action_spec": action_map.to_dict(),
        "safety_limits": limits.as_dict(),
        "commit": "0123abc",
        "training": {"steps": 2048, "wall_time_s": 12.5, "eval_return": -3.25},
    }
    return Checkpoint(
        weights,
        biases,
        "elu",
        obs_mean=rng.normal(0.0, 2.0, spec.n_obs),
        obs_var=rng.uniform(0.1, 4.0, spec.n_obs),
        obs_epsilon=1e-8,
        clip_obs=5.0,
        info=info,
    )


@pytest.fixture(scope="session")
def handrail_cli():
    """``handrail.cli.main``, once the policy commands are registered on its parser."""
    from handrail.cli import build_parser, main

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    assert "policy" in commands.choices, (
        "handrail.cli.build_parser lacks the policy commands: call add_policy_commands(commands) from "
        "handrail.cli_policy before `return parser`"
    )
    return main


@pytest.fixture(scope="session")
def profile() -> HandProfile:
    return load_profile()


@pytest.fixture(scope="session")
def checkpoint_file(tmp_path_factory, profile) -> Path:
    from handrail.sim.checkpoint import save_checkpoint

    return save_checkpoint(untrained_checkpoint(profile), tmp_path_factory.mktemp("run") / "latest.pt")


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory, checkpoint_file) -> Path:
    """An exported policy for the bundled hand (read-only: tests write elsewhere)."""
    from handrail.sim.export import export_policy

    return export_policy(checkpoint_file, tmp_path_factory.mktemp("policy") / "policy.onnx", parity_samples=200).path


@pytest.fixture(scope="session")
def bare_policy(tmp_path_factory, policy_file) -> Path:
    """The same graph without any metadata, as another tool would export it."""
    import onnx

    model = onnx.load(policy_file)
    del model.metadata_props[:]
    path = tmp_path_factory.mktemp("bare") / "bare.onnx"
    onnx.save(model, path)
    return path
