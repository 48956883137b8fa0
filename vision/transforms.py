"""Rigid transforms for the vision stage: 4x4 poses, quaternions (w first), and the camera-frame convention.

Names follow ``T_a_b``: the pose of frame ``b`` expressed in frame ``a`` (it maps points from ``b`` to ``a``:
``p_a = T_a_b @ p_b``). Camera frames are **OpenCV's**: x right, y down, z forward (out of the lens).
MuJoCo cameras use x right, y up and look down their -z; :data:`R_MUJOCO_CAMERA_OPENCV_CAMERA` converts.
"""

import mujoco
import numpy as np

# Rotation from the OpenCV camera frame to the MuJoCo camera frame (and back: it is its own inverse):
# the same x, with y and z flipped.
R_MUJOCO_CAMERA_OPENCV_CAMERA = np.diag([1.0, -1.0, -1.0])


def pose_matrix(rotation: np.ndarray, translation_m: np.ndarray) -> np.ndarray:
    """The 4x4 homogeneous transform with ``rotation`` (3x3) and ``translation_m`` (3,) [m]."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=float).reshape(3, 3)
    T[:3, 3] = np.asarray(translation_m, dtype=float).reshape(3)
    return T


def invert_pose(T_a_b: np.ndarray) -> np.ndarray:
    """``T_b_a`` from ``T_a_b`` (4x4), using the rotation's transpose."""
    rotation = T_a_b[:3, :3]
    return pose_matrix(rotation.T, -rotation.T @ T_a_b[:3, 3])


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Points (n, 3) given in frame ``b``, expressed in frame ``a``."""
    points_b = np.atleast_2d(np.asarray(points_b, dtype=float))
    return points_b @ T_a_b[:3, :3].T + T_a_b[:3, 3]


def quat_wxyz_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,), w first and w >= 0, of a 3x3 rotation matrix."""
    quat_wxyz = np.zeros(4)
    mujoco.mju_mat2Quat(quat_wxyz, np.ascontiguousarray(rotation, dtype=float).reshape(9))
    return quat_wxyz if quat_wxyz[0] >= 0 else -quat_wxyz


def matrix_from_quat_wxyz(quat_wxyz: np.ndarray) -> np.ndarray:
    """The 3x3 rotation matrix of a quaternion (4,), w first (normalized first)."""
    quat = np.asarray(quat_wxyz, dtype=float).reshape(4)
    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, quat / np.linalg.norm(quat))
    return rotation.reshape(3, 3)


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """The angle [deg] of the rotation that takes ``rotation_a`` to ``rotation_b`` (both 3x3)."""
    relative = np.asarray(rotation_a).T @ np.asarray(rotation_b)
    # atan2 of the sine (from the skew part) and the cosine (from the trace) stays accurate near 0 and 180 deg,
    # where arccos of the trace alone loses half the digits.
    axis_times_sin = np.array(
        [relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0], relative[1, 0] - relative[0, 1]]
    )
    return float(np.degrees(np.arctan2(np.linalg.norm(axis_times_sin) / 2.0, (np.trace(relative) - 1.0) / 2.0)))


def T_world_body(model: mujoco.MjModel, data: mujoco.MjData, body_name: str) -> np.ndarray:
    """Pose of body ``body_name`` in the world frame, as of the last ``mj_forward``/``mj_step`` on ``data``."""
    body_id = model.body(body_name).id
    return pose_matrix(data.xmat[body_id].reshape(3, 3), data.xpos[body_id])


def T_world_site(model: mujoco.MjModel, data: mujoco.MjData, site_name: str) -> np.ndarray:
    """Pose of site ``site_name`` in the world frame, as of the last ``mj_forward``/``mj_step`` on ``data``."""
    site_id = model.site(site_name).id
    return pose_matrix(data.site_xmat[site_id].reshape(3, 3), data.site_xpos[site_id])


def T_world_opencv_camera_of_mujoco_camera(model: mujoco.MjModel, data: mujoco.MjData, camera_name: str) -> np.ndarray:
    """Pose of a model camera in the world, as an OpenCV camera frame (x right, y down, z forward)."""
    camera_id = model.camera(camera_name).id
    R_world_mujoco_camera = data.cam_xmat[camera_id].reshape(3, 3)
    return pose_matrix(R_world_mujoco_camera @ R_MUJOCO_CAMERA_OPENCV_CAMERA, data.cam_xpos[camera_id])


def look_at(eye_m: np.ndarray, target_m: np.ndarray, world_up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_camera`` (4x4, OpenCV camera frame) of a camera at ``eye_m`` looking at ``target_m`` [m],
    with image-up as close to ``world_up`` as the viewing direction allows.

    Raises:
        ValueError: the eye is at the target, or the viewing direction is parallel to ``world_up``.
    """
    eye_m, target_m = np.asarray(eye_m, dtype=float), np.asarray(target_m, dtype=float)
    forward = target_m - eye_m
    right = np.cross(forward, np.asarray(world_up, dtype=float))
    if np.linalg.norm(forward) < 1e-9 or np.linalg.norm(right) < 1e-9 * np.linalg.norm(forward):
        raise ValueError(f"look_at: eye {eye_m} and target {target_m} give no direction off world_up {world_up}")
    forward /= np.linalg.norm(forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return pose_matrix(np.column_stack([right, down, forward]), eye_m)
