"""SafetyLimits: what it refuses, and that every way to derive limits only tightens them.

Written against mutation testing (``bash scripts/mutation_test.sh robot/safety_limits.py``): each check
pins a boundary (equal soft limits, a zero limit, the first of several bad joints, a field too many or
too few) that an off-by-one in the validation would let through.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from handrail.robot.profile import load_profile
from handrail.robot.safety_limits import FIELD_NAMES, POSITIVE_FIELDS, SafetyConfigError, SafetyLimits

N = 4


def _arrays(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "soft_low_rad": np.array([-1.0, -0.5, 0.0, 0.2]),
        "soft_high_rad": np.array([1.0, 1.5, 2.0, 0.4]),
        "max_speed_rad_s": np.array([3.0, 2.0, 4.0, 1.0]),
        "max_accel_rad_s2": np.array([40.0, 30.0, 20.0, 10.0]),
        "max_tracking_error_rad": np.array([0.3, 0.4, 0.3, 0.5]),
        "current_limit_ma": np.array([350.0, 300.0, 200.0, 350.0]),
        "temperature_limit_c": np.array([70.0, 70.0, 65.0, 70.0]),
    }
    values.update(changes)
    return values


def _limits(**changes: object) -> SafetyLimits:
    return SafetyLimits(**_arrays(**changes))  # type: ignore[arg-type]


def _refused(match: str, **changes: object) -> str:
    with pytest.raises(SafetyConfigError, match=match) as error:
        _limits(**changes)
    return str(error.value)


# ---- construction --------------------------------------------------------------------------------------------


def test_limits_are_read_only_copies_and_frozen() -> None:
    speeds = np.array([3.0, 2.0, 4.0, 1.0])
    limits = _limits(max_speed_rad_s=speeds)
    speeds[0] = 100.0  # the caller's array is not the limits'
    assert limits.max_speed_rad_s[0] == 3.0 and limits.n_joints == N
    with pytest.raises(ValueError):
        limits.max_speed_rad_s[0] = 100.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_speed_rad_s = speeds  # type: ignore[misc]
    # No field-wise ==: arrays have no single truth value; equals() is the comparison.
    twin = _limits()
    assert limits != twin and limits.equals(twin)


@pytest.mark.parametrize(
    "value",
    [np.array(3.0), np.full((1, N), 3.0), np.zeros(0)],
    ids=["scalar", "2-D", "empty"],
)
def test_a_field_that_is_not_one_value_per_joint_is_refused(value: np.ndarray) -> None:
    _refused("max_speed_rad_s must be a 1-D array", max_speed_rad_s=value)


def test_limits_of_no_joints_are_refused() -> None:
    with pytest.raises(SafetyConfigError, match="soft_low_rad must be a 1-D array"):
        SafetyLimits(**{name: np.zeros(0) for name in FIELD_NAMES})


@pytest.mark.parametrize("size", [N - 1, N + 1])
def test_a_field_with_another_joint_count_is_refused(size: int) -> None:
    message = _refused("current_limit_ma has", current_limit_ma=np.full(size, 300.0))
    assert f"has {size} values but soft_low_rad has {N}" in message


@pytest.mark.parametrize("value", ["fast", {"a": 1}], ids=["text", "mapping"])
def test_a_field_that_is_not_numbers_is_refused(value: object) -> None:
    _refused("max_accel_rad_s2 is not an array of numbers", max_accel_rad_s2=value)


def test_the_first_non_finite_value_is_named() -> None:
    message = _refused("is not a finite number", max_speed_rad_s=np.array([3.0, np.inf, np.nan, 1.0]))
    assert "max_speed_rad_s[1] = inf" in message


@pytest.mark.parametrize("name", POSITIVE_FIELDS)
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_limit_that_must_be_positive_is_refused_at_zero_and_below(name: str, bad: float) -> None:
    values = np.array(_arrays()[name], dtype=float)
    values[2] = bad
    values[3] = bad - 1.0
    message = _refused("must be > 0", **{name: values})
    assert f"{name}[2] = {bad}" in message


@pytest.mark.parametrize("high", [0.0, -0.1], ids=["equal", "below"])
def test_a_soft_range_must_not_be_empty(high: float) -> None:
    message = _refused("is not below", soft_high_rad=np.array([1.0, 1.5, high, high]))
    assert message.startswith("safety limits of joint 2:")


# ---- deriving limits: only tighter ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.01, np.nan, np.inf, "half", None])
def test_a_speed_scale_outside_zero_to_one_is_refused(scale: object) -> None:
    with pytest.raises(SafetyConfigError, match="can only tighten"):
        _limits().scaled_speed(scale)  # type: ignore[arg-type]
    with pytest.raises(SafetyConfigError, match="can only tighten"):
        SafetyLimits.from_profile(load_profile(), speed_scale=scale)  # type: ignore[arg-type]


def test_scaled_speed_scales_speed_and_acceleration_only() -> None:
    limits = _limits()
    half = limits.scaled_speed(0.5)
    assert np.array_equal(half.max_speed_rad_s, 0.5 * limits.max_speed_rad_s)
    assert np.array_equal(half.max_accel_rad_s2, 0.5 * limits.max_accel_rad_s2)
    for name in set(FIELD_NAMES) - {"max_speed_rad_s", "max_accel_rad_s2"}:
        assert np.array_equal(getattr(half, name), getattr(limits, name)), name
    assert limits.scaled_speed(1.0).equals(limits)


def test_from_profile_scales_the_profiles_speed_and_acceleration() -> None:
    profile = load_profile()
    full = SafetyLimits.from_profile(profile)
    scaled = SafetyLimits.from_profile(profile, speed_scale=0.25)
    assert np.allclose(scaled.max_speed_rad_s, 0.25 * full.max_speed_rad_s)
    assert np.allclose(scaled.max_accel_rad_s2, 0.25 * full.max_accel_rad_s2)
    assert np.array_equal(scaled.current_limit_ma, full.current_limit_ma)
    assert full.n_joints == len(profile.joints)


def test_tightened_takes_the_stricter_of_each_limit() -> None:
    other = _limits(
        soft_low_rad=np.array([-2.0, 0.0, 0.1, 0.2]),
        soft_high_rad=np.array([0.5, 2.0, 1.0, 0.3]),
        current_limit_ma=np.array([400.0, 100.0, 200.0, 50.0]),
    )
    both = _limits().tightened(other)
    assert both.soft_low_rad.tolist() == [-1.0, 0.0, 0.1, 0.2]
    assert both.soft_high_rad.tolist() == [0.5, 1.5, 1.0, 0.3]
    assert both.current_limit_ma.tolist() == [350.0, 100.0, 200.0, 50.0]
    assert both.equals(other.tightened(_limits()))


@pytest.mark.parametrize("size", [N - 1, N + 1])
def test_limits_of_another_joint_count_cannot_be_combined(size: int) -> None:
    other = SafetyLimits(**{name: np.resize(np.asarray(values), size) for name, values in _arrays().items()})
    with pytest.raises(SafetyConfigError, match=f"limits of {N} and {size} joints"):
        _limits().tightened(other)


@pytest.mark.parametrize("low", [0.5, 0.9], ids=["touching", "apart"])
def test_soft_ranges_that_do_not_overlap_cannot_be_combined(low: float) -> None:
    # The other ranges of joints 1 ([-0.5, 1.5] here) and 3 ([0.2, 0.4]) start at their top ("touching": an
    # empty intersection too) or above it; the first such joint is named.
    other = _limits(
        soft_low_rad=np.array([-1.0, 1.5 + (low - 0.5), 0.0, 0.4 + (low - 0.5)]),
        soft_high_rad=np.array([1.0, 3.0, 2.0, 1.0]),
    )
    with pytest.raises(SafetyConfigError, match="do not overlap") as error:
        _limits().tightened(other)
    assert str(error.value).startswith("joint 1:")


# ---- as a dict (the policy file's metadata) ----------------------------------------------------------------------


def test_from_dict_round_trips_and_equals_compares_every_value() -> None:
    limits = _limits()
    assert SafetyLimits.from_dict(limits.as_dict()).equals(limits)
    for name in FIELD_NAMES:
        changed = limits.as_arrays()
        values = np.array(changed[name])
        values[3] += 0.01
        changed[name] = values
        assert not limits.equals(SafetyLimits(**changed)), name


def test_from_dict_names_a_missing_field_alone() -> None:
    data = _limits().as_dict()
    del data["temperature_limit_c"]
    with pytest.raises(SafetyConfigError) as error:
        SafetyLimits.from_dict(data)
    assert "missing fields ['temperature_limit_c'], unknown fields []" in str(error.value)


def test_from_dict_names_an_unknown_field_alone() -> None:
    data = {**_limits().as_dict(), "max_jerk": [1.0] * N}
    with pytest.raises(SafetyConfigError) as error:
        SafetyLimits.from_dict(data)
    assert "missing fields [], unknown fields ['max_jerk']" in str(error.value)
