"""The virtual hand process keeps to itself: it never deletes a file it did not make, a malformed control
request is an error answer (not a crash), a control client may come and go, and it does not outlive a
parent that was killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from handrail.cli import main
from handrail.robot.emulator import VirtualHandProcess


def test_a_control_path_that_is_a_file_is_refused_and_the_file_kept(tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    assert main(["emulate", "--control", str(victim), "--seconds", "1"]) == 2
    assert victim.read_text() == "keep me\n"
    assert "exists and is not a socket" in capsys.readouterr().err


def test_a_control_request_that_is_not_an_object_is_an_error_answer_not_a_crash() -> None:
    with VirtualHandProcess(reality_seed=1) as vhand:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10.0)
        client.connect(str(vhand.control_path))
        answers = []
        for line in (b"[1, 2, 3]\n", b'"state"\n', b"{}\n", b"not json\n"):
            client.sendall(line)
            answers.append(json.loads(client.makefile("rb").readline()))
        client.close()  # a client that goes away once killed the emulator (it closed a buffer, not the socket)
        assert [answer["ok"] for answer in answers] == [False] * 4
        assert "JSON object" in answers[0]["error"]
        assert vhand.process.poll() is None and len(vhand.ground_truth()["torque_enabled"]) == 16


PARENT = """
import sys, time
from handrail.robot.emulator import VirtualHandProcess
vhand = VirtualHandProcess(reality_seed=1)
print(vhand.process.pid, vhand.control_path, flush=True)
time.sleep(60)
"""


def test_a_virtual_hand_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    """After kill -9 of its parent the emulator used to run on at 20-25 % CPU, its temp folder left behind."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid_text, control = parent.stdout.readline().split()
    emulator_pid, control_dir = int(pid_text), Path(control).parent
    assert control_dir.is_dir()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _alive(emulator_pid):
        time.sleep(0.1)
    assert not _alive(emulator_pid), "the virtual hand outlived its parent"
    assert not control_dir.exists()


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # not our child: raises; a zombie of ours would be reaped
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())
