"""Intel RealSense colour camera through ``pyrealsense2``: live by serial, recorded, or replayed.

One code path for every source: the camera runs on an ``rs.device`` — a connected camera found by
serial, a playback device opened from a recording, or an ``rs.software_device`` a test feeds — and
streams that device's colour sensor into a small frame queue through a callback. Recording wraps the
device in ``rs.recorder`` (what ``rs.config.enable_record_to_file`` does inside a pipeline) and playback
opens the file with ``rs.context.load_device`` (what ``enable_device_from_file`` does), so recording and
playback are exercised without hardware by the same code as a live camera.

Recording format: the installed librealsense decides. 2.59 writes and reads ROS 2 ``.db3`` files and
refuses another extension; older releases wrote ROS 1 ``.bag``.

Intrinsics are the factory calibration reported by the stream profile; a ``calibrated_intrinsics``
override replaces them (it must be for the same image size).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyrealsense2 as rs

from handrail.vision.camera import (
    Camera,
    CameraBusyError,
    CameraError,
    CameraNotFoundError,
    EndOfStreamError,
    Frame,
    FrameTimeoutError,
    Intrinsics,
    not_started_error,
)

# Colour formats we can hand out as RGB, in order of preference.
_COLOUR_FORMATS = (rs.format.rgb8, rs.format.bgr8)
# Words in librealsense's open() errors that mean "someone else holds it".
_BUSY_WORDS = ("busy", "streaming", "already", "in use")
# How long a finished playback may still deliver a frame already read from the file [s].
_END_GRACE_S = 0.1
# Distortion models whose coefficients are OpenCV's (k1, k2, p1, p2, k3).
_OPENCV_COMPATIBLE_DISTORTION = (rs.distortion.none, rs.distortion.brown_conrady)


class RealSenseCamera(Camera):
    """The colour stream of a RealSense device as RGB :class:`Frame` objects.

    Args:
        serial: the device's serial number (``rs-enumerate-devices -s`` lists them); ``None`` takes the
            first connected RealSense.
        width, height, fps: the colour stream mode [px], [px], [Hz].
        record_to: also record the stream to this file (``.db3`` with librealsense 2.59).
        queue_capacity: frames held for :meth:`read`; when full the oldest is dropped, so the default 1
            always hands out the newest frame.
        calibrated_intrinsics: use these instead of the factory intrinsics.
    """

    def __init__(
        self,
        serial: str | None = None,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        record_to: str | Path | None = None,
        queue_capacity: int = 1,
        calibrated_intrinsics: Intrinsics | None = None,
    ) -> None:
        self._open_device: Callable[[], rs.device] = lambda: find_device(serial)
        self._label = f"RealSense {serial}" if serial else "RealSense (first connected)"
        self._label_from_device = True
        self._serial = serial or ""
        self._mode: tuple[int | None, int | None, int | None] = (width, height, fps)  # None: any
        self._record_to = Path(record_to) if record_to is not None else None
        self._lossless = False
        if queue_capacity < 1:
            raise ValueError(f"queue_capacity must be >= 1, got {queue_capacity}")
        self._queue_capacity = queue_capacity
        self._calibrated_intrinsics = calibrated_intrinsics
        self._reset_stream_state()

    @classmethod
    def on_device(
        cls,
        device: rs.device,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
        record_to: str | Path | None = None,
        queue_capacity: int = 1,
        calibrated_intrinsics: Intrinsics | None = None,
    ) -> RealSenseCamera:
        """A camera on an ``rs.device`` you already hold (e.g. an ``rs.software_device``); a mode left
        ``None`` takes the device's first RGB/BGR colour stream's value."""
        camera = cls(record_to=record_to, queue_capacity=queue_capacity, calibrated_intrinsics=calibrated_intrinsics)
        camera._open_device = lambda: device
        camera._label = _device_label(device)
        camera._serial = _device_info(device, rs.camera_info.serial_number)
        camera._mode = (width, height, fps)
        return camera

    @classmethod
    def from_recording(cls, path: str | Path, *, real_time: bool = False, queue_capacity: int = 8) -> RealSenseCamera:
        """Replay a recording's colour stream.

        ``real_time=False`` hands out every frame, as fast as :meth:`read` takes them (the playback waits for
        room in the queue); ``real_time=True`` replays at the recorded rate and drops what is not read in time.
        At the end :meth:`read` raises :class:`EndOfStreamError`.

        Raises (on start):
            CameraNotFoundError: no such file. CameraError: librealsense cannot read it.
        """
        path = Path(path)
        camera = cls(queue_capacity=queue_capacity)
        camera._open_device = lambda: open_recording(path, real_time=real_time)
        camera._label = f"RealSense recording {path.name}"
        camera._label_from_device = False
        camera._serial = str(path)
        camera._mode = (None, None, None)
        camera._lossless = not real_time
        return camera

    # -- Camera interface ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._label

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise not_started_error(self, "intrinsics")
        return self._intrinsics

    def start(self) -> None:
        if self._sensor is not None:
            return
        device = self._open_device()
        if self._label_from_device:
            self._label = _device_label(device)
        self._serial = self._serial or _device_info(device, rs.camera_info.serial_number)
        sensor, profile = _colour_stream(device, *self._mode, camera_name=self._label)
        if self._calibrated_intrinsics is not None:
            _check_same_size(self._calibrated_intrinsics, profile, self._label)
        intrinsics = self._calibrated_intrinsics or intrinsics_from_profile(profile, self._label)
        if self._record_to is not None:
            # The recorder wraps the device: stream its sensor so every frame passes through the file.
            device = self._recorder(device)
            sensor, profile = _colour_stream(device, *self._mode, camera_name=self._label)
        self._open(sensor, profile)
        self._device, self._sensor, self._profile = device, sensor, profile
        self._bgr = profile.format() == rs.format.bgr8
        self._intrinsics = intrinsics
        self._stopping = False
        try:
            sensor.start(self._on_frame)
        except RuntimeError as error:
            self.stop()
            raise CameraError(f"{self._label}: could not start the colour stream {profile}: {error}") from error

    def read(self, timeout_s: float = 1.0) -> Frame:
        if self._sensor is None:
            raise not_started_error(self, "read()")
        deadline_s = time.monotonic() + timeout_s
        finished_since_s: float | None = None
        with self._condition:
            while not self._frames:
                if self._callback_error is not None:
                    raise CameraError(f"{self._label}: could not convert a frame: {self._callback_error}")
                now_s = time.monotonic()
                remaining_s = deadline_s - now_s
                if finished_since_s is None and self._playback_finished():
                    finished_since_s = now_s
                # The playback may report "stopped" while its last frame is still on its way to the callback.
                if finished_since_s is not None and (now_s - finished_since_s >= _END_GRACE_S or remaining_s <= 0):
                    raise EndOfStreamError(f"{self._label}: the recording has no frames left")
                if remaining_s <= 0:
                    raise FrameTimeoutError(
                        f"{self._label}: no frame within {timeout_s:.3f} s — check the USB 3 cable and that "
                        f"the stream mode {self._mode_text()} is one the camera offers"
                    )
                self._condition.wait(min(remaining_s, 0.05))
            frame = self._frames.popleft()
            self._condition.notify_all()  # room in the queue for a waiting lossless playback
            return frame

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        sensor, self._sensor = self._sensor, None
        if sensor is not None:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError:
                    pass  # already stopped or closed by the device going away; nothing left to release
        if self._recording is not None:
            self._recording.pause()
        self._reset_stream_state()

    # -- internals -------------------------------------------------------------------------------------

    def _reset_stream_state(self) -> None:
        self._device: rs.device | None = None
        self._sensor: rs.sensor | None = None
        self._profile: rs.video_stream_profile | None = None
        self._recording: rs.recorder | None = None
        self._intrinsics: Intrinsics | None = None
        self._bgr = False
        self._frames: collections.deque[Frame] = collections.deque()
        self._condition = threading.Condition()
        self._callback_error: Exception | None = None
        self._stopping = False

    def _recorder(self, device: rs.device) -> rs.recorder:
        assert self._record_to is not None
        self._record_to.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._recording = rs.recorder(str(self._record_to), device)
        except RuntimeError as error:
            raise CameraError(
                f"{self._label}: cannot record to {self._record_to}: {error} — librealsense {rs.__version__} "
                f"records ROS 2 .db3 files; pick a writable .db3 path"
            ) from error
        return self._recording

    def _open(self, sensor: rs.sensor, profile: rs.video_stream_profile) -> None:
        try:
            sensor.open(profile)
        except RuntimeError as error:
            message = str(error)
            if any(word in message.lower() for word in _BUSY_WORDS):
                raise CameraBusyError(
                    f"{self._label}: the colour sensor is in use ({message}) — stop the other program or "
                    f"camera that streams it (realsense-viewer, another handrail process)"
                ) from error
            raise CameraError(f"{self._label}: could not open the colour stream {profile}: {message}") from error

    def _on_frame(self, rs_frame: rs.frame) -> None:
        """librealsense's callback thread: copy the pixels out and queue the frame."""
        arrived_s = time.monotonic()
        try:
            video = rs_frame.as_video_frame()
            image = np.asanyarray(video.get_data())
            image = np.ascontiguousarray(image[..., ::-1] if self._bgr else image).copy()
            frame = Frame(
                image=image,
                timestamp_s=arrived_s,
                frame_index=int(video.get_frame_number()),
                device_timestamp_s=float(video.get_timestamp()) / 1000.0,
            )
        except Exception as error:  # surfaced by read(); an exception must not escape into librealsense
            with self._condition:
                self._callback_error = error
                self._condition.notify_all()
            return
        with self._condition:
            if self._lossless:
                self._condition.wait_for(lambda: len(self._frames) < self._queue_capacity or self._stopping)
            elif len(self._frames) >= self._queue_capacity:
                self._frames.popleft()
            if not self._stopping:
                self._frames.append(frame)
                self._condition.notify_all()

    def _playback_finished(self) -> bool:
        if self._device is None or not self._device.is_playback():
            return False
        return self._device.as_playback().current_status() == rs.playback_status.stopped

    def _mode_text(self) -> str:
        width, height, fps = self._mode
        return f"{width or 'any'}x{height or 'any'} @ {fps or 'any'} Hz"


