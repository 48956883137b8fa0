"""Where the hand goes for hand-eye calibration: the poses, the link poses they give by forward kinematics, and
the checks a plan passes before the hand moves.

A :class:`HandEyePlan` is a list of full-hand joint targets [rad] (profile order) for a target (marker, board)
riding on the MJCF body ``link``; the run goes home, through the poses in order, and home again. Every pose is
approached from below: first ``approach_rad`` short of it on every joint the plan moves, then onto it. A loaded
joint's gear play is then taken up on the same side at every pose (a constant bias of its readings, which hand-eye
barely feels) instead of on whichever side the last move left it (a per-pose error of up to the play, which it
feels a lot: on the virtual hand, several millimetres).
:meth:`HandEyePlan.path_rad` is that path, the one the run drives and the check samples.
:func:`default_hand_eye_plan` is the LEAP hand's: the index finger through three abductions (towards the thumb
side, away from the middle finger) times four flexions of its MCP, PIP and DIP joints, every other joint at home;
a marker on the pad side of the distal link then faces up at every pose.

:class:`HandKinematics` is forward kinematics of the profile's hand MJCF alone (MuJoCo): its world frame is the
hand-mount frame, since :func:`handrail.sim.model.build_scene` attaches the hand there.
:func:`check_hand_eye_plan` refuses a plan whose targets leave the soft limits, whose path (sampled) makes two
links of the hand touch, or whose link poses do not rotate about two distinct axes (hand-eye would have no
unique answer).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import mujoco
import numpy as np

from handrail.calibration.errors import CalibrationError
from handrail.calibration.extrinsics import MIN_HAND_EYE_VIEWS, check_rotation_spread
from handrail.robot.profile import HandProfile
from handrail.vision.transforms import pose_matrix

LEAP_MARKER_LINK = "if_dip_link"
LEAP_INDEX_ABDUCTIONS_RAD = (-0.3, -0.1, 0.1)
LEAP_INDEX_FLEXIONS_RAD = ((0.0, 0.0, 0.0), (0.3, 0.4, 0.0), (0.6, 0.0, 0.3), (0.5, 0.3, 0.3))  # (mcp, pip, dip)
# Targets keep this far inside the soft limits: the safety filter must never have to clip a planned pose.
SOFT_LIMIT_MARGIN_RAD = 0.05
# Largest joint step between two collision-checked samples of a path [rad].
PATH_SAMPLE_RAD = 0.05


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class HandEyePlan:
    """Joint targets ``poses_rad`` (k, n) [rad], profile order, for a target riding on the MJCF body ``link``,
    each approached from ``approach_rad`` below on the joints the plan moves."""

    link: str
    poses_rad: np.ndarray
    approach_rad: float = 0.03  # twice the largest gear play expected

    def __post_init__(self) -> None:
        poses = np.asarray(self.poses_rad, dtype=np.float64)
        if poses.ndim != 2 or len(poses) == 0 or not np.all(np.isfinite(poses)):
            raise CalibrationError(
                f"hand-eye plan: poses must be a non-empty (k, n) array of finite angles, got shape {poses.shape}"
            )
        object.__setattr__(self, "poses_rad", poses)

    def approach_poses_rad(self) -> np.ndarray:
        """(k, n) [rad]: each pose less ``approach_rad`` on every joint whose target differs across the poses."""
        moving = np.ptp(self.poses_rad, axis=0) > 0.0
        return self.poses_rad - self.approach_rad * moving

    def path_rad(self, home_rad: np.ndarray) -> list[np.ndarray]:
        """The waypoints (n,) [rad] the run drives through: home, approach 0, pose 0, approach 1, ..., home."""
        path = [home_rad]
        for approach, pose in zip(self.approach_poses_rad(), self.poses_rad, strict=True):
            path += [approach, pose]
        return [*path, home_rad]


class HandKinematics:
    """Forward kinematics of a profile's hand MJCF: link poses in the hand-mount frame from joint angles [rad]."""

    def __init__(self, profile: HandProfile) -> None:
        self.profile = profile
        self.model = mujoco.MjModel.from_xml_path(str(profile.mjcf))
        self.data = mujoco.MjData(self.model)
        self._qpos_index = np.array([self.model.joint(joint.mjcf_joint).qposadr[0] for joint in profile.joints])

    def body_id(self, link: str) -> int:
        body_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, link)
        if body_id < 0:
            names = [self.model.body(i).name for i in range(1, self.model.nbody)]
            raise CalibrationError(f"hand-eye: no body {link!r} in {self.profile.mjcf}; its bodies: {', '.join(names)}")
        return body_id

    def _forward(self, joint_positions_rad: np.ndarray) -> None:
        positions = np.asarray(joint_positions_rad, dtype=np.float64)
        if positions.shape != self._qpos_index.shape:
            raise ValueError(f"need {len(self._qpos_index)} joint angles in profile order, got shape {positions.shape}")
        self.data.qpos[self._qpos_index] = positions
        mujoco.mj_forward(self.model, self.data)

    def T_hand_link(self, joint_positions_rad: np.ndarray, link: str) -> np.ndarray:
        """The pose (4x4) of body ``link`` in the hand-mount frame at ``joint_positions_rad`` (n,) [rad]."""
        body_id = self.body_id(link)
        self._forward(joint_positions_rad)
        return pose_matrix(self.data.xmat[body_id].reshape(3, 3), self.data.xpos[body_id])

    def touching_bodies(self, joint_positions_rad: np.ndarray) -> list[tuple[str, str]]:
        """Pairs of hand bodies whose collision geoms overlap at ``joint_positions_rad`` (n,) [rad]."""
        self._forward(joint_positions_rad)
        bodies = self.model.geom_bodyid
        return [
            (self.model.body(bodies[contact.geom1]).name, self.model.body(bodies[contact.geom2]).name)
            for contact in self.data.contact[: self.data.ncon]
            if contact.dist < 0.0
        ]


