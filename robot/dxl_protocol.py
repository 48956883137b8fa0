"""Dynamixel Protocol 2.0 packets, seen from the servo's side of the wire: pure bytes in, bytes out.

Packet layout (ROBOTIS e-manual, "Protocol 2.0")::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM ... | CRC_L CRC_H
    header        id   LEN = bytes after LEN (instruction + params + CRC), after byte stuffing

A status packet is the same with ``INST = 0x55`` followed by one error byte. Byte stuffing inserts an
extra ``FD`` after every ``FF FF FD`` in the instruction/parameter bytes so the header never appears
inside a packet; the CRC covers the stuffed bytes. Instruction numbers, the broadcast id and the error
numbers are imported from ``dynamixel_sdk`` so host and device share one source.

:class:`PacketParser` is an incremental receiver (feed it whatever the port delivered; it keeps
partial packets and resynchronizes after garbage). Nothing here does I/O or keeps time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from dynamixel_sdk import robotis_def
from dynamixel_sdk.protocol2_packet_handler import (
    ERRBIT_ALERT,
    ERRNUM_ACCESS,
    ERRNUM_CRC,
    ERRNUM_DATA_LENGTH,
    ERRNUM_DATA_LIMIT,
    ERRNUM_DATA_RANGE,
    ERRNUM_INSTRUCTION,
    ERRNUM_RESULT_FAIL,
    TXPACKET_MAX_LEN,
)

from handrail.robot.errors import BusError

HEADER = b"\xff\xff\xfd"
RESERVED_BYTE = 0x00
STUFFING_BYTE = 0xFD
HEADER_SIZE_BYTES = 7  # FF FF FD 00 ID LEN_L LEN_H
CRC_SIZE_BYTES = 2
CRC16_POLYNOMIAL = 0x8005  # CRC-16/BUYPASS (IBM polynomial, no reflection, init 0), as the e-manual gives it
BROADCAST_ID = robotis_def.BROADCAST_ID
MAX_ID = robotis_def.MAX_ID
# The SDK never sends a packet longer than TXPACKET_MAX_LEN bytes; a LEN field beyond it is corruption.
MAX_LENGTH_FIELD = TXPACKET_MAX_LEN - HEADER_SIZE_BYTES
MIN_INSTRUCTION_LENGTH_FIELD = 1 + CRC_SIZE_BYTES  # instruction + CRC
MIN_STATUS_LENGTH_FIELD = 2 + CRC_SIZE_BYTES  # instruction + error + CRC


class Instruction(IntEnum):
    """Protocol 2.0 instruction numbers (values from ``dynamixel_sdk.robotis_def``)."""

    PING = robotis_def.INST_PING
    READ = robotis_def.INST_READ
    WRITE = robotis_def.INST_WRITE
    REG_WRITE = robotis_def.INST_REG_WRITE
    ACTION = robotis_def.INST_ACTION
    FACTORY_RESET = robotis_def.INST_FACTORY_RESET
    REBOOT = robotis_def.INST_REBOOT
    CLEAR = robotis_def.INST_CLEAR
    STATUS = robotis_def.INST_STATUS
    SYNC_READ = robotis_def.INST_SYNC_READ
    SYNC_WRITE = robotis_def.INST_SYNC_WRITE
    FAST_SYNC_READ = robotis_def.INST_FAST_SYNC_READ
    BULK_READ = robotis_def.INST_BULK_READ
    BULK_WRITE = robotis_def.INST_BULK_WRITE
    FAST_BULK_READ = robotis_def.INST_FAST_BULK_READ


class StatusError(IntEnum):
    """The error number in the low 7 bits of a status packet's error byte (0 = no error)."""

    NONE = 0
    RESULT_FAIL = ERRNUM_RESULT_FAIL
    INSTRUCTION = ERRNUM_INSTRUCTION
    CRC = ERRNUM_CRC
    DATA_RANGE = ERRNUM_DATA_RANGE
    DATA_LENGTH = ERRNUM_DATA_LENGTH
    DATA_LIMIT = ERRNUM_DATA_LIMIT
    ACCESS = ERRNUM_ACCESS


