"""``handrail doctor``: the serial-port checks users of a real hand need first.

Lists serial ports, what answers on them (a broadcast ping at the profile's baud), and two Linux
pitfalls: a USB-serial adapter whose latency timer is above 1 ms (FTDI defaults to 16 ms, which caps a
read-write cycle at ~30 Hz), and a port the user may not open (not in the ``dialout`` group).
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

import dynamixel_sdk as sdk
from serial.tools import list_ports

from handrail.robot.profile import HandProfile

LATENCY_TIMER_OK_MS = 1
SYSFS_USB_SERIAL = Path("/sys/bus/usb-serial/devices")


@dataclass
class PortReport:
    """Findings for one serial port."""

    device: str
    description: str = ""
    latency_timer_ms: int | None = None
    accessible: bool = True
    answered: dict[int, int] = field(default_factory=dict)  # motor id -> model number
    warnings: list[str] = field(default_factory=list)


def latency_timer_path(device: str, sysfs_root: Path = SYSFS_USB_SERIAL) -> Path:
    """Where Linux exposes a USB-serial adapter's latency timer for ``/dev/ttyUSB0``-style devices."""
    return sysfs_root / Path(os.path.realpath(device)).name / "latency_timer"


def check_latency_timer(device: str, sysfs_root: Path = SYSFS_USB_SERIAL) -> tuple[int | None, str | None]:
    """The adapter's latency timer [ms] and a warning with the one-line fix if it is above 1 ms."""
    path = latency_timer_path(device, sysfs_root)
    try:
        latency_ms = int(path.read_text().strip())
    except (OSError, ValueError):
        return None, None  # not a USB-serial adapter (or not Linux): nothing to tune
    if latency_ms > LATENCY_TIMER_OK_MS:
        name = path.parent.name
        return latency_ms, (
            f"{device}: USB latency timer is {latency_ms} ms (each reply waits that long in the adapter) — "
            f'fix: echo 1 | sudo tee {path}  (permanent: a udev rule setting ATTR{{latency_timer}}="1" for {name})'
        )
    return latency_ms, None


def check_access(device: str) -> str | None:
    """A warning with the fix when the current user may not read and write ``device``."""
    if not os.path.exists(device):
        return f"{device}: no such device — is the adapter plugged in? (`ls /dev/ttyUSB* /dev/ttyACM*`)"
    if os.access(device, os.R_OK | os.W_OK):
        return None
    try:
        group = grp.getgrgid(os.stat(device).st_gid).gr_name
    except KeyError:
        group = "dialout"
    user = pwd.getpwuid(os.getuid()).pw_name
    return (
        f"{device}: user {user!r} may not open it (owned by group {group!r}) — "
        f"fix: sudo usermod -aG {group} {user}  and log in again"
    )


def scan_port(device: str, baud: int) -> dict[int, int]:
    """Broadcast-ping ``device`` at ``baud``; returns motor id -> model number of everything that answers."""
    port = sdk.PortHandler(device)
    try:
        if not (port.openPort() and port.setBaudRate(baud)):
            return {}
        packets = sdk.PacketHandler(2.0)
        found, result = packets.broadcastPing(port)
        if result != sdk.COMM_SUCCESS:
            return {}
        return {int(motor_id): int(info[0]) for motor_id, info in found.items()}
    except Exception:  # an unopenable or vanished port answers nothing; the access check says why
        return {}
    finally:
        if port.is_open:
            port.closePort()


def run_doctor(profile: HandProfile, port: str | None = None) -> list[PortReport]:
    """Check ``port`` (or every serial port found) and ping what is on it."""
    if port is not None:
        candidates = [(port, "")]
    else:
        candidates = [(info.device, info.description or "") for info in list_ports.comports()]
    reports = []
    for device, description in candidates:
        report = PortReport(device=device, description=description)
        report.latency_timer_ms, latency_warning = check_latency_timer(device)
        if latency_warning:
            report.warnings.append(latency_warning)
        access_warning = check_access(device)
        if access_warning:
            report.accessible = False
            report.warnings.append(access_warning)
        else:
            report.answered = scan_port(device, profile.bus.baud)
            expected = set(profile.motor_ids)
            missing = sorted(expected - set(report.answered))
            if report.answered and missing:
                report.warnings.append(
                    f"{device}: profile {profile.name!r} expects motors {missing} that did not answer — "
                    "check power, cables and ids"
                )
        reports.append(report)
    return reports


def format_reports(profile: HandProfile, reports: list[PortReport]) -> str:
    """Human-readable doctor output."""
    if not reports:
        return "no serial ports found — plug in the hand's USB adapter (or start `handrail emulate`)"
    lines = [f"profile {profile.name!r}: {len(profile.joints)} motors at {profile.bus.baud} baud"]
    for report in reports:
        latency = f"{report.latency_timer_ms} ms" if report.latency_timer_ms is not None else "n/a (not USB-serial)"
        lines.append(f"{report.device}  {report.description}".rstrip())
        lines.append(f"  latency timer: {latency}")
        lines.append(f"  access: {'ok' if report.accessible else 'DENIED'}")
        if report.answered:
            ids = ", ".join(f"{i} (model {m})" for i, m in sorted(report.answered.items()))
            lines.append(f"  answered: {len(report.answered)} motors: {ids}")
        elif report.accessible:
            lines.append(f"  answered: nothing at {profile.bus.baud} baud")
        lines.extend(f"  WARNING: {warning}" for warning in report.warnings)
    return "\n".join(lines)
