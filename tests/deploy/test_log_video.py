"""``handrail log video``: a rollout log becomes a video with one frame per 1/fps of log time, frames that show
the hand (not blank) moving as the log says, and a red safe-stop banner from the logged stop on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from handrail.cli import main
from handrail.deploy.log_video import VideoConfig, VideoError, frame_ticks, render_log_video
from handrail.robot.profile import load_profile


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture
def log_path(short_run_log: Path) -> Path:
    return short_run_log


def test_a_log_becomes_a_video_of_the_hand_moving_with_a_banner_from_the_safe_stop(log_path, tmp_path, capsys):
    out = tmp_path / "run.webm"
    argv = ["log", "video", str(log_path), "--out", str(out), "--fps", "10", "--width", "320", "--height", "240"]
    assert main(argv) == 0
    assert "30 frames" in capsys.readouterr().out
    frames = _frames(out)
    assert len(frames) == 30  # 3 s of log at 10 fps
    assert frames[0].shape == (240, 320, 3)
    assert all(frame.std() > 10 for frame in frames)  # not blank
    # The hand moves: while the log holds still (frames 0-4) the picture changes by codec noise only; with the
    # fingers bent (frame 17, 1.7 s) it differs from the start many times more.
    body = slice(80, 200)  # below the text overlay, above the banner
    start, still, bent = (frames[index][body].astype(float) for index in (0, 4, 17))
    assert np.abs(bent - start).mean() > 5 * np.abs(still - start).mean() + 2.0

    # The banner: red along the bottom from the stop on (2 s = frame 20), not before.
    def red_bottom(frame: np.ndarray) -> bool:
        blue, green, red = frame[-25:-10, :, :].reshape(-1, 3).mean(axis=0)
        return red > 150 and red > 2 * blue and red > 2 * green

    assert not any(red_bottom(frame) for frame in frames[:20])
    assert all(red_bottom(frame) for frame in frames[21:])


def test_several_cameras_side_by_side_and_faster_than_real_time(log_path, tmp_path):
    config = VideoConfig(cameras=("all",), fps=10, speed=2.0, width=160, height=120)
    report = render_log_video(log_path, tmp_path / "all.webm", load_profile(), config)
    assert report.cameras == ("cam_top", "cam_side", "cam_front") and report.size == (480, 120)
    frames = _frames(report.path)
    assert len(frames) == report.frames == 15 and frames[0].shape == (120, 480, 3)


def test_frames_take_the_last_tick_at_or_before_their_instant():
    times = 100.0 + np.arange(7) * 0.05  # 20 Hz, 0.3 s
    np.testing.assert_array_equal(frame_ticks(times, fps=10, speed=1.0), [0, 2, 4, 6])
    np.testing.assert_array_equal(frame_ticks(times, fps=10, speed=3.0), [0, 6])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cameras": ("cam_nowhere",)}, "camera 'cam_nowhere' is not in the scene"),
        ({"fps": 0.0}, "fps = 0.0 must be a positive number"),
        ({"width": 101}, "give even sizes"),
    ],
)
def test_bad_video_options_are_named(log_path, tmp_path, kwargs, words):
    with pytest.raises(VideoError, match=words):
        render_log_video(log_path, tmp_path / "x.webm", load_profile(), VideoConfig(**kwargs))
    assert not list(tmp_path.glob("*.webm"))
