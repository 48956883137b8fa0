"""The virtual hand as a process: a pseudo-terminal speaking Dynamixel Protocol 2.0, in real time.

``handrail emulate`` runs :func:`run_emulator`: it opens a pty, prints its device path, and from then
on answers instruction packets exactly as the hand's 16 servos would (through
:class:`~handrail.robot.virtual_hand.VirtualHand`), while MuJoCo advances in step with the wall clock.
Replies leave no earlier than the real wire would deliver them at the bus baud rate (request and reply
byte times plus the servo's Return Delay Time), so timing measured against the virtual hand is honest.

A control socket (a Unix-domain socket file — no network port) takes JSON lines at run time: inject
or clear faults, read ground truth (joint angles, cube pose) for tests and the demo, quit. The same
faults can be given at start with ``--fault``. :class:`VirtualHandProcess` starts and drives the
process from Python (tests, benchmarks, the demo).
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handrail.robot.dxl_protocol import InstructionPacket
from handrail.robot.errors import RobotError
from handrail.robot.profile import HandProfile
from handrail.robot.reality import Reality, draw_reality
from handrail.robot.virtual_bus import Reply
from handrail.robot.virtual_hand import VirtualHand

BITS_PER_BYTE_ON_WIRE = 10  # 8N1: start + 8 data + stop
MAX_CATCH_UP_S = 0.05  # beyond this much lag the emulator drops time instead of racing
# How often a virtual hand started by another process checks that its parent is still there [s].
PARENT_CHECK_S = 0.5
FAULT_KINDS = ("drop", "lose", "corrupt", "delay", "disconnect", "stuck", "overload", "overheat", "heat")


class EmulatorError(RobotError):
    """The virtual hand process could not start, or a control command was refused."""


@dataclass
class FaultInjector:
    """Communication faults applied to replies (the bus's ReplyFilter) and the cable state."""

    rng: np.random.Generator
    drop_fraction: float = 0.0
    corrupt_fraction: float = 0.0
    delay_s: float = 0.0
    disconnected: bool = False
    lose_next: int = 0  # status packets still to lose, one after another
    counts: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "corrupted": 0, "delayed": 0})

    def __call__(self, packet: InstructionPacket, replies: list[Reply]) -> list[Reply]:
        kept: list[Reply] = []
        for reply in replies:
            if self.lose_next > 0 or self.disconnected or self.rng.random() < self.drop_fraction:
                self.lose_next = max(0, self.lose_next - 1)
                self.counts["dropped"] += 1
                continue
            data = reply.data
            if self.rng.random() < self.corrupt_fraction:
                # Flip one bit past the header: the host sees a CRC error (or a broken length).
                position = int(self.rng.integers(7, len(data)))
                data = (
                    data[:position]
                    + bytes([data[position] ^ (1 << int(self.rng.integers(0, 8)))])
                    + data[position + 1 :]
                )
                self.counts["corrupted"] += 1
            delay = reply.delay_s
            if self.delay_s > 0:
                delay += self.delay_s
                self.counts["delayed"] += 1
            kept.append(Reply(reply.motor_id, data, delay))
        return kept

    def clear(self) -> None:
        self.drop_fraction = self.corrupt_fraction = self.delay_s = 0.0
        self.disconnected = False
        self.lose_next = 0


def apply_fault(hand: VirtualHand, faults: FaultInjector, kind: str, value: Any = None) -> str:
    """Apply one fault; returns a one-line description. EmulatorError names valid kinds and values."""
    if kind == "drop":
        faults.drop_fraction = _fraction(kind, value)
        return f"dropping {faults.drop_fraction:.0%} of status packets"
    if kind == "lose":
        count = int(value if value is not None else 1)
        if count < 1:
            raise EmulatorError(f"fault lose={value}: give how many status packets to lose in a row (at least 1)")
        faults.lose_next = count
        return f"losing the next {count} status packet(s)"
    if kind == "corrupt":
        faults.corrupt_fraction = _fraction(kind, value)
        return f"corrupting {faults.corrupt_fraction:.0%} of status packets"
    if kind == "delay":
        faults.delay_s = float(value if value is not None else 100.0) / 1000.0
        return f"delaying every status packet by {faults.delay_s * 1000:g} ms"
    if kind == "disconnect":
        faults.disconnected = True
        return "cable disconnected: nothing reaches the servos, nothing comes back"
    if kind in ("stuck", "overload", "overheat", "heat"):
        index = _joint_index(hand.profile, value)
        name = hand.profile.joints[index].name
        faults_by_kind = {"stuck": hand.stick_joint, "overload": hand.overload, "overheat": hand.overheat}
        faults_by_kind["heat"] = hand.heat
        faults_by_kind[kind](index)
        return f"{kind} on motor {hand.profile.joints[index].motor_id} ({name})"
    raise EmulatorError(f"unknown fault {kind!r}; valid: {', '.join(FAULT_KINDS)}")


