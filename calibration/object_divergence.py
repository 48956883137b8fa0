"""Object pose divergence: how far the replayed cube drifts from the logged one, and how differently it turns.

Both cubes are in the hand (palm) frame. Per sample (the ticks whose log has a pose, at the time that pose was
captured): position error = distance between the two centres [m]; rotation error = the angle of the rotation
taking one orientation to the other [rad]. Over the run: RMSE, max and final of each, and the total rotation
about the palm's z axis (unwrapped yaw, last minus first: the rotate-z task's score, as the demo scores it).
A logged pose carries its source's error too: ``ground_truth`` (the virtual hand's simulator) none, a camera
its estimation error.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from handrail.calibration.replay import ReplayInput
from handrail.deploy.rollout_reader import RolloutLog
from handrail.sim import quat


def rotation_angle_rad(a_wxyz: NDArray[np.float64], b_wxyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """The angle [rad] in [0, pi] of the rotation between orientations ``a`` and ``b`` (..., 4); q and -q agree."""
    relative = quat.multiply(quat.conjugate(a_wxyz), b_wxyz)
    # atan2 of the sine and cosine of the half angle: accurate near 0 and pi alike, and needs no normalizing.
    return 2.0 * np.arctan2(np.linalg.norm(relative[..., 1:], axis=-1), np.abs(relative[..., 0]))


def palm_z_rotation_rad(quat_wxyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """(K,) rotation about the palm normal [rad] since the first sample, unwrapped, of orientations (K, 4)."""
    yaw = np.unwrap(quat.yaw(quat_wxyz))
    return yaw - yaw[0]


@dataclass(frozen=True)
class ObjectMetrics:
    """One replay's cube against the logged cube."""

    position_rmse_m: float
    position_max_m: float
    position_final_m: float
    rotation_rmse_rad: float
    rotation_max_rad: float
    rotation_final_rad: float
    rotation_z_rad: float  # the replayed cube's total turn about the palm normal
    start_penetration_m: float  # how deep the placed cube started inside the hand (0: clear)

    def as_dict(self) -> dict[str, float]:
        return {
            "position_rmse_mm": self.position_rmse_m * 1e3,
            "position_max_mm": self.position_max_m * 1e3,
            "position_final_mm": self.position_final_m * 1e3,
            "rotation_rmse_deg": float(np.degrees(self.rotation_rmse_rad)),
            "rotation_max_deg": float(np.degrees(self.rotation_max_rad)),
            "rotation_final_deg": float(np.degrees(self.rotation_final_rad)),
            "rotation_z_deg": float(np.degrees(self.rotation_z_rad)),
            "start_penetration_mm": self.start_penetration_m * 1e3,
        }


@dataclass(frozen=True, eq=False)
class LoggedObject:
    """The logged cube at its K samples: capture times from the first tick [s], hand-frame poses, its source."""

    source: str
    time_s: NDArray[np.float64]  # (K,)
    position_m: NDArray[np.float64]  # (K, 3)
    quat_wxyz: NDArray[np.float64]  # (K, 4)

    def __post_init__(self) -> None:
        n_samples = self.time_s.shape[0]
        if self.position_m.shape != (n_samples, 3) or self.quat_wxyz.shape != (n_samples, 4):
            raise ValueError(
                f"logged object: position_m {self.position_m.shape}, quat_wxyz {self.quat_wxyz.shape} for "
                f"{n_samples} samples"
            )

    @property
    def rotation_z_rad(self) -> float:
        return float(palm_z_rotation_rad(self.quat_wxyz)[-1])


@dataclass(frozen=True, eq=False)
class ObjectDivergence:
    """One replay's cube at the logged samples (hand frame) and its errors: (K,) position [m], rotation [rad]."""

    position_m: NDArray[np.float64]  # (K, 3)
    quat_wxyz: NDArray[np.float64]  # (K, 4)
    position_error_m: NDArray[np.float64]  # (K,)
    rotation_error_rad: NDArray[np.float64]  # (K,)
    metrics: ObjectMetrics

    @classmethod
    def measure(
        cls,
        logged: LoggedObject,
        position_m: NDArray[np.float64],
        quat_wxyz: NDArray[np.float64],
        start_penetration_m: float = 0.0,
    ) -> ObjectDivergence:
        """The replayed cube (K, 3), (K, 4) at ``logged``'s samples against it."""
        position_error = np.linalg.norm(position_m - logged.position_m, axis=1)
        rotation_error = rotation_angle_rad(quat_wxyz, logged.quat_wxyz)
        metrics = ObjectMetrics(
            position_rmse_m=float(np.sqrt(np.mean(position_error**2))),
            position_max_m=float(np.max(position_error)),
            position_final_m=float(position_error[-1]),
            rotation_rmse_rad=float(np.sqrt(np.mean(rotation_error**2))),
            rotation_max_rad=float(np.max(rotation_error)),
            rotation_final_rad=float(rotation_error[-1]),
            rotation_z_rad=float(palm_z_rotation_rad(quat_wxyz)[-1]),
            start_penetration_m=start_penetration_m,
        )
        return cls(position_m, quat_wxyz, position_error, rotation_error, metrics)


