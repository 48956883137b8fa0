"""The main job, short: the bundled policy turns the cube on the virtual hand, and the log shows no limit broken.

The run may end early in a safe stop (a finger pushing the cube at the current limit for a second trips the
stall detector; see deploy/policies/leap_rotate_z.json): that is the safety layer doing its job, and the
demo's exit code is 0 as long as no limit was broken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from handrail.cli import main
from handrail.deploy.demo import bundled_policy_path, limit_violations
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.robot.profile import load_profile
from handrail.robot.safety_monitor import MonitorConfig

DEMO_SECONDS = 8.0
# Below what the bundled policy turns on the virtual hand before anything stops it, far above standing still.
MIN_ROTATION_RAD = 0.2


def test_short_demo_turns_the_cube_within_the_limits(tmp_path, capsys) -> None:
    # Its videos are tested on a short log below (the suite's time); `make demo` renders them for real in CI.
    code = main(["demo", "--seconds", str(DEMO_SECONDS), "--out", str(tmp_path), "--json", "--no-video"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert abs(summary["rotation_rad"]) > MIN_ROTATION_RAD, summary
    assert summary["limit_violations"] == 0
    assert summary["loop"]["missed_deadlines"] <= 2
    assert summary["pose_source"] == "ground_truth"
    # The log itself: readable, complete, policy ran the whole time, and it agrees with the summary.
    log = read_rollout_log(summary["log"])
    assert not log.truncated
    assert log.n_ticks > 0 and log.policy_active.any()
    if summary["safe_stop"]:
        assert any(event.kind == "safe_stop" for event in log.events)
    assert sum(limit_violations(log, load_profile()).values()) == 0
    assert np.isfinite(log.action[log.policy_active]).all()
    assert log.header.policy_sha256 is not None
    assert bundled_policy_path().is_file()
    # The run's own sim-vs-real report, linked from the summary.
    report = Path(summary["compare_report"])
    assert report.is_file() and report.parent.name.endswith("_compare")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["overall_rmse_rad"]["nominal"] == pytest.approx(np.radians(summary["compare_rmse_deg"]))
    assert summary["video"] is None and summary["compare_video"] is None  # --no-video


def test_the_demo_renders_its_run_and_the_run_beside_its_replay_and_the_report_shows_both(short_run_log) -> None:
    """On a short log (3 s, a safe stop at 2 s): what `handrail demo` does after the run."""
    from handrail.deploy.demo import compare_demo, summarize_demo, video_demo

    profile = load_profile()
    log_path = short_run_log
    summary = video_demo(summarize_demo(log_path, profile, 0, "time is up"), profile)
    summary = compare_demo(summary, profile, video=True)
    video, compare_video, report = Path(summary.video), Path(summary.compare_video), Path(summary.compare_report)
    assert video == log_path.with_suffix(".webm") and video.stat().st_size > 1000
    assert compare_video.parent == report.parent and compare_video.stat().st_size > 1000
    page = report.read_text()
    assert f'<video src="../{video.name}"' in page and '<video src="sim_vs_real.webm"' in page
    assert f"video: {video}" in summary.format()


def test_a_measured_speed_counts_as_broken_only_as_long_as_the_monitor_needs() -> None:
    """One reading over the limit is what the monitor tolerates (a finger snapping free); 3 in a row are not."""
    from handrail.deploy.demo import sustained

    readings = MonitorConfig().overspeed_readings
    flags = np.zeros((8, 2), dtype=bool)
    flags[1, 0] = True  # a one-tick spike
    flags[3 : 3 + readings, 1] = True  # as long as the monitor's fault takes
    found = sustained(flags, readings)
    assert not found[:, 0].any()
    assert np.flatnonzero(found[:, 1]).tolist() == [3 + readings - 1]
    assert sustained(np.ones((readings - 1, 3), dtype=bool), readings).sum() == 0