def hand_eye_plan(profile: HandProfile, link: str, poses: Sequence[Mapping[str, float]]) -> HandEyePlan:
    """A plan from poses given by MJCF joint name [rad]; joints a pose leaves out stay at their home angle.

    Raises:
        CalibrationError: a pose names a joint the profile does not drive.
    """
    mjcf_joints = [joint.mjcf_joint for joint in profile.joints]
    home_rad = np.array([joint.home_rad for joint in profile.joints])
    rows = []
    for pose in poses:
        unknown = sorted(set(pose) - set(mjcf_joints))
        if unknown:
            raise CalibrationError(
                f"hand-eye plan: joints {unknown} are not driven by profile {profile.name!r}; valid MJCF joints: "
                f"{', '.join(mjcf_joints)}"
            )
        row = home_rad.copy()
        for name, angle_rad in pose.items():
            row[mjcf_joints.index(name)] = angle_rad
        rows.append(row)
    return HandEyePlan(link, np.array(rows))


def default_hand_eye_plan(profile: HandProfile) -> HandEyePlan:
    """The LEAP hand's plan (see the module docstring): 12 poses of the index finger, in a serpentine order so that
    consecutive poses are close."""
    poses = []
    for row, abduction_rad in enumerate(LEAP_INDEX_ABDUCTIONS_RAD):
        flexions = LEAP_INDEX_FLEXIONS_RAD if row % 2 == 0 else LEAP_INDEX_FLEXIONS_RAD[::-1]
        for mcp_rad, pip_rad, dip_rad in flexions:
            poses.append({"if_abd": abduction_rad, "if_mcp": mcp_rad, "if_pip": pip_rad, "if_dip": dip_rad})
    return hand_eye_plan(profile, LEAP_MARKER_LINK, poses)


def check_hand_eye_plan(profile: HandProfile, plan: HandEyePlan, kinematics: HandKinematics) -> None:
    """Refuse a plan before the hand moves (see the module docstring).

    Raises:
        CalibrationError: naming the pose, the joint or links, and what to change.
    """
    n_joints = len(profile.joints)
    if plan.poses_rad.shape[1] != n_joints:
        raise CalibrationError(
            f"hand-eye plan: poses have {plan.poses_rad.shape[1]} joint angles, profile {profile.name!r} has {n_joints}"
        )
    if len(plan.poses_rad) < MIN_HAND_EYE_VIEWS:
        raise CalibrationError(
            f"hand-eye plan: {len(plan.poses_rad)} poses, need at least {MIN_HAND_EYE_VIEWS} (10+ advised) — add poses"
        )
    kinematics.body_id(plan.link)
    home_rad = np.array([joint.home_rad for joint in profile.joints])
    for index, (approach, pose) in enumerate(zip(plan.approach_poses_rad(), plan.poses_rad, strict=True)):
        for joint, approach_rad, angle_rad in zip(profile.joints, approach, pose, strict=True):
            low, high = joint.soft_limits_rad
            # The approach lies below the pose: it meets the lower limit first, the pose the upper.
            angle_rad = approach_rad if approach_rad < low + SOFT_LIMIT_MARGIN_RAD else angle_rad
            if not low + SOFT_LIMIT_MARGIN_RAD <= angle_rad <= high - SOFT_LIMIT_MARGIN_RAD:
                raise CalibrationError(
                    f"hand-eye plan: pose {index}: {joint.name} reaches {angle_rad:.3f} rad, not "
                    f"{SOFT_LIMIT_MARGIN_RAD} rad inside its soft limits [{low:.3f}, {high:.3f}] rad — move the pose "
                    "inside them"
                )
    waypoints = plan.path_rad(home_rad)
    for index, (start, end) in enumerate(itertools.pairwise(waypoints)):
        n_samples = max(1, int(np.ceil(np.max(np.abs(end - start)) / PATH_SAMPLE_RAD)))
        for fraction in np.linspace(0.0, 1.0, n_samples + 1):
            touching = kinematics.touching_bodies(start + fraction * (end - start))
            if touching:
                where = "back home" if index == len(waypoints) - 2 else f"to pose {index // 2}"
                raise CalibrationError(
                    f"hand-eye plan: on the way {where}, {touching[0][0]} and {touching[0][1]} touch — change the pose "
                    "so that the moving finger keeps clear of the others"
                )
    links = [kinematics.T_hand_link(pose, plan.link) for pose in plan.poses_rad]
    check_rotation_spread(links, what=f"hand-eye plan: the poses rotate {plan.link}")
