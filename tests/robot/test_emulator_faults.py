"""The pure parts of the emulator (robot/emulator.py): fault injection on replies, fault flags and names."""

from __future__ import annotations

import numpy as np
import pytest

from handrail.robot.dxl_protocol import (
    CRC_SIZE_BYTES,
    HEADER_SIZE_BYTES,
    Instruction,
    InstructionPacket,
    crc16,
    encode_status,
)
from handrail.robot.emulator import FAULT_KINDS, EmulatorError, FaultInjector, apply_fault, parse_fault_flag
from handrail.robot.profile import load_profile
from handrail.robot.reality import nominal_reality
from handrail.robot.virtual_bus import Reply
from handrail.robot.virtual_hand import VirtualHand

PING = InstructionPacket(packet_id=1, instruction=Instruction.PING, params=b"")
RETURN_DELAY_S = 0.0005


@pytest.fixture(scope="module")
def hand() -> VirtualHand:
    profile = load_profile()
    return VirtualHand(profile, nominal_reality(profile.joint_names))


def status_reply(motor_id: int = 1) -> Reply:
    return Reply(motor_id, encode_status(motor_id, 0, bytes([0xD8, 0x04, 52])), RETURN_DELAY_S)


def crc_ok(data: bytes) -> bool:
    return crc16(data[:-CRC_SIZE_BYTES]) == int.from_bytes(data[-CRC_SIZE_BYTES:], "little")


def injector(seed: int = 0, **settings: float | bool) -> FaultInjector:
    return FaultInjector(rng=np.random.default_rng(seed), **settings)  # type: ignore[arg-type]


def test_no_fault_passes_replies_through_unchanged() -> None:
    replies = [status_reply(i) for i in range(16)]
    assert injector()(PING, replies) == replies


def test_drop_fraction_1_drops_everything() -> None:
    faults = injector(drop_fraction=1.0)
    assert faults(PING, [status_reply(i) for i in range(16)]) == []
    assert faults.counts["dropped"] == 16


def test_drop_fraction_half_drops_about_half() -> None:
    faults = injector(seed=3, drop_fraction=0.5)
    kept = sum(len(faults(PING, [status_reply()])) for _ in range(2000))
    assert 900 <= kept <= 1100  # binomial(2000, 0.5): 4.5 sigma either side
    assert faults.counts["dropped"] == 2000 - kept


def test_corrupt_flips_one_bit_of_one_byte_past_the_header_and_breaks_the_crc() -> None:
    original = status_reply()
    assert crc_ok(original.data)  # the check itself can tell a good packet
    faults = injector(seed=11, corrupt_fraction=1.0)
    positions = set()
    for _ in range(200):
        (corrupted,) = faults(PING, [original])
        assert len(corrupted.data) == len(original.data)
        changed = [i for i, (a, b) in enumerate(zip(original.data, corrupted.data, strict=True)) if a != b]
        assert len(changed) == 1
        (position,) = changed
        assert position >= HEADER_SIZE_BYTES
        flipped = original.data[position] ^ corrupted.data[position]
        assert flipped & (flipped - 1) == 0  # exactly one bit
        assert not crc_ok(corrupted.data)
        positions.add(position)
    assert faults.counts["corrupted"] == 200
    assert positions == set(range(HEADER_SIZE_BYTES, len(original.data)))  # every byte past the header


def test_delay_adds_to_the_return_delay() -> None:
    faults = injector(delay_s=0.1)
    (delayed,) = faults(PING, [status_reply()])
    assert delayed.delay_s == pytest.approx(RETURN_DELAY_S + 0.1)
    assert delayed.data == status_reply().data
    assert faults.counts["delayed"] == 1


def test_disconnected_drops_everything() -> None:
    faults = injector(disconnected=True)
    assert faults(PING, [status_reply(i) for i in range(5)]) == []
    assert faults.counts["dropped"] == 5


def test_lose_drops_exactly_the_next_n_packets_then_passes_the_rest() -> None:
    faults = injector(lose_next=2)
    assert [len(faults(PING, [status_reply()])) for _ in range(4)] == [0, 0, 1, 1]
    assert faults.counts["dropped"] == 2 and faults.lose_next == 0


def test_clear_restores_a_clean_wire() -> None:
    faults = injector(drop_fraction=1.0, corrupt_fraction=1.0, delay_s=0.2, disconnected=True, lose_next=3)
    faults.clear()
    assert faults(PING, [status_reply()]) == [status_reply()]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("drop=0.5", ("drop", "0.5")), ("disconnect", ("disconnect", None)), ("stuck=index_pip", ("stuck", "index_pip"))],
)
def test_parse_fault_flag_accepts_kinds_with_and_without_a_value(flag: str, expected: tuple[str, str | None]) -> None:
    assert parse_fault_flag(flag) == expected


def test_parse_fault_flag_rejects_an_unknown_kind_listing_the_valid_ones() -> None:
    with pytest.raises(EmulatorError, match="explode") as caught:
        parse_fault_flag("explode=1")
    for kind in FAULT_KINDS:
        assert kind in str(caught.value)


def test_apply_fault_sets_the_injector(hand: VirtualHand) -> None:
    faults = injector()
    assert "50%" in apply_fault(hand, faults, "drop", "0.5")
    assert faults.drop_fraction == 0.5
    apply_fault(hand, faults, "delay", "20")
    assert faults.delay_s == pytest.approx(0.020)
    apply_fault(hand, faults, "disconnect")
    assert faults.disconnected
    assert "next 3 status" in apply_fault(hand, faults, "lose", "3")
    assert faults.lose_next == 3


@pytest.mark.parametrize("value", ["0", "-2"])
def test_apply_fault_refuses_to_lose_fewer_than_one_packet(hand: VirtualHand, value: str) -> None:
    with pytest.raises(EmulatorError, match="at least 1"):
        apply_fault(hand, injector(), "lose", value)


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_apply_fault_refuses_a_fraction_outside_0_to_1(hand: VirtualHand, value: str) -> None:
    with pytest.raises(EmulatorError, match="between 0 and 1"):
        apply_fault(hand, injector(), "drop", value)


def test_apply_fault_with_a_bad_joint_name_lists_the_valid_joints(hand: VirtualHand) -> None:
    with pytest.raises(EmulatorError, match="pinky_pip") as caught:
        apply_fault(hand, injector(), "stuck", "pinky_pip")
    for name in hand.profile.joint_names:
        assert name in str(caught.value)


def test_apply_fault_without_a_joint_asks_for_one(hand: VirtualHand) -> None:
    with pytest.raises(EmulatorError, match="needs a joint"):
        apply_fault(hand, injector(), "overheat")


def test_apply_fault_finds_a_joint_by_name_or_motor_id(hand: VirtualHand) -> None:
    try:
        assert apply_fault(hand, injector(), "stuck", "index_pip") == "stuck on motor 2 (index_pip)"
        assert apply_fault(hand, injector(), "stuck", 3) == "stuck on motor 3 (index_dip)"
    finally:
        hand.clear_faults()


def test_apply_fault_with_an_unknown_kind_lists_the_valid_ones(hand: VirtualHand) -> None:
    with pytest.raises(EmulatorError, match="valid: " + ", ".join(FAULT_KINDS)):
        apply_fault(hand, injector(), "explode", 1)
