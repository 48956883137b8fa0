"""Hand-eye calibration with the hand in the loop: move a marker-carrying finger through a plan, and at every pose
pair the link's pose (forward kinematics of the settled joint readings) with the marker's detection in a frame.

:func:`run_hand_eye` checks the plan (:func:`~handrail.calibration.hand_eye_plan.check_hand_eye_plan`) before
anything moves, then drives the hand through the normal driver and safety layer (:class:`Robot`, the code path of
the real hand) at ``speed_scale`` of the profile's speed limits: home, the poses, home again
(:meth:`~handrail.calibration.hand_eye_plan.HandEyePlan.path_rad`), in minimum-jerk moves at ``speed_rad_s``, the
last stretch onto each pose slower (``approach_speed_rad_s``). At each pose it holds the target until every joint
stands still near it, takes each joint's angle from ``average_ticks`` readings (see :func:`_settle` for why not
their mean), and then grabs a frame and looks for the target in it while a helper thread keeps commanding the
hold (a frame may take longer than the loop watchdog allows). A pose not reached in time stops the run. Then
:func:`~handrail.calibration.extrinsics.extrinsics_from_hand_eye` solves ``T_hand_camera`` from the views that
show the target.

The readings are the profile's joint angles: with encoder zero offsets left uncalibrated, forward kinematics is off
by them and so is the result — calibrate the joints first (``handrail calibrate joints``) and load the profile
with that overlay. Nothing is written here; the caller writes the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from handrail.calibration.board import BoardDetection, BoardSpec
from handrail.calibration.errors import CalibrationError
from handrail.calibration.excitation import control_ticks, with_patient_bus
from handrail.calibration.extrinsics import MIN_HAND_EYE_VIEWS, ExtrinsicsResult, extrinsics_from_hand_eye
from handrail.calibration.hand_eye_plan import HandEyePlan, HandKinematics, check_hand_eye_plan, default_hand_eye_plan
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot
from handrail.vision.camera import Camera, Intrinsics

# Planned moves stay this far under the safety layer's speed limits, so that its filter never has to slow them.
SPEED_LIMIT_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class HandEyeConfig:
    """How gently the hand moves and how long it is given to settle."""

    speed_scale: float = 0.5  # the safety layer's speed limits, as a fraction of the profile's
    speed_rad_s: float = 0.8  # peak joint speed of a planned move
    approach_speed_rad_s: float = 0.2  # peak joint speed of the last stretch onto a pose: slow, so no joint overshoots
    settle_speed_rad_s: float = 0.03  # every joint slower than this counts as standing still
    settle_ticks: int = 4  # consecutive still readings that count as settled
    min_settle_s: float = 0.6  # a link held by friction creeps on after its motor reads still
    max_settle_s: float = 4.0  # a pose not reached by then stops the run
    average_ticks: int = 20  # settled readings behind each joint angle used for forward kinematics
    settled_tolerance_rad: float = 0.06  # a joint further than this from its target has not arrived
    frame_timeout_s: float = 2.0
    # A live camera (V4L2) queues a few frames, taken before the hand settled: these are read and dropped first.
    stale_frames: int = 4
    # A frame costs the host a burst of CPU (a software renderer, a camera driver); on a busy host the thread that
    # holds the pose may then miss a few ticks. The hand moves slowly here, so the run tolerates that much host
    # silence before the safety layer (status timeout, loop watchdog) or the servos' own Bus Watchdog stop the hand.
    bus_timeout_ms: float = 200.0
    loop_watchdog_periods: float = 9.0
    servo_watchdog_ms: int = 300

    def __post_init__(self) -> None:
        if not 0.0 < self.speed_scale <= 1.0:
            raise ValueError(f"speed_scale {self.speed_scale} must be in (0, 1]")
        if min(self.speed_rad_s, self.approach_speed_rad_s) <= 0 or self.settle_ticks < 1 or self.average_ticks < 1:
            raise ValueError("speeds, settle_ticks and average_ticks must be positive")
        if self.stale_frames < 0:
            raise ValueError(f"stale_frames {self.stale_frames} must be >= 0")


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class HandEyeView:
    """One pose of the plan: the settled joint angles (n,) [rad], the link pose (4x4) they give, the detection,
    and ``problem`` (empty when the view is usable: the target was found)."""

    index: int
    joint_positions_rad: np.ndarray
    T_hand_link: np.ndarray
    detection: BoardDetection | None
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem


@dataclasses.dataclass(frozen=True)
class HandEyeRun:
    """The result and every view behind it; ``camera`` is the camera's serial (it goes into the file)."""

    extrinsics: ExtrinsicsResult
    views: tuple[HandEyeView, ...]
    camera: str
    duration_s: float

    def format(self) -> str:
        lines = [f"hand-eye: {len(self.views)} poses in {self.duration_s:.1f} s, camera {self.camera}"]
        lines += [f"  pose {view.index}: {view.problem} — not used" for view in self.views if not view.usable]
        lines.append(self.extrinsics.format())
        return "\n".join(lines)


