"""Conformance of the virtual bus, driven by the official dynamixel_sdk client.

The SDK's own PacketHandler and Group* classes build every instruction, the bytes go through our
parser and bus, and our status packets go back through the SDK's parser: if the SDK is happy, a host
written for real XC330s is happy. A tiny in-memory object stands in for the SDK's PortHandler.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from dynamixel_sdk import (
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupBulkWrite,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
)
from dynamixel_sdk.protocol2_packet_handler import (
    ERRBIT_ALERT,
    ERRNUM_ACCESS,
    ERRNUM_DATA_LENGTH,
    ERRNUM_DATA_LIMIT,
    ERRNUM_INSTRUCTION,
)

from handrail.robot.control_table import load_control_table
from handrail.robot.dxl_protocol import (
    BROADCAST_ID,
    Instruction,
    InstructionPacket,
    PacketParser,
    StatusPacket,
    encode_instruction,
    encode_status,
)
from handrail.robot.servo_registers import ServoRegisters, baud_rate_index
from handrail.robot.virtual_bus import Reply, VirtualBus

TABLE = load_control_table()
HAND_IDS = list(range(16))  # LEAP hand: motors 0..15
BAUD_RATE_BPS = 4_000_000


def reg(name: str) -> int:
    return TABLE.register(name).address


def size(name: str) -> int:
    return TABLE.register(name).size


class LoopbackPort:
    """The slice of ``dynamixel_sdk.PortHandler`` the SDK's packet code uses, wired to a VirtualBus.

    Everything is synchronous: a write is answered at once, so "timeout" simply means "no more bytes".
    """

    def __init__(self, bus: VirtualBus) -> None:
        self.bus = bus
        self.is_open = True
        self.is_using = False
        self.baudrate = BAUD_RATE_BPS
        self._rx = bytearray()
        self.written: list[bytes] = []

    def openPort(self) -> bool:
        return True

    def closePort(self) -> None:
        self.is_open = False

    def clearPort(self) -> None:
        self._rx.clear()

    def getBaudRate(self) -> int:
        return self.baudrate

    def getBytesAvailable(self) -> int:
        return len(self._rx)

    def readPort(self, length: int) -> bytes:
        chunk = bytes(self._rx[:length])
        del self._rx[:length]
        return chunk

    def writePort(self, packet: list[int]) -> int:
        data = bytes(packet)
        self.written.append(data)
        for reply in self.bus.receive(data):
            self._rx += reply.data
        return len(data)

    def setPacketTimeout(self, packet_length: int) -> None:
        pass

    def setPacketTimeoutMillis(self, msec: float) -> None:
        pass

    def isPacketTimeout(self) -> bool:
        return not self._rx


@pytest.fixture
def bus() -> VirtualBus:
    return VirtualBus.with_motor_ids(TABLE, HAND_IDS, {"Baud Rate": baud_rate_index(BAUD_RATE_BPS)})


@pytest.fixture
def port(bus: VirtualBus) -> LoopbackPort:
    return LoopbackPort(bus)


@pytest.fixture
def sdk() -> PacketHandler:
    return PacketHandler(2.0)


def test_ping_every_motor(port: LoopbackPort, sdk: PacketHandler) -> None:
    for motor_id in HAND_IDS:
        model_number, result, error = sdk.ping(port, motor_id)
        assert (model_number, result, error) == (1240, COMM_SUCCESS, 0)


def test_ping_unknown_id_is_silent(port: LoopbackPort, sdk: PacketHandler) -> None:
    _, result, _ = sdk.ping(port, 42)
    assert result == COMM_RX_TIMEOUT


def test_broadcast_ping_finds_every_motor(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    found, result = sdk.broadcastPing(port)
    assert result == COMM_SUCCESS
    firmware = bus.servos[0].get("Firmware Version")
    assert found == {motor_id: [1240, firmware] for motor_id in HAND_IDS}


def test_broadcast_ping_answers_in_id_order(bus: VirtualBus) -> None:
    reversed_bus = VirtualBus.with_motor_ids(TABLE, [5, 3, 9])
    replies = reversed_bus.receive(encode_instruction(BROADCAST_ID, Instruction.PING))
    assert [reply.motor_id for reply in replies] == [3, 5, 9]


def test_write_and_read_back(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    result, error = sdk.write4ByteTxRx(port, 7, reg("Goal Position"), 1500)
    assert (result, error) == (COMM_SUCCESS, 0)
    assert bus.servos[7].get("Goal Position") == 1500
    value, result, error = sdk.read4ByteTxRx(port, 7, reg("Goal Position"))
    assert (value, result, error) == (1500, COMM_SUCCESS, 0)
    assert bus.servos[6].get("Goal Position") == 2048  # nobody else moved


def test_signed_present_values_reach_the_host(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    bus.servos[3].set("Present Current", -120)
    value, result, _ = sdk.read2ByteTxRx(port, 3, reg("Present Current"))
    assert result == COMM_SUCCESS
    assert value - (1 << 16) == -120  # the SDK returns raw unsigned words


def test_eeprom_write_with_torque_on_is_an_access_error(port: LoopbackPort, sdk: PacketHandler) -> None:
    assert sdk.write1ByteTxRx(port, 2, reg("Torque Enable"), 1) == (COMM_SUCCESS, 0)
    result, error = sdk.write1ByteTxRx(port, 2, reg("Operating Mode"), 5)
    assert (result, error) == (COMM_SUCCESS, ERRNUM_ACCESS)


def test_goal_beyond_limit_is_a_limit_error(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    result, error = sdk.write4ByteTxRx(port, 1, reg("Goal Position"), 5000)
    assert (result, error) == (COMM_SUCCESS, ERRNUM_DATA_LIMIT)
    assert bus.servos[1].get("Goal Position") == 2048


def test_group_sync_write_then_sync_read(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    goals = {motor_id: 1000 + 100 * motor_id for motor_id in HAND_IDS}
    writer = GroupSyncWrite(port, sdk, reg("Goal Position"), size("Goal Position"))
    for motor_id, goal in goals.items():
        assert writer.addParam(motor_id, list(goal.to_bytes(4, "little")))
    assert writer.txPacket() == COMM_SUCCESS
    assert {motor_id: bus.servos[motor_id].get("Goal Position") for motor_id in HAND_IDS} == goals

    reader = GroupSyncRead(port, sdk, reg("Goal Position"), size("Goal Position"))
    for motor_id in HAND_IDS:
        reader.addParam(motor_id)
    assert reader.txRxPacket() == COMM_SUCCESS
    assert {m: reader.getData(m, reg("Goal Position"), 4) for m in HAND_IDS} == goals


def set_present_state(bus: VirtualBus) -> dict[int, tuple[int, int, int]]:
    """Distinct current/velocity/position per motor; motor 5's velocity bytes need stuffing."""
    state = {}
    for motor_id, servo in bus.servos.items():
        current_ma, velocity, position = -50 * motor_id, 3 - motor_id, 1024 + 64 * motor_id
        if motor_id == 5:  # FF FF FD FD mid-packet: a status sent unstuffed would shift the position
            velocity = int.from_bytes(b"\xff\xff\xfd\xfd", "little", signed=True)
        servo.set("Present Current", current_ma)
        servo.set("Present Velocity", velocity)
        servo.set("Present Position", position)
        state[motor_id] = (current_ma, velocity, position)
    return state


