"""The camera seam: :class:`Frame`, :class:`Intrinsics`, the :class:`Camera` interface and its errors.

Every camera (RealSense, OpenCV ``VideoCapture``, the MuJoCo virtual camera) hands out the same
:class:`Frame`: an **RGB** ``uint8`` image (height, width, 3), the host's monotonic time when the frame
arrived, and a frame index. Pixel coordinates follow OpenCV: ``(u, v)`` = (column, row), the centre of the
top-left pixel is ``(0, 0)``, so the image spans ``[-0.5, width - 0.5] x [-0.5, height - 0.5]``; camera
frames are OpenCV's (x right, y down, z forward; see :mod:`handrail.vision.transforms`).

Use a camera as a context manager::

    with OpenCVCamera("frames/") as camera:
        frame = camera.read(timeout_s=1.0)
        K = camera.intrinsics.K
"""

from __future__ import annotations

import abc
import dataclasses
import math
from types import TracebackType

import cv2
import numpy as np

from handrail.errors import HandrailError


class CameraError(HandrailError):
    """A camera could not be opened or read; the message names the camera, the problem and the fix."""


class CameraNotFoundError(CameraError):
    """No camera, device, file or folder answers to the name, serial or path asked for."""


class CameraBusyError(CameraError):
    """The camera exists but another process or another stream holds it."""


class FrameTimeoutError(CameraError):
    """No frame arrived within the timeout."""


class EndOfStreamError(CameraError):
    """A recording, video file or image folder has no frames left."""


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Frame:
    """One image from a camera.

    Attributes:
        image: (height, width, 3) ``uint8``, **RGB** channel order.
        timestamp_s: host ``time.monotonic()`` [s] when the frame arrived (for a rendered frame: when it was
            rendered); compare it with ``time.monotonic()`` to get the frame's age.
        frame_index: the camera's own frame counter where it has one (RealSense), else the number of
            frames this camera handed out before this one.
        device_timestamp_s: the source's own clock [s], if it has one: the RealSense frame timestamp, a
            video file's position, the simulation time of a render; ``None`` otherwise. Not comparable
            with ``timestamp_s``.
    """

    image: np.ndarray
    timestamp_s: float
    frame_index: int
    device_timestamp_s: float | None = None

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", None)
            raise ValueError(f"Frame.image must be (height, width, 3) uint8 RGB, got shape {shape} dtype {dtype}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics with OpenCV's distortion model, for images of ``width`` x ``height`` pixels.

    Attributes:
        fx, fy: focal lengths [px].
        cx, cy: principal point [px], OpenCV pixel coordinates (centre of the top-left pixel is (0, 0)).
        width, height: image size [px] these intrinsics hold for.
        distortion: OpenCV distortion coefficients ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``; empty means none.
        nominal: True when these are a guess (no calibration, no factory data): fine for a preview, not
            for metric pose estimation.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()
    nominal: bool = False

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"intrinsics: focal lengths must be positive and finite, got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics: image size must be positive, got {self.width}x{self.height}")
        if len(self.distortion) not in (0, 4, 5, 8):
            raise ValueError(
                f"intrinsics: {len(self.distortion)} distortion coefficients; OpenCV's model takes 4, 5 or 8 "
                f"(k1, k2, p1, p2[, k3[, k4, k5, k6]])"
            )
        object.__setattr__(self, "distortion", tuple(float(c) for c in self.distortion))

    @property
    def K(self) -> np.ndarray:
        """The 3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distortion_coefficients(self) -> np.ndarray:
        """The distortion coefficients as OpenCV takes them: (n,) float64, zeros(5) when there are none."""
        return np.array(self.distortion if self.distortion else (0.0,) * 5, dtype=float)

    @property
    def has_distortion(self) -> bool:
        return any(c != 0.0 for c in self.distortion)

    @classmethod
    def from_K(
        cls, K: np.ndarray, width: int, height: int, distortion: tuple[float, ...] = (), nominal: bool = False
    ) -> Intrinsics:
        """Intrinsics from a 3x3 camera matrix; a skew term (``K[0, 1]``) is refused, since OpenCV's calibration
        and MuJoCo's renderer have none."""
        K = np.asarray(K, dtype=float)
        if K.shape != (3, 3) or K[0, 1] != 0.0 or K[1, 0] != 0.0 or tuple(K[2]) != (0.0, 0.0, 1.0):
            raise ValueError(f"intrinsics: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
        return cls(
            fx=float(K[0, 0]),
            fy=float(K[1, 1]),
            cx=float(K[0, 2]),
            cy=float(K[1, 2]),
            width=int(width),
            height=int(height),
            distortion=tuple(distortion),
            nominal=nominal,
        )

    @classmethod
    def nominal_guess(cls, width: int, height: int, horizontal_fov_deg: float = 60.0) -> Intrinsics:
        """A **guess** for an uncalibrated camera: square pixels, principal point at the image centre, the
        given horizontal field of view [deg], no distortion. Marked ``nominal=True``; calibrate for metric use."""
        fx = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        return cls(fx=fx, fy=fx, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=width, height=height, nominal=True)

    def project(self, points_camera_m: np.ndarray) -> np.ndarray:
        """Pixel coordinates (n, 2) ``(u, v)`` of points (n, 3) [m] in the camera frame, with distortion.

        Points at or behind the camera (z <= 0) project to NaN.
        """
        points = np.atleast_2d(np.asarray(points_camera_m, dtype=float))
        pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), self.K, self.distortion_coefficients)
        pixels = pixels.reshape(-1, 2)
        pixels[points[:, 2] <= 0] = np.nan
        return pixels


class Camera(abc.ABC):
    """A source of timestamped RGB frames with known intrinsics.

    Lifecycle: ``start()`` opens the device (or file, or renderer) and makes ``intrinsics`` valid;
    ``read()`` returns frames; ``stop()`` releases everything and may be called more than once. As a
    context manager the camera starts on entry and stops on exit.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A human-readable label (for logs and errors): a scene camera's name, a device's product name."""

    @property
    @abc.abstractmethod
    def serial(self) -> str:
        """What identifies the source: a device serial number, a file or folder path, ``mujoco:<camera>``."""

    @property
    @abc.abstractmethod
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the frames :meth:`read` returns; valid once started.

        Raises:
            CameraError: the camera has not been started (some sources only know their image size then).
        """

    @abc.abstractmethod
    def start(self) -> None:
        """Open the source and start streaming.

        Raises:
            CameraNotFoundError: nothing answers to the serial, index or path.
            CameraBusyError: another process or stream holds it.
            CameraError: the source exists but cannot stream as configured (the message lists what it offers).
        """

    @abc.abstractmethod
    def read(self, timeout_s: float = 1.0) -> Frame:
        """The next frame, waiting at most ``timeout_s`` [s].

        Raises:
            FrameTimeoutError: no frame within ``timeout_s``.
            EndOfStreamError: a file, folder or recording has no frames left.
            CameraError: the camera is not started, or a frame could not be decoded.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop streaming and release the source; safe to call when not started."""

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, serial={self.serial!r})"


def not_started_error(camera: Camera, what: str) -> CameraError:
    """The error for using ``what`` (``intrinsics``, ``read()``) before ``start()``."""
    return CameraError(f"camera {camera.name!r}: {what} needs a started camera — call start() or use `with camera:`")