def logged_object_of(replay_input: ReplayInput) -> LoggedObject | None:
    """The replay input's object track at its ticks with a pose, timed from the first tick."""
    track = replay_input.object_track
    if track is None:
        return None
    present = track.present
    return LoggedObject(
        track.source,
        track.captured_s[present] - replay_input.time_s[0],
        track.position_m[present],
        track.quat_wxyz[present],
    )


def no_object_reason(log: RolloutLog) -> str:
    """Why a log gives no object divergence (its replay leaves the cube where the scene rests it)."""
    has_pose = np.isfinite(log.pose_position_m).all(axis=1) & np.isfinite(log.pose_quat_wxyz).all(axis=1)
    if not has_pose.any():
        return (
            "the log has no object pose (the run had no pose source, e.g. an excitation from calibrate dynamics); "
            "the replay left the cube at rest where the scene puts it"
        )
    return (
        f"the log's first tick has no object pose (the first is at tick {int(np.argmax(has_pose))}), so the replay "
        "cannot place the cube; it left the cube at rest where the scene puts it"
    )


def format_object_lines(logged: LoggedObject, divergences: dict[str, ObjectDivergence]) -> list[str]:
    """The terminal summary: one line per replay, and the real cube's turn."""
    lines = [
        f"  object pose, sim vs real ({logged.source}, {logged.time_s.size} poses, hand frame):",
        f"    {'':10s} {'position error [mm]':^23s}   {'rotation error [deg]':^23s}   {'turn z':>8s}",
        f"    {'':10s} {'RMSE':>7s} {'max':>7s} {'final':>7s}   {'RMSE':>7s} {'max':>7s} {'final':>7s}   {'[deg]':>8s}",
    ]
    for label, divergence in divergences.items():
        metric = divergence.metrics
        lines.append(
            f"    {label:10s} {metric.position_rmse_m * 1e3:7.2f} {metric.position_max_m * 1e3:7.2f} "
            f"{metric.position_final_m * 1e3:7.2f}   {np.degrees(metric.rotation_rmse_rad):7.2f} "
            f"{np.degrees(metric.rotation_max_rad):7.2f} {np.degrees(metric.rotation_final_rad):7.2f}   "
            f"{np.degrees(metric.rotation_z_rad):+8.1f}"
        )
    lines.append(f"    {'real':10s}{'':53s}{np.degrees(logged.rotation_z_rad):+8.1f}")
    return lines


def object_html(logged: LoggedObject | None, divergences: dict[str, ObjectDivergence], absent_reason: str) -> str:
    """The report's object section: a table and ``object.png``, or why there is none."""
    if logged is None:
        return f"<h2>Object pose divergence</h2>\n<p>Not reported: {html.escape(absent_reason)}</p>\n"
    rows = []
    for label, divergence in divergences.items():
        values = divergence.metrics.as_dict()
        cells = "".join(f"<td>{value:.2f}</td>" for value in values.values())
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    rows.append(f"<tr><td>real</td>{'<td></td>' * 6}<td>{np.degrees(logged.rotation_z_rad):.2f}</td><td></td></tr>")
    heads = (
        "<th>replay</th><th>position RMSE [mm]</th><th>max [mm]</th><th>final [mm]</th><th>rotation RMSE [deg]</th>"
        "<th>max [deg]</th><th>final [deg]</th><th>turn about palm z [deg]</th><th>start penetration [mm]</th>"
    )
    return f"""<h2>Object pose divergence</h2>
<p>The replay starts the cube at the log's first object pose (source: {html.escape(logged.source)}) and compares it
with the logged pose at each pose's capture time, in the hand (palm) frame.</p>
<table><tr>{heads}</tr>
{"".join(rows)}
</table>
<img src="object.png" alt="object pose divergence" style="max-width:100%">
"""


def plot_object(path: Path, logged: LoggedObject, divergences: dict[str, ObjectDivergence]) -> None:
    """``object.png``: position and rotation error, turn about the palm normal, height above the palm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"nominal": ("tab:blue", "--"), "identified": ("tab:orange", "-")}
    figure, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    time_s = logged.time_s
    (position_axis, rotation_axis), (turn_axis, height_axis) = axes
    turn_axis.plot(time_s, np.degrees(palm_z_rotation_rad(logged.quat_wxyz)), color="k", lw=1.2, label="real")
    height_axis.plot(time_s, logged.position_m[:, 2] * 1e3, color="k", lw=1.2, label="real")
    for label, divergence in divergences.items():
        color, style = styles.get(label, (None, "-"))
        line = {"color": color, "ls": style, "lw": 1.0, "label": f"sim {label}"}
        position_axis.plot(time_s, divergence.position_error_m * 1e3, **line)
        rotation_axis.plot(time_s, np.degrees(divergence.rotation_error_rad), **line)
        turn_axis.plot(time_s, np.degrees(palm_z_rotation_rad(divergence.quat_wxyz)), **line)
        height_axis.plot(time_s, divergence.position_m[:, 2] * 1e3, **line)
    position_axis.set_ylabel("position error [mm]")
    rotation_axis.set_ylabel("rotation error [deg]")
    turn_axis.set_ylabel("turn about palm z [deg]")
    height_axis.set_ylabel("cube centre above palm [mm]")
    for axis in axes.flat:
        axis.legend(fontsize=7)
        axis.tick_params(labelsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("time [s]")
    figure.suptitle(f"object pose, sim vs real ({logged.source})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
