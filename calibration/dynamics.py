"""Dynamics identification: fit the sim's joint and actuator parameters so that replays match the hand.

The parameters, per joint group (:func:`~handrail.calibration.joint_groups.joint_groups`; by default every
joint is its own group, since servos differ unit by unit): actuator gain ``kp``, velocity feedback ``kv``,
force limit, joint damping, armature and frictionloss as multipliers of the MJCF's nominal values, and the
gear play; plus one command latency for the hand (see :mod:`~handrail.calibration.dynamics_file`). They are
found by minimizing the replay error (:class:`~handrail.calibration.replay.Replayer` with its servo command
model: the logged targets played in MuJoCo from the logged initial state, simulated minus measured joint
angles at every tick) with MuJoCo's system-identification toolbox, :mod:`mujoco.sysid`: its
:class:`~mujoco.sysid.Parameter` / :class:`~mujoco.sysid.ParameterDict` hold values and bounds,
:func:`mujoco.sysid.optimize` runs the bounded Levenberg-Marquardt of ``mujoco.minimize``. The fit starts
from the servo's data-sheet gain and current limit (:func:`servo_prior_scales`) and a latency found by a
coarse scan.

What is added on top of ``mujoco.sysid``:

- the replay itself (``mujoco.sysid``'s rollouts compile a spec per evaluation and know neither the servo's
  set-point profile nor a command latency; ours reuses one compiled scene, models both, and gear play);
- parameters in log space (a multiplier is as likely to halve as to double; bounds stay positive);
- a Jacobian that uses the groups' independence: a group's parameters move mostly its own joints, so one
  replay with, say, every group's ``kp`` nudged at once gives the ``kp`` column of every group (rows of
  joints outside a group are set to zero). Eight replays per Jacobian whatever the number of groups (113
  columns for 16 joints). The neglected cross-group coupling (inertia and reaction torques along a finger)
  makes the steps approximate; Levenberg-Marquardt still accepts only steps that lower the true residual,
  so the fit may stop a little short of the optimum but does not run away.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mujoco import sysid
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import SCALE_NAMES, DynamicsCalibration, GroupDynamics
from handrail.calibration.excitation import (
    ExcitationConfig,
    excitation_targets,
    record_excitation,
    with_patient_bus,
)
from handrail.calibration.files import now_iso
from handrail.calibration.joint_groups import Grouping, joint_groups
from handrail.calibration.replay import Replayer, ReplayInput
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.robot.control_table import load_control_table
from handrail.robot.motors import motor_facts
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot
from handrail.robot.safety_limits import SafetyLimits

# Bounds of each multiplier (the optimizer works on their logarithms).
SCALE_BOUNDS = {
    "kp_scale": (0.2, 5.0),
    "kv_scale": (0.02, 5.0),
    "force_limit_scale": (0.1, 3.0),
    "damping_scale": (0.1, 10.0),
    "armature_scale": (0.2, 5.0),
    "frictionloss_scale": (0.1, 10.0),
}
LATENCY_BOUNDS_S = (0.0, 0.1)
LATENCY_UNIT_S = 0.01  # the optimizer sees the latency in these units, comparable to a log-multiplier
BACKLASH_BOUNDS_RAD = (0.0, 0.03)
INITIAL_BACKLASH_RAD = 0.005
PLAY_UNIT_RAD = 0.01


@dataclass(frozen=True)
class DynamicsFitConfig:
    """How to fit: which joints share parameters, how long to iterate."""

    grouping: Grouping = "joint"
    max_iterations: int = 30
    finite_difference_step: float = 1e-3  # in log-multiplier units (and LATENCY_UNIT_S)
    initial_latency_s: float = 0.01
    # The latency is first scanned on this grid [s] (the other parameters at their start): a latency error
    # trades off against gain and damping in the local fit, so it starts from the best grid point.
    latency_scan_s: tuple[float, ...] = tuple(np.arange(0.0, 0.0401, 0.0025))


@dataclass(frozen=True)
class DynamicsFit:
    """The identified parameters and the replay error before and after."""

    calibration: DynamicsCalibration
    rmse_before_per_joint_rad: NDArray[np.float64]  # (n,)
    rmse_after_per_joint_rad: NDArray[np.float64]  # (n,)
    iterations: int
    duration_s: float

    def format(self, joint_names: Sequence[str]) -> str:
        calibration = self.calibration
        lines = [
            f"dynamics fit of {calibration.profile!r}: {calibration.n_ticks} ticks, {self.iterations} iterations, "
            f"{self.duration_s:.1f} s",
            f"  replay RMSE: nominal {np.degrees(calibration.fit_rmse_before_rad):.3f} deg -> identified "
            f"{np.degrees(calibration.fit_rmse_after_rad):.3f} deg "
            f"({calibration.fit_rmse_before_rad / max(calibration.fit_rmse_after_rad, 1e-12):.1f}x lower)",
            f"  command latency: {calibration.command_latency_s * 1000:.1f} ms",
            f"  {'group':8s} "
            + " ".join(f"{name.removesuffix('_scale'):>12s}" for name in SCALE_NAMES)
            + f" {'play [deg]':>12s}",
        ]
        for group, dynamics in calibration.groups.items():
            lines.append(
                f"  {group:8s} "
                + " ".join(f"{getattr(dynamics, name):12.3f}" for name in SCALE_NAMES)
                + f" {np.degrees(dynamics.backlash_rad):12.3f}"
            )
        lines.append(f"  {'joint':12s} {'RMSE before [deg]':>18s} {'after [deg]':>12s}")
        for index, name in enumerate(joint_names):
            lines.append(
                f"  {name:12s} {np.degrees(self.rmse_before_per_joint_rad[index]):18.3f} "
                f"{np.degrees(self.rmse_after_per_joint_rad[index]):12.3f}"
            )
        return "\n".join(lines)


class _GroupedProblem:
    """The least-squares problem: parameter vector <-> per-joint scales, residuals, the grouped Jacobian."""

    def __init__(
        self,
        replayer: Replayer,
        inputs: Sequence[ReplayInput],
        groups: dict[str, tuple[str, ...]],
        initial_scales: dict[str, float] | None = None,
    ):
        self.replayer = replayer
        self.inputs = list(inputs)
        self.groups = groups
        names = replayer.profile.joint_names
        self.n_joints = len(names)
        self.joint_group = np.array(
            [next(index for index, joints in enumerate(groups.values()) if name in joints) for name in names]
        )
        params = sysid.ParameterDict()
        initial_scales = initial_scales or {}
        for group in groups:
            for scale in SCALE_NAMES:
                low, high = SCALE_BOUNDS[scale]
                initial = np.log(np.clip(initial_scales.get(scale, 1.0), low * 1.01, high / 1.01))
                params.add(sysid.Parameter(f"{group}.{scale}", initial, np.log(low), np.log(high)))
            low, high = BACKLASH_BOUNDS_RAD
            params.add(
                sysid.Parameter(
                    f"{group}.backlash", INITIAL_BACKLASH_RAD / PLAY_UNIT_RAD, low / PLAY_UNIT_RAD, high / PLAY_UNIT_RAD
                )
            )
        self.params = params
        self.per_group = len(SCALE_NAMES) + 1

    def add_latency(self, initial_s: float) -> None:
        low, high = LATENCY_BOUNDS_S
        self.params.add(
            sysid.Parameter("command_latency", initial_s / LATENCY_UNIT_S, low / LATENCY_UNIT_S, high / LATENCY_UNIT_S)
        )

    def unpack(self, x: NDArray[np.float64]) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.float64], float]:
        """Per-joint scales, per-joint play [rad] and the latency [s] of parameter vector ``x``."""
        n_groups = len(self.groups)
        per_group = np.asarray(x[: n_groups * self.per_group]).reshape(n_groups, self.per_group)
        scales = {name: np.exp(per_group[self.joint_group, column]) for column, name in enumerate(SCALE_NAMES)}
        play_rad = per_group[self.joint_group, -1] * PLAY_UNIT_RAD
        return scales, play_rad, float(x[-1]) * LATENCY_UNIT_S

    def errors(self, x: NDArray[np.float64]) -> list[NDArray[np.float64]]:
        """Per input, simulated (servo command model) minus measured joint angles (T, n) [rad]."""
        scales, play_rad, latency_s = self.unpack(x)
        return [
            self.replayer.run(item, scales, latency_s, command_model="servo", backlash_rad=play_rad) - item.position_rad
            for item in self.inputs
        ]

    def nominal_errors(self) -> list[NDArray[np.float64]]:
        """Per input, the nominal sim's (position actuators fed the targets, no latency) errors (T, n) [rad]."""
        return [self.replayer.run(item) - item.position_rad for item in self.inputs]

    def residual(self, x: NDArray[np.float64], params: sysid.ParameterDict | None = None):
        """``mujoco.sysid`` residual convention: ``(x, params) -> (residuals, extras, extras)``; x may be (n, k)."""
        columns = np.asarray(x, dtype=np.float64).reshape(len(self.params.as_vector()), -1)
        stacked = [np.concatenate([error.ravel() for error in self.errors(column)]) for column in columns.T]
        return [np.stack(stacked, axis=1)], None, None

    def jacobian(self, x: NDArray[np.float64], residual_at_x: NDArray[np.float64], step: float) -> NDArray[np.float64]:
        """Forward differences, one replay per scale kind (all groups at once) and one for the latency."""
        x = np.asarray(x, dtype=np.float64).ravel()
        base = residual_at_x.ravel()
        n_groups = len(self.groups)
        rows_group = np.concatenate([np.tile(self.joint_group, item.n_ticks) for item in self.inputs])
        jacobian = np.zeros((base.size, x.size))
        for column in range(self.per_group):
            indices = np.arange(n_groups) * self.per_group + column
            nudged = x.copy()
            nudged[indices] += step
            delta = (self.residual(nudged)[0][0][:, 0] - base) / step
            for group_index, parameter_index in enumerate(indices):
                jacobian[:, parameter_index] = np.where(rows_group == group_index, delta, 0.0)
        nudged = x.copy()
        nudged[-1] += step
        jacobian[:, -1] = (self.residual(nudged)[0][0][:, 0] - base) / step
        return jacobian


