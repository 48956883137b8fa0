"""A calibration board in a small MuJoCo scene, for rendering views with a :class:`VirtualCamera` at known
intrinsics and poses: the virtual counterpart of holding a printed board in front of a camera.

The scene has a textured board on a mocap body (:meth:`VirtualBoardScene.set_board_pose` moves it), a
``hand_mount`` site at the world origin (so a camera can be mounted with ``T_hand_camera``), a black
background and even lighting; :func:`hand_scene_with_board` puts a board on a link of the hand scene
instead. The board's texture is :meth:`BoardSpec.image`; MuJoCo puts a 2D texture on a box's +z face with
the image's columns along the geom's +x and its top edge towards +y, so the board frame (x along columns,
y along rows, z into the board) is the geom frame turned half a turn about x.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import mujoco
import numpy as np

from handrail.calibration.board import BoardSpec
from handrail.sim import leap
from handrail.vision.camera import Intrinsics
from handrail.vision.transforms import pose_matrix, quat_wxyz_from_matrix, transform_points

if TYPE_CHECKING:
    from handrail.robot.profile import MountSpec

# Texture resolution of the printed board [px/m]: a 4 cm square gets 160 texels, several per screen pixel.
_TEXTURE_PIXELS_PER_M = 4000.0
_BOARD_THICKNESS_M = 0.002
_BODY_NAME = "board"
# Board frame in the geom frame (rotation only): x stays, y and z flip.
_R_GEOM_BOARD = np.diag([1.0, -1.0, -1.0])


def add_board(
    spec: mujoco.MjSpec, body: mujoco.MjsBody, board: BoardSpec, T_body_board: np.ndarray, margin_m: float = 0.01
) -> None:
    """Add ``board`` printed on a thin, non-colliding box to ``body`` of ``spec``, its board frame at
    ``T_body_board`` (4x4) in the body frame; texture and material are named ``board_print``."""
    image = board.image(_TEXTURE_PIXELS_PER_M, margin_m)
    height_px, width_px = image.shape
    width_m, height_m = width_px / _TEXTURE_PIXELS_PER_M, height_px / _TEXTURE_PIXELS_PER_M
    origin_x_m, origin_y_m = board.pattern_origin_m
    # The board frame's origin in the geom frame: the texture's top-left corner is at (-w/2, +h/2).
    T_geom_board = pose_matrix(
        _R_GEOM_BOARD,
        [-width_m / 2 + margin_m - origin_x_m, height_m / 2 - margin_m + origin_y_m, _BOARD_THICKNESS_M / 2],
    )
    T_body_geom = T_body_board @ np.linalg.inv(T_geom_board)
    texture = spec.add_texture(name="board_print", type=mujoco.mjtTexture.mjTEXTURE_2D)
    texture.width, texture.height, texture.nchannel = width_px, height_px, 3
    texture.data = np.repeat(image[:, :, None], 3, axis=2).tobytes()
    material = spec.add_material(name="board_print", specular=0.0, rgba=[1, 1, 1, 1])
    material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "board_print"
    body.add_geom(
        name="board_print",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[width_m / 2, height_m / 2, _BOARD_THICKNESS_M / 2],
        pos=T_body_geom[:3, 3],
        quat=quat_wxyz_from_matrix(T_body_geom[:3, :3]),
        material="board_print",
        contype=0,
        conaffinity=0,
        mass=0.0,
    )


class VirtualBoardScene:
    """A compiled scene holding ``board`` on a mocap body; ``model`` and ``data`` feed a ``VirtualCamera``.

    Args:
        board: the target to print on the board.
        margin_m: white border around the pattern [m] (detectors need a quiet zone).
        max_image_size: (width, height) of the largest render [px] (the offscreen buffer).
    """

    def __init__(self, board: BoardSpec, margin_m: float = 0.01, max_image_size: tuple[int, int] = (1280, 960)) -> None:
        self.board = board
        spec = mujoco.MjSpec()
        _even_light(spec, max_image_size)
        world = spec.worldbody
        world.add_site(name=leap.HAND_MOUNT_SITE_NAME, pos=[0, 0, 0])
        body = world.add_body(name=_BODY_NAME, mocap=True)
        add_board(spec, body, board, np.eye(4), margin_m)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._mocap_id = self.model.body(_BODY_NAME).mocapid[0]
        mujoco.mj_forward(self.model, self.data)

    def set_board_pose(self, T_world_board: np.ndarray) -> None:
        """Put the board frame at ``T_world_board`` (4x4) and forward the scene."""
        self.data.mocap_pos[self._mocap_id] = T_world_board[:3, 3]
        self.data.mocap_quat[self._mocap_id] = quat_wxyz_from_matrix(T_world_board[:3, :3])
        mujoco.mj_forward(self.model, self.data)


def hand_scene_with_board(
    board: BoardSpec,
    link_body: str,
    T_link_board: np.ndarray,
    hand_mjcf: Path | None = None,
    mount: MountSpec | None = None,
) -> mujoco.MjModel:
    """The hand scene (``sim/models/scene.xml`` with the hand attached at ``hand_mount`` at ``mount``, as
    :func:`handrail.sim.model.build_scene` builds it, without its keyframe) with ``board`` riding on the hand body
    ``link_body`` at ``T_link_board``: the virtual setup for hand-eye calibration."""
    from handrail.sim.model import DEFAULT_HAND_XML, SCENE_XML, attach_hand

    scene_spec = mujoco.MjSpec.from_file(str(SCENE_XML))
    hand_spec = mujoco.MjSpec.from_file(str(hand_mjcf or DEFAULT_HAND_XML))
    link = hand_spec.body(link_body)
    if link is None:
        raise ValueError(f"hand scene: no body {link_body!r} in {hand_mjcf or DEFAULT_HAND_XML}")
    add_board(hand_spec, link, board, T_link_board, margin_m=0.004)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attaching a spec with an empty prefix")
        attach_hand(scene_spec, hand_spec, mount)
        return scene_spec.compile()


def _even_light(spec: mujoco.MjSpec, max_image_size: tuple[int, int]) -> None:
    spec.visual.global_.offwidth, spec.visual.global_.offheight = max_image_size
    spec.visual.headlight.ambient = [0.6, 0.6, 0.6]
    spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    spec.visual.quality.offsamples = 8


def random_board_poses(
    board: BoardSpec,
    intrinsics: Intrinsics,
    n_poses: int,
    rng: np.random.Generator,
    *,
    distance_m: tuple[float, float] = (0.35, 0.65),
    max_tilt_deg: float = 45.0,
    edge_margin_px: float = 15.0,
) -> list[np.ndarray]:
    """``n_poses`` poses ``T_camera_board`` (4x4) that keep every board corner in view, tilted up to
    ``max_tilt_deg`` about a random in-plane axis, at a random distance, aimed at random points of the image.

    Raises:
        ValueError: no such pose found in many tries (the board does not fit the view at that distance).
    """
    corners_m = board.corners_m.astype(float)
    width_m, height_m = board.pattern_size_m
    origin_m = np.array([*board.pattern_origin_m, 0.0])
    centre_m = origin_m + np.array([width_m / 2, height_m / 2, 0.0])
    poses: list[np.ndarray] = []
    for _ in range(2000 * n_poses):
        if len(poses) == n_poses:
            return poses
        depth_m = rng.uniform(*distance_m)
        pixel = rng.uniform(
            [0.15 * intrinsics.width, 0.15 * intrinsics.height], [0.85 * intrinsics.width, 0.85 * intrinsics.height]
        )
        ray = np.array([(pixel[0] - intrinsics.cx) / intrinsics.fx, (pixel[1] - intrinsics.cy) / intrinsics.fy, 1.0])
        tilt_axis = np.array([*rng.normal(size=2), 0.0])
        tilt_axis *= np.radians(rng.uniform(10.0, max_tilt_deg)) / np.linalg.norm(tilt_axis)
        spin_rad = rng.uniform(-0.5, 0.5)
        rotation = cv2.Rodrigues(tilt_axis)[0] @ cv2.Rodrigues(np.array([0.0, 0.0, spin_rad]))[0]
        T_camera_board = pose_matrix(rotation, ray * depth_m - rotation @ centre_m)
        corners_camera = transform_points(T_camera_board, corners_m)
        pixels = intrinsics.project(corners_camera)
        inside = (
            np.all(corners_camera[:, 2] > 0.05)
            and np.all(pixels >= edge_margin_px)
            and np.all(pixels[:, 0] <= intrinsics.width - edge_margin_px)
            and np.all(pixels[:, 1] <= intrinsics.height - edge_margin_px)
        )
        # The board's printed face must face the camera: its z (into the board) points away from the camera.
        if inside and (rotation[:, 2] @ (T_camera_board[:3, 3] + rotation @ centre_m)) > 0:
            poses.append(T_camera_board)
    raise ValueError(f"random_board_poses: found only {len(poses)} of {n_poses} poses with {board} in view")
