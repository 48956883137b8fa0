"""The bundled rotate-z policy: its record says how it was made and how well it does, and is true.

The record (``deploy/policies/leap_rotate_z.json``, written by ``scripts/record_policy.py``) names the
file's SHA-256, the commands that produced it, the run's facts, the evaluations (nominal, randomized and
on the MJCF's fine physics) and the virtual-hand demos. These tests check that it describes *this* file,
that the file carries the simulator it was trained in and is accepted by the bundled hand, and re-measure
the nominal score on a few episodes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from handrail.deploy.demo import bundled_policy_path
from handrail.deploy.policy_match import check_policy_file
from handrail.robot.profile import load_profile
from handrail.sim.evaluate import evaluate, load_policy


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(bundled_policy_path().with_suffix(".json").read_text())


def test_the_record_describes_this_file(record: dict) -> None:
    path = bundled_policy_path()
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    commands = " ".join(record["produced_by"])
    assert "handrail train --task rotate-z" in commands and "handrail export" in commands
    assert record["training"]["steps"] > 1_000_000 and record["training"]["wall_s"] > 0
    curve = Path(__file__).resolve().parents[2] / record["learning_curve"]["png"]
    assert curve.is_file() and curve.stat().st_size > 10_000
    for name in ("eval_no_dr", "eval_dr", "eval_fine_no_dr"):
        assert record[name]["episodes"] >= 64 and "handrail eval" in record[name]["command"], name
    assert len(record["virtual_hand_demos"]) >= 5
    for demo in record["virtual_hand_demos"]:
        kinds = demo["limit_violations_by_kind"]
        assert demo["limit_violations"] == sum(kinds.values())
        assert demo["exit_code"] == int(demo["limit_violations"] > 0), demo
        # What the safety filter guarantees holds in every run: no target outside the soft limits or faster than
        # the speed limit. (A measured speed over the limit — a finger snapping free of the cube — is reported.)
        assert kinds["target_outside_soft_limits"] == 0 and kinds["target_step_over_speed_limit"] == 0, demo
        assert not demo["safe_stop"] or demo["stop_reason"], demo


def test_the_file_carries_its_simulator_and_the_bundled_hand_accepts_it() -> None:
    metadata, warnings = check_policy_file(bundled_policy_path(), load_profile())
    assert not warnings, warnings
    assert metadata.sim is not None and metadata.sim["control_rate_hz"] == metadata.control_rate_hz
    assert metadata.task == "rotate-z"


def test_a_few_nominal_episodes_score_like_the_record(record: dict) -> None:
    recorded = record["eval_no_dr"]
    report = evaluate(load_policy(bundled_policy_path()), dr=False, episodes=8, n_envs=8, seed=recorded["seed"])
    # The same policy, simulator and seed: the first 8 of the recorded 64 episodes; their mean must be close.
    assert report.mean_angular_velocity_rad_s == pytest.approx(recorded["mean_angular_velocity_rad_s"], abs=0.25)
    assert report.drop_rate <= recorded["drop_rate"] + 0.3
