"""Domain randomization: the bundled ranges load, every draw stays inside them, the same seed draws the same
episode, ``--no-dr`` leaves the model bit-for-bit nominal, and bad files are refused by field name."""

import math
import re
from pathlib import Path

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handrail.robot.profile import load_profile
from handrail.robot.reality import REALITY_RANGES
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile
from handrail.sim.randomization import (
    EpisodeRandomization,
    ModelSnapshot,
    RandomizationError,
    RandomizationTargets,
    apply_to_model,
    default_randomization_path,
    describe_ranges,
    load_randomization,
    nominal_randomization,
    randomized_fields,
    sample_episode,
)

N_JOINTS = len(leap.JOINT_NAMES)
CONFIG = load_randomization()

# (section, entry) -> the sample field it is drawn into, and how the value is converted on the way.
DIRECT_FIELDS = {
    ("object", "mass_scale"): ("object_mass_scale", 1.0),
    ("object", "size_scale"): ("object_size_scale", 1.0),
    ("object", "friction_scale"): ("object_friction_scale", 1.0),
    ("hand", "fingertip_friction"): ("fingertip_friction", 1.0),
    ("hand", "joint_damping_scale"): ("joint_damping_scale", 1.0),
    ("hand", "joint_armature_scale"): ("joint_armature_scale", 1.0),
    ("hand", "joint_frictionloss_scale"): ("joint_frictionloss_scale", 1.0),
    ("hand", "actuator_kp_scale"): ("actuator_kp_scale", 1.0),
    ("hand", "actuator_force_limit_scale"): ("actuator_force_limit_scale", 1.0),
    ("hand", "backlash_rad"): ("backlash_rad", 1.0),
    ("hand", "joint_zero_offset_rad"): ("joint_zero_offset_rad", 1.0),
    ("timing", "command_latency_periods"): ("command_latency_periods", 1.0),
    ("timing", "control_period_jitter_std_fraction"): ("control_period_jitter_std_fraction", 1.0),
    ("timing", "joint_observation_delay_steps"): ("joint_observation_delay_steps", 1.0),
    ("timing", "object_pose_latency_steps"): ("object_pose_latency_steps", 1.0),
    ("observation", "joint_position_noise_std_rad"): ("joint_position_noise_std_rad", 1.0),
    ("observation", "object_position_noise_std_m"): ("object_position_noise_std_m", 1.0),
    ("observation", "object_rotation_noise_std_deg"): ("object_rotation_noise_std_rad", math.pi / 180),
    ("observation", "object_pose_dropout_probability"): ("object_pose_dropout_probability", 1.0),
    ("action", "action_noise_std_rad"): ("action_noise_std_rad", 1.0),
    ("world", "gravity_tilt_deg"): ("gravity_tilt_rad", math.pi / 180),
    ("perturbation", "probability_per_step"): ("perturbation_probability_per_step", 1.0),
    ("perturbation", "force_n"): ("perturbation_force_n", 1.0),
    ("perturbation", "duration_steps"): ("perturbation_duration_steps", 1.0),
}
# Entries that set a standard deviation of a per-episode offset rather than a value of their own.
OFFSET_STD_FIELDS = {
    ("observation", "object_position_offset_std_m"),
    ("observation", "object_rotation_offset_std_deg"),
}


@pytest.fixture
def scene():
    profile = load_profile()
    model = build_scene_for_profile(profile)
    targets = RandomizationTargets.find(
        model, [joint.mjcf_joint for joint in profile.joints], [joint.mjcf_actuator for joint in profile.joints]
    )
    return model, ModelSnapshot.take(model), targets


