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
