"""The camera path as the deploy loop's object-pose source, on the virtual hand: render, detect, solve, map.

:class:`VirtualCameraFiducialPose` renders the virtual hand's current state (joint angles and cube pose,
read over its control socket) with a :class:`~handrail.vision.virtual_camera.VirtualCamera` at one of the
scene's cameras, finds the cube's ArUco markers and solves its pose with
:class:`~handrail.vision.fiducial.FiducialCubePoseEstimator` (the baseline of issue 7), and maps it into the
hand frame with the camera's extrinsics. It runs in its own thread (the OpenGL context lives there); the
loop takes the latest estimate with its age, measured from the moment the state was captured. A frame in
which no marker is found delivers nothing, so the last estimate ages, exactly like a dropped camera frame.

The learned pose model plugs in the same way once a trained one is committed.
"""

from __future__ import annotations

import threading
import time

import mujoco
import numpy as np

from handrail.deploy.pose_source import PolledPose
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile

CAMERA_FIDUCIAL = "camera_fiducial"


def _matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    result = np.zeros(4)
    mujoco.mju_mat2Quat(result, np.ascontiguousarray(rotation, dtype=np.float64).reshape(9))
    return result


class VirtualCameraFiducialPose(PolledPose):
    """The cube pose from a virtual camera and the ArUco baseline, in the hand frame. Virtual hand only."""

    name = CAMERA_FIDUCIAL

    def __init__(
        self,
        vhand: VirtualHandProcess,
        profile: HandProfile,
        *,
        camera_name: str = "cam_top",
        width: int = 640,
        height: int = 480,
    ):
        from handrail.vision.fiducial import FiducialCubePoseEstimator
        from handrail.vision.virtual_camera import VirtualCamera

        super().__init__(profile)
        self._vhand = vhand
        self._model = build_scene_for_profile(profile)
        # A cheaper picture (no shadow map, no multisampling): about 3x faster on a software renderer, and the
        # markers are found as well; a camera frame must be fresher than the policy's max pose age.
        self._model.vis.quality.shadowsize = 0
        self._model.vis.quality.offsamples = 0
        self._data = mujoco.MjData(self._model)
        self._joint_qpos = np.array(
            [self._model.jnt_qposadr[self._model.joint(j.mjcf_joint).id] for j in profile.joints]
        )
        self._cube_qpos = int(self._model.jnt_qposadr[self._model.joint(leap.CUBE_JOINT_NAME).id])
        self._camera = VirtualCamera.from_scene_camera(self._model, self._data, camera_name, width=width, height=height)
        self._estimator = FiducialCubePoseEstimator(self._camera.intrinsics)
        self.frames = 0
        self.detections = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handrail-camera-pose", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30.0)

    def _run(self) -> None:
        self._camera.start()  # the OpenGL context belongs to this thread
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    self._capture()
                except Exception:  # the virtual hand went away: the pose ages and turns invalid
                    return
        finally:
            self._camera.stop()

    def _capture(self) -> None:
        captured_s = time.monotonic()
        truth = self._vhand.ground_truth()
        data = self._data
        data.qpos[self._joint_qpos] = truth["joint_positions_rad"]
        cube = self._cube_qpos
        data.qpos[cube : cube + 3] = truth["object_position_m"]
        data.qpos[cube + 3 : cube + 7] = truth["object_quat_wxyz"]
        mujoco.mj_forward(self._model, data)
        frame = self._camera.render(data)
        self.frames += 1
        estimate = self._estimator.estimate(frame.image)
        if estimate is None:
            return
        self.detections += 1
        T_world_cube = self._camera.T_world_camera(data) @ estimate.T_camera_cube
        self._store(captured_s, T_world_cube[:3, 3], _matrix_to_quat(T_world_cube[:3, :3]))
