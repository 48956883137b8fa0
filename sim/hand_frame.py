"""The hand frame (the palm body's frame, fixed in the scene) and poses carried between it and the world frame.

Every object pose a policy sees, a pose source delivers or a rollout log records is in the hand frame: origin
and axes of the hand MJCF's ``palm`` body, z along the palm normal (the axis rotate-z spins the cube about).
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
    """The model has no palm fixed to the world, so it has no hand frame."""


class HandFrame(NamedTuple):
    """The palm's pose in the world frame: the hand frame's origin [m] (3,) and orientation (wxyz) (4,)."""

    position_m: NDArray[np.float64]
    quat_wxyz: NDArray[np.float64]

    @classmethod
    def of_model(cls, model: mujoco.MjModel) -> HandFrame:
        """The palm's pose in ``model`` (a compiled scene); the palm must be welded to the world.

        Raises HandFrameError when the model has no ``palm`` body or joints move it.
        """
        try:
            palm_id = model.body(leap.PALM_BODY_NAME).id
        except KeyError as error:
            raise HandFrameError(
                f"the model has no body {leap.PALM_BODY_NAME!r}: the hand frame is that body's — name the hand "
                "MJCF's palm body so"
            ) from error
        if model.body_weldid[palm_id] != 0:
            raise HandFrameError(
                f"body {leap.PALM_BODY_NAME!r} is not fixed to the world (joints above it): the hand frame must not "
                "move — mount the hand rigidly in the scene"
            )
        data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, data)
        return cls(data.xpos[palm_id].copy(), data.xquat[palm_id].copy())

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
