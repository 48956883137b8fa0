"""N simulated hands stepped together: the training environment's engine, on ``mujoco.batch.Batch``.

One :meth:`BatchHandEnv.step` is one control period of the profile (30 Hz for the LEAP hand) for every
hand. Per hand, exactly as on the hardware: the action in [-1, 1]^n goes through the policy's
:class:`~handrail.sim.actions.ActionMap` (relative mode) and the safety layer's target filter
(:class:`~handrail.robot.safety_filter.BatchTargetFilter`, the same arithmetic as the hand's
``TargetFilter``) against the joint positions the driver would report; the observation comes from the
one observation builder (:class:`~handrail.sim.observation.BatchObservationBuilder`, the same layout and
stale-pose rules as the deploy loop's ``ObservationBuilder``).

The physics of all hands runs in one ``mujoco.batch.Batch`` on a thread pool (``nthread``), with
per-simulation model fields for domain randomization. Between policy and physics, per hand and per
episode (drawn by :func:`~handrail.sim.randomization.sample_episode`):

- command latency at physics-step resolution, plus control-period jitter: each command takes effect
  ``latency + N(0, jitter)`` periods after it is sent (never before the previous one); the actuator
  commands of every substep are handed to ``Batch.rollout``;
- backlash: the servo's target moves only once the command has taken up the play (a dead band of
  ``backlash_rad`` around the last one), a first-order model of gear play;
- action noise on the targets, zero offsets between the true joints and the reported ones, delayed
  and noisy joint readings;
- the object pose as the camera pipeline would deliver it: a correlated offset, per-frame noise,
  dropped frames, latency in control periods; a dropped frame leaves the last one ageing;
- random pushes on the cube, and (in the model) masses, sizes, frictions, damping, armature,
  frictionloss, servo gains, force limits and gravity tilt.

With a dynamics calibration (``dynamics``, from ``handrail calibrate dynamics``) the nominal model is the
identified hand: :func:`~handrail.calibration.dynamics_file.apply_dynamics` writes its per-joint multipliers
of the MJCF's parameters into the scene (its force limit replaces the servo torque cap below), the
randomization multiplies those values and its latency and backlash ranges are centred on the identified
ones (:func:`~handrail.calibration.dynamics_file.centre_randomization`); without randomization every
episode has the identified latency and per-joint play.

A hand whose simulation goes unstable (MuJoCo resets it) ends its episode as truncated.
With ``autoreset`` (training), hands whose episode ended are reset inside :meth:`step`; their last
observation is returned in :attr:`StepResult.terminal_obs`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import mujoco
import mujoco.batch
import numpy as np
from numpy.typing import NDArray

from handrail.calibration.dynamics_file import DynamicsCalibration, apply_dynamics, centre_randomization
from handrail.errors import HandrailError
from handrail.robot.batch_monitor import BatchStateMonitor
from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safety_filter import INTERVENTION_KINDS, BatchTargetFilter
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim import leap, quat
from handrail.sim.actions import ActionMap
from handrail.sim.command_wire import NEVER, CommandWire
from handrail.sim.hand_frame import HandFrame, HandFrameError
from handrail.sim.hand_setup import limit_servo_torque, start_pose
from handrail.sim.model import build_scene_for_profile, fingertip_site_name
from handrail.sim.observation import DEFAULT_MAX_POSE_AGE_S, BatchObservationBuilder, default_spec
from handrail.sim.privileged import PrivilegedState
from handrail.sim.randomization import (
    SNAPSHOT_FIELDS,
    EpisodeRandomization,
    ModelSnapshot,
    RandomizationConfig,
    RandomizationTargets,
    load_randomization,
    nominal_randomization,
    randomized_fields,
    sample_episode,
)
from handrail.sim.sim_settings import SimSettings
from handrail.sim.tasks import PoseConfig, RotateZConfig, TaskState, make_task

# Reset: the hand at home plus this much noise per joint (std) [rad], the cube turned about the palm
# normal by up to this much either way [rad].
RESET_JOINT_NOISE_STD_RAD = 0.02
RESET_CUBE_YAW_RAD = 0.2
POSE_SOURCE = "sim"
_POSE_FRAMES = 4  # camera frames kept per hand (object_pose_latency_steps < this)
_SEED_BOUND = 2**63


class EnvError(HandrailError):
    """The environment was configured or driven wrongly."""


@dataclass(frozen=True, eq=False)
class StepResult:
    """One control step of every hand; arrays have a leading axis of N hands."""

    obs: NDArray[np.float32]  # (N, n_obs): the next observation (a reset hand's first one)
    reward: NDArray[np.float64]
    terminated: NDArray[np.bool_]
    truncated: NDArray[np.bool_]
    reward_terms: dict[str, NDArray[np.float64]]
    metrics: dict[str, NDArray[np.float64]]
    filtered_target_rad: NDArray[np.float64]  # (N, n) the targets after the safety filter
    interventions_step: NDArray[np.int64]  # (N,) interventions of the filter this step
    interventions: dict[str, NDArray[np.int64]]  # per kind, (N,), since each hand's reset (before autoreset)
    # Per monitor fault kind, (N,): the hand's safety monitor would have stopped it this step.
    safety_stops: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    privileged: NDArray[np.float32] | None = None  # (N, n_privileged): the critic's state (``privileged=True``)
    terminal_privileged: NDArray[np.float32] | None = None  # rows valid where the episode ended
    terminal_obs: NDArray[np.float32] | None = None  # (N, n_obs), rows valid where the episode ended
    episode_return: NDArray[np.float64] | None = None  # (N,) valid where the episode ended
    episode_length: NDArray[np.int64] | None = None
    episode_metrics: dict[str, NDArray[np.float64]] = field(default_factory=dict)  # episode means, where ended


@dataclass
class _HandParameters:
    """Per-hand values of the current episodes' randomization, stacked for vectorized use."""

    zero_offset_rad: NDArray[np.float64]  # (N, n)
    backlash_rad: NDArray[np.float64]  # (N, n)
    latency_substeps: NDArray[np.float64]  # (N,)
    jitter_std_substeps: NDArray[np.float64]  # (N,)
    joint_delay_steps: NDArray[np.intp]  # (N,)
    pose_latency_steps: NDArray[np.intp]  # (N,)
    joint_noise_std_rad: NDArray[np.float64]  # (N,)
    object_offset_hand_m: NDArray[np.float64]  # (N, 3), the world offset seen in the hand frame
    object_noise_std_m: NDArray[np.float64]  # (N,)
    object_rotation_offset_rotvec: NDArray[np.float64]  # (N, 3)
    object_rotation_noise_std_rad: NDArray[np.float64]  # (N,)
    dropout_probability: NDArray[np.float64]  # (N,)
    action_noise_std_rad: NDArray[np.float64]  # (N,)
    push_probability: NDArray[np.float64]  # (N,)
    push_force_n: NDArray[np.float64]  # (N,)
    push_duration_steps: NDArray[np.intp]  # (N,)

    @classmethod
    def zeros(cls, n_hands: int, n_joints: int) -> _HandParameters:
        values: dict[str, Any] = {}
        for name, kind in cls.__annotations__.items():
            shape: tuple[int, ...] = (n_hands,)
            if name in ("zero_offset_rad", "backlash_rad"):
                shape = (n_hands, n_joints)
            elif name in ("object_offset_hand_m", "object_rotation_offset_rotvec"):
                shape = (n_hands, 3)
            values[name] = np.zeros(shape, dtype=np.intp if "intp" in kind else np.float64)
        return cls(**values)


