"""The official dynamixel-sdk client, used directly, talks to the virtual hand as to real servos.

Also: malformed packets get what a real X-series servo answers (an error status, or silence).
"""

from __future__ import annotations

import time

import dynamixel_sdk as sdk
import pytest
import serial

from handrail.robot.control_table import load_control_table
from handrail.robot.dxl_protocol import (
    Instruction,
    PacketParser,
    StatusError,
    StatusPacket,
    encode_instruction,
)

TABLE = load_control_table("xc330_m288_fw52")
BAUD = 4_000_000


@pytest.fixture
def sdk_port(vhand):
    port = sdk.PortHandler(vhand.port)
    assert port.openPort() and port.setBaudRate(BAUD)
    yield port
    port.closePort()


def test_official_sdk_pings_reads_and_writes(sdk_port):
    packets = sdk.PacketHandler(2.0)
    model_number, result, error = packets.ping(sdk_port, 3)
    assert (result, error, model_number) == (sdk.COMM_SUCCESS, 0, TABLE.model_number)
    found, result = packets.broadcastPing(sdk_port)
    assert result == sdk.COMM_SUCCESS and sorted(found) == list(range(16))

    value, result, error = packets.read1ByteTxRx(sdk_port, 3, TABLE.register("ID").address)
    assert (value, result, error) == (3, sdk.COMM_SUCCESS, 0)
    address = TABLE.register("Profile Velocity").address
    result, error = packets.write4ByteTxRx(sdk_port, 3, address, 77)
    assert (result, error) == (sdk.COMM_SUCCESS, 0)
    value, result, _ = packets.read4ByteTxRx(sdk_port, 3, address)
    assert value == 77


@pytest.mark.parametrize("fast", [False, True], ids=["sync-read", "fast-sync-read"])
def test_official_sdk_group_sync_read_and_write(sdk_port, fast):
    packets = sdk.PacketHandler(2.0)
    present = TABLE.register("Present Position")
    goal = TABLE.register("Goal Position")
    reader = sdk.GroupSyncRead(sdk_port, packets, present.address, present.size)
    for motor_id in range(16):
        assert reader.addParam(motor_id)
    result = reader.fastSyncRead() if fast else reader.txRxPacket()
    assert result == sdk.COMM_SUCCESS
    positions = {i: reader.getData(i, present.address, present.size) for i in range(16)}
    assert all(1024 < p < 3072 for p in positions.values()), positions  # around the 2048-tick centre

    writer = sdk.GroupSyncWrite(sdk_port, packets, goal.address, goal.size)
    for motor_id in range(16):
        writer.addParam(motor_id, (positions[motor_id] + 10).to_bytes(4, "little"))
    assert writer.txPacket() == sdk.COMM_SUCCESS
    for motor_id in (0, 7, 15):
        value, result, _ = packets.read4ByteTxRx(sdk_port, motor_id, goal.address)
        assert result == sdk.COMM_SUCCESS and value == positions[motor_id] + 10


@pytest.fixture
def raw_line(vhand):
    line = serial.Serial(vhand.port, BAUD, timeout=0)
    yield line
    line.close()


def _exchange(line: serial.Serial, packet: bytes, wait_s: float = 0.1) -> list[StatusPacket]:
    line.reset_input_buffer()
    line.write(packet)
    parser = PacketParser()
    received: list[StatusPacket] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        received += [item for item in parser.feed(line.read(4096)) if isinstance(item, StatusPacket)]
        time.sleep(0.002)
    return received


def test_malformed_packets_get_what_a_real_servo_answers(raw_line):
    ping = encode_instruction(3, Instruction.PING)
    (answer,) = _exchange(raw_line, ping)
    assert answer.packet_id == 3 and answer.error == 0  # the line works

    bad_crc = ping[:-1] + bytes([ping[-1] ^ 0xFF])
    assert _exchange(raw_line, bad_crc) == []  # a corrupted packet is dropped silently

    assert _exchange(raw_line, encode_instruction(99, Instruction.PING)) == []  # nobody has id 99

    (answer,) = _exchange(raw_line, encode_instruction(3, 0x77))
    assert answer.error == StatusError.INSTRUCTION

    read_missing_length = encode_instruction(3, Instruction.READ, (132).to_bytes(2, "little"))
    (answer,) = _exchange(raw_line, read_missing_length)
    assert answer.error == StatusError.DATA_LENGTH

    write_read_only = encode_instruction(
        3, Instruction.WRITE, TABLE.register("Present Position").address.to_bytes(2, "little") + bytes(4)
    )
    (answer,) = _exchange(raw_line, write_read_only)
    assert answer.error == StatusError.ACCESS

    garbage_then_ping = bytes([0x00, 0xFF, 0x12, 0xFF, 0xFF]) + ping
    (answer,) = _exchange(raw_line, garbage_then_ping)
    assert answer.packet_id == 3 and answer.error == 0