def servo_prior_scales(profile: HandProfile, replayer: Replayer) -> dict[str, float]:
    """Where the fit starts: the servo's position gain and current limit as MJCF multipliers (data-sheet values).

    The e-manual's current-based position control gives ``current = P/128 [mA/tick] x error [ticks]``, so the
    joint stiffness is ``P/128 x ticks/rad x torque constant``; the force limit is the current limit times
    the torque constant. Both are divided by the MJCF actuator's ``kp`` and ``forcerange`` (their means).
    """
    facts = motor_facts(profile.bus.motor_model)
    table = load_control_table(facts.control_table)
    ticks_per_rad = (table.type_info["value_of_max_radian_position"] + 1) / (2 * np.pi)
    gear = np.mean([joint.gear_ratio for joint in profile.joints])
    kt_nm_per_ma = facts.torque_constant_nm_per_a / 1000.0
    servo_kp = profile.servo.position_p_gain / 128.0 * facts.current_ma_per_lsb * ticks_per_rad * kt_nm_per_ma * gear**2
    current_limit_ma = np.mean([joint.current_limit_ma for joint in profile.joints])
    servo_force_limit = current_limit_ma * kt_nm_per_ma * gear
    nominal = replayer.nominal
    return {
        "kp_scale": float(servo_kp / np.mean(nominal.kp)),
        "force_limit_scale": float(servo_force_limit / np.mean(np.abs(nominal.forcerange[:, 1]))),
    }


