"""The in-hand tasks of :class:`~handrail.sim.env.HandEnv`: what the policy is asked, how it is scored, when it ends.

A task sees the true simulator state of a batch of N hands as a :class:`TaskState` (hand frame = the frame
of body ``palm``; arrays with a leading axis of N) and returns their rewards as a dict of named, already
scaled terms (logged as ``reward/<name>``; the reward is
their sum), whether the episode is over (``terminated``: a failure such as a dropped cube) and task
metrics for ``info``. Truncation at ``episode_steps`` is the environment's job.

- ``pose`` (:class:`PoseTask`): reach a target joint pose drawn inside the soft limits at reset; task
  input = the target [rad] (n).
- ``rotate-z`` (:class:`RotateZTask`): spin the cube about the palm normal; task input = the rotation
  axis (0, 0, 1) in the hand frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from handrail.errors import HandrailError
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.observation import ROTATE_Z_TASK_SIZE

POSE = "pose"
ROTATE_Z = "rotate-z"
TASK_NAMES = (POSE, ROTATE_Z)

# The hand frame's z axis: the palm normal, the axis rotate-z spins the cube about.
PALM_NORMAL = (0.0, 0.0, 1.0)


class TaskError(HandrailError):
    """A task name or task configuration is invalid."""


@dataclass(frozen=True)
class TaskState:
    """True state of N hands after a control step, in the hand (palm) frame; what a task scores."""

    joint_position_rad: NDArray[np.float64]  # (N, n) true joint angles [rad], policy order
    action: NDArray[np.float64]  # (N, n) the policy's action, clipped to [-1, 1]
    actuator_power_w: NDArray[np.float64]  # (N,) sum over actuators of |force * velocity| [W]
    cube_position_m: NDArray[np.float64]  # (N, 3) cube centre, hand frame [m]
    cube_rest_position_m: NDArray[np.float64]  # (N, 3) where the cube lay at reset, hand frame [m]
    cube_angular_velocity_rad_s: NDArray[np.float64]  # (N, 3) hand frame [rad/s]
    fingertip_position_m: NDArray[np.float64]  # (N, tips, 3) fingertip sites, hand frame [m]
    # Optional terms (zeros when a caller leaves them out): the start pose, the cube's linear velocity, the
    # actuator torques, and hands the safety monitor would have stopped this step.
    start_pose_rad: NDArray[np.float64] | None = None  # (N, n) or (n,) [rad]
    cube_linear_velocity_m_s: NDArray[np.float64] | None = None  # (N, 3) hand frame [m/s]
    actuator_torque_nm: NDArray[np.float64] | None = None  # (N, n) [N·m]
    safety_stop: NDArray[np.bool_] | None = None  # (N,)
    # Joints per hand pushing at the stall current with their target the stall error away (a stall but for the
    # speed, see BatchStateMonitor.pushing).
    pushing_joints: NDArray[np.float64] | None = None  # (N,)


@dataclass(frozen=True)
class TaskStep:
    """A task's verdict on one step of N hands: named reward terms (scaled, (N,) each), failure (N,), metrics."""

    reward_terms: dict[str, NDArray[np.float64]]
    terminated: NDArray[np.bool_]
    metrics: dict[str, NDArray[np.float64]]


class Task(Protocol):
    """One task for N hands: its input size, the per-episode inputs, and its verdict on each step."""

    name: str
    episode_steps: int

    def task_size(self, n_joints: int) -> int:
        """Size of the observation's ``task`` field."""
        ...

    def reset(self, hands: NDArray[np.intp], rng: np.random.Generator, limits: SafetyLimits) -> NDArray[np.float64]:
        """Draw new episodes' task inputs for ``hands``; shape (len(hands), task_size)."""
        ...

    def step(self, state: TaskState) -> TaskStep:
        """Score one step of every hand."""
        ...


def _mean_fingertip_distance(state: TaskState) -> NDArray[np.float64]:
    """Mean distance from the fingertips to the cube centre per hand [m]."""
    offsets = state.fingertip_position_m - state.cube_position_m[:, None, :]
    return np.linalg.norm(offsets, axis=2).mean(axis=1)


