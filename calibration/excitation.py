"""Safe excitation trajectories for dynamics identification, run through the safety layer and logged.

:func:`excitation_targets` makes, for every joint, a chirp (``chirp_start_hz`` to ``chirp_end_hz``) plus a
train of steps around the profile's home pose — chirps show gain, damping and latency, steps the force
limit and friction. Amplitudes keep the peak speed below the joint's limit and the targets inside its soft
limits. The joints of one group (:func:`~handrail.calibration.joint_groups.joint_groups`: all abductions, all
MCPs, ..., the thumb) share a phase and step pattern (drawn from ``seed``), so neighbouring fingers move
together instead of into each other; the groups differ, so their dynamics can be told apart. The centre is
the home pose moved by ``center_offsets_rad`` (for the LEAP hand: the thumb swung away from the index finger,
which it would otherwise brush; ``max_targets_rad`` caps it there). :func:`record_excitation` plays the
targets on a started :class:`~handrail.robot.safe_robot.Robot` at the control rate (every target still passes the safety
filter) and writes a rollout log, the same file format the deploy loop writes, so ``compare`` and the
identification read both alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from handrail.calibration.joint_groups import joint_groups
from handrail.deploy.rollout_log import LogHeader, RolloutLogWriter, TickRecord
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot


@dataclass(frozen=True)
class ExcitationConfig:
    """Shape of the excitation (see the module docstring)."""

    duration_s: float = 8.0
    ramp_s: float = 1.0  # from wherever the hand is to the home pose, before the excitation
    chirp_amplitude_rad: float = 0.25
    chirp_start_hz: float = 0.3
    chirp_end_hz: float = 2.0
    step_amplitude_rad: float = 0.15
    step_period_s: float = 0.8
    max_speed_fraction: float = 0.9  # of each joint's (scaled) speed limit
    seed: int = 0
    center_offsets_rad: Mapping[str, float] = field(default_factory=lambda: dict(LEAP_CENTER_OFFSETS_RAD))
    max_targets_rad: Mapping[str, float] = field(default_factory=lambda: dict(LEAP_MAX_TARGETS_RAD))


# The LEAP thumb lies beside the index finger at home: its excitation swings it away from the finger (centre)
# and never back towards it (cap), so that no contact the replay might place differently is in the data.
LEAP_CENTER_OFFSETS_RAD = {"thumb_axl": -0.25}
LEAP_MAX_TARGETS_RAD = {"thumb_axl": -0.1}


def with_patient_bus(profile: HandProfile, timeout_ms: float) -> HandProfile:
    """``profile`` with a status-packet timeout of at least ``timeout_ms``, for runs that are not time-critical.

    A calibration run is slow on purpose; a status packet late by a busy host is not worth aborting it.
    """
    if profile.bus.timeout_ms >= timeout_ms:
        return profile
    return profile.model_copy(update={"bus": profile.bus.model_copy(update={"timeout_ms": timeout_ms})})


def excitation_targets(
    profile: HandProfile, config: ExcitationConfig, max_speed_rad_s: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """(T, n) joint targets [rad] at the profile's control rate, ``config.duration_s`` long, around home."""
    period_s = profile.control_period_s
    time_s = np.arange(round(config.duration_s / period_s)) * period_s
    rng = np.random.default_rng(config.seed)
    names = profile.joint_names
    groups = list(joint_groups(profile, "type").values())
    group_of = np.array([next(i for i, joints in enumerate(groups) if name in joints) for name in names])
    center = np.array([joint.home_rad + config.center_offsets_rad.get(joint.name, 0.0) for joint in profile.joints])
    speed_limit = (
        max_speed_rad_s if max_speed_rad_s is not None else np.array([j.max_speed_rad_s for j in profile.joints])
    )

    # Linear chirp: phase = 2 pi (f0 t + (f1 - f0) t^2 / (2 T)), each group with its own start phase.
    sweep_rate = (config.chirp_end_hz - config.chirp_start_hz) / config.duration_s
    phase = 2 * np.pi * (config.chirp_start_hz * time_s + 0.5 * sweep_rate * time_s**2)
    chirp_amplitude = np.minimum(
        config.chirp_amplitude_rad,
        config.max_speed_fraction * speed_limit / (2 * np.pi * config.chirp_end_hz),
    )
    chirp = chirp_amplitude * np.sin(phase[:, None] + rng.uniform(0, 2 * np.pi, len(groups))[group_of])
    # Steps: a random sign per group and period, held for the period.
    n_periods = int(np.ceil(config.duration_s / config.step_period_s)) + 1
    step_signs = rng.choice([-1.0, 0.0, 1.0], size=(n_periods, len(groups)))[:, group_of]
    offsets_s = rng.uniform(0, config.step_period_s, len(groups))[group_of]
    period_index = ((time_s[:, None] + offsets_s) // config.step_period_s).astype(int)
    steps = config.step_amplitude_rad * np.take_along_axis(step_signs, period_index, axis=0)

    low = np.array([joint.soft_limits_rad[0] for joint in profile.joints]) + 0.05
    high = np.array([joint.soft_limits_rad[1] for joint in profile.joints]) - 0.05
    high = np.minimum(high, [config.max_targets_rad.get(name, np.inf) for name in names])
    return np.clip(center + chirp + steps, low, high)


def record_excitation(
    robot: Robot, targets_rad: NDArray[np.float64], log_path: Path, *, ramp_s: float = 1.0, extra: dict | None = None
) -> Path:
    """Ramp to the first target, play ``targets_rad`` (T, n) at the control rate, log every tick; returns the log.

    ``robot`` must be started. Raises SafetyFault if the safety layer stopped the hand (the log keeps the
    ticks up to there and the stop).
    """
    period_s = robot.control_period_s
    state = robot.read()
    n_ramp = max(1, round(ramp_s / period_s))
    blend = np.linspace(0.0, 1.0, n_ramp)[:, None]
    ramp = (1 - blend) * state.position_rad + blend * targets_rad[0]
    plan = np.concatenate([ramp, targets_rad])
    with RolloutLogWriter(log_path) as log:
        header = LogHeader.for_run(
            robot.profile, limits=robot.limits, extra={"kind": "excitation", "ramp_ticks": n_ramp, **(extra or {})}
        )
        log.write_header(header)
        for tick, target in zip(control_ticks(period_s), plan, strict=False):
            tick_start_s = time.monotonic()
            state = robot.read()
            report = robot.command(target, state)
            log.write_tick(
                TickRecord(
                    tick=tick,
                    time_s=tick_start_s,
                    position_rad=state.position_rad,
                    velocity_rad_s=state.velocity_rad_s,
                    current_ma=state.current_ma,
                    temperature_c=state.temperature_c,
                    target_rad=report.target_rad,
                    interventions=report.interventions,
                )
            )
    return Path(log_path)


def control_ticks(period_s: float) -> Iterator[int]:
    """Tick indices at the control rate: each ``next`` sleeps to the next tick (never bursts to catch up)."""
    next_s = time.monotonic()
    tick = 0
    while True:
        yield tick
        tick += 1
        next_s += period_s
        delay_s = next_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        else:
            next_s = time.monotonic()
