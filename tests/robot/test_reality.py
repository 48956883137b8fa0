"""The virtual hand's hidden reality (robot/reality.py): seeded draws, ranges, the sealed JSON copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handrail.robot.errors import RobotError
from handrail.robot.reality import PER_JOINT, REALITY_RANGES, Range, Reality, draw_reality, nominal_reality

JOINT_NAMES = tuple(f"{finger}_{joint}" for finger in ("index", "middle", "ring", "thumb") for joint in "abcd")
seeds = st.integers(min_value=0, max_value=2**63 - 1)


def test_same_seed_gives_the_identical_reality() -> None:
    assert draw_reality(7, JOINT_NAMES) == draw_reality(7, JOINT_NAMES)


def test_different_seeds_give_different_realities() -> None:
    first, second = draw_reality(7, JOINT_NAMES), draw_reality(8, JOINT_NAMES)
    assert first != second
    for name in REALITY_RANGES:
        assert getattr(first, name) != getattr(second, name), name


def test_every_range_field_is_a_reality_field_and_per_joint_fields_are_ranges() -> None:
    assert set(PER_JOINT) <= set(REALITY_RANGES)
    assert set(REALITY_RANGES) <= set(Reality.model_fields)


@settings(max_examples=200)
@given(seeds)
def test_every_drawn_value_lies_within_its_documented_range(seed: int) -> None:
    reality = draw_reality(seed, JOINT_NAMES)
    for name, sampling in REALITY_RANGES.items():
        values = np.atleast_1d(np.asarray(getattr(reality, name), dtype=np.float64))
        assert values.shape == ((len(JOINT_NAMES),) if name in PER_JOINT else (1,)), name
        assert np.all((values >= sampling.low) & (values <= sampling.high)), (name, values, sampling)


def test_per_joint_values_are_drawn_independently_per_joint() -> None:
    reality = draw_reality(3, JOINT_NAMES)
    for name in PER_JOINT:
        assert len(set(getattr(reality, name))) == len(JOINT_NAMES), name


def test_log_ranges_are_drawn_uniformly_in_log_space() -> None:
    samples = np.asarray(Range(0.5, 2.0, log=True).sample(np.random.default_rng(0), 20_000))
    # Log-uniform on [0.5, 2]: the median is 1 and half the draws fall below it (a linear draw: a third).
    assert np.mean(samples < 1.0) == pytest.approx(0.5, abs=0.02)
    linear = np.asarray(Range(0.5, 2.0).sample(np.random.default_rng(0), 20_000))
    assert np.mean(linear < 1.0) == pytest.approx(1 / 3, abs=0.02)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds)
def test_write_then_read_returns_the_same_reality(tmp_path: Path, seed: int) -> None:
    reality = draw_reality(seed, JOINT_NAMES)
    path = tmp_path / "sealed" / f"reality_{seed}.json"
    reality.write(path)
    assert Reality.read(path) == reality


def _sealed_copy(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    path = tmp_path / "reality.json"
    draw_reality(5, JOINT_NAMES).write(path)
    return path, json.loads(path.read_text())


def test_a_wrong_length_per_joint_field_is_refused_naming_the_file(tmp_path: Path) -> None:
    path, data = _sealed_copy(tmp_path)
    data["backlash_rad"] = data["backlash_rad"][:-1]  # type: ignore[index]
    path.write_text(json.dumps(data))
    with pytest.raises(RobotError, match="backlash_rad has 15 values for 16 joints") as caught:
        Reality.read(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda data: data.pop("seed"), "seed"),
        (lambda data: data.update(surprise=1.0), "surprise"),
        (lambda data: data.update(schema_version=99), "schema_version"),
        (lambda data: data.update(command_latency_s=-0.001), "command_latency_s"),
    ],
    ids=["missing-field", "extra-field", "future-schema", "negative-latency"],
)
def test_an_invalid_field_is_refused_naming_the_file(tmp_path: Path, change: object, expected: str) -> None:
    path, data = _sealed_copy(tmp_path)
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises(RobotError, match=expected) as caught:
        Reality.read(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2, 3]"], ids=["broken-json", "empty", "a-list"])
def test_a_malformed_file_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "reality.json"
    path.write_text(text)
    with pytest.raises(RobotError, match="cannot be read") as caught:
        Reality.read(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(RobotError) as caught:
        Reality.read(path)
    assert str(path) in str(caught.value)


def test_nominal_reality_is_all_ones_and_zeros() -> None:
    reality = nominal_reality(JOINT_NAMES)
    for name in ("frictionloss_scale", "damping_scale", "armature_scale", "torque_constant_scale"):
        np.testing.assert_array_equal(reality.per_joint(name), np.ones(len(JOINT_NAMES)), err_msg=name)
    for name in ("backlash_rad", "encoder_offset_rad"):
        np.testing.assert_array_equal(reality.per_joint(name), np.zeros(len(JOINT_NAMES)), err_msg=name)
    assert reality.command_latency_s == 0.0
    assert reality.position_noise_ticks == 0.0
    assert reality.object_mass_scale == 1.0
    assert reality.object_friction_scale == 1.0
    assert reality.joint_names == JOINT_NAMES


def test_a_drawn_reality_is_not_nominal() -> None:
    drawn, nominal = draw_reality(0, JOINT_NAMES), nominal_reality(JOINT_NAMES)
    assert not np.allclose(drawn.per_joint("encoder_offset_rad"), nominal.per_joint("encoder_offset_rad"))


def test_reality_is_frozen() -> None:
    reality = nominal_reality(JOINT_NAMES)
    with pytest.raises(Exception, match="frozen"):
        reality.seed = 3  # type: ignore[misc]
