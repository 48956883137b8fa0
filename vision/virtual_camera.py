"""A camera that renders the MuJoCo scene at given intrinsics and extrinsics, with seeded sensor noise.

How intrinsics become a render, exactly: after ``mjv_updateScene`` the OpenGL camera (``MjvGLCamera``)
is overwritten with an asymmetric frustum computed from ``K``. OpenGL's viewport puts the centre of pixel
``i`` at window coordinate ``i + 0.5``, and OpenCV puts it at ``u = i``, so the image edges are
``u = -0.5`` and ``u = width - 0.5``. At the near plane ``n`` the frustum is therefore

    left = n (-0.5 - cx) / fx      right  = n (width - 0.5 - cx) / fx
    top  = n (cy + 0.5) / fy       bottom = -n (height - 0.5 - cy) / fy

(image rows grow downwards, OpenGL's y upwards). Any ``fx``, ``fy``, ``cx``, ``cy`` render exactly; lens
distortion cannot be rendered and is refused. The model's own camera parameters (``fovy``, or
``sensorsize``/``focal``/``principal``) are not used, except by :meth:`VirtualCamera.from_scene_camera`,
which reads MuJoCo's frustum for that camera back into ``K``. For a ``fovy`` camera that is
``fx = fy = (height / 2) / tan(fovy / 2)``, ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2``; for a
camera with ``sensorsize`` and ``focalpixel``/``principalpixel`` rendered at its ``resolution``, ``fx, fy``
are the focal pixels and ``(cx, cy) = ((width - 1) / 2, (height - 1) / 2) - principalpixel`` (MuJoCo's
principal offset points the other way in both axes; a test pins it).

Extrinsics are an OpenCV camera frame (x right, y down, z forward): ``T_world_camera`` fixed in the world,
``T_hand_camera`` fixed to the hand mount (the hand's base frame, site ``hand_mount``), or a model camera
followed wherever its body goes.

Rendering needs an OpenGL context (``MUJOCO_GL=egl`` headless); it is made in :meth:`start` and belongs
to the thread that made it: start, read and stop the camera from one thread.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import mujoco
import numpy as np

from handrail.sim import leap
from handrail.sim.render import RenderError, make_renderer
from handrail.vision.camera import Camera, CameraError, CameraNotFoundError, Frame, Intrinsics, not_started_error
from handrail.vision.transforms import T_world_opencv_camera_of_mujoco_camera, T_world_site


@dataclasses.dataclass(frozen=True)
class ImageNoise:
    """Sensor effects applied to each render, drawn from the camera's seeded generator.

    Attributes:
        exposure_gain_range: (low, high) of a per-frame gain drawn uniformly and applied to every pixel
            (1 = the render's exposure); models auto-exposure wander and lighting changes.
        read_noise_std: standard deviation of per-pixel, per-channel Gaussian noise [8-bit digital numbers].
    """

    exposure_gain_range: tuple[float, float] = (1.0, 1.0)
    read_noise_std: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.exposure_gain_range
        if not 0.0 < low <= high:
            raise ValueError(f"exposure_gain_range must satisfy 0 < low <= high, got {self.exposure_gain_range}")
        if self.read_noise_std < 0.0:
            raise ValueError(f"read_noise_std must be >= 0, got {self.read_noise_std}")

    @property
    def is_off(self) -> bool:
        return self.exposure_gain_range == (1.0, 1.0) and self.read_noise_std == 0.0

    def apply(self, image_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image_rgb`` (h, w, 3) uint8 with a drawn exposure gain and read noise, clipped to [0, 255]."""
        if self.is_off:
            return image_rgb
        gain = rng.uniform(*self.exposure_gain_range)
        noisy = image_rgb.astype(np.float32) * gain
        if self.read_noise_std > 0.0:
            noisy += rng.normal(0.0, self.read_noise_std, size=image_rgb.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def set_gl_camera(gl_camera: mujoco.MjvGLCamera, intrinsics: Intrinsics, T_world_camera: np.ndarray) -> None:
    """Point ``gl_camera`` along the OpenCV camera pose ``T_world_camera`` (4x4) and give it the frustum of
    ``intrinsics`` at its current near plane (see the module docstring for the formula)."""
    rotation = T_world_camera[:3, :3]
    gl_camera.pos[:] = T_world_camera[:3, 3]
    gl_camera.forward[:] = rotation[:, 2]  # OpenCV z looks forward
    gl_camera.up[:] = -rotation[:, 1]  # OpenCV y points down the image
    gl_camera.orthographic = 0
    near_m = gl_camera.frustum_near
    left = near_m * (-0.5 - intrinsics.cx) / intrinsics.fx
    right = near_m * (intrinsics.width - 0.5 - intrinsics.cx) / intrinsics.fx
    gl_camera.frustum_center = (left + right) / 2.0
    gl_camera.frustum_width = (right - left) / 2.0  # MuJoCo's "width" is the half width
    gl_camera.frustum_top = near_m * (intrinsics.cy + 0.5) / intrinsics.fy
    gl_camera.frustum_bottom = -near_m * (intrinsics.height - 0.5 - intrinsics.cy) / intrinsics.fy


def aim_headlight(scene: mujoco.MjvScene, T_world_camera: np.ndarray) -> None:
    """Put the scene's headlight (if any) at the camera, shining along its optical axis.

    ``mjv_updateScene`` placed it at the camera it was given; after :func:`set_gl_camera` moved the view,
    the headlight must follow or the shading differs from a model camera at the same pose.
    """
    for light_index in range(scene.nlight):
        light = scene.lights[light_index]
        if light.headlight:
            light.pos[:] = T_world_camera[:3, 3]
            light.dir[:] = T_world_camera[:3, 2]


def intrinsics_of_gl_camera(gl_camera: mujoco.MjvGLCamera, width: int, height: int) -> Intrinsics:
    """The pinhole intrinsics a ``width`` x ``height`` render through ``gl_camera``'s frustum has.

    A zero ``frustum_width`` means MuJoCo's default: the half width that gives square pixels.
    """
    near_m = gl_camera.frustum_near
    top, bottom = gl_camera.frustum_top, gl_camera.frustum_bottom
    half_width = gl_camera.frustum_width or 0.5 * width / height * (top - bottom)
    left = gl_camera.frustum_center - half_width
    fx = width * near_m / (2.0 * half_width)
    fy = height * near_m / (top - bottom)
    return Intrinsics(
        fx=fx, fy=fy, cx=-0.5 - left * fx / near_m, cy=top * fy / near_m - 0.5, width=width, height=height
    )


def scene_camera_intrinsics(model: mujoco.MjModel, camera_name: str, width: int, height: int) -> Intrinsics:
    """Intrinsics of the model camera ``camera_name`` rendered at ``width`` x ``height``, from MuJoCo's own frustum
    (``fovy``, or ``sensorsize`` with ``focal``/``principal`` where the camera has them)."""
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
    camera.fixedcamid = _camera_id(model, camera_name)
    scene = mujoco.MjvScene(model, maxgeom=0)
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)
    mujoco.mjv_updateCamera(model, data, camera, scene)
    return intrinsics_of_gl_camera(scene.camera[0], width, height)


class VirtualCamera(Camera):
    """Renders an ``MjData``'s state as an RGB :class:`Frame` at given intrinsics and extrinsics.

    Give exactly one mount: ``T_world_camera`` (4x4, OpenCV camera frame in the world), ``T_hand_camera``
    (4x4, OpenCV camera frame in the hand-mount frame), or ``scene_camera`` (a model camera's name, followed
    wherever its body goes; :meth:`from_scene_camera` also takes its intrinsics). :meth:`read` renders the
    ``data`` given here, as it is now; :meth:`render` renders any ``MjData`` of the same model (the deploy
    loop's, the virtual hand's). Call ``mj_forward`` (or step) before rendering so poses are current. The
    same ``seed`` gives the same noise sequence.

    Raises:
        ValueError: not exactly one mount, a pose that is not a rigid transform, distortion (MuJoCo cannot
            render it), or an image larger than the scene's offscreen buffer.
        CameraNotFoundError: ``scene_camera`` is not a camera of ``model`` (the message lists those it has).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        intrinsics: Intrinsics,
        *,
        T_world_camera: np.ndarray | None = None,
        T_hand_camera: np.ndarray | None = None,
        scene_camera: str | None = None,
        name: str | None = None,
        noise: ImageNoise | None = None,
        seed: int = 0,
    ) -> None:
        name = name or scene_camera or "virtual"
        self._pose_in_world = _mount(model, name, T_world_camera, T_hand_camera, scene_camera)
        _check_renderable(model, intrinsics, name)
        self._model, self._data, self._intrinsics = model, data, intrinsics
        self._name = name
        self._noise = noise or ImageNoise()
        self._rng = np.random.default_rng(seed)
        self._renderer: mujoco.Renderer | None = None
        self._frames_rendered = 0

    @classmethod
    def from_scene_camera(
        cls,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        camera_name: str,
        *,
        width: int = 640,
        height: int = 480,
        noise: ImageNoise | None = None,
        seed: int = 0,
    ) -> VirtualCamera:
        """A camera at the model camera ``camera_name`` (``cam_top``, ``cam_side``, ``cam_front``), following its
        body, with the intrinsics MuJoCo gives it at ``width`` x ``height``.

        Raises:
            CameraNotFoundError: the model has no camera of that name (the message lists those it has).
        """
        intrinsics = scene_camera_intrinsics(model, camera_name, width, height)
        return cls(model, data, intrinsics, scene_camera=camera_name, noise=noise, seed=seed)

    @property
    def name(self) -> str:
        return self._name

    @property
    def serial(self) -> str:
        return f"mujoco:{self._name}"

    @property
    def intrinsics(self) -> Intrinsics:
        return self._intrinsics

    def T_world_camera(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """The camera's pose (4x4, OpenCV camera frame) in the world for ``data`` (default: the bound data)."""
        return self._pose_in_world(self._data if data is None else data)

    def start(self) -> None:
        """Make the offscreen renderer (an OpenGL context).

        Raises:
            CameraError: no OpenGL context could be made (set ``MUJOCO_GL=egl`` headless).
        """
        if self._renderer is not None:
            return
        try:
            self._renderer = make_renderer(self._model, self._intrinsics.width, self._intrinsics.height)
        except RenderError as error:
            raise CameraError(f"virtual camera {self._name!r}: {error}") from error

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Render the bound ``data`` as it is now (``timeout_s`` is unused: a render always arrives)."""
        return self.render(self._data)

    def render(self, data: mujoco.MjData) -> Frame:
        """Render ``data`` (forwarded, same model) from this camera, with the camera's noise applied.

        ``device_timestamp_s`` is ``data.time`` (simulation time [s]).
        """
        if self._renderer is None:
            raise not_started_error(self, "render()")
        self._renderer.update_scene(data)
        T_world_camera = self._pose_in_world(data)
        scene = self._renderer.scene
        for gl_camera in scene.camera:  # both stereo views; mono renders their average
            set_gl_camera(gl_camera, self._intrinsics, T_world_camera)
        aim_headlight(scene, T_world_camera)
        image = self._noise.apply(self._renderer.render(), self._rng)
        frame = Frame(
            image=image,
            timestamp_s=time.monotonic(),
            frame_index=self._frames_rendered,
            device_timestamp_s=float(data.time),
        )
        self._frames_rendered += 1
        return frame

    def stop(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _camera_id(model: mujoco.MjModel, camera_name: str) -> int:
    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera_name)
    if camera_id < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise CameraNotFoundError(f"virtual camera: the model has no camera {camera_name!r}; it has {names}")
    return camera_id


PoseInWorld = Callable[[mujoco.MjData], np.ndarray]


def _mount(
    model: mujoco.MjModel,
    name: str,
    T_world_camera: np.ndarray | None,
    T_hand_camera: np.ndarray | None,
    scene_camera: str | None,
) -> PoseInWorld:
    """The function giving the camera's world pose (4x4, OpenCV frame) for an ``MjData``, from its one mount."""
    given = [
        what
        for what, value in (
            ("T_world_camera", T_world_camera),
            ("T_hand_camera", T_hand_camera),
            ("scene_camera", scene_camera),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"virtual camera {name!r}: give exactly one of T_world_camera, T_hand_camera, scene_camera; got {given}"
        )
    if T_world_camera is not None:
        T_fixed = _checked_pose(T_world_camera, "T_world_camera")
        return lambda _data: T_fixed
    if T_hand_camera is not None:
        T_mounted = _checked_pose(T_hand_camera, "T_hand_camera")
        return lambda data: T_world_site(model, data, leap.HAND_MOUNT_SITE_NAME) @ T_mounted
    assert scene_camera is not None
    _camera_id(model, scene_camera)
    return lambda data: T_world_opencv_camera_of_mujoco_camera(model, data, scene_camera)


def _check_renderable(model: mujoco.MjModel, intrinsics: Intrinsics, name: str) -> None:
    if intrinsics.has_distortion:
        raise ValueError(
            f"virtual camera {name!r}: MuJoCo renders a pinhole image and cannot apply lens distortion "
            f"{intrinsics.distortion} — render undistorted intrinsics and distort the image afterwards"
        )
    max_width, max_height = model.vis.global_.offwidth, model.vis.global_.offheight
    if intrinsics.width > max_width or intrinsics.height > max_height:
        raise ValueError(
            f"virtual camera {name!r}: {intrinsics.width}x{intrinsics.height} exceeds the scene's offscreen "
            f"buffer {max_width}x{max_height} — render smaller or raise <visual><global offwidth offheight>"
        )


def _checked_pose(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4) or not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0)):
        raise ValueError(f"virtual camera: {what} must be a 4x4 homogeneous transform, got shape {T.shape}")
    rotation = T[:3, :3]
    is_rotation = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6) and math.isclose(
        np.linalg.det(rotation), 1.0, abs_tol=1e-6
    )
    if not is_rotation:
        raise ValueError(f"virtual camera: {what}'s rotation is not a proper rotation (orthonormal, det +1)")
    return T.copy()
