"""A video of a rollout, rendered from its log: what the hand did, for people who would rather watch than read.

``handrail log video LOG.mcap --out run.webm``: each frame places the logged (measured) joint angles and the
logged cube pose in the profile's MuJoCo scene and renders it offscreen (``MUJOCO_GL=egl``) from one camera or
several side by side (``--camera all``). An overlay gives the time, the tick, the cube's turn about the palm
normal so far and the safety interventions of that tick; a banner marks a fault or safe stop (red, from its
event on) and a dropped cube (amber, while it is off the palm). A log without a pose shows the hand alone and
says so; a pose from a camera is labelled as such (it is what the estimator saw, not the truth).

The file is WebM (VP8) written by OpenCV, which the project already depends on: its FFmpeg build encodes VP8
(its H.264 encoder is absent from the pip wheel), and VP8 WebM plays in browsers and common players (VLC, mpv,
Chrome, Firefox). Frames are taken at ``fps`` in log time divided by ``speed``: each shows the last tick at or
before its instant. Rendering reads no physics: nothing is simulated, the video shows the log.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import mujoco
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from handrail.calibration.compare import CompareReport

from handrail.deploy.demo import off_palm
from handrail.deploy.rollout_log import FAULT, SAFE_STOP, RolloutLogError
from handrail.deploy.rollout_reader import RolloutLog, read_rollout_log
from handrail.robot.profile import HandProfile
from handrail.sim import leap, quat
from handrail.sim.hand_frame import HandFrame
from handrail.sim.model import build_scene_for_profile, camera_names
from handrail.sim.render import make_renderer

VIDEO_SUFFIX = ".webm"
FOURCC = "VP80"
RED, AMBER, WHITE, BLACK = (40, 40, 220), (0, 170, 255), (255, 255, 255), (0, 0, 0)  # BGR


class VideoError(RolloutLogError):
    """A video could not be made from a log (bad options, an unknown camera, a codec that will not open)."""


@dataclass(frozen=True)
class VideoConfig:
    """``cameras``: scene camera names, or ``("all",)``; ``fps`` frames per second of video; ``speed``: log
    seconds per video second; ``width`` x ``height`` per camera [px]."""

    cameras: tuple[str, ...] = ("cam_front",)
    fps: float = 15.0
    speed: float = 1.0
    width: int = 400
    height: int = 300

    def __post_init__(self) -> None:
        for name in ("fps", "speed"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise VideoError(f"video {name} = {value!r} must be a positive number")
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise VideoError(f"video size {self.width}x{self.height}: give even sizes of at least 64 px")


# What `handrail demo` renders (a 30 s run must not add more than ~20 s to it on 2 cores): the run at 10 fps,
# and the run beside its sim replay at 5 fps, one camera, 320x240 each.


@dataclass(frozen=True)
class VideoReport:
    path: Path
    frames: int
    seconds: float  # video length [s]
    size: tuple[int, int]  # (width, height) of a frame [px]
    cameras: tuple[str, ...]
    pose: str  # where the cube pose came from: "ground_truth", "camera ...", or "none (the hand alone)"
    render_s: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.render_s if self.render_s > 0 else math.inf

    def format(self) -> str:
        width, height = self.size
        return (
            f"wrote {self.path}: {self.frames} frames, {self.seconds:.1f} s at {self.frames / self.seconds:g} fps, "
            f"{width}x{height}, cameras {', '.join(self.cameras)}, cube pose {self.pose}; rendered in "
            f"{self.render_s:.1f} s ({self.frames_per_s:.0f} frames/s)"
        )


def frame_ticks(time_s: NDArray[np.float64], fps: float, speed: float) -> NDArray[np.int64]:
    """For each video frame, the index of the last tick at or before its instant (log time = frame / fps x speed)."""
    if time_s.size == 0:
        return np.zeros(0, dtype=np.int64)
    elapsed = time_s - time_s[0]
    n_frames = math.floor(float(elapsed[-1]) / speed * fps + 1e-6) + 1  # (float times: 0.3 s reads 0.29999...)
    instants = np.arange(n_frames) * speed / fps
    return np.searchsorted(elapsed, instants + 1e-6, side="right").astype(np.int64) - 1


def cube_turn_rad(log: RolloutLog) -> NDArray[np.float64]:
    """The cube's turn about the palm normal since its first logged pose [rad], per tick (held where none)."""
    valid = np.isfinite(log.pose_quat_wxyz).all(axis=1)
    turn = np.full(log.n_ticks, np.nan)
    if valid.any():
        yaw = np.unwrap(quat.yaw(log.pose_quat_wxyz[valid]))
        turn[valid] = yaw - yaw[0]
    # Hold the last value over ticks without a pose (and 0 before the first).
    index = np.where(valid, np.arange(log.n_ticks), -1)
    last = np.maximum.accumulate(index)
    return np.where(last >= 0, turn[np.maximum(last, 0)], 0.0)