def _model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    """Every numpy array a model exposes, plus its options, copied."""
    arrays = {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        value = getattr(model, name)
        if isinstance(value, np.ndarray):
            arrays[name] = value.copy()
    for name in dir(model.opt):
        value = getattr(model.opt, name)
        if not name.startswith("_") and isinstance(value, np.ndarray | float | int):
            arrays[f"opt.{name}"] = np.array(value, copy=True)
    return arrays


def _assert_same_arrays(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    differing = [name for name in left if not np.array_equal(left[name], right[name], equal_nan=True)]
    assert not differing, f"model fields differ: {differing}"


def _assert_samples_equal(first: EpisodeRandomization, second: EpisodeRandomization) -> None:
    assert first.as_dict() == second.as_dict()


def test_the_bundled_file_loads_with_every_section():
    assert default_randomization_path().is_file()
    assert CONFIG.enabled
    entries = {(section, name) for section, name, _ in CONFIG.ranges()}
    assert entries == set(DIRECT_FIELDS) | OFFSET_STD_FIELDS
    assert all(entry is not None for _, _, entry in CONFIG.ranges())


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**63 - 1))
def test_every_drawn_value_lies_inside_its_configured_range(seed):
    sample = sample_episode(CONFIG, np.random.default_rng(seed), N_JOINTS)
    for section, name, entry in CONFIG.ranges():
        if (section, name) in OFFSET_STD_FIELDS:
            continue
        field, to_sample_units = DIRECT_FIELDS[(section, name)]
        values = np.atleast_1d(np.asarray(getattr(sample, field), dtype=float))
        assert values.shape == ((N_JOINTS,) if field in _per_joint_fields() else (1,))
        low, high = entry.low * to_sample_units, entry.high * to_sample_units
        assert np.all((low <= values) & (values <= high)), f"{section}.{name}: {values} outside [{low}, {high}]"
    # A correlated offset ~ N(0, std) stays within 6 std of zero on every axis (a 1e-9 event).
    position_std_m = CONFIG.observation.object_position_offset_std_m.high
    assert np.all(np.abs(sample.object_position_offset_m) <= 6 * position_std_m)
    rotation_std_rad = math.radians(CONFIG.observation.object_rotation_offset_std_deg.high)
    assert np.linalg.norm(sample.object_rotation_offset_rotvec_rad) <= 6 * rotation_std_rad
    assert isinstance(sample.joint_observation_delay_steps, int)
    assert isinstance(sample.perturbation_duration_steps, int)


def _per_joint_fields() -> set[str]:
    return {
        "joint_damping_scale",
        "joint_armature_scale",
        "joint_frictionloss_scale",
        "actuator_kp_scale",
        "actuator_force_limit_scale",
        "backlash_rad",
        "joint_zero_offset_rad",
    }


def test_the_same_seed_draws_the_same_episode_and_other_seeds_differ():
    first = sample_episode(CONFIG, np.random.default_rng(7), N_JOINTS)
    again = sample_episode(CONFIG, np.random.default_rng(7), N_JOINTS)
    other = sample_episode(CONFIG, np.random.default_rng(8), N_JOINTS)
    _assert_samples_equal(first, again)
    assert first.object_mass_scale != other.object_mass_scale
    assert not np.array_equal(first.joint_damping_scale, other.joint_damping_scale)


def test_successive_episodes_from_one_generator_differ():
    rng = np.random.default_rng(3)
    first, second = (sample_episode(CONFIG, rng, N_JOINTS) for _ in range(2))
    assert first.as_dict() != second.as_dict()


def test_loguniform_samples_uniformly_in_log_space():
    entry = CONFIG.hand.joint_damping_scale
    assert entry.distribution == "loguniform"
    values = entry.sample(np.random.default_rng(0), 50_000)
    geometric_middle = math.sqrt(entry.low * entry.high)
    # Uniform in log space: the median is the geometric middle and log-values fill their range evenly.
    assert np.median(values) == pytest.approx(geometric_middle, rel=0.03)
    counts, _ = np.histogram(np.log(values), bins=10, range=(math.log(entry.low), math.log(entry.high)))
    assert counts.min() > 0.9 * counts.mean()
    # A plain uniform draw over the same range fails both checks.
    uniform = entry.model_copy(update={"distribution": "uniform"}).sample(np.random.default_rng(0), 50_000)
    assert np.median(uniform) > 1.5 * geometric_middle


