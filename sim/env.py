"""The training environment: the simulated hand with its cube, seen and driven exactly as the hand is.

One :meth:`HandEnv.step` is one control period of the profile (30 Hz for the LEAP hand). The action in
[-1, 1]^n goes through the policy's :class:`~handrail.sim.actions.ActionMap` (relative mode) and then the
*same* :class:`~handrail.robot.safety_filter.TargetFilter` the hardware uses, against the joint positions
the driver would report; the filtered target drives the position actuators after the sampled command
latency. The observation comes from the one :class:`~handrail.sim.observation.ObservationBuilder`, fed
with what the hand would report (delayed, offset and noisy joints; a delayed, noisy, sometimes missing
object pose in the hand frame, i.e. the frame of body ``palm``).

Domain randomization is drawn once per episode from :func:`~handrail.sim.randomization.load_randomization`
(``dr=False``: :func:`~handrail.sim.randomization.nominal_randomization`) with a generator of its own, and
written into the model from a :class:`~handrail.sim.randomization.ModelSnapshot` taken at construction.

Not modelled yet: backlash and control-period jitter from the sample (drawn and logged, not applied).

Registered as ``handrail/LeapPose-v0`` and ``handrail/LeapRotateZ-v0`` by :func:`register_envs` (run on
import of this module).
"""

from __future__ import annotations

import collections
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safety_filter import TargetFilter
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim import leap
from handrail.sim.actions import ActionMap
from handrail.sim.model import build_scene_for_profile
from handrail.sim.observation import ObjectPoseEstimate, ObservationBuilder, default_spec
from handrail.sim.randomization import (
    EpisodeRandomization,
    ModelSnapshot,
    RandomizationConfig,
    RandomizationTargets,
    apply_to_model,
    load_randomization,
    nominal_randomization,
    sample_episode,
)
from handrail.sim.tasks import POSE, ROTATE_Z, HandState, PoseConfig, RotateZConfig, make_task

ENV_IDS = {POSE: "handrail/LeapPose-v0", ROTATE_Z: "handrail/LeapRotateZ-v0"}
# Reset: the hand at home plus this much noise per joint (std) [rad], the cube turned about the palm
# normal by up to this much either way [rad].
RESET_JOINT_NOISE_STD_RAD = 0.02
RESET_CUBE_YAW_RAD = 0.2
POSE_SOURCE = "sim"
_SEED_BOUND = 2**63


