"""Build the simulated world: the scene (floor, stand, cube, cameras) with a hand MJCF attached palm-up.

The hand may be any MJCF whose joints and actuators carry the names in :mod:`handrail.sim.leap` (ours,
``sim/models/leap_hand.xml``, or e.g. a MuJoCo Menagerie LEAP hand); it is attached with MuJoCo's
``MjSpec.attach`` at the scene's ``hand_mount`` site, so its own defaults, assets and contact
exclusions come along and its names are kept unprefixed.
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import mujoco
import numpy as np

from handrail.errors import HandrailError
from handrail.robot.profile import MountSpec
from handrail.sim import leap

if TYPE_CHECKING:
    from handrail.robot.profile import HandProfile

SCENE_XML = Path(__file__).parent / "models" / "scene.xml"
DEFAULT_HAND_XML = Path(__file__).parent / "models" / "leap_hand.xml"

# Long enough for the dropped cube to come to rest (it starts 0.5 mm above the palm) and short enough
# to keep build_scene cheap: 500 steps at the scene's 2 ms timestep.
_CUBE_SETTLE_S = 1.0
# A cube that ends this far below where the scene placed it has fallen off the hand.
_CUBE_FELL_M = 0.03

_EMPTY_PREFIX_WARNING = "Attaching a spec with an empty prefix"
# MuJoCo's warning when the hand's <option> (timestep, impratio, integrator, ...) differs from the scene's; it
# keeps the scene's (the parent's) values, and so do we: said once per hand file, at INFO.
_ATTACH_CONFLICT_WARNING = "Attach conflict"
_LOG = logging.getLogger(__name__)
_hands_told_about_options: set[str] = set()


class ModelError(HandrailError):
    """The scene or a hand MJCF could not be loaded, compiled or given its home pose."""


class CubePose(NamedTuple):
    """Pose of the cube body in the world frame."""

    position_m: np.ndarray  # (3,) [m]
    quat_wxyz: np.ndarray  # (4,) unit quaternion, w first


def build_scene(
    hand_mjcf: Path,
    home_rad: Mapping[str, float] | None = None,
    joint_names: Sequence[str] = leap.JOINT_NAMES,
    mount: MountSpec | None = None,
    fingertips: Sequence[str] = leap.FINGERTIP_SITE_NAMES,
    servo_mechanics: Mapping[str, tuple[float, float]] | None = None,
) -> mujoco.MjModel:
    """Compile the scene with ``hand_mjcf`` attached palm-up and a ``home`` keyframe.

    Args:
        hand_mjcf: path to the hand's MJCF; its joints must carry :data:`leap.JOINT_NAMES`.
        home_rad: joint name -> home angle [rad]; joints left out are 0. In the keyframe the hand's
            joints are at these angles, position actuators command them, and the cube lies at rest on
            the palm (found by letting it settle for ``_CUBE_SETTLE_S`` under the home commands).
        mount: where the hand MJCF's world frame goes in the hand frame (default: onto it).
        fingertips: the hand's fingertips, each a site, geom or body name; the scene gets a site
            :func:`fingertip_site_name` for each (the named site itself, else one at the geom's centre or the
            body's origin).
        servo_mechanics: MJCF joint -> (armature [kg·m²], frictionloss [N·m]) of the servo that drives it; a
            joint gets at least these (a model that leaves the servo's mechanics out gets them, one that has
            more keeps its own).

    Raises:
        ModelError: the file is missing or does not compile, a joint name is unknown, a home angle is
            outside its joint's range, a fingertip names nothing in the hand, or the cube does not stay on
            the palm at the home pose.

    ``joint_names`` are the hand's actuated MJCF joints (a profile's ``mjcf_joint`` names); they must
    all exist in ``hand_mjcf``.
    """
    hand_mjcf = Path(hand_mjcf)
    home_rad = dict(home_rad or {})
    mount = mount or MountSpec()
    scene_spec = _load_spec(SCENE_XML, "the scene")
    hand_spec = _load_spec(hand_mjcf, "the hand")

    for name, (armature, frictionloss) in (servo_mechanics or {}).items():
        joint = hand_spec.joint(name)
        if joint is not None:  # a missing joint is reported below, with the others
            joint.armature = max(joint.armature, armature)
            joint.frictionloss = max(joint.frictionloss, frictionloss)
    with _scene_options_win(hand_mjcf), _muted_mujoco_warning(_EMPTY_PREFIX_WARNING):
        attach_hand(scene_spec, hand_spec, mount)
        model = _compile(scene_spec, hand_mjcf)
    if _add_fingertip_sites(scene_spec, model, fingertips, hand_mjcf):
        with _scene_options_win(hand_mjcf), _muted_mujoco_warning(_EMPTY_PREFIX_WARNING):
            model = _compile(scene_spec, hand_mjcf)

    home_qpos = _home_qpos(model, home_rad, hand_mjcf, tuple(joint_names))
    home_ctrl = _position_commands(model, home_qpos)
    home_qpos = _settle_cube(model, home_qpos, home_ctrl, hand_mjcf)

    scene_spec.add_key(name=leap.HOME_KEYFRAME_NAME, qpos=home_qpos.tolist(), ctrl=home_ctrl.tolist())
    with _scene_options_win(hand_mjcf), _muted_mujoco_warning(_EMPTY_PREFIX_WARNING):
        return _compile(scene_spec, hand_mjcf)


def attach_hand(scene_spec: mujoco.MjSpec, hand_spec: mujoco.MjSpec, mount: MountSpec | None = None) -> None:
    """Attach ``hand_spec`` to the scene's ``hand_mount`` site with its world frame at ``mount`` (in the site's frame).

    No prefix: the profile, the policy and leap.JOINT_NAMES use the hand's own names (MuJoCo warns that saving
    may then clash on names; the scene's names are chosen not to clash with a hand's).
    """
    mount = mount or MountSpec()
    mount_site = scene_spec.site(leap.HAND_MOUNT_SITE_NAME)
    if mount_site is None:
        raise ModelError(f"{SCENE_XML}: no site '{leap.HAND_MOUNT_SITE_NAME}' to attach the hand to")
    frame_position = np.zeros(3)
    mujoco.mju_rotVecQuat(frame_position, np.asarray(mount.position_m, dtype=float), np.asarray(mount_site.quat))
    frame_quat = np.zeros(4)
    mujoco.mju_mulQuat(frame_quat, np.asarray(mount_site.quat), np.asarray(mount.quat_wxyz, dtype=float))
    frame = mount_site.parent.add_frame(pos=np.asarray(mount_site.pos) + frame_position, quat=frame_quat)
    hand_bodies = [body.name for body in hand_spec.bodies if body.name and body.name != "world"]
    scene_spec.attach(hand_spec, prefix="", frame=frame)
    # The stand holds the hand rigidly: it never touches the hand's own links (a thumb hung lower than the
    # bundled hand's, as MuJoCo Menagerie's LEAP hand's is, would otherwise rest on the stand post).
    for body in hand_bodies:
        scene_spec.add_exclude(bodyname1=mount_site.parent.name, bodyname2=body)


def build_scene_for_profile(profile: "HandProfile") -> mujoco.MjModel:
    """The scene with the profile's hand MJCF, its joint names, home pose, mount, fingertips and servo mechanics."""
    return build_scene(
        profile.mjcf,
        home_rad={joint.mjcf_joint: joint.home_rad for joint in profile.joints},
        joint_names=[joint.mjcf_joint for joint in profile.joints],
        mount=profile.mount,
        fingertips=profile.fingertips,
        servo_mechanics=servo_mechanics(profile),
    )


