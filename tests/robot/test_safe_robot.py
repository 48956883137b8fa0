"""Robot's state machine, fast: every path to a safe stop, with a recording stand-in for the bus driver.

The virtual-hand tests (``tests/integration/test_every_fault_kind_through_the_robot.py``) drive each fault end
to end through the real driver and pty; they take minutes, too long to run once per mutant. These unit tests
check the same decisions in milliseconds — what is sent to the bus, in which order, the state, the record, the
log and the callbacks — so that mutation testing (``bash scripts/mutation_test.sh robot/safe_robot.py``) can
run them. The stand-in replaces only the bus driver (``Robot._bus``); filter and monitor are the real ones.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from handrail.robot.bus import HandState
from handrail.robot.errors import BusError, RobotError
from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safe_robot import UNEXPECTED_ERROR, Robot, SafetyFault, SafetyState
from handrail.robot.safety_monitor import (
    COMMS,
    HARDWARE_ERROR,
    LOOP_STALLED,
    OPERATOR_STOP,
    OVERCURRENT,
    OVERSPEED,
)


class RecordingBus:
    """Answers ``read_state`` from a script (a HandState, an exception, or a function of the call count) and
    records every call as (method, arguments)."""

    def __init__(self, profile: HandProfile):
        self.profile = profile
        self.calls: list[tuple[str, Any]] = []
        self.judged: list[bool] = []
        self.position = np.array([joint.home_rad for joint in profile.joints])
        self.next_read: Callable[[], HandState] | None = None
        self.fail: dict[str, Exception] = {}  # method -> exception to raise

    def state(self, **changes: Any) -> HandState:
        n = len(self.profile.joints)
        values: dict[str, Any] = {
            "timestamp_s": time.monotonic(),
            "position_rad": self.position.copy(),
            "velocity_rad_s": np.zeros(n),
            "current_ma": np.zeros(n),
            "temperature_c": np.full(n, 30.0),
            "hardware_error": np.zeros(n, dtype=np.int64),
        }
        values.update(changes)
        return HandState(**values)

    def _call(self, name: str, argument: Any = None) -> None:
        self.calls.append((name, argument))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def connect(self) -> None:
        self._call("connect")

    def configure(self, speed_scale: float = 1.0) -> None:
        self._call("configure", speed_scale)

    def write_goal_current(self, current_ma: Any) -> None:
        self._call(
            "write_goal_current", np.broadcast_to(np.asarray(current_ma, dtype=float), self.position.shape).copy()
        )

    def read_state(self, diagnose: bool = True, judge: bool = True) -> HandState:
        self.judged.append(judge)
        self._call("read_state", diagnose)
        return self.next_read() if self.next_read is not None else self.state()

    def write_targets(self, target_rad: Any) -> None:
        self._call("write_targets", np.array(target_rad, dtype=float))

    def set_torque(self, on: bool) -> None:
        self._call("set_torque", on)

    def broadcast_torque_off(self) -> None:
        self._call("broadcast_torque_off")

    def close(self) -> None:
        self._call("close")


@pytest.fixture(scope="module")
def profile() -> HandProfile:
    return load_profile()


@pytest.fixture
def robot(profile: HandProfile) -> tuple[Robot, RecordingBus]:
    # A long loop watchdog, so that it stays out of every test but its own.
    hand = Robot(profile, port="unused", loop_watchdog_periods=1000.0)
    bus = RecordingBus(profile)
    hand._bus = bus  # type: ignore[assignment]
    return hand, bus


def _started(robot: tuple[Robot, RecordingBus]) -> tuple[Robot, RecordingBus, list[Any]]:
    hand, bus = robot
    records: list[Any] = []
    hand.on_safe_stop.append(records.append)
    hand.start()
    bus.calls.clear()
    return hand, bus, records


def _hold_after_an_overspeed(hand: Robot, bus: RecordingBus) -> None:
    """Readings at 10 rad/s until the monitor's overspeed fault holds the hand."""
    bus.next_read = lambda: bus.state(velocity_rad_s=np.full(16, 10.0))
    with pytest.raises(SafetyFault):
        for _ in range(hand._monitor.config.overspeed_readings):
            hand.step(bus.position)


