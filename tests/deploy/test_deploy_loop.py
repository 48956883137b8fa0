"""The deploy loop on the real virtual hand (pty, wire protocol, safety layer): it runs at the profile's rate
and logs every tick; a policy for another hand is refused before the bus is touched; a policy that emits
NaN is contained; a disconnect mid-run ends in a safe stop with the reason in the log; kill -9 leaves a
readable log; SIGTERM is an operator stop with the torque off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from handrail.deploy.loop import EXIT_SAFE_STOP, LoopConfig
from handrail.deploy.pose_source import GroundTruthPose
from handrail.deploy.rollout_log import FAULT, OPERATOR_STOP, SAFE_STOP
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.deploy.run import run_deploy
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile


def _constant_policy(policy_file: Path, out: Path, value: float) -> Path:
    """A graph with ``policy_file``'s inputs, outputs and metadata whose every action is ``value`` (0: hold)."""
    source = onnx.load(policy_file)
    n_obs = source.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    n_act = source.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    weights = helper.make_tensor("w", TensorProto.FLOAT, [n_obs, n_act], [value] * (n_obs * n_act))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["action"])],
        "constant_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n_act])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = source.ir_version
    model.metadata_props.extend(source.metadata_props)
    onnx.save(model, out)
    return out


def _deploy(policy: Path, profile: HandProfile, vhand: VirtualHandProcess, tmp_path: Path, seconds: float, **kwargs):
    return run_deploy(
        policy,
        profile,
        vhand.port,
        GroundTruthPose(vhand, profile),
        config=LoopConfig(seconds=seconds, startup_timeout_s=3.0, status_interval_s=0),
        log_path=tmp_path / "rollout.mcap",
        **kwargs,
    )


@pytest.fixture(scope="module")
def hold_policy(policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Action 0 everywhere: the relative action map holds the last target (an untrained policy may well push a
    finger into the palm until the stall detector stops the hand, which is another test)."""
    return _constant_policy(policy_file, tmp_path_factory.mktemp("hold") / "hold.onnx", 0.0)


def test_loop_runs_at_rate_and_logs_every_tick(profile, hold_policy, tmp_path) -> None:
    with VirtualHandProcess(reality_seed=2) as vhand:
        outcome = _deploy(hold_policy, profile, vhand, tmp_path, seconds=2.0)
        torque = vhand.ground_truth()["torque_enabled"]
    assert outcome.result.exit_code == 0, outcome.result.stop_reason
    log = read_rollout_log(outcome.log_path)
    assert not log.truncated
    assert 50 <= log.n_ticks <= 62  # 2 s at 30 Hz
    assert np.isfinite(log.target_rad).all() and log.policy_active.all()
    assert set(log.pose_source) == {"ground_truth"}
    assert np.nanpercentile(log.latency_ms["total"], 95) < 1000 / 30
    assert [event.kind for event in log.events][-1] == OPERATOR_STOP
    assert not any(torque), "the run ended with torque still on"


def test_policy_for_another_hand_is_refused_before_the_bus(profile, policy_file, tmp_path, capsys) -> None:
    from handrail.cli import main

    other = tmp_path / "other.toml"
    text = Path(profile.source).read_text().replace("control_rate_hz = 30", "control_rate_hz = 50")
    other.write_text(text.replace('mjcf = "', f'mjcf = "{Path(profile.source).parent}/'))
    assert main(["deploy", "--policy", str(policy_file), "--profile", str(other), "--port", "/dev/null"]) == 2
    message = capsys.readouterr().err
    assert "control rate" in message and "does not match" in message


def test_nan_policy_is_contained(profile, policy_file, tmp_path) -> None:
    nan_policy = _constant_policy(policy_file, tmp_path / "nan.onnx", float("nan"))
    with VirtualHandProcess(reality_seed=3) as vhand:
        outcome = _deploy(nan_policy, profile, vhand, tmp_path, seconds=3.0)
        torque = vhand.ground_truth()["torque_enabled"]
    assert outcome.result.exit_code == EXIT_SAFE_STOP
    assert "finite" in outcome.result.stop_reason
    log = read_rollout_log(outcome.log_path)
    assert not log.truncated and log.n_ticks == 0  # stopped on the first policy output
    assert [event.kind for event in log.events][-2:] == [FAULT, SAFE_STOP]
    assert not any(torque)


def test_disconnect_mid_run_is_a_safe_stop_with_the_reason_logged(profile, hold_policy, tmp_path) -> None:
    with VirtualHandProcess(reality_seed=4) as vhand:
        timer = threading.Timer(2.5, vhand.inject, args=("disconnect",))
        timer.start()
        try:
            outcome = _deploy(hold_policy, profile, vhand, tmp_path, seconds=10.0)
        finally:
            timer.cancel()
    assert outcome.result.exit_code == EXIT_SAFE_STOP
    log = read_rollout_log(outcome.log_path)
    faults = [event for event in log.events if event.kind == FAULT]
    assert faults and "comms" in json.dumps(faults[0].details) + faults[0].message.lower()
    assert 0 < log.n_ticks < 10 * 30


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_deploy_leaves_a_readable_log(hold_policy, tmp_path, sig) -> None:
    command = [sys.executable, "-m", "handrail", "deploy", "--policy", str(hold_policy), "--seconds", "60"]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the virtual hand goes with it
        env={**os.environ, "MUJOCO_GL": "egl"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("*.mcap")):
            time.sleep(0.2)
        time.sleep(4.0)
        if sig == signal.SIGKILL:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    (log_path,) = tmp_path.glob("*.mcap")
    log = read_rollout_log(log_path)
    assert log.n_ticks > 20
    if sig == signal.SIGKILL:
        assert log.truncated
    else:
        assert process.returncode == 0 and not log.truncated
        assert OPERATOR_STOP in [event.kind for event in log.events]
