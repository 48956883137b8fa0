"""The simulated hand's set-up that does not change during training: its servos' torque cap and where
rotate-z episodes start.

:func:`limit_servo_torque` caps each actuator at what its servo delivers at the profile's current limit;
:func:`start_pose` picks the task's start pose — rotate-z's grasp-ready pose (:data:`handrail.sim.leap.
ROTATE_Z_START_POSE_RAD`) for our MJCF, the same pose by the profile's joint names for a hand in another MJCF
where it is clear of the cube in that geometry, else the profile's home pose.
"""

from __future__ import annotations

import logging

import mujoco
import numpy as np
from numpy.typing import NDArray

from handrail.robot.motors import motor_facts
from handrail.robot.profile import HandProfile, load_profile
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim import leap
from handrail.sim.tasks import ROTATE_Z

LOG = logging.getLogger("handrail.sim.batch_env")
# A foreign MJCF's start pose may overlap the cube or a link by this much [m] (contact margins, not a collision).
START_POSE_OVERLAP_M = 0.001


def limit_servo_torque(model: mujoco.MjModel, profile: HandProfile) -> None:
    """Cap each hand actuator's force at what its servo delivers at the profile's current limit [N·m].

    The MJCF's force range is the servo's stall torque; on the hand the firmware holds the current at the
    profile's limit, so a finger pushes with at most current limit x torque constant. (Found on the virtual
    hand: a policy trained with the stall torque curls its fingers into poses the current-limited servos
    cannot reach.) Domain randomization then scales this nominal value. A force range already below the cap
    (an identified one) is kept: the cap is what the current limit allows, never more.
    """

    facts = motor_facts(profile.bus.motor_model)
    for joint in profile.joints:
        # The joint's torque: the motor's, times the gear ratio (motor turns per joint turn).
        torque_nm = facts.torque_constant_nm_per_a * joint.current_limit_ma / 1000.0 * joint.gear_ratio
        actuator = model.actuator(joint.mjcf_actuator).id
        if model.actuator_forcelimited[actuator]:
            torque_nm = min(torque_nm, float(np.min(np.abs(model.actuator_forcerange[actuator]))))
        model.actuator_forcelimited[actuator] = 1
        model.actuator_forcerange[actuator] = (-torque_nm, torque_nm)


def start_pose(task: str, profile: HandProfile, model: mujoco.MjModel, limits: SafetyLimits) -> NDArray[np.float64]:
    """Where episodes start [rad]: rotate-z's grasp-ready pose for the LEAP joints, else the home pose.

    A hand in another MJCF (MuJoCo Menagerie's LEAP hand) whose profile names the same policy joints gets
    the pose by those names — if, in its own geometry (``model``, the scene), nothing then overlaps more than
    :data:`START_POSE_OVERLAP_M`; else it starts from its home pose (said at INFO).
    """
    joints = profile.joints
    home = np.array([joint.home_rad for joint in joints])
    start = leap.ROTATE_Z_START_POSE_RAD
    if task != ROTATE_Z:
        return home
    if all(joint.mjcf_joint in start for joint in joints):
        pose = np.array([start[joint.mjcf_joint] for joint in joints])
    else:
        by_name = {joint.name: start[joint.mjcf_joint] for joint in load_profile().joints}
        if not all(joint.name in by_name for joint in joints):
            return home
        pose = np.clip(np.array([by_name[joint.name] for joint in joints]), limits.soft_low_rad, limits.soft_high_rad)
        depth_m = deepest_overlap_m(model, profile, pose)
        if depth_m > START_POSE_OVERLAP_M:
            LOG.info(
                "%s: the grasp-ready rotate-z start pose overlaps by %.1f mm in this MJCF; starting from home",
                profile.name,
                depth_m * 1000,
            )
            return home
    return np.clip(pose, limits.soft_low_rad, limits.soft_high_rad)


def deepest_overlap_m(model: mujoco.MjModel, profile: HandProfile, pose_rad: NDArray[np.float64]) -> float:
    """The deepest contact [m] in the scene with the hand at ``pose_rad`` (profile order) and the cube at rest."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(leap.HOME_KEYFRAME_NAME).id)
    qpos_ids = [model.jnt_qposadr[model.joint(joint.mjcf_joint).id] for joint in profile.joints]
    data.qpos[qpos_ids] = pose_rad
    mujoco.mj_forward(model, data)
    return max((-float(contact.dist) for contact in data.contact[: data.ncon]), default=0.0)