# ---- start, close, the tick ----------------------------------------------------------------------------------


def test_start_configures_then_holds_where_the_hand_is_then_enables_torque(robot) -> None:
    hand, bus = robot
    hand.speed_scale = 0.5
    state = hand.start()
    try:
        assert bus.names() == [
            "connect", "configure", "write_goal_current", "read_state", "write_targets", "set_torque",
        ]  # fmt: skip
        assert bus.calls[1][1] == 0.5 and bus.calls[5][1] is True
        np.testing.assert_array_equal(bus.calls[2][1], hand.limits.current_limit_ma)
        np.testing.assert_allclose(bus.calls[4][1], state.position_rad)  # torque on holding the measured pose
        assert hand.state == SafetyState.RUNNING and hand.stop_record is None and hand.last_state is state
        np.testing.assert_allclose(hand.last_target_rad, state.position_rad)
    finally:
        hand.close()
    assert bus.names()[-2:] == ["broadcast_torque_off", "close"] and hand.state == SafetyState.CLOSED
    assert hand.stop_record is not None and hand.stop_record.fault.kind == OPERATOR_STOP


def test_nothing_moves_before_start(robot) -> None:
    hand, bus = robot
    with pytest.raises(RobotError, match="call start\\(\\) first"):
        hand.step(np.zeros(16))
    with pytest.raises(RobotError, match="call start\\(\\) first"):
        hand.read()
    assert bus.calls == [] and hand.last_target_rad is None


def test_a_step_reads_filters_and_sends_what_is_safe(robot) -> None:
    hand, bus, records = _started(robot)
    raw = bus.position + 1.0  # far beyond the tracking window
    report = hand.step(raw)
    assert bus.names() == ["read_state", "write_targets"] and bus.calls[0][1] is False
    np.testing.assert_array_equal(report.raw_target_rad, raw)
    sent = bus.calls[1][1]
    np.testing.assert_allclose(report.target_rad, sent)
    np.testing.assert_allclose(hand.last_target_rad, sent)
    assert np.all(np.abs(sent - bus.position) <= hand.limits.max_tracking_error_rad + 1e-12)
    assert report.interventions and sum(hand.interventions_by_kind.values()) > 0
    assert 0 <= report.filter_s < 0.05 and 0 <= report.write_s < 0.05  # durations of this tick, not clock readings
    assert hand.state == SafetyState.RUNNING and not records
    hand.last_target_rad[0] = 99.0  # a copy
    assert hand.last_target_rad[0] != 99.0


def test_read_then_command_is_one_bus_read_per_tick(robot) -> None:
    hand, bus, _ = _started(robot)
    state = hand.read()
    hand.command(bus.position, state)
    assert bus.names() == ["read_state", "write_targets"]
    for wrong in (np.zeros(3), np.zeros(17), np.zeros((16, 1))):
        with pytest.raises(ValueError, match="16 targets"):
            hand.command(wrong, state)


# ---- faults: severe ones switch torque off, mild ones hold at reduced current ------------------------------------


def _assert_torque_off(hand: Robot, bus: RecordingBus, records: list[Any], kind: str) -> None:
    assert "broadcast_torque_off" in bus.names() and "write_goal_current" not in bus.names()
    assert hand.state == SafetyState.TORQUE_OFF
    assert hand.stop_record is not None and hand.stop_record.fault.kind == kind
    assert hand.stop_record.action == "torque_off" and hand.stop_record.commands_sent
    assert records == [hand.stop_record]


def _assert_no_measurement(fault: Any) -> None:
    """A fault with no measured quantity (comms, a servo's own error, an operator, a bug) carries 0 and 0."""
    assert fault.value == 0.0 and fault.limit == 0.0


