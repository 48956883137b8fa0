"""The Dynamixel bus driver: a hand's servos over one Protocol 2.0 serial bus, in joint units.

Packet code is ROBOTIS' own ``dynamixel_sdk`` (PacketHandler, GroupSyncRead/GroupSyncWrite); register
addresses come from the control table it ships (:mod:`handrail.robot.control_table`). This module adds
what a hand needs around them: ping-and-check on connect, a configuration that puts hardware-level
limits into every servo, one (Fast) Sync Read of the whole state through indirect addressing, one Sync
Write of all goals, and typed errors that name the motor and what happened.

Typical use::

    with DynamixelBus(profile, port="/dev/ttyUSB0") as bus:
        bus.configure()
        bus.set_torque(True)
        state = bus.read_state()
        bus.write_targets(state.position_rad)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dynamixel_sdk as sdk
import numpy as np
from numpy.typing import ArrayLike, NDArray

from handrail.robot.control_table import ControlTable, load_control_table
from handrail.robot.errors import (
    BusCorruptError,
    BusError,
    BusTimeoutError,
    BusWatchdogTripped,
    HardwareFault,
    MotorMissingError,
    PortError,
    StallError,
)
from handrail.robot.motors import MotorFacts, motor_facts
from handrail.robot.profile import HandProfile
from handrail.robot.serial_port import SerialPort
from handrail.robot.stall import STALL_ERROR_FRACTION, StallDetector
from handrail.robot.units import JointUnits

# Operating Mode register value for current-based position control (ROBOTIS e-manual, X series).
OPERATING_MODE_CURRENT_BASED_POSITION = 5
# Hardware Error Status bits (ROBOTIS e-manual, X series).
HARDWARE_ERROR_BITS = {
    0: "input voltage error",
    2: "overheating",
    3: "motor encoder error",
    4: "electrical shock",
    5: "overload",
}
# Status-packet error byte: bit 7 says "look at Hardware Error Status".
STATUS_ALERT_BIT = 0x80
BUS_WATCHDOG_UNIT_MS = 20
# Setup (connect's second ping, configure, reboot) is not real-time: a reply may take this long, and a
# lost one is asked for this many more times (see DynamixelBus._setup_patience).
SETUP_TIMEOUT_MS = 100.0
SETUP_RETRIES = 3
BUS_WATCHDOG_TRIPPED = -1  # what Bus Watchdog(98) reads after it fired (e-manual)
RETURN_DELAY_UNIT_US = 2
# The state block each servo maps to Indirect Data through Indirect Address (one contiguous read).
STATE_REGISTERS = (
    "Hardware Error Status",
    "Present Current",
    "Present Velocity",
    "Present Position",
    "Present Temperature",
    # -1 once the servo's bus watchdog fired: it then ignores every goal, so the host must know at once.
    "Bus Watchdog",
)

logger = logging.getLogger(__name__)
_Reply = TypeVar("_Reply", bound=tuple[Any, ...])


def decode_hardware_error(status: int) -> tuple[str, ...]:
    """Names of the bits set in a Hardware Error Status value."""
    return tuple(name for bit, name in HARDWARE_ERROR_BITS.items() if status & (1 << bit))


@dataclass(frozen=True)
class HandState:
    """One synchronous reading of every motor, in policy order and joint units."""

    timestamp_s: float  # time.monotonic() when the reply was complete
    position_rad: NDArray[np.float64]  # (n,)
    velocity_rad_s: NDArray[np.float64]  # (n,)
    current_ma: NDArray[np.float64]  # (n,) in the joint's sense
    temperature_c: NDArray[np.float64]  # (n,)
    hardware_error: NDArray[np.int64]  # (n,) Hardware Error Status bits, 0 when healthy
    read_duration_s: float = field(default=0.0)

    def __post_init__(self) -> None:
        n = self.position_rad.shape
        for name in ("velocity_rad_s", "current_ma", "temperature_c", "hardware_error"):
            if getattr(self, name).shape != n:
                raise ValueError(f"HandState.{name} has shape {getattr(self, name).shape}, expected {n}")


class DynamixelBus:
    """The servos of one hand profile on one serial port. Not thread-safe: one owner at a time."""

    def __init__(self, profile: HandProfile, port: str | None = None, *, baud: int | None = None):
        self.profile = profile
        self.port_name = port or profile.bus.port
        self.baud = baud or profile.bus.baud
        self.motor: MotorFacts = motor_facts(profile.bus.motor_model)
        self.table: ControlTable = load_control_table(self.motor.control_table)
        self.units = JointUnits(
            direction=np.array([j.direction for j in profile.joints], dtype=np.float64),
            gear_ratio=np.array([j.gear_ratio for j in profile.joints], dtype=np.float64),
            zero_offset_rad=np.array([j.zero_offset_rad for j in profile.joints], dtype=np.float64),
            center_ticks=int(self.table.type_info["value_of_zero_radian_position"]),
            ticks_per_rev=int(self.table.type_info["value_of_max_radian_position"]) + 1,
            velocity_rad_s_per_lsb=self.table.unit_info["Present Velocity"].value,
            current_ma_per_lsb=self.motor.current_ma_per_lsb,
        )
        self.ids: tuple[int, ...] = profile.motor_ids
        self._names = {joint.motor_id: joint.name for joint in profile.joints}
        self._port: SerialPort | None = None
        self._packets = sdk.PacketHandler(2.0)
        self._state_read: sdk.GroupSyncRead | None = None
        self._goal_write: sdk.GroupSyncWrite | None = None
        self._state_layout = self._indirect_layout()
        self.stall_detector = StallDetector(
            np.array([j.current_limit_ma for j in profile.joints]),
            STALL_ERROR_FRACTION * np.array([j.max_tracking_error_rad for j in profile.joints]),
        )
        self._last_goal_rad: NDArray[np.float64] | None = None
        self._speed_scale = 1.0
        self.retried = 0  # requests asked again after a timed-out or corrupt reply (see BusSpec.retries)
        self._retries = profile.bus.retries
        self._soft_low_rad = np.array([j.soft_limits_rad[0] for j in profile.joints])
        self._soft_high_rad = np.array([j.soft_limits_rad[1] for j in profile.joints])

    # -- naming -------------------------------------------------------------------------------------

    def describe(self, motor_id: int) -> str:
        """``motor 7 (index_pip)``: how every message names a motor."""
        return f"motor {motor_id} ({self._names.get(motor_id, '?')})"

    # -- connection ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the serial port at the bus baud rate (no traffic yet)."""
        port = SerialPort(self.port_name, self.profile.bus.timeout_ms)
        try:
            opened = port.openPort() and port.setBaudRate(self.baud)
        except Exception as error:  # pyserial raises SerialException/OSError/ValueError
            raise PortError(
                f"cannot open serial port {self.port_name} at {self.baud} baud: {error} — check the device path "
                "(`handrail doctor` lists ports) and that your user may use it (dialout group)"
            ) from error
        if not opened:
            raise PortError(f"serial port {self.port_name} refused baud rate {self.baud} — use a Dynamixel rate")
        self._port = port
        # A full garbage collection of a process with numpy, MuJoCo or onnxruntime loaded takes 35-45 ms here
        # (120 ms with torch): longer than a status timeout, and it can fall between a reply's arrival and the
        # timeout check. What exists now lives as long as the bus: freeze it out of later collections.
        gc.collect()
        gc.freeze()

    def connect(self) -> None:
        """Open the port and ping every motor; a missing or wrong-model motor is an error listing all ids."""
        if self._port is None:
            self.open()
        answered: dict[int, int] = {}
        for motor_id in self.ids:
            model_number, result, _ = self._with_retries(
                f"pinging {self.describe(motor_id)}", lambda i=motor_id: self._packets.ping(self._require_port(), i), 1
            )
            if result == sdk.COMM_SUCCESS:
                answered[motor_id] = model_number
        for motor_id in [i for i in self.ids if i not in answered]:
            with self._setup_patience():  # a motor silent at the real-time timeout gets a patient ask
                model_number, result, _ = self._packets.ping(self._require_port(), motor_id)
            if result == sdk.COMM_SUCCESS:
                answered[motor_id] = model_number
        missing = [i for i in self.ids if i not in answered]
        wrong = {i: n for i, n in answered.items() if n != self.table.model_number}
        if missing or wrong:
            parts = []
            if missing:
                parts.append("no answer from " + ", ".join(self.describe(i) for i in missing))
            if wrong:
                parts.append(
                    "wrong model: "
                    + ", ".join(f"{self.describe(i)} is model {n}" for i, n in wrong.items())
                    + f" (profile expects {self.motor.model_name} = {self.table.model_number})"
                )
            ok = sorted(set(answered) - set(wrong))
            raise MotorMissingError(
                f"bus {self.port_name} @ {self.baud}: {'; '.join(parts)}; answered correctly: {ok or 'none'} — "
                "check power, cables, ids and baud rate (`handrail doctor --port ...`)"
            )

    def close(self) -> None:
        """Close the port (torque is left as it is; call ``set_torque(False)`` first for a safe stop)."""
        if self._port is not None and self._port.is_open:
            self._port.closePort()
        self._port = None

    def __enter__(self) -> DynamixelBus:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_port(self) -> SerialPort:
        if self._port is None:
            raise BusError(f"bus {self.port_name} is not open — call connect() first")
        return self._port

    # -- single-register access ---------------------------------------------------------------------

    def _raise_for(self, motor_id: int, result: int, error: int, what: str) -> None:
        if result == sdk.COMM_RX_TIMEOUT:
            raise BusTimeoutError(
                f"{self.describe(motor_id)}: no status packet within {self.profile.bus.timeout_ms:g} ms while {what} "
                "— check the cable, power and the id"
            )
        if result == sdk.COMM_RX_CORRUPT:
            raise BusCorruptError(
                f"{self.describe(motor_id)}: corrupt status packet (CRC or length) while {what} — check the cable"
            )
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"{self.describe(motor_id)}: {self._packets.getTxRxResult(result)} while {what}")
        if error & STATUS_ALERT_BIT:
            self._raise_hardware_fault(motor_id)
        if error & ~STATUS_ALERT_BIT:
            raise BusError(f"{self.describe(motor_id)}: {self._packets.getRxPacketError(error)} while {what}")

    def _with_retries(self, what: str, transaction: Callable[[], _Reply], result_at: int) -> _Reply:
        """Run one request/reply; a timed-out or corrupt reply is asked for again ``bus.retries`` times.

        ``transaction`` returns a tuple holding the SDK's comm result at ``result_at``.
        """
        for attempt in range(self._retries + 1):
            reply = transaction()
            result = reply[result_at]
            if result not in (sdk.COMM_RX_TIMEOUT, sdk.COMM_RX_CORRUPT) or attempt == self._retries:
                return reply
            self.retried += 1
            kind = "timed out" if result == sdk.COMM_RX_TIMEOUT else "was corrupt"
            logger.warning("bus %s: the reply %s while %s — asking again", self.port_name, kind, what)
            self._require_port().clearPort()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _setup_patience(self) -> Iterator[None]:
        """Setup is not real-time: wait up to SETUP_TIMEOUT_MS per reply and ask SETUP_RETRIES more times.

        Hundreds of request/reply pairs in a row (``configure``) on a busy host meet the odd stall of the
        host or the link that a control tick would not; the real-time path keeps ``bus.timeout_ms`` and
        ``bus.retries``.
        """
        port = self._require_port()
        normal = port.timeout_ms, self._retries
        port.timeout_ms = max(port.timeout_ms, SETUP_TIMEOUT_MS)
        self._retries = max(self._retries, SETUP_RETRIES)
        try:
            yield
        finally:
            port.timeout_ms, self._retries = normal

    def write_register(self, motor_id: int, name: str, value: int) -> None:
        """Write one register by control-table name, checking the reply."""
        register = self.table.register(name)
        port = self._require_port()
        port.clearPort()
        writer = {
            1: self._packets.write1ByteTxRx,
            2: self._packets.write2ByteTxRx,
            4: self._packets.write4ByteTxRx,
        }[register.size]
        raw = int(value) & ((1 << (8 * register.size)) - 1)
        what = f"writing {name} = {value}"
        result, error = self._with_retries(what, lambda: writer(port, motor_id, register.address, raw), 0)
        self._raise_for(motor_id, result, error, what)

    def read_register(self, motor_id: int, name: str) -> int:
        """Read one register by control-table name (signed where the table says so)."""
        register = self.table.register(name)
        port = self._require_port()
        port.clearPort()
        reader = {
            1: self._packets.read1ByteTxRx,
            2: self._packets.read2ByteTxRx,
            4: self._packets.read4ByteTxRx,
        }[register.size]
        what = f"reading {name}"
        value, result, error = self._with_retries(what, lambda: reader(port, motor_id, register.address), 1)
        self._raise_for(motor_id, result, error, what)
        if self.table.is_signed(name) and value >= 1 << (8 * register.size - 1):
            value -= 1 << (8 * register.size)
        return int(value)

    def _raise_hardware_fault(self, motor_id: int) -> None:
        port = self._require_port()
        address = self.table.register("Hardware Error Status").address
        status, result, _ = self._packets.read1ByteTxRx(port, motor_id, address)
        bits = decode_hardware_error(status) if result == sdk.COMM_SUCCESS else ("unknown (status read failed)",)
        raise HardwareFault(
            f"{self.describe(motor_id)}: hardware error {', '.join(bits)} (Hardware Error Status 0x{status:02x}) — "
            "the servo has shut its torque off; find the cause, then reboot it (DynamixelBus.reboot)",
            motor_id=motor_id,
            joint=self._names.get(motor_id, "?"),
            error_bits=bits,
        )

    # -- configuration ------------------------------------------------------------------------------

    def _indirect_layout(self) -> dict[str, tuple[int, int]]:
        """Offset and size of each state register inside the indirect data block."""
        layout: dict[str, tuple[int, int]] = {}
        offset = 0
        for name in STATE_REGISTERS:
            size = self.table.register(name).size
            layout[name] = (offset, size)
            offset += size
        return layout

    @property
    def state_block_bytes(self) -> int:
        """Bytes per motor in one state read."""
        return sum(size for _, size in self._state_layout.values())

    def configure(self, speed_scale: float = 1.0) -> None:
        """Put the profile's limits and gains into every servo (torque is switched off to do it).

        Writes: Operating Mode (current-based position), Current Limit, Temperature Limit, Min/Max
        Position Limit from the soft limits, Return Delay Time, position PID gains, Profile Velocity from
        the max joint speed (a hardware-level speed limit), Profile Acceleration from the max acceleration,
        indirect addresses for the one-read state block, and the Bus Watchdog.
        """
        if not 0.0 < speed_scale <= 1.0:
            raise ValueError(f"speed_scale {speed_scale} can only tighten limits: give a value in (0, 1]")
        self._speed_scale = speed_scale
        with self._setup_patience():
            self.set_torque(False)
            for index in range(len(self.ids)):
                self._configure_motor(index)
        self._build_groups()

    def _configure_motor(self, index: int) -> None:
        """Write one motor's settings (EEPROM ones need its torque off)."""
        joint, motor_id, servo = self.profile.joints[index], self.ids[index], self.profile.servo
        limits = [j.soft_limits_rad for j in self.profile.joints]
        low = self.units.rad_to_ticks([low for low, _ in limits])[index]
        high = self.units.rad_to_ticks([high for _, high in limits])[index]
        current_raw = self.units.ma_to_current_raw([j.current_limit_ma for j in self.profile.joints])[index]
        scale = self._speed_scale  # the servo's own speed limit follows a run-time tightening too
        speed_raw = self.units.rad_s_to_velocity_raw([scale * j.max_speed_rad_s for j in self.profile.joints])[index]
        acceleration_unit = self.motor.profile_acceleration_rad_s2_per_lsb
        self.write_register(motor_id, "Bus Watchdog", 0)  # clears a latched watchdog error first
        self.write_register(motor_id, "Operating Mode", OPERATING_MODE_CURRENT_BASED_POSITION)
        self.write_register(motor_id, "Current Limit", int(current_raw))
        self.write_register(motor_id, "Temperature Limit", math.floor(joint.temperature_limit_c))
        self.write_register(motor_id, "Min Position Limit", int(min(low, high)))
        self.write_register(motor_id, "Max Position Limit", int(max(low, high)))
        self.write_register(motor_id, "Return Delay Time", servo.return_delay_us // RETURN_DELAY_UNIT_US)
        self.write_register(motor_id, "Position P Gain", servo.position_p_gain)
        self.write_register(motor_id, "Position I Gain", servo.position_i_gain)
        self.write_register(motor_id, "Position D Gain", servo.position_d_gain)
        self.write_register(motor_id, "Profile Velocity", int(speed_raw))
        acceleration_raw = max(1, math.floor(scale * joint.max_accel_rad_s2 * joint.gear_ratio / acceleration_unit))
        self.write_register(motor_id, "Profile Acceleration", acceleration_raw)
        self._write_indirect_addresses(motor_id)
        self.write_register(motor_id, "Bus Watchdog", max(1, servo.bus_watchdog_ms // BUS_WATCHDOG_UNIT_MS))

    def _write_indirect_addresses(self, motor_id: int) -> None:
        slot = 0
        for name in STATE_REGISTERS:
            register = self.table.register(name)
            for byte in range(register.size):
                slot += 1
                self.write_register(motor_id, f"Indirect Address {slot}", register.address + byte)

    def _build_groups(self) -> None:
        port = self._require_port()
        data = self.table.register("Indirect Data 1")
        self._state_read = sdk.GroupSyncRead(port, self._packets, data.address, self.state_block_bytes)
        for motor_id in self.ids:
            self._state_read.addParam(motor_id)
        goal = self.table.register("Goal Position")
        self._goal_write = sdk.GroupSyncWrite(port, self._packets, goal.address, goal.size)

    # -- torque, reboot -----------------------------------------------------------------------------

    def set_torque(self, enabled: bool, motor_ids: Sequence[int] | None = None) -> None:
        """Torque Enable on (1) or off (0) for the given motors (default: all)."""
        if not enabled:
            self._last_goal_rad = None  # a limp joint is not stalled
            self.stall_detector.reset()
        for motor_id in motor_ids if motor_ids is not None else self.ids:
            self.write_register(motor_id, "Torque Enable", 1 if enabled else 0)

    def broadcast_torque_off(self) -> None:
        """Torque Enable = 0 to every servo in one broadcast packet, waiting for no reply.

        The fastest safe stop there is: it needs no answer, so it works when replies are lost or late.
        """
        port = self._require_port()
        address = self.table.register("Torque Enable").address
        result = self._packets.write1ByteTxOnly(port, sdk.BROADCAST_ID, address, 0)
        self._last_goal_rad = None
        self.stall_detector.reset()
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"bus {self.port_name}: broadcast torque-off could not be sent ({result})")

    def write_goal_current(self, current_ma: ArrayLike) -> None:
        """Goal Current of every motor in one Sync Write (caps the current below Current Limit)."""
        currents = self.units.ma_to_current_raw(np.asarray(current_ma, dtype=np.float64))
        if currents.shape != (len(self.ids),):
            raise ValueError(f"write_goal_current needs {len(self.ids)} values, got shape {currents.shape}")
        register = self.table.register("Goal Current")
        writer = sdk.GroupSyncWrite(self._require_port(), self._packets, register.address, register.size)
        for motor_id, raw in zip(self.ids, currents, strict=True):
            writer.addParam(motor_id, int(raw).to_bytes(register.size, "little", signed=True))
        result = writer.txPacket()
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"bus {self.port_name}: sync write of Goal Current failed ({result})")

    @contextlib.contextmanager
    def torque_disabled(self) -> Iterator[None]:
        """Torque off for the block, and back on afterwards only if the block ended normally."""
        self.set_torque(False)
        yield
        self.set_torque(True)

    def reboot(self, motor_id: int) -> None:
        """Reboot one motor: clears its hardware error, then writes its RAM settings again.

        A reboot resets the servo's RAM (gains, profile, indirect addresses, bus watchdog), so the motor
        is configured again; its torque stays off.
        """
        port = self._require_port()
        port.clearPort()
        result, error = self._packets.reboot(port, motor_id)
        self._raise_for(motor_id, result, error & ~STATUS_ALERT_BIT, "rebooting")
        time.sleep(0.05)  # a real X-series servo needs a moment before it answers again
        with self._setup_patience():
            self._configure_motor(self.ids.index(motor_id))

    # -- the cycle ----------------------------------------------------------------------------------

    def _state_from_blocks(self, blocks: dict[int, bytes], started_s: float) -> HandState:
        n = len(self.ids)
        raw = {name: np.zeros(n, dtype=np.int64) for name in STATE_REGISTERS}
        for index, motor_id in enumerate(self.ids):
            block = blocks[motor_id]
            for name, (offset, size) in self._state_layout.items():
                raw[name][index] = int.from_bytes(
                    block[offset : offset + size], "little", signed=self.table.is_signed(name)
                )
        now = time.monotonic()
        return HandState(
            timestamp_s=now,
            position_rad=self.units.ticks_to_rad(raw["Present Position"]),
            velocity_rad_s=self.units.velocity_raw_to_rad_s(raw["Present Velocity"]),
            current_ma=self.units.current_raw_to_ma(raw["Present Current"]),
            temperature_c=raw["Present Temperature"].astype(np.float64),
            hardware_error=raw["Hardware Error Status"],
            read_duration_s=now - started_s,
        )

    def _raise_for_tripped_watchdog(self, blocks: dict[int, bytes]) -> None:
        offset, size = self._state_layout["Bus Watchdog"]
        tripped = tuple(
            motor_id
            for motor_id in self.ids
            if int.from_bytes(blocks[motor_id][offset : offset + size], "little", signed=True) == BUS_WATCHDOG_TRIPPED
        )
        if tripped:
            raise BusWatchdogTripped(
                f"{', '.join(self.describe(i) for i in tripped)}: bus watchdog fired — the host sent no goal for "
                f"over {self.profile.servo.bus_watchdog_ms} ms, and these servos now hold and ignore every goal; "
                "find what stalled the host (CPU load, a blocked loop), then reconnect (configuring clears it)",
                tripped,
            )

    def _ping_all(self) -> tuple[list[int], list[int]]:
        """Ping each motor once: (motors that did not answer, motors whose answer was corrupt)."""
        port = self._require_port()
        silent, corrupt = [], []
        for motor_id in self.ids:
            port.clearPort()
            _, result, _ = self._packets.ping(port, motor_id)
            if result == sdk.COMM_RX_CORRUPT:
                corrupt.append(motor_id)
            elif result != sdk.COMM_SUCCESS:
                silent.append(motor_id)
        return silent, corrupt

    def _diagnose_silence(self, what: str) -> BusError:
        """After a failed group read, find out why: late replies, silent motors, or a flaky link."""
        timeout_ms = self.profile.bus.timeout_ms
        answer_ms = self._time_a_slow_ping(self.ids[0])
        if answer_ms is not None and answer_ms > timeout_ms:
            return BusTimeoutError(
                f"bus {self.port_name}: replies arrive late while {what} — {self.describe(self.ids[0])} "
                f"answered a ping after {answer_ms:.0f} ms, the timeout is {timeout_ms:g} ms; check the USB "
                "adapter's latency timer (`handrail doctor`) and what else loads the bus or the host"
            )
        silent, corrupt = self._ping_all()
        if corrupt and not silent:
            return self._corruption_error(what, corrupt)
        if len(silent) == len(self.ids):
            return BusTimeoutError(
                f"bus {self.port_name}: no motor answers while {what} (no status packet within {timeout_ms:g} ms)"
                " — cable disconnected or power off?"
            )
        if silent:
            return BusTimeoutError(
                f"{', '.join(self.describe(i) for i in silent)}: no status packet within {timeout_ms:g} ms while "
                f"{what} — check the cable and the id"
            )
        return BusTimeoutError(
            f"bus {self.port_name}: status packets incomplete while {what}, but every motor answers a ping — "
            "intermittent link: check the cable and the USB adapter's latency timer"
        )

    def _time_a_slow_ping(self, motor_id: int, patience_ms: float = 500.0) -> float | None:
        """Milliseconds until ``motor_id`` answers a ping with a long timeout, or None if it never does."""
        port = self._require_port()
        normal_timeout = port.timeout_ms
        port.timeout_ms = patience_ms
        try:
            port.clearPort()
            started = time.monotonic()
            _, result, _ = self._packets.ping(port, motor_id)
            return (time.monotonic() - started) * 1000.0 if result == sdk.COMM_SUCCESS else None
        finally:
            port.timeout_ms = normal_timeout

    def _corruption_error(self, what: str, corrupt: list[int] | None = None) -> BusCorruptError:
        if corrupt is None:
            _, corrupt = self._ping_all()
        culprits = (
            f"on retry {', '.join(self.describe(i) for i in corrupt)} answered with corrupt packets too"
            if corrupt
            else "every motor answered cleanly on retry (intermittent)"
        )
        return BusCorruptError(
            f"bus {self.port_name}: corrupt status packet (CRC or length) while {what}; {culprits} — "
            "electrical noise or a failing cable/connector near those motors"
        )

    def read_state(self, *, diagnose: bool = True, judge: bool = True) -> HandState:
        """Position, velocity, current, temperature and hardware error of every motor in one Sync Read.

        On a comms failure it pings every motor to name the culprits (``diagnose=False`` skips that, for a
        caller that must react first and ask questions later). Raises BusTimeoutError, BusCorruptError,
        HardwareFault (naming the error bits) or StallError. ``judge=False`` leaves the hardware error bits
        and stalls to the caller (the safety layer's monitor, the one place that judges them for a
        :class:`~handrail.robot.safe_robot.Robot`): the state is returned with its ``hardware_error``.
        """
        if self._state_read is None:
            self._build_groups()
        assert self._state_read is not None
        what = "reading the hand state"
        started_s = time.monotonic()
        self._require_port().clearPort()
        blocks, errors, result = self._with_retries(what, self._state_transaction, 2)
        if result == sdk.COMM_RX_CORRUPT:
            if not diagnose:
                raise BusCorruptError(f"bus {self.port_name}: corrupt status packet (CRC or length) while {what}")
            raise self._corruption_error(what)
        if result != sdk.COMM_SUCCESS:
            if not diagnose:
                raise BusTimeoutError(
                    f"bus {self.port_name}: no complete status within {self.profile.bus.timeout_ms:g} ms while {what}"
                )
            raise self._diagnose_silence(what)
        state = self._state_from_blocks(blocks, started_s)
        if judge:
            for motor_id, error in errors.items():
                if error & STATUS_ALERT_BIT:
                    self._raise_hardware_fault(motor_id)
            for index, status in enumerate(state.hardware_error):
                if status:
                    self._raise_hardware_fault(self.ids[index])
        self._raise_for_tripped_watchdog(blocks)
        stalled = self.stall_detector.update(
            state.timestamp_s, state.position_rad, state.velocity_rad_s, state.current_ma, self._last_goal_rad
        )
        if stalled.size and judge:
            index = int(stalled[0])
            assert self._last_goal_rad is not None
            raise StallError(
                f"{self.describe(self.ids[index])}: stalled — {abs(state.current_ma[index]):.0f} mA (limit "
                f"{self.stall_detector.current_limit_ma[index]:.0f} mA) for {self.stall_detector.stall_time_s:g} s "
                f"at {abs(state.velocity_rad_s[index]):.2f} rad/s, "
                f"{abs(self._last_goal_rad[index] - state.position_rad[index]):.2f} rad from its goal — "
                "a stuck joint or a blocked finger: stop and inspect the hand",
                motor_id=self.ids[index],
                joint=self._names.get(self.ids[index], "?"),
            )
        return state

    def _state_transaction(self) -> tuple[dict[int, bytes], dict[int, int], int]:
        """One state read, (Fast) Sync Read as the profile says: blocks and error bytes per motor, result."""
        assert self._state_read is not None
        if self.profile.bus.fast_sync_read:
            return self._fast_sync_read()
        result = self._state_read.txRxPacket()
        return {i: bytes(self._state_read.data_dict.get(i, b"")) for i in self.ids}, {}, result

    def _fast_sync_read(self) -> tuple[dict[int, bytes], dict[int, int], int]:
        """One Fast Sync Read through the SDK, keeping each motor's error byte (the SDK drops it)."""
        assert self._state_read is not None
        port = self._require_port()
        length = self.state_block_bytes
        result = self._state_read.fastSyncReadTxPacket()
        if result != sdk.COMM_SUCCESS:
            return {}, {}, result
        raw, result, _ = self._packets.fastSyncReadRx(port, sdk.BROADCAST_ID, (length + 4) * len(self.ids))
        if result != sdk.COMM_SUCCESS:
            return {}, {}, result
        blocks: dict[int, bytes] = {}
        errors: dict[int, int] = {}
        for index in range(len(self.ids)):
            start = index * (length + 4)
            motor_id = raw[start + 1] if start + 1 < len(raw) else -1
            if motor_id not in self.ids:
                return {}, {}, sdk.COMM_RX_CORRUPT
            errors[motor_id] = raw[start]
            blocks[motor_id] = bytes(raw[start + 2 : start + 2 + length])
        if set(blocks) != set(self.ids):
            return {}, {}, sdk.COMM_RX_CORRUPT
        return blocks, errors, sdk.COMM_SUCCESS

    def write_targets(self, targets_rad: ArrayLike) -> NDArray[np.int64]:
        """Goal Position of every motor in one Sync Write; returns the goal ticks sent.

        Targets are in joint radians, policy order, clipped to the soft limits (the servos do not enforce
        position limits in current-based position mode). No other filtering happens here: application
        code goes through the safety layer, which owns this bus.
        """
        targets = np.asarray(targets_rad, dtype=np.float64)
        if targets.shape != (len(self.ids),):
            raise ValueError(f"write_targets needs {len(self.ids)} targets, got shape {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"write_targets got non-finite targets {targets} — refusing to send them")
        if self._goal_write is None:
            self._build_groups()
        assert self._goal_write is not None
        # In current-based position mode an X-series servo ignores Min/Max Position Limit (e-manual), so
        # the driver keeps goals inside the soft limits itself as a last line behind the safety layer.
        targets = np.clip(targets, self._soft_low_rad, self._soft_high_rad)
        ticks = self.units.rad_to_ticks(targets)
        self._goal_write.clearParam()
        size = self.table.register("Goal Position").size
        for motor_id, tick in zip(self.ids, ticks, strict=True):
            self._goal_write.addParam(motor_id, int(tick).to_bytes(size, "little", signed=True))
        result = self._goal_write.txPacket()
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"bus {self.port_name}: sync write failed: {self._packets.getTxRxResult(result)}")
        self._last_goal_rad = targets.copy()
        return ticks
