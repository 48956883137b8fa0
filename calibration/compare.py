"""Sim vs real: replay a rollout log in MuJoCo, nominal and identified, and report how far each is off.

:func:`compare_rollout` reads a rollout log (the deploy loop's, or an excitation's), replays its commanded
targets with :class:`~handrail.calibration.replay.Replayer` from its first measured state — once with the
nominal sim (position actuators fed the targets, as in training, but at the MJCF's force range: the training
environment caps each servo at its current-limit torque, about a third of that) and, given a dynamics file,
once with the identified parameters (servo command model, latency, multipliers) — and measures, per joint: RMSE and max
|error| of sim minus real joint angle, and the time lag that best aligns the two (cross-correlation of
their mean-removed motions, refined to a fraction of a tick; positive: the real joint lags the sim).

When the log has object poses (the deploy loop logs its pose source's estimate in the hand frame, with its age
and the source's name: ``ground_truth`` on the virtual hand, a camera pipeline's name otherwise), both replays
start the cube at the first logged pose (:class:`~handrail.calibration.replay.ObjectTrack`, converted to the
scene by :class:`~handrail.sim.hand_frame.HandFrame`) and report how the replayed cube diverges from the logged
one (:mod:`~handrail.calibration.object_divergence`): position error [mm] and rotation error [deg] (RMSE, max,
final) and the turn about the palm normal, sim vs real. A log without object poses (an excitation from
``calibrate dynamics``) replays with the cube where the scene's home keyframe rests it, and the report says
that object divergence was not measured and why.

:meth:`CompareReport.write` writes ``report.html`` (tables and the plots), ``joints.png`` (real and simulated
angle per joint, overlaid), ``object.png`` (when there are object poses) and ``metrics.json``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import DynamicsCalibration
from handrail.calibration.errors import CalibrationError
from handrail.calibration.object_divergence import (
    LoggedObject,
    ObjectDivergence,
    format_object_lines,
    logged_object_of,
    no_object_reason,
    object_html,
    plot_object,
)
from handrail.calibration.replay import ObjectReplay, Replayer, ReplayInput, dynamics_scales
from handrail.deploy.pose_source import GROUND_TRUTH
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.robot.errors import ProfileError
from handrail.robot.profile import HandProfile, load_profile

MAX_LAG_S = 0.3  # lags searched in the cross-correlation
MIN_MOTION_RAD = 1e-3  # a joint that moved less (std) has no measurable lag
# A placed cube starting deeper than this inside the hand is noted: contacts push it out at the first step.
PENETRATION_NOTE_M = 1e-3


@dataclass(frozen=True)
class JointMetrics:
    """One model's replay error on one joint."""

    rmse_rad: float
    max_error_rad: float
    lag_s: float  # NaN when the joint barely moved


@dataclass(frozen=True, eq=False)
class ModelReplay:
    """One model's replay: label, simulated angles (T, n), metrics per joint, the cube (when the log has one)."""

    label: str
    position_rad: NDArray[np.float64]
    metrics: tuple[JointMetrics, ...]
    object_divergence: ObjectDivergence | None = None

    @property
    def rmse_rad(self) -> float:
        """Over all joints and ticks."""
        return float(np.sqrt(np.mean([metric.rmse_rad**2 for metric in self.metrics])))


def _videos_html(videos: Mapping[str, str]) -> str:
    figures = "".join(
        f'<figure style="display:inline-block;margin:0 1em 1em 0"><video src="{html.escape(path)}" controls loop '
        f'muted style="max-width:100%"></video><figcaption>{html.escape(caption)}</figcaption></figure>'
        for caption, path in videos.items()
    )
    return f"<div>{figures}</div>" if figures else ""


