"""The scene draws the marker layout that the fiducial baseline assumes, from the committed textures."""

from pathlib import Path

import cv2
import mujoco
import numpy as np
import pytest

from handrail.sim import leap
from handrail.sim.model import SCENE_XML
from handrail.vision.cube_markers import CUBE_MARKERS, CubeMarkerLayout, texture_path, write_textures


def test_the_committed_textures_are_what_the_layout_generates(tmp_path: Path) -> None:
    for fresh in write_textures(tmp_path):
        committed = SCENE_XML.parent / fresh.name
        assert committed.is_file(), f"{committed} is missing — run: python -m handrail.vision.cube_markers sim/models"
        np.testing.assert_array_equal(cv2.imread(str(committed)), cv2.imread(str(fresh)), err_msg=committed.name)


def test_each_face_texture_decodes_to_its_own_marker_id() -> None:
    detector = cv2.aruco.ArucoDetector(CUBE_MARKERS.dictionary)
    for face, marker_id in CUBE_MARKERS.face_marker_ids:
        # Pad with white, as the coloured patch around the printed square is lighter than the marker border.
        texture = cv2.copyMakeBorder(CUBE_MARKERS.texture(face), 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255)
        _, ids, _ = detector.detectMarkers(texture)
        assert ids is not None and ids.ravel().tolist() == [marker_id], face


def test_the_scene_places_each_marker_box_where_the_layout_says(scene_model: mujoco.MjModel) -> None:
    cube_id = scene_model.body(leap.CUBE_BODY_NAME).id
    for face, _ in CUBE_MARKERS.face_marker_ids:
        geom = scene_model.geom(f"cube_marker_{face}")
        assert geom.bodyid[0] == cube_id
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, geom.quat)
        # The geom's x, y, z axes are the face's right, up and normal: the texture's right, top and outside.
        np.testing.assert_allclose(rotation.reshape(3, 3), CUBE_MARKERS.face_frame(face), atol=1e-9, err_msg=face)
        half_width_m, _, half_thickness_m = geom.size
        assert half_width_m == pytest.approx(CUBE_MARKERS.textured_half_edge_m)
        top_surface_m = geom.pos + CUBE_MARKERS.face_frame(face)[:, 2] * half_thickness_m
        np.testing.assert_allclose(top_surface_m, CUBE_MARKERS.face_center_m(face), atol=1e-9, err_msg=face)
        # Drawn only: no collisions, no mass.
        assert geom.contype[0] == 0 and geom.conaffinity[0] == 0
        texture_id = scene_model.mat_texid[geom.matid[0], mujoco.mjtTextureRole.mjTEXROLE_RGB]
        assert scene_model.texture(texture_id).name == texture_path(Path(), face).stem


def test_the_markers_leave_the_cube_body_as_it_was(scene_model: mujoco.MjModel) -> None:
    cube = scene_model.body(leap.CUBE_BODY_NAME)
    assert cube.mass[0] == pytest.approx(0.09)
    colliding = [
        scene_model.geom(g).name
        for g in np.flatnonzero(scene_model.geom_bodyid == cube.id)
        if scene_model.geom_contype[g] or scene_model.geom_conaffinity[g]
    ]
    assert colliding == [leap.CUBE_GEOM_NAME]
    np.testing.assert_allclose(scene_model.geom(leap.CUBE_GEOM_NAME).size, [0.03, 0.03, 0.03])


def test_a_layout_without_one_id_per_face_is_refused() -> None:
    with pytest.raises(ValueError, match="one distinct marker id for each face"):
        CubeMarkerLayout(face_marker_ids=(("px", 0), ("nx", 0), ("py", 2), ("ny", 3), ("pz", 4), ("nz", 5)))
