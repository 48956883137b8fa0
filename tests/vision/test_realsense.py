"""RealSenseCamera end to end without hardware: an ``rs.software_device`` stands in for the camera, frames are
injected with ``on_video_frame`` and read back through the same class a live camera uses; recording and
playback run through the same class too."""

import time
from pathlib import Path

import numpy as np
import pyrealsense2 as rs
import pytest

from handrail.vision.camera import (
    CameraBusyError,
    CameraError,
    CameraNotFoundError,
    EndOfStreamError,
    FrameTimeoutError,
    Intrinsics,
)
from handrail.vision.realsense import RealSenseCamera

WIDTH, HEIGHT, FPS = 64, 48, 30
SERIAL = "000111222"
FX, FY, CX, CY = 52.5, 51.0, 31.25, 23.75
# librealsense stores float32: values exact in float32 compare exactly.
COEFFS = (0.125, -0.03125, 0.0009765625, 0.001953125, 0.00390625)
FRAME_PERIOD_MS = 1000.0 / FPS
FACTORY_INTRINSICS = Intrinsics(fx=FX, fy=FY, cx=CX, cy=CY, width=WIDTH, height=HEIGHT, distortion=COEFFS)


class SoftwareCamera:
    """A software RealSense with one colour sensor; :meth:`inject` plays the hardware's part."""

    def __init__(
        self,
        colour_format: rs.format = rs.format.rgb8,
        distortion: rs.distortion = rs.distortion.brown_conrady,
        coeffs: tuple[float, ...] = COEFFS,
    ) -> None:
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software D435")
        self.device.register_info(rs.camera_info.serial_number, SERIAL)
        self.sensor = self.device.add_sensor("RGB Camera")
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = WIDTH, HEIGHT
        intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = FX, FY, CX, CY
        intrinsics.model, intrinsics.coeffs = distortion, list(coeffs)
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = WIDTH, HEIGHT, FPS, 3, colour_format
        stream.intrinsics = intrinsics
        self.profile = self.sensor.add_video_stream(stream).as_video_stream_profile()

    def inject(self, frame_number: int, pixels: np.ndarray) -> float:
        """Push one (HEIGHT, WIDTH, 3) frame; returns its device timestamp [ms]."""
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels)
        frame.bpp, frame.stride = 3, WIDTH * 3
        frame.timestamp = 1000.0 + frame_number * FRAME_PERIOD_MS
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = frame_number
        frame.profile = self.profile
        self.sensor.on_video_frame(frame)
        return frame.timestamp


def _pixels(frame_number: int) -> np.ndarray:
    """A frame whose every pixel says which frame and where it is, so swaps and shifts show."""
    rng = np.random.default_rng(frame_number)
    return rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def test_injected_frames_come_back_with_their_pixels_timestamps_and_the_factory_intrinsics() -> None:
    source = SoftwareCamera()
    n_frames = 5
    before_s = time.monotonic()
    with RealSenseCamera.on_device(source.device, queue_capacity=n_frames) as camera:
        assert camera.serial == SERIAL
        assert camera.intrinsics == FACTORY_INTRINSICS
        timestamps_ms = [source.inject(i, _pixels(i)) for i in range(n_frames)]
        frames = [camera.read(timeout_s=1.0) for _ in range(n_frames)]
    after_s = time.monotonic()
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, _pixels(i))
        assert frame.frame_index == i
        assert frame.device_timestamp_s == pytest.approx(timestamps_ms[i] / 1000.0)
        assert before_s <= frame.timestamp_s <= after_s
    assert [frame.timestamp_s for frame in frames] == sorted(frame.timestamp_s for frame in frames)


def test_a_queue_of_one_hands_out_the_newest_frame() -> None:
    source = SoftwareCamera()
    with RealSenseCamera.on_device(source.device) as camera:
        for i in range(3):
            source.inject(i, _pixels(i))
        frame = camera.read(timeout_s=1.0)
        assert frame.frame_index == 2
        np.testing.assert_array_equal(frame.image, _pixels(2))
        with pytest.raises(FrameTimeoutError):
            camera.read(timeout_s=0.05)