def servo_mechanics(profile: "HandProfile") -> dict[str, tuple[float, float]]:
    """MJCF joint -> (armature, frictionloss) of its servo at the joint: the motor's figures through the gear."""
    from handrail.robot.motors import motor_facts

    facts = motor_facts(profile.bus.motor_model)
    return {
        joint.mjcf_joint: (
            facts.reflected_inertia_kg_m2 * joint.gear_ratio**2,
            facts.gear_friction_nm * joint.gear_ratio,
        )
        for joint in profile.joints
    }


_TIP_SITE_PREFIX = "handrail_tip_"


def fingertip_site_name(model: mujoco.MjModel, fingertip: str) -> str:
    """The scene site that stands for ``fingertip`` (a profile's fingertip name) in a scene from build_scene."""
    added = _TIP_SITE_PREFIX + fingertip
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, added) >= 0:
        return added
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, fingertip) >= 0:
        return fingertip
    raise ModelError(f"fingertip {fingertip!r} has no site in this scene — build it with build_scene(fingertips=...)")


def _add_fingertip_sites(
    spec: mujoco.MjSpec, model: mujoco.MjModel, fingertips: Sequence[str], hand_mjcf: Path
) -> bool:
    """Give every fingertip named by a geom or a body a site there; False when all are sites already."""
    added = False
    for name in fingertips:
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name) >= 0:
            continue
        geom_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if geom_id >= 0:
            # The compiled geom centre (a mesh geom's frame moves to its mesh's centre on compile).
            body_id, position = int(model.geom_bodyid[geom_id]), model.geom_pos[geom_id].copy()
        elif body_id >= 0:
            position = np.zeros(3)
        else:
            raise ModelError(
                f"hand {hand_mjcf}: fingertip {name!r} is no site, geom or body of it — set the profile's "
                "`fingertips` to the names of the hand's fingertip sites, geoms or bodies"
            )
        body = spec.body(model.body(body_id).name)
        body.add_site(name=_TIP_SITE_PREFIX + name, pos=position, size=[0.003, 0, 0], group=4)
        added = True
    return added


