"""The main job: the bundled rotate-z policy driving the virtual hand through the full loop, then its scores.

``handrail demo`` starts the virtual hand (a fixed reality seed) on a pseudo-terminal, runs the bundled
policy through :func:`~handrail.deploy.run.run_deploy` with the safety layer active, writes the rollout log,
and scores the run *from the log*. The object pose comes from ``--pose``: ``ground-truth`` (the virtual
hand's simulator state, labelled as such in the log; the default until the camera path keeps the bundled
policy turning as well), ``camera`` (a virtual camera and the bundled pose CNN) or ``aruco`` (a virtual
camera and the ArUco baseline); see :mod:`handrail.deploy.camera_pose`. Scores:

- rotation of the cube about the palm normal (unwrapped yaw of the logged pose, in the hand frame), total
  [rad] and mean angular velocity [rad/s] over the policy's part of the run;
- drops: the cube leaving the palm (centre more than 5 cm below the palm surface or 10 cm from where it
  started in the palm plane; once dropped, it stays dropped on a real hand);
- limit violations in the log: a commanded target outside the soft limits, a commanded step faster than
  the speed limit, a measured speed beyond the limit plus the monitor's tolerance for as many consecutive
  ticks as the monitor's overspeed fault takes (one reading over it — a finger snapping free of the cube —
  is what the monitor tolerates, and so does this count);
- safety interventions by kind, and the loop's timing (p50/p99/max tick time, missed deadlines).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from handrail.deploy.loop import LoopConfig
from handrail.deploy.rollout_reader import RolloutLog, read_rollout_log
from handrail.deploy.rollout_summary import summarize
from handrail.deploy.run import run_deploy
from handrail.errors import HandrailError
from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safety_limits import SafetyLimits
from handrail.robot.safety_monitor import MonitorConfig
from handrail.sim import quat

BUNDLED_POLICY = "leap_rotate_z.onnx"
# Object-pose sources of the demo: the simulator's truth, or a virtual camera + the pose CNN or the ArUco baseline.
POSE_SOURCES = ("ground-truth", "camera", "aruco")
FELL_BELOW_PALM_M = 0.05
OFF_PALM_M = 0.1
LIMIT_TOLERANCE = 1e-9


class DemoError(HandrailError):
    """The demo cannot run (no bundled policy, the virtual hand would not start)."""


def bundled_policy_path() -> Path:
    """The committed rotate-z policy (``deploy/policies/leap_rotate_z.onnx``)."""
    path = Path(str(resources.files("handrail.deploy").joinpath("policies", BUNDLED_POLICY)))
    if not path.is_file():
        raise DemoError(f"the bundled policy {path} is missing — reinstall handrail or pass --policy FILE")
    return path


@dataclass(frozen=True)
class DemoSummary:
    """The demo's scores (see the module docstring); ``as_dict`` is the ``--json`` output."""

    rotation_rad: float
    mean_angular_velocity_rad_s: float
    drops: int
    limit_violations: dict[str, int]
    safety_interventions: dict[str, int]
    loop: dict[str, Any]
    exit_code: int
    stop_reason: str
    log_path: str
    pose_source: str
    policy_seconds: float
    # The sim-vs-real report of this run (``handrail compare``, nominal model), or why there is none.
    compare_report: str | None = None
    compare_rmse_deg: float | None = None
    compare_note: str | None = None
    first_drop_s: float | None = None  # seconds of policy before the first drop (None: no drop)
    video: str | None = None  # the run rendered from its log (handrail log video), beside the log
    compare_video: str | None = None  # the run beside its sim replay, in the compare report's folder
    video_render_s: float | None = None

    @property
    def demo_exit_code(self) -> int:
        """``handrail demo``'s exit code: 0 when the run kept every limit — a safe stop by the safety layer
        included, since stopping the hand is its job — and 1 when the log shows a limit broken."""
        return 1 if sum(self.limit_violations.values()) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rotation_rad": self.rotation_rad,
            "mean_angular_velocity_rad_s": self.mean_angular_velocity_rad_s,
            "drops": self.drops,
            "first_drop_s": self.first_drop_s,
            "limit_violations": sum(self.limit_violations.values()),
            "limit_violations_by_kind": self.limit_violations,
            "safety_interventions": sum(self.safety_interventions.values()),
            "safety_interventions_by_kind": self.safety_interventions,
            "loop": self.loop,
            "loop_exit_code": self.exit_code,
            "safe_stop": self.exit_code != 0,
            "stop_reason": self.stop_reason,
            "log": self.log_path,
            "pose_source": self.pose_source,
            "policy_seconds": self.policy_seconds,
            "compare_report": self.compare_report,
            "compare_rmse_deg": self.compare_rmse_deg,
            "video": self.video,
            "compare_video": self.compare_video,
            "video_render_s": self.video_render_s,
        }

    def format(self) -> str:
        loop = self.loop
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.safety_interventions.items() if count) or "none"
        violations = ", ".join(f"{kind} {count}" for kind, count in self.limit_violations.items() if count) or "none"
        tick = loop.get("tick_time_ms") or {}
        return "\n".join(
            [
                f"demo: {self.policy_seconds:.1f} s of policy on the virtual hand (pose: {self.pose_source})",
                f"  cube rotation about the palm normal: {self.rotation_rad:+.2f} rad "
                f"({self.rotation_rad / (2 * np.pi):+.2f} turns), mean {self.mean_angular_velocity_rad_s:+.3f} rad/s",
                f"  drops: {self.drops}"
                + (f" (the first after {self.first_drop_s:.1f} s)" if self.first_drop_s is not None else ""),
                f"  safety interventions: {sum(self.safety_interventions.values())} ({kinds})",
                f"  limit violations in the log: {sum(self.limit_violations.values())} ({violations})",
                f"  loop: {loop.get('ticks')} ticks at {loop.get('mean_rate_hz')} Hz, tick p50 {tick.get('p50')} ms, "
                f"p99 {tick.get('p99')} ms, max {tick.get('max')} ms, missed deadlines {loop.get('missed_deadlines')}",
                f"  ended: {self.stop_reason}"
                + (" — the safety layer stopped the hand; no limit was broken" if self.exit_code else ""),
                f"  log: {self.log_path}  (handrail log info {self.log_path})",
                self._compare_line(),
            ]
            + ([f"  video: {self.video}  (rendered from the log in {self.video_render_s:.0f} s)"] if self.video else [])
        )

    def _compare_line(self) -> str:
        if self.compare_report is not None:
            return (
                f"  sim vs this run: {self.compare_report} (nominal sim, joint RMSE {self.compare_rmse_deg:.2f} deg; "
                f"an identified model: handrail compare {self.log_path} --dynamics FILE)"
            )
        reason = f" ({self.compare_note})" if self.compare_note else ""
        return f"  sim vs this run: handrail compare {self.log_path}{reason}"


