"""Replay logged joint commands in MuJoCo: the sim's answer to "what would the model have done?".

:class:`Replayer` compiles the scene the virtual hand and the training environment use
(:func:`~handrail.sim.model.build_scene_for_profile`: the hand's position actuators, the cube on the palm),
puts the hand in the log's first measured state (positions and velocities) and the cube at the log's first
object pose (see :class:`ObjectTrack`; a log without one leaves the cube where the scene's home keyframe
rests it), and feeds it the logged targets: each tick's target held from that tick's time plus the command
latency until the next one takes over (a switch inside a physics step is blended by the fraction of the
step after it, so the result is continuous in the latency). It samples the joint angles at the logged tick
times, and (:meth:`Replayer.run_with_object`) the cube's pose in the hand frame at the times the logged poses
were captured. One replay is one :func:`mujoco.rollout.rollout` call (a few ms per simulated second).

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
from typing import Literal, NamedTuple

import mujoco
import numpy as np
from mujoco import rollout
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import SCALE_NAMES, DynamicsCalibration, NominalHandParameters
from handrail.calibration.errors import CalibrationError
from handrail.deploy.rollout_reader import RolloutLog
from handrail.robot.profile import HandProfile
from handrail.sim import leap
from handrail.sim.hand_frame import HandFrame
from handrail.sim.model import build_scene_for_profile


@dataclass(frozen=True, eq=False)
class ObjectTrack:
    """The object poses a log recorded, in the hand (palm) frame, one row per tick (T); NaN where a tick had none.

    The first row always holds a pose: it is where a replay places the cube. ``captured_s`` is when each pose
    was captured, on the ticks' clock [s]: the tick's start, plus its bus read (the loop asks the pose source
    after reading the joints), minus the pose's logged age. ``source`` names the pose source(s) in the log
    (``ground_truth`` for the virtual hand's simulator, a camera pipeline's name otherwise).
    """

    captured_s: NDArray[np.float64]  # (T,)
    position_m: NDArray[np.float64]  # (T, 3) hand frame
    quat_wxyz: NDArray[np.float64]  # (T, 4) hand frame
    source: str

    def __post_init__(self) -> None:
        n_ticks = self.captured_s.shape[0]
        if self.position_m.shape != (n_ticks, 3) or self.quat_wxyz.shape != (n_ticks, 4):
            raise ValueError(
                f"object track: position_m {self.position_m.shape} and quat_wxyz {self.quat_wxyz.shape} must be "
                f"({n_ticks}, 3) and ({n_ticks}, 4)"
            )
        if n_ticks == 0 or not self.present[0]:
            raise ValueError("an object track starts with a pose (its first row is where the cube is placed)")

    @classmethod
    def from_log(cls, log: RolloutLog, stop: int) -> ObjectTrack | None:
        """The poses of the log's first ``stop`` ticks; None when its first tick has no finite pose."""
        position = log.pose_position_m[:stop]
        orientation = log.pose_quat_wxyz[:stop]
        read_s = np.nan_to_num(log.latency_ms["read"][:stop]) / 1e3
        captured_s = log.time_s[:stop] + read_s - log.pose_age_s[:stop]
        present = np.isfinite(position).all(axis=1) & np.isfinite(orientation).all(axis=1) & np.isfinite(captured_s)
        if stop == 0 or not present[0]:
            return None
        sources = sorted({source for source, here in zip(log.pose_source[:stop], present, strict=True) if here})
        return cls(
            np.where(present, captured_s, np.nan),
            np.where(present[:, None], position, np.nan),
            np.where(present[:, None], orientation, np.nan),
            ", ".join(source or "unnamed" for source in sources),
        )

    @property
    def present(self) -> NDArray[np.bool_]:
        """(T,) the tick has a pose."""
        return np.isfinite(self.captured_s)

    def window(self, start: int, stop: int) -> ObjectTrack | None:
        """Ticks ``start:stop``; None when tick ``start`` has no pose."""
        if not self.present[start]:
            return None
        return ObjectTrack(
            self.captured_s[start:stop], self.position_m[start:stop], self.quat_wxyz[start:stop], self.source
        )


class ObjectReplay(NamedTuple):
    """The replayed cube at the track's capture times, in the hand frame; NaN rows where the log had no pose.

    ``start_penetration_m``: how deep [m] the placed cube started inside the hand or another body (0 when
    clear); contact forces push it out at once, so a deep start spoils the comparison from the first step.
    """

    position_m: NDArray[np.float64]  # (T, 3)
    quat_wxyz: NDArray[np.float64]  # (T, 4)
    start_penetration_m: float