def find_device(serial: str | None, context: rs.context | None = None) -> rs.device:
    """The connected RealSense with ``serial`` (or the first one when ``serial`` is None).

    Raises:
        CameraNotFoundError: none connected, or none with that serial; the message lists what is connected.
    """
    devices = list((context or rs.context()).query_devices())
    if serial is None and devices:
        return devices[0]
    for device in devices:
        if _device_info(device, rs.camera_info.serial_number) == serial:
            return device
    connected = ", ".join(_device_label(device) for device in devices) or "none"
    wanted = f"with serial {serial}" if serial else "at all"
    raise CameraNotFoundError(
        f"no RealSense camera {wanted}; connected: {connected} — check the USB 3 cable and the serial "
        f"(rs-enumerate-devices -s lists them)"
    )


def open_recording(path: Path, *, real_time: bool) -> rs.device:
    """A playback device for the recording at ``path`` (ROS 2 ``.db3`` with librealsense 2.59).

    Raises:
        CameraNotFoundError: no such file. CameraError: librealsense cannot read it.
    """
    if not path.is_file():
        raise CameraNotFoundError(f"RealSense recording {path}: no such file — check the path")
    try:
        device = rs.context().load_device(str(path))
    except RuntimeError as error:
        raise CameraError(
            f"RealSense recording {path}: librealsense {rs.__version__} cannot read it ({error}) — is it a "
            f"RealSense recording (.db3; .bag from librealsense before 2.57)?"
        ) from error
    device.as_playback().set_real_time(real_time)
    return device