def test_no_frame_within_the_timeout_is_an_error() -> None:
    source = SoftwareCamera()
    with RealSenseCamera.on_device(source.device) as camera:
        start_s = time.monotonic()
        with pytest.raises(FrameTimeoutError, match=r"no frame within 0\.200 s"):
            camera.read(timeout_s=0.2)
        assert time.monotonic() - start_s >= 0.2


def test_bgr_streams_are_handed_out_as_rgb() -> None:
    source = SoftwareCamera(colour_format=rs.format.bgr8)
    with RealSenseCamera.on_device(source.device) as camera:
        source.inject(0, _pixels(0))
        np.testing.assert_array_equal(camera.read(timeout_s=1.0).image, _pixels(0)[..., ::-1])


def test_a_sensor_another_camera_streams_is_busy() -> None:
    source = SoftwareCamera()
    with RealSenseCamera.on_device(source.device):
        with pytest.raises(CameraBusyError, match="in use"):
            RealSenseCamera.on_device(source.device).start()


def test_a_mode_the_device_lacks_is_refused_with_the_modes_it_offers() -> None:
    source = SoftwareCamera()
    camera = RealSenseCamera.on_device(source.device, width=1280, height=720, fps=30)
    with pytest.raises(CameraError, match=r"no RGB/BGR colour stream at 1280x720 @ 30 Hz; it offers: 64x48@30"):
        camera.start()


def test_an_unknown_serial_is_refused_with_what_is_connected() -> None:
    with pytest.raises(CameraNotFoundError, match=r"no RealSense camera with serial no-such-serial; connected: "):
        RealSenseCamera("no-such-serial").start()


def test_reading_before_start_says_to_start() -> None:
    camera = RealSenseCamera.on_device(SoftwareCamera().device)
    with pytest.raises(CameraError, match="call start"):
        camera.read()
    with pytest.raises(CameraError, match="call start"):
        _ = camera.intrinsics


def test_a_distortion_model_opencv_lacks_needs_calibrated_intrinsics() -> None:
    source = SoftwareCamera(distortion=rs.distortion.inverse_brown_conrady)
    with pytest.raises(CameraError, match="calibrated_intrinsics"):
        RealSenseCamera.on_device(source.device).start()
    calibrated = Intrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, width=WIDTH, height=HEIGHT)
    with RealSenseCamera.on_device(source.device, calibrated_intrinsics=calibrated) as camera:
        assert camera.intrinsics == calibrated


def test_a_recording_replays_every_frame_with_its_intrinsics_then_ends(tmp_path: Path) -> None:
    recording = tmp_path / "session.db3"
    source = SoftwareCamera()
    n_frames = 4
    with RealSenseCamera.on_device(source.device, record_to=recording, queue_capacity=n_frames) as camera:
        for i in range(n_frames):
            source.inject(i, _pixels(i))
        recorded_live = [camera.read(timeout_s=1.0) for _ in range(n_frames)]
    assert recording.is_file()
    # Lossless replay through a queue of one: the playback waits for each read.
    with RealSenseCamera.from_recording(recording, queue_capacity=1) as replay:
        assert replay.serial == str(recording)
        assert replay.intrinsics == FACTORY_INTRINSICS
        replayed = [replay.read(timeout_s=2.0) for _ in range(n_frames)]
        with pytest.raises(EndOfStreamError):
            replay.read(timeout_s=2.0)
    for i, frame in enumerate(replayed):
        np.testing.assert_array_equal(frame.image, _pixels(i))
        assert frame.frame_index == i
        assert frame.device_timestamp_s == pytest.approx(recorded_live[i].device_timestamp_s)


def test_a_missing_recording_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CameraNotFoundError, match="no such file"):
        RealSenseCamera.from_recording(tmp_path / "missing.db3").start()


def test_recording_to_a_path_librealsense_refuses_says_which_format(tmp_path: Path) -> None:
    camera = RealSenseCamera.on_device(SoftwareCamera().device, record_to=tmp_path / "session.txt")
    with pytest.raises(CameraError, match="cannot record to"):
        camera.start()
