"""Cost of the target filter per control tick for the 16-joint LEAP hand, against a bare ``np.clip``.

    python benchmarks/safety.py --ticks 100000

Each tick times one call with ``time.perf_counter_ns`` (its own ~50-100 ns included in every figure):
the filter on random raw targets (every joint clamped and rate limited every tick, so every tick also
builds ~30 intervention records), on a constant raw target (reached, then nothing to report: the
steady state), and, as the reference measured in the same run, a bare ``np.clip`` of the same 16
values into the soft limits. The measured position follows the last target, as on a hand that tracks.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from handrail.robot.profile import load_profile
from handrail.robot.safety_filter import TargetFilter
from handrail.robot.safety_limits import SafetyLimits


def time_per_tick_us(step: Callable[[np.ndarray], object], actions: np.ndarray) -> np.ndarray:
    """Microseconds of ``step(action)`` for each row of ``actions``."""
    elapsed_ns = np.empty(len(actions))
    clock = time.perf_counter_ns
    for tick, action in enumerate(actions):
        start = clock()
        step(action)
        elapsed_ns[tick] = clock() - start
    return elapsed_ns / 1000.0


def filter_step(filter_: TargetFilter) -> Callable[[np.ndarray], object]:
    measured = {"rad": filter_.last_target_rad}

    def step(action: np.ndarray) -> object:
        result = filter_(action, measured["rad"])
        measured["rad"] = result.target_rad
        return result

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=100_000, help="ticks per measurement (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    profile = load_profile(check_model=False)
    limits = SafetyLimits.from_profile(profile)
    low, high = limits.soft_low_rad, limits.soft_high_rad
    span = high - low
    rng = np.random.default_rng(args.seed)
    random_actions = rng.uniform(low - 0.2 * span, high + 0.2 * span, (args.ticks, limits.n_joints))
    constant_actions = np.repeat((low + 0.3 * span)[None, :], args.ticks, axis=0)

    rows = []
    for name, actions in (("filter, random actions", random_actions), ("filter, constant action", constant_actions)):
        filter_ = TargetFilter(limits, profile.control_period_s)
        filter_.reset(low + 0.5 * span)
        rows.append((name, time_per_tick_us(filter_step(filter_), actions), filter_.counts))
    clip_us = time_per_tick_us(lambda action: np.clip(action, low, high), random_actions)
    rows.append(("bare np.clip (reference)", clip_us, None))

    clip_mean = float(np.mean(clip_us))
    print(f"{limits.n_joints} joints, {args.ticks} ticks each, control period {profile.control_period_s * 1e3:.1f} ms")
    print(f"{'':28s} {'mean [µs]':>10s} {'p99 [µs]':>10s} {'x np.clip':>10s}")
    for name, elapsed_us, _ in rows:
        mean = float(np.mean(elapsed_us))
        print(f"{name:28s} {mean:10.2f} {np.percentile(elapsed_us, 99):10.2f} {mean / clip_mean:10.1f}")
    for name, _, counts in rows:
        if counts is not None:
            per_tick = {kind: round(count / args.ticks, 2) for kind, count in counts.items()}
            print(f"interventions per tick, {name}: {per_tick}")


if __name__ == "__main__":
    main()