def run_hand_eye(
    profile: HandProfile,
    port: str | None,
    camera: Camera,
    board: BoardSpec,
    plan: HandEyePlan | None = None,
    *,
    intrinsics: Intrinsics | None = None,
    config: HandEyeConfig | None = None,
    on_view: Callable[[HandEyeView], None] | None = None,
) -> HandEyeRun:
    """Drive the hand on ``port`` through ``plan`` (default: :func:`default_hand_eye_plan`), watch ``board`` on its
    link with ``camera`` (not started; ``intrinsics`` default to the camera's) and solve ``T_hand_camera``.

    Raises:
        CalibrationError: the plan is refused (before the hand moves), a pose is not reached within
            ``max_settle_s`` (the run stops there), fewer than the hand-eye minimum of views show the target, or
            the solve fails.
        SafetyFault: the safety layer stopped the hand.
    """
    config = config or HandEyeConfig()
    plan = plan if plan is not None else default_hand_eye_plan(profile)
    kinematics = HandKinematics(profile)
    check_hand_eye_plan(profile, plan, kinematics)
    started_s = time.monotonic()
    home_rad = np.array([joint.home_rad for joint in profile.joints])
    views: list[HandEyeView] = []
    robot_profile = with_patient_bus(profile, config.bus_timeout_ms)
    servo = robot_profile.servo.model_copy(update={"bus_watchdog_ms": config.servo_watchdog_ms})
    robot_profile = robot_profile.model_copy(update={"servo": servo})
    robot = Robot(
        robot_profile, port, speed_scale=config.speed_scale, loop_watchdog_periods=config.loop_watchdog_periods
    )
    with camera:
        intrinsics = intrinsics or camera.intrinsics
        frame_size = (camera.intrinsics.width, camera.intrinsics.height)
        if (intrinsics.width, intrinsics.height) != frame_size:
            raise CalibrationError(
                f"hand-eye: the intrinsics are for {intrinsics.width}x{intrinsics.height} images, {camera.name} gives "
                f"{frame_size[0]}x{frame_size[1]} — calibrate the camera at the size it streams"
            )
        with robot:
            _move(robot, home_rad, config.speed_rad_s)
            poses = zip(plan.approach_poses_rad(), plan.poses_rad, strict=True)
            for index, (approach_rad, target_rad) in enumerate(poses):
                _move(robot, approach_rad, config.speed_rad_s)
                _move(robot, target_rad, config.approach_speed_rad_s)
                positions_rad = _settle(robot, target_rad, config, index)
                # Everything until the next move happens under the hold: a frame, the search for the target.
                with _holding(robot, target_rad):
                    for _ in range(config.stale_frames):
                        camera.read(timeout_s=config.frame_timeout_s)
                    detection = board.detect(camera.read(timeout_s=config.frame_timeout_s).image)
                problem = "" if detection is not None else f"{board} not found in the frame"
                T_hand_link = kinematics.T_hand_link(positions_rad, plan.link)
                view = HandEyeView(index, positions_rad, T_hand_link, detection, problem)
                views.append(view)
                if on_view is not None:
                    on_view(view)
            _move(robot, home_rad, config.speed_rad_s)
    usable = [view for view in views if view.usable]
    if len(usable) < MIN_HAND_EYE_VIEWS:
        raise CalibrationError(
            f"hand-eye: only {len(usable)} of {len(views)} poses are usable (need {MIN_HAND_EYE_VIEWS}) — aim "
            f"{camera.name} at {plan.link}, check the target is {board}, and keep it unoccluded"
        )
    extrinsics = extrinsics_from_hand_eye(
        [view.T_hand_link for view in usable], [view.detection for view in usable], intrinsics
    )
    return HandEyeRun(extrinsics, tuple(views), camera.serial, time.monotonic() - started_s)


