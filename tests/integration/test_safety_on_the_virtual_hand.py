"""The safety layer on the virtual hand: violent commands stay slow, and every fault ends in a safe state."""

from __future__ import annotations

import time

import numpy as np
import pytest

from handrail.robot.bus import DynamixelBus
from handrail.robot.safe_robot import Robot, SafetyFault, SafetyState

SQUARE_WAVE_PERIOD_S = 1.0


def _square_wave(profile, elapsed_s: float) -> np.ndarray:
    """Full-range square waves on every joint: soft low limit, then soft high limit."""
    high = (elapsed_s % SQUARE_WAVE_PERIOD_S) >= SQUARE_WAVE_PERIOD_S / 2
    return np.array([joint.soft_limits_rad[1 if high else 0] for joint in profile.joints])


# The documented measured-speed tolerance (README, the safety layer), written out: loosening the product's
# MonitorConfig must not loosen these tests.
SPEED_TOLERANCE = 0.25


def _max_speed_limit(profile) -> np.ndarray:
    return np.array([joint.max_speed_rad_s for joint in profile.joints])


def test_violent_square_waves_stay_under_the_speed_limit(profile, vhand):
    tolerance = SPEED_TOLERANCE
    speeds = []
    with Robot(profile, vhand.port) as robot:
        period = robot.control_period_s
        start = next_tick = time.monotonic()
        while time.monotonic() - start < 3.0:
            report = robot.step(_square_wave(profile, time.monotonic() - start))
            speeds.append(np.abs(report.state.velocity_rad_s))
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        assert robot.state == SafetyState.RUNNING
        interventions = robot.interventions_by_kind
    peak = np.max(speeds, axis=0)
    print("peak measured speed [rad/s]", np.round(peak, 2))
    assert np.all(peak <= _max_speed_limit(profile) * (1 + tolerance))
    assert np.max(peak) > 1.0  # the hand really moved
    assert interventions.get("speed_limit", 0) > 0 and interventions.get("position_limit", 0) == 0


def test_the_same_stream_without_the_layer_overspeeds(profile, vhand):
    """Test-only path: raw bus, servo Profile Velocity cleared — proves the test above can fail."""
    tolerance = SPEED_TOLERANCE
    bus = DynamixelBus(profile, port=vhand.port)
    bus.connect()
    bus.configure()
    for motor_id in bus.ids:
        bus.write_register(motor_id, "Profile Velocity", 0)
        bus.write_register(motor_id, "Profile Acceleration", 0)
    bus.set_torque(True)
    speeds = []
    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        state = bus.read_state()
        speeds.append(np.abs(state.velocity_rad_s))
        bus.write_targets(_square_wave(profile, time.monotonic() - start))
        time.sleep(0.005)
    bus.set_torque(False)
    bus.close()
    peak = np.max(speeds, axis=0)
    print("peak speed without the layer [rad/s]", np.round(peak, 2))
    assert np.sum(peak > _max_speed_limit(profile) * (1 + tolerance)) >= 4


def _run_until_safe_stop(robot: Robot, seconds: float, target=None) -> SafetyFault:
    period = robot.control_period_s
    next_tick = time.monotonic()
    deadline = next_tick + seconds
    while time.monotonic() < deadline:
        try:
            hold = robot.last_state.position_rad if target is None else target
            robot.step(hold)
        except SafetyFault as fault:
            return fault
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    pytest.fail(f"no safe stop within {seconds} s")


FAULTS = [
    # (fault kind, value, fault kind the layer records, severe)
    ("disconnect", None, {"comms"}, True),
    ("corrupt", 1.0, {"comms"}, True),  # every packet: a lone corrupt one is asked for again
    ("lose", 2, {"comms"}, True),  # a packet and its one retry
    ("delay", 100, {"comms"}, True),
    ("overload", "middle_pip", {"hardware_error"}, True),
    # the monitor's temperature margin or the servo's own shutdown, whichever is read first
    ("overheat", "thumb_mcp", {"overtemperature", "hardware_error"}, True),
]