def pose_label(log: RolloutLog) -> str:
    sources = sorted({source for source in log.pose_source if source})
    if not sources:
        return "none (the hand alone)"
    return ", ".join("ground_truth" if source == "ground_truth" else f"camera ({source})" for source in sources)


def _stop_banner(log: RolloutLog) -> tuple[float, str] | None:
    """(time [s], text) of the first fault or safe stop in the log, or None."""
    for event in log.events:
        if event.kind in (FAULT, SAFE_STOP):
            kind = event.details.get("fault_kind") or event.kind
            action = event.details.get("action")
            text = f"SAFE STOP: {kind}" + (f" ({action})" if action else "")
            return event.time_s, text.replace("_", " ")
    return None


@contextlib.contextmanager
def _video_file(out: Path, fps: float, size: tuple[int, int]) -> Iterator[cv2.VideoWriter]:
    """OpenCV's VP8 WebM writer on a hidden partial file, renamed to ``out`` once every frame is in (a reader
    sees the whole video or none); without OpenCV's note that the WebM muxer tags VP8 its own way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial{VIDEO_SUFFIX}")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*FOURCC), fps, size)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not writer.isOpened():
        raise VideoError(f"OpenCV could not open a {FOURCC} writer for {partial} — is opencv-python's FFmpeg there?")
    try:
        yield writer
    finally:
        writer.release()
    partial.replace(out)


def _put(image: NDArray[np.uint8], text: str, origin: tuple[int, int], scale: float, color=WHITE) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _banner(image: NDArray[np.uint8], text: str, color: tuple[int, int, int], row: int) -> None:
    height, width = image.shape[:2]
    top = height - 34 * (row + 1)
    cv2.rectangle(image, (0, top), (width, top + 30), color, -1)
    _put(image, text, (8, top + 21), 0.6)


class LogScene:
    """The profile's scene, posed tick by tick from a log, rendered from its cameras."""

    def __init__(self, profile: HandProfile, log: RolloutLog, config: VideoConfig):
        if tuple(log.joint_names) != tuple(profile.joint_names):
            raise VideoError(
                f"the log drives joints {list(log.joint_names)[:3]}... of hand {log.header.profile_name!r}, the "
                f"profile {profile.name!r} has {list(profile.joint_names)[:3]}... — pass the log's own --profile"
            )
        self.model = build_scene_for_profile(profile)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.model.key(leap.HOME_KEYFRAME_NAME).id)
        available = camera_names(self.model)
        cameras = available if config.cameras == ("all",) else config.cameras
        unknown = [name for name in cameras if name not in available]
        if unknown:
            raise VideoError(f"camera {unknown[0]!r} is not in the scene — give one of {', '.join(available)}, or all")
        self.cameras = tuple(cameras)
        self.qpos_ids = np.array([self.model.joint(joint.mjcf_joint).qposadr[0] for joint in profile.joints])
        self.cube_qpos = int(self.model.joint(leap.CUBE_JOINT_NAME).qposadr[0])
        self.hand_frame = HandFrame.of_model(self.model)
        self.renderer = make_renderer(self.model, config.width, config.height)
        # Shadows and reflections cost most of a software (CPU) render and show nothing a viewer needs here.
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def pose(self, log: RolloutLog, tick: int) -> None:
        self.place(log.position_rad[tick], log.pose_position_m[tick], log.pose_quat_wxyz[tick])

    def place(
        self, positions: NDArray[np.float64], cube_position: NDArray[np.float64], cube_quat: NDArray[np.float64]
    ) -> None:
        """Joint angles (n,) [rad], the cube in the hand frame; NaN entries leave that part where it was."""
        known = np.isfinite(positions)
        self.data.qpos[self.qpos_ids[known]] = positions[known]
        if np.isfinite(cube_position).all() and np.isfinite(cube_quat).all():
            q = self.hand_frame.rotations_to_world(cube_quat)
            self.data.qpos[self.cube_qpos : self.cube_qpos + 3] = self.hand_frame.points_to_world(cube_position)
            self.data.qpos[self.cube_qpos + 3 : self.cube_qpos + 7] = q / np.linalg.norm(q)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)  # cameras and lights follow (no physics, no contacts)

    def render(self) -> NDArray[np.uint8]:
        views = []
        for camera in self.cameras:
            self.renderer.update_scene(self.data, camera=camera)
            views.append(cv2.cvtColor(self.renderer.render(), cv2.COLOR_RGB2BGR))
        return np.hstack(views)

    def close(self) -> None:
        self.renderer.close()


