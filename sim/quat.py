"""Quaternion arithmetic on arrays of rotations (wxyz, MuJoCo's order), vectorized over leading axes.

Pure numpy, so the training environment can turn a whole batch of cube poses into the hand frame at once.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

IDENTITY_WXYZ = np.array([1.0, 0.0, 0.0, 0.0])


def multiply(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Hamilton products ``a * b`` of quaternions (..., 4): rotate by ``b`` first, then by ``a``."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        axis=-1,
    )


def conjugate(q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Inverse rotations of unit quaternions (..., 4)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def rotate(q: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vectors ``v`` (..., 3) rotated by unit quaternions ``q`` (..., 4)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def from_rotvec(rotvec: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit quaternions (..., 4) of rotation vectors (..., 3) (axis * angle [rad]); zero gives the identity."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(angle / 2) / angle, with its limit 1/2 at zero.
    scale = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 1e-12, angle, 1.0), 0.5)
    return np.concatenate((np.cos(half), rotvec * scale), axis=-1)


def yaw(q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rotation angle about z [rad] of quaternions (..., 4) (the heading of the rotated x axis), in (-pi, pi]."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