class HandEnv(gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """The hand in MuJoCo with one task (``"pose"`` or ``"rotate-z"``), randomized per episode.

    Exposes ``observation_spec``, ``action_map`` and ``safety_limits`` (what the exporter writes into the
    policy file), ``profile``, ``model``/``data`` and ``episode_randomization`` (the current draw).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        task: str = ROTATE_Z,
        *,
        dr: bool = True,
        profile: HandProfile | None = None,
        randomization: RandomizationConfig | None = None,
        task_config: PoseConfig | RotateZConfig | None = None,
        history: int = 1,
    ):
        self.profile = profile if profile is not None else load_profile()
        if randomization is None:
            randomization = load_randomization() if dr else nominal_randomization()
        self.randomization = randomization
        self.task = make_task(task, task_config)
        self.control_period_s = self.profile.control_period_s

        model = build_scene_for_profile(self.profile)
        # Whole substeps per control period, with the timestep shortened so that they add up to exactly
        # one period: the policy's clock is the profile's, never a rounded one.
        self.n_substeps = max(1, round(self.control_period_s / model.opt.timestep))
        model.opt.timestep = self.control_period_s / self.n_substeps
        self.model = model
        self.data = mujoco.MjData(model)
        self._nominal = ModelSnapshot.take(model)
        joints = self.profile.joints
        self._targets = RandomizationTargets.find(
            model, [joint.mjcf_joint for joint in joints], [joint.mjcf_actuator for joint in joints]
        )
        self._qpos_ids = np.array([model.jnt_qposadr[model.joint(joint.mjcf_joint).id] for joint in joints])
        self._actuator_ids = np.array(self._targets.actuator_ids)
        self._home_key_id = model.key(leap.HOME_KEYFRAME_NAME).id
        self._palm_id = model.body("palm").id
        self._cube_id = self._targets.cube_body_id
        self._cube_qpos = model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id]
        self._cube_half_edge_m = float(model.geom_size[model.geom(leap.CUBE_GEOM_NAME).id][2])
        self._home_rad = np.array([joint.home_rad for joint in joints])

        n_joints = len(joints)
        self.n_joints = n_joints
        self.safety_limits = SafetyLimits.from_profile(self.profile)
        self.action_map = ActionMap.relative(self.profile.joint_names, self.safety_limits, self.control_period_s)
        self.target_filter = TargetFilter(self.safety_limits, self.control_period_s)
        self.observation_spec = default_spec(n_joints, history, self.task.task_size(n_joints))
        self.observation_builder = ObservationBuilder(self.observation_spec, n_joints, history)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.observation_spec.n_obs,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (n_joints,), np.float32)

        self._dr_rng: np.random.Generator | None = None
        self.episode_randomization: EpisodeRandomization | None = None
        self._episode_step = 0
        self._substep = 0

    # ---- gymnasium API ---------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._dr_rng is None:
            # Its own stream, so that switching randomization off leaves the other draws unchanged.
            entropy = seed if seed is not None else int(self.np_random.integers(_SEED_BOUND))
            self._dr_rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1,)))
        rng = self.np_random
        model, data = self.model, self.data
        sample = sample_episode(self.randomization, self._dr_rng, self.n_joints)
        self.episode_randomization = sample
        apply_to_model(model, self._nominal, sample, self._targets)

        mujoco.mj_resetDataKeyframe(model, data, self._home_key_id)
        joint_noise = rng.normal(0.0, RESET_JOINT_NOISE_STD_RAD, self.n_joints)
        limits = self.safety_limits
        data.qpos[self._qpos_ids] = np.clip(self._home_rad + joint_noise, limits.soft_low_rad, limits.soft_high_rad)
        cube = slice(self._cube_qpos, self._cube_qpos + 7)
        # A cube scaled by size_scale would sink into the palm: raise it by the change of its half edge.
        data.qpos[cube.start + 2] += (sample.object_size_scale - 1.0) * self._cube_half_edge_m
        yaw_quat = np.zeros(4)
        mujoco.mju_axisAngle2Quat(yaw_quat, np.array([0.0, 0.0, 1.0]), rng.uniform(-1, 1) * RESET_CUBE_YAW_RAD)
        cube_quat = np.zeros(4)
        mujoco.mju_mulQuat(cube_quat, yaw_quat, data.qpos[cube.start + 3 : cube.stop].copy())
        data.qpos[cube.start + 3 : cube.stop] = cube_quat
        data.qvel[:] = 0.0
        mujoco.mj_forward(model, data)

        self._episode_step = 0
        self._substep = 0
        self._command_delay_substeps = round(sample.command_latency_periods * self.n_substeps)
        self._pending_ctrl: collections.deque[tuple[int, NDArray[np.float64]]] = collections.deque()
        self._push_steps_left = 0
        self._push_force_n = np.zeros(3)
        true_q = data.qpos[self._qpos_ids].copy()
        self._true_joint_history = collections.deque(
            [true_q] * (sample.joint_observation_delay_steps + 1), maxlen=sample.joint_observation_delay_steps + 1
        )
        self._pose_frames: collections.deque[tuple[int, NDArray[np.float64], NDArray[np.float64]] | None] = (
            collections.deque(maxlen=sample.object_pose_latency_steps + 1)
        )
        # The camera ran while the hand sat at rest: a frame from before the episode is already delivered.
        _, position_m, quat = self._capture_pose_frame()
        self._delivered_pose: tuple[int, NDArray[np.float64], NDArray[np.float64]] | None = (
            -sample.object_pose_latency_steps,
            position_m,
            quat,
        )
        cube_position_m, _ = self._cube_in_hand_frame()
        self._cube_rest_position_m = cube_position_m

        self._reading_rad = self._joint_reading()
        self.target_filter.reset(self._reading_rad)
        target_rad = self.target_filter.last_target_rad
        data.ctrl[self._actuator_ids] = target_rad - sample.joint_zero_offset_rad
        self._counts_at_reset = dict(self.target_filter.counts)
        self._task_input = self.task.reset(rng, limits)
        pose = self._pose_estimate()
        self.observation_builder.reset(self._reading_rad, target_rad, pose)
        observation = self.observation_builder.build(self._reading_rad, target_rad, pose, self._task_input)
        info: dict[str, Any] = dict(sample.as_dict(self.profile.joint_names))
        return observation, info

    def step(self, action: NDArray[np.float32]) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        if self.episode_randomization is None:
            raise gym.error.ResetNeeded("HandEnv.step() before reset() — call reset() first")
        sample, rng = self.episode_randomization, self.np_random
        raw_action = np.asarray(action, dtype=np.float64)
        raw_target_rad = self.action_map(raw_action, self.target_filter.last_target_rad)
        # The filter sees what the driver reported this tick: the reading the policy's observation held.
        result = self.target_filter(raw_target_rad, self._reading_rad)
        # Servos live in the frame their zero offset puts them in: a target in the reported frame lands
        # offset by the same amount on the true joint.
        ctrl = result.target_rad - sample.joint_zero_offset_rad
        if sample.action_noise_std_rad > 0:
            ctrl = ctrl + rng.normal(0.0, sample.action_noise_std_rad, self.n_joints)
        self._pending_ctrl.append((self._substep + self._command_delay_substeps, ctrl))
        self._push_cube(sample, rng)
        self._advance_physics()

        self._episode_step += 1
        data = self.data
        self._true_joint_history.append(data.qpos[self._qpos_ids].copy())
        self._reading_rad = self._joint_reading()
        pose = self._pose_estimate()
        observation = self.observation_builder.build(self._reading_rad, result.target_rad, pose, self._task_input)

        cube_position_m, angular_velocity_rad_s = self._cube_in_hand_frame(with_velocity=True)
        actuator_ids = self._actuator_ids
        state = HandState(
            joint_position_rad=data.qpos[self._qpos_ids].copy(),
            action=np.clip(np.nan_to_num(raw_action), -1.0, 1.0),
            actuator_power_w=float(
                np.abs(data.actuator_force[actuator_ids] * data.actuator_velocity[actuator_ids]).sum()
            ),
            cube_position_m=cube_position_m,
            cube_rest_position_m=self._cube_rest_position_m,
            cube_angular_velocity_rad_s=angular_velocity_rad_s,
        )
        verdict = self.task.step(state)
        reward = float(sum(verdict.reward_terms.values()))
        terminated = verdict.terminated
        truncated = not terminated and self._episode_step >= self.task.episode_steps
        info: dict[str, Any] = {f"reward/{name}": value for name, value in verdict.reward_terms.items()}
        info.update(verdict.metrics)
        info["interventions"] = {
            kind: count - self._counts_at_reset[kind] for kind, count in self.target_filter.counts.items()
        }
        info["interventions_this_step"] = len(result.interventions)
        info["filtered_target_rad"] = result.target_rad
        return observation, reward, terminated, truncated, info

    # ---- physics ---------------------------------------------------------------------------------------------

    def _advance_physics(self) -> None:
        """Step one control period, switching the actuator commands at the substeps they arrive."""
        model, data = self.model, self.data
        end = self._substep + self.n_substeps
        while self._substep < end:
            if self._pending_ctrl and self._pending_ctrl[0][0] <= self._substep:
                data.ctrl[self._actuator_ids] = self._pending_ctrl.popleft()[1]
                continue
            next_switch = self._pending_ctrl[0][0] if self._pending_ctrl else end
            n_steps = min(end, next_switch) - self._substep
            mujoco.mj_step(model, data, nstep=n_steps)
            self._substep += n_steps
        mujoco.mj_rnePostConstraint(model, data)  # for the cube's velocity in the hand frame

    def _push_cube(self, sample: EpisodeRandomization, rng: np.random.Generator) -> None:
        """Random pushes on the cube (a force at its centre, random direction) for a few control steps."""
        if self._push_steps_left == 0 and sample.perturbation_force_n > 0:
            if rng.random() < sample.perturbation_probability_per_step:
                direction = rng.normal(size=3)
                self._push_force_n = sample.perturbation_force_n * direction / np.linalg.norm(direction)
                self._push_steps_left = sample.perturbation_duration_steps
        if self._push_steps_left > 0:
            self._push_steps_left -= 1
            self.data.xfrc_applied[self._cube_id, :3] = self._push_force_n
        else:
            self.data.xfrc_applied[self._cube_id, :3] = 0.0

    # ---- what the hand reports -------------------------------------------------------------------------------

    def _joint_reading(self) -> NDArray[np.float64]:
        """Joint positions as the driver reports them: delayed, offset by the zero error, noisy [rad]."""
        sample = self.episode_randomization
        assert sample is not None
        reading = self._true_joint_history[0] + sample.joint_zero_offset_rad
        if sample.joint_position_noise_std_rad > 0:
            reading = reading + self.np_random.normal(0.0, sample.joint_position_noise_std_rad, self.n_joints)
        return reading

    def _cube_in_hand_frame(self, with_velocity: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Cube centre [m] and, with ``with_velocity``, angular velocity [rad/s], both in the palm frame.

        Without ``with_velocity`` the second value is the cube's orientation (quaternion wxyz) in the palm frame.
        """
        data = self.data
        palm_rotation = data.xmat[self._palm_id].reshape(3, 3)
        position_m = palm_rotation.T @ (data.xpos[self._cube_id] - data.xpos[self._palm_id])
        if with_velocity:
            velocity = np.zeros(6)  # [angular, linear], world orientation
            mujoco.mj_objectVelocity(self.model, data, mujoco.mjtObj.mjOBJ_BODY, self._cube_id, velocity, 0)
            return position_m, palm_rotation.T @ velocity[:3]
        palm_inverse, quat = np.zeros(4), np.zeros(4)
        mujoco.mju_negQuat(palm_inverse, data.xquat[self._palm_id])
        mujoco.mju_mulQuat(quat, palm_inverse, data.xquat[self._cube_id])
        return position_m, quat

    def _capture_pose_frame(self) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
        """This step's camera frame: the cube pose in the hand frame with the episode's offset and this step's noise."""
        sample, rng = self.episode_randomization, self.np_random
        assert sample is not None
        position_m, quat = self._cube_in_hand_frame()
        palm_rotation = self.data.xmat[self._palm_id].reshape(3, 3)
        position_m = position_m + palm_rotation.T @ sample.object_position_offset_m
        if sample.object_position_noise_std_m > 0:
            position_m = position_m + rng.normal(0.0, sample.object_position_noise_std_m, 3)
        rotvec = np.array(sample.object_rotation_offset_rotvec_rad)
        if sample.object_rotation_noise_std_rad > 0:
            axis = rng.normal(size=3)
            rotvec = rotvec + axis / np.linalg.norm(axis) * rng.normal(0.0, sample.object_rotation_noise_std_rad)
        return self._episode_step, position_m, _rotated(quat, rotvec)

    def _pose_estimate(self) -> ObjectPoseEstimate | None:
        """The latest object pose the camera pipeline has delivered, with its age; None before the first.

        Each step a frame is captured (or dropped) with the episode's correlated offset and per-step noise;
        it is delivered ``object_pose_latency_steps`` later. A dropped frame leaves the last one aging.
        """
        sample, rng = self.episode_randomization, self.np_random
        assert sample is not None
        dropped = sample.object_pose_dropout_probability > 0 and rng.random() < sample.object_pose_dropout_probability
        frame = None if dropped else self._capture_pose_frame()
        self._pose_frames.append(frame)
        if len(self._pose_frames) == self._pose_frames.maxlen and self._pose_frames[0] is not None:
            self._delivered_pose = self._pose_frames[0]
        if self._delivered_pose is None:
            return None
        captured_step, position_m, quat = self._delivered_pose
        age_s = (self._episode_step - captured_step) * self.control_period_s
        return ObjectPoseEstimate(position_m, quat, age_s, POSE_SOURCE)


def _rotated(quat_wxyz: NDArray[np.float64], rotvec_rad: NDArray[np.float64]) -> NDArray[np.float64]:
    """``quat_wxyz`` turned by the rotation vector ``rotvec_rad`` (axis * angle [rad]) about the hand frame."""
    angle_rad = float(np.linalg.norm(rotvec_rad))
    if angle_rad == 0.0:
        return quat_wxyz
    turn, result = np.zeros(4), np.zeros(4)
    mujoco.mju_axisAngle2Quat(turn, rotvec_rad / angle_rad, angle_rad)
    mujoco.mju_mulQuat(result, turn, quat_wxyz)
    return result


def register_envs() -> None:
    """Register ``handrail/LeapPose-v0`` and ``handrail/LeapRotateZ-v0`` with gymnasium (idempotent).

    Episodes end through the task's own truncation, so no TimeLimit wrapper is added.
    """
    for task, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="handrail.sim.env:HandEnv", kwargs={"task": task})


register_envs()