def _fraction(kind: str, value: Any) -> float:
    fraction = float(value if value is not None else 0.5)
    if not 0.0 <= fraction <= 1.0:
        raise EmulatorError(f"fault {kind}={value}: give a fraction between 0 and 1")
    return fraction


def _joint_index(profile: HandProfile, value: Any) -> int:
    if value is None:
        raise EmulatorError("this fault needs a joint: give its name (e.g. index_pip) or motor id")
    names = profile.joint_names
    if isinstance(value, str) and value in names:
        return names.index(value)
    with contextlib.suppress(ValueError, TypeError):
        motor_id = int(value)
        if motor_id in profile.motor_ids:
            return profile.motor_ids.index(motor_id)
    raise EmulatorError(f"no joint or motor id {value!r}; valid joints: {', '.join(names)}")


def parse_fault_flag(flag: str) -> tuple[str, str | None]:
    """``drop=0.5`` -> ("drop", "0.5"); ``disconnect`` -> ("disconnect", None)."""
    kind, _, value = flag.partition("=")
    if kind not in FAULT_KINDS:
        raise EmulatorError(f"--fault {flag}: unknown fault {kind!r}; valid: {', '.join(FAULT_KINDS)}")
    return kind, (value or None)


class _ControlServer:
    """JSON lines over a Unix-domain socket file (never a network port)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise EmulatorError(
                    f"control socket path {path} exists and is not a socket — give a new path (it is never replaced)"
                )
            path.unlink()  # a socket left by an emulator that died
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, 0o600)
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.clients: dict[socket.socket, bytearray] = {}

    def sockets(self) -> list[socket.socket]:
        return [self.listener, *self.clients]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Emulator:
    """The select loop: pty bytes in, replies out at wire time, physics in real time."""

    def __init__(self, hand: VirtualHand, faults: FaultInjector, control_path: Path):
        self.hand = hand
        self.faults = faults
        hand.bus.reply_filter = faults
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        os.set_blocking(self.master_fd, False)
        self.port = os.ttyname(self.slave_fd)
        self.control = _ControlServer(control_path)
        self.byte_time_s = BITS_PER_BYTE_ON_WIRE / hand.profile.bus.baud
        self._outbox: list[tuple[float, int, bytes]] = []  # heap of (due time, sequence, bytes)
        self._sequence = 0
        self.running = True
        # Set by run_emulator for a hand another process started: it ends when that process is gone.
        self.parent_pid: int | None = None
        self.lag_events = 0
        self.packets = 0

    def _schedule(self, received_s: float, packet: InstructionPacket, request_bytes: int) -> None:
        replies = self.hand.bus.handle(packet)
        start = received_s + request_bytes * self.byte_time_s
        for reply in replies:
            due = start + reply.delay_s + len(reply.data) * self.byte_time_s
            start = due  # replies share one wire: each starts after the previous one
            heapq.heappush(self._outbox, (due, self._sequence, reply.data))
            self._sequence += 1

    def _read_pty(self) -> None:
        try:
            data = os.read(self.master_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            return
        if self.faults.disconnected or not data:
            return  # the cable is pulled: bytes go nowhere and the servos hear nothing
        received_s = time.monotonic()
        for item in self.hand.bus.parser.feed(data):
            if isinstance(item, InstructionPacket):
                self.packets += 1
                self.hand.note_traffic()
                self._schedule(received_s, item, len(data))

    def _flush_outbox(self, now_s: float) -> None:
        while self._outbox and self._outbox[0][0] <= now_s:
            _, _, data = heapq.heappop(self._outbox)
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.master_fd, data)

    def _serve_control(self, ready: list[Any]) -> None:
        server = self.control
        if server.listener in ready:
            with contextlib.suppress(BlockingIOError):
                client, _ = server.listener.accept()
                client.setblocking(False)
                server.clients[client] = bytearray()
        for client in [c for c in ready if c in server.clients]:
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                chunk = b""
            if not chunk:  # the client went away: forget it (this once crashed the emulator)
                del server.clients[client]
                client.close()
                continue
            buffer = server.clients[client]
            buffer += chunk
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                answer = self._answer(line)
                with contextlib.suppress(OSError):
                    client.sendall(json.dumps(answer).encode() + b"\n")

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                return {"ok": False, "error": f"a request is a JSON object with an op, got {type(request).__name__}"}
            op = request.get("op")
            if op == "fault":
                return {
                    "ok": True,
                    "applied": apply_fault(self.hand, self.faults, request["kind"], request.get("value")),
                }
            if op == "clear":
                self.faults.clear()
                self.hand.clear_faults()
                return {"ok": True}
            if op == "state":
                return {"ok": True, **self.ground_truth()}
            if op == "quit":
                self.running = False
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r}; valid: fault, clear, state, quit"}
        except (EmulatorError, KeyError, ValueError, TypeError, AttributeError) as error:
            return {"ok": False, "error": str(error)}

    def ground_truth(self) -> dict[str, Any]:
        """What only the simulator knows: true joint angles, the cube pose, servo internals."""
        hand = self.hand
        position_m, quat_wxyz = hand.object_pose()
        return {
            "time_s": hand.time_s,
            "joint_positions_rad": hand.joint_positions_rad().tolist(),
            "joint_velocities_rad_s": hand.joint_velocities_rad_s().tolist(),
            "object_position_m": position_m.tolist(),
            "object_quat_wxyz": quat_wxyz.tolist(),
            "temperature_c": hand.bank.temperature_c.tolist(),
            "hardware_error": hand.bank.hardware_error.tolist(),
            "watchdog_tripped": hand.watchdog_tripped.tolist(),
            "torque_enabled": hand.commands.torque_enabled.tolist(),
            # What each servo's current is capped at now [mA]: min(Goal Current, Current Limit).
            "goal_current_ma": (
                np.minimum(np.abs(hand.commands.goal_current_raw), hand.commands.current_limit_raw)
                * hand.bank.facts.current_ma_per_lsb
            ).tolist(),
            "packets": self.packets,
            "lag_events": self.lag_events,
            "fault_counts": dict(self.faults.counts),
        }

    def run(self, seconds: float | None = None) -> None:
        """Serve until quit, a signal, or ``seconds`` of wall time."""
        hand = self.hand
        wall_start = time.monotonic()
        sim_start = hand.time_s
        deadline = wall_start + seconds if seconds is not None else float("inf")
        next_parent_check = wall_start
        while self.running and time.monotonic() < deadline:
            now = time.monotonic()
            if self.parent_pid is not None and now >= next_parent_check:
                next_parent_check = now + PARENT_CHECK_S
                if os.getppid() != self.parent_pid:  # the process that started us is gone (kill -9)
                    break
            sim_target = sim_start + (now - wall_start)
            if sim_target - hand.time_s > MAX_CATCH_UP_S:
                # Too far behind (the machine was busy): give up the lost time rather than race.
                wall_start += sim_target - hand.time_s - hand.timestep_s
                sim_target = sim_start + (now - wall_start)
                self.lag_events += 1
            while hand.time_s + hand.timestep_s <= sim_target:
                hand.step()
                # Physics takes most of a core here: a catch-up of up to MAX_CATCH_UP_S must not keep the
                # host waiting past its status timeout, so the wire is served between steps too.
                self._read_pty()
                self._flush_outbox(time.monotonic())
            now = time.monotonic()
            self._flush_outbox(now)
            next_step_s = wall_start + (hand.time_s + hand.timestep_s - sim_start)
            next_event_s = min(next_step_s, self._outbox[0][0] if self._outbox else next_step_s, deadline)
            timeout = max(0.0, next_event_s - time.monotonic())
            ready, _, _ = select.select([self.master_fd, *self.control.sockets()], [], [], timeout)
            if self.master_fd in ready:
                self._read_pty()
                self._flush_outbox(time.monotonic())
            if any(s in ready for s in self.control.sockets()):
                self._serve_control(ready)

    def close(self) -> None:
        self.control.close()
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_emulator(
    profile: HandProfile,
    reality_seed: int,
    *,
    reality_out: Path | None = None,
    faults: Sequence[str] = (),
    control_path: Path | None = None,
    seconds: float | None = None,
    json_ready: bool = False,
) -> int:
    """Run the virtual hand until SIGINT/SIGTERM, a quit command or ``seconds``; returns an exit code."""
    reality: Reality = draw_reality(reality_seed, profile.joint_names)
    if reality_out is not None:
        reality.write(reality_out)
    hand = VirtualHand(profile, reality, noise_seed=reality_seed)
    injector = FaultInjector(rng=np.random.default_rng(reality_seed + 1))
    for flag in faults:
        kind, value = parse_fault_flag(flag)
        apply_fault(hand, injector, kind, value)
    control_dir = None
    if control_path is None:
        control_dir = tempfile.mkdtemp(prefix="handrail-vhand-")
        control_path = Path(control_dir) / "control.sock"
    emulator = Emulator(hand, injector, control_path)
    if json_ready:  # started by VirtualHandProcess: live no longer than it
        emulator.parent_pid = os.getppid()

    def stop(signum: int, frame: object) -> None:
        emulator.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Everything built so far lives as long as the process: freeze it out of the garbage collector, so a
    # full collection later cannot stall the real-time loop for tens of milliseconds (seen: 30 ms).
    gc.collect()
    gc.freeze()
    ready = {
        "event": "ready",
        "port": emulator.port,
        "control": str(control_path),
        "pid": os.getpid(),
        "profile": profile.name,
        "reality_seed": reality_seed,
    }
    if json_ready:
        print(json.dumps(ready), flush=True)
    else:
        print(
            f"virtual hand {profile.name!r} (reality seed {reality_seed}) on {emulator.port}\n"
            f"  connect with: handrail doctor --port {emulator.port}\n"
            f"  control socket: {control_path}  (JSON lines: fault, clear, state, quit)\n"
            "  Ctrl-C to stop",
            flush=True,
        )
    try:
        emulator.run(seconds)
    finally:
        emulator.close()
        if control_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(control_dir)
    return 0


def _start_failure(exit_code: int | None, stderr: str, startup_timeout_s: float) -> str:
    """Why ``handrail emulate`` gave no ready line: its own error when it exited, else a timeout."""
    if exit_code is None:
        return f"the virtual hand did not start within {startup_timeout_s:g} s:\n{stderr[-2000:]}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    # The CLI prints "handrail: error: ..." for the errors it knows; otherwise the traceback's last line says it.
    known = [line.removeprefix("handrail: error: ") for line in lines if line.startswith("handrail: error: ")]
    cause = known[-1] if known else (lines[-1] if lines else "no message")
    detail = "" if known or len(lines) <= 1 else "\n" + "\n".join(lines[-20:])
    return f"the virtual hand failed to start (exit code {exit_code}): {cause}{detail}"


class VirtualHandProcess:
    """Start ``handrail emulate`` as a child process and talk to its control socket.

    >>> with VirtualHandProcess(reality_seed=3) as vhand:
    ...     bus = DynamixelBus(profile, port=vhand.port)
    """

    def __init__(
        self,
        profile_path: str | Path | None = None,
        *,
        reality_seed: int = 0,
        reality_out: Path | None = None,
        faults: Sequence[str] = (),
        startup_timeout_s: float = 60.0,
    ):
        # -P: do not put the working directory first on sys.path (it may hold a source checkout).
        command = [sys.executable, "-P", "-m", "handrail", "emulate", "--json", "--reality-seed", str(reality_seed)]
        if profile_path is not None:
            command += ["--profile", str(profile_path)]
        if reality_out is not None:
            command += ["--reality-out", str(reality_out)]
        for flag in faults:
            command += ["--fault", flag]
        # Its stderr goes to a file, not a pipe nobody reads: 64 KB of warnings would block it mid-run.
        self._stderr = tempfile.TemporaryFile(mode="w+", prefix="handrail-vhand-stderr-")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env={**os.environ}
        )
        assert self.process.stdout is not None
        ready_lines, _, _ = select.select([self.process.stdout], [], [], startup_timeout_s)
        line = self.process.stdout.readline() if ready_lines else ""
        if not line:
            if ready_lines:  # end of its output: the process is exiting on its own; let it finish
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
            exit_code = self.process.poll()
            if exit_code is None:
                self.process.kill()
            self.process.communicate(timeout=10)
            raise EmulatorError(_start_failure(exit_code, self.stderr_text(), startup_timeout_s))
        ready = json.loads(line)
        self.port: str = ready["port"]
        self.control_path = Path(ready["control"])
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._request_lock = threading.Lock()

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one control command and return its answer; EmulatorError if refused. Thread-safe."""
        with self._request_lock:
            return self._request(op, **fields)

    def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._socket.settimeout(10.0)
            self._socket.connect(str(self.control_path))
        self._socket.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        while b"\n" not in self._buffer:
            chunk = self._socket.recv(65536)
            if not chunk:
                raise EmulatorError("the virtual hand closed its control socket")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise EmulatorError(f"virtual hand refused {op}: {answer.get('error')}")
        return answer

    def inject(self, kind: str, value: Any = None) -> str:
        """Inject a fault at run time (see FAULT_KINDS); returns what was applied."""
        return self.request("fault", kind=kind, value=value)["applied"]

    def clear_faults(self) -> None:
        self.request("clear")

    def ground_truth(self) -> dict[str, Any]:
        return self.request("state")

    def close(self) -> None:
        """Stop the process (quit, then SIGTERM, then SIGKILL)."""
        with contextlib.suppress(Exception):
            if self.process.poll() is None:
                self.request("quit")
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def stderr_text(self) -> str:
        """What the virtual hand wrote to its stderr so far."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> VirtualHandProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
