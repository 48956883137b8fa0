"""StateMonitor, pure: each fault kind from readings alone, at its threshold and not below it.

Limits and tolerances are written out here (not read from the product's defaults), so loosening the
product's MonitorConfig or limits fails these tests.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from handrail.robot.bus import DynamixelBus, HandState
from handrail.robot.profile import load_profile
from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.safety_monitor import (
    BAD_READING,
    COMMS,
    HARDWARE_ERROR,
    LOOP_STALLED,
    NON_FINITE_ACTION,
    OPERATOR_STOP,
    OVERCURRENT,
    OVERSPEED,
    OVERTEMPERATURE,
    POSITION_LIMIT,
    SEVERE_KINDS,
    STALL,
    Fault,
    MonitorConfig,
    StateMonitor,
)

NAMES = ("index_mcp", "index_pip", "thumb_ip")
N = len(NAMES)
MAX_SPEED_RAD_S = np.array([3.0, 2.0, 4.0])
CURRENT_LIMIT_MA = np.array([350.0, 300.0, 200.0])
TEMPERATURE_LIMIT_C = np.array([70.0, 65.0, 60.0])
TRACKING_RAD = np.array([0.5, 0.4, 0.3])
# The documented defaults (README "The safety layer"), written out: the monitor must be at least this strict.
SPEED_TOLERANCE = 0.25
CURRENT_TOLERANCE = 0.15
READINGS = 3
TEMPERATURE_MARGIN_C = 5.0
POSITION_TOLERANCE_RAD = 0.2
STALL_TIME_S = 1.0


def _limits() -> SafetyLimits:
    return SafetyLimits(
        soft_low_rad=np.full(N, -1.0),
        soft_high_rad=np.full(N, 1.5),
        max_speed_rad_s=MAX_SPEED_RAD_S.copy(),
        max_accel_rad_s2=np.full(N, 40.0),
        max_tracking_error_rad=TRACKING_RAD.copy(),
        current_limit_ma=CURRENT_LIMIT_MA.copy(),
        temperature_limit_c=TEMPERATURE_LIMIT_C.copy(),
    )


def _state(time_s: float = 0.0, **values: np.ndarray) -> HandState:
    fields = {
        "position_rad": np.zeros(N),
        "velocity_rad_s": np.zeros(N),
        "current_ma": np.zeros(N),
        "temperature_c": np.full(N, 30.0),
        "hardware_error": np.zeros(N, dtype=np.int64),
    }
    fields.update({name: np.asarray(value) for name, value in values.items()})
    return HandState(timestamp_s=time_s, **fields)


@pytest.fixture
def monitor() -> StateMonitor:
    return StateMonitor(_limits(), NAMES)


def _only(faults: list[Fault], kind: str) -> Fault:
    assert [fault.kind for fault in faults] == [kind], faults
    return faults[0]


def test_documented_defaults_are_at_least_as_strict_as_written_here() -> None:
    config = MonitorConfig()
    assert config.speed_tolerance <= SPEED_TOLERANCE and config.current_tolerance <= CURRENT_TOLERANCE
    assert config.overspeed_readings <= READINGS and config.overcurrent_readings <= READINGS
    assert config.temperature_margin_c >= TEMPERATURE_MARGIN_C and config.stall_time_s <= STALL_TIME_S
    assert config.position_tolerance_rad <= POSITION_TOLERANCE_RAD and config.position_readings <= READINGS


def test_a_calm_reading_is_no_fault(monitor: StateMonitor) -> None:
    calm = _state(velocity_rad_s=MAX_SPEED_RAD_S, current_ma=-CURRENT_LIMIT_MA)  # at the limits, not over
    for _ in range(10):
        assert monitor.check(calm, np.zeros(N)) == []


def test_every_joint_at_10_rad_s_for_four_readings_is_an_overspeed_record_not_a_crash(monitor: StateMonitor) -> None:
    """The issue's reproduction: an array limit once reached float() and raised TypeError here."""
    fast = _state(velocity_rad_s=np.full(N, 10.0))
    assert monitor.check(fast) == [] and monitor.check(fast) == []
    faults = monitor.check(fast)
    assert [fault.kind for fault in faults] == [OVERSPEED] * N
    for joint, fault in enumerate(faults):
        assert fault.joint == joint and fault.joint_name == NAMES[joint]
        assert fault.value == 10.0
        assert fault.limit == pytest.approx(MAX_SPEED_RAD_S[joint] * (1 + SPEED_TOLERANCE))
        assert NAMES[joint] in fault.message and "10.00 rad/s for 3 readings" in fault.message
        assert not fault.severe
    assert [fault.kind for fault in monitor.check(fast)] == [OVERSPEED] * N  # it stays a fault