def render_log_video(
    log_path: Path, out: Path, profile: HandProfile, config: VideoConfig | None = None, *, log: RolloutLog | None = None
) -> VideoReport:
    """Render ``log_path`` (already read: ``log``) to a WebM video at ``out``; see the module docstring."""
    config = config or VideoConfig()
    log = log if log is not None else read_rollout_log(Path(log_path))
    if log.n_ticks == 0:
        raise VideoError(f"{log_path} holds no ticks — nothing to show")
    out = Path(out)
    if out.suffix.lower() != VIDEO_SUFFIX:
        raise VideoError(f"--out {out}: the video is WebM (VP8); name it *{VIDEO_SUFFIX}")
    started = time.monotonic()
    scene = LogScene(profile, log, config)
    ticks = frame_ticks(log.time_s, config.fps, config.speed)
    label = pose_label(log)
    size = (config.width * len(scene.cameras), config.height)
    try:
        with _video_file(out, config.fps, size) as writer:
            _write_log_frames(writer, scene, log, ticks, label)
    finally:
        scene.close()
    return VideoReport(out, len(ticks), len(ticks) / config.fps, size, scene.cameras, label, time.monotonic() - started)


def _write_log_frames(
    writer: cv2.VideoWriter, scene: LogScene, log: RolloutLog, ticks: NDArray[np.int64], label: str
) -> None:
    turn, dropped, stop = cube_turn_rad(log), off_palm(log), _stop_banner(log)
    interventions = sum(log.intervention_counts.values(), np.zeros(log.n_ticks, dtype=np.int64))
    for tick in ticks.tolist():
        scene.pose(log, tick)
        frame = scene.render()
        elapsed_s = float(log.time_s[tick] - log.time_s[0])
        _put(frame, f"t {elapsed_s:5.1f} s   tick {int(log.tick[tick])}", (8, 22), 0.55)
        _put(frame, f"cube turn {turn[tick]:+.2f} rad   interventions {int(interventions[tick])}", (8, 44), 0.55)
        _put(frame, f"cube pose: {label}", (8, 66), 0.45)
        row = 0
        if stop is not None and log.time_s[tick] >= stop[0]:
            _banner(frame, stop[1], RED, row)
            row += 1
        if dropped[tick]:
            _banner(frame, "CUBE DROPPED", AMBER, row)
        writer.write(frame)


def render_compare_video(
    log: RolloutLog, report: CompareReport, out: Path, profile: HandProfile, config: VideoConfig | None = None
) -> VideoReport:
    """The real run (left: measured joints, logged cube) beside its nominal sim replay (right: simulated joints,
    simulated cube where the log had one), frame by frame, so that the divergence shows."""
    config = config or VideoConfig()
    started = time.monotonic()
    real_scene, sim_scene = LogScene(profile, log, config), LogScene(profile, log, config)
    frame_times = report.time_s[frame_ticks(report.time_s, config.fps, config.speed)]
    size = (config.width * len(real_scene.cameras) * 2, config.height)
    try:
        with _video_file(Path(out), config.fps, size) as writer:
            for frame_s in frame_times.tolist():
                writer.write(_compare_frame(report, real_scene, sim_scene, frame_s))
    finally:
        real_scene.close()
        sim_scene.close()
    seconds = len(frame_times) / config.fps
    elapsed_s = time.monotonic() - started
    return VideoReport(Path(out), len(frame_times), seconds, size, real_scene.cameras, pose_label(log), elapsed_s)


def _compare_frame(report: CompareReport, real_scene: LogScene, sim_scene: LogScene, frame_s: float) -> NDArray:
    """One frame: the real run at ``frame_s`` [s from its first tick] beside the first replay."""
    replay, logged = report.replays[0], report.logged_object
    index = int(np.searchsorted(report.time_s, frame_s + 1e-6, side="right") - 1)
    no_cube = np.full(3, np.nan), np.full(4, np.nan)
    real_cube = sim_cube = no_cube
    if logged is not None and logged.time_s.size:
        sample = max(int(np.searchsorted(logged.time_s, frame_s + 1e-6)) - 1, 0)
        real_cube = logged.position_m[sample], logged.quat_wxyz[sample]
        if replay.object_divergence is not None:
            sim_cube = replay.object_divergence.position_m[sample], replay.object_divergence.quat_wxyz[sample]
    real_scene.place(report.real_position_rad[index], *real_cube)
    sim_scene.place(replay.position_rad[index], *sim_cube)
    real, sim = real_scene.render(), sim_scene.render()
    _put(real, f"REAL (measured)   t {frame_s:5.1f} s", (8, 22), 0.55)
    _put(sim, f"SIM ({replay.label} replay)", (8, 22), 0.55)
    return np.hstack([real, sim])


DEMO_VIDEO = VideoConfig(fps=10.0, width=320, height=240)
DEMO_COMPARE_VIDEO = VideoConfig(fps=5.0, width=320, height=240)
