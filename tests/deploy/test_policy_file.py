"""The policy file on the robot side: metadata read with onnxruntime alone, a clear message when it is
missing, `policy info`, and refusing a policy built for another hand with every difference named."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from handrail.deploy.policy_file import (
    POLICY_SCHEMA_VERSION,
    REQUIRED_FIELDS,
    PolicyFileError,
    PolicyMetadata,
    TensorInfo,
    describe_policy,
    io_differences,
    parse_policy_metadata,
    read_policy_metadata,
)
from handrail.deploy.policy_match import PolicyMismatchError, check_policy_matches, policy_differences
from handrail.robot.profile import default_profile_path

pytest.importorskip("torch")  # the fixtures export policies (reading them needs no torch: see the first test)


def _annotated(source: Path, out: Path, metadata: dict) -> Path:
    from handrail.sim.export import annotate_policy

    annotate_policy(source, out, metadata)
    return out


def _document(metadata: PolicyMetadata) -> dict:
    return json.loads(metadata.to_json())


def test_reading_a_policy_imports_neither_torch_nor_onnx(policy_file):
    code = (
        "import sys\n"
        "from handrail.deploy.policy_file import describe_policy, read_policy_metadata\n"
        "from handrail.deploy.policy_match import check_policy_file\n"
        "from handrail.robot.profile import load_profile\n"
        f"read_policy_metadata({str(policy_file)!r}); describe_policy({str(policy_file)!r})\n"
        f"check_policy_file({str(policy_file)!r}, load_profile())\n"
        "leaked = sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'onnx'))\n"
        "assert not leaked, leaked[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_policy_info_prints_the_facts(handrail_cli, policy_file, profile, capsys):
    assert handrail_cli(["policy", "info", str(policy_file)]) == 0
    printed = capsys.readouterr().out
    for expected in (
        "rotate-z",
        profile.name,
        profile.fingerprint(),
        "thumb_ip",
        "n_obs 44",
        "n_act 16",
        "30 Hz",
        "untrained",
        "steps 2048",
        "obs [batch, 44] tensor(float)",
        "action [batch, 16] tensor(float)",
    ):
        assert expected in printed, expected
    assert describe_policy(policy_file) in printed


def test_policy_info_escapes_what_the_file_says_instead_of_printing_terminal_codes(
    handrail_cli, policy_file, tmp_path, capsys
):
    document = {**_document(read_policy_metadata(policy_file)), "commit": "\x1b[2J\x1b[31mred\x07", "dr": "\x1b]0;x"}
    policy = _annotated(policy_file, tmp_path / "ansi.onnx", document)
    assert handrail_cli(["policy", "info", str(policy)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed
    assert "\\x1b[2J\\x1b[31mred\\x07" in printed  # shown, escaped


def test_a_bare_onnx_names_the_missing_fields_and_the_annotate_command(handrail_cli, bare_policy, capsys):
    with pytest.raises(PolicyFileError) as raised:
        read_policy_metadata(bare_policy)
    message = str(raised.value)
    assert "handrail_policy" in message and f"handrail policy annotate {bare_policy} --from-checkpoint" in message
    assert "--metadata meta.json" in message
    for field in REQUIRED_FIELDS:
        assert field in message, field

    assert handrail_cli(["policy", "info", str(bare_policy)]) == 2
    assert message in capsys.readouterr().err


def test_partial_metadata_lists_only_what_is_missing(bare_policy, policy_file, tmp_path):
    import onnx

    document = _document(read_policy_metadata(policy_file))
    del document["safety_limits"], document["commit"]
    model = onnx.load(bare_policy)
    onnx.helper.set_model_props(model, {"handrail_policy": json.dumps(document)})
    partial = tmp_path / "partial.onnx"
    onnx.save(model, partial)
    with pytest.raises(PolicyFileError, match=r"missing fields: safety_limits, commit\n.*policy annotate") as raised:
        read_policy_metadata(partial)
    assert "task" not in str(raised.value).split("missing fields:")[1]


def test_a_file_that_is_not_onnx_or_not_there_is_a_clear_error(tmp_path):
    junk = tmp_path / "policy.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(PolicyFileError, match="not an ONNX model onnxruntime can load"):
        read_policy_metadata(junk)
    with pytest.raises(PolicyFileError, match="does not exist — export one with `handrail export"):
        read_policy_metadata(tmp_path / "missing.onnx")


def test_an_unknown_schema_version_is_refused(policy_file):
    document = {**_document(read_policy_metadata(policy_file)), "schema_version": POLICY_SCHEMA_VERSION + 1}
    with pytest.raises(PolicyFileError, match="schema_version 2 is not supported — this handrail reads version 1"):
        parse_policy_metadata(document)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # A start pose of 50 rad drove ring_dip 0.225 rad past its soft limit; NaN skipped the start-up.
        ({"start_pose_rad": [50.0] * 16}, "start_pose_rad of joint 'index_abd' = 50.0 lies outside its soft limits"),
        ({"start_pose_rad": [float("nan")] * 16}, "= nan lies outside its soft limits"),
        ({"start_pose_rad": [0.0] * 15}, "start_pose_rad has 15 values for 16 joints"),
        # An unknown task passed `policy check` and stopped deploy at its first tick.
        ({"task": "juggle"}, "task 'juggle' is unknown to this handrail (it runs pose, rotate-z)"),
    ],
)
def test_a_start_pose_outside_the_limits_or_an_unknown_task_is_refused_on_reading(policy_file, change, words):
    document = {**_document(read_policy_metadata(policy_file)), **change}
    with pytest.raises(PolicyFileError, match=re.escape(words)):
        parse_policy_metadata(document)


def test_annotate_from_checkpoint_or_json_makes_a_bare_file_pass(
    handrail_cli, bare_policy, checkpoint_file, tmp_path, capsys
):
    from_checkpoint = tmp_path / "from_checkpoint.onnx"
    args = ["policy", "annotate", str(bare_policy), "--out", str(from_checkpoint)]
    assert handrail_cli([*args, "--from-checkpoint", str(checkpoint_file)]) == 0
    assert handrail_cli(["policy", "info", str(from_checkpoint)]) == 0

    meta_json = tmp_path / "meta.json"
    document = _document(read_policy_metadata(from_checkpoint))
    del document["schema_version"]  # optional in a hand-written file
    meta_json.write_text(json.dumps(document))
    from_json = tmp_path / "from_json.onnx"
    assert (
        handrail_cli(["policy", "annotate", str(bare_policy), "--out", str(from_json), "--metadata", str(meta_json)])
        == 0
    )
    assert read_policy_metadata(from_json) == read_policy_metadata(from_checkpoint)
    assert handrail_cli(["policy", "check", str(from_json)]) == 0
    assert "matches hand 'leap_right'" in capsys.readouterr().out


def test_a_matching_policy_passes_the_check(handrail_cli, policy_file, profile, capsys):
    metadata = read_policy_metadata(policy_file)
    assert policy_differences(metadata, profile).ok
    assert check_policy_matches(metadata, profile) == ()
    assert handrail_cli(["policy", "check", str(policy_file)]) == 0
    out = capsys.readouterr().out
    assert "matches hand 'leap_right'" in out and "warning" not in out


def _another_hand(document: dict) -> dict:
    """The policy's facts for a hand with two joints swapped, another rate, a soft limit, and history 2."""
    other = json.loads(json.dumps(document))
    names = other["action_spec"]["joint_names"]
    names[1], names[2] = names[2], names[1]  # index_mcp <-> index_pip
    other["control_rate_hz"] = 250.0  # above what the hand allows (100 Hz)
    other["safety_limits"]["soft_high_rad"][15] = 1.5  # thumb_ip: 1.75 on the hand
    other["history"] = 2  # but its observation spec has one tick of joint positions
    return other