def test_overspeed_needs_consecutive_readings_over_the_tolerance(monitor: StateMonitor) -> None:
    speed = np.zeros(N)
    speed[1] = -MAX_SPEED_RAD_S[1] * (1 + SPEED_TOLERANCE) - 0.01  # either sense
    fast, slow = _state(velocity_rad_s=speed), _state()
    assert monitor.check(fast) == [] and monitor.check(fast) == []
    assert monitor.check(slow) == []  # a calm reading starts the count anew
    assert monitor.check(fast) == [] and monitor.check(fast) == []
    fault = _only(monitor.check(fast), OVERSPEED)
    assert fault.joint == 1 and fault.value == speed[1]
    at_tolerance = np.zeros(N)
    at_tolerance[1] = MAX_SPEED_RAD_S[1] * (1 + SPEED_TOLERANCE)
    monitor.reset()
    for _ in range(READINGS + 2):
        assert monitor.check(_state(velocity_rad_s=at_tolerance)) == []


@pytest.mark.parametrize("side", [-1, 1])
def test_a_measured_position_past_the_soft_limits_is_a_fault_after_consecutive_readings(
    monitor: StateMonitor, side: int
) -> None:
    """A wrong zero offset or a start pose outside the limits once drove a joint 0.14-0.23 rad past its soft
    limit with no fault: the filter bounds targets, nothing watched where the joint really was."""
    edge = (1.5 if side > 0 else -1.0) + side * POSITION_TOLERANCE_RAD
    position = np.zeros(N)
    position[2] = edge + side * 0.005
    outside, inside = _state(position_rad=position), _state()
    assert monitor.check(outside) == [] and monitor.check(outside) == []
    assert monitor.check(inside) == []  # a reading back inside starts the count anew
    assert monitor.check(outside) == [] and monitor.check(outside) == []
    fault = _only(monitor.check(outside), POSITION_LIMIT)
    assert fault.joint == 2 and fault.value == position[2] and fault.limit == pytest.approx(edge)
    assert "thumb_ip" in fault.message and "calibrate joints" in fault.message and not fault.severe
    assert _only(monitor.check(outside), POSITION_LIMIT)  # it stays a fault
    at_tolerance = np.zeros(N)
    at_tolerance[2] = edge - side * 1e-9
    monitor.reset()
    for _ in range(READINGS + 2):
        assert monitor.check(_state(position_rad=at_tolerance)) == []


def test_overcurrent_after_consecutive_readings_over_the_tolerance(monitor: StateMonitor) -> None:
    current = np.zeros(N)
    current[2] = -CURRENT_LIMIT_MA[2] * (1 + CURRENT_TOLERANCE) - 1.0
    high = _state(current_ma=current)
    assert monitor.check(high) == [] and monitor.check(high) == []
    fault = _only(monitor.check(high), OVERCURRENT)
    assert (fault.joint, fault.joint_name, fault.value) == (2, "thumb_ip", current[2])
    assert fault.limit == pytest.approx(CURRENT_LIMIT_MA[2] * (1 + CURRENT_TOLERANCE))
    assert "231 mA, limit 200 mA" in fault.message and "Current Limit register" in fault.message
    assert not fault.severe
    monitor.reset()
    assert monitor.check(high) == [] and monitor.check(_state()) == []  # a calm reading starts the count anew
    assert monitor.check(high) == [] and monitor.check(high) == []
    assert _only(monitor.check(high), OVERCURRENT).joint == 2
    assert _only(monitor.check(high), OVERCURRENT).joint == 2  # and on every reading after, while it lasts
    at_tolerance = np.zeros(N)
    at_tolerance[2] = CURRENT_LIMIT_MA[2] * (1 + CURRENT_TOLERANCE)
    monitor.reset()
    for _ in range(READINGS + 2):
        assert monitor.check(_state(current_ma=at_tolerance)) == []


def test_overtemperature_at_the_margin_below_the_limit(monitor: StateMonitor) -> None:
    temperature = np.full(N, 30.0)
    temperature[0] = TEMPERATURE_LIMIT_C[0] - TEMPERATURE_MARGIN_C - 0.5
    assert monitor.check(_state(temperature_c=temperature)) == []
    temperature[0] = TEMPERATURE_LIMIT_C[0] - TEMPERATURE_MARGIN_C
    fault = _only(monitor.check(_state(temperature_c=temperature)), OVERTEMPERATURE)
    assert (fault.joint, fault.value, fault.limit) == (0, 65.0, 65.0)
    assert fault.severe and "65 °C, stop threshold 65 °C (5 °C below its limit)" in fault.message


