"""Policy files for the deploy tests: one untrained checkpoint for the bundled hand, exported once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from handrail.robot.profile import HandProfile, load_profile


def untrained_checkpoint(profile: HandProfile, *, history: int = 1, seed: int = 0):
    """A checkpoint with random weights and a non-trivial normalizer, its info as `handrail train` writes it."""
    from handrail.sim.checkpoint import untrained_checkpoint as build

    training = {"steps": 2048, "wall_time_s": 12.5, "eval_return": -3.25}
    return build(profile, history=history, seed=seed, training=training)


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