def test_a_policy_for_another_hand_is_refused_naming_every_difference(policy_file, profile):
    other = parse_policy_metadata(_another_hand(_document(read_policy_metadata(policy_file))))
    with pytest.raises(PolicyMismatchError) as raised:
        check_policy_matches(other, profile, source="policy other.onnx")
    message = str(raised.value)
    assert message.startswith("policy other.onnx does not match hand 'leap_right'")
    assert "'index_mcp' is action 2 in the policy but joint 1 on the hand" in message
    assert "'index_pip' is action 1 in the policy but joint 2 on the hand" in message
    assert "the policy runs at 250 Hz" in message and "at most 100 Hz" in message
    assert (
        "safety limit soft_high_rad differs: " in message
        and "thumb_ip 1.5 in the policy vs 1.75 on the hand" in message
    )
    assert "'joint_position_rad' has size 32 in the hand's observation but 16 in the policy's" in message
    assert len(raised.value.differences) >= 5 and all(line in message for line in raised.value.differences)
    # Each change alone is caught: the check is not passing by one coincidence.
    baseline = _document(read_policy_metadata(policy_file))
    for key in ("control_rate_hz", "history"):
        single = {**baseline, key: _another_hand(baseline)[key]}
        assert not policy_differences(parse_policy_metadata(single), profile).ok, key


