"""`handrail check`: the conformance run behind the safety layer, and --speed-scale only tightening."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from handrail.robot.check_hand import check_hand
from handrail.robot.emulator import _start_failure
from handrail.robot.profile import load_profile

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


def test_cli_check_reports_the_virtual_hands_own_start_error_not_a_timeout(tmp_path):
    """A hand MJCF the profile loader accepts but the scene builder rejects (the palm 20 cm below the cube)."""
    bundled = load_profile()
    text = Path(bundled.mjcf).read_text()
    assert text.count('<body name="palm" childclass="leap">') == 1
    (tmp_path / "hand.xml").write_text(
        text.replace('<body name="palm" childclass="leap">', '<body name="palm" childclass="leap" pos="0.3 0 -0.2">')
    )
    profile_text = Path(bundled.source).read_text()
    (tmp_path / "hand.toml").write_text(re.sub(r'^mjcf = ".*"', 'mjcf = "hand.xml"', profile_text, flags=re.M))
    started = time.monotonic()
    result = subprocess.run(
        [str(HANDRAIL), "check", "--profile", str(tmp_path / "hand.toml"), "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the virtual hand failed to start (exit code 2)" in result.stderr
    assert "the cube fell off the palm" in result.stderr
    assert "within 60 s" not in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 50  # it did not wait for a timeout


def test_a_crash_of_the_virtual_hand_before_ready_is_reported_by_its_last_line():
    stderr = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom\n'
    message = _start_failure(1, stderr, 60.0)
    assert message.startswith("the virtual hand failed to start (exit code 1): RuntimeError: boom")
    assert "Traceback" in message  # the trace follows, for a bug report
    assert "did not start within 60 s" in _start_failure(None, "", 60.0)
