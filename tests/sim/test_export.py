"""ONNX export: the graph computes the checkpoint's policy (normalizer included), carries its facts, and a
failed check leaves no file behind; annotate adds metadata to a graph exported by another tool."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from handrail.cli import build_parser, main
from handrail.deploy.policy_file import (
    POLICY_METADATA_KEY,
    PolicyFileError,
    metadata_from_checkpoint_info,
    read_policy_metadata,
)
from handrail.robot.profile import load_profile
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim import export
from handrail.sim.actions import ActionMap
from handrail.sim.checkpoint import Checkpoint, save_checkpoint
from handrail.sim.export import ExportError, PolicyModule, annotate_policy, export_policy
from handrail.sim.observation import default_spec

PROFILE = load_profile()


def _checkpoint(activation: str = "elu", *, history: int = 1, seed: int = 0) -> Checkpoint:
    """Random weights (64, 64) and a normalizer far from identity, with the info `handrail train` writes."""
    limits = SafetyLimits.from_profile(PROFILE)
    action_map = ActionMap.relative(PROFILE.joint_names, limits, PROFILE.control_period_s)
    spec = default_spec(16, history, 3)
    rng = np.random.default_rng(seed)
    widths = (spec.n_obs, 64, 64, 16)
    weights = [
        rng.normal(0, n_in**-0.5, (n_out, n_in)).astype(np.float32) for n_in, n_out in itertools.pairwise(widths)
    ]
    biases = [rng.normal(0, 0.1, n_out).astype(np.float32) for n_out in widths[1:]]
    info = {
        "task": "rotate-z",
        "seed": seed,
        "dr": {"enabled": True},
        "history": history,
        "max_pose_age_s": 0.1,
        "control_rate_hz": PROFILE.control_rate_hz,
        "profile_name": PROFILE.name,
        "profile_fingerprint": PROFILE.fingerprint(),
        "observation_spec": spec.to_dict(),
        "action_spec": action_map.to_dict(),
        "safety_limits": limits.as_dict(),
        "commit": "0123abc",
        "training": {"steps": 2048, "wall_time_s": 12.5},
    }
    mean, var = rng.normal(0.0, 2.0, spec.n_obs), rng.uniform(0.1, 4.0, spec.n_obs)
    return Checkpoint(weights, biases, activation, mean, var, obs_epsilon=1e-8, clip_obs=5.0, info=info)


def _run(path: Path, obs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["action"], {"obs": obs.astype(np.float32)})[0]


def _unnormalized_act(checkpoint: Checkpoint, obs: np.ndarray) -> np.ndarray:
    """The actor without the normalizer: what a graph missing it would compute."""
    identity = Checkpoint(
        checkpoint.actor_weights,
        checkpoint.actor_biases,
        checkpoint.activation,
        np.zeros(checkpoint.n_obs),
        np.ones(checkpoint.n_obs),
        1e-12,
        1e9,
        checkpoint.info,
    )
    return identity.act(obs)


@pytest.fixture
def checkpoint_file(tmp_path) -> Path:
    return save_checkpoint(_checkpoint(), tmp_path / "run" / "latest.pt")


def test_export_through_the_cli_prints_parity_and_writes_a_checked_file(checkpoint_file, tmp_path, capsys):
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    assert "export" in commands.choices, "call add_policy_commands(commands) in handrail.cli.build_parser"
    out = tmp_path / "policy.onnx"
    assert main(["export", str(checkpoint_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity on 1000 observations" in printed and str(out) in printed
    onnx.checker.check_model(onnx.load(out))
    assert not out.with_name(out.name + ".partial").exists()


def test_export_for_the_same_hand_under_another_name_prints_the_warning(checkpoint_file, tmp_path, capsys):
    renamed = tmp_path / "renamed.toml"
    text = PROFILE.source.read_text().replace(f'name = "{PROFILE.name}"', 'name = "leap_right_bench"', 1)
    mjcf = PROFILE.mjcf.resolve()
    renamed.write_text(text.replace('mjcf = "../../sim/models/leap_hand.xml"', f'mjcf = "{mjcf}"'))
    out = tmp_path / "policy.onnx"
    assert main(["export", str(checkpoint_file), "--out", str(out), "--profile", str(renamed)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("warning: ") and "leap_right_bench" in printed.splitlines()[0]
    assert export_policy(checkpoint_file, out, profile=renamed, parity_samples=4).warnings  # and in the report


@pytest.mark.parametrize("activation", ["elu", "tanh", "relu"])
def test_the_graph_computes_the_checkpoint_policy_with_its_normalizer(activation, tmp_path):
    checkpoint = _checkpoint(activation)
    report = export_policy(checkpoint, tmp_path / "policy.onnx", parity_samples=300)
    assert report.max_abs_diff <= 1e-5 and report.max_abs_diff_reference <= 1e-4
    assert (report.n_obs, report.n_act) == (44, 16) and report.file_size_bytes == report.path.stat().st_size
    rng = np.random.default_rng(42)
    std = np.sqrt(checkpoint.obs_var)
    obs = (checkpoint.obs_mean + rng.normal(0, 2, (200, 44)) * std).astype(np.float32)
    actions = _run(report.path, obs)
    np.testing.assert_allclose(actions, checkpoint.act(obs), atol=1e-4)
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    # The comparison above can fail: without the normalizer the actions are far off.
    assert np.abs(_unnormalized_act(checkpoint, obs) - actions).max() > 0.1


def test_the_batch_axis_is_dynamic(tmp_path):
    checkpoint = _checkpoint()
    path = export_policy(checkpoint, tmp_path / "policy.onnx", parity_samples=10).path
    for batch in (1, 7):
        obs = np.tile(checkpoint.obs_mean, (batch, 1)).astype(np.float32)
        assert _run(path, obs).shape == (batch, 16)


def test_metadata_round_trips(checkpoint_file, tmp_path):
    path = export_policy(checkpoint_file, tmp_path / "policy.onnx", parity_samples=10).path
    stored = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    document = json.loads(stored[POLICY_METADATA_KEY])
    checkpoint = _checkpoint()
    assert document == {"schema_version": 1, "start_pose_rad": None, **checkpoint.info}
    metadata = read_policy_metadata(path)
    assert metadata == metadata_from_checkpoint_info(checkpoint.info)
    assert metadata.training == {"steps": 2048, "wall_time_s": 12.5}
    assert metadata.action_map.joint_names == PROFILE.joint_names
    assert metadata.limits.equals(SafetyLimits.from_profile(PROFILE))


def test_a_graph_without_the_normalizer_is_refused_and_leaves_no_file(monkeypatch, tmp_path):
    def without_normalizer(checkpoint: Checkpoint) -> PolicyModule:
        module = PolicyModule(checkpoint).eval()
        module.obs_mean.zero_()
        module.obs_std.fill_(1.0)
        return module

    monkeypatch.setattr(export, "build_policy_module", without_normalizer)
    out = tmp_path / "policy.onnx"
    with pytest.raises(ExportError, match=r"Checkpoint\.act"):
        export_policy(_checkpoint(), out, parity_samples=100)
    assert list(tmp_path.iterdir()) == []


def test_a_parity_failure_keeps_the_previous_file(monkeypatch, tmp_path):
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"previous export")
    monkeypatch.setattr(export, "PARITY_ATOL", -1.0)  # no graph can meet it
    with pytest.raises(ExportError, match="onnxruntime and torch disagree"):
        export_policy(_checkpoint(), out, parity_samples=10)
    assert out.read_bytes() == b"previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["policy.onnx"]


def test_checkpoint_info_the_metadata_cannot_carry_is_refused(tmp_path):
    checkpoint = _checkpoint()
    checkpoint.info["learning_rate"] = 3e-4
    with pytest.raises(PolicyFileError, match="unknown fields: learning_rate"):
        export_policy(checkpoint, tmp_path / "policy.onnx", parity_samples=10)
    assert not (tmp_path / "policy.onnx").exists()


def _strip_metadata(path: Path, out: Path) -> Path:
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, out)
    return out


def test_annotate_adds_metadata_and_keeps_other_tools_entries(tmp_path):
    checkpoint = _checkpoint()
    exported = export_policy(checkpoint, tmp_path / "policy.onnx", parity_samples=10).path
    model = onnx.load(exported)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {"exporter": "another tool"})
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    with pytest.raises(PolicyFileError, match="no handrail metadata"):
        read_policy_metadata(bare)

    annotate_policy(bare, bare, checkpoint.info)  # in place
    assert read_policy_metadata(bare) == metadata_from_checkpoint_info(checkpoint.info)
    assert {prop.key for prop in onnx.load(bare).metadata_props} == {"exporter", POLICY_METADATA_KEY}


def test_annotate_refuses_metadata_that_does_not_fit_the_graph(tmp_path):
    exported = export_policy(_checkpoint(), tmp_path / "policy.onnx", parity_samples=10).path
    bare = _strip_metadata(exported, tmp_path / "bare.onnx")
    history_2 = _checkpoint(history=2).info  # n_obs 60, the graph takes 44
    with pytest.raises(ExportError, match=r"input 'obs' has shape \['batch', 44\].*\[batch, 60\]"):
        annotate_policy(bare, tmp_path / "out.onnx", history_2)
    assert not (tmp_path / "out.onnx").exists()


def test_annotate_refuses_incomplete_metadata_naming_the_fields(tmp_path):
    exported = export_policy(_checkpoint(), tmp_path / "policy.onnx", parity_samples=10).path
    info = dict(_checkpoint().info)
    del info["commit"], info["safety_limits"]
    with pytest.raises(PolicyFileError, match="missing fields: safety_limits, commit"):
        annotate_policy(exported, tmp_path / "out.onnx", info)
