"""`handrail check`: the conformance run behind the safety layer, and --speed-scale only tightening."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from handrail.robot.check_hand import check_hand

HANDRAIL = Path(sys.executable).parent / "handrail"


def test_check_hand_passes_on_the_virtual_hand_at_half_speed(profile, vhand):
    report = check_hand(profile, vhand.port, speed_scale=0.5, seconds=2.5)
    print(report.format())
    assert report.fault is None and report.passed
    assert np.allclose(report.speed_limit_rad_s, 1.5)
    assert np.all(report.rms_tracking_error_rad < 0.1) and np.all(report.peak_speed_rad_s > 0.05)


def test_cli_refuses_a_loosening_speed_scale():
    result = subprocess.run([str(HANDRAIL), "check", "--speed-scale", "1.5"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "can only tighten" in result.stderr and "Traceback" not in result.stderr


def test_cli_check_on_a_virtual_hand():
    result = subprocess.run(
        [str(HANDRAIL), "check", "--seconds", "2", "--speed-scale", "0.8"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout and "thumb_ip" in result.stdout
