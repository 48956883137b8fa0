"""The calibration pipeline end to end on one virtual hand: joints, then dynamics, then compare a fresh rollout.

Slow (about 130 s: every motion runs in real time): ``pytest -m slow tests/calibration``. Not in CI: with one
excitation the ratio sat at its bound (4.8-5.4x; the identified replay is near the virtual hand's noise
floor), so the fit uses two excitations (``--repeats 2``: 6.1x); two passing runs so far, too few to gate CI on.
"""

from pathlib import Path

import numpy as np
import pytest

from handrail.calibration.compare import compare_rollout
from handrail.calibration.dynamics import calibrate_dynamics
from handrail.calibration.excitation import ExcitationConfig, excitation_targets, record_excitation
from handrail.calibration.joints import calibrate_joints
from handrail.calibration.joints_file import write_joints_calibration
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import load_profile
from handrail.robot.safe_robot import Robot
from handrail.robot.safety_limits import SafetyLimits

pytestmark = pytest.mark.slow


def test_identified_dynamics_replay_a_fresh_rollout_five_times_closer_than_nominal(tmp_path: Path):
    with VirtualHandProcess(reality_seed=3) as vhand:
        joints = calibrate_joints(load_profile(), vhand.port)
        overlay = write_joints_calibration(tmp_path / "joints.toml", joints.to_file())
        profile = load_profile(calibration=overlay)
        fit, _ = calibrate_dynamics(profile, vhand.port, tmp_path / "excitation", repeats=2)
        # A fresh rollout: another excitation (its own seed) on the same hand, calibrated.
        targets = excitation_targets(
            profile, ExcitationConfig(seed=10), SafetyLimits.from_profile(profile).max_speed_rad_s
        )
        lag_events_before = vhand.ground_truth()["lag_events"]
        with Robot(profile, vhand.port) as robot:
            fresh = record_excitation(robot, targets, tmp_path / "fresh.mcap")
        lag_events = vhand.ground_truth()["lag_events"] - lag_events_before
    report = compare_rollout(fresh, dynamics=fit.calibration, profile=profile)
    report.write(tmp_path / "report")
    nominal, identified = report.replay("nominal").rmse_rad, report.replay("identified").rmse_rad
    print(report.format())
    if lag_events and nominal / identified < 5.0:
        # The virtual hand fell behind the wall clock (an overloaded host): its physics paused while the
        # log's clock ran on, which no model of the hand can replay.
        pytest.skip(f"the virtual hand lagged {lag_events} times during the fresh rollout: host overloaded")
    assert nominal / identified >= 5.0, (np.degrees(nominal), np.degrees(identified))
