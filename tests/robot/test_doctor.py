"""``handrail doctor`` (robot/doctor.py): latency timer, port access, and what answers on the virtual hand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handrail.robot.doctor import check_access, check_latency_timer, format_reports, latency_timer_path, run_doctor
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile, load_profile

XC330_MODEL_NUMBER = 1240
HANDRAIL_CLI = Path(sys.executable).parent / "handrail"


@pytest.fixture(scope="module")
def profile() -> HandProfile:
    return load_profile()


@pytest.fixture(scope="module")
def virtual_hand_port() -> Iterator[str]:
    with VirtualHandProcess(reality_seed=2) as vhand:
        yield vhand.port


def _fake_sysfs(tmp_path: Path, latency_ms: str | None) -> Path:
    adapter = tmp_path / "ttyUSB0"
    adapter.mkdir()
    if latency_ms is not None:
        (adapter / "latency_timer").write_text(latency_ms)
    return tmp_path


def test_latency_timer_of_16_ms_warns_with_the_one_line_fix(tmp_path: Path) -> None:
    sysfs = _fake_sysfs(tmp_path, "16\n")
    latency_ms, warning = check_latency_timer("/dev/ttyUSB0", sysfs)
    assert latency_ms == 16
    assert warning is not None
    assert "16 ms" in warning
    assert f"echo 1 | sudo tee {sysfs / 'ttyUSB0' / 'latency_timer'}" in warning


def test_latency_timer_of_1_ms_is_fine(tmp_path: Path) -> None:
    assert check_latency_timer("/dev/ttyUSB0", _fake_sysfs(tmp_path, "1\n")) == (1, None)


@pytest.mark.parametrize("content", [None, "garbage"], ids=["missing", "unreadable"])
def test_no_latency_timer_means_nothing_to_tune(tmp_path: Path, content: str | None) -> None:
    assert check_latency_timer("/dev/ttyUSB0", _fake_sysfs(tmp_path, content)) == (None, None)


def test_latency_timer_path_follows_symlinks_to_the_adapter(tmp_path: Path) -> None:
    # /dev/serial/by-id/... links point at /dev/ttyUSBn; sysfs is keyed by the real name.
    device = tmp_path / "ttyUSB3"
    device.touch()
    link = tmp_path / "usb-FTDI_FT232R-if00-port0"
    link.symlink_to(device)
    assert latency_timer_path(str(link), Path("/sys/x")) == Path("/sys/x/ttyUSB3/latency_timer")


def test_access_to_a_nonexistent_port_warns_that_it_is_missing() -> None:
    warning = check_access("/dev/ttyUSB_handrail_nonexistent")
    assert warning is not None
    assert "/dev/ttyUSB_handrail_nonexistent: no such device" in warning


def test_access_to_a_readable_port_is_fine(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch(mode=0o600)
    assert check_access(str(device)) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open a mode-000 file, so os.access says yes")
def test_access_to_a_forbidden_port_names_the_group_fix(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    device.chmod(0o000)
    warning = check_access(str(device))
    assert warning is not None
    assert "may not open it" in warning
    assert "sudo usermod -aG" in warning


def test_a_port_the_user_may_not_open_names_its_group_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs as root too: the OS's answer is replaced by the one a user outside the port's group gets.
    device = tmp_path / "ttyUSB0"
    device.touch()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    warning = check_access(str(device))
    assert warning is not None
    assert f"{device}: user " in warning
    assert "may not open it" in warning
    assert "fix: sudo usermod -aG " in warning


def test_doctor_finds_16_xc330s_on_the_virtual_hand(profile: HandProfile, virtual_hand_port: str) -> None:
    reports = run_doctor(profile, virtual_hand_port)
    assert len(reports) == 1
    report = reports[0]
    assert report.device == virtual_hand_port
    assert report.accessible
    assert report.latency_timer_ms is None  # a pty is no USB-serial adapter
    assert report.answered == dict.fromkeys(profile.motor_ids, XC330_MODEL_NUMBER)
    assert report.warnings == []
    text = format_reports(profile, reports)
    assert "answered: 16 motors" in text
    assert "(model 1240)" in text
    assert "WARNING" not in text


def test_doctor_warns_about_motors_the_profile_expects_but_that_did_not_answer(
    profile: HandProfile, virtual_hand_port: str
) -> None:
    # The same wire, but a profile that also expects a motor 16 that is not on it.
    extra = profile.joints[-1].model_copy(update={"name": "extra_joint", "motor_id": 16})
    bigger = profile.model_copy(update={"joints": (*profile.joints, extra)})
    (report,) = run_doctor(bigger, virtual_hand_port)
    assert len(report.answered) == 16
    assert any("expects motors [16] that did not answer" in warning for warning in report.warnings)


def test_cli_doctor_prints_the_same_on_the_virtual_hand(profile: HandProfile, virtual_hand_port: str) -> None:
    result = subprocess.run(
        [str(HANDRAIL_CLI), "doctor", "--port", virtual_hand_port], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    expected = format_reports(profile, run_doctor(profile, virtual_hand_port))
    assert result.stdout.strip() == expected.strip()


def test_cli_doctor_on_a_missing_port_warns_and_exits_1() -> None:
    result = subprocess.run(
        [str(HANDRAIL_CLI), "doctor", "--port", "/nonexistent"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "WARNING: /nonexistent: no such device" in result.stdout
    assert "access: DENIED" in result.stdout