def _assert_hold(hand: Robot, bus: RecordingBus, records: list[Any], kind: str, measured: np.ndarray) -> None:
    assert "broadcast_torque_off" not in bus.names()
    names = bus.names()
    current = bus.calls[names.index("write_goal_current")][1]
    np.testing.assert_allclose(current, hand.hold_current_fraction * hand.limits.current_limit_ma)
    np.testing.assert_allclose(bus.calls[len(names) - 1 - names[::-1].index("write_targets")][1], measured)
    assert hand.state == SafetyState.HOLDING and hand.stop_record is not None
    assert hand.stop_record.fault.kind == kind and hand.stop_record.action == "hold"
    assert records == [hand.stop_record]


def test_the_running_robot_leaves_hardware_errors_and_stalls_to_its_monitor(robot) -> None:
    """One place judges each fault kind: the driver's own HardwareFault/StallError would pre-empt the monitor
    (whose checks were unreachable), so the Robot reads with judge=False and the monitor decides."""
    hand, bus, records = _started(robot)
    hand.step(bus.position)
    assert bus.judged[-1] is False
    error_bits = np.zeros(16, dtype=np.int64)
    error_bits[5] = 0x20  # overload
    bus.next_read = lambda: bus.state(hardware_error=error_bits)
    with pytest.raises(SafetyFault, match="middle_mcp"):
        hand.step(bus.position)
    _assert_torque_off(hand, bus, records, HARDWARE_ERROR)
    assert hand.stop_record.fault.joint == 5 and "overload" in hand.stop_record.fault.message


@pytest.mark.parametrize(
    ("error", "kind", "joint"),
    [(BusError("no status packet within 20 ms"), COMMS, None)],
    ids=["comms"],
)
def test_a_bus_fault_while_reading_is_a_torque_off_naming_the_joint(robot, caplog, error, kind, joint) -> None:
    hand, bus, records = _started(robot)
    bus.fail["read_state"] = error
    with caplog.at_level(logging.ERROR, logger="handrail.safety"), pytest.raises(SafetyFault) as raised:
        hand.step(bus.position)
    _assert_torque_off(hand, bus, records, kind)
    assert raised.value.record is hand.stop_record and "torque off" in str(raised.value)
    assert hand.stop_record.fault.joint == joint and str(error) in hand.stop_record.fault.message
    _assert_no_measurement(hand.stop_record.fault)
    assert "write_targets" not in bus.names()  # nothing was sent after the failed read
    assert "safe stop (torque_off)" in caplog.text and str(error) in caplog.text


@pytest.mark.parametrize("how", ["torque_off", "hold"])
def test_a_stopped_hand_refuses_every_call_with_its_record_and_sends_nothing(robot, how) -> None:
    hand, bus, _ = _started(robot)
    if how == "torque_off":
        hand.stop("test")
    else:
        _hold_after_an_overspeed(hand, bus)
    record = hand.stop_record
    bus.calls.clear()
    for call in (lambda: hand.step(bus.position), hand.read, lambda: hand.command(bus.position, bus.state())):
        with pytest.raises(SafetyFault) as raised:
            call()
        assert raised.value.record is record
    assert bus.calls == [] and hand.stop_record is record


def test_a_failed_target_write_is_a_comms_torque_off(robot) -> None:
    hand, bus, records = _started(robot)
    bus.fail["write_targets"] = BusError("port vanished")
    with pytest.raises(SafetyFault, match="writing targets failed: port vanished"):
        hand.step(bus.position)
    _assert_torque_off(hand, bus, records, COMMS)
    _assert_no_measurement(hand.stop_record.fault)


def test_an_overspeed_holds_the_measured_position_at_reduced_current(robot, caplog) -> None:
    hand, bus, records = _started(robot)
    fast = bus.state(velocity_rad_s=np.full(16, 10.0), position_rad=bus.position + 0.01)
    bus.next_read = lambda: fast
    with caplog.at_level(logging.ERROR, logger="handrail.safety"):
        for _ in range(hand._monitor.config.overspeed_readings - 1):
            hand.step(bus.position)
        assert hand.state == SafetyState.RUNNING
        bus.calls.clear()
        with pytest.raises(SafetyFault, match="holding at reduced current") as raised:
            hand.step(bus.position)
    _assert_hold(hand, bus, records, OVERSPEED, fast.position_rad)
    assert raised.value.record.fault.joint == 0 and "safe stop (hold)" in caplog.text
    # Holding is not running: every later call raises the same record, and nothing more is sent.
    bus.calls.clear()
    for call in (lambda: hand.step(bus.position), hand.read):
        with pytest.raises(SafetyFault) as again:
            call()
        assert again.value.record is hand.stop_record
    assert bus.calls == []


