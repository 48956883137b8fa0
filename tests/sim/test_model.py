"""The scene with our LEAP-class hand: names and ranges, a cube that rests still on the palm, renders that
show it. Renders need an OpenGL backend: run with ``MUJOCO_GL=egl`` on a machine without a display."""

import re
import tomllib
from pathlib import Path

import mujoco
import numpy as np
import pytest

from handrail.sim import leap
from handrail.sim.model import ModelError, build_scene, camera_names, cube_pose
from handrail.sim.render import make_renderer, render_cameras

PROFILE_TOML = Path(__file__).resolve().parents[2] / "robot" / "profiles" / "leap.toml"

# The LEAP Hand's published joint ranges [rad].
EXPECTED_RANGES_RAD = {
    "abd": (-1.047, 1.047),
    "mcp": (-0.314, 2.23),
    "pip": (-0.506, 1.885),
    "dip": (-0.366, 2.042),
    "th_cmc": (-0.349, 2.094),
    "th_axl": (-0.349, 2.094),
    "th_mcp": (-0.47, 2.443),
    "th_ipl": (-1.34, 1.88),
}
SETTLE_S = 1.0
HOLD_S = 9.0
MAX_CUBE_JITTER_M = 1e-3
# A 6 cm cube fills far more than this share of each 320x240 image; the hand alone fills none of it.
MIN_CUBE_PIXEL_FRACTION = 0.01


def _profile() -> dict:
    return tomllib.loads(PROFILE_TOML.read_text())


def _profile_home_rad() -> dict[str, float]:
    return {joint["mjcf_joint"]: joint["home_rad"] for joint in _profile()["joints"]}


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    hand_mjcf = (PROFILE_TOML.parent / _profile()["mjcf"]).resolve()
    return build_scene(hand_mjcf, _profile_home_rad())


def _home_data(model: mujoco.MjModel) -> mujoco.MjData:
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(leap.HOME_KEYFRAME_NAME).id)
    mujoco.mj_forward(model, data)
    return data


def _cube_jitter_m(model: mujoco.MjModel, push_N: float = 0.0) -> tuple[float, mujoco.MjData]:
    """Hold the home pose for SETTLE_S + HOLD_S; return the cube's largest distance [m] over the hold
    from where it was when the hold began. ``push_N`` pushes the cube along +y for the hold's first 0.2 s."""
    data = _home_data(model)
    cube_id = model.body(leap.CUBE_BODY_NAME).id
    settle_steps = round(SETTLE_S / model.opt.timestep)
    push_steps = round(0.2 / model.opt.timestep)
    for _ in range(settle_steps):
        mujoco.mj_step(model, data)
    start_m = cube_pose(model, data).position_m
    max_deviation_m = 0.0
    for step in range(round(HOLD_S / model.opt.timestep)):
        data.xfrc_applied[cube_id, 1] = push_N if step < push_steps else 0.0
        mujoco.mj_step(model, data)
        max_deviation_m = max(max_deviation_m, float(np.linalg.norm(data.xpos[cube_id] - start_m)))
    return max_deviation_m, data


def test_model_has_the_leap_joints_and_position_servos(model: mujoco.MjModel) -> None:
    hand_joints = [model.joint(i).name for i in range(model.njnt) if model.joint(i).name in leap.JOINT_NAMES]
    assert hand_joints == list(leap.JOINT_NAMES)
    assert [model.actuator(i).name for i in range(model.nu)] == list(leap.ACTUATOR_NAMES)
    for joint_name, actuator_name in zip(leap.JOINT_NAMES, leap.ACTUATOR_NAMES, strict=True):
        joint = model.joint(joint_name)
        actuator = model.actuator(actuator_name)
        range_key = joint_name if joint_name.startswith("th_") else joint_name.split("_")[1]
        assert joint.type[0] == mujoco.mjtJoint.mjJNT_HINGE
        np.testing.assert_allclose(joint.range, EXPECTED_RANGES_RAD[range_key], atol=1e-9, err_msg=joint_name)
        np.testing.assert_allclose(actuator.ctrlrange, joint.range, atol=1e-9, err_msg=actuator_name)
        assert actuator.trnid[0] == joint.id
        assert actuator.biasprm[1] == -actuator.gainprm[0]  # a position servo
    for site_name in leap.FINGERTIP_SITE_NAMES:
        assert model.site(site_name).id >= 0
    assert camera_names(model) == leap.CAMERA_NAMES


def test_home_keyframe_holds_the_profile_pose(model: mujoco.MjModel) -> None:
    key = model.key(leap.HOME_KEYFRAME_NAME)
    for joint_name, home_rad in _profile_home_rad().items():
        joint = model.joint(joint_name)
        assert key.qpos[model.jnt_qposadr[joint.id]] == pytest.approx(home_rad)
        assert key.ctrl[model.actuator(f"{joint_name}_act").id] == pytest.approx(home_rad)