def _scan_latency(problem: _GroupedProblem, latencies_s: Sequence[float]) -> float:
    """The latency [s] of ``latencies_s`` with the smallest replay error, the other parameters as they are."""
    x = problem.params.as_vector()
    costs = []
    for latency_s in latencies_s:
        x[-1] = latency_s / LATENCY_UNIT_S
        costs.append(sum(float(np.sum(error**2)) for error in problem.errors(x)))
    return float(latencies_s[int(np.argmin(costs))])


def _rmse_per_joint(errors: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    stacked = np.concatenate(errors)
    return np.sqrt(np.mean(stacked**2, axis=0))


def fit_dynamics(
    profile: HandProfile,
    inputs: Sequence[ReplayInput],
    *,
    config: DynamicsFitConfig | None = None,
    replayer: Replayer | None = None,
) -> DynamicsFit:
    """Identify the dynamics from logged excitations (see the module docstring)."""
    config = config or DynamicsFitConfig()
    started_s = time.monotonic()
    replayer = replayer or Replayer(profile)
    groups = joint_groups(profile, config.grouping)
    problem = _GroupedProblem(replayer, inputs, groups, servo_prior_scales(profile, replayer))
    problem.add_latency(config.initial_latency_s)
    problem.params["command_latency"].value[:] = _scan_latency(problem, config.latency_scan_s) / LATENCY_UNIT_S
    errors_before = problem.nominal_errors()

    step = config.finite_difference_step
    optimized, result = sysid.optimize(
        problem.params,
        problem.residual,
        optimizer="mujoco",
        verbose=False,
        max_iters=config.max_iterations,
        jacobian=lambda x, r: problem.jacobian(x, r, step),
        output=io.StringIO(),
    )
    x = optimized.as_vector()
    errors_after = problem.errors(x)
    scales, play_rad, latency_s = problem.unpack(x)
    names = profile.joint_names
    group_dynamics = {}
    for group, joints in groups.items():
        index = names.index(joints[0])
        group_dynamics[group] = GroupDynamics(
            joints=joints,
            backlash_rad=float(play_rad[index]),
            **{name: float(scales[name][index]) for name in SCALE_NAMES},
        )
    rmse_before = float(np.sqrt(np.mean(np.concatenate(errors_before) ** 2)))
    rmse_after = float(np.sqrt(np.mean(np.concatenate(errors_after) ** 2)))
    calibration = DynamicsCalibration(
        profile=profile.name,
        created=now_iso(),
        command_latency_s=latency_s,
        fit_rmse_before_rad=rmse_before,
        fit_rmse_after_rad=rmse_after,
        n_ticks=sum(item.n_ticks for item in inputs),
        groups=group_dynamics,
    )
    iterations = len(result.extras.get("objective", [])) if hasattr(result, "extras") else 0
    return DynamicsFit(
        calibration,
        _rmse_per_joint(errors_before),
        _rmse_per_joint(errors_after),
        iterations,
        time.monotonic() - started_s,
    )


def calibrate_dynamics(
    profile: HandProfile,
    port: str | None,
    log_dir: Path,
    *,
    excitation: ExcitationConfig | None = None,
    repeats: int = 1,
    speed_scale: float = 1.0,
    bus_timeout_ms: float = 50.0,
    fit_config: DynamicsFitConfig | None = None,
    on_log: Callable[[Path], None] | None = None,
) -> tuple[DynamicsFit, list[Path]]:
    """Excite the hand on ``port`` ``repeats`` times (each with its own seed), log it, and fit; nothing else written.

    The logs go to ``log_dir/excitation_<UTC time>_<i>.mcap``. Raises SafetyFault if the safety layer stopped
    the hand.
    """
    excitation = excitation or ExcitationConfig()
    limits = SafetyLimits.from_profile(profile, speed_scale)
    # All targets before the hand is switched on: the loop watchdog allows no pause once it runs.
    plans = [
        excitation_targets(
            profile,
            dataclasses.replace(excitation, seed=excitation.seed + repeat),
            max_speed_rad_s=limits.max_speed_rad_s,
        )
        for repeat in range(repeats)
    ]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = []
    with Robot(with_patient_bus(profile, bus_timeout_ms), port, speed_scale=speed_scale) as robot:
        for repeat, targets in enumerate(plans):
            path = Path(log_dir) / f"excitation_{stamp}_{repeat}.mcap"
            record_excitation(robot, targets, path, ramp_s=excitation.ramp_s)
            logs.append(path)
            if on_log is not None:
                on_log(path)
    inputs = [ReplayInput.from_log(read_rollout_log(path), profile) for path in logs]
    return fit_dynamics(profile, inputs, config=fit_config), logs
