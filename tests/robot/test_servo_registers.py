"""One virtual servo's register memory: defaults, typed access and the X-series write rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.robot.control_table import load_control_table
from handrail.robot.dxl_protocol import StatusError
from handrail.robot.errors import RobotError
from handrail.robot.servo_registers import (
    READ_ONLY_REGISTERS,
    RegisterAccessError,
    ServoRegisters,
    baud_rate_index,
)

TABLE = load_control_table()


def servo(**overrides: int) -> ServoRegisters:
    return ServoRegisters(TABLE, {name.replace("_", " "): value for name, value in overrides.items()})


def address(name: str) -> int:
    return TABLE.register(name).address


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


def test_factory_defaults_from_the_e_manual() -> None:
    registers = servo()
    assert registers.get("Model Number") == 1240
    assert registers.motor_id == 1
    assert registers.get("Baud Rate") == 1
    assert registers.get("Return Delay Time") == 250
    assert registers.get("Operating Mode") == 3
    assert registers.get("Current Limit") == 2352
    assert registers.get("Temperature Limit") == 70
    assert registers.get("Status Return Level") == 2
    assert not registers.torque_enabled


def test_power_on_goals_follow_limits_and_position() -> None:
    registers = servo()
    assert registers.get("Goal Current") == registers.get("Current Limit")
    assert registers.get("Goal PWM") == registers.get("PWM Limit")
    assert registers.get("Goal Position") == registers.get("Present Position") == 2048


def test_overrides_configure_a_hand_servo() -> None:
    registers = ServoRegisters(TABLE, {"ID": 7, "Baud Rate": baud_rate_index(4_000_000)})
    assert registers.motor_id == 7
    assert registers.get("Baud Rate") == 6


def test_unknown_baud_rate_lists_valid_ones() -> None:
    with pytest.raises(RobotError, match="valid rates"):
        baud_rate_index(4_500_000)


@given(st.integers(-(2**31), 2**31 - 1))
def test_signed_registers_round_trip(value: int) -> None:
    registers = servo()
    registers.set("Present Velocity", value)
    assert registers.get("Present Velocity") == value
    raw = registers.host_read(address("Present Velocity"), 4)
    assert int.from_bytes(raw, "little", signed=True) == value


def test_set_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(RobotError, match="cannot hold 300"):
        servo().set("Present Temperature", 300)


def test_eeprom_is_locked_while_torque_is_on() -> None:
    registers = servo()
    registers.host_write(address("Torque Enable"), b"\x01")
    with pytest.raises(RegisterAccessError) as caught:
        registers.host_write(address("Operating Mode"), b"\x05")
    assert caught.value.status_error == StatusError.ACCESS
    registers.host_write(address("Torque Enable"), b"\x00")
    registers.host_write(address("Operating Mode"), b"\x05")
    assert registers.get("Operating Mode") == 5


@pytest.mark.parametrize("name", sorted(READ_ONLY_REGISTERS))
def test_read_only_registers_refuse_writes(name: str) -> None:
    register = TABLE.register(name)
    with pytest.raises(RegisterAccessError) as caught:
        servo().host_write(register.address, bytes(register.size))
    assert caught.value.status_error == StatusError.ACCESS


def test_partial_register_write_is_a_length_error() -> None:
    with pytest.raises(RegisterAccessError) as caught:
        servo().host_write(address("Goal Position"), b"\x00\x08")
    assert caught.value.status_error == StatusError.DATA_LENGTH


def test_write_to_an_undefined_address_is_an_access_error() -> None:
    with pytest.raises(RegisterAccessError) as caught:
        servo().host_write(14, b"\x00")
    assert caught.value.status_error == StatusError.ACCESS


def test_contiguous_multi_register_write() -> None:
    registers = servo()
    data = (100).to_bytes(2, "little") + (200).to_bytes(2, "little")  # Position D Gain, Position I Gain
    assert registers.host_write(address("Position D Gain"), data) == {
        "Position D Gain": 100,
        "Position I Gain": 200,
    }
    assert registers.get("Position I Gain") == 200


@pytest.mark.parametrize(
    ("name", "raw"),
    [("Operating Mode", b"\x02"), ("Baud Rate", b"\x07"), ("ID", b"\xfd"), ("Torque Enable", b"\x02")],
)
def test_values_outside_the_e_manual_range_are_range_errors(name: str, raw: bytes) -> None:
    registers = servo()
    before = registers.snapshot()
    with pytest.raises(RegisterAccessError) as caught:
        registers.host_write(address(name), raw)
    assert caught.value.status_error == StatusError.DATA_RANGE
    assert registers.snapshot() == before


def test_goal_position_beyond_the_position_limits_is_a_limit_error() -> None:
    registers = servo()
    registers.host_write(address("Max Position Limit"), u32(3000))
    with pytest.raises(RegisterAccessError) as caught:
        registers.host_write(address("Goal Position"), u32(3001))
    assert caught.value.status_error == StatusError.DATA_LIMIT
    registers.host_write(address("Goal Position"), u32(3000))


def test_goal_current_beyond_the_current_limit_is_a_limit_error() -> None:
    registers = servo()
    with pytest.raises(RegisterAccessError) as caught:
        registers.host_write(address("Goal Current"), (-2353).to_bytes(2, "little", signed=True))
    assert caught.value.status_error == StatusError.DATA_LIMIT


def test_switching_operating_mode_resets_profile_and_goals() -> None:
    registers = servo()
    registers.host_write(address("Profile Velocity"), u32(100))
    registers.host_write(address("Goal Current"), (300).to_bytes(2, "little"))
    registers.host_write(address("Operating Mode"), b"\x05")
    assert registers.get("Profile Velocity") == 0
    assert registers.get("Goal Current") == registers.get("Current Limit")


def test_torque_stays_off_after_a_shutdown_until_reboot() -> None:
    registers = servo()
    registers.set("Hardware Error Status", 0x20)  # overload
    with pytest.raises(RegisterAccessError) as caught:
        registers.host_write(address("Torque Enable"), b"\x01")
    assert caught.value.status_error == StatusError.RESULT_FAIL
    registers.reboot()
    registers.host_write(address("Torque Enable"), b"\x01")
    assert registers.torque_enabled


def test_reboot_keeps_eeprom_and_position_and_clears_ram() -> None:
    registers = servo()
    registers.host_write(address("ID"), b"\x09")
    registers.host_write(address("Torque Enable"), b"\x01")
    registers.set("Present Position", 1000)
    registers.reboot()
    assert registers.motor_id == 9
    assert not registers.torque_enabled
    assert registers.get("Goal Position") == registers.get("Present Position") == 1000


def test_factory_reset_keeps_only_what_it_is_told() -> None:
    registers = ServoRegisters(TABLE, {"ID": 7, "Baud Rate": 6, "Return Delay Time": 0})
    registers.factory_reset(keep=("ID", "Baud Rate"))
    assert (registers.motor_id, registers.get("Baud Rate"), registers.get("Return Delay Time")) == (7, 6, 250)
    registers.factory_reset()
    assert (registers.motor_id, registers.get("Baud Rate")) == (1, 1)


def test_reads_past_the_table_are_access_errors() -> None:
    with pytest.raises(RegisterAccessError) as caught:
        servo().host_read(TABLE.memory_size_bytes - 1, 2)
    assert caught.value.status_error == StatusError.ACCESS


def test_other_models_are_refused_until_their_defaults_exist() -> None:
    with pytest.raises(RobotError, match="XC330-M288 only"):
        ServoRegisters(load_control_table("xl330_m288"))


def test_indirect_data_reads_the_registers_its_addresses_point_at() -> None:
    from handrail.robot.control_table import load_control_table as load

    table = load("xc330_m288_fw52")
    servo = ServoRegisters(table)
    targets = [table.register("Present Temperature").address, *range(132, 136)]  # temperature, position
    for slot, target in enumerate(targets, start=1):
        servo.host_write(table.register(f"Indirect Address {slot}").address, target.to_bytes(2, "little"))
    servo.set("Present Temperature", 41)
    servo.set("Present Position", 3000)
    block = servo.host_read(table.register("Indirect Data 1").address, len(targets))
    assert block[0] == 41
    assert int.from_bytes(block[1:5], "little") == 3000
