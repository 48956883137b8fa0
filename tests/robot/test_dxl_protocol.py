"""Protocol 2.0 codec: CRC, byte stuffing, packet round trips and the incremental parser."""

from __future__ import annotations

import itertools

import pytest
from dynamixel_sdk import robotis_def
from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler
from hypothesis import given
from hypothesis import strategies as st

from handrail.robot.dxl_protocol import (
    BROADCAST_ID,
    HEADER,
    BadLength,
    CrcMismatch,
    FastReadBlock,
    GarbageSkipped,
    Instruction,
    InstructionPacket,
    PacketParser,
    StatusError,
    StatusPacket,
    crc16,
    encode_fast_read_status,
    encode_instruction,
    encode_status,
    stuff,
    unstuff,
)
from handrail.robot.errors import BusError

SDK = Protocol2PacketHandler()

# Bytes biased toward the header pattern so stuffing is exercised often.
header_heavy_bytes = st.lists(st.one_of(st.sampled_from([0xFF, 0xFD, 0x00]), st.integers(0, 255)), max_size=80).map(
    bytes
)
motor_ids = st.integers(0, BROADCAST_ID)


def test_instruction_numbers_match_the_protocol_and_the_sdk() -> None:
    expected = {
        "PING": 0x01,
        "READ": 0x02,
        "WRITE": 0x03,
        "REG_WRITE": 0x04,
        "ACTION": 0x05,
        "FACTORY_RESET": 0x06,
        "REBOOT": 0x08,
        "CLEAR": 0x10,
        "STATUS": 0x55,
        "SYNC_READ": 0x82,
        "SYNC_WRITE": 0x83,
        "FAST_SYNC_READ": 0x8A,
        "BULK_READ": 0x92,
        "BULK_WRITE": 0x93,
        "FAST_BULK_READ": 0x9A,
    }
    assert {member.name: member.value for member in Instruction} == expected
    for name, value in expected.items():
        assert getattr(robotis_def, f"INST_{name}") == value


def test_status_error_numbers() -> None:
    assert [int(error) for error in StatusError] == [0, 1, 2, 3, 4, 5, 6, 7]


@given(st.binary(max_size=200))
def test_crc_matches_the_sdk(data: bytes) -> None:
    assert crc16(data) == SDK.updateCRC(0, data, len(data))


@given(st.binary(max_size=50), st.binary(max_size=50))
def test_crc_can_be_continued(first: bytes, second: bytes) -> None:
    assert crc16(second, crc16(first)) == crc16(first + second)


@given(header_heavy_bytes)
def test_unstuff_undoes_stuff(body: bytes) -> None:
    assert unstuff(stuff(body)) == body


@given(header_heavy_bytes)
def test_stuffed_body_never_contains_a_header(body: bytes) -> None:
    stuffed = stuff(body)
    for index in range(len(stuffed) - 3):
        if stuffed[index : index + 3] == HEADER:
            assert stuffed[index + 3] == 0xFD


def test_stuffing_example_from_the_e_manual() -> None:
    assert stuff(b"\x01\xff\xff\xfd\x02") == b"\x01\xff\xff\xfd\xfd\x02"
    assert unstuff(b"\x01\xff\xff\xfd\xfd\x02") == b"\x01\xff\xff\xfd\x02"


@given(motor_ids, st.integers(0, 255).filter(lambda inst: inst != 0x55), header_heavy_bytes)
def test_encoded_instruction_matches_the_sdk_tx_path(motor_id: int, instruction: int, params: bytes) -> None:
    # What the SDK's txPacket would put on the wire: stuffing via addStuffing, then header and CRC.
    packet = [0xFF, 0xFF, 0xFD, 0x00, motor_id, 0, 0, instruction, *params, 0, 0]
    length = len(params) + 3
    packet[5], packet[6] = length & 0xFF, length >> 8
    packet = SDK.addStuffing(packet)
    total = packet[5] + (packet[6] << 8) + 7
    crc = SDK.updateCRC(0, packet, total - 2)
    packet[total - 2], packet[total - 1] = crc & 0xFF, crc >> 8
    assert encode_instruction(motor_id, instruction, params) == bytes(packet[:total])


@given(motor_ids, st.integers(0, 255).filter(lambda inst: inst != 0x55), header_heavy_bytes)
def test_instruction_round_trip(motor_id: int, instruction: int, params: bytes) -> None:
    parser = PacketParser()
    assert parser.feed(encode_instruction(motor_id, instruction, params)) == [
        InstructionPacket(motor_id, instruction, params)
    ]
    assert parser.pending_byte_count == 0


@given(motor_ids, st.integers(0, 0xFF), header_heavy_bytes)
def test_status_round_trip(motor_id: int, error: int, params: bytes) -> None:
    assert PacketParser().feed(encode_status(motor_id, error, params)) == [StatusPacket(motor_id, error, params)]


