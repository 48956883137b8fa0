"""The virtual XC330 firmware (robot/virtual_servo.py): position control, limits, thermal shutdown, readings."""

from __future__ import annotations

import numpy as np
import pytest

from handrail.robot.control_table import load_control_table
from handrail.robot.motors import XC330_M288
from handrail.robot.virtual_servo import OVERHEATING_BIT, OVERLOAD_BIT, ServoBank, ServoCommands

TABLE = load_control_table(XC330_M288.control_table)
CENTER_TICKS = TABLE.type_info["value_of_zero_radian_position"]
TICKS_PER_REV = TABLE.type_info["value_of_max_radian_position"] + 1
VELOCITY_RAD_S_PER_LSB = TABLE.unit_info["Present Velocity"].value
DT_S = 0.001
# Four servos: both directions, each asked to move +500 and -500 ticks.
DIRECTIONS = np.array([1.0, -1.0, 1.0, -1.0])
GOAL_OFFSETS_TICKS = np.array([500.0, 500.0, -500.0, -500.0])


def make_bank(
    n: int = 4, *, direction: np.ndarray | None = None, gear_ratio: float = 1.0, ambient_c: float = 25.0
) -> ServoBank:
    return ServoBank(
        facts=XC330_M288,
        direction=DIRECTIONS[:n].copy() if direction is None else direction,
        gear_ratio=np.full(n, gear_ratio),
        encoder_offset_rad=np.zeros(n),
        torque_constant_scale=np.ones(n),
        backlash_rad=np.zeros(n),
        position_noise_ticks=0.0,
        ambient_temperature_c=ambient_c,
        center_ticks=CENTER_TICKS,
        ticks_per_rev=TICKS_PER_REV,
        velocity_rad_s_per_lsb=VELOCITY_RAD_S_PER_LSB,
        profile_acceleration_rad_s2_per_lsb=XC330_M288.profile_acceleration_rad_s2_per_lsb,
        rng=np.random.default_rng(0),
    )


def commands_towards_goal(bank: ServoBank, q_rad: np.ndarray, offsets_ticks: np.ndarray) -> ServoCommands:
    n = q_rad.shape[0]
    commands = ServoCommands.idle(n, bank.encoder_ticks(q_rad))
    commands.torque_enabled[:] = True
    commands.goal_position_ticks = bank.encoder_ticks(q_rad) + offsets_ticks
    return commands


def goal_joint_rad(bank: ServoBank, goal_ticks: np.ndarray) -> np.ndarray:
    """Invert the encoder map: the joint angle at which the servo would read ``goal_ticks``."""
    return (goal_ticks - CENTER_TICKS) / bank.ticks_per_rad / (bank.direction * bank.gear_ratio)


def test_the_xc330_control_table_numbers() -> None:
    assert (CENTER_TICKS, TICKS_PER_REV) == (2048, 4096)
    assert pytest.approx(0.0239691227) == VELOCITY_RAD_S_PER_LSB


@pytest.mark.parametrize("gear_ratio", [1.0, 2.5])
def test_torque_points_towards_the_goal_for_either_direction(gear_ratio: float) -> None:
    bank = make_bank(gear_ratio=gear_ratio)
    q_rad = np.array([0.1, -0.2, 0.3, 0.0])
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    towards_goal = np.sign(goal_joint_rad(bank, commands.goal_position_ticks) - q_rad)
    np.testing.assert_array_equal(towards_goal, [1, -1, -1, 1])  # direction -1 flips the joint's sense
    torque_nm = bank.step(commands, q_rad, DT_S)
    np.testing.assert_array_equal(np.sign(torque_nm), towards_goal)


@pytest.mark.parametrize(
    ("goal_current_raw", "current_limit_raw", "limit_ma"),
    [(1750.0, 100.0, 100.0), (60.0, 1750.0, 60.0), (-60.0, 1750.0, 60.0)],
    ids=["current-limit", "goal-current", "negative-goal-current"],
)
def test_current_is_limited_by_goal_current_and_current_limit(
    goal_current_raw: float, current_limit_raw: float, limit_ma: float
) -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.goal_current_raw[:] = goal_current_raw
    commands.current_limit_raw[:] = current_limit_raw
    for _ in range(50):
        torque_nm = bank.step(commands, q_rad, DT_S)
        assert np.all(np.abs(bank.current_ma) <= limit_ma + 1e-9)
    # 500 ticks of error at P=800 asks for ~3 A: the limit is what comes out.
    np.testing.assert_allclose(np.abs(bank.current_ma), limit_ma)
    np.testing.assert_allclose(np.abs(torque_nm), XC330_M288.torque_constant_nm_per_a * limit_ma / 1000.0)