def test_a_severe_and_a_mild_fault_on_one_reading_switch_torque_off(robot) -> None:
    hand, bus, _ = _started(robot)
    n, readings = 16, hand._monitor.config.overcurrent_readings
    count = iter(range(1, 100))

    def overcurrent_then_also_hot() -> HandState:
        # Over the current limit from the start; on the reading where that becomes a fault, hot too.
        hot = next(count) >= readings
        return bus.state(current_ma=np.full(n, 1000.0), temperature_c=np.full(n, 95.0 if hot else 30.0))

    bus.next_read = overcurrent_then_also_hot
    for _ in range(readings - 1):
        hand.step(bus.position)
    with pytest.raises(SafetyFault, match="torque off"):
        hand.step(bus.position)
    assert hand.state == SafetyState.TORQUE_OFF and hand.stop_record.fault.severe
    assert hand.stop_record.fault.kind != OVERCURRENT


def test_a_stop_that_cannot_be_sent_says_the_torque_state_is_unknown(robot) -> None:
    """It used to be recorded as torque off although no torque-off packet went out."""
    hand, bus, records = _started(robot)
    bus.fail["broadcast_torque_off"] = BusError("port vanished")
    bus.fail["write_goal_current"] = BusError("port vanished")
    _hold_after_an_overspeed(hand, bus)
    record = hand.stop_record
    assert record is not None and not record.commands_sent and record.action == "unconfirmed"
    assert "port vanished" in record.detail and "torque state unknown" in record.detail
    assert "bus watchdog stops them where they are 100 ms" in record.detail
    assert hand.state == SafetyState.STOP_UNCONFIRMED and records == [record]
    with pytest.raises(SafetyFault, match="torque state unknown"):
        hand.step(bus.position)  # stays stopped


# ---- bugs under and around the robot: torque off, recorded with the exception --------------------------------------


def test_an_unexpected_exception_under_step_is_a_torque_off_with_the_exception(robot, caplog) -> None:
    hand, bus, records = _started(robot)

    def broken() -> HandState:
        raise ZeroDivisionError("a bug in the driver")

    bus.next_read = broken
    with caplog.at_level(logging.ERROR, logger="handrail.safety"), pytest.raises(SafetyFault) as raised:
        hand.step(bus.position)
    _assert_torque_off(hand, bus, records, UNEXPECTED_ERROR)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert "unexpected ZeroDivisionError in Robot.step: a bug in the driver" in hand.stop_record.fault.message
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    _assert_no_measurement(hand.stop_record.fault)


@pytest.mark.parametrize("where", ["read", "command"])
def test_an_unexpected_exception_under_read_or_command_is_a_torque_off(robot, where) -> None:
    hand, bus, records = _started(robot)
    if where == "read":
        bus.next_read = lambda: (_ for _ in ()).throw(KeyError("register"))
        with pytest.raises(SafetyFault, match=r"unexpected KeyError in Robot\.read"):
            hand.read()
    else:
        state = hand.read()
        hand._filter = None  # type: ignore[assignment]  # a bug in the filter: it cannot be called
        with pytest.raises(SafetyFault, match=r"unexpected TypeError in Robot\.command"):
            hand.command(bus.position, state)
    _assert_torque_off(hand, bus, records, UNEXPECTED_ERROR)