def test_hardware_error_bits_are_named(monitor: StateMonitor) -> None:
    errors = np.zeros(N, dtype=np.int64)
    errors[1] = (1 << 2) | (1 << 5)  # overheating and overload
    fault = _only(monitor.check(_state(hardware_error=errors)), HARDWARE_ERROR)
    assert (fault.joint, fault.joint_name, fault.value, fault.limit) == (1, "index_pip", 36.0, 0.0)
    assert fault.severe and "overheat" in fault.message.lower() and "overload" in fault.message.lower()


@pytest.mark.parametrize("field", ["position_rad", "velocity_rad_s", "current_ma", "temperature_c"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_reading_is_a_bad_reading_of_the_hand(monitor: StateMonitor, field: str, bad: float) -> None:
    values = np.zeros(N) if field != "temperature_c" else np.full(N, 30.0)
    values[2] = bad
    fault = _only(monitor.check(_state(**{field: values})), BAD_READING)
    assert fault.joint is None and fault.severe and "not a finite number" in fault.message
    assert fault.joint_name is None and math.isnan(fault.value) and fault.limit == 0.0


def _stalling(time_s: float, joint: int = 0) -> tuple[HandState, np.ndarray]:
    current = np.zeros(N)
    current[joint] = -CURRENT_LIMIT_MA[joint]  # pushing at the limit, either sense
    target = np.zeros(N)
    target[joint] = TRACKING_RAD[joint]  # at the edge of the tracking window
    return _state(time_s, current_ma=current), target


def test_a_joint_pushing_at_its_limit_without_moving_for_a_second_is_a_stall(monitor: StateMonitor) -> None:
    for time_s in (10.0, 10.5, 10.99):
        assert monitor.check(*_stalling(time_s)) == []
    fault = _only(monitor.check(*_stalling(10.0 + STALL_TIME_S)), STALL)
    assert (fault.joint, fault.joint_name, fault.value, fault.limit) == (0, "index_mcp", -350.0, 350.0)
    assert fault.severe and "stalled for 1.0 s" in fault.message and "0.50 rad from its target" in fault.message


def test_a_stall_needs_all_three_conditions_all_the_time(monitor: StateMonitor) -> None:
    state, target = _stalling(0.0)
    monitor.check(state, target)
    moving = _state(0.5, current_ma=state.current_ma, velocity_rad_s=np.full(N, 0.2))
    assert monitor.check(moving, target) == []  # it moved: the clock restarts
    assert monitor.check(*_stalling(1.2)) == []
    weak = _state(2.3, current_ma=0.5 * state.current_ma)
    assert monitor.check(weak, target) == []  # not pushing hard
    assert monitor.check(*_stalling(2.4)) == []
    assert monitor.check(_stalling(3.5)[0], np.zeros(N)) == []  # at its target: resting, not stuck
    assert monitor.check(_stalling(3.6)[0], None) == []  # torque off: no target, no stall
    assert monitor.check(*_stalling(4.0)) == []
    assert monitor.check(*_stalling(4.9)) == []
    assert _only(monitor.check(*_stalling(5.0)), STALL).joint == 0


def test_thresholds_of_the_stall_detector() -> None:
    config = MonitorConfig(stall_current_fraction=0.9, stall_speed_rad_s=0.05, stall_error_fraction=0.8)
    monitor = StateMonitor(_limits(), NAMES, config)
    current = np.zeros(N)
    current[0] = 0.9 * CURRENT_LIMIT_MA[0]
    speed = np.zeros(N)
    speed[0] = 0.049
    target = np.zeros(N)
    target[0] = 0.8 * TRACKING_RAD[0] + 1e-9
    monitor.check(_state(0.0, current_ma=current, velocity_rad_s=speed), target)
    assert _only(monitor.check(_state(1.0, current_ma=current, velocity_rad_s=speed), target), STALL)
    # "without moving" is strictly slower than the threshold: exactly at it is moving
    for changed in ({"current_ma": current * 0.99}, {"velocity_rad_s": np.where(speed > 0, 0.05, 0.0)}):
        monitor.reset()
        fields = {"current_ma": current, "velocity_rad_s": speed, **changed}
        monitor.check(_state(0.0, **fields), target)
        assert monitor.check(_state(2.0, **fields), target) == []
    monitor.reset()
    monitor.check(_state(0.0, current_ma=current, velocity_rad_s=speed), target * 0.99)
    assert monitor.check(_state(2.0, current_ma=current, velocity_rad_s=speed), target * 0.99) == []


def test_several_faults_in_one_reading_are_all_reported(monitor: StateMonitor) -> None:
    errors = np.zeros(N, dtype=np.int64)
    errors[0] = 1 << 5
    temperature = np.array([30.0, 30.0, 59.0])
    faults = monitor.check(_state(hardware_error=errors, temperature_c=temperature))
    assert [(fault.kind, fault.joint) for fault in faults] == [(HARDWARE_ERROR, 0), (OVERTEMPERATURE, 2)]


def test_reset_forgets_the_counters(monitor: StateMonitor) -> None:
    fast = _state(velocity_rad_s=np.full(N, 10.0))
    monitor.check(fast)
    monitor.check(fast)
    monitor.reset()
    assert monitor.check(fast) == [] and monitor.check(fast) == []


def test_a_fault_record_cannot_be_changed_after_the_fact() -> None:
    fault = Fault(STALL, 1, "index_pip", 350.0, 350.0, "stalled")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fault.value = 0.0  # type: ignore[misc]  # the safe-stop record and the log hold this very object


def test_which_kinds_are_severe() -> None:
    assert {OVERTEMPERATURE, HARDWARE_ERROR, STALL, COMMS, BAD_READING} == SEVERE_KINDS
    for kind in (OVERSPEED, OVERCURRENT, LOOP_STALLED, NON_FINITE_ACTION, OPERATOR_STOP):
        assert not Fault(kind, None, None, 0.0, 0.0, "").severe
    assert Fault(STALL, 0, "a", 0.0, 0.0, "").severe


def test_a_stall_is_found_between_readings_and_measured_as_the_distance_to_the_target(
    monitor: StateMonitor,
) -> None:
    """Readings never land exactly on the stall time, and the error is target - position (not their sum)."""
    current = np.zeros(N)
    current[0] = -CURRENT_LIMIT_MA[0]
    position, target = np.zeros(N), np.zeros(N)
    position[0], target[0] = 0.3, -0.2  # 0.5 rad from the target; target + position would be 0.1
    for time_s in (0.0, 0.6):
        assert monitor.check(_state(time_s, current_ma=current, position_rad=position), target) == []
    fault = _only(monitor.check(_state(1.15, current_ma=current, position_rad=position), target), STALL)
    assert fault.joint == 0 and "0.50 rad from its target" in fault.message
    # Still stuck on the next reading: still a fault (the clock does not have to hit the limit exactly).
    assert _only(monitor.check(_state(1.2, current_ma=current, position_rad=position), target), STALL)


def test_the_bus_drivers_stall_detector_applies_the_monitors_rule() -> None:
    # One definition of a stall (handrail.robot.stall): the driver's detector, the monitor and the training
    # monitor. The driver's once used 0.2 rad for every joint while the monitor used 0.8 x the tracking window
    # (0.24 rad on the LEAP hand), so a policy trained against the monitor's rule was stopped at 0.23 rad.
    profile = load_profile()
    detector = DynamixelBus(profile, "unused").stall_detector
    config, limits = MonitorConfig(), SafetyLimits.from_profile(profile)
    np.testing.assert_allclose(detector.min_error_rad, config.stall_error_fraction * limits.max_tracking_error_rad)
    np.testing.assert_allclose(detector.current_limit_ma, limits.current_limit_ma)
    assert (detector.current_fraction, detector.max_speed_rad_s, detector.stall_time_s) == (
        config.stall_current_fraction,
        config.stall_speed_rad_s,
        config.stall_time_s,
    )
    n = limits.n_joints
    pushing = np.full(n, config.stall_current_fraction * limits.current_limit_ma[0])
    for error_rad, stalls in ((0.99 * detector.min_error_rad[0], False), (detector.min_error_rad[0], True)):
        detector.reset()
        goal = np.zeros(n)
        goal[0] = error_rad
        for time_s in (0.0, 1.0):
            stalled = detector.update(time_s, np.zeros(n), np.zeros(n), pushing, goal)
        assert (0 in stalled) is stalls, error_rad


def test_the_drivers_stall_detector_needs_the_stall_current_stays_on_and_forgets_a_limp_hand() -> None:
    profile = load_profile()
    detector = DynamixelBus(profile, "unused").stall_detector
    n, limit = len(profile.joints), detector.current_limit_ma
    goal = np.zeros(n)
    goal[3] = 1.0  # far from the goal, not moving
    for current, stalls in ((0.89 * limit, False), (0.9 * limit, True)):
        detector.reset()
        found = [detector.update(t, np.zeros(n), np.zeros(n), current, goal).tolist() for t in (0.0, 1.0, 1.5)]
        assert found == ([[], [3], [3]] if stalls else [[], [], []]), current[3]  # and on every reading after
    assert detector.update(2.0, np.zeros(n), np.zeros(n), 0.9 * limit, None).size == 0  # torque off: limp
    assert detector.update(2.5, np.zeros(n), np.zeros(n), 0.9 * limit, goal).size == 0  # the clock starts again
    for speed in (detector.max_speed_rad_s, -0.3):  # pushing but moving (not slower than 0.05 rad/s): no stall
        detector.reset()
        moving = np.full(n, speed)
        assert [detector.update(t, np.zeros(n), moving, limit, goal).size for t in (0.0, 1.0, 2.0)] == [0, 0, 0]
