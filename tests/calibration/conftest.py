"""Shared fixtures of the calibration tests: virtual board views rendered once per session."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse

import numpy as np
import pytest

from handrail.calibration.board import BoardSpec
from handrail.calibration.virtual_board import VirtualBoardScene, random_board_poses
from handrail.vision.camera import Intrinsics
from handrail.vision.virtual_camera import ImageNoise, VirtualCamera

# Deliberately off-centre, non-square pixels: a calibration that assumed either would fail the bounds.
TRUE_INTRINSICS = Intrinsics(fx=610.0, fy=604.0, cx=324.5, cy=233.0, width=640, height=480)


def render_board_views(board_spec: str, n_views: int, seed: int) -> list[np.ndarray]:
    """RGB images of ``board_spec`` at random poses in front of a camera with :data:`TRUE_INTRINSICS`."""
    board = BoardSpec.parse(board_spec)
    scene = VirtualBoardScene(board)
    camera = VirtualCamera(
        scene.model,
        scene.data,
        TRUE_INTRINSICS,
        T_world_camera=np.eye(4),
        noise=ImageNoise(read_noise_std=1.0),
        seed=seed,
    )
    images = []
    with camera:
        for T_camera_board in random_board_poses(board, TRUE_INTRINSICS, n_views, np.random.default_rng(seed)):
            scene.set_board_pose(T_camera_board)  # the camera sits at the world origin
            images.append(camera.read().image)
    return images


@pytest.fixture(scope="session")
def charuco_views() -> list[np.ndarray]:
    return render_board_views("charuco:7x5:0.04:0.03:DICT_5X5_100", 15, seed=3)


def run_calibrate_cli(argv: list[str]) -> int:
    """Run ``handrail calibrate ...`` through the calibration commands' own parser."""
    from handrail.cli_calibrate import add_calibrate_commands

    parser = argparse.ArgumentParser(prog="handrail")
    add_calibrate_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="session")
def true_intrinsics() -> Intrinsics:
    return TRUE_INTRINSICS


@pytest.fixture(scope="session")
def board_view_renderer():
    """:func:`render_board_views`, for tests that need their own board or seed."""
    return render_board_views


@pytest.fixture(scope="session")
def calibrate_cli():
    """:func:`run_calibrate_cli`: ``calibrate_cli(["calibrate", "camera", ...])`` returns the exit code."""
    return run_calibrate_cli


@pytest.fixture(scope="module")
def profile():
    """The bundled hand profile."""
    from handrail.robot.profile import load_profile

    return load_profile()


@pytest.fixture(scope="module")
def replayer(profile):
    """A MuJoCo replayer of the bundled hand (compare and dynamics share it)."""
    from handrail.calibration.replay import Replayer

    return Replayer(profile)
