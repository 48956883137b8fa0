"""``--view``: the loop streams its log's channels to a Foxglove WebSocket server on 127.0.0.1. A client (the
Foxglove WebSocket protocol, spoken here with ``websockets``) connects during a short deploy on the virtual
hand and receives the tick channel at the loop's rate; nothing listens beyond the loopback address; with no
client nothing piles up."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from handrail.deploy.live_view import LiveView, LiveViewClient
from handrail.deploy.loop import LoopConfig
from handrail.deploy.pose_source import GroundTruthPose
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.deploy.run import run_deploy
from handrail.robot.emulator import VirtualHandProcess

pytest.importorskip("websockets.sync.client")


@pytest.fixture(scope="module")
def hold_policy(tmp_path_factory: pytest.TempPathFactory, profile) -> Path:
    """Action 0 whatever it sees (output weights 0): the relative action map holds the start pose."""
    from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
    from handrail.sim.export import export_policy

    folder = tmp_path_factory.mktemp("hold")
    checkpoint = save_checkpoint(untrained_checkpoint(profile, output_scale=0.0), folder / "c.pt")
    return export_policy(checkpoint, folder / "hold.onnx", parity_samples=20).path


def _deploy_viewed(policy: Path, profile, vhand: VirtualHandProcess, view: LiveView, seconds: float, folder: Path):
    config = LoopConfig(seconds=seconds, startup_timeout_s=3.0, status_interval_s=0)
    source = GroundTruthPose(vhand, profile)
    return run_deploy(policy, profile, vhand.port, source, config=config, log_path=folder / "rollout.mcap", view=view)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_a_client_receives_the_tick_channel_at_the_loop_rate_during_a_deploy(profile, hold_policy, tmp_path):
    port = _free_port()
    with LiveView(port) as view, VirtualHandProcess(reality_seed=2) as vhand:
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
        client = LiveViewClient(view.url)
        client.start()
        outcome = _deploy_viewed(hold_policy, profile, vhand, view, 3.0, tmp_path)
        time.sleep(0.3)
        client.close()
    assert client.error is None, client.error
    assert outcome.result.exit_code == 0, outcome.result.stop_reason
    assert {"/tick", "/event", "/header"} <= client.topics
    log = read_rollout_log(outcome.log_path)
    # Every tick the log got, the client got (the same JSON), at the loop's rate.
    received = {tick["tick"] for tick in client.messages}
    assert len(received) >= 0.9 * log.n_ticks, (len(received), log.n_ticks)
    assert client.rate_hz() == pytest.approx(log.header.control_rate_hz, rel=0.15)
    tick = client.messages[len(client.messages) // 2]
    assert len(tick["position_rad"]) == len(tick["target_rad"]) == 16 and "intervention_counts" in tick
    assert view.dropped == 0


def test_with_no_client_nothing_piles_up(profile, hold_policy, tmp_path):
    with LiveView(_free_port(), queue_size=8) as view, VirtualHandProcess(reality_seed=2) as vhand:
        outcome = _deploy_viewed(hold_policy, profile, vhand, view, 1.5, tmp_path)
        time.sleep(0.2)
        assert view.waiting == 0  # drained: published (and dropped by the server, which has no subscriber)
        assert view.published >= read_rollout_log(outcome.log_path).n_ticks and view.dropped == 0


def test_camera_frames_reach_a_client_as_jpeg_at_most_ten_per_second():
    with LiveView(_free_port()) as view:
        client = LiveViewClient(view.url, topic="/camera")
        client.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "/camera" not in client.topics:
            time.sleep(0.05)
        time.sleep(0.3)  # the subscription reaches the server
        rgb = np.zeros((48, 64, 3), dtype=np.uint8)
        rgb[:, :32] = (200, 30, 30)
        start = time.monotonic()
        for index in range(40):  # 40 frames over 2 s: 20 per second offered
            view.image(rgb, start + index * 0.05, "cam_top")
            time.sleep(0.05)
        time.sleep(0.3)
        client.close()
    assert client.error is None, client.error
    assert 15 <= view.images <= 21 and len(client.payloads) >= 15  # rate-limited to 10 Hz
    assert all(b"\xff\xd8\xff" in payload for payload in client.payloads)  # a JPEG inside each message
