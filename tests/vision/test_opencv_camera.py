"""OpenCVCamera on an image folder, a video file written here, and the inputs it must refuse."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from handrail.vision.camera import CameraError, CameraNotFoundError, EndOfStreamError, Intrinsics
from handrail.vision.opencv_camera import OpenCVCamera

WIDTH, HEIGHT = 48, 32


def _rgb_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def _write_png(path: Path, image_rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three PNGs named so that sorting by name (not by writing order) matters, and a file to skip."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for seed, name in ((2, "frame_002.png"), (0, "frame_000.png"), (1, "frame_001.png")):
        _write_png(folder / name, _rgb_image(seed))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_an_image_folder_is_read_in_name_order_as_rgb_then_ends(image_folder: Path) -> None:
    with OpenCVCamera(image_folder, fps=10.0) as camera:
        frames = [camera.read() for _ in range(3)]
        with pytest.raises(EndOfStreamError, match="all 3 images"):
            camera.read()
    for index, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, _rgb_image(index))
        assert frame.frame_index == index
        assert frame.device_timestamp_s == pytest.approx(index / 10.0)


def test_without_a_calibration_the_intrinsics_are_a_marked_guess(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), OpenCVCamera(image_folder) as camera:
        intrinsics = camera.intrinsics
    assert intrinsics.nominal
    assert (intrinsics.width, intrinsics.height) == (WIDTH, HEIGHT)
    assert (intrinsics.cx, intrinsics.cy) == ((WIDTH - 1) / 2, (HEIGHT - 1) / 2)
    assert "NOMINAL intrinsics" in caplog.text


def test_a_calibration_is_handed_out_and_must_match_the_image_size(image_folder: Path) -> None:
    calibrated = Intrinsics(fx=40.0, fy=41.0, cx=23.0, cy=15.0, width=WIDTH, height=HEIGHT, distortion=(0.1, 0, 0, 0))
    with OpenCVCamera(image_folder, intrinsics=calibrated) as camera:
        assert camera.intrinsics == calibrated
    wrong_size = Intrinsics(fx=40.0, fy=41.0, cx=23.0, cy=15.0, width=640, height=480)
    with pytest.raises(CameraError, match="calibration is for 640x480 images but the source delivers 48x32"):
        OpenCVCamera(image_folder, intrinsics=wrong_size).start()


def test_a_video_file_is_read_frame_by_frame_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    fps = 20.0
    colours_rgb = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for colour in colours_rgb:
        writer.write(np.full((HEIGHT, WIDTH, 3), colour[::-1], dtype=np.uint8))
    writer.release()

    with OpenCVCamera(path) as camera:
        assert (camera.intrinsics.width, camera.intrinsics.height) == (WIDTH, HEIGHT)
        frames = [camera.read() for _ in colours_rgb]
        with pytest.raises(EndOfStreamError):
            camera.read()
    for index, (frame, colour) in enumerate(zip(frames, colours_rgb, strict=True)):
        # MJPG is lossy: the mean colour comes back within a few levels, in RGB order.
        np.testing.assert_allclose(frame.image.reshape(-1, 3).mean(axis=0), colour, atol=6)
        assert frame.device_timestamp_s == pytest.approx(index / fps, abs=1e-3)


def test_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CameraNotFoundError, match="neither a file nor a folder"):
        OpenCVCamera(tmp_path / "nowhere").start()


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(CameraNotFoundError, match="holds no images"):
        OpenCVCamera(tmp_path).start()


def test_an_unreadable_image_is_named(image_folder: Path) -> None:
    (image_folder / "frame_001.png").write_bytes(b"this is not a PNG")
    with OpenCVCamera(image_folder) as camera:
        camera.read()
        with pytest.raises(CameraError, match=r"cannot decode .*frame_001\.png"):
            camera.read()


def test_an_image_of_another_size_is_refused(image_folder: Path) -> None:
    _write_png(image_folder / "frame_001.png", np.zeros((10, 10, 3), dtype=np.uint8))
    with OpenCVCamera(image_folder) as camera:
        camera.read()
        with pytest.raises(CameraError, match=r"frame_001\.png is 10x10"):
            camera.read()


def test_an_unreadable_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 1024)
    with pytest.raises(CameraError, match="cannot read the video"):
        OpenCVCamera(path).start()


def test_a_missing_usb_camera_is_not_found() -> None:
    with pytest.raises(CameraNotFoundError, match="no camera at index 99"):
        OpenCVCamera(99).start()


def test_reading_before_start_says_to_start(image_folder: Path) -> None:
    with pytest.raises(CameraError, match="call start"):
        OpenCVCamera(image_folder).read()
