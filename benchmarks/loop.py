"""Host-side timing of the deploy loop on the virtual hand, at 30 Hz and at 100 Hz.

    python benchmarks/loop.py [--seconds 300] [--rates 30 100] [--policy FILE] [--view]

For each rate: a copy of the bundled profile at that control rate, a virtual hand (`handrail emulate`) on a
pty, and a policy for that profile (default: a hold policy -- the training architecture, 256x256 ELU, with
its output layer zeroed, so every tick runs the full MLP and the hand holds its start pose; a policy that
moves would sooner or later drive a finger into the stall detector and end the run early), run through
``run_deploy`` with the ground-truth pose source and the rollout log. Prints per rate: p50/p99/max of the
host-side tick time (read -> write, the bus round trip included), each phase's p99, the schedule jitter
(tick start minus its slot), missed deadlines, the tick time's ratio to the period (the budget), and the p99
and max of the host's own compute per tick (the tick without the bus read and write). ``--view`` runs each
rate twice, without and with the Foxglove live view (a client subscribed to /tick), and prints the ratio of
the tick p99s (the view must stay within 10 %).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from handrail.deploy.loop import LoopConfig
from handrail.deploy.pose_source import GroundTruthPose
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.deploy.run import run_deploy
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile, default_profile_path, load_profile


def profile_at_rate(rate_hz: float, folder: Path) -> Path:
    """The bundled profile with another control rate, written to ``folder``."""
    source = default_profile_path()
    text = source.read_text()
    lines = [
        f"control_rate_hz = {rate_hz:g}" if line.startswith("control_rate_hz") else line for line in text.splitlines()
    ]
    text = "\n".join(lines).replace('mjcf = "', f'mjcf = "{source.parent}/')
    path = folder / f"leap_{rate_hz:g}hz.toml"
    path.write_text(text + "\n")
    return path


def hold_policy(profile: HandProfile, folder: Path) -> Path:
    """A policy file for ``profile`` with the training architecture whose action is always zero (hold)."""
    from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
    from handrail.sim.export import export_policy

    checkpoint = untrained_checkpoint(profile, hidden=(256, 256), output_scale=0.0, normalizer=False)
    path = save_checkpoint(checkpoint, folder / f"hold_{profile.control_rate_hz:g}.pt")
    return export_policy(path, folder / f"hold_{profile.control_rate_hz:g}.onnx", parity_samples=100).path


def measure(rate_hz: float, seconds: float, folder: Path, policy: Path | None, view: bool = False) -> dict:
    profile_path = profile_at_rate(rate_hz, folder)
    profile = load_profile(profile_path)
    policy_path = policy if policy is not None else hold_policy(profile, folder)
    live = client = None
    if view:
        import subprocess

        from handrail.deploy.live_view import LiveView

        live = LiveView(8765)
        # The viewer in a process of its own, as Foxglove is: its work is not the loop's.
        viewer = [sys.executable, "-m", "handrail.deploy.live_view", live.url, "--seconds", str(seconds + 15)]
        client = subprocess.Popen(viewer, stdout=subprocess.PIPE, text=True)
    try:
        with VirtualHandProcess(profile_path, reality_seed=0) as vhand:
            outcome = run_deploy(
                policy_path,
                profile,
                vhand.port,
                GroundTruthPose(vhand, profile),
                config=LoopConfig(seconds=seconds, status_interval_s=0),
                log_path=folder / f"loop_{rate_hz:g}hz{'_view' if view else ''}.mcap",
                status_stream=sys.stderr,
                view=live,
            )
    finally:
        if live is not None:
            live.close()  # the viewer then sees no more ticks and prints its count when its time is up
    result = outcome.result
    stats = result.latency_stats()
    log = read_rollout_log(outcome.log_path)
    stats["phase_p99_ms"] = {
        phase: float(np.nanpercentile(values, 99)) for phase, values in log.latency_ms.items() if phase != "total"
    }
    # The host's own work per tick: everything but the two bus transactions (whose time is the bus's and the
    # servos' -- here the virtual hand's process -- as much as ours).
    compute_ms = sum(values for phase, values in log.latency_ms.items() if phase not in ("total", "read", "write"))
    stats["compute_p99_ms"] = float(np.nanpercentile(compute_ms, 99))
    stats["compute_max_ms"] = float(np.nanmax(compute_ms))
    stats["exit_code"] = result.exit_code
    stats["stop_reason"] = result.stop_reason
    if client is not None and live is not None:
        import json

        out, _ = client.communicate(timeout=60)
        stats["view_rate_hz"] = json.loads(out.strip().splitlines()[-1])["rate_hz"]
        stats["view_dropped"] = live.dropped
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="run time per rate [s] (default 300)")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 100.0], help="control rates [Hz]")
    parser.add_argument("--policy", type=Path, default=None, help="a policy file (its rate must match every rate)")
    parser.add_argument("--view", action="store_true", help="also run each rate with the live view and a client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {rate: measure(rate, args.seconds, Path(folder), args.policy) for rate in args.rates}
        viewed = {}
        if args.view:
            viewed = {rate: measure(rate, args.seconds, Path(folder), args.policy, view=True) for rate in args.rates}
    print(f"deploy loop on the virtual hand, {args.seconds:g} s per rate, {os.cpu_count()} CPUs")
    header = f"{'rate':>6} {'ticks':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'jitter p99':>11} {'missed':>7}"
    print(header + f" {'p99/period':>11} {'compute p99':>12} {'compute max':>12}")
    for rate, stats in results.items():
        print(
            f"{rate:6g} {stats['ticks']:7d} {stats['tick_p50_ms']:8.3f} {stats['tick_p99_ms']:8.3f} "
            f"{stats['tick_max_ms']:8.3f} {stats['jitter_p99_ms']:11.3f} {stats['missed_deadlines']:7d} "
            f"{stats['tick_p99_ms'] * rate / 1000:11.2f} "
            f"{stats['compute_p99_ms']:12.3f} {stats['compute_max_ms']:12.3f}"
        )
    for rate, stats in results.items():
        phases = "  ".join(f"{phase} {value:.3f}" for phase, value in stats["phase_p99_ms"].items())
        print(f"{rate:6g} Hz phase p99 [ms]: {phases}  (ended: {stats['stop_reason']})")
    for rate, stats in viewed.items():
        plain = results[rate]["tick_p99_ms"]
        print(
            f"{rate:6g} Hz with the live view (a client on /tick): tick p50 {stats['tick_p50_ms']:.3f} ms, p99 "
            f"{stats['tick_p99_ms']:.3f} ms = {stats['tick_p99_ms'] / plain:.2f} x without ({plain:.3f} ms); "
            f"the client got {stats['view_rate_hz']:.1f} ticks/s, {stats['view_dropped']} dropped"
        )


if __name__ == "__main__":
    main()