@dataclass(frozen=True, eq=False)
class ReplayInput:
    """What a replay needs from a log. T ticks, n joints (policy order)."""

    time_s: NDArray[np.float64]  # (T,) tick start times [s]
    position_rad: NDArray[np.float64]  # (T, n) measured
    velocity_rad_s: NDArray[np.float64]  # (T, n) measured
    target_rad: NDArray[np.float64]  # (T, n) commanded after safety
    max_speed_rad_s: NDArray[np.float64]  # (n,) the run's speed limits: the servos' Profile Velocity
    max_accel_rad_s2: NDArray[np.float64]  # (n,) the run's acceleration limits: their Profile Acceleration
    object_track: ObjectTrack | None = None  # the logged cube; None: the cube rests where the scene puts it

    def __post_init__(self) -> None:
        n_ticks = self.time_s.shape[0]
        for name in ("position_rad", "velocity_rad_s", "target_rad"):
            if getattr(self, name).shape[0] != n_ticks:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} ticks, time_s has {n_ticks}")
        if self.object_track is not None and self.object_track.captured_s.shape[0] != n_ticks:
            raise ValueError(f"object_track has {self.object_track.captured_s.shape[0]} ticks, time_s has {n_ticks}")
        if n_ticks < 2:
            raise CalibrationError("a replay needs at least two ticks")

    @classmethod
    def from_log(cls, log: RolloutLog, profile: HandProfile) -> ReplayInput:
        """The log's ticks up to the first without a finite measurement or target; limits from its header.

        The header's safety limits are the ones the run enforced (speed-scaled); a log without them gets
        ``profile``'s. The object track is the log's object poses when its first tick has one, else None.
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
            ObjectTrack.from_log(log, stop),
        )

    def window(self, start: int, stop: int) -> ReplayInput:
        """Ticks ``start:stop`` as their own replay input (no object track where tick ``start`` has no pose)."""
        return ReplayInput(
            self.time_s[start:stop],
            self.position_rad[start:stop],
            self.velocity_rad_s[start:stop],
            self.target_rad[start:stop],
            self.max_speed_rad_s,
            self.max_accel_rad_s2,
            None if self.object_track is None else self.object_track.window(start, stop),
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
        self.hand_frame = HandFrame.of_model(self.model)
        self.cube_qpos_id = int(self.model.joint(leap.CUBE_JOINT_NAME).qposadr[0])
        self.cube_body_id = int(self.model.body(leap.CUBE_BODY_NAME).id)
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
        return self.run_with_object(replay_input, scales, command_latency_s, command_model, backlash_rad)[0]

    def run_with_object(
        self,
        replay_input: ReplayInput,
        scales: dict[str, NDArray[np.float64]] | None = None,
        command_latency_s: float = 0.0,
        command_model: Literal["position", "servo"] = "position",
        backlash_rad: NDArray[np.float64] | None = None,
    ) -> tuple[NDArray[np.float64], ObjectReplay | None]:
        """:meth:`run`'s joint angles, and the cube where the input has an object track (else None)."""
        self.nominal.apply(self.model, scales if scales is not None else self.nominal_scales())
        data = self.data
        mujoco.mj_resetDataKeyframe(self.model, data, 0)
        data.qpos[self.qpos_ids] = replay_input.position_rad[0]
        track = replay_input.object_track
        if track is not None:
            cube = self.cube_qpos_id
            orientation = self.hand_frame.rotations_to_world(track.quat_wxyz[0])
            data.qpos[cube : cube + 3] = self.hand_frame.points_to_world(track.position_m[0])
            data.qpos[cube + 3 : cube + 7] = orientation / np.linalg.norm(orientation)
        data.qvel[:] = 0.0  # the cube too: the log has no object velocity
        data.qvel[self.dof_ids] = replay_input.velocity_rad_s[0]
        data.ctrl[self.actuator_ids] = replay_input.target_rad[0]
        mujoco.mj_forward(self.model, data)
        start_penetration_m = self._object_penetration_m()
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
        qpos = np.concatenate(
            [state[None, 1 : 1 + self.model.nq], states[0, :, 1 : 1 + self.model.nq]]
        )  # (steps+1, nq)
        joints = qpos[sample_steps][:, self.qpos_ids] + play_taken_up[sample_steps]
        if track is None:
            return joints, None
        return joints, self._object_at(qpos, track, replay_input.time_s[0], start_penetration_m)

    def _object_at(
        self, qpos: NDArray[np.float64], track: ObjectTrack, start_s: float, start_penetration_m: float
    ) -> ObjectReplay:
        """The cube in the hand frame at the physics steps nearest the track's capture times (NaN where none)."""
        present = track.present
        steps = np.rint((np.where(present, track.captured_s, start_s) - start_s) / self.timestep_s)
        steps = np.clip(steps, 0, qpos.shape[0] - 1).astype(np.int64)
        cube = self.cube_qpos_id
        position = self.hand_frame.points_to_hand(qpos[steps, cube : cube + 3])
        orientation = self.hand_frame.rotations_to_hand(qpos[steps, cube + 3 : cube + 7])
        return ObjectReplay(
            np.where(present[:, None], position, np.nan),
            np.where(present[:, None], orientation, np.nan),
            start_penetration_m,
        )

    def _object_penetration_m(self) -> float:
        """The deepest contact of the cube after ``mj_forward`` [m] (0 when nothing overlaps it)."""
        data, body_of_geom = self.data, self.model.geom_bodyid
        depth = 0.0
        for contact in data.contact[: data.ncon]:
            if self.cube_body_id in (body_of_geom[contact.geom1], body_of_geom[contact.geom2]):
                depth = max(depth, -float(contact.dist))
        return depth

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
