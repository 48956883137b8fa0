"""Hand-eye calibration with the hand in the loop: the plan's checks, and ``calibrate extrinsics --hand-eye`` on the
virtual hand (a marker on the index fingertip, the scene's top camera) end to end through the CLI."""

import mujoco
import numpy as np
import pytest

from handrail.calibration import hand_eye_run
from handrail.calibration.board import BoardSpec
from handrail.calibration.errors import CalibrationError
from handrail.calibration.extrinsics import pose_error
from handrail.calibration.files import read_extrinsics_calibration
from handrail.calibration.hand_eye_plan import (
    HandKinematics,
    check_hand_eye_plan,
    default_hand_eye_plan,
    hand_eye_plan,
)
from handrail.calibration.joints_file import JointCalibrationEntry, JointsCalibration, write_joints_calibration
from handrail.calibration.virtual_hand_camera import DEFAULT_MARKER
from handrail.robot.profile import load_profile
from handrail.robot.reality import draw_reality
from handrail.sim import leap
from handrail.sim.model import SCENE_XML
from handrail.vision.camera import Camera
from handrail.vision.transforms import T_world_opencv_camera_of_mujoco_camera, T_world_site, invert_pose

MAX_ERROR_M, MAX_ERROR_DEG = 0.002, 0.5
REALITY_SEED = 3


@pytest.fixture(scope="module")
def profile():
    return load_profile()


def scene_T_hand_camera(camera_name: str) -> np.ndarray:
    """Where the scene (``sim/models/scene.xml``, no hand needed) puts a camera relative to the hand mount."""
    model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return invert_pose(T_world_site(model, data, leap.HAND_MOUNT_SITE_NAME)) @ T_world_opencv_camera_of_mujoco_camera(
        model, data, camera_name
    )


def joints_overlay_of_the_reality(tmp_path, profile, seed: int):
    """The joints overlay a perfect ``calibrate joints`` would write for the virtual hand of ``seed`` (its hidden
    encoder offsets); ``calibrate joints`` itself recovers them to about 0.02 deg (tested in test_joints.py)."""
    reality = draw_reality(seed, profile.joint_names)
    overlay = JointsCalibration(
        profile=profile.name,
        created="2025-01-31T12:00:00+00:00",
        joints={
            name: JointCalibrationEntry(zero_offset_rad=offset, direction=profile.joint(name).direction)
            for name, offset in zip(reality.joint_names, reality.encoder_offset_rad, strict=True)
        },
    )
    return write_joints_calibration(tmp_path / "joints.toml", overlay)


def test_the_leap_plan_passes_its_checks_and_a_finger_driven_into_its_neighbour_does_not(profile):
    kinematics = HandKinematics(profile)
    check_hand_eye_plan(profile, default_hand_eye_plan(profile), kinematics)
    into_the_middle_finger = hand_eye_plan(
        profile, "if_dip_link", [{"if_abd": 0.45, "if_mcp": m, "if_pip": 0.4} for m in (0.2, 0.4, 0.6)]
    )
    with pytest.raises(CalibrationError, match=r"if_.*_link and mf_.*_link touch"):
        check_hand_eye_plan(profile, into_the_middle_finger, kinematics)
    past_the_soft_limit = hand_eye_plan(profile, "if_dip_link", [{"if_mcp": m} for m in (0.0, 1.0, 2.09)])
    with pytest.raises(CalibrationError, match=r"index_mcp reaches 2\.090 rad, not 0\.05 rad inside its soft limits"):
        check_hand_eye_plan(profile, past_the_soft_limit, kinematics)


class _CameraThatMustNotStart(Camera):
    name = serial = "must-not-start"

    @property
    def intrinsics(self):
        raise AssertionError("the camera was used")

    def start(self) -> None:
        raise AssertionError("the camera was started")

    def read(self, timeout_s: float = 1.0):
        raise AssertionError("the camera was read")

    def stop(self) -> None:
        pass


def test_a_plan_about_one_axis_is_refused_before_the_hand_moves(profile):
    """Flexion only (MCP, PIP and DIP turn about parallel axes): hand-eye would have no unique answer."""
    flexion_only = hand_eye_plan(
        profile, "if_dip_link", [{"if_mcp": 0.1 * i, "if_pip": 0.05 * i, "if_dip": 0.05 * i} for i in range(8)]
    )
    with pytest.raises(CalibrationError, match="rotate if_dip_link about fewer than two distinct axes"):
        # No hand on this port and a camera that fails if touched: the refusal comes before either is opened.
        hand_eye_run.run_hand_eye(
            profile, "/dev/no-hand-here", _CameraThatMustNotStart(), BoardSpec.parse(DEFAULT_MARKER), flexion_only
        )


@pytest.mark.slow
def test_calibrate_extrinsics_hand_eye_on_the_virtual_hand_recovers_the_camera_pose(
    tmp_path, profile, calibrate_cli, capsys
):
    """About 40 s: twelve poses driven in real time through the safety layer, each rendered and detected.

    Slow tier (the suite's 10-minute budget): the fast tier runs the same plan to its second pose (the
    interrupted-run test) and the solver on rendered fingertip-marker views (tests/calibration/test_extrinsics.py).
    """
    joints = joints_overlay_of_the_reality(tmp_path, profile, REALITY_SEED)
    out = tmp_path / "extrinsics.toml"
    argv = ["calibrate", "extrinsics", "--hand-eye", "--virtual", "--reality-seed", str(REALITY_SEED),
            "--calibration", str(joints), "--camera", "cam_top", "--out", str(out)]  # fmt: skip
    assert calibrate_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "hand-eye: 12 poses" in printed and "virtual camera cam_top:" in printed
    written = read_extrinsics_calibration(out)
    assert written.method == "hand_eye" and written.camera == "mujoco:cam_top"
    assert written.n_views >= 10 and written.rms_px < 0.5
    error_m, error_deg = pose_error(written.T_hand_camera_matrix, scene_T_hand_camera("cam_top"))
    assert error_m <= MAX_ERROR_M and error_deg <= MAX_ERROR_DEG, (1000 * error_m, error_deg)


def test_an_interrupted_hand_eye_run_leaves_the_previous_file_untouched(tmp_path, monkeypatch, calibrate_cli):
    out = tmp_path / "extrinsics.toml"
    out.write_text("previous calibration\n")
    settle = hand_eye_run._settle
    poses_settled = []

    def interrupted_at_the_second_pose(robot, target_rad, config, index):
        poses_settled.append(index)
        if len(poses_settled) == 2:
            raise KeyboardInterrupt  # Ctrl-C with the finger on its way through the plan
        return settle(robot, target_rad, config, index)

    monkeypatch.setattr(hand_eye_run, "_settle", interrupted_at_the_second_pose)
    with pytest.raises(KeyboardInterrupt):
        calibrate_cli(["calibrate", "extrinsics", "--hand-eye", "--virtual", "--reality-seed", "2", "--out", str(out)])
    assert poses_settled == [0, 1]
    assert out.read_text() == "previous calibration\n"
    assert [path.name for path in tmp_path.iterdir()] == ["extrinsics.toml"]