def intrinsics_from_profile(profile: rs.video_stream_profile, camera_name: str) -> Intrinsics:
    """The stream's factory intrinsics as :class:`Intrinsics` (OpenCV distortion order k1, k2, p1, p2, k3).

    Raises:
        CameraError: a distortion model with non-zero coefficients that OpenCV's model does not match
            (modified/inverse Brown-Conrady, F-theta, Kannala-Brandt) — pass calibrated intrinsics instead.
    """
    rs_intrinsics = profile.get_intrinsics()
    coefficients = tuple(float(c) for c in rs_intrinsics.coeffs)
    if not any(coefficients):
        distortion: tuple[float, ...] = ()
    elif rs_intrinsics.model in _OPENCV_COMPATIBLE_DISTORTION:
        distortion = coefficients[:5]
    else:
        raise CameraError(
            f"{camera_name}: factory distortion model {rs_intrinsics.model} with coefficients {coefficients} is "
            f"not OpenCV's — calibrate the camera and pass calibrated_intrinsics"
        )
    return Intrinsics(
        fx=rs_intrinsics.fx,
        fy=rs_intrinsics.fy,
        cx=rs_intrinsics.ppx,
        cy=rs_intrinsics.ppy,
        width=rs_intrinsics.width,
        height=rs_intrinsics.height,
        distortion=distortion,
    )


def _colour_stream(
    device: rs.device, width: int | None, height: int | None, fps: int | None, *, camera_name: str
) -> tuple[rs.sensor, rs.video_stream_profile]:
    """The first sensor and RGB/BGR colour profile of ``device`` matching the mode (``None`` matches any).

    Raises:
        CameraError: no colour stream in that mode; the message lists the colour modes the device offers.
    """
    offered: list[str] = []
    for colour_format in _COLOUR_FORMATS:
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != rs.stream.color or not profile.is_video_stream_profile():
                    continue
                video = profile.as_video_stream_profile()
                offered.append(f"{video.width()}x{video.height()}@{video.fps()} {video.format()}")
                wanted = (width, height, fps, colour_format)
                actual = (video.width(), video.height(), video.fps(), video.format())
                if all(want is None or want == have for want, have in zip(wanted, actual, strict=True)):
                    return sensor, video
    mode = f"{width or 'any'}x{height or 'any'} @ {fps or 'any'} Hz"
    raise CameraError(
        f"{camera_name}: no RGB/BGR colour stream at {mode}; it offers: {', '.join(sorted(set(offered))) or 'none'}"
        f" — pick one of those modes"
    )


def _check_same_size(intrinsics: Intrinsics, profile: rs.video_stream_profile, camera_name: str) -> None:
    if (intrinsics.width, intrinsics.height) != (profile.width(), profile.height()):
        raise CameraError(
            f"{camera_name}: calibrated intrinsics are for {intrinsics.width}x{intrinsics.height} but the stream is "
            f"{profile.width()}x{profile.height()} — stream at the calibrated size or recalibrate"
        )


def _device_info(device: rs.device, info: rs.camera_info) -> str:
    return device.get_info(info) if device.supports(info) else ""


def _device_label(device: rs.device) -> str:
    name = _device_info(device, rs.camera_info.name) or "RealSense"
    serial = _device_info(device, rs.camera_info.serial_number)
    return f"{name} {serial}".strip()