@pytest.mark.parametrize(("kind", "value", "recorded", "severe"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_ends_in_a_safe_state_within_two_periods(profile, vhand, kind, value, recorded, severe):
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        injected_s = time.monotonic()
        vhand.inject(kind, value)
        caught = _run_until_safe_stop(robot, 2.0)
        record = caught.record
        elapsed = record.time_s - injected_s
        print(f"{kind}: safe stop after {elapsed * 1000:.0f} ms: {record.fault.message}")
        assert elapsed <= 2 * robot.control_period_s + 0.03  # detection + reaction, plus the injection call
        assert record.fault.kind in recorded and record.fault.severe == severe
        assert record.action == "torque_off" and robot.state == SafetyState.TORQUE_OFF
        if value is not None and kind in ("overload", "overheat"):
            assert value in record.fault.message
        with pytest.raises(SafetyFault):
            robot.step(robot.last_state.position_rad)  # stays stopped
        if kind != "disconnect":
            time.sleep(0.05)
            assert not any(vhand.ground_truth()["torque_enabled"])  # torque really off
        else:
            time.sleep(0.3)  # the cable is out: the servos' own bus watchdog stopped them
            assert all(vhand.ground_truth()["watchdog_tripped"])


def test_one_lost_status_packet_is_asked_for_again_and_the_run_goes_on(profile, vhand, caplog):
    assert profile.bus.retries == 1
    with Robot(profile, vhand.port) as robot:
        robot.step(robot.last_state.position_rad)
        vhand.inject("lose", 1)
        started_s = time.monotonic()
        period = robot.control_period_s
        while time.monotonic() - started_s < 0.5:
            robot.step(robot.last_state.position_rad)  # raises SafetyFault if the loss were a comms stop
            time.sleep(period)
        assert robot.state == SafetyState.RUNNING and robot.stop_record is None
    retries = [r.getMessage() for r in caplog.records if "asking again" in r.getMessage()]
    assert retries == [f"bus {vhand.port}: the reply timed out while reading the hand state — asking again"]


def test_stuck_joint_ends_in_torque_off_naming_the_joint(profile, vhand):
    with Robot(profile, vhand.port) as robot:
        start = robot.last_state.position_rad.copy()
        vhand.inject("stuck", "ring_mcp")
        target = start.copy()
        target[9] = profile.joints[9].soft_limits_rad[1]  # ask the stuck joint to move
        caught = _run_until_safe_stop(robot, 3.0, target)
        assert caught.record.fault.kind == "stall" and caught.record.fault.joint_name == "ring_mcp"
        assert caught.record.action == "torque_off"


def test_a_stalled_loop_is_caught_by_the_watchdog(profile, vhand):
    with Robot(profile, vhand.port, loop_watchdog_periods=2) as robot:
        robot.step(robot.last_state.position_rad)
        last_command = time.monotonic()
        time.sleep(0.3)  # the control loop hangs
        record = robot.stop_record
        assert record is not None and record.fault.kind == "loop_stalled"
        assert record.time_s - last_command <= 3 * robot.control_period_s + 0.02  # watchdog limit + one check
        assert record.action == "hold" and robot.state == SafetyState.HOLDING
        with pytest.raises(SafetyFault, match="control loop stalled"):
            robot.step(robot.last_state.position_rad)


def test_nan_actions_hold_the_last_target_and_are_counted(profile, vhand):
    with Robot(profile, vhand.port) as robot:
        hold = robot.last_state.position_rad.copy()
        robot.step(hold)
        report = robot.step(np.full(16, np.nan))
        assert np.all(np.isfinite(report.target_rad))
        assert np.allclose(report.target_rad, robot.step(hold).target_rad, atol=0.2)
        assert robot.interventions_by_kind["non_finite"] == 1
        assert robot.state == SafetyState.RUNNING


def test_speed_scale_can_only_tighten(profile, vhand):
    from handrail.robot.safety_limits import SafetyConfigError

    with pytest.raises(SafetyConfigError, match="only tighten"):
        Robot(profile, vhand.port, speed_scale=1.5)
    robot = Robot(profile, vhand.port, speed_scale=0.5)
    assert np.allclose(robot.limits.max_speed_rad_s, 0.5 * _max_speed_limit(profile))


def test_jerk_limited_smoothing_in_front_of_the_filter(profile, vhand):
    tolerance = SPEED_TOLERANCE
    speeds = []
    with Robot(profile, vhand.port, max_jerk_rad_s3=400.0) as robot:
        start = next_tick = time.monotonic()
        while time.monotonic() - start < 2.0:
            report = robot.step(_square_wave(profile, time.monotonic() - start))
            speeds.append(np.abs(report.state.velocity_rad_s))
            next_tick += robot.control_period_s
            time.sleep(max(0.0, next_tick - time.monotonic()))
        assert robot.state == SafetyState.RUNNING
    assert np.all(np.max(speeds, axis=0) <= _max_speed_limit(profile) * (1 + tolerance))