def cube_rotation(log: RolloutLog) -> tuple[float, float, float]:
    """(total rotation about the palm normal [rad], mean angular velocity [rad/s], seconds) over the policy ticks."""
    active = log.policy_active & np.isfinite(log.pose_quat_wxyz).all(axis=1)
    if np.count_nonzero(active) < 2:
        return 0.0, 0.0, 0.0
    yaw = np.unwrap(quat.yaw(log.pose_quat_wxyz[active]))
    times = log.time_s[active]
    seconds = float(times[-1] - times[0])
    rotation = float(yaw[-1] - yaw[0])
    return rotation, rotation / seconds if seconds > 0 else 0.0, seconds


def off_palm(log: RolloutLog) -> np.ndarray:
    """(T,) bool: ticks where the logged cube is off the palm (fallen below it, or away from where it first lay)."""
    positions = log.pose_position_m
    finite = np.isfinite(positions).all(axis=1)
    if not finite.any():
        return np.zeros(log.n_ticks, dtype=bool)
    start = positions[np.flatnonzero(finite)[0]]
    off = (positions[:, 2] < -FELL_BELOW_PALM_M) | (np.linalg.norm(positions[:, :2] - start[:2], axis=1) > OFF_PALM_M)
    return off & finite


def drop_times(log: RolloutLog) -> list[float]:
    """When the cube left the palm [s after the policy took over] (a drop lasts until the cube is back)."""
    off = off_palm(log)
    if not off.any():
        return []
    began = np.flatnonzero(np.concatenate(([off[0]], off[1:] & ~off[:-1])))
    active = np.flatnonzero(log.policy_active)
    policy_start_s = float(log.time_s[active[0]]) if len(active) else float(log.time_s[0])
    return [float(log.time_s[tick]) - policy_start_s for tick in began]