def _move(robot: Robot, target_rad: np.ndarray, peak_speed_rad_s: float) -> None:
    """A minimum-jerk move from the last target to ``target_rad`` [rad] with peak joint speed ``peak_speed_rad_s``,
    or :data:`SPEED_LIMIT_FRACTION` of the safety layer's slowest speed limit if that is lower."""
    start_rad = robot.last_target_rad
    assert start_rad is not None  # the robot is started
    peak_speed_rad_s = min(peak_speed_rad_s, SPEED_LIMIT_FRACTION * float(np.min(robot.limits.max_speed_rad_s)))
    distance_rad = float(np.max(np.abs(target_rad - start_rad)))
    # A minimum-jerk profile peaks at 15/8 of its mean speed.
    n_ticks = max(1, int(np.ceil(1.875 * distance_rad / peak_speed_rad_s / robot.control_period_s)))
    for tick in control_ticks(robot.control_period_s):
        if tick == n_ticks:
            return
        progress = (tick + 1) / n_ticks
        blend = progress**3 * (10.0 - 15.0 * progress + 6.0 * progress**2)
        robot.step(start_rad + blend * (target_rad - start_rad))


def _settle(robot: Robot, target_rad: np.ndarray, config: HandEyeConfig, index: int) -> np.ndarray:
    """Hold ``target_rad`` (pose ``index``) until the hand stands still near it; then each joint's angle [rad]
    from ``average_ticks`` readings. CalibrationError when that takes longer than ``max_settle_s``.

    A servo that holds an unloaded joint (abduction) hunts across its gear play: the encoder jumps between the
    two ends of the play while the link stays between them, in proportions that differ from pose to pose. The
    mean of the readings inherits those proportions; the middle of their 10th and 90th percentiles does not,
    and for a joint that does not hunt it is the mean to within the encoder noise."""
    still_ticks = 0
    settled: list[np.ndarray] = []
    started_s = time.monotonic()
    for _ in control_ticks(robot.control_period_s):
        state = robot.step(target_rad).state
        elapsed_s = time.monotonic() - started_s
        if settled:
            settled.append(state.position_rad)
            if len(settled) == config.average_ticks:
                low_rad, high_rad = np.percentile(settled, [10.0, 90.0], axis=0)
                return 0.5 * (low_rad + high_rad)
            continue
        still = (
            float(np.max(np.abs(state.velocity_rad_s))) < config.settle_speed_rad_s
            and float(np.max(np.abs(state.position_rad - target_rad))) < config.settled_tolerance_rad
        )
        still_ticks = still_ticks + 1 if still else 0
        if still_ticks >= config.settle_ticks and elapsed_s >= config.min_settle_s:
            settled.append(state.position_rad)
        elif elapsed_s > config.max_settle_s:
            away = np.abs(state.position_rad - target_rad) >= config.settled_tolerance_rad
            names = [name for name, far in zip(robot.profile.joint_names, away, strict=True) if far]
            where = f"{', '.join(names)} more than {config.settled_tolerance_rad} rad off target" if names else "moving"
            raise CalibrationError(
                f"hand-eye: pose {index} not reached within {config.max_settle_s:g} s ({where}) — check that nothing "
                "blocks the finger and that every servo answers (handrail doctor)"
            )
    raise AssertionError("unreachable: the control ticks never end")


@contextlib.contextmanager
def _holding(robot: Robot, target_rad: np.ndarray) -> Iterator[None]:
    """Keep commanding ``target_rad`` at the control rate from a helper thread while the body runs; a fault in
    that thread is raised here once the body is done."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            for _ in control_ticks(robot.control_period_s):
                if stop.is_set():
                    return
                robot.step(target_rad)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=hold, name="handrail-hand-eye-hold", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]