def signed(raw: int, width_bytes: int) -> int:
    return int.from_bytes(raw.to_bytes(width_bytes, "little"), "little", signed=True)


@pytest.mark.parametrize("fast", [False, True], ids=["sync_read", "fast_sync_read"])
def test_group_sync_read_of_present_state(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus, fast: bool) -> None:
    expected = set_present_state(bus)
    start = reg("Present Current")
    length = reg("Present Position") + size("Present Position") - start  # current, velocity, position
    reader = GroupSyncRead(port, sdk, start, length)
    for motor_id in HAND_IDS:
        reader.addParam(motor_id)
    result = reader.fastSyncRead() if fast else reader.txRxPacket()
    assert result == COMM_SUCCESS
    for motor_id in HAND_IDS:
        assert reader.isAvailable(motor_id, start, length)
        got = (
            signed(reader.getData(motor_id, reg("Present Current"), 2), 2),
            signed(reader.getData(motor_id, reg("Present Velocity"), 4), 4),
            signed(reader.getData(motor_id, reg("Present Position"), 4), 4),
        )
        assert got == expected[motor_id]
    sent = port.written[-1]
    assert sent[7] == (Instruction.FAST_SYNC_READ if fast else Instruction.SYNC_READ)


def test_fast_sync_read_is_one_packet_from_the_first_listed_motor(bus: VirtualBus) -> None:
    params = reg("Present Position").to_bytes(2, "little") + (4).to_bytes(2, "little") + bytes([9, 2, 4])
    replies = bus.receive(encode_instruction(BROADCAST_ID, Instruction.FAST_SYNC_READ, params))
    assert len(replies) == 1
    packet = replies[0].data
    assert packet[4] == BROADCAST_ID and packet[7] == Instruction.STATUS
    assert [packet[8 + 1 + 8 * index] for index in range(3)] == [9, 2, 4]  # ids in the order asked


