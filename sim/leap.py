"""Names in the LEAP-class hand model and its scene, in policy order; imported wherever a name is needed.

Any hand MJCF used with handrail must carry these joint and actuator names (see ``sim/models/leap_hand.xml``
for the conventions: frames, signs, ranges).
"""

from typing import Final

FINGER_PREFIXES: Final = ("if", "mf", "rf", "th")

# 4 fingers x 4 joints, in qpos and policy order.
JOINT_NAMES: Final = (
    "if_abd",
    "if_mcp",
    "if_pip",
    "if_dip",
    "mf_abd",
    "mf_mcp",
    "mf_pip",
    "mf_dip",
    "rf_abd",
    "rf_mcp",
    "rf_pip",
    "rf_dip",
    "th_cmc",
    "th_axl",
    "th_mcp",
    "th_ipl",
)
ACTUATOR_NAMES: Final = tuple(f"{joint}_act" for joint in JOINT_NAMES)
FINGERTIP_SITE_NAMES: Final = tuple(f"{finger}_tip" for finger in FINGER_PREFIXES)

# Names in sim/models/scene.xml.
HAND_MOUNT_SITE_NAME: Final = "hand_mount"
CUBE_BODY_NAME: Final = "cube"
CUBE_JOINT_NAME: Final = "cube_freejoint"
CUBE_GEOM_NAME: Final = "cube_geom"
CAMERA_NAMES: Final = ("cam_top", "cam_side", "cam_front")
HOME_KEYFRAME_NAME: Final = "home"

# The rotate-z task's start pose, by MJCF joint [rad]: index, middle and ring fingertips 3 mm in front of the
# resting cube's fingertip-side face, spread across it; the thumb beside the cube. No finger touches the cube
# or palm in it. Found by a search over the model's kinematics (fingertip targets in the palm frame, rejecting
# any pose with penetration). A hand in another MJCF gets it by its profile's joint names where the pose is clear
# of the cube in that geometry, else its home pose (handrail.sim.batch_env).
ROTATE_Z_START_POSE_RAD: Final = {
    "if_abd": -0.4, "if_mcp": 1.1, "if_pip": 1.3, "if_dip": 1.5,
    "mf_abd": -0.3, "mf_mcp": 1.1, "mf_pip": 1.3, "mf_dip": 1.5,
    "rf_abd": 0.4, "rf_mcp": 1.1, "rf_pip": 1.3, "rf_dip": 1.5,
    "th_cmc": 0.9, "th_axl": -0.3, "th_mcp": 1.4, "th_ipl": 1.7,
}  # fmt: skip