@given(
    st.lists(st.tuples(motor_ids, st.integers(0, 255), header_heavy_bytes), min_size=1, max_size=5),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_split_feeding_at_any_boundary_gives_the_same_packets(
    packets: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_instruction(mid, inst if inst != 0x55 else 0x01, p) for mid, inst, p in packets)
    expected = PacketParser().feed(wire)
    parser = PacketParser()
    got = []
    boundaries = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(boundaries):
        got += parser.feed(wire[start:end])
    assert got == expected
    assert len(expected) == len(packets)


@given(st.binary(max_size=60), motor_ids, header_heavy_bytes)
def test_garbage_before_a_packet_is_skipped(garbage: bytes, motor_id: int, params: bytes) -> None:
    packet = encode_instruction(motor_id, Instruction.WRITE, params)
    results = PacketParser().feed(garbage + packet)
    packets = [item for item in results if isinstance(item, InstructionPacket)]
    # Garbage can itself hold a valid-looking header; the real packet must still come out last.
    assert packets[-1] == InstructionPacket(motor_id, Instruction.WRITE, params)


def test_garbage_is_reported_with_its_size() -> None:
    packet = encode_instruction(3, Instruction.PING)
    assert PacketParser().feed(b"\x12\x34\xff\x00" + packet) == [
        GarbageSkipped(4),
        InstructionPacket(3, Instruction.PING, b""),
    ]


def test_partial_header_is_kept_until_the_rest_arrives() -> None:
    packet = encode_instruction(3, Instruction.PING)
    parser = PacketParser()
    assert parser.feed(b"\x00" + packet[:2]) == [GarbageSkipped(1)]
    assert parser.pending_byte_count == 2
    assert parser.feed(packet[2:]) == [InstructionPacket(3, Instruction.PING, b"")]


def test_bad_crc_is_reported_and_the_next_packet_still_parses() -> None:
    corrupted = bytearray(encode_instruction(1, Instruction.WRITE, b"\x74\x00\x01\x02\x03\x04"))
    corrupted[-1] ^= 0xFF
    good = encode_instruction(2, Instruction.PING)
    results = PacketParser().feed(bytes(corrupted) + good)
    assert isinstance(results[0], CrcMismatch)
    assert results[0].packet_id == 1
    assert results[-1] == InstructionPacket(2, Instruction.PING, b"")


def test_a_packet_hidden_behind_a_corrupted_length_is_recovered() -> None:
    corrupted = bytearray(encode_instruction(1, Instruction.PING))
    corrupted[5] = 40  # LEN now swallows the next packet
    good = encode_instruction(2, Instruction.PING)
    parser = PacketParser()
    results = parser.feed(bytes(corrupted) + good + bytes(40))
    assert InstructionPacket(2, Instruction.PING, b"") in results


@pytest.mark.parametrize("length_field", [0, 1, 2, 0xFFFF])
def test_impossible_length_is_reported(length_field: int) -> None:
    header = HEADER + bytes((0x00, 7)) + length_field.to_bytes(2, "little")
    results = PacketParser().feed(header + encode_instruction(2, Instruction.PING))
    assert results[0] == BadLength(7, length_field)
    assert results[-1] == InstructionPacket(2, Instruction.PING, b"")


def test_header_with_nonzero_reserved_byte_is_not_a_packet() -> None:
    fake = HEADER + b"\xfd\x01\x03\x00\x01"
    results = PacketParser().feed(fake + encode_instruction(1, Instruction.PING))
    assert results[-1] == InstructionPacket(1, Instruction.PING, b"")
    assert not any(isinstance(item, (CrcMismatch, BadLength)) for item in results)


def test_reset_drops_a_partial_packet() -> None:
    parser = PacketParser()
    parser.feed(encode_instruction(1, Instruction.PING)[:6])
    parser.reset()
    assert parser.pending_byte_count == 0


def test_fast_sync_read_status_matches_the_e_manual_example() -> None:
    # e-manual, Protocol 2.0 "Fast Sync Read" example: ID1 reads 2000, ID2 reads 9 (4 bytes each).
    expected = bytes.fromhex("FFFFFD00FE1100550001D00700000C83" + "00020900000011" + "40")
    blocks = [
        FastReadBlock(1, 0, (2000).to_bytes(4, "little")),
        FastReadBlock(2, 0, (9).to_bytes(4, "little")),
    ]
    assert encode_fast_read_status(blocks) == expected
    # and the instruction from the same example
    instruction = encode_instruction(BROADCAST_ID, Instruction.FAST_SYNC_READ, bytes.fromhex("440204000102"))
    assert instruction == bytes.fromhex("FFFFFD00FE09008A44020400010272F2")


@given(st.lists(st.tuples(st.integers(0, 252), st.integers(0, 255), header_heavy_bytes), min_size=1, max_size=6))
def test_fast_read_status_is_one_valid_packet_parsed_at_fixed_offsets(
    blocks_spec: list[tuple[int, int, bytes]],
) -> None:
    blocks = [FastReadBlock(motor_id, error, data) for motor_id, error, data in blocks_spec]
    packet = encode_fast_read_status(blocks)
    assert crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little")
    offset = 8
    for block in blocks:
        assert packet[offset] == block.error and packet[offset + 1] == block.motor_id
        end = offset + 2 + len(block.data)
        assert packet[offset + 2 : end] == block.data
        assert int.from_bytes(packet[end : end + 2], "little") == crc16(packet[:end])  # running CRC
        offset = end + 2
    assert offset == len(packet)


def test_encoders_reject_impossible_values() -> None:
    with pytest.raises(BusError, match="packet id 300"):
        encode_instruction(300, Instruction.PING)
    with pytest.raises(BusError, match="error byte"):
        encode_status(1, 256)
    with pytest.raises(BusError, match="at least one block"):
        encode_fast_read_status([])
