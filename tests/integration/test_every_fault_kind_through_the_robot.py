"""Every fault kind the safety layer knows, produced through ``Robot`` on the virtual hand.

Comms (disconnect, corrupt, delay), a servo's hardware error, the servo's own overheating shutdown, a
stuck joint and a stalled loop are in test_safety_on_the_virtual_hand.py. Here: overspeed (a servo tuned
to overshoot), a joint measured outside its soft limits, overcurrent (a current limit below what the current
sensor resolves), the monitor's own
overtemperature margin (a temperature limit just above the room's), a bad reading, a tripped bus
watchdog, and an unexpected exception inside the layer. Each asserts the state change, the record,
what the virtual hand's servos do, and the ``handrail.safety`` log entry. Bounds are the test's own.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safe_robot import UNEXPECTED_ERROR, Robot, SafetyFault, SafetyState

PROFILE_MAX_SPEED_RAD_S = 3.0  # the bundled profile's [joint_defaults], written out


def profile_variant(profile: HandProfile, folder: Path, **settings: object) -> HandProfile:
    """The bundled profile with some ``key = value`` lines changed (a servo setting, a hand-wide limit)."""
    text = Path(profile.source).read_text().replace('mjcf = "', f'mjcf = "{Path(profile.source).parent}/')
    for key, value in settings.items():
        text, count = re.subn(rf"^{key} = [^#\n]*", f"{key} = {value}", text, flags=re.MULTILINE)
        assert count == 1, key
    path = folder / "variant.toml"
    path.write_text(text)
    return load_profile(path)


def _square_wave(profile: HandProfile, elapsed_s: float) -> np.ndarray:
    high = (elapsed_s % 1.0) >= 0.5
    return np.array([joint.soft_limits_rad[1 if high else 0] for joint in profile.joints])


def _until_safe_stop(robot: Robot, seconds: float, target=None) -> SafetyFault:
    """Step at the control rate (holding, or ``target(elapsed_s)``) until a SafetyFault."""
    start = next_tick = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            robot.step(robot.last_state.position_rad if target is None else target(time.monotonic() - start))
        except SafetyFault as fault:
            return fault
        next_tick += robot.control_period_s
        time.sleep(max(0.0, next_tick - time.monotonic()))
    pytest.fail(f"no safe stop within {seconds} s")


def _safety_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "handrail.safety" and "safe stop" in record.message]


def _assert_torque_off(robot: Robot, vhand, caught: SafetyFault, kind: str) -> None:
    assert caught.record.fault.kind == kind and caught.record.action == "torque_off" and caught.record.commands_sent
    assert robot.state == SafetyState.TORQUE_OFF and robot.stop_record is caught.record
    time.sleep(0.05)
    assert not any(vhand.ground_truth()["torque_enabled"])
    with pytest.raises(SafetyFault):
        robot.step(robot.last_state.position_rad)  # stays stopped


def _assert_holding(robot: Robot, vhand, caught: SafetyFault, kind: str, *, comes_to_rest: bool = True) -> None:
    assert caught.record.fault.kind == kind and caught.record.action == "hold" and caught.record.commands_sent
    assert robot.state == SafetyState.HOLDING and not caught.record.fault.severe
    truth = vhand.ground_truth()
    assert all(truth["torque_enabled"])  # holding: torque stays on ...
    # ... at reduced current: at most a third of each joint's limit (the layer holds at 30 %; +1 mA register step)
    limits_ma = np.array([joint.current_limit_ma for joint in robot.profile.joints])
    assert (np.array(truth["goal_current_ma"]) <= limits_ma / 3 + 1.0).all(), truth["goal_current_ma"]
    if not comes_to_rest:
        return
    # ... and comes to rest near where it was stopped (a moving finger coasts a little at 30 % current).
    time.sleep(0.4)
    settled = np.array(vhand.ground_truth()["joint_positions_rad"])
    time.sleep(0.3)
    still = np.abs(np.array(vhand.ground_truth()["joint_positions_rad"]) - settled)
    assert still.max() < 0.01, still
    assert np.abs(settled - np.array(truth["joint_positions_rad"])).max() < 0.3
    with pytest.raises(SafetyFault):
        robot.step(robot.last_state.position_rad)


def test_a_servo_tuned_to_overshoot_is_an_overspeed_hold(profile, vhand, tmp_path, caplog) -> None:
    # Integral gain without damping: each reversal winds up and the finger overshoots its target.
    ringing = profile_variant(profile, tmp_path, position_p_gain=3000, position_i_gain=16000, position_d_gain=0)
    with Robot(ringing, vhand.port, speed_scale=0.5) as robot:
        caught = _until_safe_stop(robot, 6.0, lambda elapsed_s: _square_wave(ringing, elapsed_s))
        fault = caught.record.fault
        assert fault.joint is not None and fault.joint_name == ringing.joint_names[fault.joint]
        assert fault.limit == pytest.approx(PROFILE_MAX_SPEED_RAD_S * 0.5 * 1.25)
        assert abs(fault.value) > fault.limit and "for 3 readings" in fault.message
        _assert_holding(robot, vhand, caught, "overspeed", comes_to_rest=False)  # its gains make it ring
    assert not any(vhand.ground_truth()["torque_enabled"])  # close() ends the hold with torque off
    assert any(fault.message in record.message for record in _safety_log(caplog))


def test_a_joint_measured_outside_its_soft_limits_is_a_position_limit_hold(profile, vhand, tmp_path, caplog) -> None:
    """The profile's soft limits of index_mcp exclude where the finger lies (0.35 rad, the virtual hand's home):
    what a wrong zero offset looks like from the host. The filter keeps every target inside the limits, so
    only the monitor, watching the measured position, can tell."""
    text = Path(profile.source).read_text().replace('mjcf = "', f'mjcf = "{Path(profile.source).parent}/')
    block = 'name = "index_mcp"\nmjcf_joint = "if_mcp"\nmjcf_actuator = "if_mcp_act"\nmotor_id = 1\n'
    old = block + "soft_limits_rad = [-0.25, 2.10]\nhome_rad = 0.35\n"
    assert text.count(old) == 1
    (tmp_path / "narrow.toml").write_text(text.replace(old, block + "soft_limits_rad = [0.9, 1.5]\nhome_rad = 1.0\n"))
    narrow = load_profile(tmp_path / "narrow.toml")
    with Robot(narrow, vhand.port) as robot:
        caught = _until_safe_stop(robot, 3.0, lambda elapsed_s: robot.last_state.position_rad)
        fault = caught.record.fault
        assert fault.joint_name == "index_mcp" and fault.value < 0.9 - 0.2 and fault.limit == pytest.approx(0.7)
        assert "calibrate joints" in fault.message
        _assert_holding(robot, vhand, caught, "position_limit")
    assert any(fault.message in record.message for record in _safety_log(caplog))


def test_a_port_that_vanishes_is_a_stop_whose_torque_state_is_unknown_and_the_servos_watchdog_stops_them(
    profile, vhand, caplog
) -> None:
    """The USB adapter gone: no read, and no stop command, can go out. The record must not claim torque off;
    the servos' own bus watchdog (100 ms in the profile) is what stops them (goal = present position; the
    e-manual's servo keeps its torque, as the virtual one does)."""
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        assert all(vhand.ground_truth()["torque_enabled"])
        robot._bus._port.ser.close()  # the host side of the link is gone (pyserial raises on every use)
        with pytest.raises(SafetyFault, match="torque state unknown") as caught:
            robot.step(robot.last_state.position_rad)
        record = caught.value.record
        assert record.fault.kind == "comms" and record.action == "unconfirmed" and not record.commands_sent
        assert robot.state == SafetyState.STOP_UNCONFIRMED and "bus watchdog" in record.detail
        time.sleep(0.1 + 0.2)  # the watchdog's 100 ms, and the virtual hand's physics catching up
        assert all(vhand.ground_truth()["watchdog_tripped"])
        before = np.array(vhand.ground_truth()["joint_positions_rad"])
        time.sleep(0.3)
        assert np.abs(np.array(vhand.ground_truth()["joint_positions_rad"]) - before).max() < 0.01  # stopped
    assert any("torque state unknown" in record.message for record in _safety_log(caplog))


