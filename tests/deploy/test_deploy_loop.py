"""The deploy loop on the real virtual hand (pty, wire protocol, safety layer): it runs at the profile's rate
and logs every tick; a policy for another hand is refused before the bus is touched; a policy that emits
NaN is contained; a disconnect mid-run ends in a safe stop with the reason in the log; kill -9 leaves a
readable log; SIGTERM is an operator stop with the torque off."""

from __future__ import annotations

import json
import os
import re
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
    # Another hand: slower servos, and a bus that allows at most 25 Hz (the policy runs at 30 Hz).
    text = Path(profile.source).read_text()
    assert "max_speed_rad_s = 3.0" in text and "max_control_rate_hz = 100.0" in text
    text = text.replace("max_speed_rad_s = 3.0", "max_speed_rad_s = 2.5")
    text = text.replace("control_rate_hz = 30.0", "control_rate_hz = 20.0").replace(
        "max_control_rate_hz = 100.0", "max_control_rate_hz = 25.0"
    )
    other.write_text(text.replace('mjcf = "', f'mjcf = "{Path(profile.source).parent}/'))
    assert main(["deploy", "--policy", str(policy_file), "--profile", str(other), "--port", "/dev/null"]) == 2
    message = capsys.readouterr().err
    assert "does not match" in message
    assert "control rate: the policy runs at 30 Hz" in message
    assert "safety limit max_speed" in message


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
        # Until the log (flushed every 0.5 s) holds 30 policy ticks: the kill lands mid-run, however slow the start.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = list(tmp_path.glob("*.mcap"))
            if logs and read_rollout_log(logs[0]).policy_active.sum() >= 30:
                break
            time.sleep(0.3)
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


