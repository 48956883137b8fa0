"""Policy files for the deploy tests: one untrained checkpoint for the bundled hand, exported once."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from handrail.deploy.rollout_log import LogHeader, PoseRecord, RolloutLogWriter, TickRecord
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


# A short rollout log for the video tests (test_log_video.py, test_demo.py).
RATE_HZ = 20.0
TICKS = 60  # 3 s
STOP_TICK = 40
STILL_TICKS = 10
BENDING = [1, 2, 3, 5, 6, 7, 9, 10, 11]  # the MCP, PIP and DIP joints of the index, middle and ring fingers


def write_short_run_log(path: Path) -> Path:
    """3 s at 20 Hz: still for 0.5 s, then three fingers close and open while the cube turns 0.5 rad; a safe
    stop at 2 s."""
    profile = load_profile()
    home = np.array([joint.home_rad for joint in profile.joints])
    header = LogHeader.for_run(profile.at_rate(RATE_HZ), extra={"pose_source": "ground_truth"})
    with RolloutLogWriter(path) as writer:
        writer.write_header(header)
        for tick in range(TICKS):
            time_s = header.start_monotonic_s + tick / RATE_HZ
            position = home.copy()
            phase = max(0, tick - STILL_TICKS) / (TICKS - STILL_TICKS)  # still for 0.5 s, then moving
            position[BENDING] += 1.2 * np.sin(np.pi * phase)  # three fingers bend and straighten again
            yaw = 0.5 * phase
            pose = PoseRecord(
                np.array([0.048, 0.004, 0.03]), (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)), 0.0, "ground_truth", True
            )
            zeros = np.zeros(len(home))
            writer.write_tick(
                TickRecord(tick, time_s, position, zeros, zeros, zeros + 30.0, position, action=zeros, pose=pose)
            )
            if tick == STOP_TICK:
                writer.write_event("fault", "motor 2 (index_pip): overload", time_s=time_s, fault_kind="hardware_error")
                writer.write_event("safe_stop", "torque off", time_s=time_s, action="torque_off")
    return path


@pytest.fixture(scope="session")
def short_run_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 20 Hz: still for 0.5 s, then three fingers close and open while the cube turns; a stop at 2 s."""
    return write_short_run_log(tmp_path_factory.mktemp("short_run") / "run.mcap")