@dataclass(frozen=True, eq=False)
class CompareReport:
    """The real log and its replays."""

    log_path: Path
    joint_names: tuple[str, ...]
    time_s: NDArray[np.float64]  # (T,) from the first tick
    real_position_rad: NDArray[np.float64]  # (T, n)
    target_rad: NDArray[np.float64]  # (T, n)
    replays: tuple[ModelReplay, ...]
    notes: tuple[str, ...] = field(default=())
    logged_object: LoggedObject | None = None  # None: no object divergence, see object_absent_reason
    object_absent_reason: str = ""

    def replay(self, label: str) -> ModelReplay:
        for replay in self.replays:
            if replay.label == label:
                return replay
        raise KeyError(f"no replay {label!r}; have {[replay.label for replay in self.replays]}")

    def format(self) -> str:
        lines = [f"compare {self.log_path}: {self.time_s.size} ticks, {self.time_s[-1]:.1f} s"]
        header = f"  {'joint':12s}" + "".join(
            f" {replay.label + ' RMSE':>17s} {'max':>7s} {'lag ms':>7s}" for replay in self.replays
        )
        lines.append(header + "   (errors in deg)")
        for index, name in enumerate(self.joint_names):
            row = f"  {name:12s}"
            for replay in self.replays:
                metric = replay.metrics[index]
                lag = "" if np.isnan(metric.lag_s) else f"{metric.lag_s * 1000:+.0f}"
                row += f" {np.degrees(metric.rmse_rad):17.3f} {np.degrees(metric.max_error_rad):7.2f} {lag:>7s}"
            lines.append(row)
        lines.append(
            "  overall RMSE: " + ", ".join(f"{r.label} {np.degrees(r.rmse_rad):.3f} deg" for r in self.replays)
        )
        if len(self.replays) == 2:
            ratio = self.replays[0].rmse_rad / max(self.replays[1].rmse_rad, 1e-12)
            lines.append(f"  {self.replays[1].label} is {ratio:.1f}x closer to the hand than {self.replays[0].label}")
        if self.logged_object is None:
            lines.append(f"  object: not reported — {self.object_absent_reason}")
        else:
            lines.extend(format_object_lines(self.logged_object, self._object_divergences()))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "log": str(self.log_path),
            "ticks": int(self.time_s.size),
            "duration_s": float(self.time_s[-1]),
            "overall_rmse_rad": {replay.label: replay.rmse_rad for replay in self.replays},
            "joints": {
                name: {
                    replay.label: {
                        "rmse_rad": replay.metrics[index].rmse_rad,
                        "max_error_rad": replay.metrics[index].max_error_rad,
                        "lag_s": None if np.isnan(replay.metrics[index].lag_s) else replay.metrics[index].lag_s,
                    }
                    for replay in self.replays
                }
                for index, name in enumerate(self.joint_names)
            },
            "object": self._object_dict(),
            "notes": list(self.notes),
        }

    def _object_divergences(self) -> dict[str, ObjectDivergence]:
        return {
            replay.label: replay.object_divergence for replay in self.replays if replay.object_divergence is not None
        }

    def _object_dict(self) -> dict:
        if self.logged_object is None:
            return {"reported": False, "reason": self.object_absent_reason}
        return {
            "reported": True,
            "source": self.logged_object.source,
            "samples": int(self.logged_object.time_s.size),
            "real_rotation_z_deg": float(np.degrees(self.logged_object.rotation_z_rad)),
            "replays": {
                label: divergence.metrics.as_dict() for label, divergence in self._object_divergences().items()
            },
        }

    def write(self, out_dir: Path, videos: Mapping[str, str] | None = None) -> Path:
        """Write ``report.html``, ``joints.png``, ``object.png`` (object poses only) and ``metrics.json``.

        ``videos``: caption -> video path relative to ``out_dir``, shown at the top of the page.
        Returns the HTML path.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        self._plot(out_dir / "joints.png")
        if self.logged_object is not None:
            plot_object(out_dir / "object.png", self.logged_object, self._object_divergences())
        rows = []
        for index, name in enumerate(self.joint_names):
            cells = "".join(
                f"<td>{np.degrees(r.metrics[index].rmse_rad):.3f}</td><td>{np.degrees(r.metrics[index].max_error_rad):.2f}</td>"
                f"<td>{'' if np.isnan(r.metrics[index].lag_s) else f'{r.metrics[index].lag_s * 1000:+.0f}'}</td>"
                for r in self.replays
            )
            rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
        heads = "".join(
            f"<th>{html.escape(r.label)} RMSE [deg]</th><th>max [deg]</th><th>lag [ms]</th>" for r in self.replays
        )
        summary = html.escape(self.format()).replace("\n", "<br>\n")
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>handrail compare: {html.escape(self.log_path.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} td:first-child{{text-align:left}}</style></head>
<body><h1>Sim vs real: {html.escape(self.log_path.name)}</h1>
<p>Replay of the logged targets in MuJoCo from the logged initial joint state. Lag &gt; 0: the real joint lags the
simulated one.</p>
{_videos_html(videos or {})}
<table><tr><th>joint</th>{heads}</tr>
{"".join(rows)}
</table>
<p style="font-family:monospace">{summary}</p>
<img src="joints.png" alt="real and simulated joint angles" style="max-width:100%">
{object_html(self.logged_object, self._object_divergences(), self.object_absent_reason)}</body></html>
"""
        path = out_dir / "report.html"
        path.write_text(page)
        return path

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(self.joint_names)
        columns = 4
        rows = int(np.ceil(n / columns))
        figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows), sharex=True, squeeze=False)
        styles = {"nominal": ("tab:blue", "--"), "identified": ("tab:orange", "-")}
        for index, name in enumerate(self.joint_names):
            axis = axes[index // columns][index % columns]
            axis.plot(self.time_s, np.degrees(self.target_rad[:, index]), color="0.75", lw=0.8, label="target")
            axis.plot(self.time_s, np.degrees(self.real_position_rad[:, index]), color="k", lw=1.2, label="real")
            for replay in self.replays:
                color, style = styles.get(replay.label, (None, "-"))
                rmse_deg = np.degrees(replay.metrics[index].rmse_rad)
                axis.plot(
                    self.time_s,
                    np.degrees(replay.position_rad[:, index]),
                    color=color,
                    ls=style,
                    lw=1.0,
                    label=f"sim {replay.label} ({rmse_deg:.2f} deg)",
                )
            axis.set_title(name, fontsize=9)
            axis.tick_params(labelsize=7)
            axis.legend(fontsize=6, loc="upper right")
        for index in range(n, rows * columns):
            axes[index // columns][index % columns].axis("off")
        for axis in axes[-1]:
            axis.set_xlabel("time [s]", fontsize=8)
        figure.supylabel("joint angle [deg]")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
        plt.close(figure)


def time_lag_s(real: NDArray[np.float64], sim: NDArray[np.float64], period_s: float) -> float:
    """The delay [s] of ``real`` behind ``sim`` that maximizes their cross-correlation (NaN if ``real`` is still).

    Both are sampled every ``period_s``; the peak is refined by a parabola through its neighbours.
    """
    real = real - real.mean()
    sim = sim - sim.mean()
    if real.std() < MIN_MOTION_RAD or sim.std() < MIN_MOTION_RAD:
        return float("nan")
    max_lag = min(int(MAX_LAG_S / period_s), real.size // 2)
    lags = np.arange(-max_lag, max_lag + 1)
    # correlation[k] = sum_t real[t] * sim[t - k]: high when real at t looks like sim k samples earlier.
    correlation = np.array(
        [
            np.dot(real[max(lag, 0) : real.size + min(lag, 0)], sim[max(-lag, 0) : sim.size - max(lag, 0)])
            for lag in lags
        ]
    )
    peak = int(np.argmax(correlation))
    offset = 0.0
    if 0 < peak < lags.size - 1:
        left, middle, right = correlation[peak - 1 : peak + 2]
        curvature = left - 2 * middle + right
        if curvature < 0:
            offset = 0.5 * (left - right) / curvature
    return float((lags[peak] + offset) * period_s)


def joint_metrics(
    real_rad: NDArray[np.float64], sim_rad: NDArray[np.float64], period_s: float
) -> tuple[JointMetrics, ...]:
    """RMSE, max |error| and lag per joint for (T, n) real and simulated angles."""
    error = sim_rad - real_rad
    return tuple(
        JointMetrics(
            float(np.sqrt(np.mean(error[:, joint] ** 2))),
            float(np.max(np.abs(error[:, joint]))),
            time_lag_s(real_rad[:, joint], sim_rad[:, joint], period_s),
        )
        for joint in range(real_rad.shape[1])
    )


def profile_for_log(log_header_profile: dict | None, fallback: HandProfile | None) -> HandProfile:
    """The profile a log was recorded with (from its header), else ``fallback`` (else the bundled one)."""
    if fallback is not None:
        return fallback
    if log_header_profile is not None:
        try:
            profile = HandProfile.model_validate(log_header_profile)
            if Path(profile.mjcf).is_file():
                return profile
        except ValueError:
            pass
    try:
        return load_profile()
    except ProfileError as error:
        raise CalibrationError(f"no profile for this log: {error} — pass --profile") from error


def compare_rollout(
    log_path: str | Path,
    *,
    dynamics: DynamicsCalibration | None = None,
    profile: HandProfile | None = None,
    replayer: Replayer | None = None,
) -> CompareReport:
    """Replay ``log_path`` nominal and (given ``dynamics``) identified; the report (nothing is written).

    Raises CalibrationError when the log's joints do not match the profile, or it has too few ticks.
    """
    log = read_rollout_log(log_path)
    profile = profile_for_log(log.header.profile, profile)
    if tuple(log.header.joint_names) != profile.joint_names:
        raise CalibrationError(
            f"log {log_path} is for joints {log.header.joint_names}, profile {profile.name!r} has {profile.joint_names}"
        )
    replay_input = ReplayInput.from_log(log, profile)
    replayer = replayer or Replayer(profile)
    period_s = 1.0 / log.header.control_rate_hz
    logged_object = logged_object_of(replay_input)
    runs = {"nominal": replayer.run_with_object(replay_input)}
    if dynamics is not None:
        runs["identified"] = replayer.run_with_object(
            replay_input,
            dynamics_scales(replayer, dynamics),
            dynamics.command_latency_s,
            command_model="servo",
            backlash_rad=dynamics.backlash_per_joint(profile.joint_names),
        )
    replays = [
        ModelReplay(
            label,
            joints,
            joint_metrics(replay_input.position_rad, joints, period_s),
            _divergence(logged_object, replay_input, cube),
        )
        for label, (joints, cube) in runs.items()
    ]
    notes = []
    if log.truncated:
        notes.append(f"the log is truncated ({log.truncation_reason}); compared up to its last complete chunk")
    if replay_input.n_ticks < log.n_ticks:
        notes.append(f"replayed {replay_input.n_ticks} of {log.n_ticks} ticks (the rest lack a measurement or target)")
    if logged_object is not None:
        if GROUND_TRUTH not in logged_object.source.split(", "):
            notes.append(
                f"the object poses come from {logged_object.source!r}, not the simulator's ground truth: the "
                "divergence includes that source's estimation error"
            )
        penetration_m = runs["nominal"][1].start_penetration_m if runs["nominal"][1] is not None else 0.0
        if penetration_m > PENETRATION_NOTE_M:
            notes.append(
                f"the placed cube starts {penetration_m * 1e3:.1f} mm inside the simulated hand (joint zero offsets "
                "not calibrated, or an object pose off?): contacts push it out at the first step"
            )
    return CompareReport(
        Path(log_path),
        profile.joint_names,
        replay_input.time_s - replay_input.time_s[0],
        replay_input.position_rad,
        replay_input.target_rad,
        tuple(replays),
        tuple(notes),
        logged_object,
        "" if logged_object is not None else no_object_reason(log),
    )


def _divergence(
    logged: LoggedObject | None, replay_input: ReplayInput, cube: ObjectReplay | None
) -> ObjectDivergence | None:
    if logged is None or cube is None or replay_input.object_track is None:
        return None
    present = replay_input.object_track.present
    return ObjectDivergence.measure(logged, cube.position_m[present], cube.quat_wxyz[present], cube.start_penetration_m)
