"""Optional ruckig smoothing in front of the safety filter."""

from __future__ import annotations

import numpy as np
import pytest

from handrail.robot.jerk_smoother import JerkLimitedSmoother
from handrail.robot.profile import load_profile
from handrail.robot.safety_limits import SafetyLimits

PERIOD_S = 1 / 30
JERK = 400.0


@pytest.fixture(scope="module")
def limits() -> SafetyLimits:
    return SafetyLimits.from_profile(load_profile(check_model=False))


def _run(smoother, targets):
    return np.array([smoother(target) for target in targets])


def test_a_step_becomes_a_jerk_limited_move_that_arrives(limits):
    smoother = JerkLimitedSmoother(limits, PERIOD_S, JERK)
    smoother.reset(np.zeros(16))
    positions = _run(smoother, [np.full(16, 1.0)] * 60)
    velocity = np.diff(np.vstack([np.zeros((2, 16)), positions]), axis=0) / PERIOD_S
    acceleration = np.diff(velocity, axis=0) / PERIOD_S
    jerk = np.diff(acceleration, axis=0) / PERIOD_S
    assert np.allclose(positions[-1], 1.0, atol=1e-6)
    assert np.max(np.abs(velocity)) <= limits.max_speed_rad_s.max() * 1.001
    assert np.max(np.abs(acceleration)) <= limits.max_accel_rad_s2.max() * 1.05
    assert np.max(np.abs(jerk)) <= JERK * 1.05
    # Without smoothing the same step would be one jump of 1 rad: the check above can fail.
    assert (
        np.max(np.abs(np.diff(np.vstack([np.zeros(16), np.full(16, 1.0)]), axis=0)))
        > limits.max_speed_rad_s.max() * PERIOD_S
    )


def test_non_finite_targets_pass_through_and_keep_the_state(limits):
    smoother = JerkLimitedSmoother(limits, PERIOD_S, JERK)
    smoother.reset(np.zeros(16))
    first = smoother(np.full(16, 0.5))
    assert np.all(np.isnan(smoother(np.full(16, np.nan))))
    second = smoother(np.full(16, 0.5))
    assert np.all(second > first)


def test_bad_jerk_and_missing_reset_are_refused(limits):
    with pytest.raises(ValueError, match="positive"):
        JerkLimitedSmoother(limits, PERIOD_S, -1.0)
    with pytest.raises(RuntimeError, match="reset"):
        JerkLimitedSmoother(limits, PERIOD_S, JERK)(np.zeros(16))
