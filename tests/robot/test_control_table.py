"""Control tables parsed from the model files shipped in dynamixel-sdk."""

from __future__ import annotations

from pathlib import Path

import pytest
from dynamixel_easy_sdk.control_table import ControlTable as EasySdkControlTable

from handrail.robot.control_table import (
    ControlTable,
    Register,
    load_control_table,
    load_model_list,
    normalize_model_name,
    parse_model_file,
)
from handrail.robot.errors import ControlTableError, HandrailError


def test_xc330_m288_identity_and_units() -> None:
    table = load_control_table()
    assert table.model_name == "xc330_m288"
    assert table.model_number == 1240
    assert table.type_info["value_of_zero_radian_position"] == 2048
    velocity = table.unit_info["Present Velocity"]
    assert velocity.value == pytest.approx(0.0239691227)
    assert velocity.unit == "rad/s"
    assert velocity.signed
    assert table.is_signed("Present Current")
    assert not table.is_signed("Present Temperature")


def test_registers_agree_with_the_sdks_own_parser() -> None:
    table = load_control_table("xc330_m288")
    reference = EasySdkControlTable.getControlTable(1240)
    listed = {r.name: (r.address, r.size) for r in table.registers if not _synthesized_indirect(r.name)}
    assert listed == {name: (item.address, item.size) for name, item in reference.items()}


def _synthesized_indirect(name: str) -> bool:
    for prefix in ("Indirect Address ", "Indirect Data "):
        if name.startswith(prefix) and name[len(prefix) :].isdigit() and name[len(prefix) :] != "1":
            return True
    return False


def test_indirect_slots_follow_the_e_manual_layout() -> None:
    table = load_control_table("xc330_m288_fw52")
    assert table.model_number == 1240
    assert table.register("Indirect Address 1").address == 168
    assert table.register("Indirect Address 20") == Register("Indirect Address 20", 168 + 2 * 19, 2)
    assert table.register("Indirect Data 1").address == 208
    assert table.register("Indirect Data 20") == Register("Indirect Data 20", 208 + 19, 1)


def test_well_known_x_series_addresses() -> None:
    table = load_control_table()
    assert table.register("Torque Enable") == Register("Torque Enable", 64, 1)
    assert table.register("Goal Position") == Register("Goal Position", 116, 4)
    assert table.register("Present Position") == Register("Present Position", 132, 4)
    assert table.memory_size_bytes == max(r.address + r.size for r in table.registers)


def test_aliases_at_one_address_are_kept_and_the_first_wins() -> None:
    table = load_control_table()
    assert table.register("Indirect Address Write").address == table.register("Indirect Address 1").address
    assert table.register_at(table.register("Indirect Address 1").address).name == "Indirect Address 1"
    assert table.register_at(14) is None


def test_unknown_register_lists_valid_names() -> None:
    with pytest.raises(ControlTableError, match="valid names: Model Number, Model Information"):
        load_control_table().register("Goal Postion")


def test_unknown_model_lists_known_models() -> None:
    with pytest.raises(ControlTableError, match="xc330_m288") as caught:
        load_control_table("xc999")
    assert isinstance(caught.value, HandrailError)


def test_model_names_are_normalized_and_tables_shared() -> None:
    assert normalize_model_name("XC330-M288") == "xc330_m288"
    assert load_control_table("XC330-M288") is load_control_table()


def test_model_list_maps_numbers_to_files() -> None:
    models = load_model_list()
    assert models[1240] == "xc330_m288"
    assert models[1200] == "xl330_m288"


def test_duplicate_register_names_are_rejected() -> None:
    with pytest.raises(ControlTableError, match="listed twice"):
        ControlTable("x", 1, (Register("ID", 7, 1), Register("ID", 8, 1)))


def test_bad_register_size_is_rejected() -> None:
    with pytest.raises(ControlTableError, match="sizes are 1, 2 or 4"):
        Register("Weird", 3, 3)


def test_malformed_model_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.model"
    path.write_text("[control table]\nAddress\tSize\tData Name\n0\ttwo\tModel Number\n", encoding="utf-8")
    with pytest.raises(ControlTableError, match=r"broken\.model:3"):
        parse_model_file(path, 1)


def test_model_file_without_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.model"
    path.write_text("[type info]\nname\tvalue\nmin_radian\t-3.14\n", encoding="utf-8")
    with pytest.raises(ControlTableError, match="no \\[control table\\] rows"):
        parse_model_file(path, 1)