def cube_pose(model: mujoco.MjModel, data: mujoco.MjData) -> CubePose:
    """The cube's pose in the world frame, as of the last ``mj_forward``/``mj_step`` on ``data``."""
    cube_id = model.body(leap.CUBE_BODY_NAME).id
    return CubePose(position_m=data.xpos[cube_id].copy(), quat_wxyz=data.xquat[cube_id].copy())


def camera_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """Names of the model's cameras, in camera id order."""
    return tuple(model.camera(camera_id).name for camera_id in range(model.ncam))


def _load_spec(path: Path, what: str) -> mujoco.MjSpec:
    if not path.is_file():
        raise ModelError(
            f"{what} MJCF {path}: no such file — check the profile's `mjcf` path "
            f"(relative paths resolve from the profile's folder)"
        )
    try:
        return mujoco.MjSpec.from_file(str(path))
    except (ValueError, mujoco.FatalError) as error:
        raise ModelError(
            f"{what} MJCF {path}: MuJoCo could not parse it: {error} — fix the XML at the place named"
        ) from error


def _compile(spec: mujoco.MjSpec, hand_mjcf: Path) -> mujoco.MjModel:
    try:
        return spec.compile()
    except (ValueError, mujoco.FatalError) as error:
        raise ModelError(
            f"scene with hand {hand_mjcf}: MuJoCo could not compile it: {error} — fix the hand MJCF "
            f"(missing mesh files, duplicate names, joints without ranges) and try again"
        ) from error


def _home_qpos(
    model: mujoco.MjModel, home_rad: Mapping[str, float], hand_mjcf: Path, joint_names: tuple[str, ...]
) -> np.ndarray:
    """qpos0 with the hand's joints at ``home_rad``, checked against the joints' names and ranges."""
    missing = [name for name in joint_names if _joint_id(model, name) < 0]
    if missing:
        raise ModelError(
            f"hand {hand_mjcf}: no joints named {missing}; this hand MJCF needs joints {list(joint_names)}"
        )
    qpos = model.qpos0.copy()
    for name, angle_rad in home_rad.items():
        joint_id = _joint_id(model, name)
        if joint_id < 0 or name not in joint_names:
            raise ModelError(f"home pose: unknown joint '{name}'; valid joints: {list(joint_names)}")
        low_rad, high_rad = model.jnt_range[joint_id]
        if model.jnt_limited[joint_id] and not low_rad <= angle_rad <= high_rad:
            raise ModelError(
                f"home pose: {name} = {angle_rad:.3f} rad is outside the joint range "
                f"[{low_rad:.3f}, {high_rad:.3f}] rad in {hand_mjcf} — pick a home angle inside it"
            )
        qpos[model.jnt_qposadr[joint_id]] = angle_rad
    return qpos