def test_sigterm_ends_a_deploy_on_a_hand_with_every_servos_torque_off(profile, tmp_path) -> None:
    """The hand outlives the deploy here (its own virtual hand, given with --port), so its servos can be asked."""
    from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
    from handrail.sim.export import export_policy

    checkpoint = untrained_checkpoint(profile, object_pose=False, output_scale=0.0)  # blind: needs no pose source
    policy = export_policy(save_checkpoint(checkpoint, tmp_path / "c.pt"), tmp_path / "p.onnx", parity_samples=20)
    with VirtualHandProcess(reality_seed=2) as vhand:
        command = [sys.executable, "-m", "handrail", "deploy", "--policy", str(policy.path), "--port", vhand.port]
        process = subprocess.Popen(
            [*command, "--seconds", "60", "--out", str(tmp_path / "log")], stdout=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(vhand.ground_truth()["torque_enabled"]):
                time.sleep(0.1)
            assert all(vhand.ground_truth()["torque_enabled"]), "the deploy never switched the torque on"
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert not any(vhand.ground_truth()["torque_enabled"])
    (log_path,) = (tmp_path / "log").glob("*.mcap")
    assert OPERATOR_STOP in [event.kind for event in read_rollout_log(log_path).events]


def _policy_that_fails_once_running(policy_file: Path, out: Path) -> Path:
    """Runs on the all-zero observation the runtime warms up with; any real observation makes its Gather
    index fall outside the table, and onnxruntime raises mid-run (an error no safety check anticipates)."""
    source = onnx.load(policy_file)
    n_obs = source.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    n_act = source.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["obs"], ["magnitude"]),
            helper.make_node("ReduceSum", ["magnitude", "axis_1"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "million"], ["scaled"]),
            helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["gathered"], axis=0),
            helper.make_node("Squeeze", ["gathered", "axis_1"], ["action"]),
        ],
        "fails_once_running",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", n_obs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n_act])],
        [
            helper.make_tensor("axis_1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("million", TensorProto.FLOAT, [], [1e6]),
            helper.make_tensor("table", TensorProto.FLOAT, [2, n_act], [0.0] * (2 * n_act)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = source.ir_version
    model.metadata_props.extend(source.metadata_props)
    onnx.save(model, out)
    return out


def test_an_onnxruntime_error_mid_run_is_a_safe_stop_with_torque_off_first(profile, policy_file, tmp_path) -> None:
    policy = _policy_that_fails_once_running(policy_file, tmp_path / "fails.onnx")
    with VirtualHandProcess(reality_seed=5) as vhand:
        pose = GroundTruthPose(vhand, profile)
        outcome = run_deploy(
            policy,
            profile,
            vhand.port,
            pose,
            config=LoopConfig(seconds=3.0, startup_timeout_s=3.0, status_interval_s=0),
            log_path=tmp_path / "rollout.mcap",
        )
        torque = vhand.ground_truth()["torque_enabled"]
    assert outcome.result.exit_code == EXIT_SAFE_STOP
    assert "unexpected" in outcome.result.stop_reason and "in the control loop" in outcome.result.stop_reason
    record = outcome.safe_stop
    assert record is not None and record.fault.kind == "unexpected_error" and record.action == "torque_off"
    assert record.commands_sent and not any(torque)
    log = read_rollout_log(outcome.log_path)
    assert not log.truncated
    kinds = [event.kind for event in log.events]
    assert kinds[-2:] == [FAULT, SAFE_STOP] and OPERATOR_STOP not in kinds
    fault = log.events[-2]
    assert fault.details["fault_kind"] == "unexpected_error" and fault.details["action"] == "torque_off"
    assert "onnxruntime" in fault.details["traceback"] or "Gather" in fault.details["traceback"]


class _PoseSourceWithAnEvent:
    """Ground truth; on its ``on_call``-th call (ticks of the policy) ``event()`` happens first."""

    def __init__(self, source: GroundTruthPose, on_call: int, event):
        self.source, self.name = source, source.name
        self.calls, self.on_call, self.event = 0, on_call, event

    def latest(self):
        self.calls += 1
        if self.calls == self.on_call:
            self.event()
        return self.source.latest()

    def close(self) -> None:
        self.source.close()


@pytest.mark.parametrize("kind", ["hardware_error", "loop_stalled", "stall"])
def test_a_safety_fault_ends_the_deploy_with_exit_3_and_its_record_in_the_log(
    profile, hold_policy, policy_file, tmp_path, kind: str
) -> None:
    policy = hold_policy
    with VirtualHandProcess(reality_seed=6) as vhand:
        if kind == "hardware_error":
            event = lambda: vhand.inject("overload", "middle_pip")  # noqa: E731
        elif kind == "stall":
            # Every action +1: each joint's target runs to its soft limit; the stuck one cannot follow.
            policy = _constant_policy(policy_file, tmp_path / "push.onnx", 1.0)
            event = lambda: vhand.inject("stuck", "index_pip")  # noqa: E731
        else:
            event = lambda: time.sleep(0.4)  # noqa: E731  the loop blocks: the robot's watchdog holds the hand
        outcome = run_deploy(
            policy,
            profile,
            vhand.port,
            _PoseSourceWithAnEvent(GroundTruthPose(vhand, profile), on_call=15, event=event),
            config=LoopConfig(seconds=8.0, startup_timeout_s=3.0, status_interval_s=0),
            log_path=tmp_path / "rollout.mcap",
        )
        torque = vhand.ground_truth()["torque_enabled"]
    assert outcome.result.exit_code == EXIT_SAFE_STOP, outcome.result.stop_reason
    record = outcome.safe_stop
    assert record is not None and record.fault.kind == kind, outcome.result.stop_reason
    assert record.action == ("hold" if kind == "loop_stalled" else "torque_off")
    assert not any(torque)  # the run ends with torque off, a hold included
    log = read_rollout_log(outcome.log_path)
    assert not log.truncated and log.n_ticks >= 10
    faults = [event for event in log.events if event.kind == FAULT]
    assert len(faults) == 1 and faults[0].details["fault_kind"] == kind
    assert faults[0].details["action"] == record.action and record.fault.message in faults[0].message
    assert [event.kind for event in log.events][-1] == SAFE_STOP


def test_cli_deploy_on_a_port_that_does_not_exist_is_one_error_with_its_own_exit_code(
    hold_policy, tmp_path, capsys
) -> None:
    from handrail.cli import main
    from handrail.deploy.run import EXIT_NOT_STARTED

    port = str(tmp_path / "ttyUSB9")
    code = main(["deploy", "--policy", str(hold_policy), "--port", port, "--seconds", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == EXIT_NOT_STARTED == 4
    assert captured.out == ""
    assert f"the hand did not start: cannot open serial port {port}" in captured.err
    assert "handrail doctor --port" in captured.err
    for wrong in ("demo", "None", "compare", "virtual hand", "safety layer stopped"):
        assert wrong not in captured.err


def test_cli_deploy_help_documents_its_exit_codes(capsys) -> None:
    from handrail.cli import main

    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    text = capsys.readouterr().out
    for line in ("0  the time is up", "3  safe stop", "4  the hand did not start"):
        assert line in text


def test_cli_deploy_prints_a_deploy_summary(hold_policy, tmp_path, capsys) -> None:
    from handrail.cli import main

    code = main(["deploy", "--policy", str(hold_policy), "--seconds", "1.5", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out + captured.err
    assert "deploy: " in out and "on a virtual hand (reality seed 0)" in out and "ended: time is up" in out
    assert re.search(r"loop: \d+\.\d Hz \(target 30 Hz\)", out)
    assert "None" not in out and "demo" not in out
    (log_path,) = tmp_path.glob("*.mcap")
    assert f"handrail compare {log_path}" in out


def test_cli_demo_whose_virtual_hand_never_started_fails_with_one_error(monkeypatch, tmp_path, capsys) -> None:
    """A starved machine can leave the virtual hand silent at start: the main job must not pass as a success."""
    from handrail.cli import main
    from handrail.deploy import demo
    from handrail.deploy.run import EXIT_NOT_STARTED

    not_started = demo.DemoSummary(
        rotation_rad=0.0,
        mean_angular_velocity_rad_s=0.0,
        drops=0,
        limit_violations={},
        safety_interventions={},
        loop={"ticks": 0},
        exit_code=EXIT_NOT_STARTED,
        stop_reason="the hand did not start: bus /dev/pts/9: no answer from motor 1 (index_mcp)",
        log_path=str(tmp_path / "rollout.mcap"),
        pose_source="none",
        policy_seconds=0.0,
    )
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: not_started)
    assert main(["demo", "--seconds", "1", "--out", str(tmp_path)]) == EXIT_NOT_STARTED
    captured = capsys.readouterr()
    assert "handrail: error: the demo did not run: the hand did not start: bus /dev/pts/9" in captured.err
    assert "None" not in captured.out + captured.err and "rotation" not in captured.out


def test_a_policy_with_an_absolute_action_map_drives_the_hand_to_its_pose(profile, tmp_path) -> None:
    """The loop maps actions with the policy's own map: action 0 of a map around a pose is that pose (with the
    relative map it would hold the start)."""
    from handrail.sim.actions import ActionMap
    from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
    from handrail.sim.export import export_policy

    home = np.array([joint.home_rad for joint in profile.joints])
    centre = home.copy()
    centre[[1, 5, 9]] += 0.25  # the index, middle and ring MCPs bend further (inside their soft limits)
    around = ActionMap.around(profile.joint_names, centre, 0.6)
    checkpoint = save_checkpoint(untrained_checkpoint(profile, action_map=around), tmp_path / "c.pt")
    policy = export_policy(checkpoint, tmp_path / "p.onnx", parity_samples=20).path
    hold = _constant_policy(policy, tmp_path / "zero.onnx", 0.0)
    with VirtualHandProcess(reality_seed=2) as vhand:
        outcome = _deploy(hold, profile, vhand, tmp_path, seconds=1.5)
    assert outcome.result.exit_code == 0, outcome.result.stop_reason
    log = read_rollout_log(outcome.log_path)
    np.testing.assert_allclose(log.target_rad[-1], centre, rtol=0, atol=1e-6)
    assert np.abs(log.position_rad[-1][[1, 5, 9]] - centre[[1, 5, 9]]).max() < 0.1
    assert np.abs(log.position_rad[0][[1, 5, 9]] - centre[[1, 5, 9]]).min() > 0.15  # it moved there