def _squared_norm(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.einsum("ij,ij->i", values, values)


@dataclass(frozen=True)
class PoseConfig:
    """Weights of the pose task; the reward is ``-joint_error - action - energy``."""

    episode_s: float = 10.0
    episode_steps: int | None = None  # overrides episode_s
    joint_error_weight: float = 1.0  # per rad of ||q - target||
    action_weight: float = 0.01  # per unit of ||action||^2
    energy_weight: float = 0.001  # per W of actuator power


@dataclass(frozen=True)
class RotateZConfig:
    """Weights and thresholds of the rotate-z task (MuJoCo Playground's LEAP rotate-z and HORA, see the README).

    Weights are per second: each step's term is weight x value x control period, so a policy's return does not
    depend on the rate it runs at (Playground multiplies its terms by ``ctrl_dt`` the same way).
    """

    episode_s: float = 20.0
    episode_steps: int | None = None  # overrides episode_s
    # Spinning faster than this earns no more: above the 1 rad/s target, so that the target pays in full
    # (HORA clips at 0.5 rad/s, Playground not at all).
    angular_velocity_clip_rad_s: float = 1.5
    rotation_weight: float = 1.0  # per rad/s about the palm normal (Playground angvel 1.0)
    # When > 0: spinning earns nothing once the cube is this far from where it lay (the reward fades linearly
    # to it), so flicking the cube away while it spins does not pay. 0: no fading.
    rotation_fade_m: float = 0.0
    position_weight: float = 5.0  # per m the cube strays from where it lay at reset
    linear_velocity_weight: float = 0.3  # per m/s of the cube's linear velocity, L1 (HORA -0.3)
    # Per rad^2 of ||q - start pose||^2 (HORA -0.1..-0.3). Off: with 0.1 the policy learned to hold the cube
    # still (0.02 rad/s after 1.4 M steps); a blind policy must move its fingers far from the start to turn it.
    pose_weight: float = 0.0
    torque_weight: float = 0.1  # per (N·m)^2 of the summed squared actuator torques (HORA -0.1)
    # Once, on the step the cube falls or the safety monitor would stop the hand, x control period
    # (Playground's termination is -100 x ctrl_dt). 10: the episode's end already costs the spin reward
    # still to come; with 100 (and the pose penalty) the policy learned to hold the cube still.
    drop_weight: float = 10.0
    safety_stop_weight: float = 10.0
    # Per joint pushing at the stall current with its target the stall error away (per second). The stall stop
    # above rarely fires in training: the exploration noise keeps the joints moving, while the deterministic
    # policy on the hand holds a blocked finger still and trips the monitor after 1 s (found on the virtual
    # hand). This term penalizes the stall's cause, whatever the speed.
    pushing_weight: float = 0.5
    action_weight: float = 0.01  # per unit of ||action||^2
    # Shaping: per m of mean fingertip-to-cube-centre distance, so that exploration finds the cube.
    fingertip_distance_weight: float = 2.0
    fell_below_palm_m: float = 0.05  # the cube centre this far below the palm surface has fallen
    # The cube centre this far (in the palm plane) from where it lay at reset is off the palm.
    off_palm_m: float = 0.1
    # Reset: the start pose plus this much noise per joint (std) [rad] (Playground: 0.1 around its home pose;
    # ours starts grasp-ready, 3 mm from the cube), the cube turned about the palm normal by up to this much.
    reset_joint_noise_std_rad: float = 0.05
    reset_cube_yaw_rad: float = 0.2


def episode_steps(config: PoseConfig | RotateZConfig, control_period_s: float) -> int:
    """Control steps per episode: ``episode_steps`` when given, else ``episode_s`` at the control period."""
    if config.episode_steps is not None:
        return int(config.episode_steps)
    return max(1, round(config.episode_s / control_period_s))


class PoseTask:
    """Reach a target joint pose drawn uniformly inside the soft limits."""

    name = POSE

    def __init__(self, config: PoseConfig | None = None, n_hands: int = 1, control_period_s: float = 1 / 30):
        self.config = config or PoseConfig()
        self.episode_steps = episode_steps(self.config, control_period_s)
        self._target_rad: NDArray[np.float64] | None = None
        self._n_hands = n_hands

    def task_size(self, n_joints: int) -> int:
        return n_joints

    def reset(self, hands: NDArray[np.intp], rng: np.random.Generator, limits: SafetyLimits) -> NDArray[np.float64]:
        if self._target_rad is None:
            self._target_rad = np.tile(limits.soft_low_rad, (self._n_hands, 1))
        drawn = rng.uniform(limits.soft_low_rad, limits.soft_high_rad, (len(hands), limits.n_joints))
        self._target_rad[hands] = drawn
        return drawn.copy()

    def step(self, state: TaskState) -> TaskStep:
        if self._target_rad is None:
            raise TaskError("pose task: step() before reset() — reset the environment first")
        config = self.config
        error_rad = np.linalg.norm(state.joint_position_rad - self._target_rad, axis=1)
        terms = {
            "joint_error": -config.joint_error_weight * error_rad,
            "action": -config.action_weight * _squared_norm(state.action),
            "energy": -config.energy_weight * state.actuator_power_w,
        }
        return TaskStep(terms, np.zeros(len(error_rad), dtype=bool), {"final_joint_error_rad": error_rad})


class RotateZTask:
    """Spin the cube about the palm normal without dropping it."""

    name = ROTATE_Z

    def __init__(self, config: RotateZConfig | None = None, n_hands: int = 1, control_period_s: float = 1 / 30):
        self.config = config or RotateZConfig()
        self.episode_steps = episode_steps(self.config, control_period_s)
        self.control_period_s = float(control_period_s)

    def task_size(self, n_joints: int) -> int:
        return ROTATE_Z_TASK_SIZE

    def reset(self, hands: NDArray[np.intp], rng: np.random.Generator, limits: SafetyLimits) -> NDArray[np.float64]:
        return np.tile(np.array(PALM_NORMAL), (len(hands), 1))

    def _fade(self, offset_m: NDArray[np.float64]) -> NDArray[np.float64] | float:
        fade_m = self.config.rotation_fade_m
        if fade_m <= 0:
            return 1.0
        return np.clip(1.0 - np.linalg.norm(offset_m, axis=1) / fade_m, 0.0, 1.0)

    def step(self, state: TaskState) -> TaskStep:
        config, dt = self.config, self.control_period_s
        n_hands = len(state.cube_position_m)
        spin_rad_s = state.cube_angular_velocity_rad_s[:, 2]
        offset_m = state.cube_position_m - state.cube_rest_position_m
        dropped = (state.cube_position_m[:, 2] < -config.fell_below_palm_m) | (
            np.linalg.norm(offset_m[:, :2], axis=1) > config.off_palm_m
        )
        stopped = state.safety_stop if state.safety_stop is not None else np.zeros(n_hands, dtype=bool)
        clip = config.angular_velocity_clip_rad_s
        zeros = np.zeros(n_hands)
        linear_m_s = state.cube_linear_velocity_m_s
        torque_nm = state.actuator_torque_nm
        pushing = zeros if state.pushing_joints is None else state.pushing_joints
        pose_error = zeros if state.start_pose_rad is None else state.joint_position_rad - state.start_pose_rad
        per_second = {
            "rotation": config.rotation_weight * np.clip(spin_rad_s, -clip, clip) * self._fade(offset_m),
            "position": -config.position_weight * np.linalg.norm(offset_m, axis=1),
            "linear_velocity": zeros
            if linear_m_s is None
            else -config.linear_velocity_weight * np.abs(linear_m_s).sum(1),
            "pose": zeros if state.start_pose_rad is None else -config.pose_weight * _squared_norm(pose_error),
            "torque": zeros if torque_nm is None else -config.torque_weight * _squared_norm(torque_nm),
            "action": -config.action_weight * _squared_norm(state.action),
            "fingertips": -config.fingertip_distance_weight * _mean_fingertip_distance(state),
            "drop": -config.drop_weight * dropped,
            "safety_stop": -config.safety_stop_weight * (stopped & ~dropped),
            "pushing": -config.pushing_weight * pushing,
        }
        terms = {name: values * dt for name, values in per_second.items()}
        metrics = {
            "cube_angular_velocity_z_rad_s": spin_rad_s,
            "dropped": dropped.astype(np.float64),
            "safety_stop": (stopped & ~dropped).astype(np.float64),
            "pushing_joints": np.asarray(pushing, dtype=np.float64),
        }
        return TaskStep(terms, dropped | stopped, metrics)


def make_task(
    name: str, config: PoseConfig | RotateZConfig | None = None, n_hands: int = 1, control_period_s: float = 1 / 30
) -> Task:
    """The task called ``name`` (one of :data:`TASK_NAMES`) for ``n_hands`` hands with ``config`` (defaults: None)."""
    if name == POSE:
        if config is not None and not isinstance(config, PoseConfig):
            raise TaskError(f"task {name!r} takes a PoseConfig, got {type(config).__name__}")
        return PoseTask(config, n_hands, control_period_s)
    if name == ROTATE_Z:
        if config is not None and not isinstance(config, RotateZConfig):
            raise TaskError(f"task {name!r} takes a RotateZConfig, got {type(config).__name__}")
        return RotateZTask(config, n_hands, control_period_s)
    raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
