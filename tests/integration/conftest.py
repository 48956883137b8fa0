"""Fixtures that start the real virtual hand (``handrail emulate``) on a pseudo-terminal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from handrail.robot.bus import DynamixelBus
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile, load_profile


@pytest.fixture(scope="session")
def profile() -> HandProfile:
    return load_profile()


@pytest.fixture
def vhand() -> Iterator[VirtualHandProcess]:
    """A fresh virtual hand process per test (faults and latched errors do not leak)."""
    with VirtualHandProcess(reality_seed=11) as process:
        yield process


@pytest.fixture
def bus(profile: HandProfile, vhand: VirtualHandProcess) -> Iterator[DynamixelBus]:
    """Our driver, connected and configured, on the virtual hand's pty."""
    driver = DynamixelBus(profile, port=vhand.port)
    driver.connect()
    driver.configure()
    yield driver
    driver.close()
