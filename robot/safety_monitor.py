"""The monitoring half of the safety layer: measured state checked against the limits, every tick.

:class:`StateMonitor` is pure (numpy, no I/O). It turns a :class:`~handrail.robot.bus.HandState` into
:class:`Fault` records: a joint faster than its limit (with a tolerance, for N consecutive readings), a
current above its limit, a measured position outside the soft limits (with a tolerance, for N readings), a
temperature near its limit, a hardware error, a stall (pushing at the
current limit without moving while the target is at the edge of the tracking window), and a reading
that is not finite. Comms errors and a stalled loop are reported by the :class:`~handrail.robot.safe_robot.Robot`
that owns the bus, with the same :class:`Fault` record.

Severe faults end with torque off; the others with a hold at reduced current.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from handrail.robot.bus import HandState, decode_hardware_error
from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.stall import (
    STALL_CURRENT_FRACTION,
    STALL_ERROR_FRACTION,
    STALL_SPEED_RAD_S,
    STALL_TIME_S,
    advance_stall_timer,
    pushing,
)

# Fault kinds. Severe ones switch torque off; the rest hold position at reduced current.
OVERSPEED = "overspeed"
OVERCURRENT = "overcurrent"
OVERTEMPERATURE = "overtemperature"
POSITION_LIMIT = "position_limit"
HARDWARE_ERROR = "hardware_error"
STALL = "stall"
BAD_READING = "bad_reading"
COMMS = "comms"
LOOP_STALLED = "loop_stalled"
NON_FINITE_ACTION = "non_finite_action"
OPERATOR_STOP = "operator_stop"
SEVERE_KINDS = frozenset({OVERTEMPERATURE, HARDWARE_ERROR, STALL, COMMS, BAD_READING})


@dataclass(frozen=True)
class Fault:
    """Why the hand must stop: what, which joint (None = the hand), the value seen and the limit."""

    kind: str
    joint: int | None
    joint_name: str | None
    value: float
    limit: float
    message: str

    @property
    def severe(self) -> bool:
        """Severe faults end with torque off; others with a hold at reduced current."""
        return self.kind in SEVERE_KINDS


@dataclass
class MonitorConfig:
    """Tolerances of the monitor (documented defaults; tests rely on them)."""

    speed_tolerance: float = 0.25  # measured speed may exceed max speed by 25 % (encoder noise, overshoot)
    overspeed_readings: int = 3  # ... for this many consecutive readings before it is a fault
    current_tolerance: float = 0.15  # the servo caps current at its limit; 15 % above means it does not
    overcurrent_readings: int = 3
    # The measured position may leave the soft limits by this much [rad] before it is a fault (N readings in a
    # row): the filter keeps targets inside, but a finger pushed by the object at the current limit overshoots
    # (up to 0.134 rad measured over 59 virtual-hand demo logs). Beyond it: a wrong zero offset or direction,
    # or a start pose outside the limits — found driving ring_dip 0.225 rad past its limit with no fault.
    position_tolerance_rad: float = 0.2
    position_readings: int = 3
    temperature_margin_c: float = 5.0  # stop this far below the temperature limit (the servo's own cut-off)
    # The stall rule of handrail.robot.stall, which the bus driver's detector applies too.
    stall_current_fraction: float = STALL_CURRENT_FRACTION
    stall_speed_rad_s: float = STALL_SPEED_RAD_S
    stall_error_fraction: float = STALL_ERROR_FRACTION  # of the tracking window
    # A finger pressed against the cube or the palm also pushes at its limit without moving; only a
    # joint that stays that way for a second counts as stuck.
    stall_time_s: float = STALL_TIME_S


@dataclass
class StateMonitor:
    """Per-joint counters over consecutive readings; ``check`` returns the faults of one reading."""

    limits: SafetyLimits
    joint_names: tuple[str, ...]
    config: MonitorConfig = field(default_factory=MonitorConfig)
    _overspeed: NDArray[np.int64] = field(init=False)
    _overcurrent: NDArray[np.int64] = field(init=False)
    _outside: NDArray[np.int64] = field(init=False)
    _stalled_since_s: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        n = len(self.joint_names)
        self._overspeed = np.zeros(n, dtype=np.int64)
        self._overcurrent = np.zeros(n, dtype=np.int64)
        self._outside = np.zeros(n, dtype=np.int64)
        self._stalled_since_s = np.full(n, np.nan)

    def _fault(self, kind: str, joint: int | None, value: float, limit: float, what: str) -> Fault:
        name = self.joint_names[joint] if joint is not None else None
        where = f"joint {joint} ({name})" if joint is not None else "hand"
        return Fault(kind, joint, name, float(value), float(limit), f"{where}: {what}")

    def check(self, state: HandState, target_rad: NDArray[np.float64] | None = None) -> list[Fault]:
        """Faults in one reading. ``target_rad`` is the last target sent (None while torque is off)."""
        limits, config = self.limits, self.config
        faults: list[Fault] = []
        readings = (state.position_rad, state.velocity_rad_s, state.current_ma, state.temperature_c)
        if not all(np.all(np.isfinite(values)) for values in readings):
            return [
                self._fault(BAD_READING, None, np.nan, 0.0, "a reading is not a finite number — sensor or bus fault")
            ]
        for joint in np.flatnonzero(state.hardware_error):
            bits = ", ".join(decode_hardware_error(int(state.hardware_error[joint]))) or "unknown"
            faults.append(
                self._fault(
                    HARDWARE_ERROR,
                    int(joint),
                    state.hardware_error[joint],
                    0,
                    f"servo reports {bits} (Hardware Error Status 0x{int(state.hardware_error[joint]):02x}) — it "
                    "has shut its torque off; find the cause, then reboot it",
                )
            )
        hot_limit = limits.temperature_limit_c - config.temperature_margin_c
        for joint in np.flatnonzero(state.temperature_c >= hot_limit):
            faults.append(
                self._fault(
                    OVERTEMPERATURE,
                    int(joint),
                    state.temperature_c[joint],
                    hot_limit[joint],
                    f"{state.temperature_c[joint]:.0f} °C, stop threshold {hot_limit[joint]:.0f} °C "
                    f"({config.temperature_margin_c:g} °C below its limit) — let it cool, check the load",
                )
            )
        speed_limit = limits.max_speed_rad_s * (1.0 + config.speed_tolerance)
        over = np.abs(state.velocity_rad_s) > speed_limit
        self._overspeed = np.where(over, self._overspeed + 1, 0)
        for joint in np.flatnonzero(self._overspeed >= config.overspeed_readings):
            faults.append(
                self._fault(
                    OVERSPEED,
                    int(joint),
                    state.velocity_rad_s[joint],
                    speed_limit[joint],
                    f"{abs(state.velocity_rad_s[joint]):.2f} rad/s for {self._overspeed[joint]} readings, limit "
                    f"{limits.max_speed_rad_s[joint]:.2f} rad/s (+{config.speed_tolerance:.0%} tolerance)",
                )
            )
        current_limit = limits.current_limit_ma * (1.0 + config.current_tolerance)
        self._overcurrent = np.where(np.abs(state.current_ma) > current_limit, self._overcurrent + 1, 0)
        for joint in np.flatnonzero(self._overcurrent >= config.overcurrent_readings):
            faults.append(
                self._fault(
                    OVERCURRENT,
                    int(joint),
                    state.current_ma[joint],
                    current_limit[joint],
                    f"{abs(state.current_ma[joint]):.0f} mA, limit {limits.current_limit_ma[joint]:.0f} mA — the "
                    "servo's own current limit is not holding: check its Current Limit register",
                )
            )
        tolerance = config.position_tolerance_rad
        low, high = limits.soft_low_rad - tolerance, limits.soft_high_rad + tolerance
        position = state.position_rad
        self._outside = np.where((position < low) | (position > high), self._outside + 1, 0)
        for joint in np.flatnonzero(self._outside >= config.position_readings):
            faults.append(
                self._fault(
                    POSITION_LIMIT,
                    int(joint),
                    position[joint],
                    high[joint] if position[joint] > high[joint] else low[joint],
                    f"measured at {position[joint]:.3f} rad for {self._outside[joint]} readings, soft limits "
                    f"[{limits.soft_low_rad[joint]:.3f}, {limits.soft_high_rad[joint]:.3f}] rad (±{tolerance:g} "
                    "tolerance) — a wrong zero offset or direction (run `handrail calibrate joints`), or the "
                    "finger was forced there",
                )
            )
        if target_rad is None:
            self._stalled_since_s[:] = np.nan
        else:
            stalled = pushing(
                state.current_ma,
                state.position_rad,
                target_rad,
                config.stall_current_fraction * limits.current_limit_ma,
                config.stall_error_fraction * limits.max_tracking_error_rad,
            ) & (np.abs(state.velocity_rad_s) < config.stall_speed_rad_s)
            self._stalled_since_s, stalled_for_s = advance_stall_timer(
                self._stalled_since_s, stalled, state.timestamp_s
            )
            for joint in np.flatnonzero(stalled_for_s >= config.stall_time_s):
                faults.append(
                    self._fault(
                        STALL,
                        int(joint),
                        state.current_ma[joint],
                        limits.current_limit_ma[joint],
                        f"stalled for {stalled_for_s[joint]:.1f} s: {abs(state.current_ma[joint]):.0f} mA at "
                        f"{abs(state.velocity_rad_s[joint]):.2f} rad/s, "
                        f"{abs(target_rad[joint] - state.position_rad[joint]):.2f} rad from its target "
                        "— a stuck joint or a blocked finger",
                    )
                )
        return faults