class BatchHandEnv:
    """N hands in MuJoCo with one task (``"pose"`` or ``"rotate-z"``), randomized per episode and hand.

    Exposes what the exporter writes into the policy file (``observation_spec``, ``action_map``,
    ``safety_limits``, ``profile``, ``history``, ``max_pose_age_s``), the nominal ``model`` (the identified
    hand with ``dynamics``), the ``batch``, and ``samples`` (each hand's current randomization draw).
    """

    def __init__(
        self,
        task: str,
        n_envs: int = 1,
        *,
        dr: bool = True,
        profile: HandProfile | None = None,
        randomization: RandomizationConfig | None = None,
        task_config: PoseConfig | RotateZConfig | None = None,
        history: int = 1,
        max_pose_age_s: float = DEFAULT_MAX_POSE_AGE_S,
        seed: int | None = None,
        nthread: int = 0,
        autoreset: bool = True,
        dynamics: DynamicsCalibration | None = None,
        sim: SimSettings | None = None,
        object_pose: bool = True,
        privileged: bool = False,
        safety_monitor: bool = True,
        action_range_rad: float = 0.0,
        action_map: ActionMap | None = None,
    ):
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise EnvError(f"n_envs = {n_envs!r} must be a positive integer")
        self.profile = profile if profile is not None else load_profile()
        model = build_scene_for_profile(self.profile)
        # The simulator's clock and solver: the given settings, else the MJCF's physics at the profile's rate.
        self.sim = sim if sim is not None else SimSettings.of_model(model, self.profile.control_rate_hz)
        self.sim.apply(model)
        self.control_period_s = self.sim.control_period_s
        if randomization is None:
            randomization = load_randomization() if dr else nominal_randomization()
        self.dynamics = dynamics
        if dynamics is not None:
            dynamics.check_profile(self.profile)
            if randomization.enabled:
                randomization = centre_randomization(randomization, dynamics, self.profile, self.sim.control_rate_hz)
        self.randomization = randomization
        self.dr = bool(randomization.enabled)
        self.n_envs = n_envs
        self.autoreset = autoreset
        self.history = history
        self.max_pose_age_s = float(max_pose_age_s)
        self.task = make_task(task, task_config, n_envs, self.control_period_s)
        # Whole substeps per control period (the timestep is shortened so that they add up to exactly one).
        self.n_substeps = self.sim.substeps
        self._set_nominal_hand(model)
        self.model = model
        self._nominal = ModelSnapshot.take(model)
        joints = self.profile.joints
        self.n_joints = len(joints)
        # The profile's fingertips as scene sites (a geom or body tip got a site from build_scene).
        self.fingertip_sites = tuple(fingertip_site_name(model, name) for name in self.profile.fingertips)
        self._targets = RandomizationTargets.find(
            model,
            [joint.mjcf_joint for joint in joints],
            [joint.mjcf_actuator for joint in joints],
            self.fingertip_sites,
        )
        self._qpos_ids = np.array([model.jnt_qposadr[model.joint(joint.mjcf_joint).id] for joint in joints])
        self._actuator_ids = np.array(self._targets.actuator_ids)
        self._home_key_id = model.key(leap.HOME_KEYFRAME_NAME).id
        self._cube_id = self._targets.cube_body_id
        self._cube_qpos = int(model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id])
        self._cube_dof = int(model.jnt_dofadr[model.joint(leap.CUBE_JOINT_NAME).id])
        self._cube_half_edge_m = float(model.geom_size[model.geom(leap.CUBE_GEOM_NAME).id][2])
        self._hand_frame = self._palm_frame(model)

        self.safety_limits = SafetyLimits.from_profile(self.profile)
        self.start_pose_rad = start_pose(self.task.name, self.profile, model, self.safety_limits)
        self.action_map = self._action_map(action_map, action_range_rad)
        self.target_filter = BatchTargetFilter(self.safety_limits, self.control_period_s, n_envs)
        self.observation_spec = default_spec(
            self.n_joints, history, self.task.task_size(self.n_joints), object_pose=object_pose
        )
        self.observation_builder = BatchObservationBuilder(
            self.observation_spec, self.n_joints, n_envs, history, max_pose_age_s=max_pose_age_s
        )

        self.batch = mujoco.batch.Batch(model, n_envs, nthread=nthread, persistent=True)
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._time = self.batch.bind("time")
        self._xfrc = self.batch.bind("xfrc_applied")
        self._actuator_force = self.batch.bind("actuator_force")
        self._actuator_velocity = self.batch.bind("actuator_velocity")
        self._site_xpos = self.batch.bind("site_xpos")
        self._tip_site_ids = np.array([model.site(name).id for name in self.fingertip_sites])
        self._dof_ids = np.array([model.jnt_dofadr[model.joint(joint.mjcf_joint).id] for joint in joints])
        self._per_sim: dict[str, NDArray[np.float64]] = {}
        if self.dr:  # without DR every simulation keeps the shared nominal model, bit for bit
            self._per_sim = {name: self.batch.expand(name) for name in SNAPSHOT_FIELDS}
        # Motor current [mA] per N·m of actuator force at the nominal torque cap: the servo holds its current at
        # the limit, so a hand's force cap (randomized per episode) is where its current reads the limit.
        self._current_limit_ma = np.array([joint.current_limit_ma for joint in joints])
        self.monitor = BatchStateMonitor(self.safety_limits, n_envs) if safety_monitor else None
        self.privileged_state = PrivilegedState(self) if privileged else None
        self._allocate_state()
        self.seed(seed)

    # ---- set-up --------------------------------------------------------------------------------------------

    def _set_nominal_hand(self, model: mujoco.MjModel) -> None:
        """The hand's nominal servo and joint parameters: identified where the dynamics file has them, else capped."""
        profile, dynamics = self.profile, self.dynamics
        # Without randomization, episodes get the identified latency and play (with it, the centred ranges).
        self._identified_latency_periods: float | None = None
        self._identified_backlash_rad: NDArray[np.float64] | None = None
        if dynamics is None:
            limit_servo_torque(model, profile)
            return
        # The file's multipliers are of the MJCF's values (the replay identified them on the uncapped scene), so
        # they go onto the fresh scene; then every joint is capped at its current-limited torque. An identified
        # force limit above the cap is not a stronger servo but a joint the excitation never loaded (the fit
        # drifts to its bound there), so the cap wins; a weaker identified one is kept.
        apply_dynamics(model, profile, dynamics)
        limit_servo_torque(model, profile)
        if not self.dr:
            self._identified_latency_periods = dynamics.command_latency_s / self.control_period_s
            self._identified_backlash_rad = dynamics.backlash_per_joint(profile.joint_names)

    @staticmethod
    def _palm_frame(model: mujoco.MjModel) -> HandFrame:
        try:
            return HandFrame.of_model(model)
        except HandFrameError as error:
            raise EnvError(str(error)) from error

    def _action_map(self, given: ActionMap | None, range_rad: float) -> ActionMap:
        """``given`` (a policy's own map, checked against the hand's joints), else the map the range asks for:
        0 = relative at the speed limit, > 0 = absolute around the start pose."""
        names = self.profile.joint_names
        if given is not None:
            if tuple(given.joint_names) != tuple(names):
                raise EnvError(f"the action map drives {list(given.joint_names)}, the hand has {list(names)}")
            return given
        if not (math.isfinite(range_rad) and range_rad >= 0):
            raise EnvError(f"action_range_rad = {range_rad!r}: give 0 (relative actions) or a range > 0 [rad]")
        if range_rad == 0:
            return ActionMap.relative(names, self.safety_limits, self.control_period_s)
        return ActionMap.around(names, self.start_pose_rad, range_rad)

    def _allocate_state(self) -> None:
        n_envs, n = self.n_envs, self.n_joints
        self.samples: list[EpisodeRandomization | None] = [None] * n_envs
        self._params = _HandParameters.zeros(n_envs, n)
        self._episode_step = np.zeros(n_envs, dtype=np.int64)
        self._wire = CommandWire(n_envs, n, self.n_substeps)
        self._true_joints = np.zeros((n_envs, 2, n))  # this step's and the last step's true angles
        self._reading_rad = np.zeros((n_envs, n))
        self._frames = np.zeros((n_envs, _POSE_FRAMES, 7))  # captured poses: position, quaternion
        self._frame_ok = np.zeros((n_envs, _POSE_FRAMES), dtype=bool)
        self._frame_step = np.full((n_envs, _POSE_FRAMES), NEVER, dtype=np.int64)
        self._delivered = np.zeros((n_envs, 7))
        self._delivered_step = np.zeros(n_envs, dtype=np.int64)
        self._cube_rest_m = np.zeros((n_envs, 3))
        self._task_input = np.zeros((n_envs, self.task.task_size(n)))
        self._push_steps_left = np.zeros(n_envs, dtype=np.int64)
        self._push_force = np.zeros((n_envs, 3))
        self._return = np.zeros(n_envs)
        self._metric_sums: dict[str, NDArray[np.float64]] = {}
        self._counts = {kind: np.zeros(n_envs, dtype=np.int64) for kind in INTERVENTION_KINDS}
        self._reset_done = False

    def seed(self, seed: int | None) -> None:
        """Restart the random streams; the same seed gives the same episodes. DR draws have their own stream."""
        entropy = seed if seed is not None else int(np.random.default_rng().integers(_SEED_BOUND))
        self._rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(0,)))
        self._dr_rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1,)))

    # ---- reset ---------------------------------------------------------------------------------------------

    def reset(self) -> NDArray[np.float32]:
        """Start a new episode on every hand; returns the observations (N, n_obs)."""
        hands = np.arange(self.n_envs)
        self._reset_done = True
        return self._reset_hands(hands)

    def _reset_hands(self, hands: NDArray[np.intp]) -> NDArray[np.float32]:
        self._draw_randomization(hands)
        rng, batch, n = self._rng, self.batch, self.n_joints
        params = self._params
        batch.reset(hands, keyframe=self._home_key_id, stage=mujoco.mjtStage.mjSTAGE_NONE)
        limits = self.safety_limits
        noise_std = getattr(self.task.config, "reset_joint_noise_std_rad", RESET_JOINT_NOISE_STD_RAD)
        noise = rng.normal(0.0, noise_std, (len(hands), n))
        joints = np.clip(self.start_pose_rad + noise, limits.soft_low_rad, limits.soft_high_rad)
        qpos = self._qpos[hands]
        qpos[:, self._qpos_ids] = joints
        cube = self._cube_qpos
        size_scale = np.array([self._sample(i).object_size_scale for i in hands])
        # A cube scaled by size_scale would sink into the palm: raise it by the change of its half edge.
        qpos[:, cube + 2] += (size_scale - 1.0) * self._cube_half_edge_m
        yaw = rng.uniform(-1, 1, len(hands)) * getattr(self.task.config, "reset_cube_yaw_rad", RESET_CUBE_YAW_RAD)
        turn = quat.from_rotvec(np.outer(yaw, [0.0, 0.0, 1.0]))
        qpos[:, cube + 3 : cube + 7] = quat.multiply(turn, qpos[:, cube + 3 : cube + 7])
        self._qpos[hands] = qpos
        self._qvel[hands] = 0.0
        self._xfrc[hands] = 0.0
        batch.forward(hands)

        self._episode_step[hands] = 0
        self._push_steps_left[hands] = 0
        self._return[hands] = 0.0
        for sums in self._metric_sums.values():
            sums[hands] = 0.0
        for counts in self._counts.values():
            counts[hands] = 0
        true_q = self._qpos[hands][:, self._qpos_ids]
        self._true_joints[hands] = true_q[:, None, :]
        self._reading_rad[hands] = self._joint_reading(hands)
        self.target_filter.reset(hands, self._reading_rad[hands])
        if self.monitor is not None:
            self.monitor.reset(hands)
        target = self.target_filter.target_rad[hands]
        self._wire.reset(hands, target - params.zero_offset_rad[hands])

        position_m, cube_quat, _ = self._cube_in_hand_frame(hands)
        self._cube_rest_m[hands] = position_m
        # The camera ran while the hand sat at rest: a frame from before the episode is already delivered.
        self._delivered[hands] = self._capture(hands, position_m, cube_quat)
        self._delivered_step[hands] = -params.pose_latency_steps[hands]
        self._frame_ok[hands] = False
        self._frame_step[hands] = NEVER
        self._task_input[hands] = self.task.reset(hands, rng, limits)
        age_s = (-self._delivered_step[hands]) * self.control_period_s
        builder = self.observation_builder
        delivered = self._delivered[hands]
        builder.reset(hands, self._reading_rad[hands], delivered[:, :3], delivered[:, 3:], age_s)
        return builder.build(
            self._reading_rad[hands], target, delivered[:, :3], delivered[:, 3:], age_s, self._task_input[hands], hands
        )

    def _sample(self, hand: int) -> EpisodeRandomization:
        sample = self.samples[hand]
        assert sample is not None
        return sample

    def _draw_randomization(self, hands: NDArray[np.intp]) -> None:
        """Draw each hand's episode randomization; write the physical part into its simulation's model."""
        params, substeps = self._params, self.n_substeps
        for hand in hands.tolist():
            sample = sample_episode(self.randomization, self._dr_rng, self.n_joints)
            if self._identified_backlash_rad is not None and self._identified_latency_periods is not None:
                sample = dataclasses.replace(
                    sample,
                    command_latency_periods=self._identified_latency_periods,
                    backlash_rad=self._identified_backlash_rad.copy(),
                )
            self.samples[hand] = sample
            params.zero_offset_rad[hand] = sample.joint_zero_offset_rad
            params.backlash_rad[hand] = sample.backlash_rad
            params.latency_substeps[hand] = sample.command_latency_periods * substeps
            params.jitter_std_substeps[hand] = sample.control_period_jitter_std_fraction * substeps
            params.joint_delay_steps[hand] = min(sample.joint_observation_delay_steps, 1)
            params.pose_latency_steps[hand] = min(sample.object_pose_latency_steps, _POSE_FRAMES - 1)
            params.joint_noise_std_rad[hand] = sample.joint_position_noise_std_rad
            params.object_offset_hand_m[hand] = self._hand_frame.vectors_to_hand(sample.object_position_offset_m)
            params.object_noise_std_m[hand] = sample.object_position_noise_std_m
            params.object_rotation_offset_rotvec[hand] = sample.object_rotation_offset_rotvec_rad
            params.object_rotation_noise_std_rad[hand] = sample.object_rotation_noise_std_rad
            params.dropout_probability[hand] = sample.object_pose_dropout_probability
            params.action_noise_std_rad[hand] = sample.action_noise_std_rad
            params.push_probability[hand] = sample.perturbation_probability_per_step
            params.push_force_n[hand] = sample.perturbation_force_n
            params.push_duration_steps[hand] = sample.perturbation_duration_steps
            if self._per_sim:
                for name, values in randomized_fields(self._nominal, sample, self._targets).items():
                    self._per_sim[name][hand] = values
        if self._per_sim:
            # Subtree masses, inverse weights and bounding volumes follow the new masses, armature and size.
            self.batch.set_const(hands)

    # ---- step ----------------------------------------------------------------------------------------------

    def step(self, actions: NDArray[np.floating]) -> StepResult:
        """Apply one action per hand, (N, n) in [-1, 1], for one control period; see :class:`StepResult`."""
        if not self._reset_done:
            raise EnvError("BatchHandEnv.step() before reset() — call reset() first")
        raw_action = np.asarray(actions, dtype=np.float64)
        if raw_action.shape != (self.n_envs, self.n_joints):
            raise EnvError(f"actions need shape ({self.n_envs}, {self.n_joints}), got {raw_action.shape}")
        raw_target = self.action_map(raw_action, self.target_filter.target_rad)
        # The filter sees what the driver reported this tick: the reading the policy's observation held.
        filtered = self.target_filter(raw_target, self._reading_rad)
        self._send(filtered.target_rad)
        self._push_cube()
        start_time = self._time.copy()
        self.batch.rollout(self.n_substeps, control=self._substep_controls(), record=())
        # MuJoCo resets a simulation that went unstable; its clock tells.
        unstable = self._time < start_time + 0.5 * self.control_period_s
        self._episode_step += 1

        self._true_joints[:, 1] = self._true_joints[:, 0]
        self._true_joints[:, 0] = self._qpos[:, self._qpos_ids]
        self._reading_rad = self._joint_reading(None)
        position_m, cube_quat, spin = self._cube_in_hand_frame(None)
        pose, age_s = self._camera_pipeline(position_m, cube_quat)
        obs = self.observation_builder.build(
            self._reading_rad, filtered.target_rad, pose[:, :3], pose[:, 3:], age_s, self._task_input
        )

        torque_nm = self._actuator_force[:, self._actuator_ids]
        power_w = np.abs(torque_nm * self._actuator_velocity[:, self._actuator_ids]).sum(axis=1)
        safety_stops = self._monitor_check(torque_nm, filtered.target_rad)
        stopped = np.logical_or.reduce(list(safety_stops.values())) if safety_stops else None
        state = TaskState(
            joint_position_rad=self._true_joints[:, 0],
            action=np.clip(np.nan_to_num(raw_action), -1.0, 1.0),
            actuator_power_w=power_w,
            cube_position_m=position_m,
            cube_rest_position_m=self._cube_rest_m,
            cube_angular_velocity_rad_s=spin,
            fingertip_position_m=self._fingertips_in_hand_frame(),
            start_pose_rad=self.start_pose_rad,
            cube_linear_velocity_m_s=self._cube_linear_velocity(),
            actuator_torque_nm=torque_nm,
            safety_stop=stopped,
            pushing_joints=None if self.monitor is None else self.monitor.pushing.sum(axis=1).astype(np.float64),
        )
        verdict = self.task.step(state)
        reward = sum(verdict.reward_terms.values())
        assert isinstance(reward, np.ndarray)
        terminated = verdict.terminated & ~unstable
        if stopped is not None:
            terminated |= stopped & ~unstable
        truncated = ~terminated & ((self._episode_step >= self.task.episode_steps) | unstable)
        for kind, count in filtered.counts.items():
            self._counts[kind] += count
        self._return += reward
        for name, values in verdict.metrics.items():
            self._metric_sums.setdefault(name, np.zeros(self.n_envs))
            self._metric_sums[name] += values
        result = StepResult(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            reward_terms=verdict.reward_terms,
            metrics=verdict.metrics,
            filtered_target_rad=filtered.target_rad,
            interventions_step=sum(filtered.counts.values()),  # type: ignore[arg-type]
            interventions={kind: counts.copy() for kind, counts in self._counts.items()},
            safety_stops=safety_stops,
            privileged=None if self.privileged_state is None else self.privileged_state.build(None),
        )
        done = terminated | truncated
        if self.autoreset and done.any():
            result = self._finish_episodes(result, np.flatnonzero(done))
        return result

    def _finish_episodes(self, result: StepResult, hands: NDArray[np.intp]) -> StepResult:
        """Record the ended episodes, reset their hands, and put their first observations into ``obs``."""
        lengths = self._episode_step.copy()
        means = {name: sums / np.maximum(lengths, 1) for name, sums in self._metric_sums.items()}
        terminal_obs = result.obs.copy()
        episode_return = self._return.copy()
        obs = result.obs
        obs[hands] = self._reset_hands(hands)
        privileged, terminal_privileged = result.privileged, None
        if privileged is not None and self.privileged_state is not None:
            terminal_privileged = privileged.copy()
            privileged[hands] = self.privileged_state.build(hands)
        return dataclasses.replace(
            result,
            obs=obs,
            privileged=privileged,
            terminal_privileged=terminal_privileged,
            terminal_obs=terminal_obs,
            episode_return=episode_return,
            episode_length=lengths,
            episode_metrics=means,
        )

    def _send(self, target_rad: NDArray[np.float64]) -> None:
        """Queue this step's commands on the wire: zero offset, action noise, backlash, latency with jitter."""
        params = self._params
        self._wire.send(
            target_rad,
            self._episode_step,
            self._rng,
            zero_offset_rad=params.zero_offset_rad,
            action_noise_std_rad=params.action_noise_std_rad,
            backlash_rad=params.backlash_rad,
            latency_substeps=params.latency_substeps,
            jitter_std_substeps=params.jitter_std_substeps,
        )

    def _substep_controls(self) -> NDArray[np.float64]:
        """The actuator commands in effect at each substep of this period, (N, substeps, nu)."""
        in_effect = self._wire.in_effect(self._episode_step)
        if self.model.nu == self.n_joints and np.array_equal(self._actuator_ids, np.arange(self.n_joints)):
            return in_effect
        controls = np.zeros((self.n_envs, self.n_substeps, self.model.nu))
        controls[:, :, self._actuator_ids] = in_effect
        return controls

    def _push_cube(self) -> None:
        """Random pushes on the cube (a force at its centre, random direction) for a few control steps."""
        params, rng = self._params, self._rng
        if params.push_force_n.any():
            start = (self._push_steps_left == 0) & (rng.random(self.n_envs) < params.push_probability)
            start &= params.push_force_n > 0
            if start.any():
                direction = rng.normal(size=(self.n_envs, 3))
                direction /= np.linalg.norm(direction, axis=1, keepdims=True)
                self._push_force = np.where(start[:, None], direction * params.push_force_n[:, None], self._push_force)
                self._push_steps_left = np.where(start, params.push_duration_steps, self._push_steps_left)
        pushing = self._push_steps_left > 0
        self._xfrc[:, self._cube_id, :3] = np.where(pushing[:, None], self._push_force, 0.0)
        self._push_steps_left = np.maximum(self._push_steps_left - 1, 0)

    # ---- what the hand reports -----------------------------------------------------------------------------

    def _joint_reading(self, hands: NDArray[np.intp] | None) -> NDArray[np.float64]:
        """Joint positions as the driver reports them: delayed, offset by the zero error, noisy [rad]."""
        index = slice(None) if hands is None else hands
        params = self._params
        true_joints = self._true_joints[index]
        delay = params.joint_delay_steps[index]
        reading = np.where((delay == 1)[:, None], true_joints[:, 1], true_joints[:, 0]) + params.zero_offset_rad[index]
        noise_std = params.joint_noise_std_rad[index]
        if noise_std.any():
            reading = reading + self._rng.standard_normal(reading.shape) * noise_std[:, None]
        return reading

    def _cube_in_hand_frame(
        self, hands: NDArray[np.intp] | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Cube centre [m], orientation (wxyz) and angular velocity [rad/s], all in the palm frame."""
        index = slice(None) if hands is None else hands
        cube = self._cube_qpos
        qpos = self._qpos[index]
        frame = self._hand_frame
        position_m = frame.points_to_hand(qpos[:, cube : cube + 3])
        cube_quat = qpos[:, cube + 3 : cube + 7]
        orientation = frame.rotations_to_hand(cube_quat)
        # A free joint's angular velocity is in the body's own frame.
        local_spin = self._qvel[index][:, self._cube_dof + 3 : self._cube_dof + 6]
        spin = frame.vectors_to_hand(quat.rotate(cube_quat, local_spin))
        return position_m, orientation, spin

    def _cube_linear_velocity(self, hands: NDArray[np.intp] | None = None) -> NDArray[np.float64]:
        """The cube centre's velocity in the palm frame [m/s] (a free joint's linear velocity is in the world)."""
        index = slice(None) if hands is None else hands
        return self._hand_frame.vectors_to_hand(self._qvel[index][:, self._cube_dof : self._cube_dof + 3])

    def joint_velocity(self, hands: NDArray[np.intp] | None = None) -> NDArray[np.float64]:
        """True joint velocities [rad/s], (N, n), policy order."""
        index = slice(None) if hands is None else hands
        return self._qvel[index][:, self._dof_ids]

    def motor_current_ma(self, torque_nm: NDArray[np.float64]) -> NDArray[np.float64]:
        """The current each servo would report for ``torque_nm`` (N, n): the limit at its episode's torque cap."""
        if self._per_sim:
            force_cap = self._per_sim["actuator_forcerange"][:, self._actuator_ids, 1]
        else:
            force_cap = self.model.actuator_forcerange[self._actuator_ids, 1][None, :]
        return np.abs(torque_nm) / force_cap * self._current_limit_ma

    def _monitor_check(
        self, torque_nm: NDArray[np.float64], target_rad: NDArray[np.float64]
    ) -> dict[str, NDArray[np.bool_]]:
        """The hand's safety monitor on this step's reading of every hand (empty without a monitor)."""
        if self.monitor is None:
            return {}
        timestamp_s = self._episode_step * self.control_period_s
        return self.monitor.check(
            self._reading_rad, self.joint_velocity(), self.motor_current_ma(torque_nm), target_rad, timestamp_s
        )

    def _fingertips_in_hand_frame(self) -> NDArray[np.float64]:
        """Fingertip sites in the palm frame [m], (N, tips, 3), as of the last physics substep's start."""
        tips = self._site_xpos[:, self._tip_site_ids]
        return self._hand_frame.points_to_hand(tips)

    def _capture(
        self, hands: NDArray[np.intp] | slice, position_m: NDArray[np.float64], orientation: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """A camera frame of each hand's cube: the episode's offsets and this frame's noise; (len, 7)."""
        params, rng = self._params, self._rng
        position_m = position_m + params.object_offset_hand_m[hands]
        noise_std = params.object_noise_std_m[hands]
        if noise_std.any():
            position_m = position_m + rng.standard_normal(position_m.shape) * noise_std[:, None]
        rotvec = params.object_rotation_offset_rotvec[hands]
        angle_std = params.object_rotation_noise_std_rad[hands]
        if angle_std.any():
            axis = rng.normal(size=rotvec.shape)
            axis /= np.linalg.norm(axis, axis=1, keepdims=True)
            rotvec = rotvec + axis * (rng.standard_normal(len(angle_std)) * angle_std)[:, None]
        return np.concatenate((position_m, quat.multiply(quat.from_rotvec(rotvec), orientation)), axis=1)

    def _camera_pipeline(
        self, position_m: NDArray[np.float64], orientation: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Capture this step's frame (or drop it), deliver the one ``latency`` steps old; (pose (N, 7), age [s])."""
        params, step = self._params, self._episode_step
        everyone = np.arange(self.n_envs)
        slot = step % _POSE_FRAMES
        self._frames[everyone, slot] = self._capture(slice(None), position_m, orientation)
        dropout = params.dropout_probability
        self._frame_ok[everyone, slot] = ~(self._rng.random(self.n_envs) < dropout) if dropout.any() else True
        self._frame_step[everyone, slot] = step
        wanted = step - params.pose_latency_steps
        wanted_slot = wanted % _POSE_FRAMES
        arrives = (
            (wanted >= 1) & self._frame_ok[everyone, wanted_slot] & (self._frame_step[everyone, wanted_slot] == wanted)
        )
        if arrives.all():
            self._delivered = self._frames[everyone, wanted_slot]
            self._delivered_step = wanted
        elif arrives.any():
            self._delivered = np.where(arrives[:, None], self._frames[everyone, wanted_slot], self._delivered)
            self._delivered_step = np.where(arrives, wanted, self._delivered_step)
        return self._delivered, (step - self._delivered_step) * self.control_period_s

    # ---- for tests and tools -------------------------------------------------------------------------------

    def get_data(self, hand: int) -> mujoco.MjData:
        """A copy of ``hand``'s simulation state (for rendering and inspection)."""
        return self.batch.get_data(hand)

    def get_model(self, hand: int) -> mujoco.MjModel:
        """A copy of the model ``hand`` simulates, with its randomized fields."""
        return self.batch.get_model(hand)

    def set_cube_position(self, hand: int, position_m: NDArray[np.float64]) -> None:
        """Move ``hand``'s cube (world frame [m]) — for tests of drop detection."""
        cube = self._cube_qpos
        self._qpos[hand, cube : cube + 3] = position_m
        self.batch.forward(np.array([hand]))

    def cube_world_position(self, hand: int) -> NDArray[np.float64]:
        cube = self._cube_qpos
        return self._qpos[hand, cube : cube + 3].copy()