def test_cube_rests_still_on_the_palm_at_home(model: mujoco.MjModel) -> None:
    jitter_m, data = _cube_jitter_m(model)
    print(f"cube jitter over {HOLD_S:.0f} s at home: {jitter_m * 1e3:.3g} mm")
    assert jitter_m < MAX_CUBE_JITTER_M
    palm_surface_z_m = data.site(leap.HAND_MOUNT_SITE_NAME).xpos[2]
    assert cube_pose(model, data).position_m[2] == pytest.approx(palm_surface_z_m + 0.03, abs=2e-3)
    # The fingers hold their home angles (gravity sag only) and only the palm touches the cube.
    qpos_addresses = [model.jnt_qposadr[model.joint(name).id] for name in leap.JOINT_NAMES]
    np.testing.assert_allclose(data.qpos[qpos_addresses], data.ctrl, atol=0.05)
    cube_id = model.body(leap.CUBE_BODY_NAME).id
    palm_id = model.body("palm").id
    touching = {int(model.geom_bodyid[g]) for c in data.contact[: data.ncon] for g in (c.geom1, c.geom2)}
    assert touching == {cube_id, palm_id}


def test_cube_jitter_check_catches_a_moving_cube(model: mujoco.MjModel) -> None:
    pushed_jitter_m, _ = _cube_jitter_m(model, push_N=2.0)
    assert pushed_jitter_m > MAX_CUBE_JITTER_M


def _cube_pixel_fractions(model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, float]:
    cube_id = model.body(leap.CUBE_BODY_NAME).id
    cube_geom_ids = np.flatnonzero(model.geom_bodyid == cube_id)
    renderer = make_renderer(model, width=320, height=240)
    renderer.enable_segmentation_rendering()
    fractions = {}
    try:
        for name in camera_names(model):
            renderer.update_scene(data, camera=name)
            segmentation = renderer.render()  # (h, w, 2): object id, object type
            is_cube = (segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(segmentation[..., 0], cube_geom_ids)
            fractions[name] = float(is_cube.mean())
    finally:
        renderer.close()
    return fractions


def test_every_camera_sees_the_cube_in_the_palm(model: mujoco.MjModel) -> None:
    data = _home_data(model)
    fractions = _cube_pixel_fractions(model, data)
    print("cube pixel fraction per camera:", fractions)
    assert all(fraction > MIN_CUBE_PIXEL_FRACTION for fraction in fractions.values()), fractions

    # The same check on a cube moved far behind the cameras finds nothing.
    cube_qpos_address = model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id]
    data.qpos[cube_qpos_address : cube_qpos_address + 3] = (-5.0, 0.0, 0.03)
    mujoco.mj_forward(model, data)
    assert max(_cube_pixel_fractions(model, data).values()) < MIN_CUBE_PIXEL_FRACTION


def test_render_cameras_writes_one_nonblank_png_per_camera(model: mujoco.MjModel, tmp_path: Path) -> None:
    import cv2

    data = _home_data(model)
    paths = render_cameras(model, data, tmp_path / "hand.png", width=320, height=240)
    assert paths == [tmp_path / f"hand_{name}.png" for name in leap.CAMERA_NAMES]
    for path in paths:
        image = cv2.imread(str(path))
        assert image.shape == (240, 320, 3)
        assert image.std() > 10.0, f"{path.name} looks blank (pixel std {image.std():.1f})"


def test_missing_hand_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_hand.xml"
    with pytest.raises(ModelError, match=re.escape(str(missing))):
        build_scene(missing)


def test_broken_hand_file_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body name='palm'><geom type='box'/></worldbody></mujoco>")
    with pytest.raises(ModelError, match=re.escape(str(broken))):
        build_scene(broken)


def test_home_pose_with_an_unknown_joint_lists_the_valid_names() -> None:
    hand_mjcf = (PROFILE_TOML.parent / _profile()["mjcf"]).resolve()
    with pytest.raises(ModelError, match="if_abd"):
        build_scene(hand_mjcf, {"index_mcp": 0.3})


def test_the_scenes_physics_options_win_over_the_hands_said_once_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand file with an <option> of its own (Menagerie's LEAP hand sets impratio 100) warns nothing."""
    import logging
    import warnings

    from handrail.sim.model import DEFAULT_HAND_XML

    text = DEFAULT_HAND_XML.read_text()
    compiler = '<compiler angle="radian" autolimits="true"/>'
    assert compiler in text
    hand = tmp_path / "hand_with_options.xml"
    hand.write_text(text.replace(compiler, compiler + '\n  <option impratio="100" timestep="0.005"/>'))
    scene_options = build_scene(DEFAULT_HAND_XML).opt
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, "handrail.sim.model"):
        warnings.simplefilter("always")
        model = build_scene(hand)
        build_scene(hand)
    assert not [str(w.message) for w in caught if "Attach conflict" in str(w.message)]
    assert (model.opt.impratio, model.opt.timestep) == (scene_options.impratio, scene_options.timestep) == (10, 0.002)
    told = [record.getMessage() for record in caplog.records if "sets physics options" in record.getMessage()]
    assert len(told) == 1, told
    assert "impratio: scene has 10, hand has 100" in told[0] and "the scene's win" in told[0]
