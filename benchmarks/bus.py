"""Full-state bus cycles per second on the virtual hand, against the wire's byte-time limit.

    python benchmarks/bus.py --seconds 5

One cycle = one (Fast) Sync Read of position, velocity, current, temperature and hardware error of all
16 motors (through indirect addressing) + one Sync Write of all goal positions, through our driver and
ROBOTIS' dynamixel-sdk, over a pseudo-terminal to the virtual hand, which releases each reply no
earlier than the real 4 Mbps wire would. The reference, computed for the same packets: the byte-time
limit (every byte of request and reply at 10 bits per byte at the bus baud rate, nothing else).
For scale, the LEAP Hand's own Python API advises reading position+velocity+current at <= 30 Hz.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from handrail.robot.bus import DynamixelBus
from handrail.robot.dxl_protocol import (
    FastReadBlock,
    Instruction,
    encode_fast_read_status,
    encode_instruction,
    encode_status,
)
from handrail.robot.emulator import BITS_PER_BYTE_ON_WIRE, VirtualHandProcess
from handrail.robot.profile import load_profile


def cycle_bytes(bus: DynamixelBus, fast: bool) -> int:
    """Bytes on the wire for one cycle: sync read request + its replies + sync write."""
    n, block = len(bus.ids), bus.state_block_bytes
    data = bus.table.register("Indirect Data 1")
    read_params = data.address.to_bytes(2, "little") + block.to_bytes(2, "little") + bytes(bus.ids)
    instruction = Instruction.FAST_SYNC_READ if fast else Instruction.SYNC_READ
    request = encode_instruction(0xFE, instruction, read_params)
    if fast:
        replies = len(encode_fast_read_status([FastReadBlock(i, 0, bytes(block)) for i in bus.ids]))
    else:
        replies = n * len(encode_status(0, 0, bytes(block)))
    goal = bus.table.register("Goal Position")
    write_params = goal.address.to_bytes(2, "little") + goal.size.to_bytes(2, "little")
    write_params += b"".join(bytes([i]) + bytes(goal.size) for i in bus.ids)
    write = encode_instruction(0xFE, Instruction.SYNC_WRITE, write_params)
    return len(request) + replies + len(write)


def measure(fast: bool, seconds: float) -> dict[str, float]:
    profile = load_profile()
    profile = profile.model_copy(update={"bus": profile.bus.model_copy(update={"fast_sync_read": fast})})
    with VirtualHandProcess(reality_seed=0) as vhand:
        bus = DynamixelBus(profile, port=vhand.port)
        bus.connect()
        bus.configure()
        hold = bus.read_state().position_rad
        for _ in range(50):  # warm-up
            bus.read_state()
            bus.write_targets(hold)
        durations = []
        cycles = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            bus.read_state()
            bus.write_targets(hold)
            durations.append(time.perf_counter() - t0)
            cycles += 1
        elapsed = time.perf_counter() - start
        lag = vhand.ground_truth()["lag_events"]
        bus.close()
    wire_bytes = cycle_bytes(bus, fast)
    limit_hz = profile.bus.baud / (BITS_PER_BYTE_ON_WIRE * wire_bytes)
    achieved_hz = cycles / elapsed
    return {
        "achieved_hz": achieved_hz,
        "limit_hz": limit_hz,
        "ratio": achieved_hz / limit_hz,
        "bytes": wire_bytes,
        "p50_ms": float(np.percentile(durations, 50) * 1e3),
        "p99_ms": float(np.percentile(durations, 99) * 1e3),
        "emulator_lag_events": lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per mode")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    print(f"bus: 16 motors at 4 Mbps on the virtual hand (host: {os.cpu_count()} cores), {args.seconds:g} s per mode")
    for fast in (True, False):
        result = measure(fast, args.seconds)
        name = "fast sync read" if fast else "sync read     "
        print(
            f"{name}: {result['achieved_hz']:7.0f} cycles/s   byte-time limit {result['limit_hz']:6.0f} cycles/s "
            f"({result['bytes']:.0f} bytes/cycle)   ratio {result['ratio']:.2f}   "
            f"cycle p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms   "
            f"emulator lag events {result['emulator_lag_events']}"
        )


if __name__ == "__main__":
    main()