def test_no_dr_leaves_every_model_field_nominal(scene):
    model, snapshot, targets = scene
    before = _model_arrays(model)
    sample = sample_episode(nominal_randomization(), np.random.default_rng(0), N_JOINTS)
    apply_to_model(model, snapshot, sample, targets)
    _assert_same_arrays(before, _model_arrays(model))


def test_no_dr_means_zero_noise_delay_and_offsets():
    sample = sample_episode(nominal_randomization(), np.random.default_rng(0), N_JOINTS)
    for key, value in sample.as_dict().items():
        nominal = 1.0 if key.split("/")[1].endswith("_scale") else 0.0
        assert value == nominal, key
    assert sample.fingertip_friction is None


def test_a_disabled_file_samples_the_nominal_episode():
    disabled = CONFIG.model_copy(update={"enabled": False})
    rng = np.random.default_rng(5)
    _assert_samples_equal(
        sample_episode(disabled, rng, N_JOINTS),
        sample_episode(nominal_randomization(), np.random.default_rng(5), N_JOINTS),
    )
    assert "disabled" in describe_ranges(disabled).splitlines()[0]


def test_applying_from_the_snapshot_never_compounds(scene):
    model, snapshot, targets = scene
    first = sample_episode(CONFIG, np.random.default_rng(1), N_JOINTS)
    second = sample_episode(CONFIG, np.random.default_rng(2), N_JOINTS)
    apply_to_model(model, snapshot, first, targets)
    after_first = _model_arrays(model)
    apply_to_model(model, snapshot, first, targets)
    _assert_same_arrays(after_first, _model_arrays(model))
    apply_to_model(model, snapshot, second, targets)
    apply_to_model(model, snapshot, first, targets)
    _assert_same_arrays(after_first, _model_arrays(model))


def test_the_drawn_values_land_in_the_model(scene):
    model, snapshot, targets = scene
    nominal = snapshot.arrays
    sample = sample_episode(CONFIG, np.random.default_rng(11), N_JOINTS)
    apply_to_model(model, snapshot, sample, targets)
    cube = targets.cube_body_id
    size_scale = sample.object_size_scale
    assert model.body_mass[cube] == pytest.approx(nominal["body_mass"][cube] * sample.object_mass_scale)
    np.testing.assert_allclose(
        model.body_inertia[cube], nominal["body_inertia"][cube] * sample.object_mass_scale * size_scale**2
    )
    cube_geom = model.geom(leap.CUBE_GEOM_NAME).id
    np.testing.assert_allclose(model.geom_size[cube_geom], nominal["geom_size"][cube_geom] * size_scale)
    assert model.geom_rbound[cube_geom] == pytest.approx(np.linalg.norm(model.geom_size[cube_geom]))
    assert model.geom_friction[cube_geom, 0] == pytest.approx(
        nominal["geom_friction"][cube_geom, 0] * sample.object_friction_scale
    )
    assert np.all(model.geom_friction[list(targets.fingertip_geom_ids), 0] == sample.fingertip_friction)
    dofs, actuators = list(targets.dof_ids), list(targets.actuator_ids)
    np.testing.assert_allclose(model.dof_damping[dofs], nominal["dof_damping"][dofs] * sample.joint_damping_scale)
    np.testing.assert_allclose(model.dof_armature[dofs], nominal["dof_armature"][dofs] * sample.joint_armature_scale)
    np.testing.assert_allclose(
        model.actuator_gainprm[actuators, 0], nominal["actuator_gainprm"][actuators, 0] * sample.actuator_kp_scale
    )
    # The position servo stays a servo: its bias spring cancels its gain at the target.
    np.testing.assert_array_equal(model.actuator_biasprm[actuators, 1], -model.actuator_gainprm[actuators, 0])
    np.testing.assert_allclose(
        model.actuator_forcerange[actuators],
        nominal["actuator_forcerange"][actuators] * sample.actuator_force_limit_scale[:, None],
    )
    # Gravity keeps its magnitude and tilts by the drawn angle.
    gravity = model.opt.gravity
    assert np.linalg.norm(gravity) == pytest.approx(np.linalg.norm(nominal["opt.gravity"]))
    cos_tilt = gravity @ nominal["opt.gravity"] / np.linalg.norm(gravity) ** 2
    assert math.acos(min(1.0, cos_tilt)) == pytest.approx(sample.gravity_tilt_rad, abs=1e-7)
    # Derived constants follow the new mass (mj_setConst ran).
    assert model.body_subtreemass[cube] == pytest.approx(model.body_mass[cube])
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(leap.HOME_KEYFRAME_NAME).id)
    for _ in range(50):
        mujoco.mj_step(model, data)
    assert np.all(np.isfinite(data.qpos))