def _position_commands(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """Controls that hold ``qpos``: each position servo commands its joint's angle, others get 0."""
    ctrl = np.zeros(model.nu)
    for actuator_id in range(model.nu):
        is_joint_servo = (
            model.actuator_trntype[actuator_id] == mujoco.mjtTrn.mjTRN_JOINT
            and model.actuator_biastype[actuator_id] == mujoco.mjtBias.mjBIAS_AFFINE
            and model.actuator_biasprm[actuator_id, 1] == -model.actuator_gainprm[actuator_id, 0]
        )
        if is_joint_servo:
            joint_id = model.actuator_trnid[actuator_id, 0]
            ctrl[actuator_id] = qpos[model.jnt_qposadr[joint_id]]
    if model.nu:
        ctrl = np.clip(ctrl, model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1])
    return ctrl


def _settle_cube(model: mujoco.MjModel, qpos: np.ndarray, ctrl: np.ndarray, hand_mjcf: Path) -> np.ndarray:
    """``qpos`` with the cube's free joint where the cube comes to rest on the palm under ``ctrl``."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    data.ctrl[:] = ctrl
    mujoco.mj_forward(model, data)
    start_position_m = cube_pose(model, data).position_m
    for _ in range(round(_CUBE_SETTLE_S / model.opt.timestep)):
        mujoco.mj_step(model, data)
    rest_position_m = cube_pose(model, data).position_m
    if start_position_m[2] - rest_position_m[2] > _CUBE_FELL_M:
        raise ModelError(
            f"hand {hand_mjcf}: the cube fell off the palm at the home pose (from z = "
            f"{start_position_m[2]:.3f} m to {rest_position_m[2]:.3f} m) — check that the hand's frame "
            f"has the palm facing +z at z = 0 and that the home pose keeps the fingers off the cube"
        )
    cube_qpos_address = model.jnt_qposadr[_joint_id(model, leap.CUBE_JOINT_NAME)]
    settled = qpos.copy()
    settled[cube_qpos_address : cube_qpos_address + 7] = data.qpos[cube_qpos_address : cube_qpos_address + 7]
    return settled


def _joint_id(model: mujoco.MjModel, name: str) -> int:
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)


@contextlib.contextmanager
def _scene_options_win(hand_mjcf: Path) -> Iterator[None]:
    """The scene's physics options win over the hand MJCF's <option>: said once per file at INFO, not warned.

    The physics is the scene's, then the training simulator's or the virtual hand's choice (timestep,
    integrator, solver, impratio); a hand file pulled from elsewhere (MuJoCo Menagerie's sets impratio 100)
    does not change it. Other warnings pass on unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    conflicts: list[str] = []
    for item in caught:
        text = str(item.message)
        # Two forms: the compiler's warning (with a line per option) and MuJoCo's C-level one (first line).
        if text.removeprefix("MuJoCo: ").startswith(_ATTACH_CONFLICT_WARNING):
            conflicts.extend(text.splitlines()[1:])
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    key = str(Path(hand_mjcf).resolve())
    if not conflicts or key in _hands_told_about_options:
        return
    _hands_told_about_options.add(key)
    # Lines like "impratio: parent has 10, child has 100, keeping parent value".
    details = dict.fromkeys(
        line.split(", keeping")[0].replace("parent has", "scene has").replace("child has", "hand has")
        for line in conflicts
        if line.strip()
    )
    _LOG.info("hand MJCF %s sets physics options of its own; the scene's win (%s)", hand_mjcf, "; ".join(details))


@contextlib.contextmanager
def _muted_mujoco_warning(prefix: str) -> Iterator[None]:
    """Swallow MuJoCo warnings that start with ``prefix``; pass other C-level ones on as Python warnings."""

    def on_warning(message: str) -> None:
        if not message.startswith(prefix):
            warnings.warn(f"MuJoCo: {message}", stacklevel=2)

    previous_handler = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(on_warning)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=prefix, category=UserWarning)
            yield
    finally:
        mujoco.set_mju_user_warning(previous_handler)
