"""The hand frame (the scene's hand mount, where the palm lies) and poses carried between it and the world frame.

Every object pose a policy sees, a pose source delivers or a rollout log records is in the hand frame: origin
and axes of the scene's ``hand_mount`` site, where the hand MJCF is attached (at its profile's mount pose) with
the palm surface at z = 0, z along the palm normal (the axis rotate-z spins the cube about).
MuJoCo works in the scene's world frame. This is the one place that converts between them: the training
environment (the cube into observations and task state), the deploy loop's pose sources (the virtual hand's
ground truth) and the sim-vs-real replay (a logged cube put back into the scene) all use :class:`HandFrame`.
"""

from __future__ import annotations

from typing import NamedTuple

import mujoco
import numpy as np
from numpy.typing import NDArray

from handrail.errors import HandrailError
from handrail.sim import leap, quat


class HandFrameError(HandrailError):
    """The model has no hand mount fixed to the world, so it has no hand frame."""


class HandFrame(NamedTuple):
    """The hand mount's pose in the world frame: the hand frame's origin [m] (3,) and orientation (wxyz) (4,)."""

    position_m: NDArray[np.float64]
    quat_wxyz: NDArray[np.float64]

    @classmethod
    def of_model(cls, model: mujoco.MjModel) -> HandFrame:
        """The hand frame of ``model`` (a compiled scene): its ``hand_mount`` site, which must be fixed to the world.

        The hand MJCF is attached there (at the profile's mount pose), so that the palm surface lies at z = 0
        facing +z. Raises HandFrameError when the model has no such site or joints move it.
        """
        try:
            site_id = model.site(leap.HAND_MOUNT_SITE_NAME).id
        except KeyError as error:
            raise HandFrameError(
                f"the model has no site {leap.HAND_MOUNT_SITE_NAME!r}: the hand frame is that site's — build the "
                "scene with handrail.sim.model.build_scene"
            ) from error
        if model.body_weldid[model.site_bodyid[site_id]] != 0:
            raise HandFrameError(
                f"site {leap.HAND_MOUNT_SITE_NAME!r} is not fixed to the world (joints above it): the hand frame "
                "must not move — mount the hand rigidly in the scene"
            )
        data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, data)
        quat_wxyz = np.zeros(4)
        mujoco.mju_mat2Quat(quat_wxyz, data.site_xmat[site_id])
        return cls(data.site_xpos[site_id].copy(), quat_wxyz)

    def points_to_hand(self, points_world_m: NDArray[np.float64]) -> NDArray[np.float64]:
        """Points (..., 3) from the world frame into the hand frame [m]."""
        return quat.rotate(quat.conjugate(self.quat_wxyz), points_world_m - self.position_m)

    def vectors_to_hand(self, vectors_world: NDArray[np.float64]) -> NDArray[np.float64]:
        """Free vectors (..., 3) (offsets, velocities) from world axes into hand axes; any unit."""
        return quat.rotate(quat.conjugate(self.quat_wxyz), vectors_world)

    def rotations_to_hand(self, quats_world_wxyz: NDArray[np.float64]) -> NDArray[np.float64]:
        """Orientations (..., 4) (wxyz) relative to the world frame, as orientations relative to the hand frame."""
        return quat.multiply(quat.conjugate(self.quat_wxyz), quats_world_wxyz)

    def points_to_world(self, points_hand_m: NDArray[np.float64]) -> NDArray[np.float64]:
        """Points (..., 3) from the hand frame into the world frame [m]; inverse of :meth:`points_to_hand`."""
        return quat.rotate(self.quat_wxyz, points_hand_m) + self.position_m

    def rotations_to_world(self, quats_hand_wxyz: NDArray[np.float64]) -> NDArray[np.float64]:
        """Orientations (..., 4) relative to the hand frame, as orientations relative to the world frame."""
        return quat.multiply(self.quat_wxyz, quats_hand_wxyz)