def test_a_current_limit_below_the_sensor_noise_is_an_overcurrent_hold(profile, vhand, tmp_path, caplog) -> None:
    weak = profile_variant(profile, tmp_path, current_limit_ma=3.0)
    with Robot(weak, vhand.port) as robot:
        caught = _until_safe_stop(robot, 5.0)
        fault = caught.record.fault
        assert fault.limit == pytest.approx(3.0 * 1.15) and abs(fault.value) > fault.limit
        assert "check its Current Limit register" in fault.message
        _assert_holding(robot, vhand, caught, "overcurrent", comes_to_rest=False)  # 0.9 mA holds no finger up
    assert any(fault.message in record.message for record in _safety_log(caplog))


def test_the_monitor_stops_a_warming_servo_at_its_margin_before_the_servo_does(profile, vhand, caplog) -> None:
    """A slow ramp (10 °C/s) on one servo: the monitor stops the hand 5 °C below the limit, while the servo
    reads no error yet. (A jump past the limit, with the servo's own bit already set, could not show the
    margin: a test of it passed with any margin.)"""
    limit_c = profile.joint("thumb_mcp").temperature_limit_c
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        vhand.inject("heat", "thumb_mcp")
        caught = _until_safe_stop(robot, 8.0)
        fault = caught.record.fault
        assert fault.kind == "overtemperature" and fault.joint_name == "thumb_mcp"
        assert fault.limit == limit_c - 5.0 and limit_c - 5.0 <= fault.value < limit_c - 3.0
        assert not any(vhand.ground_truth()["hardware_error"])  # the servo never had to shut down
        _assert_torque_off(robot, vhand, caught, "overtemperature")
    assert any("overtemperature" in record.message or "°C" in record.message for record in _safety_log(caplog))