ALERT_BIT = ERRBIT_ALERT  # set in every status while Hardware Error Status is non-zero


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLYNOMIAL) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Protocol 2.0 CRC-16 of ``data``, continuing from ``crc`` (0 starts a packet)."""
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes | bytearray) -> bytes:
    """Insert ``FD`` after every ``FF FF FD`` in ``body`` (instruction/error/params, not header or CRC)."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == STUFFING_BYTE and out[-3:] == HEADER:
            out.append(STUFFING_BYTE)
    return bytes(out)


def unstuff(stuffed: bytes | bytearray) -> bytes:
    """Undo :func:`stuff`: drop the ``FD`` that follows each ``FF FF FD`` in ``stuffed``."""
    out = bytearray()
    for index, byte in enumerate(stuffed):
        if byte == STUFFING_BYTE and index >= 3 and stuffed[index - 3 : index] == HEADER:
            continue
        out.append(byte)
    return bytes(out)


def _check_id(packet_id: int) -> None:
    if not 0 <= packet_id <= BROADCAST_ID:
        raise BusError(f"packet id {packet_id} is outside 0..{BROADCAST_ID} — use 0..{MAX_ID} or broadcast")


def encode_packet(packet_id: int, body: bytes | bytearray) -> bytes:
    """Header + stuffed ``body`` (instruction onward) + CRC, ready for the wire."""
    _check_id(packet_id)
    stuffed = stuff(body)
    length_field = len(stuffed) + CRC_SIZE_BYTES
    if length_field > MAX_LENGTH_FIELD:
        raise BusError(f"packet for id {packet_id}: {length_field} bytes after LEN exceeds {MAX_LENGTH_FIELD}")
    packet = bytearray(HEADER)
    packet += bytes((RESERVED_BYTE, packet_id)) + length_field.to_bytes(2, "little") + stuffed
    packet += crc16(packet).to_bytes(CRC_SIZE_BYTES, "little")
    return bytes(packet)


def encode_instruction(packet_id: int, instruction: int, params: bytes | bytearray = b"") -> bytes:
    """An instruction packet (what a host sends); used by tests and tools."""
    return encode_packet(packet_id, bytes((instruction,)) + bytes(params))


def encode_status(packet_id: int, error: int, params: bytes | bytearray = b"") -> bytes:
    """A status packet from servo ``packet_id``: ``error`` = StatusError number, | ALERT_BIT on fault."""
    if not 0 <= error <= 0xFF:
        raise BusError(f"status error byte {error} is not a byte — build it from StatusError | ALERT_BIT")
    return encode_packet(packet_id, bytes((Instruction.STATUS, error)) + bytes(params))


@dataclass(frozen=True)
class FastReadBlock:
    """One servo's share of a Fast Sync/Bulk Read status: its error byte and the bytes it read."""

    motor_id: int
    error: int
    data: bytes


def encode_fast_read_status(blocks: Iterable[FastReadBlock]) -> bytes:
    """The single status packet that answers a Fast Sync Read (0x8A) or Fast Bulk Read (0x9A).

    Layout (e-manual "Fast Sync Read"; parsed by the SDK's ``GroupSyncRead.fastSyncReadRxPacket``)::

        FF FF FD 00 FE LEN_L LEN_H 55 | ERR ID DATA.. CRC | ERR ID DATA.. CRC | ...
        LEN = 1 + sum(4 + len(DATA))

    Each block's CRC is the running CRC of every byte before it, from the header on, so the last
    block's CRC is the packet CRC. No byte stuffing: the servos append blocks in turn and the SDK
    reads them at fixed offsets. Checked against the e-manual example bytes in the tests.
    """
    blocks = tuple(blocks)
    if not blocks:
        raise BusError("fast read status needs at least one block — a fast read names at least one id")
    length_field = 1 + sum(4 + len(block.data) for block in blocks)
    if length_field > MAX_LENGTH_FIELD:
        raise BusError(f"fast read status of {length_field} bytes after LEN exceeds {MAX_LENGTH_FIELD}")
    packet = bytearray(HEADER)
    packet += bytes((RESERVED_BYTE, BROADCAST_ID)) + length_field.to_bytes(2, "little")
    packet.append(Instruction.STATUS)
    crc = crc16(packet)
    for block in blocks:
        _check_id(block.motor_id)
        chunk = bytes((block.error, block.motor_id)) + block.data
        crc = crc16(chunk, crc)
        chunk += crc.to_bytes(CRC_SIZE_BYTES, "little")
        crc = crc16(chunk[-CRC_SIZE_BYTES:], crc)
        packet += chunk
    return bytes(packet)


