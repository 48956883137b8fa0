"""Finding the mechanical stops: the calibration-mode profile and the motions that push joints onto their stops.

:func:`measure_stops` runs a :class:`~handrail.calibration.joint_plan.StopPlan` on a started
:class:`~handrail.robot.safe_robot.Robot` built from :func:`calibration_mode_profile`: for each phase it
goes to the phase's pose (through its waypoints, and back only as far as the next phase needs), lets every
pushed joint creep towards its stop with its target ``lead_rad`` ahead of it, detects contact (standing
still at near-limit current for ``contact_ticks`` readings), averages the reading over ``dwell_s`` and lets
go. What the contacts mean is :mod:`~handrail.calibration.joints`' business.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import mujoco
import numpy as np
from numpy.typing import NDArray

from handrail.calibration.errors import CalibrationError
from handrail.calibration.joint_plan import StopPhase, StopPlan
from handrail.robot.profile import MAX_ZERO_OFFSET_RAD, HandProfile
from handrail.robot.safe_robot import Robot

LOG = logging.getLogger("handrail.calibration")


@dataclass(frozen=True)
class JointCalibrationConfig:
    """How gently and how long to push; what counts as contact; what offsets are plausible."""

    current_limit_ma: float = 250.0  # reduced current while calibrating (enough to lift a finger)
    speed_scale: float = 0.6  # of each joint's max speed
    lead_rad: float = 0.12  # how far the target leads the joint while pushing
    contact_speed_rad_s: float = 0.05
    contact_current_fraction: float = 0.6  # of current_limit_ma
    contact_ticks: int = 4  # consecutive readings that must look like contact
    min_push_s: float = 0.2  # ignore the first readings of a push (the joint starts at rest)
    dwell_s: float = 0.25  # readings averaged at the stop
    bus_timeout_ms: float = 50.0  # status-packet timeout while calibrating (at least the profile's)
    pose_tolerance_rad: float = 0.06
    limit_margin_rad: float = 0.3  # how far past the widest stop the calibration soft limits reach
    # Larger encoder offsets are implausible (the direction test relies on it); the profile loader refuses them.
    max_offset_rad: float = MAX_ZERO_OFFSET_RAD
    # Measured minus MJCF stop-to-stop span: gear play and stop compliance only ever add to it (up to ~1 deg);
    # a span short by more than the lower bound means the joint was blocked before a stop.
    span_excess_bounds_rad: tuple[float, float] = (-0.01, 0.04)

    def __post_init__(self) -> None:
        # Written so that NaN fails too (NaN <= 0 is false: a NaN current once ran at the profile's 350 mA).
        if not 0.0 < self.speed_scale <= 1.0:
            raise CalibrationError(f"speed_scale {self.speed_scale} must be in (0, 1]")
        for name in ("current_limit_ma", "lead_rad", "dwell_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise CalibrationError(f"joint calibration {name} = {value} must be a finite number > 0")


@dataclass(frozen=True)
class StopContact:
    """Where a joint stopped when pushed to one side: mean raw reading [rad] and current [mA]."""

    joint: str
    side: int
    position_rad: float
    current_ma: float
    phase: str


def mjcf_stop_ranges(profile: HandProfile) -> dict[str, tuple[float, float]]:
    """Each profile joint's MJCF ``range`` [rad]: where its mechanical stops are.

    Raises CalibrationError for a joint without a range (it has no stop to calibrate against).
    """
    model = mujoco.MjModel.from_xml_path(str(profile.mjcf))
    ranges = {}
    for joint in profile.joints:
        joint_id = model.joint(joint.mjcf_joint).id
        if not model.jnt_limited[joint_id]:
            raise CalibrationError(
                f"joint {joint.name} ({joint.mjcf_joint}) has no range in {profile.mjcf}: no stop to calibrate "
                "against — give the MJCF joint its mechanical range"
            )
        low, high = (float(value) for value in model.jnt_range[joint_id])
        ranges[joint.name] = (low, high)
    return ranges


def calibration_mode_profile(
    profile: HandProfile, stops_rad: Mapping[str, tuple[float, float]], config: JointCalibrationConfig
) -> HandProfile:
    """The profile the calibration runs with (see the module docstring); never written to disk."""
    document = profile.model_dump()
    for joint in document["joints"]:
        low, high = stops_rad[joint["name"]]
        reach = max(abs(low), abs(high)) + config.limit_margin_rad
        joint["zero_offset_rad"] = 0.0
        joint["soft_limits_rad"] = (-reach, reach)
        joint["home_rad"] = 0.0
        joint["current_limit_ma"] = min(joint["current_limit_ma"], config.current_limit_ma)
    # Nothing here is time-critical: a status packet late by a busy host is not worth an aborted run.
    document["bus"]["timeout_ms"] = max(document["bus"]["timeout_ms"], config.bus_timeout_ms)
    return HandProfile.model_validate(document)


# -- measuring ---------------------------------------------------------------------------------------------


@dataclass
class _Ticker:
    """Fixed-rate ticks of the control period (sleeps to the next tick; never bursts to catch up)."""

    period_s: float
    next_s: float = field(default_factory=time.monotonic)

    def wait(self) -> None:
        self.next_s += self.period_s
        delay = self.next_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next_s = time.monotonic()


def _pose_vector(profile: HandProfile, pose_rad: Mapping[str, float]) -> NDArray[np.float64]:
    unknown = set(pose_rad) - set(profile.joint_names)
    if unknown:
        raise CalibrationError(f"stop plan names joints {sorted(unknown)} that profile {profile.name!r} lacks")
    return np.array([pose_rad.get(name, 0.0) for name in profile.joint_names])


def _go_to(robot: Robot, target_rad: NDArray[np.float64], config: JointCalibrationConfig, ticker: _Ticker) -> bool:
    """Drive to ``target_rad``; True once every joint is within ``pose_tolerance_rad`` (False on timeout)."""
    state = robot.read()
    speed_rad_s = float(np.min(robot.limits.max_speed_rad_s))
    timeout_s = 1.5 + float(np.max(np.abs(target_rad - state.position_rad))) / speed_rad_s
    deadline_s = time.monotonic() + timeout_s
    settled = 0
    while time.monotonic() < deadline_s:
        robot.command(target_rad, state)
        ticker.wait()
        state = robot.read()
        settled = settled + 1 if np.max(np.abs(state.position_rad - target_rad)) < config.pose_tolerance_rad else 0
        if settled >= 3:
            return True
    return False


def _push_to_stops(
    robot: Robot, phase: StopPhase, pose: NDArray[np.float64], config: JointCalibrationConfig, ticker: _Ticker
) -> list[StopContact]:
    """Push the phase's joints to their stops at once; one contact per joint that found its stop."""
    names = robot.profile.joint_names
    pushing = {names.index(joint): side for joint, side in phase.push.items()}
    target = pose.copy()
    started_s = time.monotonic()
    reach = robot.limits.soft_high_rad
    speed_rad_s = float(np.min(robot.limits.max_speed_rad_s))
    deadline_s = started_s + 2.0 + max(2.0 * reach[index] for index in pushing) / speed_rad_s
    contact_count = dict.fromkeys(pushing, 0)
    samples: dict[int, list[tuple[float, float]]] = {}
    dwell_ends_s: dict[int, float] = {}
    contacts: list[StopContact] = []
    current_threshold_ma = config.contact_current_fraction * robot.limits.current_limit_ma
    state = robot.read()
    while pushing and time.monotonic() < deadline_s:
        now_s = time.monotonic()
        for index, side in list(pushing.items()):
            position, velocity, current = (
                state.position_rad[index],
                state.velocity_rad_s[index],
                state.current_ma[index],
            )
            if index in dwell_ends_s:
                samples[index].append((position, current))
                if now_s >= dwell_ends_s[index]:
                    positions, currents = zip(*samples[index], strict=True)
                    contacts.append(
                        StopContact(names[index], side, float(np.mean(positions)), float(np.mean(currents)), phase.name)
                    )
                    del pushing[index]
                    target[index] = pose[index]  # let go: back to the pose while the others finish
                continue
            target[index] = position + side * config.lead_rad
            touching = (
                now_s - started_s >= config.min_push_s
                and abs(velocity) < config.contact_speed_rad_s
                and abs(current) >= current_threshold_ma[index]
            )
            contact_count[index] = contact_count[index] + 1 if touching else 0
            if contact_count[index] >= config.contact_ticks:
                dwell_ends_s[index] = now_s + config.dwell_s
                samples[index] = []
        robot.command(target, state)
        ticker.wait()
        state = robot.read()
    for index, side in pushing.items():
        LOG.warning("phase %s: %s found no stop on side %+d before the time limit", phase.name, names[index], side)
    return contacts


