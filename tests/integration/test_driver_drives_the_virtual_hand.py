"""Our bus driver against the virtual hand, over the real serial bytes on a pseudo-terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from handrail.robot.bus import DynamixelBus
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.errors import MotorMissingError
from handrail.robot.profile import default_profile_path, load_profile
from handrail.robot.reality import Reality


def test_driver_moves_every_joint_through_a_slow_trajectory(profile, bus):
    start = bus.read_state()
    assert start.position_rad.shape == (16,)
    assert np.all(start.hardware_error == 0)
    assert np.all((start.temperature_c > 15) & (start.temperature_c < 45))
    home = np.array([joint.home_rad for joint in profile.joints])
    low = np.array([joint.soft_limits_rad[0] for joint in profile.joints])
    high = np.array([joint.soft_limits_rad[1] for joint in profile.joints])
    goal = np.clip(home + 0.2, low, high)  # every joint moves 0.2 rad (abduction too)
    bus.set_torque(True)
    duration_s, period_s = 2.0, 0.02
    errors = []
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < duration_s + 0.8:
        fraction = min(elapsed / duration_s, 1.0)
        smooth = 0.5 - 0.5 * np.cos(np.pi * fraction)  # slow in, slow out
        target = start.position_rad + smooth * (goal - start.position_rad)
        state = bus.read_state()
        bus.write_targets(target)
        errors.append(np.abs(goal - state.position_rad))
        time.sleep(period_s)
    final = bus.read_state()
    initial_error = np.abs(goal - start.position_rad)
    final_error = np.abs(goal - final.position_rad)
    print("initial error [rad]", np.round(initial_error, 3))
    print("final error [rad]  ", np.round(final_error, 3))
    # Every joint followed: its error shrank to a small fraction of the distance it had to travel.
    assert np.all(final_error < 0.35 * initial_error + 0.02), final_error
    assert np.median(final_error) < 0.03
    # ... and it shrank along the way, not only at the end.
    middle = errors[len(errors) // 2]
    assert np.mean(middle) < np.mean(initial_error)
    bus.set_torque(False)


def test_readings_are_joint_units_seen_through_the_hidden_reality(profile, tmp_path):
    reality_path = tmp_path / "reality.json"
    with VirtualHandProcess(reality_seed=5, reality_out=reality_path) as vhand:
        bus = DynamixelBus(profile, port=vhand.port)
        bus.connect()
        bus.configure()
        state = bus.read_state()
        truth = np.array(vhand.ground_truth()["joint_positions_rad"])
        bus.close()
    reality = Reality.read(reality_path)
    offsets = reality.per_joint("encoder_offset_rad")
    # The driver sees the true angle plus the hidden encoder offset (its profile says 0): only
    # calibration can remove it. Tolerance: half the backlash, quantization and noise.
    tolerance = 0.5 * reality.per_joint("backlash_rad") + 6 * bus.units.rad_per_tick
    assert np.all(np.abs(state.position_rad - (truth + offsets)) <= tolerance)
    assert np.max(np.abs(offsets)) > 0.01  # the reality really hides something


def test_a_missing_motor_is_named_with_what_answered(tmp_path, vhand):
    text = default_profile_path().read_text()
    mjcf = (default_profile_path().parent / "../../sim/models/leap_hand.xml").resolve()
    text = text.replace('mjcf = "../../sim/models/leap_hand.xml"', f'mjcf = "{mjcf}"')
    text = text.replace("motor_id = 15", "motor_id = 42")
    path = tmp_path / "hand.toml"
    path.write_text(text)
    bus = DynamixelBus(load_profile(path), port=vhand.port)
    with pytest.raises(MotorMissingError) as caught:
        bus.connect()
    message = str(caught.value)
    assert "motor 42 (thumb_ip)" in message
    assert "answered correctly: [0, 1, 2" in message
    bus.close()


def test_emulate_writes_the_reality_it_drew(tmp_path):
    import subprocess
    import sys

    paths = []
    for seed in (1, 1, 2):
        out = tmp_path / f"reality_{len(paths)}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "handrail",
                "emulate",
                "--reality-seed",
                str(seed),
                "--reality-out",
                str(out),
                "--seconds",
                "0.2",
                "--json",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        paths.append(Path(out))
    first, again, other = (json.loads(p.read_text()) for p in paths)
    assert first == again
    assert first["encoder_offset_rad"] != other["encoder_offset_rad"]
    assert first["seed"] == 1 and other["seed"] == 2
