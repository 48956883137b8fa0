"""Replay logged joint commands in MuJoCo: the sim's answer to "what would the model have done?".

:class:`Replayer` compiles the scene the virtual hand and the training environment use
(:func:`~handrail.sim.model.build_scene_for_profile`: the hand's position actuators, the cube on the palm),
puts the hand in the log's first measured state (positions and velocities; the cube where the scene puts
it), and feeds it the logged targets: each tick's target held from that tick's time plus the command
latency until the next one takes over (a switch inside a physics step is blended by the fraction of the
step after it, so the result is continuous in the latency). It samples the joint angles at the logged tick
times. One replay is one :func:`mujoco.rollout.rollout` call (a few ms per simulated second).

Two command models:

- ``"position"``, the nominal sim: the held target is the position actuator's ``ctrl`` (what the training
  environment does);
- ``"servo"``, what a Dynamixel in current-based position mode does with a goal (ROBOTIS e-manual,
  "Profile Velocity/Acceleration"): its set-point moves towards the goal under the profile velocity and
  acceleration (the run's scaled speed and acceleration limits, from the log's header), and its PID acts on
  the set-point *and its velocity* — ``kp (s - q) + kd (ds/dt - dq/dt)``. A MuJoCo position actuator computes
  ``kp (ctrl - q) - kv dq/dt``, so feeding it ``ctrl = s + (kv / kp) ds/dt`` gives exactly that law, with the
  force limit on the sum as in the servo. The set-point generator is a per-step numpy loop (vectorized over
  joints), cached per latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np
from mujoco import rollout
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import SCALE_NAMES, DynamicsCalibration, NominalHandParameters
from handrail.calibration.errors import CalibrationError
from handrail.deploy.rollout_reader import RolloutLog
from handrail.robot.profile import HandProfile
from handrail.sim.model import build_scene_for_profile


@dataclass(frozen=True, eq=False)
class ReplayInput:
    """What a replay needs from a log. T ticks, n joints (policy order)."""

    time_s: NDArray[np.float64]  # (T,) tick start times [s]
    position_rad: NDArray[np.float64]  # (T, n) measured
    velocity_rad_s: NDArray[np.float64]  # (T, n) measured
    target_rad: NDArray[np.float64]  # (T, n) commanded after safety
    max_speed_rad_s: NDArray[np.float64]  # (n,) the run's speed limits: the servos' Profile Velocity
    max_accel_rad_s2: NDArray[np.float64]  # (n,) the run's acceleration limits: their Profile Acceleration

    def __post_init__(self) -> None:
        n_ticks = self.time_s.shape[0]
        for name in ("position_rad", "velocity_rad_s", "target_rad"):
            if getattr(self, name).shape[0] != n_ticks:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} ticks, time_s has {n_ticks}")
        if n_ticks < 2:
            raise CalibrationError("a replay needs at least two ticks")

    @classmethod
    def from_log(cls, log: RolloutLog, profile: HandProfile) -> ReplayInput:
        """The log's ticks up to the first without a finite measurement or target; limits from its header.

        The header's safety limits are the ones the run enforced (speed-scaled); a log without them gets
        ``profile``'s.
        """
        finite = np.all(np.isfinite(log.position_rad), axis=1) & np.all(np.isfinite(log.target_rad), axis=1)
        finite &= np.isfinite(log.time_s)
        stop = int(np.argmin(finite)) if not finite.all() else finite.size
        velocity = np.nan_to_num(log.velocity_rad_s[:stop])
        limits = log.header.safety_limits or {}
        max_speed = limits.get("max_speed_rad_s", [joint.max_speed_rad_s for joint in profile.joints])
        max_accel = limits.get("max_accel_rad_s2", [joint.max_accel_rad_s2 for joint in profile.joints])
        return cls(
            log.time_s[:stop],
            log.position_rad[:stop],
            velocity,
            log.target_rad[:stop],
            np.asarray(max_speed, dtype=np.float64),
            np.asarray(max_accel, dtype=np.float64),
        )

    def window(self, start: int, stop: int) -> ReplayInput:
        """Ticks ``start:stop`` as their own replay input."""
        return ReplayInput(
            self.time_s[start:stop],
            self.position_rad[start:stop],
            self.velocity_rad_s[start:stop],
            self.target_rad[start:stop],
            self.max_speed_rad_s,
            self.max_accel_rad_s2,
        )

    @property
    def n_ticks(self) -> int:
        return int(self.time_s.shape[0])


class Replayer:
    """The hand's scene, compiled once; :meth:`run` replays a log under given parameters."""

    def __init__(self, profile: HandProfile):
        self.profile = profile
        self.model = build_scene_for_profile(profile)
        self.data = mujoco.MjData(self.model)
        self.nominal = NominalHandParameters(self.model, profile)
        self.qpos_ids = np.array([self.model.joint(joint.mjcf_joint).qposadr[0] for joint in profile.joints])
        self.dof_ids = self.nominal.dof_ids
        self.actuator_ids = self.nominal.actuator_ids
        self.timestep_s = float(self.model.opt.timestep)
        self._state_kind = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._setpoint_cache: dict[tuple, tuple[ReplayInput, tuple[NDArray[np.float64], ...]]] = {}

    def nominal_scales(self) -> dict[str, NDArray[np.float64]]:
        return {name: np.ones(len(self.profile.joints)) for name in SCALE_NAMES}

    def run(
        self,
        replay_input: ReplayInput,
        scales: dict[str, NDArray[np.float64]] | None = None,
        command_latency_s: float = 0.0,
        command_model: Literal["position", "servo"] = "position",
        backlash_rad: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Simulated joint angles [rad] at the logged tick times, (T, n); nominal model when ``scales`` is None.

        ``backlash_rad`` (n,) (servo model only): gear play between the servo's encoder and the link. The link
        follows the set-point through a dead band of that width (the play operator) and the reading is the
        link angle plus the play taken up, as an encoder on the motor side sees it.
        """
        self.nominal.apply(self.model, scales if scales is not None else self.nominal_scales())
        data = self.data
        mujoco.mj_resetDataKeyframe(self.model, data, 0)
        data.qpos[self.qpos_ids] = replay_input.position_rad[0]
        data.qvel[:] = 0.0
        data.qvel[self.dof_ids] = replay_input.velocity_rad_s[0]
        data.ctrl[self.actuator_ids] = replay_input.target_rad[0]
        mujoco.mj_forward(self.model, data)
        state = np.empty(mujoco.mj_stateSize(self.model, self._state_kind))
        mujoco.mj_getState(self.model, data, state, self._state_kind)

        elapsed_s = replay_input.time_s - replay_input.time_s[0]
        sample_steps = np.rint(elapsed_s / self.timestep_s).astype(np.int64)
        n_steps = int(sample_steps[-1])
        control = np.repeat(data.ctrl[None, :], n_steps, axis=0)
        held = self._held_commands(replay_input, elapsed_s, n_steps, command_latency_s)
        play_taken_up = np.zeros((n_steps + 1, len(self.actuator_ids)))
        if command_model == "servo":
            play = np.zeros(len(self.actuator_ids)) if backlash_rad is None else np.asarray(backlash_rad, float)
            setpoint, setpoint_velocity, link_setpoint = self._setpoints(replay_input, held, command_latency_s, play)
            kp = self.model.actuator_gainprm[self.actuator_ids, 0]
            kv = -self.model.actuator_biasprm[self.actuator_ids, 2]
            held = link_setpoint + (kv / kp) * setpoint_velocity
            play_taken_up[1:] = setpoint - link_setpoint
        control[:, self.actuator_ids] = held
        states, _ = rollout.rollout(self.model, data, state[None], control[None], persistent_pool=False)
        qpos = np.concatenate([state[None, 1 : 1 + self.model.nq], states[0, :, 1 : 1 + self.model.nq]])
        return qpos[sample_steps][:, self.qpos_ids] + play_taken_up[sample_steps]

    def _held_commands(
        self, replay_input: ReplayInput, elapsed_s: NDArray[np.float64], n_steps: int, latency_s: float
    ) -> NDArray[np.float64]:
        """(n_steps, n) targets per physics step: each held from its tick time + latency, switches blended."""
        effective_s = elapsed_s + latency_s
        step_start_s = np.arange(n_steps) * self.timestep_s
        step_end_s = step_start_s + self.timestep_s
        # Index of the command in effect at the start and at the end of each step (-1: none yet -> the first).
        at_start = np.maximum(np.searchsorted(effective_s, step_start_s, side="right") - 1, 0)
        at_end = np.maximum(np.searchsorted(effective_s, step_end_s, side="right") - 1, 0)
        targets = replay_input.target_rad
        fraction_after = np.clip((step_end_s - effective_s[at_end]) / self.timestep_s, 0.0, 1.0)[:, None]
        switched = (at_end != at_start)[:, None]
        return np.where(
            switched, fraction_after * targets[at_end] + (1.0 - fraction_after) * targets[at_start], targets[at_end]
        )

    def _setpoints(
        self, replay_input: ReplayInput, held: NDArray[np.float64], latency_s: float, play_rad: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Per physics step (n_steps, n): the servos' set-points, their velocities, and the link's set-point."""
        # The input's id keeps several inputs' set-points apart; the identity check below guards its reuse.
        key = (id(replay_input), round(latency_s, 9), tuple(np.round(play_rad, 9)))
        cached = self._setpoint_cache.get(key)
        if cached is not None and cached[0] is replay_input:
            return cached[1]
        dt = self.timestep_s
        max_speed = replay_input.max_speed_rad_s
        max_accel = replay_input.max_accel_rad_s2
        max_change = max_accel * dt
        half_play = 0.5 * play_rad
        setpoint = replay_input.position_rad[0].copy()
        link = setpoint.copy()
        velocity = np.zeros_like(setpoint)
        setpoints = np.empty_like(held)
        velocities = np.empty_like(held)
        links = np.empty_like(held)
        for step, goal in enumerate(held):
            remaining = goal - setpoint
            distance = np.abs(remaining)
            # The speed that can still stop at the goal, capped by the profile speed and by one step's reach.
            speed = np.minimum(np.minimum(max_speed, np.sqrt(2.0 * max_accel * distance)), distance / dt)
            velocity += np.clip(np.sign(remaining) * speed - velocity, -max_change, max_change)
            setpoint += velocity * dt
            link = np.clip(link, setpoint - half_play, setpoint + half_play)
            setpoints[step] = setpoint
            velocities[step] = velocity
            links[step] = link
        if len(self._setpoint_cache) > 64:
            self._setpoint_cache.clear()
        result = (setpoints, velocities, links)
        self._setpoint_cache[key] = (replay_input, result)
        return result


def dynamics_scales(replayer: Replayer, dynamics: DynamicsCalibration) -> dict[str, NDArray[np.float64]]:
    """A dynamics file's scales as per-joint arrays for :meth:`Replayer.run`."""
    dynamics.check_profile(replayer.profile)
    return dynamics.scales_per_joint(replayer.profile.joint_names)
