"""The camera of the virtual hand-eye setup: the virtual hand's world, with a marker riding on a finger, rendered
from one of the scene's cameras.

The virtual hand (``handrail emulate``) runs in its own process; its true joint angles and cube pose come over its
control socket (:meth:`~handrail.robot.emulator.VirtualHandProcess.ground_truth`). :class:`VirtualHandCamera`
puts them into a scene built from the same hand MJCF with a printed target on a link
(:func:`~handrail.calibration.virtual_board.hand_scene_with_board`) and renders it with a
:class:`~handrail.vision.virtual_camera.VirtualCamera` at a scene camera (``cam_top``, ``cam_side``,
``cam_front``). It is a :class:`~handrail.vision.camera.Camera` like a real one, so the run that drives a real
hand and camera drives this one. Its true pose on the hand, :attr:`VirtualHandCamera.T_hand_camera`, is what
hand-eye calibration should recover. The marker is drawn only: the virtual hand's physics never feels it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mujoco
import numpy as np

from handrail.calibration.board import BoardSpec
from handrail.calibration.virtual_board import hand_scene_with_board
from handrail.robot.profile import HandProfile
from handrail.sim import leap
from handrail.vision.camera import Camera, Frame, Intrinsics
from handrail.vision.transforms import T_world_opencv_camera_of_mujoco_camera, T_world_site, invert_pose, pose_matrix
from handrail.vision.virtual_camera import ImageNoise, VirtualCamera

DEFAULT_MARKER = "aruco:0.03:DICT_4X4_50:7"
# On the pad side of the distal link (its +z, up on the palm-up hand), from the link's centre line towards the
# thumb (the middle fingertip would hide it otherwise when the index turns inwards), and from 2.5 cm past the DIP
# joint (where the middle link cannot rise above it at any flexion) out over the fingertip.
DEFAULT_T_LINK_MARKER = pose_matrix(np.diag([1.0, -1.0, -1.0]), [0.025, 0.0, 0.014])

GroundTruth = Callable[[], Mapping[str, Any]]


class VirtualHandCamera(Camera):
    """Renders the virtual hand's current true state, with ``board`` on ``link`` at ``T_link_board`` (4x4), from
    the scene camera ``scene_camera`` at ``width`` x ``height`` (its own MuJoCo intrinsics).

    Args:
        ground_truth: returns the virtual hand's state, as ``VirtualHandProcess.ground_truth`` does
            (``joint_positions_rad`` in profile order, ``object_position_m``, ``object_quat_wxyz``).

    Raises:
        CameraNotFoundError: the scene has no camera ``scene_camera`` (the message lists those it has).
        ValueError: ``link`` is not a body of the profile's hand MJCF.
    """

    def __init__(
        self,
        profile: HandProfile,
        ground_truth: GroundTruth,
        *,
        scene_camera: str = "cam_top",
        board: BoardSpec | None = None,
        link: str = "if_dip_link",
        T_link_board: np.ndarray = DEFAULT_T_LINK_MARKER,
        width: int = 1280,
        height: int = 960,
        noise: ImageNoise | None = None,
        seed: int = 0,
    ) -> None:
        self._ground_truth = ground_truth
        self.board = board or BoardSpec.parse(DEFAULT_MARKER)
        self._model = hand_scene_with_board(self.board, link, T_link_board, hand_mjcf=profile.mjcf, mount=profile.mount)
        # No shadow map and no multisampling: a frame costs a third of the CPU on a software renderer (the virtual
        # hand shares it in real time), and the edge-fitted marker corners come out as accurate.
        self._model.vis.quality.shadowsize = 0
        self._model.vis.quality.offsamples = 0
        self._data = mujoco.MjData(self._model)
        self._joint_qpos = np.array([self._model.joint(joint.mjcf_joint).qposadr[0] for joint in profile.joints])
        self._cube_qpos = int(self._model.joint(leap.CUBE_JOINT_NAME).qposadr[0])
        self._camera = VirtualCamera.from_scene_camera(
            self._model,
            self._data,
            scene_camera,
            width=width,
            height=height,
            noise=noise if noise is not None else ImageNoise(read_noise_std=1.0),
            seed=seed,
        )
        mujoco.mj_forward(self._model, self._data)
        # The scene's cameras and the hand mount are fixed in the world: the camera's pose on the hand is constant.
        self.T_hand_camera = invert_pose(
            T_world_site(self._model, self._data, leap.HAND_MOUNT_SITE_NAME)
        ) @ T_world_opencv_camera_of_mujoco_camera(self._model, self._data, scene_camera)

    @property
    def name(self) -> str:
        return self._camera.name

    @property
    def serial(self) -> str:
        return self._camera.serial

    @property
    def intrinsics(self) -> Intrinsics:
        return self._camera.intrinsics

    def start(self) -> None:
        self._camera.start()

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Fetch the virtual hand's true state and render it (``timeout_s`` is unused: a render always arrives)."""
        truth = self._ground_truth()
        data = self._data
        data.qpos[self._joint_qpos] = truth["joint_positions_rad"]
        data.qpos[self._cube_qpos : self._cube_qpos + 3] = truth["object_position_m"]
        data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = truth["object_quat_wxyz"]
        mujoco.mj_forward(self._model, data)
        return self._camera.read()

    def stop(self) -> None:
        self._camera.stop()