def test_the_fingertip_geoms_are_the_tip_spheres(scene):
    model, _, targets = scene
    names = [model.geom(geom_id).name for geom_id in targets.fingertip_geom_ids]
    assert names == [f"{finger}_tip_geom" for finger in leap.FINGER_PREFIXES]


def test_batched_fields_match_what_apply_writes(scene):
    model, snapshot, targets = scene
    samples = [sample_episode(CONFIG, np.random.default_rng(seed), N_JOINTS) for seed in range(3)]
    stacked = np.stack([randomized_fields(snapshot, sample, targets)["dof_damping"] for sample in samples])
    assert stacked.shape == (3, model.nv)
    apply_to_model(model, snapshot, samples[2], targets)
    np.testing.assert_array_equal(stacked[2], model.dof_damping)


def test_a_sample_for_another_hand_size_is_refused(scene):
    model, snapshot, targets = scene
    sample = sample_episode(CONFIG, np.random.default_rng(0), N_JOINTS - 1)
    with pytest.raises(RandomizationError, match="n_joints = 16"):
        apply_to_model(model, snapshot, sample, targets)


def test_the_sample_is_frozen_and_checks_its_shapes():
    sample = sample_episode(CONFIG, np.random.default_rng(0), N_JOINTS)
    with pytest.raises(ValueError):
        sample.joint_damping_scale[0] = 2.0
    with pytest.raises(ValueError, match="backlash_rad"):
        EpisodeRandomization(**{**sample.__dict__, "backlash_rad": np.zeros(N_JOINTS + 1)})


def test_as_dict_logs_every_value_under_dr(scene):
    sample = sample_episode(CONFIG, np.random.default_rng(0), N_JOINTS)
    logged = sample.as_dict(joint_names=leap.JOINT_NAMES)
    assert all(key.startswith("dr/") for key in logged)
    assert all(math.isfinite(value) for value in logged.values())
    assert logged["dr/actuator_kp_scale/if_mcp"] == sample.actuator_kp_scale[1]
    assert logged["dr/object_position_offset_m/z"] == sample.object_position_offset_m[2]
    # 7 per-joint fields, 2 vectors, 18 scalars.
    assert len(logged) == 7 * N_JOINTS + 2 * 3 + 18


def test_describe_ranges_prints_every_entry_from_the_data():
    table = describe_ranges(CONFIG)
    for section, name, entry in CONFIG.ranges():
        row = next(line for line in table.splitlines() if line.startswith(f"{section}.{name} "))
        cells = row.split()
        assert cells[2:4] == [f"{entry.low:g}", f"{entry.high:g}"], row
        assert entry.source and entry.source in row
    changed = CONFIG.model_copy(
        update={"object": CONFIG.object.model_copy(update={"mass_scale": CONFIG.object.mass_scale.pinned(1.234)})}
    )
    assert "1.234" in describe_ranges(changed) and "1.234" not in table


def test_comments_in_the_file_restate_no_numbers():
    """Numbers live in the data only, so a comment cannot disagree with a range (Playground's mistake)."""
    comment_numbers = []
    for line in default_randomization_path().read_text().splitlines():
        comment = line.partition("#")[2] if '"' not in line.partition("#")[0] else ""
        comment_numbers += re.findall(r"\d+(?:\.\d+)?", comment)
    assert comment_numbers == []


