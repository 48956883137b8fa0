"""Hand profile loading and validation: each bad field gets its own message naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail.robot.errors import ProfileError
from handrail.robot.profile import (
    TIGHTEN_ONLY_LIMITS,
    default_profile_path,
    format_profile_table,
    load_profile,
)

BUNDLED_TEXT = default_profile_path().read_text()
MJCF_LINE = 'mjcf = "../../sim/models/leap_hand.xml"'


def _write_profile(tmp_path: Path, text: str) -> Path:
    mjcf = default_profile_path().parent.joinpath("../../sim/models/leap_hand.xml").resolve()
    path = tmp_path / "hand.toml"
    path.write_text(text.replace(MJCF_LINE, f'mjcf = "{mjcf}"'))
    return path


def _mutate(old: str, new: str, count: int = 1) -> str:
    assert old in BUNDLED_TEXT, f"test fixture out of date: {old!r} not in the bundled profile"
    return BUNDLED_TEXT.replace(old, new, count)


def test_bundled_profile_loads_and_matches_its_model():
    profile = load_profile()
    assert len(profile.joints) == 16
    assert profile.joint_names[0] == "index_abd"
    assert profile.joint_names[-1] == "thumb_ip"
    assert profile.motor_ids == tuple(range(16))
    assert profile.control_rate_hz == 30.0
    assert profile.bus.baud == 4_000_000
    assert profile.bus.motor_model == "XC330-M288"
    for joint in profile.joints:
        assert joint.max_speed_rad_s == 3.0
        assert joint.current_limit_ma == 350.0
    assert profile.mjcf.is_file()


BAD_PROFILES = [
    # (name, old text, new text, substrings the message must contain)
    (
        "unknown mjcf joint",
        'mjcf_joint = "if_pip"',
        'mjcf_joint = "if_pipx"',
        ["mjcf_joint 'if_pipx'", "use one of"],
    ),
    (
        "unknown actuator",
        'mjcf_actuator = "mf_dip_act"',
        'mjcf_actuator = "mf_dip_motor"',
        ["mjcf_actuator 'mf_dip_motor'", "use one of"],
    ),
    (
        "limits outside the model range",
        "soft_limits_rad = [-0.90, 0.90]",
        "soft_limits_rad = [-1.50, 0.90]",
        ["joints[0] (index_abd)", "leave the model's range", "keep soft limits inside"],
    ),
    (
        "non-positive speed",
        "max_speed_rad_s = 3.0",
        "max_speed_rad_s = 0.0",
        ["max_speed_rad_s", "greater than 0", "positive speed"],
    ),
    ("duplicate motor ids", "motor_id = 1\n", "motor_id = 0\n", ["repeats motor_id = 0", "own motor_id"]),
    ("bad baud", "baud = 4000000", "baud = 4000001", ["bus.baud", "not a Dynamixel baud rate", "4000000"]),
    ("wrong protocol", "protocol = 2.0", "protocol = 1.0", ["bus.protocol", "Protocol 2.0"]),
    ("bad direction", "direction = 1", "direction = 2", ["direction", "use 1 when"]),
    (
        "lower above upper",
        "soft_limits_rad = [-0.25, 2.10]",
        "soft_limits_rad = [2.10, -0.25]",
        ["lower limit"],
    ),
    (
        "home outside limits",
        "home_rad = 0.35",
        "home_rad = 2.50",
        ["home_rad = 2.5", "outside soft_limits_rad"],
    ),
    (
        "unknown field",
        "home_rad = 0.00\n",
        "home_rad = 0.00\nmax_sped = 1.0\n",
        ["max_sped", "unknown field"],
    ),
    ("missing field", 'mjcf_actuator = "rf_mcp_act"\n', "", ["joints[9]", "mjcf_actuator", "missing"]),
    ("schema version", "schema_version = 1", "schema_version = 7", ["schema_version 7 is not supported"]),
    (
        "zero control rate",
        "control_rate_hz = 30.0",
        "control_rate_hz = 0.0",
        ["control_rate_hz", "rate in Hz"],
    ),
    (
        "hot temperature limit",
        "temperature_limit_c = 70.0",
        "temperature_limit_c = 150.0",
        ["temperature_limit_c"],
    ),
    (
        "joint loosens a hand-wide limit",
        "motor_id = 5\n",
        "motor_id = 5\nmax_speed_rad_s = 6.0\n",
        ["middle_mcp", "max_speed_rad_s = 6.0", "only tighten"],
    ),
    ("malformed toml", "[bus]", "[bus", ["not valid TOML"]),
    # Quoted numbers once got past "tighten only" and were converted afterwards (45 rad/s, 5000 mA).
    (
        "quoted hand-wide limit",
        "max_speed_rad_s = 3.0",
        'max_speed_rad_s = "45"',
        ["[joint_defaults]", "max_speed_rad_s = '45' is not a number", "without quotes"],
    ),
    (
        "quoted joint limit",
        "motor_id = 5\n",
        'motor_id = 5\ncurrent_limit_ma = "5000"\n',
        ["joints[5] ('middle_mcp')", "current_limit_ma = '5000' is not a number"],
    ),
    ("quoted bus timeout", "timeout_ms = 20.0", 'timeout_ms = "20"', ["bus.timeout_ms", "'20' is not a number"]),
    ("boolean gain", "position_p_gain = 800", "position_p_gain = true", ["servo.position_p_gain", "not a number"]),
    # Beyond the servo: 1e308 rad/s² overflowed configure's register arithmetic (a traceback).
    (
        "acceleration beyond the servo",
        "max_accel_rad_s2 = 40.0",
        "max_accel_rad_s2 = 1e308",
        ["max_accel_rad_s2 = 1e+308", "beyond what a XC330-M288 can do", "Profile Acceleration"],
    ),
    (
        "speed beyond the servo",
        "max_speed_rad_s = 3.0",
        "max_speed_rad_s = 45.0",
        ["max_speed_rad_s = 45", "no-load speed"],
    ),
    (
        "current beyond the servo",
        "current_limit_ma = 350.0",
        "current_limit_ma = 5000.0",
        ["current_limit_ma = 5000", "stall current"],
    ),
    (
        "tracking window too small for the speed",
        "max_tracking_error_rad = 0.30",
        "max_tracking_error_rad = 0.1",
        ["max_tracking_error_rad = 0.1", "2 x max_speed_rad_s / control_rate_hz = 0.200"],
    ),
]


@pytest.mark.parametrize(("case", "old", "new", "expected"), BAD_PROFILES, ids=[c[0] for c in BAD_PROFILES])
def test_each_bad_field_gets_its_own_message(tmp_path, case, old, new, expected):
    path = _write_profile(tmp_path, _mutate(old, new))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} missing from:\n{message}"
    assert len(message) < 1500, f"{case}: the message should name the problem, not dump the document:\n{message}"


def test_the_messages_differ_between_cases(tmp_path):
    messages = set()
    for index, (_, old, new, _) in enumerate(BAD_PROFILES):
        case_dir = tmp_path / str(index)
        case_dir.mkdir()
        with pytest.raises(ProfileError) as caught:
            load_profile(_write_profile(case_dir, _mutate(old, new)))
        messages.add(str(caught.value).replace(str(case_dir), ""))
    assert len(messages) == len(BAD_PROFILES)


def test_missing_profile_and_missing_mjcf(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
    path = tmp_path / "hand.toml"
    path.write_text(BUNDLED_TEXT.replace(MJCF_LINE, 'mjcf = "no_such_hand.xml"'))
    with pytest.raises(ProfileError, match=r"no_such_hand\.xml does not exist"):
        load_profile(path)


def test_an_mjcf_path_through_an_unset_variable_names_the_variable_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDRAIL_TEST_MODELS", raising=False)
    path = tmp_path / "hand.toml"
    path.write_text(BUNDLED_TEXT.replace(MJCF_LINE, 'mjcf = "${HANDRAIL_TEST_MODELS}/leap_hand.xml"'))
    with pytest.raises(ProfileError, match=r"environment variable HANDRAIL_TEST_MODELS, which is not set — export it"):
        load_profile(path)
    monkeypatch.setenv(
        "HANDRAIL_TEST_MODELS", str(default_profile_path().parent.joinpath("../../sim/models").resolve())
    )
    assert load_profile(path).mjcf.name == "leap_hand.xml"  # set: resolved


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        (
            "position_m = [0.0, 0.0, 0.1]\nquat_wxyz = [0.0, 2.0, 0.0, 0.0]",
            "has norm 2.0000, not 1 — give a unit quaternion",
        ),
        ("position_m = [0.0, nan, 0.1]", "must be finite numbers"),
    ],
    ids=["non-unit quaternion", "nan position"],
)
def test_a_bad_mount_names_the_fix(tmp_path, mount, expected):
    path = _write_profile(tmp_path, BUNDLED_TEXT + f"\n[mount]\n{mount}\n")
    with pytest.raises(ProfileError, match=expected):
        load_profile(path)


def test_joint_may_tighten_a_limit(tmp_path):
    path = _write_profile(tmp_path, _mutate("motor_id = 5\n", "motor_id = 5\nmax_speed_rad_s = 1.5\n"))
    profile = load_profile(path)
    assert profile.joint("middle_mcp").max_speed_rad_s == 1.5
    assert profile.joint("middle_pip").max_speed_rad_s == 3.0


def test_unknown_joint_lookup_lists_valid_names():
    with pytest.raises(ProfileError, match="valid names: index_abd"):
        load_profile().joint("pinky_mcp")


def _write_calibration(tmp_path: Path, body: str, profile_name: str = "leap_right", version: int = 1) -> Path:
    path = tmp_path / "joints.toml"
    path.write_text(f'schema_version = {version}\nprofile = "{profile_name}"\nkind = "joints"\n{body}')
    return path


def test_calibration_overlay_sets_offsets_and_tightens(tmp_path):
    calibration = _write_calibration(
        tmp_path,
        '[joints.index_pip]\nzero_offset_rad = 0.0123\ndirection = -1\ndirection_check = "wrong"\n'
        "[joints.thumb_ip]\ncurrent_limit_ma = 200.0\n",
    )
    plain = load_profile()
    profile = load_profile(calibration=calibration)
    assert profile.joint("index_pip").zero_offset_rad == pytest.approx(0.0123)
    assert profile.joint("index_pip").direction == -1
    assert profile.joint("thumb_ip").current_limit_ma == 200.0
    assert profile.fingerprint() != plain.fingerprint()
    assert "calibration:" in format_profile_table(profile)


@pytest.mark.parametrize(
    ("body", "kwargs", "expected"),
    [
        ("[joints.index_pip]\nmax_speed_rad_s = 9.0\n", {}, "only tighten"),
        ("[joints.pinky]\nzero_offset_rad = 0.1\n", {}, "joint 'pinky' is not in the profile"),
        ("[joints.index_pip]\nsoft_limits_rad = [0.0, 1.0]\n", {}, "cannot be calibrated"),
        ("", {"profile_name": "allegro"}, "made for profile 'allegro'"),
        ("", {"version": 99}, "schema_version 99 is not supported"),
        # A zero offset beyond what calibrate joints measures drove index_pip 0.14 rad past its soft limit.
        ("[joints.index_pip]\nzero_offset_rad = 1.0\n", {}, r"beyond ±0.25 rad"),
        ("[joints.index_pip]\nzero_offset_rad = -0.26\n", {}, r"beyond ±0.25 rad"),
        # A flipped direction the stops never showed, or says they confirmed the profile's.
        ("[joints.index_pip]\ndirection = -1\n", {}, "without a measurement"),
        ('[joints.index_pip]\ndirection = -1\ndirection_check = "confirmed"\n', {}, "without a measurement"),
        ('[joints.index_pip]\ndirection_check = "maybe"\n', {}, "give one of confirmed, wrong, unverified"),
        ("[joints.index_pip]\ndirection = 2\n", {}, "must be 1 or -1"),
        # Text and tables where numbers belong: named errors, not TypeError/AttributeError.
        ('[joints.index_pip]\ncurrent_limit_ma = "100000"\n', {}, "current_limit_ma = '100000' must be a finite"),
        ("[joints.index_pip]\ncurrent_limit_ma = true\n", {}, "must be a finite number"),
        ("joints = 5\n", {}, r"joints = 5 must be tables"),
        ("[joints]\nindex_pip = 3\n", {}, r"joints.index_pip = 3 must be a table"),
        # Negative or NaN limits: the message names the overlay, not the profile.
        ("[joints.index_pip]\ncurrent_limit_ma = -5.0\n", {}, r"calibration .*current_limit_ma = -5.0 must be > 0"),
        ("[joints.index_pip]\ncurrent_limit_ma = nan\n", {}, r"calibration .*current_limit_ma = nan must be a finite"),
    ],
)
def test_bad_calibration_overlays_are_refused(tmp_path, body, kwargs, expected):
    with pytest.raises(ProfileError, match=expected):
        load_profile(calibration=_write_calibration(tmp_path, body, **kwargs))


def test_fingerprint_is_stable_and_tracks_limits(tmp_path):
    assert load_profile().fingerprint() == load_profile().fingerprint()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    same = _write_profile(moved, BUNDLED_TEXT)
    assert load_profile(same).fingerprint() == load_profile().fingerprint()
    slower = _write_profile(tmp_path, _mutate("max_speed_rad_s = 3.0", "max_speed_rad_s = 2.0"))
    assert load_profile(slower).fingerprint() != load_profile().fingerprint()
    patient = tmp_path / "patient"
    patient.mkdir()
    retrying = _write_profile(patient, _mutate("timeout_ms = 20.0", "retries = 3\ntimeout_ms = 20.0"))
    assert load_profile(retrying).bus.retries == 3
    assert load_profile(retrying).fingerprint() == load_profile().fingerprint()  # how the host asks, not the hand


def test_table_lists_every_joint_and_limit():
    text = format_profile_table(load_profile())
    for joint in load_profile().joints:
        assert joint.name in text and joint.mjcf_joint in text
    for header in ("speed", "current", "temp", "soft limits"):
        assert header in text
    assert set(TIGHTEN_ONLY_LIMITS) == {
        "max_speed_rad_s",
        "max_accel_rad_s2",
        "max_tracking_error_rad",
        "current_limit_ma",
        "temperature_limit_c",
    }
    assert "units: zero, soft limits, home, track [rad]" in text