def count_drops(log: RolloutLog) -> int:
    """How many times the cube left the palm (a drop lasts until the cube is back)."""
    return len(drop_times(log))


def sustained(flags: np.ndarray, readings: int) -> np.ndarray:
    """(ticks, joints) bool: True where a joint's flag has been set for ``readings`` consecutive ticks up to here."""
    run = np.zeros(flags.shape[1:], dtype=np.int64)
    out = np.zeros(flags.shape, dtype=bool)
    for tick, row in enumerate(flags):
        run = np.where(row, run + 1, 0)
        out[tick] = run >= readings
    return out


def limit_violations(log: RolloutLog, profile: HandProfile) -> dict[str, int]:
    """Ticks (per joint) where the log shows a limit broken (see the module docstring)."""
    limits = SafetyLimits.from_profile(profile)
    target = log.target_rad
    outside = (target < limits.soft_low_rad - LIMIT_TOLERANCE) | (target > limits.soft_high_rad + LIMIT_TOLERANCE)
    period_s = 1.0 / log.header.control_rate_hz
    step = np.abs(np.diff(target, axis=0))
    too_fast = step > limits.max_speed_rad_s * period_s * (1 + 1e-6) + LIMIT_TOLERANCE
    monitor = MonitorConfig()
    over = np.abs(log.velocity_rad_s) > limits.max_speed_rad_s * (1.0 + monitor.speed_tolerance)
    measured_fast = sustained(over, monitor.overspeed_readings)
    return {
        "target_outside_soft_limits": int(np.count_nonzero(outside)),
        "target_step_over_speed_limit": int(np.count_nonzero(too_fast)),
        "measured_speed_over_limit": int(np.count_nonzero(measured_fast)),
    }


def summarize_demo(log_path: Path, profile: HandProfile, exit_code: int, stop_reason: str) -> DemoSummary:
    """Score a demo run from its rollout log."""
    log = read_rollout_log(log_path)
    rotation, angular_velocity, seconds = cube_rotation(log)
    loop = summarize(log)
    sources = sorted({source for source in log.pose_source if source})
    drops = drop_times(log)
    return DemoSummary(
        rotation_rad=rotation,
        mean_angular_velocity_rad_s=angular_velocity,
        drops=len(drops),
        first_drop_s=drops[0] if drops else None,
        limit_violations=limit_violations(log, profile),
        safety_interventions=loop["safety_interventions"],
        loop={
            key: loop[key]
            for key in ("ticks", "duration_s", "mean_rate_hz", "tick_time_ms", "missed_deadlines", "truncated")
        },
        exit_code=exit_code,
        stop_reason=stop_reason,
        log_path=str(log_path),
        pose_source=", ".join(sources) or "none",
        policy_seconds=seconds,
    )


