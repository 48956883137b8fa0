"""Dynamixel control tables, parsed at run time from the files shipped in ``dynamixel-sdk``.

The ``dynamixel-sdk`` distribution carries ROBOTIS' own model files under
``dynamixel_easy_sdk/control_table/``: ``dynamixel.model`` maps model numbers to file names, and one
``<model>.model`` per servo lists ``[type info]``, ``[unit info]`` and ``[control table]`` as
tab-separated rows. We parse those files instead of retyping addresses, so a register address in
handrail always has one source.

The files list a few aliases at the same address (``Indirect Address 1`` and ``Indirect Address Write``
are both 168); names stay unique, and :meth:`ControlTable.register_at` returns the first-listed one.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from handrail.robot.errors import ControlTableError

CONTROL_TABLE_PACKAGE = "dynamixel_easy_sdk"
CONTROL_TABLE_FOLDER = "control_table"
MODEL_LIST_FILE = "dynamixel.model"
MODEL_FILE_SUFFIX = ".model"

_TYPE_SECTION = "[type info]"
_UNIT_SECTION = "[unit info]"
_TABLE_SECTION = "[control table]"


@dataclass(frozen=True)
class Register:
    """One named item of a control table: ``size`` bytes, little-endian, starting at ``address``."""

    name: str
    address: int
    size: int

    def __post_init__(self) -> None:
        if self.address < 0 or self.size not in (1, 2, 4):
            raise ControlTableError(
                f"register {self.name!r}: address {self.address}, size {self.size} — "
                "addresses are >= 0 and sizes are 1, 2 or 4 bytes"
            )

    @property
    def end(self) -> int:
        """First address past this register."""
        return self.address + self.size


@dataclass(frozen=True)
class UnitInfo:
    """A ``[unit info]`` row: one raw LSB is ``value`` ``unit``; ``signed`` says how to read the bytes."""

    name: str
    value: float
    unit: str
    signed: bool


@dataclass(frozen=True)
class ControlTable:
    """The control table of one Dynamixel model, as ROBOTIS ships it.

    ``type_info`` holds the ``[type info]`` numbers (``value_of_zero_radian_position`` [ticks],
    ``min_radian``/``max_radian`` [rad], ...); ``unit_info`` the per-register LSB sizes, e.g.
    Present Velocity at 0.0239691227 [rad/s] per LSB, signed.
    """

    model_name: str
    model_number: int
    registers: tuple[Register, ...]
    type_info: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType({}))
    unit_info: MappingProxyType[str, UnitInfo] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None
    _by_name: MappingProxyType[str, Register] = field(init=False, repr=False, compare=False)
    _by_address: MappingProxyType[int, Register] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Register] = {}
        by_address: dict[int, Register] = {}
        for register in self.registers:
            if register.name in by_name:
                raise ControlTableError(
                    f"control table {self.model_name}: register {register.name!r} listed twice "
                    f"(addresses {by_name[register.name].address} and {register.address}) — "
                    "names must be unique"
                )
            by_name[register.name] = register
            by_address.setdefault(register.address, register)  # first-listed name wins for aliases
        for name in self.unit_info:
            if name not in by_name:
                raise ControlTableError(
                    f"control table {self.model_name}: [unit info] names {name!r}, which is not a register"
                )
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_by_address", MappingProxyType(by_address))

    @property
    def names(self) -> tuple[str, ...]:
        """Register names in file order."""
        return tuple(register.name for register in self.registers)

    @property
    def memory_size_bytes(self) -> int:
        """Bytes needed to hold every listed register (one past the highest register end)."""
        return max(register.end for register in self.registers)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def register(self, name: str) -> Register:
        """The register called ``name``; raises ControlTableError listing the valid names."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ControlTableError(
                f"{self.model_name} has no register {name!r}; valid names: {', '.join(self.names)}"
            ) from None

    def register_at(self, address: int) -> Register | None:
        """The (first-listed) register starting at ``address``, or None if none starts there."""
        return self._by_address.get(address)

    def is_signed(self, name: str) -> bool:
        """Whether ``[unit info]`` marks register ``name`` as signed (two's complement)."""
        self.register(name)
        info = self.unit_info.get(name)
        return info is not None and info.signed


