"""The deploy loop runs a policy at the policy's own rate (its metadata), not the profile's, on the virtual hand;
a rate the hand does not allow is refused before the bus; a proprioceptive (blind) policy deploys too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handrail.deploy.loop import LoopConfig
from handrail.deploy.policy_match import PolicyMismatchError, check_policy_file
from handrail.deploy.pose_source import GroundTruthPose
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.deploy.run import run_deploy
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile
from handrail.sim.checkpoint import save_checkpoint, untrained_checkpoint
from handrail.sim.export import export_policy
from handrail.sim.sim_settings import SimSettings


def _hold_policy(profile: HandProfile, folder: Path, rate_hz: float, *, object_pose: bool = True) -> Path:
    """An exported policy trained (it claims) at ``rate_hz`` whose every action is 0: the hand holds."""
    sim = SimSettings(control_rate_hz=rate_hz, timestep_s=min(0.01, 1 / rate_hz))
    checkpoint = untrained_checkpoint(profile, output_scale=0.0, sim=sim, object_pose=object_pose)
    path = save_checkpoint(checkpoint, folder / f"{rate_hz:g}hz.pt")
    return export_policy(path, folder / f"hold_{rate_hz:g}hz.onnx", parity_samples=50).path


@pytest.mark.parametrize("rate_hz", [20.0, 30.0])
def test_the_loop_runs_a_policy_at_its_own_rate(profile: HandProfile, tmp_path: Path, rate_hz: float) -> None:
    policy = _hold_policy(profile, tmp_path, rate_hz, object_pose=rate_hz == 30.0)
    seconds = 2.0
    with VirtualHandProcess(reality_seed=4) as vhand:
        outcome = run_deploy(
            policy,
            profile,
            vhand.port,
            GroundTruthPose(vhand, profile),
            config=LoopConfig(seconds=seconds, startup_timeout_s=3.0, status_interval_s=0),
            log_path=tmp_path / f"rollout_{rate_hz:g}.mcap",
        )
    assert outcome.result.exit_code == 0, outcome.result.stop_reason
    log = read_rollout_log(outcome.log_path)
    assert log.header.control_rate_hz == rate_hz
    policy_ticks = int(np.count_nonzero(log.policy_active))
    assert abs(policy_ticks - seconds * rate_hz) <= 0.1 * seconds * rate_hz + 2, policy_ticks
    times = log.time_s[log.policy_active]
    assert np.median(np.diff(times)) == pytest.approx(1.0 / rate_hz, rel=0.05)


def test_a_rate_the_hand_does_not_allow_is_refused_naming_the_limit(profile: HandProfile, tmp_path: Path) -> None:
    policy = _hold_policy(profile, tmp_path, 200.0)
    with pytest.raises(PolicyMismatchError) as caught:
        check_policy_file(policy, profile)
    message = str(caught.value)
    assert "200 Hz" in message and f"{profile.max_rate_hz:g} Hz" in message, message