def run_demo(
    *,
    seconds: float = 30.0,
    reality_seed: int = 0,
    out_dir: str | Path = "out/demo",
    policy: str | Path | None = None,
    profile_path: str | Path | None = None,
    status_stream: TextIO | None = None,
    pose: str = "ground-truth",
    pose_model: str | Path | None = None,
    compare: bool = True,
    video: bool = True,
    view: Any = None,
) -> DemoSummary:
    """Run the demo (see the module docstring) and return its summary.

    ``pose_model``: the pose model file for ``pose="camera"`` (default: the bundled one). ``compare``: also
    replay the run in the nominal sim and write the sim-vs-real report (``handrail compare``) beside the log.
    ``video``: render the run from its log (``<log>.webm``; with ``compare``, also the run beside its sim replay,
    embedded in the report). ``view``: a live view (:class:`~handrail.deploy.live_view.LiveView`) of the run.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.deploy.pose_source import GroundTruthPose, PoseSource
    from handrail.robot.emulator import VirtualHandProcess

    profile = load_profile(profile_path)
    policy_path = Path(policy) if policy is not None else bundled_policy_path()
    if pose not in POSE_SOURCES:
        raise DemoError(f"--pose {pose!r} is unknown; valid: {', '.join(POSE_SOURCES)}")
    with VirtualHandProcess(profile_path, reality_seed=reality_seed) as vhand:
        source: PoseSource
        if pose == "camera":
            from handrail.deploy.camera_pose import VirtualCameraModelPose

            source = VirtualCameraModelPose(vhand, profile, model=pose_model)
        elif pose == "aruco":
            from handrail.deploy.camera_pose import VirtualCameraFiducialPose

            source = VirtualCameraFiducialPose(vhand, profile)
        else:
            source = GroundTruthPose(vhand, profile)
        if view is not None and hasattr(source, "on_frame"):
            source.on_frame = view.image  # the camera's frames in the live view too
        outcome = run_deploy(
            policy_path,
            profile,
            vhand.port,
            source,
            config=LoopConfig(seconds=seconds),
            out_dir=out_dir,
            extra={"demo": True, "reality_seed": reality_seed},
            status_stream=status_stream,
            view=view,
        )
    summary = summarize_demo(outcome.log_path, profile, outcome.result.exit_code, outcome.result.stop_reason)
    if video:
        summary = video_demo(summary, profile)
    return compare_demo(summary, profile, video=video) if compare else summary


def video_demo(summary: DemoSummary, profile: HandProfile) -> DemoSummary:
    """``summary`` with its run rendered from the log beside it (``<log>.webm``; a log with no tick: none)."""
    from handrail.deploy.log_video import DEMO_VIDEO, VideoError, render_log_video

    log_path = Path(summary.log_path)
    try:
        report = render_log_video(log_path, log_path.with_suffix(".webm"), profile, DEMO_VIDEO)
    except VideoError:
        return summary
    return dataclasses.replace(summary, video=str(report.path), video_render_s=report.render_s)


def compare_demo(summary: DemoSummary, profile: HandProfile, *, video: bool = False) -> DemoSummary:
    """``summary`` with the sim-vs-real report of its run written beside the log (``<log>_compare/``); with
    ``video`` the report shows the run's video and the run beside its sim replay (``sim_vs_real.webm``).

    A run too short to compare (a stop in the first ticks) keeps its summary, with the reason.
    """
    from handrail.calibration.compare import compare_rollout
    from handrail.calibration.errors import CalibrationError

    log_path = Path(summary.log_path)
    try:
        report = compare_rollout(log_path, profile=profile)
    except CalibrationError as error:
        return dataclasses.replace(summary, compare_note=f"no report: {error}")
    out_dir = log_path.with_name(f"{log_path.stem}_compare")
    videos: dict[str, str] = {}
    compare_video = None
    if video:
        from handrail.deploy.log_video import DEMO_COMPARE_VIDEO, render_compare_video

        out_dir.mkdir(parents=True, exist_ok=True)
        if summary.video is not None:
            videos["the run, from its log"] = os.path.relpath(summary.video, out_dir)
        rendered = render_compare_video(
            read_rollout_log(log_path), report, out_dir / "sim_vs_real.webm", profile, DEMO_COMPARE_VIDEO
        )
        compare_video = str(rendered.path)
        videos["real (left) beside the nominal sim replay (right)"] = rendered.path.name
    html = report.write(out_dir, videos=videos)
    return dataclasses.replace(
        summary,
        compare_report=str(html),
        compare_rmse_deg=float(np.degrees(report.replay("nominal").rmse_rad)),
        compare_video=compare_video,
    )
