"""The hand as application code sees it: bus driver + safety layer in one object, no way around.

:class:`Robot` owns the :class:`~handrail.robot.bus.DynamixelBus` privately. Every target goes through
the :class:`~handrail.robot.safety_filter.TargetFilter` (non-finite actions, soft limits, tracking
window, speed and acceleration) and every reading through the
:class:`~handrail.robot.safety_monitor.StateMonitor`; a comms error, a monitor fault, or a loop that
stops calling :meth:`Robot.step` (a watchdog thread) moves the hand to a safe state:

- severe faults (comms, hardware error, overheating, stall, bad readings): torque off at once with
  one broadcast packet that needs no reply (the servos' own bus watchdog is the second line);
- the others (overspeed, overcurrent, a stalled loop): hold the measured position at reduced current;
- an unexpected exception under :meth:`Robot.read`, :meth:`Robot.step` or :meth:`Robot.command` (a bug in
  the filter, the monitor or the driver) is treated like a severe fault: torque off, recorded as
  ``unexpected_error`` with the exception, then :class:`SafetyFault` raised from it. :meth:`Robot.abort` does
  the same for an exception the application caught around the robot (the control loop's policy, say).

Order, as the style guide asks: state change (safe stop) first, then the exception
(:class:`SafetyFault`), then the log entry (``on_safe_stop`` callbacks and the ``handrail.safety``
logger).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.robot.bus import DynamixelBus, HandState
from handrail.robot.errors import BusError, RobotError
from handrail.robot.jerk_smoother import JerkLimitedSmoother
from handrail.robot.profile import HandProfile
from handrail.robot.safety_filter import Intervention, TargetFilter
from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.safety_monitor import (
    COMMS,
    LOOP_STALLED,
    OPERATOR_STOP,
    Fault,
    MonitorConfig,
    StateMonitor,
)

LOG = logging.getLogger("handrail.safety")

# An exception nothing expected (a bug) under the robot or around it: torque off, like a severe fault.
UNEXPECTED_ERROR = "unexpected_error"


class SafetyState(StrEnum):
    """Where the hand stands. Only RUNNING accepts targets."""

    DISCONNECTED = "disconnected"
    RUNNING = "running"
    HOLDING = "holding"  # safe stop: holding the measured position at reduced current
    TORQUE_OFF = "torque_off"  # safe stop: torque off
    # Safe stop whose commands could not be sent (the port is gone): the torque state is unknown; the servos'
    # own bus watchdog, which switches them off when the host falls silent, is the last line.
    STOP_UNCONFIRMED = "stop_unconfirmed"
    CLOSED = "closed"


@dataclass(frozen=True)
class SafeStopRecord:
    """What happened at a safe stop: the fault, what was done, and when (time.monotonic())."""

    time_s: float
    fault: Fault
    action: str  # "hold", "torque_off", or "unconfirmed" (the stop commands could not be sent)
    commands_sent: bool  # False when even the stop commands could not be sent
    detail: str = ""


class SafetyFault(RobotError):
    """The hand was moved to a safe state; ``record`` says why and what was done."""

    def __init__(self, record: SafeStopRecord):
        action = {
            "torque_off": "torque off",
            "hold": "holding at reduced current",
            "unconfirmed": "stop commands NOT sent, torque state unknown — the servos' bus watchdog is the last line",
        }.get(record.action, record.action)
        super().__init__(f"safe stop ({action}): {record.fault.message}")
        self.record = record


@dataclass(frozen=True)
class StepReport:
    """One tick through the safety layer: what was measured, asked for, and actually sent."""

    state: HandState
    raw_target_rad: NDArray[np.float64]  # (n,) what the caller asked for
    target_rad: NDArray[np.float64]  # (n,) what was sent after the filter
    interventions: tuple[Intervention, ...]
    filter_s: float  # time spent in the filter (and smoother) [s]
    write_s: float  # time spent writing the targets to the bus [s]


class Robot:
    """A hand profile's servos behind the safety layer. Use as a context manager."""

    def __init__(
        self,
        profile: HandProfile,
        port: str | None = None,
        *,
        speed_scale: float = 1.0,
        loop_watchdog_periods: float = 3.0,
        hold_current_fraction: float = 0.3,  # of the current limit, while holding after a mild fault
        monitor_config: MonitorConfig | None = None,
        max_jerk_rad_s3: float | None = None,
    ):
        if not 0.0 < hold_current_fraction <= 1.0:
            raise ValueError(f"hold_current_fraction {hold_current_fraction} must be in (0, 1]")
        self.profile = profile
        self.limits = SafetyLimits.from_profile(profile, speed_scale=speed_scale)
        self.speed_scale = speed_scale
        self.control_period_s = profile.control_period_s
        self._bus = DynamixelBus(profile, port)
        self._filter = TargetFilter(self.limits, self.control_period_s)
        # Optional ruckig smoothing of raw targets, in front of the filter (which still checks its output).
        self._smoother = (
            JerkLimitedSmoother(self.limits, self.control_period_s, max_jerk_rad_s3) if max_jerk_rad_s3 else None
        )
        self._monitor = StateMonitor(self.limits, profile.joint_names, monitor_config or MonitorConfig())
        self.hold_current_fraction = hold_current_fraction
        self.loop_watchdog_s = loop_watchdog_periods * self.control_period_s
        self.watchdog_poll_s = self.control_period_s / 4  # a stalled loop is held within limit + this
        self.state = SafetyState.DISCONNECTED
        self.stop_record: SafeStopRecord | None = None
        self.on_safe_stop: list[Callable[[SafeStopRecord], None]] = []
        self._lock = threading.RLock()
        self._last_state: HandState | None = None
        self._last_target: NDArray[np.float64] | None = None
        self._last_command_s = 0.0
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> HandState:
        """Connect, configure, enable torque holding where the hand is, and start the loop watchdog."""
        with self._lock:
            self._bus.connect()
            self._bus.configure(speed_scale=self.speed_scale)
            self._bus.write_goal_current(self.limits.current_limit_ma)
            state = self._bus.read_state()
            self._filter.reset(state.position_rad)
            if self._smoother is not None:
                self._smoother.reset(self._filter.last_target_rad)
            self._monitor.reset()
            self._bus.write_targets(self._filter.last_target_rad)
            self._bus.set_torque(True)
            self._last_state = state
            self._last_target = self._filter.last_target_rad.copy()
            self._last_command_s = time.monotonic()
            self.state = SafetyState.RUNNING
            self.stop_record = None
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watch_loop, name="handrail-loop-watchdog", daemon=True)
        self._watchdog.start()
        return state

    def close(self) -> None:
        """Stop the watchdog, switch torque off (if still on) and close the port."""
        self._watchdog_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)
        with self._lock:
            if self.state in (SafetyState.RUNNING, SafetyState.HOLDING):
                self._safe_stop(
                    Fault(OPERATOR_STOP, None, None, 0.0, 0.0, "hand: closed by the application"), force_torque_off=True
                )
            elif self.state == SafetyState.STOP_UNCONFIRMED:  # one more try; the record stays what happened
                with contextlib.suppress(Exception):
                    self._bus.broadcast_torque_off()
            self._bus.close()
            self.state = SafetyState.CLOSED

    def __enter__(self) -> Robot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the tick ------------------------------------------------------------------------------------

    @property
    def interventions_by_kind(self) -> dict[str, int]:
        """How often the filter changed a target, by kind, since start."""
        return dict(self._filter.counts)

    @property
    def last_state(self) -> HandState | None:
        return self._last_state

    def read(self) -> HandState:
        """Read and check the hand's state; a fault ends in a safe stop and raises SafetyFault."""
        with self._lock:
            self._require_running()
            with self._torque_off_on_unexpected_error("read"):
                return self._read_checked()

    def step(self, raw_target_rad: ArrayLike) -> StepReport:
        """Read, check, filter ``raw_target_rad`` (joint rad, policy order) and send what is safe.

        Raises SafetyFault (after the safe stop) on any fault, and on every call after one.
        """
        with self._lock:
            self._require_running()
            with self._torque_off_on_unexpected_error("step"):
                state = self._read_checked()
            return self.command(raw_target_rad, state)

    def command(self, raw_target_rad: ArrayLike, state: HandState) -> StepReport:
        """Filter ``raw_target_rad`` against ``state`` (this tick's checked reading, from :meth:`read`) and send it.

        For a loop that must see the state before it decides (a policy's observation): ``read()``, decide,
        ``command()`` — one bus read per tick. Raises SafetyFault (after the safe stop) on any fault.
        """
        raw = np.asarray(raw_target_rad, dtype=np.float64)
        if raw.shape != (len(self.profile.joints),):
            raise ValueError(f"step needs {len(self.profile.joints)} targets in policy order, got shape {raw.shape}")
        with self._lock:
            self._require_running()
            with self._torque_off_on_unexpected_error("command"):
                started_s = time.monotonic()
                wanted = self._smoother(raw) if self._smoother is not None else raw
                result = self._filter(wanted, state.position_rad)
                filtered_s = time.monotonic()
                try:
                    self._bus.write_targets(result.target_rad)
                except BusError as error:
                    self._raise_stop(Fault(COMMS, None, None, 0.0, 0.0, f"hand: writing targets failed: {error}"))
                self._last_target = result.target_rad.copy()
                self._last_command_s = time.monotonic()
            return StepReport(
                state,
                raw,
                result.target_rad,
                result.interventions,
                filter_s=filtered_s - started_s,
                write_s=self._last_command_s - filtered_s,
            )

    @property
    def last_target_rad(self) -> NDArray[np.float64] | None:
        """The last target sent after the filter [rad] (a copy), or None before start."""
        return None if self._last_target is None else self._last_target.copy()

    def stop(self, reason: str = "operator stop") -> SafeStopRecord:
        """Operator stop: torque off now. Returns the record (no exception)."""
        with self._lock:
            return self._safe_stop(Fault(OPERATOR_STOP, None, None, 0.0, 0.0, f"hand: {reason}"), force_torque_off=True)

    def abort(self, error: BaseException, where: str) -> SafeStopRecord:
        """Torque off now because ``error`` escaped ``where`` (a bug, e.g. in the policy): the severe-fault stop.

        Recorded as an ``unexpected_error`` fault naming the exception; returns the record (no exception, the
        caller re-raises or reports). A hand already stopped keeps its first record.
        """
        with self._lock:
            if self.state not in (SafetyState.RUNNING, SafetyState.HOLDING) and self.stop_record is not None:
                return self.stop_record
            message = f"hand: unexpected {type(error).__name__} in {where}: {error} — a bug"
            fault = Fault(UNEXPECTED_ERROR, None, None, 0.0, 0.0, message)
            return self._safe_stop(fault, force_torque_off=True, error=error)

    # -- internals -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _torque_off_on_unexpected_error(self, where: str) -> Iterator[None]:
        """Anything but a SafetyFault escaping the block switches torque off first, then raises SafetyFault."""
        try:
            yield
        except SafetyFault:
            raise
        except Exception as error:
            raise SafetyFault(self.abort(error, f"Robot.{where}")) from error

    def _require_running(self) -> None:
        if self.state != SafetyState.RUNNING:
            if self.stop_record is not None:
                raise SafetyFault(self.stop_record)
            raise RobotError(f"the hand is {self.state.value}: call start() first")

    def _read_checked(self) -> HandState:
        try:
            # The monitor judges hardware errors and stalls (one place for each fault kind); the driver only
            # reports what it cannot put in a reading: comms errors and a tripped bus watchdog.
            state = self._bus.read_state(diagnose=False, judge=False)
        except BusError as error:
            self._raise_stop(Fault(COMMS, None, None, 0.0, 0.0, f"hand: {error}"))
        self._last_state = state
        faults = self._monitor.check(state, self._last_target)
        if faults:
            worst = max(faults, key=lambda fault: fault.severe)
            self._raise_stop(worst, state)
        return state

    def _raise_stop(self, fault: Fault, state: HandState | None = None) -> None:
        raise SafetyFault(self._safe_stop(fault, state))

    def _safe_stop(
        self,
        fault: Fault,
        state: HandState | None = None,
        *,
        force_torque_off: bool = False,
        error: BaseException | None = None,
    ) -> SafeStopRecord:
        torque_off = force_torque_off or fault.severe
        sent, detail = True, ""
        try:
            if torque_off:
                self._bus.broadcast_torque_off()
            else:
                measured = (state or self._last_state).position_rad if (state or self._last_state) else None
                self._bus.write_goal_current(self.hold_current_fraction * self.limits.current_limit_ma)
                if measured is not None:
                    self._bus.write_targets(measured)
        except Exception as stop_error:  # a bus error, or a bug in the stop path itself: say so, never raise here
            sent = False
            watchdog_ms = self.profile.servo.bus_watchdog_ms
            detail = (
                f"stop commands could not be sent ({stop_error}); torque state unknown — the servos' bus watchdog "
                f"stops them where they are {watchdog_ms} ms after the host falls silent"
            )
        if not sent:
            action, self.state = "unconfirmed", SafetyState.STOP_UNCONFIRMED
        elif torque_off:
            action, self.state = "torque_off", SafetyState.TORQUE_OFF
        else:
            action, self.state = "hold", SafetyState.HOLDING
        record = SafeStopRecord(time.monotonic(), fault, action, sent, detail)
        self.stop_record = record
        level = logging.INFO if fault.kind == OPERATOR_STOP else logging.ERROR
        LOG.log(level, "safe stop (%s): %s %s", record.action, fault.message, detail, exc_info=error)
        for callback in self.on_safe_stop:
            callback(record)
        return record

    def _watch_loop(self) -> None:
        while not self._watchdog_stop.wait(self.watchdog_poll_s):
            if self.state != SafetyState.RUNNING:
                continue
            silent_s = time.monotonic() - self._last_command_s
            if silent_s <= self.loop_watchdog_s:
                continue
            if not self._lock.acquire(timeout=self.control_period_s):
                continue  # the loop is inside a bus call: a comms timeout will end it
            try:
                silent_s = time.monotonic() - self._last_command_s
                if self.state == SafetyState.RUNNING and silent_s > self.loop_watchdog_s:
                    self._safe_stop(
                        Fault(
                            LOOP_STALLED,
                            None,
                            None,
                            silent_s,
                            self.loop_watchdog_s,
                            f"hand: control loop stalled — no command for {silent_s * 1000:.0f} ms "
                            f"(limit {self.loop_watchdog_s * 1000:.0f} ms)",
                        )
                    )
            finally:
                self._lock.release()