def test_the_cli_refuses_a_policy_for_another_hand_profile(handrail_cli, policy_file, tmp_path, capsys):
    text = default_profile_path().read_text()
    mjcf = (default_profile_path().parent / "../../sim/models/leap_hand.xml").resolve()
    text = text.replace('mjcf = "../../sim/models/leap_hand.xml"', f'mjcf = "{mjcf}"')
    slow_hand = tmp_path / "slow_hand.toml"
    slow_hand_text = text.replace("max_control_rate_hz = 100.0", "max_control_rate_hz = 20.0")
    slow_hand_text = slow_hand_text.replace("control_rate_hz = 30.0", "control_rate_hz = 20.0")
    slow_hand.write_text(slow_hand_text.replace("leap_right", "slow"))
    assert handrail_cli(["policy", "check", str(policy_file), "--profile", str(slow_hand)]) == 2
    err = capsys.readouterr().err
    assert "the policy runs at 30 Hz" in err and "at most 20 Hz" in err
    assert "trained for hand profile 'leap_right', driving 'slow'" in err


def test_a_runtime_history_other_than_the_policys_is_refused(policy_file, profile):
    metadata = read_policy_metadata(policy_file)
    with pytest.raises(PolicyMismatchError, match=r"the runtime builds 3 tick.*trained on 1"):
        check_policy_matches(metadata, profile, history=3)


def test_only_another_fingerprint_is_a_warning_not_a_refusal(handrail_cli, policy_file, profile, tmp_path, capsys):
    document = {**_document(read_policy_metadata(policy_file)), "profile_fingerprint": "0000000000000000"}
    warnings = check_policy_matches(parse_policy_metadata(document), profile)
    assert len(warnings) == 1 and "fingerprint 0000000000000000 (training) differs" in warnings[0]
    recalibrated = _annotated(policy_file, tmp_path / "recalibrated.onnx", document)
    assert handrail_cli(["policy", "check", str(recalibrated)]) == 0
    assert "warning: profile fingerprint 0000000000000000" in capsys.readouterr().out


def test_io_differences_name_the_contract(policy_file):
    metadata = read_policy_metadata(policy_file)
    good = ([TensorInfo("obs", ("batch", 44), "tensor(float)")], [TensorInfo("action", ("batch", 16), "tensor(float)")])
    assert io_differences(metadata, *good) == []
    problems = io_differences(
        metadata,
        [TensorInfo("input", (1, 40), "tensor(double)")],
        [TensorInfo("action", ("batch", 16), "tensor(float)"), TensorInfo("value", ("batch", 1), "tensor(float)")],
    )
    assert problems == [
        "the graph's input is named 'input', the contract names it 'obs'",
        "input 'input' is tensor(double), the contract needs float32",
        "input 'input' has shape [1, 40], but the metadata's spec needs [batch, 44]",
        "the graph needs exactly one output 'action', it has 2: action, value",
    ]