# ---------------------------------------------------------------------------------------------------
# Receiving


@dataclass(frozen=True)
class InstructionPacket:
    """A received instruction: ``params`` are unstuffed; ``instruction`` may be any byte."""

    packet_id: int
    instruction: int
    params: bytes


@dataclass(frozen=True)
class StatusPacket:
    """A received status packet (another servo's answer, or ours echoed on a half-duplex line)."""

    packet_id: int
    error: int
    params: bytes


@dataclass(frozen=True)
class GarbageSkipped:
    """``byte_count`` bytes that could not start a packet were dropped while hunting for a header."""

    byte_count: int


@dataclass(frozen=True)
class CrcMismatch:
    """A complete packet whose CRC did not match; real X-series servos drop it silently."""

    packet_id: int
    length_field: int
    received_crc: int
    computed_crc: int


@dataclass(frozen=True)
class BadLength:
    """A header whose LEN field cannot describe a packet (too short or beyond MAX_LENGTH_FIELD)."""

    packet_id: int
    length_field: int


ParseResult = InstructionPacket | StatusPacket | GarbageSkipped | CrcMismatch | BadLength


class PacketParser:
    """Incremental Protocol 2.0 receiver: ``feed`` bytes as they arrive, get packets and events.

    Robust the way a servo's receiver must be: garbage before a header is skipped (and reported),
    packets split across reads are reassembled, and after a bad CRC or LEN the search restarts just
    past the bad header, so a valid packet hidden behind a corrupted one is still found. It keeps no
    clock: a caller that wants an inter-byte timeout calls :meth:`reset` when it expires.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending_byte_count(self) -> int:
        """Bytes held while waiting for the rest of a packet (or a header)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial packet (e.g. after an inter-byte timeout)."""
        self._buffer.clear()

    def feed(self, data: bytes | bytearray) -> list[ParseResult]:
        """Append ``data`` and return everything that became complete, in wire order."""
        self._buffer += data
        results: list[ParseResult] = []
        skipped = 0
        buffer = self._buffer
        while True:
            start = buffer.find(HEADER)
            if start < 0:
                keep = _partial_header_suffix_length(buffer)
                skipped += len(buffer) - keep
                del buffer[: len(buffer) - keep]
                break
            skipped += start
            del buffer[:start]
            if len(buffer) < HEADER_SIZE_BYTES:
                break
            if buffer[3] != RESERVED_BYTE:  # e.g. "FF FF FD FD": a stuffed body seen out of sync
                skipped += 1
                del buffer[:1]
                continue
            packet_id = buffer[4]
            length_field = int.from_bytes(buffer[5:7], "little")
            if not MIN_INSTRUCTION_LENGTH_FIELD <= length_field <= MAX_LENGTH_FIELD:
                skipped = _flush(results, skipped)
                results.append(BadLength(packet_id, length_field))
                del buffer[: len(HEADER)]
                continue
            total = HEADER_SIZE_BYTES + length_field
            if len(buffer) < total:
                break
            computed_crc = crc16(memoryview(buffer)[: total - CRC_SIZE_BYTES])
            received_crc = int.from_bytes(buffer[total - CRC_SIZE_BYTES : total], "little")
            skipped = _flush(results, skipped)
            if computed_crc != received_crc:
                results.append(CrcMismatch(packet_id, length_field, received_crc, computed_crc))
                del buffer[: len(HEADER)]
                continue
            body = unstuff(buffer[HEADER_SIZE_BYTES : total - CRC_SIZE_BYTES])
            del buffer[:total]
            if body[0] != Instruction.STATUS:
                results.append(InstructionPacket(packet_id, body[0], body[1:]))
            elif len(body) >= 2:
                results.append(StatusPacket(packet_id, body[1], body[2:]))
            else:
                results.append(BadLength(packet_id, length_field))
        _flush(results, skipped)
        return results


def _flush(results: list[ParseResult], skipped: int) -> int:
    if skipped:
        results.append(GarbageSkipped(skipped))
    return 0


def _partial_header_suffix_length(buffer: bytearray) -> int:
    """How many trailing bytes of ``buffer`` could be the start of a header (0, 1 or 2)."""
    for keep in (2, 1):
        if len(buffer) >= keep and buffer[-keep:] == HEADER[:keep]:
            return keep
    return 0
