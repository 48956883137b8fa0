"""Domain-randomized renders of the cube in and above the hand, with the cube's pose in the camera frame.

:class:`SyntheticRenderer` draws one sample from ``numpy.random.default_rng([seed, index])`` — the same
(seed, index) gives the same image and label on any machine with the same MuJoCo and GL backend, whatever
the order samples are rendered in (every randomized model field is set from the nominal model, never from
the previous sample). A sample, in the order its random numbers are drawn:

1. **camera**: one of ``cameras`` (the scene's calibrated cameras), its pose jittered in its own frame
   (position ``U(-a, a)`` per axis, rotation vector ``U(-a, a)`` per axis), then turned into the
   :class:`~handrail.vision.crop_view.CropView` aimed at the palm — the image is rendered *through the crop
   view*, at its intrinsics;
2. **hand**: each joint at ``home + u (U(soft limits) - home)``, one ``u ~ U(hand_pose_blend)`` per sample
   (from home to anywhere within the profile's soft limits); fingers occlude the cube where they happen to;
3. **cube**: uniformly random orientation; centre at ``U(cube_x_hand_m) x U(cube_y_hand_m)`` over the palm;
   resting on the palm (its lowest corner touching it) with probability ``cube_resting_probability``, else
   lifted ``U(cube_lift_m)`` above that; placements that push the cube more than
   ``max_cube_penetration_m`` into a finger are redrawn (with a new hand pose);
4. **lights**: the key spot light from a random azimuth, elevation ``U(key_light_elevation_deg)`` and
   distance, aimed at the palm; key, fill and headlight intensities, each light tinted per channel
   ``x U(1 - a, 1 + a)``;
5. **colours**: each coloured face's RGB ``+ U(-a, a)`` then ``x U(face_brightness)``; the marker paper's grey;
   the floor a random colour (plain, or its checker texture tinted); the hand's and stand's materials
   ``x U(material_brightness)``;
6. **sensor**: Gaussian blur (probability, sigma), motion blur (probability, length, random direction),
   exposure gain and read noise (:class:`~handrail.vision.virtual_camera.ImageNoise`).

Ranges live only in :class:`~handrail.vision.render_config.Randomization` (written into every dataset
manifest). Rendering needs an OpenGL context (``MUJOCO_GL=egl`` headless) in the thread that made the renderer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import mujoco
import numpy as np

from handrail.errors import HandrailError
from handrail.robot.profile import HandProfile, load_profile
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile
from handrail.sim.render import make_renderer
from handrail.vision.render_config import CUBE_EDGE_M, Randomization, RenderConfig
from handrail.vision.transforms import (
    T_world_opencv_camera_of_mujoco_camera,
    T_world_site,
    invert_pose,
    pose_matrix,
    quat_wxyz_from_matrix,
)
from handrail.vision.virtual_camera import ImageNoise, aim_headlight, set_gl_camera

CUBE_FACE_GEOM_PREFIX = "cube_face_"
CUBE_MARKER_MATERIAL_PREFIX = "cube_marker_"
FLOOR_MATERIAL = "floor"
KEY_LIGHT, FILL_LIGHT = "key", "fill"
# Materials whose brightness each sample jitters: these first (in this order, so a seed renders the bundled
# scene as it always has), then every other material of the hand's MJCF, whatever its names (Menagerie's LEAP
# hand: "black", "white") — all but the floor and the cube's markers, which get their own draws.
HAND_AND_STAND_MATERIALS = ("stand", "servo", "bracket", "palm_plate", "tip", "cube_body")


class SyntheticError(HandrailError):
    """A sample cannot be drawn with the configured ranges."""


class SampleLabel(NamedTuple):
    """Ground truth of one render. Frames: ``crop`` is the crop view's camera (OpenCV), ``hand`` the hand mount.

    ``position_m`` (3,) cube centre in the crop frame [m]; ``quat_wxyz`` (4,) cube orientation in the crop
    frame (w >= 0); ``T_hand_crop`` (4, 4) the crop camera in the hand frame; ``cube_visible_px`` how many
    pixels show the cube; ``camera_index`` into ``RenderConfig.cameras``; ``joint_qpos_rad`` (n_joints,) the
    hand's joints in profile order.
    """

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    T_hand_crop: np.ndarray
    cube_visible_px: int
    camera_index: int
    joint_qpos_rad: np.ndarray


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of a dataset rendered with ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


class SyntheticRenderer:
    """Renders randomized samples; owns its own copy of the scene model and an offscreen renderer.

    Use it from one thread (the OpenGL context belongs to the thread that made it); :meth:`close` frees it.
    """

    def __init__(self, config: RenderConfig, profile: HandProfile | None = None) -> None:
        self.config = config
        profile = profile or load_profile(config.profile)
        self.joint_names = tuple(joint.mjcf_joint for joint in profile.joints)
        self._soft_limits_rad = np.array([joint.soft_limits_rad for joint in profile.joints])
        self._home_rad = np.array([joint.home_rad for joint in profile.joints])
        model = build_scene_for_profile(profile)
        model.vis.quality.shadowsize = config.shadow_size
        self.model = model
        self.data = mujoco.MjData(model)
        mujoco.mj_resetDataKeyframe(model, self.data, model.key(leap.HOME_KEYFRAME_NAME).id)
        mujoco.mj_forward(model, self.data)
        self._home_qpos = self.data.qpos.copy()
        self._joint_qpos_addresses = np.array([model.jnt_qposadr[model.joint(name).id] for name in self.joint_names])
        self._cube_qpos_address = model.jnt_qposadr[model.joint(leap.CUBE_JOINT_NAME).id]
        self._cube_geom_id = model.geom(leap.CUBE_GEOM_NAME).id
        self._cube_body_id = model.body(leap.CUBE_BODY_NAME).id
        self._floor_geom_id = model.geom("floor").id
        self._T_world_hand = T_world_site(model, self.data, leap.HAND_MOUNT_SITE_NAME)
        self._T_world_cameras = [T_world_opencv_camera_of_mujoco_camera(model, self.data, c) for c in config.cameras]
        self._face_geom_ids = [i for i in range(model.ngeom) if model.geom(i).name.startswith(CUBE_FACE_GEOM_PREFIX)]
        self._marker_material_ids = [
            i for i in range(model.nmat) if model.mat(i).name.startswith(CUBE_MARKER_MATERIAL_PREFIX)
        ]
        self._material_ids = self._jittered_materials(model)
        self._floor_material_id = model.mat(FLOOR_MATERIAL).id
        self._key_light_id, self._fill_light_id = model.light(KEY_LIGHT).id, model.light(FILL_LIGHT).id
        self._nominal = {
            "geom_rgba": model.geom_rgba.copy(),
            "mat_rgba": model.mat_rgba.copy(),
            "mat_texid": model.mat_texid.copy(),
            "light_pos": model.light_pos.copy(),
            "light_dir": model.light_dir.copy(),
            "light_diffuse": model.light_diffuse.copy(),
        }
        self._cube_body_geoms = np.flatnonzero(model.geom_bodyid == self._cube_body_id)
        self._is_cube_geom = np.zeros(model.ngeom, dtype=bool)
        self._is_cube_geom[self._cube_body_geoms] = True
        self._intrinsics = config.view.intrinsics
        self._renderer = make_renderer(model, self._intrinsics.width, self._intrinsics.height)
        self._segmenter = make_renderer(model, self._intrinsics.width, self._intrinsics.height)
        self._segmenter.enable_segmentation_rendering()

    def render(self, seed: int, index: int) -> tuple[np.ndarray, SampleLabel]:
        """Sample ``index`` of a dataset with ``seed``: an RGB image (size, size, 3) uint8 and its label."""
        image, label, _ = self.render_with_mask(seed, index)
        return image, label

    def render_with_mask(self, seed: int, index: int) -> tuple[np.ndarray, SampleLabel, np.ndarray]:
        """As :meth:`render`, plus the cube's visible pixels (size, size) bool, from a segmentation render."""
        rng = sample_rng(seed, index)
        ranges = self.config.randomization
        camera_index = int(rng.integers(len(self.config.cameras)))
        T_world_camera = self._T_world_cameras[camera_index] @ _jitter(rng, ranges)
        T_hand_camera = invert_pose(self._T_world_hand) @ T_world_camera
        T_hand_crop = self.config.view.T_hand_crop(T_hand_camera)
        T_world_crop = self._T_world_hand @ T_hand_crop
        joint_qpos_rad = self._place_hand_and_cube(rng)
        self._randomize_lights(rng)
        self._randomize_colours(rng)
        mujoco.mj_forward(self.model, self.data)

        image = self._render_rgb(self._renderer, T_world_crop)
        image = _sensor_effects(image, rng, ranges)
        segmentation = self._render_segmentation(T_world_crop)
        object_ids, object_types = segmentation[..., 0], segmentation[..., 1]
        is_geom = (object_types == mujoco.mjtObj.mjOBJ_GEOM) & (object_ids >= 0)
        cube_mask = self._is_cube_geom[np.where(is_geom, object_ids, 0)] & is_geom

        T_world_cube = pose_matrix(self.data.xmat[self._cube_body_id].reshape(3, 3), self.data.xpos[self._cube_body_id])
        T_crop_cube = invert_pose(T_world_crop) @ T_world_cube
        label = SampleLabel(
            position_m=T_crop_cube[:3, 3].copy(),
            quat_wxyz=quat_wxyz_from_matrix(T_crop_cube[:3, :3]),
            T_hand_crop=T_hand_crop,
            cube_visible_px=int(np.count_nonzero(cube_mask)),
            camera_index=camera_index,
            joint_qpos_rad=joint_qpos_rad,
        )
        return image, label, cube_mask

    def close(self) -> None:
        self._renderer.close()
        self._segmenter.close()

    def _place_hand_and_cube(self, rng: np.random.Generator) -> np.ndarray:
        """Draw a hand pose and a cube pose that does not push into a finger; returns the joint angles [rad]."""
        ranges = self.config.randomization
        for _ in range(ranges.placement_attempts):
            blend = rng.uniform(*ranges.hand_pose_blend)
            anywhere_rad = rng.uniform(self._soft_limits_rad[:, 0], self._soft_limits_rad[:, 1])
            joint_qpos_rad = self._home_rad + blend * (anywhere_rad - self._home_rad)
            R_hand_cube = _random_rotation(rng)
            # Half the cube's extent along the palm normal: how high its centre sits when its lowest point
            # touches the palm (the hand frame's z = 0 plane).
            support_m = CUBE_EDGE_M / 2.0 * float(np.sum(np.abs(R_hand_cube[2])))
            resting = rng.uniform() < ranges.cube_resting_probability
            lift_m = 0.0005 if resting else rng.uniform(*ranges.cube_lift_m)
            position_hand_m = np.array(
                [rng.uniform(*ranges.cube_x_hand_m), rng.uniform(*ranges.cube_y_hand_m), support_m + lift_m]
            )
            self.data.qpos[:] = self._home_qpos
            self.data.qpos[self._joint_qpos_addresses] = joint_qpos_rad
            T_world_cube = self._T_world_hand @ pose_matrix(R_hand_cube, position_hand_m)
            address = self._cube_qpos_address
            self.data.qpos[address : address + 3] = T_world_cube[:3, 3]
            self.data.qpos[address + 3 : address + 7] = quat_wxyz_from_matrix(T_world_cube[:3, :3])
            mujoco.mj_forward(self.model, self.data)
            if self._cube_penetration_m() <= ranges.max_cube_penetration_m:
                return joint_qpos_rad
        raise SyntheticError(
            f"synthetic: no cube placement clear of the fingers in {ranges.placement_attempts} attempts — widen "
            "cube_x_hand_m/cube_y_hand_m/cube_lift_m or raise max_cube_penetration_m"
        )

    def _cube_penetration_m(self) -> float:
        deepest_m = 0.0
        for contact in self.data.contact[: self.data.ncon]:
            geoms = (contact.geom1, contact.geom2)
            if self._cube_geom_id in geoms and self._floor_geom_id not in geoms:
                deepest_m = max(deepest_m, -float(contact.dist))
        return deepest_m

    def _randomize_lights(self, rng: np.random.Generator) -> None:
        ranges, model, nominal = self.config.randomization, self.model, self._nominal
        roi_world = (self._T_world_hand @ np.array([*self.config.view.roi_center_hand_m, 1.0]))[:3]
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        elevation = math.radians(rng.uniform(*ranges.key_light_elevation_deg))
        towards_light = np.array(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
        model.light_pos[self._key_light_id] = roi_world + rng.uniform(*ranges.key_light_distance_m) * towards_light
        model.light_dir[self._key_light_id] = -towards_light
        for light_id, intensity_range in (
            (self._key_light_id, ranges.key_light_intensity),
            (self._fill_light_id, ranges.fill_light_intensity),
        ):
            tint = rng.uniform(1.0 - ranges.light_tint, 1.0 + ranges.light_tint, size=3)
            model.light_diffuse[light_id] = rng.uniform(*intensity_range) * tint
        model.light_pos[self._fill_light_id] = nominal["light_pos"][self._fill_light_id]
        model.light_dir[self._fill_light_id] = nominal["light_dir"][self._fill_light_id]
        headlight = model.vis.headlight
        headlight.ambient[:] = rng.uniform(*ranges.headlight_ambient) * rng.uniform(
            1.0 - ranges.light_tint, 1.0 + ranges.light_tint, size=3
        )
        headlight.diffuse[:] = rng.uniform(*ranges.headlight_diffuse) * np.ones(3)

    def _randomize_colours(self, rng: np.random.Generator) -> None:
        ranges, model, nominal = self.config.randomization, self.model, self._nominal
        model.geom_rgba[:] = nominal["geom_rgba"]
        model.mat_rgba[:] = nominal["mat_rgba"]
        model.mat_texid[:] = nominal["mat_texid"]
        for geom_id in self._face_geom_ids:
            rgb = nominal["geom_rgba"][geom_id, :3] + rng.uniform(
                -ranges.face_colour_jitter, ranges.face_colour_jitter, 3
            )
            model.geom_rgba[geom_id, :3] = np.clip(rgb * rng.uniform(*ranges.face_brightness), 0.0, 1.0)
        grey = rng.uniform(*ranges.marker_grey)
        for material_id in self._marker_material_ids:
            model.mat_rgba[material_id, :3] = grey
        model.mat_rgba[self._floor_material_id, :3] = rng.uniform(*ranges.floor_colour, size=3)
        if rng.uniform() < ranges.floor_plain_probability:
            model.mat_texid[self._floor_material_id] = -1
        for material_id in self._material_ids:
            rgb = nominal["mat_rgba"][material_id, :3] * rng.uniform(*ranges.material_brightness)
            model.mat_rgba[material_id, :3] = np.clip(rgb, 0.0, 1.0)

    def _jittered_materials(self, model: mujoco.MjModel) -> list[int]:
        names = [model.mat(i).name for i in range(model.nmat)]
        first = [names.index(name) for name in HAND_AND_STAND_MATERIALS if name in names]
        own = {FLOOR_MATERIAL, *HAND_AND_STAND_MATERIALS}
        rest = [i for i, name in enumerate(names) if name not in own and i not in self._marker_material_ids]
        return first + rest

    def _render_rgb(self, renderer: mujoco.Renderer, T_world_crop: np.ndarray) -> np.ndarray:
        # mjv_updateScene lays the infinite floor out around the scene's camera *as it was*, i.e. the one set
        # for the previous sample; aiming before as well as after keeps a sample independent of the one before.
        for gl_camera in renderer.scene.camera:
            set_gl_camera(gl_camera, self._intrinsics, T_world_crop)
        renderer.update_scene(self.data)
        for gl_camera in renderer.scene.camera:
            set_gl_camera(gl_camera, self._intrinsics, T_world_crop)
        aim_headlight(renderer.scene, T_world_crop)
        return renderer.render()

    def _render_segmentation(self, T_world_crop: np.ndarray) -> np.ndarray:
        return self._render_rgb(self._segmenter, T_world_crop)


def _jitter(rng: np.random.Generator, ranges: Randomization) -> np.ndarray:
    """A small rigid motion (4x4) in the camera's own frame: the calibrated pose's uncertainty and mount play."""
    rotation_vector = np.radians(rng.uniform(-ranges.camera_rotation_jitter_deg, ranges.camera_rotation_jitter_deg, 3))
    rotation, _ = cv2.Rodrigues(rotation_vector)
    translation_m = rng.uniform(-ranges.camera_position_jitter_m, ranges.camera_position_jitter_m, 3)
    return pose_matrix(rotation, translation_m)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation (3x3) uniform over SO(3) (a normalized Gaussian quaternion)."""
    quat = rng.normal(size=4)
    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, quat / np.linalg.norm(quat))
    return rotation.reshape(3, 3)


def _sensor_effects(image: np.ndarray, rng: np.random.Generator, ranges: Randomization) -> np.ndarray:
    """Optical blur, then motion blur, then exposure and read noise (the order light meets them)."""
    if rng.uniform() < ranges.blur_probability:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(*ranges.blur_sigma_px))
    if rng.uniform() < ranges.motion_blur_probability:
        image = _motion_blur(image, rng.uniform(*ranges.motion_blur_length_px), rng.uniform(0.0, math.pi))
    noise = ImageNoise(exposure_gain_range=ranges.exposure_gain, read_noise_std=rng.uniform(*ranges.read_noise_std))
    return noise.apply(image, rng)


def _motion_blur(image: np.ndarray, length_px: float, angle_rad: float) -> np.ndarray:
    size = 2 * math.ceil(length_px / 2.0) + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = size // 2
    offset = np.array([math.cos(angle_rad), math.sin(angle_rad)]) * length_px / 2.0
    cv2.line(
        kernel,
        (round(centre - offset[0]), round(centre - offset[1])),
        (round(centre + offset[0]), round(centre + offset[1])),
        1.0,
        thickness=1,
        lineType=cv2.LINE_AA,
    )
    return cv2.filter2D(image, -1, kernel / kernel.sum())
