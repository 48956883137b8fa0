"""One virtual servo's register memory, with the access rules of a real X-series Dynamixel.

The layout (names, addresses, sizes) comes from the control table shipped in ``dynamixel-sdk``
(:mod:`handrail.robot.control_table`). What the model files do not carry — which registers are
read-only, their value ranges, the factory defaults — is transcribed below from the ROBOTIS e-manual
page for the XC330-M288-T (``emanual.robotis.com/docs/en/dxl/x/xc330-m288/``, "Control Table";
source ``ROBOTIS-GIT/emanual: docs/en/dxl/x/xc330-m288.md``). Those are facts about the servo, so
they live here as data, each under the name the control table uses.

Two ways in:

- ``host_read`` / ``host_write``: what an instruction packet may do. They enforce the e-manual's
  rules and raise :class:`RegisterAccessError` carrying the Protocol 2.0 error number to answer with.
- ``get`` / ``set``: the servo's own firmware (the physics simulation) updating Present registers or
  Hardware Error Status. No access rules, only a check that the value fits the register.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from handrail.robot.control_table import ControlTable, Register
from handrail.robot.dxl_protocol import StatusError
from handrail.robot.errors import RobotError

# The first RAM item; every address below it is EEPROM, writable only while Torque Enable is 0.
FIRST_RAM_REGISTER = "Torque Enable"

# e-manual "Access: R" rows present in the model file.
READ_ONLY_REGISTERS = frozenset(
    {
        "Model Number",
        "Model Information",
        "Firmware Version",
        "Registered Instruction",
        "Hardware Error Status",
        "Realtime Tick",
        "Moving",
        "Moving Status",
        "Present PWM",
        "Present Current",
        "Present Velocity",
        "Present Position",
        "Velocity Trajectory",
        "Position Trajectory",
        "Present Input Voltage",
        "Present Temperature",
    }
)

# Registers whose e-manual range includes negative values (two's complement on the wire). The model
# file's [unit info] marks only four of them signed; these are signed on the servo all the same.
SIGNED_REGISTERS = frozenset(
    {
        "Bus Watchdog",  # reads -1 after the watchdog fired (e-manual, Bus Watchdog(98))
        "Homing Offset",
        "Goal PWM",
        "Goal Current",
        "Goal Velocity",
        "Goal Position",
        "Present PWM",
        "Present Current",
        "Present Velocity",
        "Present Position",
        "Velocity Trajectory",
        "Position Trajectory",
    }
)

# e-manual "Initial Value" column for XC330-M288-T. Registers whose initial value is "-" are filled at
# power-on (see ServoRegisters.power_on). Units: Return Delay Time 2 us (250 -> 500 us), Temperature
# Limit 1 C, voltages 0.1 V, PWM 0.113 %, Current Limit 1 mA, Velocity Limit 0.229 rev/min, positions
# 1 pulse (4096 per rev), Bus Watchdog 20 ms (0 = off), Profile Velocity 0.229 rev/min (0 = no profile).
XC330_M288_FACTORY_DEFAULTS: Mapping[str, int] = MappingProxyType(
    {
        "Model Number": 1240,  # also the number dynamixel.model maps to xc330_m288.model
        "ID": 1,
        "Baud Rate": 1,  # 57,600 bps
        "Return Delay Time": 250,
        "Drive Mode": 0,
        "Operating Mode": 3,  # position control
        "Secondary(Shadow) ID": 255,  # >= 253 means no secondary id
        "Protocol Type": 2,
        "Homing Offset": 0,
        "Moving Threshold": 10,
        "Temperature Limit": 70,
        "Max Voltage Limit": 70,
        "Min Voltage Limit": 35,
        "PWM Limit": 885,
        "Current Limit": 2352,
        "Velocity Limit": 350,
        "Max Position Limit": 4095,
        "Min Position Limit": 0,
        "PWM Slope": 140,
        "Shutdown": 52,  # overload | electrical shock | overheating
        "Torque Enable": 0,
        "LED": 0,
        "Status Return Level": 2,  # answer every instruction
        "Registered Instruction": 0,
        "Hardware Error Status": 0,
        "Velocity I Gain": 1600,
        "Velocity P Gain": 50,
        "Position D Gain": 500,
        "Position I Gain": 0,
        "Position P Gain": 1100,
        "Feedforward 2nd Gain": 0,
        "Feedforward 1st Gain": 0,
        "Bus Watchdog": 0,
        "Profile Acceleration": 0,
        "Profile Velocity": 0,
        "Moving": 0,
        "Moving Status": 0,
    }
)

# Not an e-manual default: the e-manual gives "-". Fast Sync Read needs X330 firmware v46 or above
# (e-manual, Protocol 2.0); the virtual hand loads ``xc330_m288_fw52.model`` (the e-manual's addresses),
# so the virtual servo reports v52.
VIRTUAL_FIRMWARE_VERSION = 52

# e-manual "Baud Rate(8)" table for the XL330/XC330 group.
BAUD_RATE_INDEX_BY_BPS: Mapping[int, int] = MappingProxyType(
    {9_600: 0, 57_600: 1, 115_200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5, 4_000_000: 6}
)

OPERATING_MODES = frozenset({0, 1, 3, 4, 5, 16})  # current, velocity, position, extended, current-based, PWM
POSITION_CONTROL_MODE = 3
EXTENDED_POSITION_RANGE_TICKS = 1_048_575  # Goal Position range in modes 4 and 5 (+-256 rev)

# e-manual "Range" column: a written value outside it is answered with Data Range Error.
VALUE_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "ID": (0, 252),
        "Baud Rate": (0, 6),
        "Return Delay Time": (0, 254),
        "Drive Mode": (0, 5),
        "Operating Mode": (0, 16),
        "Secondary(Shadow) ID": (0, 255),
        "Protocol Type": (2, 22),
        "Homing Offset": (-1_044_479, 1_044_479),
        "Moving Threshold": (0, 1023),
        "Temperature Limit": (0, 100),
        "Max Voltage Limit": (31, 70),
        "Min Voltage Limit": (31, 70),
        "PWM Limit": (0, 885),
        "Current Limit": (0, 2352),
        "Velocity Limit": (0, 2047),
        "Max Position Limit": (0, 4095),
        "Min Position Limit": (0, 4095),
        "PWM Slope": (1, 255),
        "Torque Enable": (0, 1),
        "LED": (0, 1),
        "Status Return Level": (0, 2),
        "Velocity I Gain": (0, 16383),
        "Velocity P Gain": (0, 16383),
        "Position D Gain": (0, 16383),
        "Position I Gain": (0, 16383),
        "Position P Gain": (0, 16383),
        "Feedforward 2nd Gain": (0, 16383),
        "Feedforward 1st Gain": (0, 16383),
        "Bus Watchdog": (0, 127),
        "Profile Acceleration": (0, 32767),
        "Profile Velocity": (0, 32767),
    }
)

# Goal registers bounded by another register (e-manual ranges "-Limit ~ Limit"): Data Limit Error.
SYMMETRIC_GOAL_LIMITS: Mapping[str, str] = MappingProxyType(
    {"Goal PWM": "PWM Limit", "Goal Current": "Current Limit", "Goal Velocity": "Velocity Limit"}
)

# Sensor readings that survive a reboot (the joint does not move because the firmware restarted).
PHYSICAL_STATE_REGISTERS = (
    "Present Position",
    "Present Input Voltage",
    "Present Temperature",
)
IDLE_INPUT_VOLTAGE_DECIVOLTS = 50  # 5.0 V, the e-manual's recommended supply, until physics says otherwise
IDLE_TEMPERATURE_C = 25


class RegisterAccessError(RobotError):
    """An instruction asked for something the servo refuses; ``status_error`` is the answer to send."""

    def __init__(self, status_error: StatusError, message: str) -> None:
        super().__init__(message)
        self.status_error = status_error


def baud_rate_index(baud_rate_bps: int) -> int:
    """The Baud Rate(8) register value for ``baud_rate_bps``; raises RobotError listing valid rates."""
    try:
        return BAUD_RATE_INDEX_BY_BPS[baud_rate_bps]
    except KeyError:
        raise RobotError(
            f"XC330 cannot run at {baud_rate_bps} bps; valid rates: {sorted(BAUD_RATE_INDEX_BY_BPS)}"
        ) from None


class ServoRegisters:
    """The control-table memory of one servo, initialised to factory defaults plus ``overrides``.

    ``overrides`` (register name -> value) models a servo that was configured before it was put in
    the hand, e.g. ``{"ID": 7, "Baud Rate": baud_rate_index(4_000_000)}``; it is kept so a factory
    reset can be told apart from a reboot.
    """

    def __init__(self, table: ControlTable, overrides: Mapping[str, int] | None = None) -> None:
        if table.model_number != XC330_M288_FACTORY_DEFAULTS["Model Number"]:
            raise RobotError(
                f"ServoRegisters knows the XC330-M288 only; got {table.model_name} "
                f"(model number {table.model_number}) — add that model's e-manual defaults first"
            )
        self.table = table
        self._memory = bytearray(table.memory_size_bytes)
        self._first_ram_address = table.register(FIRST_RAM_REGISTER).address
        self._slots: dict[str, tuple[int, int, bool]] = {}
        self._indirect: tuple[int, int, int] | None = None
        if "Indirect Address 1" in table and "Indirect Data 1" in table:
            slots = sum(1 for name in table.names if name.startswith("Indirect Data ") and name[14:].isdigit())
            self._indirect = (
                table.register("Indirect Address 1").address,
                table.register("Indirect Data 1").address,
                slots,
            )
        for name in (*READ_ONLY_REGISTERS, *SIGNED_REGISTERS, *VALUE_RANGES, *XC330_M288_FACTORY_DEFAULTS):
            table.register(name)  # fail loudly if a transcribed name is not in this table
        self._apply(XC330_M288_FACTORY_DEFAULTS)
        self.set("Model Number", table.model_number)
        self.set("Firmware Version", VIRTUAL_FIRMWARE_VERSION)
        self.set("Present Input Voltage", IDLE_INPUT_VOLTAGE_DECIVOLTS)
        self.set("Present Temperature", IDLE_TEMPERATURE_C)
        self.set("Present Position", round(table.type_info.get("value_of_zero_radian_position", 0)))
        self._apply(overrides or {})
        self.power_on()

    # -- device side -------------------------------------------------------------------------------

    @property
    def motor_id(self) -> int:
        """The servo's current ID register (it changes if the host writes ID)."""
        return self.get("ID")

    @property
    def torque_enabled(self) -> bool:
        return self.get("Torque Enable") == 1

    def is_signed(self, name: str) -> bool:
        """Whether register ``name`` holds a two's-complement value."""
        return name in SIGNED_REGISTERS or self.table.is_signed(name)

    def _slot(self, name: str) -> tuple[int, int, bool]:
        """(address, end, signed) of register ``name``, cached: the physics reads these every step."""
        slot = self._slots.get(name)
        if slot is None:
            register = self.table.register(name)
            slot = self._slots[name] = (register.address, register.end, self.is_signed(name))
        return slot

    def get(self, name: str) -> int:
        """Value of register ``name`` (signed where the register is signed)."""
        address, end, signed = self._slot(name)
        return int.from_bytes(self._memory[address:end], "little", signed=signed)

    def set(self, name: str, value: int) -> None:
        """Device-side write (firmware/physics): no access rules; raises RobotError if it cannot fit."""
        address, end, signed = self._slot(name)
        register = self.table.register(name)
        try:
            encoded = int(value).to_bytes(end - address, "little", signed=signed)
        except OverflowError:
            raise RobotError(
                f"register {name!r} ({register.size} bytes, signed={self.is_signed(name)}) cannot hold {value}"
            ) from None
        self._memory[address:end] = encoded

    def snapshot(self) -> bytes:
        """A copy of the whole memory (for logs and tests)."""
        return bytes(self._memory)

    def power_on(self) -> None:
        """Fill the RAM registers the e-manual leaves as "-" the way the firmware does at boot."""
        self.set("Goal PWM", self.get("PWM Limit"))
        self.set("Goal Current", self.get("Current Limit"))
        self.set("Goal Velocity", 0)
        self.set("Goal Position", self.get("Present Position"))
        self.set("Position Trajectory", self.get("Present Position"))
        if self._indirect is not None:
            # e-manual: Indirect Address k starts out pointing at Indirect Data k itself.
            first_address, first_data, slots = self._indirect
            for slot in range(slots):
                start = first_address + 2 * slot
                self._memory[start : start + 2] = (first_data + slot).to_bytes(2, "little")

    def reboot(self) -> None:
        """REBOOT: RAM back to its initial values, EEPROM kept, sensor readings kept."""
        physical = {name: self.get(name) for name in PHYSICAL_STATE_REGISTERS}
        ram_defaults = {
            name: value
            for name, value in XC330_M288_FACTORY_DEFAULTS.items()
            if self.table.register(name).address >= self._first_ram_address
        }
        ram_start = self._first_ram_address
        self._memory[ram_start:] = bytes(len(self._memory) - ram_start)
        self._apply(ram_defaults)
        self._apply(physical)
        self.power_on()

    def factory_reset(self, keep: tuple[str, ...] = ()) -> None:
        """FACTORY_RESET: every register to its factory default except the names in ``keep``."""
        kept = {name: self.get(name) for name in keep}
        physical = {name: self.get(name) for name in PHYSICAL_STATE_REGISTERS}
        self._apply(XC330_M288_FACTORY_DEFAULTS)
        self.set("Homing Offset", 0)
        self._apply({**kept, **physical})
        self.reboot()

    # -- host side (instruction packets) -----------------------------------------------------------

    def host_read(self, address: int, length: int) -> bytes:
        """READ: ``length`` bytes from ``address``; raises RegisterAccessError (Access, Data Length)."""
        if length <= 0:
            raise RegisterAccessError(StatusError.DATA_LENGTH, f"read of {length} bytes at {address}")
        if address < 0 or address + length > len(self._memory):
            raise RegisterAccessError(
                StatusError.ACCESS,
                f"read {address}..{address + length - 1} runs past the control table "
                f"(last address {len(self._memory) - 1})",
            )
        data = bytearray(self._memory[address : address + length])
        if self._indirect is not None:
            # Indirect Data k reads the byte at the address held in Indirect Address k (e-manual).
            first_address, first_data, slots = self._indirect
            for offset in range(max(address, first_data), min(address + length, first_data + slots)):
                slot = offset - first_data
                target = int.from_bytes(self._memory[first_address + 2 * slot : first_address + 2 * slot + 2], "little")
                if target < len(self._memory):
                    data[offset - address] = self._memory[target]
        return bytes(data)

    def check_host_write(self, address: int, data: bytes) -> dict[str, int]:
        """Validate a WRITE without applying it; returns register name -> new value.

        Raises RegisterAccessError with the error a real X-series answers: Access (undefined address,
        read-only register, EEPROM while torque is on), Data Length (a register only partly
        covered), Data Range (value outside the e-manual range), Data Limit (goal beyond its limit).
        """
        values = self._decode_write(address, data)
        torque_on = self.torque_enabled
        for name in values:
            register = self.table.register(name)
            if name in READ_ONLY_REGISTERS:
                raise RegisterAccessError(StatusError.ACCESS, f"{name!r} at {register.address} is read-only")
            if torque_on and register.address < self._first_ram_address:
                raise RegisterAccessError(
                    StatusError.ACCESS, f"{name!r} is EEPROM; write Torque Enable = 0 before changing it"
                )
        for name, value in values.items():
            low, high = VALUE_RANGES.get(name, (None, None))
            if name == "Operating Mode" and value not in OPERATING_MODES:
                raise RegisterAccessError(
                    StatusError.DATA_RANGE, f"Operating Mode {value}; valid: {sorted(OPERATING_MODES)}"
                )
            if low is not None and high is not None and not low <= value <= high:
                raise RegisterAccessError(StatusError.DATA_RANGE, f"{name} {value} outside {low}..{high}")
        self._check_limits(values)
        if values.get("Torque Enable") == 1 and self.get("Hardware Error Status") != 0:
            # e-manual, Shutdown(63): after a shutdown only REBOOT can turn torque back on.
            raise RegisterAccessError(
                StatusError.RESULT_FAIL,
                f"Hardware Error Status is {self.get('Hardware Error Status'):#04x}; reboot before enabling torque",
            )
        return values

    def host_write(self, address: int, data: bytes) -> dict[str, int]:
        """WRITE: validate (see :meth:`check_host_write`), then apply all or nothing."""
        values = self.check_host_write(address, data)
        operating_mode_changed = "Operating Mode" in values and values["Operating Mode"] != self.get("Operating Mode")
        self._apply(values)
        if operating_mode_changed:
            # e-manual, Operating Mode(11): switching resets the profile and the PWM/current goals.
            self.set("Profile Velocity", 0)
            self.set("Profile Acceleration", 0)
            self.set("Goal PWM", self.get("PWM Limit"))
            self.set("Goal Current", self.get("Current Limit"))
        return values

    # -- helpers -----------------------------------------------------------------------------------

    def _apply(self, values: Mapping[str, int]) -> None:
        for name, value in values.items():
            self.set(name, value)

    def _decode_write(self, address: int, data: bytes) -> dict[str, int]:
        if not data:
            raise RegisterAccessError(StatusError.DATA_LENGTH, f"write of 0 bytes at {address}")
        end = address + len(data)
        if address < 0 or end > len(self._memory):
            raise RegisterAccessError(StatusError.ACCESS, f"write {address}..{end - 1} runs past the control table")
        values: dict[str, int] = {}
        cursor = address
        while cursor < end:
            register = self.table.register_at(cursor)
            if register is None:
                if self._register_covering(cursor) is not None:
                    raise RegisterAccessError(StatusError.DATA_LENGTH, f"write at {cursor} starts inside a register")
                raise RegisterAccessError(StatusError.ACCESS, f"address {cursor} is not a defined register")
            if register.end > end:
                raise RegisterAccessError(
                    StatusError.DATA_LENGTH,
                    f"write covers {end - cursor} of {register.size} bytes of {register.name!r}",
                )
            raw = data[cursor - address : register.end - address]
            values[register.name] = int.from_bytes(raw, "little", signed=self.is_signed(register.name))
            cursor = register.end
        return values

    def _register_covering(self, address: int) -> Register | None:
        for register in self.table.registers:
            if register.address <= address < register.end:
                return register
        return None

    def _check_limits(self, values: Mapping[str, int]) -> None:
        def current(name: str) -> int:
            return values.get(name, self.get(name))

        for goal, limit in SYMMETRIC_GOAL_LIMITS.items():
            if goal in values and abs(values[goal]) > current(limit):
                raise RegisterAccessError(
                    StatusError.DATA_LIMIT, f"{goal} {values[goal]} beyond +-{limit} {current(limit)}"
                )
        if "Goal Position" in values:
            goal = values["Goal Position"]
            if current("Operating Mode") == POSITION_CONTROL_MODE:
                low, high = current("Min Position Limit"), current("Max Position Limit")
            else:
                low, high = -EXTENDED_POSITION_RANGE_TICKS, EXTENDED_POSITION_RANGE_TICKS
            if not low <= goal <= high:
                raise RegisterAccessError(StatusError.DATA_LIMIT, f"Goal Position {goal} outside {low}..{high}")