def test_sync_read_answers_in_the_order_requested(bus: VirtualBus) -> None:
    params = reg("ID").to_bytes(2, "little") + (1).to_bytes(2, "little") + bytes([9, 2, 4, 77])
    replies = bus.receive(encode_instruction(BROADCAST_ID, Instruction.SYNC_READ, params))
    assert [reply.motor_id for reply in replies] == [9, 2, 4]  # 77 does not exist: silent


def test_fast_sync_read_with_a_missing_motor_fails_cleanly(port: LoopbackPort, sdk: PacketHandler) -> None:
    reader = GroupSyncRead(port, sdk, reg("Present Position"), 4)
    for motor_id in [0, 1, 99, 2]:
        reader.addParam(motor_id)
    assert reader.fastSyncRead() != COMM_SUCCESS


def test_bulk_read_and_fast_bulk_read(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    set_present_state(bus)
    bus.servos[4].set("Present Temperature", 41)
    for fast in (False, True):
        reader = GroupBulkRead(port, sdk)
        reader.addParam(3, reg("Present Position"), 4)
        reader.addParam(4, reg("Present Temperature"), 1)
        assert (reader.fastBulkRead() if fast else reader.txRxPacket()) == COMM_SUCCESS
        assert reader.getData(3, reg("Present Position"), 4) == 1024 + 64 * 3
        assert reader.getData(4, reg("Present Temperature"), 1) == 41


def test_group_bulk_write(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    writer = GroupBulkWrite(port, sdk)
    writer.addParam(1, reg("Goal Position"), 4, list((1234).to_bytes(4, "little")))
    writer.addParam(2, reg("LED"), 1, [1])
    assert writer.txPacket() == COMM_SUCCESS
    assert bus.servos[1].get("Goal Position") == 1234
    assert bus.servos[2].get("LED") == 1


def test_reboot_clears_torque_and_keeps_the_id(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    sdk.write1ByteTxRx(port, 8, reg("Torque Enable"), 1)
    assert sdk.reboot(port, 8) == (COMM_SUCCESS, 0)
    assert not bus.servos[8].torque_enabled


def test_factory_reset_keeping_id_and_baud(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    sdk.write1ByteTxRx(port, 8, reg("Return Delay Time"), 0)
    assert sdk.factoryReset(port, 8, 0x02) == (COMM_SUCCESS, 0)
    servo = bus.servos[8]
    assert (servo.get("Return Delay Time"), servo.get("Baud Rate")) == (250, 6)


def test_reg_write_takes_effect_on_action(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    assert sdk.regWriteTxRx(port, 4, reg("Goal Position"), 4, list((3000).to_bytes(4, "little"))) == (
        COMM_SUCCESS,
        0,
    )
    assert bus.servos[4].get("Goal Position") == 2048
    assert bus.servos[4].get("Registered Instruction") == 1
    sdk.action(port, BROADCAST_ID)
    assert bus.servos[4].get("Goal Position") == 3000
    assert bus.servos[4].get("Registered Instruction") == 0


def test_action_without_reg_write_is_an_instruction_error(bus: VirtualBus) -> None:
    (reply,) = bus.receive(encode_instruction(4, Instruction.ACTION))
    assert PacketParser().feed(reply.data) == [StatusPacket(4, ERRNUM_INSTRUCTION, b"")]


def test_status_return_level_1_answers_reads_only(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    sdk.write1ByteTxRx(port, 3, reg("Status Return Level"), 1)
    result, _ = sdk.write4ByteTxRx(port, 3, reg("Goal Position"), 2100)
    assert result == COMM_RX_TIMEOUT
    assert bus.servos[3].get("Goal Position") == 2100  # applied, just not acknowledged
    assert sdk.read4ByteTxRx(port, 3, reg("Goal Position")) == (2100, COMM_SUCCESS, 0)


def test_hardware_error_sets_the_alert_bit(port: LoopbackPort, sdk: PacketHandler, bus: VirtualBus) -> None:
    bus.servos[5].set("Hardware Error Status", 0x04)  # overheating
    _, result, error = sdk.read1ByteTxRx(port, 5, reg("Hardware Error Status"))
    assert result == COMM_SUCCESS
    assert error & ERRBIT_ALERT


# -- malformed and unusual packets -------------------------------------------------------------------


def test_bad_crc_gets_no_reply(bus: VirtualBus) -> None:
    packet = bytearray(encode_instruction(1, Instruction.PING))
    packet[-2] ^= 0x01
    assert bus.receive(bytes(packet)) == []
    assert bus.receive(encode_instruction(1, Instruction.PING)) != []  # and the bus is not wedged


def test_unknown_instruction_is_an_instruction_error(port: LoopbackPort, sdk: PacketHandler) -> None:
    txpacket = [0] * 10
    txpacket[4], txpacket[5], txpacket[6], txpacket[7] = 1, 3, 0, 0x7F
    _, result, error = sdk.txRxPacket(port, txpacket)
    assert (result, error) == (COMM_SUCCESS, ERRNUM_INSTRUCTION)


def test_unknown_instruction_to_broadcast_is_silent(bus: VirtualBus) -> None:
    assert bus.receive(encode_instruction(BROADCAST_ID, 0x7F)) == []


def test_read_with_wrong_parameter_count_is_a_length_error(bus: VirtualBus) -> None:
    (reply,) = bus.receive(encode_instruction(2, Instruction.READ, b"\x84\x00\x04"))
    (status,) = PacketParser().feed(reply.data)
    assert status == StatusPacket(2, ERRNUM_DATA_LENGTH, b"")


def test_unknown_id_is_silent_for_every_instruction(bus: VirtualBus) -> None:
    for instruction in (Instruction.PING, Instruction.READ, Instruction.WRITE, Instruction.REBOOT, 0x7F):
        assert bus.receive(encode_instruction(200, instruction, b"\x40\x00\x01\x00")) == []


def test_broadcast_write_changes_everyone_and_answers_nothing(bus: VirtualBus) -> None:
    assert bus.receive(encode_instruction(BROADCAST_ID, Instruction.WRITE, b"\x41\x00\x01")) == []  # LED on
    assert all(servo.get("LED") == 1 for servo in bus.servos.values())


def test_status_packets_on_the_line_are_ignored(bus: VirtualBus) -> None:
    assert bus.receive(encode_status(1, 0, b"\x00")) == []


def test_garbage_between_instructions_is_tolerated(bus: VirtualBus) -> None:
    ping = encode_instruction(1, Instruction.PING)
    replies = bus.receive(b"\x00\xff\x13" + ping[:5]) + bus.receive(ping[5:] + b"\xff\xff" + ping)
    assert [reply.motor_id for reply in replies] == [1, 1]


def test_write_that_changes_the_id_is_answered_by_the_old_id(port: LoopbackPort, sdk: PacketHandler) -> None:
    assert sdk.write1ByteTxRx(port, 15, reg("ID"), 20) == (COMM_SUCCESS, 0)
    assert sdk.ping(port, 20)[1] == COMM_SUCCESS
    assert sdk.ping(port, 15)[1] == COMM_RX_TIMEOUT


# -- hooks --------------------------------------------------------------------------------------------


class RecordingObserver:
    def __init__(self) -> None:
        self.writes: list[tuple[int, dict[str, int]]] = []
        self.reboots: list[int] = []
        self.reads = 0

    def before_read(self, servo: ServoRegisters) -> None:
        self.reads += 1
        servo.set("Present Temperature", 33)

    def on_write(self, servo: ServoRegisters, written: Mapping[str, int]) -> None:
        self.writes.append((servo.motor_id, dict(written)))

    def on_reboot(self, servo: ServoRegisters) -> None:
        self.reboots.append(servo.motor_id)


def test_observer_hears_writes_reboots_and_refreshes_reads(port: LoopbackPort, sdk: PacketHandler) -> None:
    observer = RecordingObserver()
    port.bus.observer = observer
    sdk.write1ByteTxRx(port, 6, reg("Torque Enable"), 1)
    sdk.write4ByteTxRx(port, 6, reg("Goal Position"), 9999)  # refused: not reported
    sdk.reboot(port, 6)
    assert observer.writes == [(6, {"Torque Enable": 1})]
    assert observer.reboots == [6]
    assert sdk.read1ByteTxRx(port, 6, reg("Present Temperature")) == (33, COMM_SUCCESS, 0)


def test_reply_filter_can_drop_and_corrupt(port: LoopbackPort, sdk: PacketHandler) -> None:
    def drop_motor_3(packet: InstructionPacket, replies: list[Reply]) -> list[Reply]:
        return [reply for reply in replies if reply.motor_id != 3]

    port.bus.reply_filter = drop_motor_3
    assert sdk.ping(port, 3)[1] == COMM_RX_TIMEOUT
    assert sdk.ping(port, 4)[1] == COMM_SUCCESS

    def flip_last_byte(packet: InstructionPacket, replies: list[Reply]) -> list[Reply]:
        return [Reply(r.motor_id, r.data[:-1] + bytes([r.data[-1] ^ 0xFF]), r.delay_s) for r in replies]

    port.bus.reply_filter = flip_last_byte
    assert sdk.ping(port, 4)[1] != COMM_SUCCESS


def test_replies_carry_the_return_delay(bus: VirtualBus) -> None:
    (reply,) = bus.receive(encode_instruction(1, Instruction.PING))
    assert reply.delay_s == pytest.approx(500e-6)  # Return Delay Time 250 * 2 us
