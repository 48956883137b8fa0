"""``check_hand``: a conformance run for a hand behind the safety layer (Gymnasium's check_env, for hands).

Starts a :class:`~handrail.robot.safe_robot.Robot`, moves every joint through a small slow sine around
where it is (inside its soft limits), and checks what a user needs before trusting the hand with a
policy: every motor answers, every joint follows its target, measured speeds stay under the limit
(plus the monitor's tolerance), temperatures are sane, and no safety fault fires. ``handrail check``
is its CLI; ``--speed-scale`` tightens the speed limit for the run (it can never loosen it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot, SafetyFault
from handrail.robot.safety_monitor import MonitorConfig

AMPLITUDE_RAD = 0.15
SINE_PERIOD_S = 2.0
FOLLOW_TOLERANCE_RAD = 0.1  # RMS tracking error that still counts as following


@dataclass(frozen=True)
class HandCheckReport:
    """Per-joint results of one check run, in policy order."""

    joint_names: tuple[str, ...]
    rms_tracking_error_rad: NDArray[np.float64]
    peak_speed_rad_s: NDArray[np.float64]
    speed_limit_rad_s: NDArray[np.float64]
    max_temperature_c: NDArray[np.float64]
    ticks: int
    missed_ticks: int
    fault: str | None

    @property
    def followed(self) -> NDArray[np.bool_]:
        return self.rms_tracking_error_rad <= FOLLOW_TOLERANCE_RAD

    @property
    def within_speed(self) -> NDArray[np.bool_]:
        return self.peak_speed_rad_s <= self.speed_limit_rad_s * (1 + MonitorConfig().speed_tolerance)

    @property
    def passed(self) -> bool:
        return self.fault is None and bool(np.all(self.followed) and np.all(self.within_speed))

    def format(self) -> str:
        lines = [f"{'joint':<12} {'rms error':>10} {'peak speed':>11} {'limit':>7} {'max temp':>9}  result"]
        for index, name in enumerate(self.joint_names):
            ok = self.followed[index] and self.within_speed[index]
            lines.append(
                f"{name:<12} {self.rms_tracking_error_rad[index]:>8.3f} r {self.peak_speed_rad_s[index]:>7.2f} r/s "
                f"{self.speed_limit_rad_s[index]:>5.2f} {self.max_temperature_c[index]:>7.0f} °C  "
                f"{'ok' if ok else 'FAIL'}"
            )
        lines.append(f"{self.ticks} ticks, {self.missed_ticks} missed deadlines")
        lines.append(f"fault: {self.fault}" if self.fault else "no safety fault")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def check_hand(
    profile: HandProfile, port: str | None = None, *, speed_scale: float = 1.0, seconds: float = 4.0
) -> HandCheckReport:
    """Run the check; raises SafetyConfigError for a speed scale outside (0, 1] before touching the hand."""
    robot = Robot(profile, port, speed_scale=speed_scale)
    n = len(profile.joints)
    errors, speeds, temperatures = [], [], []
    fault, ticks, missed = None, 0, 0
    with robot:
        centre = robot.last_state.position_rad.copy()
        low = np.array([j.soft_limits_rad[0] for j in profile.joints]) + AMPLITUDE_RAD
        high = np.array([j.soft_limits_rad[1] for j in profile.joints]) - AMPLITUDE_RAD
        centre = np.clip(centre, low, high)
        phase = np.linspace(0.0, np.pi, n, endpoint=False)  # joints out of step: not all load at once
        period = robot.control_period_s
        start = next_tick = time.monotonic()
        previous_target = None
        try:
            while (elapsed := time.monotonic() - start) < seconds:
                ramp = min(1.0, elapsed / 0.5)
                target = centre + ramp * AMPLITUDE_RAD * np.sin(2 * np.pi * elapsed / SINE_PERIOD_S + phase)
                report = robot.step(target)
                if previous_target is not None:
                    errors.append(previous_target - report.state.position_rad)
                previous_target = report.target_rad
                speeds.append(np.abs(report.state.velocity_rad_s))
                temperatures.append(report.state.temperature_c)
                ticks += 1
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay < 0:
                    missed += 1
                    next_tick = time.monotonic()
                else:
                    time.sleep(delay)
        except SafetyFault as error:
            fault = str(error)
    lag_free = np.array(errors[int(1.0 / period) :] or errors or [np.zeros(n)])  # skip the ramp-in
    return HandCheckReport(
        joint_names=profile.joint_names,
        rms_tracking_error_rad=np.sqrt(np.mean(lag_free**2, axis=0)),
        peak_speed_rad_s=np.max(np.array(speeds or [np.zeros(n)]), axis=0),
        speed_limit_rad_s=robot.limits.max_speed_rad_s,
        max_temperature_c=np.max(np.array(temperatures or [np.zeros(n)]), axis=0),
        ticks=ticks,
        missed_ticks=missed,
        fault=fault,
    )
