"""Unit conversions between servo registers and joint units (robot/units.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.robot.units import JointUnits

CENTER_TICKS = 2048
TICKS_PER_REV = 4096
VELOCITY_RAD_S_PER_LSB = 0.0239691227  # XC330 Present Velocity unit
CURRENT_MA_PER_LSB = 1.0

directions = st.sampled_from([1.0, -1.0])
gear_ratios = st.floats(min_value=0.25, max_value=20.0, allow_nan=False, allow_infinity=False)
zero_offsets_rad = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False)
joint_angles_rad = st.floats(min_value=-4.0, max_value=4.0, allow_nan=False, allow_infinity=False)


def one_joint(direction: float, gear_ratio: float, zero_offset_rad: float) -> JointUnits:
    return JointUnits(
        direction=np.array([direction]),
        gear_ratio=np.array([gear_ratio]),
        zero_offset_rad=np.array([zero_offset_rad]),
        center_ticks=CENTER_TICKS,
        ticks_per_rev=TICKS_PER_REV,
        velocity_rad_s_per_lsb=VELOCITY_RAD_S_PER_LSB,
        current_ma_per_lsb=CURRENT_MA_PER_LSB,
    )


@given(directions, gear_ratios, zero_offsets_rad, joint_angles_rad)
def test_rad_to_ticks_to_rad_is_within_half_a_tick(
    direction: float, gear_ratio: float, zero_offset_rad: float, joint_rad: float
) -> None:
    units = one_joint(direction, gear_ratio, zero_offset_rad)
    back_rad = units.ticks_to_rad(units.rad_to_ticks([joint_rad]))
    half_tick_joint_rad = 0.5 * units.rad_per_tick / gear_ratio
    assert abs(back_rad[0] - joint_rad) <= half_tick_joint_rad * (1 + 1e-9) + 1e-12


@given(directions, gear_ratios, zero_offsets_rad, st.integers(min_value=0, max_value=TICKS_PER_REV - 1))
def test_ticks_to_rad_to_ticks_is_exact(
    direction: float, gear_ratio: float, zero_offset_rad: float, ticks: int
) -> None:
    units = one_joint(direction, gear_ratio, zero_offset_rad)
    assert units.rad_to_ticks(units.ticks_to_rad([ticks]))[0] == ticks


def test_rad_to_ticks_rounds_to_the_nearest_tick() -> None:
    # The half-tick bound above is tight: 0.4 tick rounds down, 0.6 tick rounds up.
    units = one_joint(1.0, 1.0, 0.0)
    assert units.rad_to_ticks([0.4 * units.rad_per_tick])[0] == CENTER_TICKS
    assert units.rad_to_ticks([0.6 * units.rad_per_tick])[0] == CENTER_TICKS + 1
    assert units.rad_to_ticks([-0.6 * units.rad_per_tick])[0] == CENTER_TICKS - 1


def test_center_ticks_is_minus_the_zero_offset_and_direction_flips_ticks() -> None:
    forward = one_joint(1.0, 2.0, 0.1)
    reverse = one_joint(-1.0, 2.0, 0.1)
    assert forward.ticks_to_rad([CENTER_TICKS])[0] == pytest.approx(-0.1)
    above = forward.rad_to_ticks([0.5])[0] - CENTER_TICKS
    below = reverse.rad_to_ticks([0.5])[0] - CENTER_TICKS
    assert above > 0
    assert below == -above


@given(directions, gear_ratios, st.integers(min_value=-2000, max_value=2000).filter(lambda raw: raw != 0))
def test_velocity_sign_follows_direction(direction: float, gear_ratio: float, raw: int) -> None:
    units = one_joint(direction, gear_ratio, 0.0)
    joint_rad_s = units.velocity_raw_to_rad_s([raw])[0]
    assert np.sign(joint_rad_s) == direction * np.sign(raw)
    assert abs(joint_rad_s) == pytest.approx(abs(raw) * VELOCITY_RAD_S_PER_LSB / gear_ratio)


@given(directions, st.integers(min_value=-1750, max_value=1750).filter(lambda raw: raw != 0))
def test_current_sign_follows_direction(direction: float, raw: int) -> None:
    units = one_joint(direction, 3.0, 0.0)
    current_ma = units.current_raw_to_ma([raw])[0]
    assert np.sign(current_ma) == direction * np.sign(raw)
    assert abs(current_ma) == pytest.approx(abs(raw) * CURRENT_MA_PER_LSB)  # gear does not scale current


@given(
    directions,
    gear_ratios,
    st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, allow_infinity=False),
)
def test_profile_velocity_never_exceeds_the_requested_speed_and_is_at_least_one(
    direction: float, gear_ratio: float, joint_rad_s: float
) -> None:
    units = one_joint(direction, gear_ratio, 0.0)
    raw = int(units.rad_s_to_velocity_raw([joint_rad_s])[0])
    assert raw >= 1
    speed_of = float(np.abs(units.velocity_raw_to_rad_s([raw])[0]))
    speed_of_next = float(np.abs(units.velocity_raw_to_rad_s([raw + 1])[0]))
    if abs(joint_rad_s) * gear_ratio >= VELOCITY_RAD_S_PER_LSB:
        assert speed_of <= abs(joint_rad_s) * (1 + 1e-12)
    else:
        assert raw == 1  # slower than one LSB: the smallest limit, never 0 ("unlimited")
    # Rounded down, not further: one more LSB would exceed the request.
    assert speed_of_next > abs(joint_rad_s)


def test_ma_to_current_raw_rounds_down_the_magnitude() -> None:
    units = JointUnits(
        direction=np.array([1.0, -1.0]),
        gear_ratio=np.array([1.0, 1.0]),
        zero_offset_rad=np.array([0.0, 0.0]),
        center_ticks=CENTER_TICKS,
        ticks_per_rev=TICKS_PER_REV,
        velocity_rad_s_per_lsb=VELOCITY_RAD_S_PER_LSB,
        current_ma_per_lsb=2.69,
    )
    np.testing.assert_array_equal(units.ma_to_current_raw([100.0, -100.0]), [37, 37])


def test_conversions_are_vectorized_per_joint() -> None:
    units = JointUnits(
        direction=np.array([1.0, -1.0, 1.0]),
        gear_ratio=np.array([1.0, 1.0, 2.0]),
        zero_offset_rad=np.array([0.0, 0.0, 0.0]),
        center_ticks=CENTER_TICKS,
        ticks_per_rev=TICKS_PER_REV,
        velocity_rad_s_per_lsb=VELOCITY_RAD_S_PER_LSB,
        current_ma_per_lsb=CURRENT_MA_PER_LSB,
    )
    quarter_turn = CENTER_TICKS + TICKS_PER_REV // 4
    np.testing.assert_allclose(
        units.ticks_to_rad([quarter_turn] * 3), [math.pi / 2, -math.pi / 2, math.pi / 4], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    ("direction", "gear_ratio", "zero_offset_rad"),
    [
        ([1.0, -1.0], [1.0], [0.0, 0.0]),  # one length differs
        ([[1.0, -1.0]], [[1.0, 1.0]], [[0.0, 0.0]]),  # common shape, but not (n,)
        (1.0, 1.0, 0.0),  # scalars
    ],
)
def test_shapes_are_checked_on_construction(direction: object, gear_ratio: object, zero_offset_rad: object) -> None:
    with pytest.raises(ValueError, match="common shape"):
        JointUnits(
            direction=np.asarray(direction),
            gear_ratio=np.asarray(gear_ratio),
            zero_offset_rad=np.asarray(zero_offset_rad),
            center_ticks=CENTER_TICKS,
            ticks_per_rev=TICKS_PER_REV,
            velocity_rad_s_per_lsb=VELOCITY_RAD_S_PER_LSB,
            current_ma_per_lsb=CURRENT_MA_PER_LSB,
        )