def test_backlash_covers_the_virtual_hands_reality():
    # The file's `source` for backlash_rad says so; keep it true.
    assert "covers the virtual hand's reality" in CONFIG.hand.backlash_rad.source
    assert CONFIG.hand.backlash_rad.low <= REALITY_RANGES["backlash_rad"].low
    assert CONFIG.hand.backlash_rad.high >= REALITY_RANGES["backlash_rad"].high


BAD_FILES = {
    "unknown field": (
        ("[object]\n", "[object]\ncolour = { low = 1.0, high = 1.0 }\n"),
        "object.colour: unknown field",
    ),
    "low above high": (
        ("mass_scale = { low = 0.8, high = 1.2", "mass_scale = { low = 1.3, high = 1.2"),
        "object.mass_scale: low = 1.3 is above high = 1.2",
    ),
    "negative std": (
        ("joint_position_noise_std_rad = { low = 0.0,", "joint_position_noise_std_rad = { low = -0.01,"),
        "observation.joint_position_noise_std_rad: low = -0.01: a magnitude or standard deviation cannot be negative",
    ),
    "bad distribution": (
        ('distribution = "loguniform", source = "Dactyl (OpenAI 2018), joint damping"', 'distribution = "gauss"'),
        "hand.joint_damping_scale.distribution: Input should be 'uniform' or 'loguniform' (got 'gauss')",
    ),
    "schema version": (("schema_version = 1", "schema_version = 2"), "schema_version: schema_version 2 is not"),
    "fractional steps": (
        ("duration_steps = { low = 1,", "duration_steps = { low = 1.5,"),
        "perturbation.duration_steps.low:",
    ),
    "probability above one": (
        ("probability_per_step = { low = 0.0, high = 0.02", "probability_per_step = { low = 0.0, high = 1.5"),
        "perturbation.probability_per_step: [0.0, 1.5]: a probability must lie in [0, 1]",
    ),
    "missing entry": (("force_n = {", "# force_n = {"), "perturbation.force_n: missing"),
    "zero scale": (
        ("size_scale = { low = 0.95,", "size_scale = { low = 0.0,"),
        "object.size_scale: low = 0.0: a scale must be > 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_malformed_file_is_refused_naming_the_field(case, tmp_path: Path):
    (old, new), expected = BAD_FILES[case]
    text = default_randomization_path().read_text()
    assert text.count(old) == 1, f"the test's anchor {old!r} must occur once in the bundled file"
    bad = tmp_path / "randomization.toml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(RandomizationError) as error:
        load_randomization(bad)
    assert str(bad) in str(error.value)
    assert expected in str(error.value)


def test_a_missing_or_broken_file_is_refused(tmp_path: Path):
    with pytest.raises(RandomizationError, match="does not exist"):
        load_randomization(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("schema_version = \n")
    with pytest.raises(RandomizationError, match="not valid TOML"):
        load_randomization(broken)


def test_a_resized_cube_gets_its_collision_bounds_rebuilt(scene):
    model, snapshot, targets = scene
    sample = sample_episode(CONFIG, np.random.default_rng(0), N_JOINTS)
    grown = EpisodeRandomization(**{**sample.__dict__, "object_size_scale": 1.05})
    apply_to_model(model, snapshot, grown, targets)
    cube = targets.cube_body_id
    first, count = model.body_bvhadr[cube], model.body_bvhnum[cube]
    half_edge_m = model.geom_size[model.geom(leap.CUBE_GEOM_NAME).id, 0]
    assert half_edge_m == pytest.approx(0.0315)
    assert np.max(model.bvh_aabb[first : first + count, 3:]) >= half_edge_m
    with pytest.raises(RandomizationError, match="recompute_constants"):
        apply_to_model(model, snapshot, grown, targets, recompute_constants=False)
