"""A pure, I/O-free Dynamixel Protocol 2.0 bus: instruction packets in, status packets out.

:class:`VirtualBus` owns the :class:`~handrail.robot.servo_registers.ServoRegisters` of every servo on
one wire and answers each instruction the way a chain of real X-series servos would:

- a servo answers only instructions addressed to its ID, or to broadcast (0xFE) where the instruction
  defines an answer for it; an ID no servo has gets silence, and so does a corrupted packet;
- writes, REBOOT and FACTORY_RESET to broadcast change every servo and answer nothing;
- broadcast PING is answered by every servo in ID order; SYNC READ / BULK READ by each listed servo in
  the order the packet lists them; FAST SYNC/BULK READ by one aggregate status packet;
- an unknown instruction sent to one servo gets an Instruction Error status;
- Status Return Level (0: PING only, 1: PING and reads, 2: everything) is honoured per servo.

Seams for the rest of the virtual hand: a :class:`BusObserver` (the physics) hears every accepted
write and reboot and may refresh Present registers before a read; a :class:`ReplyFilter` (fault
injection) may drop, corrupt or delay replies. Threads, clocks and the pty live elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from handrail.robot.control_table import ControlTable
from handrail.robot.dxl_protocol import (
    ALERT_BIT,
    BROADCAST_ID,
    FastReadBlock,
    Instruction,
    InstructionPacket,
    PacketParser,
    StatusError,
    encode_fast_read_status,
    encode_status,
)
from handrail.robot.errors import BusError
from handrail.robot.servo_registers import RegisterAccessError, ServoRegisters

RETURN_DELAY_UNIT_S = 2e-6  # Return Delay Time(9) LSB, e-manual
STATUS_RETURN_PING_ONLY = 0
STATUS_RETURN_READ = 1
# FACTORY_RESET options (e-manual, Protocol 2.0): what survives the reset.
FACTORY_RESET_KEEP: Mapping[int, tuple[str, ...]] = {0xFF: (), 0x01: ("ID",), 0x02: ("ID", "Baud Rate")}
FACTORY_RESET_ALL = 0xFF
CLEAR_MULTI_TURN_PARAMS = bytes((0x01, 0x44, 0x58, 0x4C, 0x22))  # option 0x01 + the key "DXL\""
ENCODER_TICKS_PER_REV = 4096
FAST_READ_PREFIX_BYTES = 8  # FF FF FD 00 FE LEN_L LEN_H 55, sent by the first servo listed
READ_INSTRUCTIONS = frozenset(
    {
        Instruction.READ,
        Instruction.SYNC_READ,
        Instruction.FAST_SYNC_READ,
        Instruction.BULK_READ,
        Instruction.FAST_BULK_READ,
    }
)


@dataclass(frozen=True)
class Reply:
    """Bytes one servo (or, for a fast read, the chain; ``motor_id`` 0xFE) puts on the wire.

    ``delay_s`` is when, after the instruction, they start: the servo's Return Delay Time, plus any
    latency a fault injector adds. The I/O layer honours it; the bus only computes it.
    """

    motor_id: int
    data: bytes
    delay_s: float


class BusObserver(Protocol):
    """What the physics simulation hears from the bus. All calls happen before the reply is built."""

    def before_read(self, servo: ServoRegisters) -> None:
        """Refresh Present registers of ``servo`` before an instruction reads them."""

    def on_write(self, servo: ServoRegisters, written: Mapping[str, int]) -> None:
        """``written`` (register name -> value) was just applied to ``servo``."""

    def on_reboot(self, servo: ServoRegisters) -> None:
        """``servo`` rebooted or was factory-reset (its RAM is back to power-on values)."""


class ReplyFilter(Protocol):
    """Fault injection: return the replies to send instead of ``replies`` (drop, corrupt, delay)."""

    def __call__(self, packet: InstructionPacket, replies: list[Reply]) -> list[Reply]: ...


class VirtualBus:
    """Servos on one Protocol 2.0 wire, without the wire. See the module docstring for semantics."""

    def __init__(
        self,
        servos: Iterable[ServoRegisters],
        observer: BusObserver | None = None,
        reply_filter: ReplyFilter | None = None,
    ) -> None:
        self._servos = list(servos)
        if not self._servos:
            raise BusError("a virtual bus needs at least one servo")
        self.observer = observer
        self.reply_filter = reply_filter
        self._parser = PacketParser()
        self._registered: dict[int, tuple[int, bytes]] = {}
        self._servo_map: dict[int, ServoRegisters] | None = None  # id(servo) -> REG_WRITE (address, data)

    @classmethod
    def with_motor_ids(
        cls, table: ControlTable, motor_ids: Sequence[int], overrides: Mapping[str, int] | None = None
    ) -> VirtualBus:
        """Factory-default servos with the given IDs, plus ``overrides`` (e.g. a baud rate) on each."""
        return cls(ServoRegisters(table, {**(overrides or {}), "ID": motor_id}) for motor_id in motor_ids)

    @property
    def servos(self) -> dict[int, ServoRegisters]:
        """Current ID -> servo (IDs are registers: a write to ID, a reboot or a reset moves the servo)."""
        if self._servo_map is None:
            self._servo_map = {servo.motor_id: servo for servo in self._servos}
        return self._servo_map

    @property
    def parser(self) -> PacketParser:
        return self._parser

    def receive(self, data: bytes) -> list[Reply]:
        """Feed raw wire bytes; answer every complete instruction packet among them, in order."""
        replies: list[Reply] = []
        for item in self._parser.feed(data):
            if isinstance(item, InstructionPacket):
                replies += self.handle(item)
        return replies

    def handle(self, packet: InstructionPacket) -> list[Reply]:
        """The replies the bus sends for one (CRC-checked) instruction packet."""
        replies = self._dispatch(packet)
        if packet.instruction not in READ_INSTRUCTIONS and packet.instruction != Instruction.PING:
            self._servo_map = None  # a write, reboot or reset may have changed an ID
        if self.reply_filter is not None:
            replies = self.reply_filter(packet, replies)
        return replies

    # -- dispatch ----------------------------------------------------------------------------------

    def _dispatch(self, packet: InstructionPacket) -> list[Reply]:
        if packet.instruction == Instruction.STATUS:
            return []  # another servo's answer on the shared line
        broadcast = packet.packet_id == BROADCAST_ID
        targets = list(self.servos.values()) if broadcast else self._servo_list(packet.packet_id)
        if not targets and packet.instruction not in _BROADCAST_ONLY:
            return []
        try:
            instruction = Instruction(packet.instruction)
        except ValueError:
            return [] if broadcast else [self._status(targets[0], StatusError.INSTRUCTION)]
        handler = _HANDLERS[instruction]
        return handler(self, packet, targets, broadcast)

    def _servo_list(self, motor_id: int) -> list[ServoRegisters]:
        servo = self.servos.get(motor_id)
        return [] if servo is None else [servo]

    def _status(
        self,
        servo: ServoRegisters,
        error: StatusError = StatusError.NONE,
        params: bytes = b"",
        motor_id: int | None = None,
    ) -> Reply:
        """A status from ``servo``; ``motor_id`` overrides its ID (a WRITE that just changed it)."""
        motor_id = servo.motor_id if motor_id is None else motor_id
        error_byte = int(error) | (ALERT_BIT if servo.get("Hardware Error Status") else 0)
        return Reply(motor_id, encode_status(motor_id, error_byte, params), _return_delay_s(servo))

    def _answers(self, servo: ServoRegisters, instruction: Instruction) -> bool:
        level = servo.get("Status Return Level")
        if instruction == Instruction.PING:
            return True
        if instruction in READ_INSTRUCTIONS:
            return level >= STATUS_RETURN_READ
        return level > STATUS_RETURN_READ

    def _reply(self, servo: ServoRegisters, instruction: Instruction, reply: Reply) -> list[Reply]:
        return [reply] if self._answers(servo, instruction) else []

    # -- register access shared by the instructions -------------------------------------------------

    def _read(self, servo: ServoRegisters, address: int, length: int) -> tuple[StatusError, bytes]:
        if self.observer is not None:
            self.observer.before_read(servo)
        try:
            return StatusError.NONE, servo.host_read(address, length)
        except RegisterAccessError as error:
            return error.status_error, b""

    def _write(self, servo: ServoRegisters, address: int, data: bytes) -> StatusError:
        try:
            written = servo.host_write(address, data)
        except RegisterAccessError as error:
            return error.status_error
        if self.observer is not None:
            self.observer.on_write(servo, written)
        return StatusError.NONE

    # -- instructions ------------------------------------------------------------------------------

    def _ping(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        ordered = sorted(targets, key=lambda servo: servo.motor_id)
        return [
            self._status(servo, params=_u16(servo.get("Model Number")) + bytes((servo.get("Firmware Version"),)))
            for servo in ordered
        ]

    def _read_one(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        if broadcast:
            return []  # READ has no broadcast form
        servo = targets[0]
        if len(packet.params) != 4:
            return self._reply(servo, Instruction.READ, self._status(servo, StatusError.DATA_LENGTH))
        error, data = self._read(servo, _u16_at(packet.params, 0), _u16_at(packet.params, 2))
        return self._reply(servo, Instruction.READ, self._status(servo, error, data))

    def _write_one(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for servo in targets:
            if len(packet.params) < 3:
                error = StatusError.DATA_LENGTH
            else:
                error = self._write(servo, _u16_at(packet.params, 0), packet.params[2:])
            if not broadcast:  # answered from the addressed ID even if the write changed ID
                replies += self._reply(servo, Instruction.WRITE, self._status(servo, error, motor_id=packet.packet_id))
        return replies

    def _reg_write(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for servo in targets:
            error = StatusError.DATA_LENGTH if len(packet.params) < 3 else StatusError.NONE
            if error == StatusError.NONE:
                address, data = _u16_at(packet.params, 0), bytes(packet.params[2:])
                try:
                    servo.check_host_write(address, data)
                    self._registered[id(servo)] = (address, data)
                    servo.set("Registered Instruction", 1)
                except RegisterAccessError as access_error:
                    error = access_error.status_error
            if not broadcast:
                replies += self._reply(servo, Instruction.REG_WRITE, self._status(servo, error))
        return replies

    def _action(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for servo in targets:
            registered = self._registered.pop(id(servo), None)
            if registered is None:
                error = StatusError.INSTRUCTION  # Protocol 2.0: ACTION without a REG_WRITE
            else:
                servo.set("Registered Instruction", 0)
                error = self._write(servo, *registered)
            if not broadcast:
                replies += self._reply(servo, Instruction.ACTION, self._status(servo, error))
        return replies

    def _factory_reset(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        option = packet.params[0] if len(packet.params) == 1 else None
        if broadcast and option == FACTORY_RESET_ALL:
            return []  # e-manual: a broadcast Reset All is ignored (it would give every servo ID 1)
        replies = []
        for servo in targets:
            if option not in FACTORY_RESET_KEEP:
                error = StatusError.DATA_LENGTH if option is None else StatusError.DATA_RANGE
                if not broadcast:
                    replies += self._reply(servo, Instruction.FACTORY_RESET, self._status(servo, error))
                continue
            if not broadcast:  # the status leaves before the servo resets (and may change its ID)
                replies += self._reply(servo, Instruction.FACTORY_RESET, self._status(servo))
            servo.factory_reset(keep=FACTORY_RESET_KEEP[option])
            self._after_reboot(servo)
        return replies

    def _reboot(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for servo in targets:
            if not broadcast:
                replies += self._reply(servo, Instruction.REBOOT, self._status(servo))
            servo.reboot()
            self._after_reboot(servo)
        return replies

    def _after_reboot(self, servo: ServoRegisters) -> None:
        self._registered.pop(id(servo), None)
        if self.observer is not None:
            self.observer.on_reboot(servo)

    def _clear(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for servo in targets:
            if bytes(packet.params) != CLEAR_MULTI_TURN_PARAMS:
                error = StatusError.DATA_RANGE
            elif servo.torque_enabled:
                error = StatusError.RESULT_FAIL  # e-manual: CLEAR works only while torque is off
            else:
                error = StatusError.NONE
                servo.set("Present Position", servo.get("Present Position") % ENCODER_TICKS_PER_REV)
            if not broadcast:
                replies += self._reply(servo, Instruction.CLEAR, self._status(servo, error))
        return replies

    def _sync_read(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        request = _parse_sync_read(packet, broadcast)
        if request is None:
            return []
        address, length, motor_ids = request
        replies = []
        for servo in self._listed(motor_ids):
            error, data = self._read(servo, address, length)
            replies += self._reply(servo, Instruction.SYNC_READ, self._status(servo, error, data))
        return replies

    def _fast_sync_read(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        request = _parse_sync_read(packet, broadcast)
        if request is None:
            return []
        address, length, motor_ids = request
        return self._fast_read(Instruction.FAST_SYNC_READ, [(motor_id, address, length) for motor_id in motor_ids])

    def _bulk_read(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        replies = []
        for motor_id, address, length in _parse_bulk_read(packet, broadcast):
            servo = self.servos.get(motor_id)
            if servo is None:
                continue
            error, data = self._read(servo, address, length)
            replies += self._reply(servo, Instruction.BULK_READ, self._status(servo, error, data))
        return replies

    def _fast_bulk_read(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        return self._fast_read(Instruction.FAST_BULK_READ, _parse_bulk_read(packet, broadcast))

    def _fast_read(self, instruction: Instruction, entries: list[tuple[int, int, int]]) -> list[Reply]:
        """One aggregate status; the chain breaks at the first listed ID that is absent or silent."""
        if not entries:
            return []
        blocks = []
        answered_bytes = 0  # bytes of the aggregate that servos actually put on the wire
        chain_intact = True
        for motor_id, address, length in entries:
            servo = self.servos.get(motor_id)
            if servo is None or not self._answers(servo, instruction):
                chain_intact = False
            if not chain_intact:
                blocks.append(FastReadBlock(motor_id, 0, bytes(length)))  # placeholder, never sent
                continue
            error, data = self._read(servo, address, length)
            alert = ALERT_BIT if servo.get("Hardware Error Status") else 0
            blocks.append(FastReadBlock(motor_id, int(error) | alert, data or bytes(length)))
            answered_bytes += 4 + length
        if answered_bytes == 0:
            return []
        # Servos after an absent one wait for a block that never comes, so the host receives a packet
        # cut short after the last servo that answered, with LEN still promising all of them.
        packet = encode_fast_read_status(blocks)[: FAST_READ_PREFIX_BYTES + answered_bytes]
        first = self.servos[entries[0][0]]
        return [Reply(BROADCAST_ID, packet, _return_delay_s(first))]

    def _sync_write(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        params = packet.params
        if not broadcast or len(params) < 4:
            return []
        address, length = _u16_at(params, 0), _u16_at(params, 2)
        stride = 1 + length
        if length == 0 or (len(params) - 4) % stride:
            return []  # a malformed sync write is dropped whole: nobody may answer a broadcast
        for offset in range(4, len(params), stride):
            servo = self.servos.get(params[offset])
            if servo is not None:
                self._write(servo, address, bytes(params[offset + 1 : offset + stride]))
        return []

    def _bulk_write(self, packet: InstructionPacket, targets: list[ServoRegisters], broadcast: bool) -> list[Reply]:
        params = packet.params
        if not broadcast:
            return []
        offset = 0
        while offset + 5 <= len(params):
            motor_id, address, length = (
                params[offset],
                _u16_at(params, offset + 1),
                _u16_at(params, offset + 3),
            )
            data = bytes(params[offset + 5 : offset + 5 + length])
            if len(data) != length:
                break
            servo = self.servos.get(motor_id)
            if servo is not None:
                self._write(servo, address, data)
            offset += 5 + length
        return []

    def _listed(self, motor_ids: Iterable[int]) -> list[ServoRegisters]:
        servos = self.servos
        return [servos[motor_id] for motor_id in motor_ids if motor_id in servos]


def with_delay(reply: Reply, extra_delay_s: float) -> Reply:
    """``reply`` sent ``extra_delay_s`` later (a helper for fault injectors)."""
    return replace(reply, delay_s=reply.delay_s + extra_delay_s)


def _return_delay_s(servo: ServoRegisters) -> float:
    return servo.get("Return Delay Time") * RETURN_DELAY_UNIT_S


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _u16_at(params: bytes, offset: int) -> int:
    return int.from_bytes(params[offset : offset + 2], "little")


def _parse_sync_read(packet: InstructionPacket, broadcast: bool) -> tuple[int, int, list[int]] | None:
    params = packet.params
    if not broadcast or len(params) < 5:
        return None  # sync reads are broadcast-only; a malformed one gets no answer
    return _u16_at(params, 0), _u16_at(params, 2), list(dict.fromkeys(params[4:]))


def _parse_bulk_read(packet: InstructionPacket, broadcast: bool) -> list[tuple[int, int, int]]:
    params = packet.params
    if not broadcast or len(params) % 5:
        return []
    return [
        (params[offset], _u16_at(params, offset + 1), _u16_at(params, offset + 3))
        for offset in range(0, len(params), 5)
    ]


_BROADCAST_ONLY = frozenset(
    {
        Instruction.SYNC_READ,
        Instruction.FAST_SYNC_READ,
        Instruction.SYNC_WRITE,
        Instruction.BULK_READ,
        Instruction.FAST_BULK_READ,
        Instruction.BULK_WRITE,
    }
)

_HANDLERS = {
    Instruction.PING: VirtualBus._ping,
    Instruction.READ: VirtualBus._read_one,
    Instruction.WRITE: VirtualBus._write_one,
    Instruction.REG_WRITE: VirtualBus._reg_write,
    Instruction.ACTION: VirtualBus._action,
    Instruction.FACTORY_RESET: VirtualBus._factory_reset,
    Instruction.REBOOT: VirtualBus._reboot,
    Instruction.CLEAR: VirtualBus._clear,
    Instruction.SYNC_READ: VirtualBus._sync_read,
    Instruction.FAST_SYNC_READ: VirtualBus._fast_sync_read,
    Instruction.BULK_READ: VirtualBus._bulk_read,
    Instruction.FAST_BULK_READ: VirtualBus._fast_bulk_read,
    Instruction.SYNC_WRITE: VirtualBus._sync_write,
    Instruction.BULK_WRITE: VirtualBus._bulk_write,
}