def measure_stops(
    robot: Robot,
    plan: StopPlan,
    config: JointCalibrationConfig,
    on_phase: Callable[[StopPhase], None] | None = None,
) -> list[StopContact]:
    """Run every phase of ``plan`` on a started ``robot`` (in calibration mode); the contacts found.

    Raises SafetyFault (from the safety layer) if the hand had to be stopped.
    """
    ticker = _Ticker(robot.control_period_s)
    flat = np.zeros(len(robot.profile.joints))
    paths = [[_pose_vector(robot.profile, pose) for pose in (*phase.via_rad, phase.pose_rad)] for phase in plan.phases]
    contacts: list[StopContact] = []
    here: list[NDArray[np.float64]] = []  # the waypoints the hand went through to where it is (none: flat)
    for phase, path in zip(plan.phases, paths, strict=True):
        if on_phase is not None:
            on_phase(phase)
        # Go back only as far as this phase's path and the last one's part ways, then forward along this one.
        shared = _shared_prefix(here, path)
        if shared == 0:
            back = [*reversed(here[:-1]), flat] if here else []
        else:
            back = list(reversed(here[shared - 1 : -1]))
        for waypoint in back:
            _go_to(robot, waypoint, config, ticker)
        for waypoint in path[shared:] or path[-1:]:
            if not _go_to(robot, waypoint, config, ticker):
                LOG.warning("phase %s: the hand did not reach its pose within the time limit", phase.name)
        contacts += _push_to_stops(robot, phase, path[-1], config, ticker)
        here = path
    for waypoint in [*reversed(here[:-1]), flat]:
        _go_to(robot, waypoint, config, ticker)
    return contacts


def _shared_prefix(first: list[NDArray[np.float64]], second: list[NDArray[np.float64]]) -> int:
    """How many leading waypoints two paths have in common."""
    count = 0
    for a, b in zip(first, second, strict=False):
        if not np.array_equal(a, b):
            break
        count += 1
    return count