def test_gear_ratio_multiplies_the_joint_torque() -> None:
    torques = []
    for gear_ratio in (1.0, 3.0):
        bank = make_bank(gear_ratio=gear_ratio)
        commands = commands_towards_goal(bank, np.zeros(4), GOAL_OFFSETS_TICKS)
        commands.current_limit_raw[:] = 100.0
        torques.append(bank.step(commands, np.zeros(4), DT_S))
    np.testing.assert_allclose(torques[1], 3.0 * torques[0])


def test_profile_velocity_limits_the_set_point_speed() -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.profile_velocity_raw[:] = 10.0
    max_speed_ticks_s = 10.0 * VELOCITY_RAD_S_PER_LSB * bank.ticks_per_rad  # ~156 ticks/s
    start_ticks = bank.encoder_ticks(q_rad)
    steps = 100
    for _ in range(steps):
        bank.step(commands, q_rad, DT_S)
        assert np.all(np.abs(bank.setpoint_velocity_ticks_s) <= max_speed_ticks_s * (1 + 1e-9))
    assert bank.setpoint_ticks is not None
    travelled_ticks = bank.setpoint_ticks - start_ticks
    np.testing.assert_allclose(travelled_ticks, np.sign(GOAL_OFFSETS_TICKS) * max_speed_ticks_s * steps * DT_S)
    trajectory = bank.readings(q_rad, np.zeros(4)).trajectory_ticks
    np.testing.assert_array_equal(trajectory, np.rint(bank.setpoint_ticks))


def test_without_a_profile_velocity_the_set_point_jumps_to_the_goal() -> None:
    # The contrast for the test above: profile velocity 0 means "unlimited" on a Dynamixel.
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    bank.step(commands, q_rad, DT_S)
    np.testing.assert_allclose(bank.setpoint_ticks, commands.goal_position_ticks)


def test_profile_acceleration_ramps_the_set_point_speed() -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.profile_acceleration_raw[:] = 5.0
    max_accel_ticks_s2 = 5.0 * XC330_M288.profile_acceleration_rad_s2_per_lsb * bank.ticks_per_rad
    for step in range(1, 11):
        bank.step(commands, q_rad, DT_S)
        np.testing.assert_allclose(np.abs(bank.setpoint_velocity_ticks_s), max_accel_ticks_s2 * DT_S * step)


def test_torque_disabled_gives_zero_torque() -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.torque_enabled[:] = False
    for _ in range(10):
        np.testing.assert_array_equal(bank.step(commands, q_rad, DT_S), np.zeros(4))
    np.testing.assert_array_equal(bank.current_ma, np.zeros(4))
    # A passive servo's set-point follows the shaft, so enabling torque later does not jump.
    np.testing.assert_allclose(bank.setpoint_ticks, bank.encoder_ticks(q_rad))


def test_only_the_disabled_servo_is_limp() -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.torque_enabled[:] = [True, False, True, True]
    torque_nm = bank.step(commands, q_rad, DT_S)
    assert torque_nm[1] == 0.0
    assert np.all(torque_nm[[0, 2, 3]] != 0.0)


def test_temperature_rises_under_sustained_current() -> None:
    bank = make_bank(ambient_c=25.0)
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    commands.current_limit_raw[:] = 1000.0
    temperatures = [bank.temperature_c.copy()]
    for _ in range(5):
        for _ in range(200):
            bank.step(commands, q_rad, 0.01)
        temperatures.append(bank.temperature_c.copy())
    rises = np.diff(np.array(temperatures), axis=0)
    assert np.all(rises > 0)
    # I^2 R = 2.8 W into 8 J/K: about 0.35 K/s at first, less as cooling grows.
    assert np.all(temperatures[-1] - 25.0 > 2.0)
    assert np.all(temperatures[-1] - 25.0 < 0.35 * 10.0)
    assert bank.hardware_error.tolist() == [0, 0, 0, 0]


def test_an_idle_servo_cools_towards_ambient() -> None:
    bank = make_bank(ambient_c=25.0)
    bank.temperature_c[:] = 50.0
    commands = ServoCommands.idle(4, bank.encoder_ticks(np.zeros(4)))
    for _ in range(100):
        bank.step(commands, np.zeros(4), 0.1)
    assert np.all(bank.temperature_c < 50.0)
    assert np.all(bank.temperature_c > 25.0)


