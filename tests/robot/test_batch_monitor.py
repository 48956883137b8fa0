"""BatchStateMonitor (the safety monitor inside training) equals StateMonitor hand by hand, tick by tick.

Random reading sequences are built to sit near every threshold (speed, current, position, stall current,
stall speed, tracking error, stall time), so that counters start, run and reset; each hand's verdict per kind
must be exactly what a StateMonitor fed that hand's readings says.
"""

from __future__ import annotations

import numpy as np
import pytest

from handrail.robot.batch_monitor import BATCH_FAULT_KINDS, BatchStateMonitor
from handrail.robot.bus import HandState
from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.safety_monitor import OVERCURRENT, OVERSPEED, POSITION_LIMIT, STALL, MonitorConfig, StateMonitor

NAMES = ("index_mcp", "index_pip", "thumb_ip", "thumb_mcp")
N = len(NAMES)
HANDS = 24
TICKS = 120
PERIOD_S = 0.05


def _limits() -> SafetyLimits:
    return SafetyLimits(
        soft_low_rad=np.full(N, -1.0),
        soft_high_rad=np.full(N, 1.5),
        max_speed_rad_s=np.array([3.0, 2.0, 4.0, 3.0]),
        max_accel_rad_s2=np.full(N, 40.0),
        max_tracking_error_rad=np.array([0.3, 0.4, 0.3, 0.5]),
        current_limit_ma=np.array([350.0, 300.0, 200.0, 350.0]),
        temperature_limit_c=np.full(N, 70.0),
    )


def _readings(rng: np.random.Generator, limits: SafetyLimits) -> dict[str, np.ndarray]:
    """(TICKS, HANDS, N) readings that hover around the monitor's thresholds, with runs that persist."""
    shape = (TICKS, HANDS, N)
    # Piecewise-constant regimes (so that "N consecutive readings" and "for 1 s" happen), plus jitter.
    regime = np.repeat(rng.integers(0, 4, (TICKS // 8, HANDS, N)), 8, axis=0)
    speed_scale = np.choose(regime, [0.0, 0.01, 1.2, 1.3])  # still / creeping / near / above the speed limit
    velocity = speed_scale * limits.max_speed_rad_s * rng.choice([-1, 1], shape) + rng.normal(0, 0.02, shape)
    current_scale = np.choose(regime, [0.95, 0.5, 1.1, 1.2])
    current = current_scale * limits.current_limit_ma * rng.uniform(0.97, 1.03, shape)
    # Mostly inside the soft limits; some runs around the position fault's thresholds (limit ± tolerance).
    place = np.repeat(rng.integers(0, 4, (TICKS // 8, HANDS, N)), 8, axis=0)
    tolerance = MonitorConfig().position_tolerance_rad
    edge = np.choose(place, [0.0, 0.0, limits.soft_low_rad - tolerance, limits.soft_high_rad + tolerance])
    position = np.where(place < 2, rng.uniform(-0.5, 0.5, shape), edge + rng.uniform(-0.03, 0.03, shape))
    error = np.choose(regime, [0.9, 0.5, 0.85, 0.1]) * limits.max_tracking_error_rad * rng.uniform(0.9, 1.1, shape)
    target = position + error * rng.choice([-1, 1], shape)
    return {"position": position, "velocity": velocity, "current": current, "target": target}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_monitor_equals_state_monitor_on_random_readings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    limits = _limits()
    readings = _readings(rng, limits)
    batch = BatchStateMonitor(limits, HANDS)
    singles = [StateMonitor(limits, NAMES) for _ in range(HANDS)]
    seen = dict.fromkeys(BATCH_FAULT_KINDS, 0)
    start_s = rng.uniform(0, 5, HANDS)  # hands in different episodes: their own clocks
    for tick in range(TICKS):
        if tick == TICKS // 2:  # a reset mid-way for half of the hands, as at an episode's end
            reset = np.arange(0, HANDS, 2)
            batch.reset(reset)
            for hand in reset.tolist():
                singles[hand].reset()
        time_s = start_s + tick * PERIOD_S
        verdict = batch.check(
            readings["position"][tick],
            readings["velocity"][tick],
            readings["current"][tick],
            readings["target"][tick],
            time_s,
        )
        for hand, single in enumerate(singles):
            state = HandState(
                timestamp_s=float(time_s[hand]),
                position_rad=readings["position"][tick, hand],
                velocity_rad_s=readings["velocity"][tick, hand],
                current_ma=readings["current"][tick, hand],
                temperature_c=np.full(N, 30.0),
                hardware_error=np.zeros(N, dtype=np.int64),
            )
            kinds = {fault.kind for fault in single.check(state, readings["target"][tick, hand])}
            for kind in BATCH_FAULT_KINDS:
                assert bool(verdict[kind][hand]) == (kind in kinds), (tick, hand, kind)
                seen[kind] += kind in kinds
    # The readings must have produced every kind (else the comparison proves little).
    assert all(seen[kind] > 0 for kind in (OVERSPEED, OVERCURRENT, POSITION_LIMIT, STALL)), seen


def test_a_stall_needs_its_full_time_in_the_batch_monitor_too() -> None:
    limits = _limits()
    monitor = BatchStateMonitor(limits, 1)
    pushing = {
        "position": np.zeros((1, N)),
        "velocity": np.zeros((1, N)),
        "current": limits.current_limit_ma[None, :].copy(),
        "target": limits.max_tracking_error_rad[None, :].copy(),
    }
    for time_s in (0.0, 0.5, 0.95):
        assert not monitor.check(*pushing.values(), np.array([time_s]))[STALL][0]
    assert monitor.check(*pushing.values(), np.array([1.0]))[STALL][0]


def test_pushing_is_a_stall_but_for_the_speed_and_clears_on_reset() -> None:
    # The training penalty's signal: a joint at the stall current whose target is the stall error away, moving
    # or not; a joint below the current or near its target is not pushing.
    limits = _limits()
    monitor = BatchStateMonitor(limits, 2)
    stall_error = monitor.config.stall_error_fraction * limits.max_tracking_error_rad
    stall_current = monitor.config.stall_current_fraction * limits.current_limit_ma
    current = np.tile(stall_current, (2, 1))
    current[0, 1] -= 1.0  # hand 0, joint 1: just under the stall current
    target = np.tile(stall_error, (2, 1))
    target[0, 2] -= 1e-3  # hand 0, joint 2: just inside the stall error
    velocity = np.zeros((2, N))
    velocity[1] = 2.0  # hand 1 moves fast: pushing all the same, but no stall timer
    monitor.check(np.zeros((2, N)), velocity, current, target, np.zeros(2))
    assert monitor.pushing.tolist() == [[True, False, False, True], [True, True, True, True]]
    assert np.isnan(monitor._stalled_since_s[1]).all() and not np.isnan(monitor._stalled_since_s[0, 0])
    monitor.reset(np.array([1]))
    assert monitor.pushing.tolist() == [[True, False, False, True], [False] * N]
