"""Each fault injected into the virtual hand reaches our driver as a typed error naming motor and fault."""

from __future__ import annotations

import time

import numpy as np
import pytest

from handrail.robot.errors import BusCorruptError, BusTimeoutError, BusWatchdogTripped, HardwareFault, StallError


def _run_until_error(bus, target, seconds: float) -> Exception:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            bus.read_state()
            bus.write_targets(target)
        except Exception as error:  # the test asserts its type below
            return error
        time.sleep(0.01)
    pytest.fail(f"no error within {seconds} s")


def _hold_target(bus):
    return bus.read_state().position_rad


def test_pulled_cable_is_a_timeout_naming_the_bus(bus, vhand):
    bus.set_torque(True)
    target = _hold_target(bus)
    vhand.inject("disconnect")
    error = _run_until_error(bus, target, 2.0)
    assert isinstance(error, BusTimeoutError)
    assert "no motor answers" in str(error) and "cable disconnected" in str(error)


def test_half_the_packets_corrupted_is_a_crc_error(bus, vhand):
    target = _hold_target(bus)
    vhand.inject("corrupt", 0.5)
    error = _run_until_error(bus, target, 3.0)
    assert isinstance(error, BusCorruptError)
    assert "corrupt status packet" in str(error)
    assert "motor " in str(error) or "intermittent" in str(error)


def test_a_100_ms_delay_is_a_timeout_that_says_replies_are_late(bus, vhand):
    target = _hold_target(bus)
    vhand.inject("delay", 100)
    error = _run_until_error(bus, target, 3.0)
    assert isinstance(error, BusTimeoutError)
    assert "replies arrive late" in str(error) and "motor 0 (index_abd)" in str(error)


@pytest.mark.parametrize(
    ("kind", "joint", "motor", "bit"),
    [("overload", "index_pip", 2, "overload"), ("overheat", "ring_dip", 11, "overheating")],
)
def test_servo_shutdown_is_a_hardware_fault_naming_motor_and_bit(bus, vhand, kind, joint, motor, bit):
    bus.set_torque(True)
    target = _hold_target(bus)
    vhand.inject(kind, joint)
    error = _run_until_error(bus, target, 2.0)
    assert isinstance(error, HardwareFault)
    assert error.motor_id == motor and error.joint == joint and bit in error.error_bits
    assert f"motor {motor} ({joint})" in str(error) and bit in str(error)
    assert vhand.ground_truth()["torque_enabled"][motor] is False  # the servo shut itself down
    if kind == "overload":
        bus.reboot(motor)  # a reboot clears the latched error, as on a real servo
        assert bus.read_state().hardware_error[motor] == 0


def test_stuck_joint_is_a_stall_naming_the_motor(bus, vhand, profile):
    bus.set_torque(True)
    start = _hold_target(bus)
    vhand.inject("stuck", "index_mcp")
    target = start.copy()
    target[1] = min(start[1] + 0.6, profile.joints[1].soft_limits_rad[1])
    error = _run_until_error(bus, target, 4.0)
    assert isinstance(error, StallError)
    assert "motor 1 (index_mcp)" in str(error) and "stalled" in str(error)


def test_bus_watchdog_stops_the_servos_when_the_host_goes_silent(bus, vhand, profile):
    bus.set_torque(True)
    start = bus.read_state().position_rad
    goal = start.copy()
    for flexion in (1, 5, 9):  # the three MCP flexion joints, 1 rad away
        goal[flexion] = profile.joints[flexion].soft_limits_rad[1]
    bus.write_targets(goal)
    time.sleep(0.05)  # the host stops talking mid-motion
    time.sleep(0.35)  # bus watchdog is 100 ms
    truth = vhand.ground_truth()
    assert all(truth["watchdog_tripped"])
    first = np.array(truth["joint_positions_rad"])
    time.sleep(0.3)
    later = np.array(vhand.ground_truth()["joint_positions_rad"])
    assert np.max(np.abs(later - first)) < 0.01  # holding still
    for flexion in (1, 5, 9):
        assert goal[flexion] - later[flexion] > 0.3  # stopped well short of the goal it was given
    # A goal written now is ignored until the host clears the watchdog (configure does).
    bus.write_targets(goal)
    time.sleep(0.2)
    assert np.max(np.abs(np.array(vhand.ground_truth()["joint_positions_rad"]) - later)) < 0.01
    # ... and the host learns it from the very next state read, naming the servos, instead of sending goals
    # into the void.
    with pytest.raises(BusWatchdogTripped, match="bus watchdog fired") as caught:
        bus.read_state()
    assert set(caught.value.motor_ids) == set(bus.ids)
    bus.configure()  # clears it
    bus.read_state()


def test_a_lost_reply_to_a_register_write_is_asked_for_again_and_two_are_a_timeout(bus, vhand):
    assert bus.profile.bus.retries == 1
    vhand.inject("lose", 1)
    bus.write_register(bus.ids[3], "Profile Velocity", 40)
    assert bus.retried == 1
    assert bus.read_register(bus.ids[3], "Profile Velocity") == 40
    vhand.inject("lose", 2)
    with pytest.raises(BusTimeoutError, match=r"motor 3 \(index_dip\): no status packet .* writing Profile Velocity"):
        bus.write_register(bus.ids[3], "Profile Velocity", 50)
    assert bus.retried == 2


def test_configure_asks_a_lost_reply_again_up_to_three_times(bus, vhand):
    # Setup asks a lost reply again up to 3 times (100 ms each); a control tick asks once (20 ms).
    vhand.inject("lose", 3)
    before = bus.retried
    bus.configure()
    assert bus.retried - before == 3
    vhand.inject("lose", 2)
    with pytest.raises(BusTimeoutError, match="while reading the hand state"):
        bus.read_state()
