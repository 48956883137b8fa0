"""The camera path as the deploy loop's object-pose source, on the virtual hand: render, estimate, map.

A :class:`VirtualCameraPose` renders the virtual hand's current state (joint angles and cube pose, read
over its control socket) with a :class:`~handrail.vision.virtual_camera.VirtualCamera` at one of the
scene's cameras, in a thread of its own (the OpenGL context lives there), and hands each frame to an
estimator; the loop takes the latest estimate with its age, measured from the moment the state was
captured. A frame without an estimate delivers nothing, so the last estimate ages, exactly like a dropped
camera frame. Two estimators:

- :class:`VirtualCameraModelPose` (``camera_model``): the learned pose CNN on onnxruntime
  (:class:`~handrail.vision.pose_estimator.PoseEstimator`, one core), the bundled model by default;
- :class:`VirtualCameraFiducialPose` (``camera_fiducial``): the cube's ArUco markers and ``solvePnP``
  (:class:`~handrail.vision.fiducial.FiducialCubePoseEstimator`, the baseline).

The name is what the rollout log records as the pose source of every tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np

from handrail.deploy.pose_source import PolledPose
from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile
from handrail.vision.camera import Frame

CAMERA_MODEL = "camera_model"
CAMERA_FIDUCIAL = "camera_fiducial"


def _matrix_to_quat(rotation: np.ndarray) -> np.ndarray:
    result = np.zeros(4)
    mujoco.mju_mat2Quat(result, np.ascontiguousarray(rotation, dtype=np.float64).reshape(9))
    return result


class VirtualCameraPose(PolledPose):
    """Renders the virtual hand's world at a scene camera in a thread; a subclass turns frames into poses.

    Subclasses implement :meth:`_T_world_cube` (a rendered frame -> the cube's 4x4 pose in the world, or
    ``None`` when the frame shows no usable cube). Virtual hand only.
    """

    def __init__(
        self,
        vhand: VirtualHandProcess,
        profile: HandProfile,
        *,
        camera_name: str = "cam_top",
        width: int = 640,
        height: int = 480,
    ):
        from handrail.vision.virtual_camera import VirtualCamera

        super().__init__(profile)
        self._vhand = vhand
        self._model = build_scene_for_profile(profile)
        # A cheaper picture (no shadow map, no multisampling): about 3x faster on a software renderer, and both
        # estimators find the cube as well; a camera frame must be fresher than the policy's max pose age.
        self._model.vis.quality.shadowsize = 0
        self._model.vis.quality.offsamples = 0
        self._data = mujoco.MjData(self._model)
        mujoco.mj_forward(self._model, self._data)
        self._joint_qpos = np.array(
            [self._model.jnt_qposadr[self._model.joint(j.mjcf_joint).id] for j in profile.joints]
        )
        self._cube_qpos = int(self._model.jnt_qposadr[self._model.joint(leap.CUBE_JOINT_NAME).id])
        self.camera_name = camera_name
        self._camera = VirtualCamera.from_scene_camera(self._model, self._data, camera_name, width=width, height=height)
        self.frames = 0
        self.on_frame: Callable[[np.ndarray, float, str], None] | None = None
        self.detections = 0
        self.estimate_seconds = 0.0
        self._ready = threading.Event()

    def _start(self) -> None:
        """Start the render thread (subclasses call this last in their ``__init__``)."""
        self._thread = threading.Thread(target=self._run, name="handrail-camera-pose", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30.0)

    def _T_world_cube(self, frame: Frame) -> np.ndarray | None:
        raise NotImplementedError

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
        if self.on_frame is not None:  # e.g. the live view (this thread, not the control loop's)
            self.on_frame(frame.image, captured_s, self.camera_name)
        started_s = time.perf_counter()
        T_world_cube = self._T_world_cube(frame)
        self.estimate_seconds += time.perf_counter() - started_s
        if T_world_cube is None:
            return
        self.detections += 1
        self._store(captured_s, T_world_cube[:3, 3], _matrix_to_quat(T_world_cube[:3, :3]))


class VirtualCameraFiducialPose(VirtualCameraPose):
    """The cube pose from a virtual camera and the ArUco baseline, in the hand frame. Virtual hand only."""

    name = CAMERA_FIDUCIAL

    def __init__(self, vhand: VirtualHandProcess, profile: HandProfile, **camera: object):
        from handrail.vision.fiducial import FiducialCubePoseEstimator

        super().__init__(vhand, profile, **camera)  # type: ignore[arg-type]
        self._estimator = FiducialCubePoseEstimator(self._camera.intrinsics)
        self._T_world_camera = self._camera.T_world_camera(self._data)
        self._start()

    def _T_world_cube(self, frame: Frame) -> np.ndarray | None:
        estimate = self._estimator.estimate(frame.image)
        return None if estimate is None else self._T_world_camera @ estimate.T_camera_cube


class VirtualCameraModelPose(VirtualCameraPose):
    """The cube pose from a virtual camera and the pose CNN (onnxruntime, one thread), in the hand frame.

    Args:
        model: a pose model file (``handrail vision train`` / ``export``); default: the bundled one.
        min_confidence: estimates the model itself rates below this are dropped (the pose ages instead).

    Raises:
        PoseModelError: the model file is missing or breaks the pose-model contract.
    """

    name = CAMERA_MODEL

    def __init__(
        self,
        vhand: VirtualHandProcess,
        profile: HandProfile,
        *,
        model: str | Path | None = None,
        min_confidence: float = 0.2,
        **camera: object,
    ):
        from handrail.vision.pose_estimator import FusionLimits, PoseEstimator
        from handrail.vision.pose_model_file import bundled_pose_model_path
        from handrail.vision.transforms import T_world_site, invert_pose

        super().__init__(vhand, profile, **camera)  # type: ignore[arg-type]
        self.model_path = Path(model) if model is not None else bundled_pose_model_path()
        self._estimator = PoseEstimator(self.model_path, threads=1, limits=FusionLimits(min_confidence=min_confidence))
        # The model's crop view is aimed at a fixed point of the hand frame (the hand mount), as in its renders.
        self._T_world_hand = T_world_site(self._model, self._data, leap.HAND_MOUNT_SITE_NAME)
        T_hand_camera = invert_pose(self._T_world_hand) @ self._camera.T_world_camera(self._data)
        self._estimator.add_camera(self.camera_name, self._camera.intrinsics, T_hand_camera)
        self._start()

    def _T_world_cube(self, frame: Frame) -> np.ndarray | None:
        estimate = self._estimator.estimate({self.camera_name: frame})
        return None if estimate is None else self._T_world_hand @ estimate.T_hand_cube