def test_over_limit_temperature_sets_the_overheating_bit_and_drops_current() -> None:
    bank = make_bank()
    q_rad = np.zeros(4)
    commands = commands_towards_goal(bank, q_rad, GOAL_OFFSETS_TICKS)
    assert np.all(bank.step(commands, q_rad, DT_S) != 0.0)
    bank.temperature_c[[0, 2]] = commands.temperature_limit_c[[0, 2]] + 1.0
    torque_nm = bank.step(commands, q_rad, DT_S)
    assert bank.hardware_error.tolist() == [OVERHEATING_BIT, 0, OVERHEATING_BIT, 0]
    assert OVERHEATING_BIT == 1 << 2
    np.testing.assert_array_equal(bank.current_ma[[0, 2]], [0.0, 0.0])
    np.testing.assert_array_equal(torque_nm[[0, 2]], [0.0, 0.0])
    assert np.all(torque_nm[[1, 3]] != 0.0)
    # The shutdown latches: cooling down does not bring torque back (only a reboot does).
    bank.temperature_c[:] = 25.0
    torque_nm = bank.step(commands, q_rad, DT_S)
    np.testing.assert_array_equal(torque_nm[[0, 2]], [0.0, 0.0])
    assert bank.readings(q_rad, np.zeros(4)).hardware_error.tolist() == [OVERHEATING_BIT, 0, OVERHEATING_BIT, 0]


def test_sustained_heating_reaches_the_temperature_limit_and_shuts_down() -> None:
    bank = make_bank(n=1, ambient_c=25.0)
    q_rad = np.zeros(1)
    commands = commands_towards_goal(bank, q_rad, np.array([500.0]))
    commands.current_limit_raw[:] = 1500.0  # below the overload threshold (95 % of 1.8 A stall)
    commands.temperature_limit_c[:] = 30.0
    for _ in range(2000):
        torque_nm = bank.step(commands, q_rad, 0.01)
        if bank.hardware_error[0]:
            break
    assert bank.hardware_error[0] == OVERHEATING_BIT
    assert bank.temperature_c[0] > 30.0
    assert torque_nm[0] == 0.0


def test_sustained_demand_near_stall_current_trips_overload_after_a_second() -> None:
    bank = make_bank(n=1)
    q_rad = np.zeros(1)
    commands = commands_towards_goal(bank, q_rad, np.array([500.0]))
    commands.current_limit_raw[:] = 1750.0
    commands.temperature_limit_c[:] = 200.0
    for _ in range(90):
        bank.step(commands, q_rad, 0.01)
    assert bank.hardware_error[0] == 0
    for _ in range(20):
        torque_nm = bank.step(commands, q_rad, 0.01)
    assert bank.hardware_error[0] == OVERLOAD_BIT
    assert torque_nm[0] == 0.0


def test_readings_quantize_position_to_integer_ticks() -> None:
    bank = make_bank(n=2, direction=np.array([1.0, -1.0]))
    tick_rad = 1.0 / bank.ticks_per_rad
    q_rad = np.array([10.3 * tick_rad, 10.7 * tick_rad])
    readings = bank.readings(q_rad, np.zeros(2))
    assert readings.position_ticks.dtype.kind == "i"
    np.testing.assert_array_equal(readings.position_ticks, [CENTER_TICKS + 10, CENTER_TICKS - 11])
    np.testing.assert_array_equal(readings.velocity_raw, [0, 0])
    assert not readings.moving.any()


def test_readings_report_velocity_in_the_motors_sense_truncated_to_lsb() -> None:
    bank = make_bank(n=2, direction=np.array([1.0, -1.0]))
    qd_rad_s = np.full(2, 2.5 * VELOCITY_RAD_S_PER_LSB)
    readings = bank.readings(np.zeros(2), qd_rad_s)
    np.testing.assert_array_equal(readings.velocity_raw, [2, -2])
    assert readings.moving.all()


def test_position_noise_is_seeded_and_bounded() -> None:
    def noisy_positions(seed: int) -> np.ndarray:
        bank = make_bank(n=1)
        bank.position_noise_ticks = 1.0
        bank.rng = np.random.default_rng(seed)
        return np.array([bank.readings(np.zeros(1), np.zeros(1)).position_ticks[0] for _ in range(500)])

    first = noisy_positions(1)
    np.testing.assert_array_equal(first, noisy_positions(1))
    assert len(set(first.tolist())) > 1
    assert abs(first.mean() - CENTER_TICKS) < 0.3
    assert np.all(np.abs(first - CENTER_TICKS) <= 6)