def test_a_servo_that_shuts_down_is_a_hardware_error_named_by_the_monitor(profile, vhand, caplog) -> None:
    """Past its limit the servo sets its overheating bit and drops torque; the monitor names the bits."""
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        vhand.inject("overload", "index_pip")
        caught = _until_safe_stop(robot, 2.0)
        fault = caught.record.fault
        assert fault.kind == "hardware_error" and fault.joint_name == "index_pip" and "overload" in fault.message
        _assert_torque_off(robot, vhand, caught, "hardware_error")


def test_a_non_finite_reading_is_a_torque_off(profile, vhand, caplog) -> None:
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        real_read = robot._bus.read_state

        def read_with_a_nan(*args, **kwargs):  # a driver or sensor bug: the wire itself carries integers
            state = real_read(*args, **kwargs)
            current = state.current_ma.copy()
            current[4] = np.nan
            return dataclasses.replace(state, current_ma=current)

        robot._bus.read_state = read_with_a_nan
        caught = _until_safe_stop(robot, 0.5)
        assert caught.record.fault.joint is None and "not a finite number" in caught.record.fault.message
        _assert_torque_off(robot, vhand, caught, "bad_reading")
    assert _safety_log(caplog)


def test_a_tripped_bus_watchdog_is_a_comms_torque_off_naming_it(profile, vhand, caplog) -> None:
    # The host falls silent longer than the servos' Bus Watchdog (100 ms) but shorter than the loop watchdog.
    with Robot(profile, vhand.port, loop_watchdog_periods=15) as robot:
        robot.step(robot.last_state.position_rad)
        time.sleep(0.3)
        assert robot.state == SafetyState.RUNNING
        caught = _until_safe_stop(robot, 0.5)
        assert "watchdog" in caught.record.fault.message.lower()
        assert any(vhand.ground_truth()["watchdog_tripped"])
        _assert_torque_off(robot, vhand, caught, "comms")
    assert _safety_log(caplog)


@pytest.mark.parametrize("where", ["monitor", "filter", "driver"])
def test_an_unexpected_exception_under_step_is_a_torque_off_with_the_exception(
    profile, vhand, caplog, where: str
) -> None:
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)

        def broken(*args, **kwargs):
            raise TypeError(f"a bug in the {where}")

        if where == "monitor":
            robot._monitor.check = broken
        elif where == "filter":
            robot._filter = broken
        else:
            robot._bus.write_goal_current = broken  # only the hold path uses it; step's write must not
            robot._bus.write_targets = broken
        with pytest.raises(SafetyFault) as caught:
            robot.step(robot.last_state.position_rad)
        assert isinstance(caught.value.__cause__, TypeError)
        assert f"a bug in the {where}" in caught.value.record.fault.message
        assert "TypeError" in caught.value.record.fault.message
        _assert_torque_off(robot, vhand, caught.value, UNEXPECTED_ERROR)
    entries = _safety_log(caplog)
    assert entries and entries[0].exc_info is not None and entries[0].levelno == logging.ERROR


def test_abort_from_the_application_is_a_torque_off_once(profile, vhand) -> None:
    with Robot(profile, vhand.port) as robot:
        record = robot.abort(RuntimeError("onnxruntime failed"), "the control loop")
        assert record.fault.kind == UNEXPECTED_ERROR and record.action == "torque_off"
        assert "RuntimeError in the control loop: onnxruntime failed" in record.fault.message
        assert robot.state == SafetyState.TORQUE_OFF
        time.sleep(0.05)
        assert not any(vhand.ground_truth()["torque_enabled"])
        assert robot.abort(ValueError("later"), "elsewhere") is record  # the first record stays