def test_abort_is_a_torque_off_once_and_keeps_the_first_record(robot) -> None:
    hand, bus, records = _started(robot)
    first = hand.abort(RuntimeError("policy crashed"), "the policy")
    assert first.fault.kind == UNEXPECTED_ERROR and "RuntimeError in the policy: policy crashed" in first.fault.message
    assert hand.abort(ValueError("later"), "elsewhere") is first
    _assert_no_measurement(first.fault)
    assert bus.names().count("broadcast_torque_off") == 1 and records == [first]


def test_abort_while_holding_switches_torque_off(robot) -> None:
    hand, bus, records = _started(robot)
    _hold_after_an_overspeed(hand, bus)
    assert hand.state == SafetyState.HOLDING
    record = hand.abort(RuntimeError("after the hold"), "the loop")
    assert record.action == "torque_off" and hand.state == SafetyState.TORQUE_OFF and len(records) == 2


def test_an_operator_stop_is_a_torque_off_logged_at_info(robot, caplog) -> None:
    hand, bus, records = _started(robot)
    with caplog.at_level(logging.INFO, logger="handrail.safety"):
        record = hand.stop("Ctrl-C")
    assert record.fault.kind == OPERATOR_STOP and record.fault.message == "hand: Ctrl-C"
    _assert_torque_off(hand, bus, records, OPERATOR_STOP)
    _assert_no_measurement(record.fault)
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_closing_a_holding_hand_switches_torque_off(robot) -> None:
    hand, bus, _ = _started(robot)
    _hold_after_an_overspeed(hand, bus)
    bus.calls.clear()
    hand.close()
    assert bus.names() == ["broadcast_torque_off", "close"] and hand.state == SafetyState.CLOSED
    closed = hand.stop_record.fault
    assert closed.kind == OPERATOR_STOP and closed.message == "hand: closed by the application"
    _assert_no_measurement(closed)


def test_closing_a_stopped_hand_sends_no_second_stop(robot) -> None:
    hand, bus, _ = _started(robot)
    hand.stop()
    bus.calls.clear()
    hand.close()
    assert bus.names() == ["close"]


# ---- the loop watchdog ---------------------------------------------------------------------------------------------


def test_a_loop_that_stops_calling_step_is_held_by_the_watchdog(profile, caplog) -> None:
    hand = Robot(profile, port="unused", loop_watchdog_periods=3.0)
    bus = RecordingBus(profile)
    hand._bus = bus  # type: ignore[assignment]
    records: list[Any] = []
    hand.on_safe_stop.append(records.append)
    with caplog.at_level(logging.ERROR, logger="handrail.safety"):
        hand.start()
        try:
            for _ in range(5):  # a loop that keeps its period is left alone
                time.sleep(hand.control_period_s)
                hand.step(bus.position)
            assert hand.state == SafetyState.RUNNING
            deadline = time.monotonic() + 2.0
            while hand.state == SafetyState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            hand.close()
    assert records and records[0].fault.kind == LOOP_STALLED and records[0].action == "hold"
    stalled = records[0].fault
    assert stalled.limit == pytest.approx(hand.loop_watchdog_s) and stalled.value > hand.loop_watchdog_s
    assert hand.watchdog_poll_s == pytest.approx(hand.control_period_s / 4)
    assert stalled.value < hand.loop_watchdog_s + hand.watchdog_poll_s + 0.15  # found at the next poll or so
    silent_ms, limit_ms = map(int, re.search(r"no command for (\d+) ms \(limit (\d+) ms\)", stalled.message).groups())
    assert limit_ms == round(hand.loop_watchdog_s * 1000) and silent_ms == round(stalled.value * 1000)
    assert "control loop stalled" in caplog.text


def test_the_loop_watchdog_defaults_to_three_control_periods(profile) -> None:
    hand = Robot(profile, port="unused")
    assert hand.loop_watchdog_s == pytest.approx(3 * profile.control_period_s)


def test_the_hold_fraction_must_be_a_fraction(profile) -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="hold_current_fraction"):
            Robot(profile, port="unused", hold_current_fraction=bad)
    assert Robot(profile, port="unused", hold_current_fraction=1.0).hold_current_fraction == 1.0
