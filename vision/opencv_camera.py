"""Cameras OpenCV can read: a USB camera by index, a video file, or a folder of images.

Intrinsics come from a calibration you pass in (``calibration/`` writes them); without one the camera
hands out :meth:`Intrinsics.nominal_guess` — square pixels, centred principal point, a 60 degree horizontal
field of view — marked ``nominal=True`` and logged as a warning, good for a preview and nothing metric.

Frames are converted from OpenCV's BGR to RGB. Timestamps: ``timestamp_s`` is the host's monotonic time
when the frame was read; ``device_timestamp_s`` is the video file's position, ``index / fps`` for an
image folder given an ``fps``, and ``None`` for a USB camera.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from handrail.vision.camera import (
    Camera,
    CameraError,
    CameraNotFoundError,
    EndOfStreamError,
    Frame,
    FrameTimeoutError,
    Intrinsics,
    not_started_error,
)

_LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NOMINAL_HORIZONTAL_FOV_DEG = 60.0


class OpenCVCamera(Camera):
    """Frames from ``cv2.VideoCapture`` (a device index or a video file) or from a folder of images.

    Args:
        source: a device index (``0`` for ``/dev/video0``), a video file, or a folder whose images are read
            in sorted file-name order.
        intrinsics: the calibration for the frames' size; ``None`` uses a nominal guess (see module doc).
        width, height, fps: ask a USB camera for this mode [px], [px], [Hz]; for an image folder ``fps``
            only sets ``device_timestamp_s``. The camera may pick another mode: ``intrinsics`` then says
            what it delivers, and a calibration of another size is refused at start.
        name: a label for logs and errors (default: the source).
    """

    def __init__(
        self,
        source: int | str | Path,
        *,
        intrinsics: Intrinsics | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        name: str | None = None,
    ) -> None:
        self._source = source if isinstance(source, int) else Path(source)
        self._given_intrinsics = intrinsics
        self._requested = (width, height, fps)
        self._name = name or (f"camera {source}" if isinstance(source, int) else Path(source).name)
        self._capture: cv2.VideoCapture | None = None
        self._image_paths: list[Path] | None = None
        self._intrinsics: Intrinsics | None = None
        self._frames_read = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def serial(self) -> str:
        return f"/dev/video{self._source}" if isinstance(self._source, int) else str(self._source)

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise not_started_error(self, "intrinsics")
        return self._intrinsics

    def start(self) -> None:
        """Open the device, file or folder and settle the image size.

        Raises:
            CameraNotFoundError: no such device (or it is in use: OpenCV cannot tell which), file or folder;
                a folder with no images.
            CameraError: a file OpenCV cannot decode; a calibration for another image size.
        """
        if self._intrinsics is not None:
            return
        if isinstance(self._source, int):
            width, height = self._open_device(self._source)
        elif self._source.is_dir():
            width, height = self._open_folder(self._source)
        elif self._source.is_file():
            width, height = self._open_video(self._source)
        else:
            raise CameraNotFoundError(f"{self._name}: {self._source} is neither a file nor a folder — check the path")
        self._intrinsics = self._settle_intrinsics(width, height)
        self._frames_read = 0

    def read(self, timeout_s: float = 1.0) -> Frame:
        """The next frame.

        For a USB camera the timeout is the backend's (V4L2 honours ``CAP_PROP_READ_TIMEOUT_MSEC``, set
        here to ``timeout_s``); files and folders never wait.

        Raises:
            FrameTimeoutError: a USB camera sent nothing in time (or was unplugged).
            EndOfStreamError: the video or folder has no frames left.
            CameraError: not started; an image OpenCV cannot decode or of another size than the first.
        """
        if self._intrinsics is None:
            raise not_started_error(self, "read()")
        if self._image_paths is not None:
            image_bgr, device_timestamp_s = self._read_image_file()
        else:
            image_bgr, device_timestamp_s = self._read_capture(timeout_s)
        frame = Frame(
            image=np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)),
            timestamp_s=time.monotonic(),
            frame_index=self._frames_read,
            device_timestamp_s=device_timestamp_s,
        )
        self._frames_read += 1
        return frame

    def stop(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = None
        self._image_paths = None
        self._intrinsics = None

    # -- opening ---------------------------------------------------------------------------------------

    def _open_device(self, index: int) -> tuple[int, int]:
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            capture.release()
            raise CameraNotFoundError(
                f"{self._name}: no camera at index {index}, or another program holds it — list cameras with "
                f"`v4l2-ctl --list-devices` and close other programs using it"
            )
        width, height, fps = self._requested
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height)):
            if value is not None:
                capture.set(prop, value)
        if fps is not None:
            capture.set(cv2.CAP_PROP_FPS, fps)
        self._capture = capture
        return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def _open_video(self, path: Path) -> tuple[int, int]:
        capture = cv2.VideoCapture(str(path))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if not capture.isOpened() or width <= 0 or height <= 0:
            capture.release()
            raise CameraError(
                f"{self._name}: OpenCV cannot read the video {path} — is it a video file in a format this "
                f"OpenCV build decodes (mp4/avi with FFmpeg)?"
            )
        self._capture = capture
        return width, height

    def _open_folder(self, folder: Path) -> tuple[int, int]:
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise CameraNotFoundError(
                f"{self._name}: the folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) — check the path"
            )
        self._image_paths = paths
        first = _decode(paths[0], self._name)
        return first.shape[1], first.shape[0]

    def _settle_intrinsics(self, width: int, height: int) -> Intrinsics:
        given = self._given_intrinsics
        if given is None:
            _LOG.warning(
                "%s: no calibration given; using NOMINAL intrinsics (%d deg horizontal field of view) — "
                "calibrate the camera before using it for pose estimation",
                self._name,
                NOMINAL_HORIZONTAL_FOV_DEG,
            )
            return Intrinsics.nominal_guess(width, height, NOMINAL_HORIZONTAL_FOV_DEG)
        if (given.width, given.height) != (width, height):
            self.stop()
            raise CameraError(
                f"{self._name}: the calibration is for {given.width}x{given.height} images but the source "
                f"delivers {width}x{height} — capture at the calibrated size or recalibrate"
            )
        return given

    # -- reading ---------------------------------------------------------------------------------------

    def _read_image_file(self) -> tuple[np.ndarray, float | None]:
        assert self._image_paths is not None and self._intrinsics is not None
        if self._frames_read >= len(self._image_paths):
            raise EndOfStreamError(f"{self._name}: all {len(self._image_paths)} images have been read")
        path = self._image_paths[self._frames_read]
        image_bgr = _decode(path, self._name)
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if size != (self._intrinsics.width, self._intrinsics.height):
            raise CameraError(
                f"{self._name}: {path.name} is {size[0]}x{size[1]} but the folder's first image is "
                f"{self._intrinsics.width}x{self._intrinsics.height} — keep one image size per folder"
            )
        fps = self._requested[2]
        return image_bgr, (self._frames_read / fps if fps else None)

    def _read_capture(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        assert self._capture is not None
        is_device = isinstance(self._source, int)
        if is_device:
            self._capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_s * 1000.0)
        ok, image_bgr = self._capture.read()
        if not ok or image_bgr is None:
            if is_device:
                raise FrameTimeoutError(
                    f"{self._name}: no frame within {timeout_s:.3f} s — check that the camera is still plugged in"
                )
            raise EndOfStreamError(f"{self._name}: the video has no frames left (read {self._frames_read})")
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        position_s = None if is_device else self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        return image_bgr, position_s


def _decode(path: Path, camera_name: str) -> np.ndarray:
    """The image at ``path`` as (h, w, 3) uint8 BGR.

    Raises:
        CameraError: OpenCV cannot decode it (damaged, empty, or not an image).
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CameraError(f"{camera_name}: cannot decode {path} — the file is damaged or not an image; remove it")
    return image