def control_table_folder() -> Path:
    """The folder of model files inside the installed ``dynamixel-sdk`` (without importing it)."""
    spec = importlib.util.find_spec(CONTROL_TABLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ControlTableError(
            f"package {CONTROL_TABLE_PACKAGE!r} is not installed — install dynamixel-sdk>=4.0, "
            "which ships the Dynamixel control-table files"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / CONTROL_TABLE_FOLDER
        if (folder / MODEL_LIST_FILE).is_file():
            return folder
    raise ControlTableError(
        f"{CONTROL_TABLE_PACKAGE} has no {CONTROL_TABLE_FOLDER}/{MODEL_LIST_FILE} — reinstall dynamixel-sdk>=4.0"
    )


def load_model_list(folder: Path | None = None) -> dict[int, str]:
    """Model number -> model name (file stem, e.g. ``1240 -> "xc330_m288"``) from ``dynamixel.model``."""
    path = (folder or control_table_folder()) / MODEL_LIST_FILE
    models: dict[int, str] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cells = line.strip().split("\t")
        if line_number == 1 or not line.strip():
            continue  # column header "Number<TAB>Name"
        if len(cells) < 2:
            raise ControlTableError(f"{path}:{line_number}: expected 'number<TAB>file', got {line!r}")
        try:
            number = int(cells[0])
        except ValueError:
            raise ControlTableError(f"{path}:{line_number}: model number {cells[0]!r} is not an integer") from None
        models[number] = cells[1].removesuffix(MODEL_FILE_SUFFIX)
    return models


def normalize_model_name(model: str) -> str:
    """``"XC330-M288"``, ``"xc330_m288.model"`` -> ``"xc330_m288"`` (the file stem)."""
    return model.strip().lower().replace("-", "_").removesuffix(MODEL_FILE_SUFFIX)


def parse_model_file(path: Path, model_number: int) -> ControlTable:
    """Parse one ``<model>.model`` file; raises ControlTableError naming the file and line."""
    section: str | None = None
    skip_column_header = False
    type_info: dict[str, float] = {}
    unit_info: dict[str, UnitInfo] = {}
    registers: list[Register] = []
    for line_number, raw_line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("["):
            section = line
            skip_column_header = True
            continue
        if skip_column_header:
            skip_column_header = False  # each section opens with a row of column names
            continue
        cells = [cell.strip() for cell in line.split("\t")]
        where = f"{path}:{line_number}"
        try:
            if section == _TYPE_SECTION:
                type_info[cells[0]] = float(cells[1])
            elif section == _UNIT_SECTION:
                unit_info[cells[0]] = UnitInfo(
                    name=cells[0], value=float(cells[1]), unit=cells[2], signed=cells[3].lower() == "signed"
                )
            elif section == _TABLE_SECTION:
                registers.append(Register(name=cells[2], address=int(cells[0]), size=int(cells[1])))
            else:
                raise ControlTableError(f"{where}: row {line!r} outside a known section")
        except (IndexError, ValueError) as error:
            raise ControlTableError(f"{where}: cannot parse {line!r} in {section}: {error}") from None
    if not registers:
        raise ControlTableError(f"{path}: no {_TABLE_SECTION} rows — is this a Dynamixel model file?")
    registers += _indirect_slots(registers)
    return ControlTable(
        model_name=path.stem,
        model_number=model_number,
        registers=tuple(registers),
        type_info=MappingProxyType(type_info),
        unit_info=MappingProxyType(unit_info),
        source=path,
    )


# The model files list only the first Indirect Address/Data item; X-series servos have 20 of each,
# Indirect Address k at first + 2(k-1) (2 bytes) and Indirect Data k at first + (k-1) (1 byte)
# (ROBOTIS e-manual, "Indirect Address, Indirect Data").
INDIRECT_SLOTS = 20


def _indirect_slots(registers: list[Register]) -> list[Register]:
    by_name = {register.name: register for register in registers}
    first_address = by_name.get("Indirect Address 1")
    first_data = by_name.get("Indirect Data 1")
    if first_address is None or first_data is None:
        return []
    slots: list[Register] = []
    for slot in range(2, INDIRECT_SLOTS + 1):
        if f"Indirect Address {slot}" not in by_name:
            slots.append(Register(f"Indirect Address {slot}", first_address.address + 2 * (slot - 1), 2))
        if f"Indirect Data {slot}" not in by_name:
            slots.append(Register(f"Indirect Data {slot}", first_data.address + slot - 1, 1))
    return slots


def load_control_table(model: str = "xc330_m288") -> ControlTable:
    """Load the control table of ``model`` (e.g. ``"xc330_m288"`` or ``"XC330-M288"``).

    Tables are parsed once per model and shared (they are frozen). Raises ControlTableError listing
    the known models if ``model`` is not in ``dynamixel.model``.
    """
    return _load_control_table(normalize_model_name(model))


@functools.lru_cache(maxsize=16)
def _load_control_table(name: str) -> ControlTable:
    model = name
    folder = control_table_folder()
    numbers_by_name = {model_name: number for number, model_name in load_model_list(folder).items()}
    firmware_variant = re.fullmatch(r"(.+)_fw\d+", name)
    if name not in numbers_by_name and firmware_variant and firmware_variant.group(1) in numbers_by_name:
        # e.g. xc330_m288_fw52.model: the same servo (same model number) from a later firmware on.
        numbers_by_name[name] = numbers_by_name[firmware_variant.group(1)]
    if name not in numbers_by_name:
        raise ControlTableError(
            f"unknown Dynamixel model {model!r}; models in {folder / MODEL_LIST_FILE}: "
            f"{', '.join(sorted(numbers_by_name))}"
        )
    path = folder / f"{name}{MODEL_FILE_SUFFIX}"
    if not path.is_file():
        raise ControlTableError(f"model {model!r} is listed but {path} is missing — reinstall dynamixel-sdk")
    return parse_model_file(path, numbers_by_name[name])
