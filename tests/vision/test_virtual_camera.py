"""VirtualCamera: renders at given intrinsics and extrinsics land where a pinhole camera puts them."""

import cv2
import mujoco
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handrail.sim import leap
from handrail.sim.model import SCENE_XML
from handrail.vision.camera import CameraError, CameraNotFoundError, Intrinsics
from handrail.vision.cube_markers import CUBE_MARKERS
from handrail.vision.transforms import (
    T_world_body,
    T_world_site,
    invert_pose,
    look_at,
    pose_matrix,
    transform_points,
)
from handrail.vision.virtual_camera import ImageNoise, VirtualCamera, intrinsics_of_gl_camera, set_gl_camera

# Off-centre principal point and non-square pixels, so a swapped or mirrored term shows.
ODD_INTRINSICS = Intrinsics(fx=610.0, fy=585.0, cx=290.0, cy=265.0, width=640, height=480)
SMALL_INTRINSICS = Intrinsics(fx=150.0, fy=150.0, cx=79.5, cy=59.5, width=160, height=120)
# Where the coloured band of a face is: between the marker's quiet zone (21 mm) and the patch edge (26 mm).
BAND_OFFSET_M = 0.0235
PATCH_SURFACE_M = 0.0305
MAX_MEDIAN_CORNER_ERROR_PX = 0.4


def _oblique_view(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """T_world_camera looking at the cube from above, in front and to the side, rolled by the world_up hint."""
    cube_m = T_world_body(model, data, leap.CUBE_BODY_NAME)[:3, 3]
    return look_at(cube_m + np.array([0.22, -0.14, 0.26]), cube_m, world_up=np.array([0.3, 0.1, 1.0]))


def _visible_faces(T_camera_cube: np.ndarray) -> list[str]:
    """Faces whose normals point at the camera by more than 30 degrees off grazing."""
    faces = []
    for face, _ in CUBE_MARKERS.face_marker_ids:
        centre_camera = transform_points(T_camera_cube, CUBE_MARKERS.face_center_m(face))[0]
        normal_camera = T_camera_cube[:3, :3] @ CUBE_MARKERS.face_frame(face)[:, 2]
        if -normal_camera @ centre_camera / np.linalg.norm(centre_camera) > 0.5:
            faces.append(face)
    return faces


def _median_corner_error_px(
    image_rgb: np.ndarray, intrinsics: Intrinsics, T_camera_cube: np.ndarray
) -> tuple[float, int]:
    """Median distance [px] between ArUco's corners and the layout's corners projected with ``intrinsics``, and
    the number of markers seen. The median, since a corner on a steeply tilted face may be off by a pixel."""
    detector = cv2.aruco.ArucoDetector(CUBE_MARKERS.dictionary)
    parameters = detector.getDetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    parameters.cornerRefinementWinSize = 3
    detector.setDetectorParameters(parameters)
    corners, ids, _ = detector.detectMarkers(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
    assert ids is not None, "no marker detected"
    distances = []
    for marker_corners, marker_id in zip(corners, ids.ravel(), strict=True):
        expected_px = intrinsics.project(
            transform_points(T_camera_cube, CUBE_MARKERS.corners_in_cube_frame(int(marker_id)))
        )
        distances.append(np.linalg.norm(marker_corners.reshape(4, 2) - expected_px, axis=1))
    return float(np.median(np.concatenate(distances))), len(ids)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=float)
    return rgb / max(rgb.sum(), 1e-9)


def test_a_render_at_given_intrinsics_and_pose_puts_the_cube_where_the_pinhole_model_does(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    T_world_camera = _oblique_view(scene_model, home_data)
    with VirtualCamera(scene_model, home_data, ODD_INTRINSICS, T_world_camera=T_world_camera) as camera:
        image = camera.read().image
    T_camera_cube = invert_pose(T_world_camera) @ T_world_body(scene_model, home_data, leap.CUBE_BODY_NAME)

    # The marker corners, sub-pixel: proves K (including the half-pixel convention) and the OpenCV frame.
    error_px, n_markers = _median_corner_error_px(image, ODD_INTRINSICS, T_camera_cube)
    print(f"marker corners vs projection: median {error_px:.3f} px over {n_markers} markers")
    assert n_markers >= 2
    assert error_px < MAX_MEDIAN_CORNER_ERROR_PX
    # The same check with the principal point off by one pixel fails: it can tell.
    shifted = Intrinsics(**{**ODD_INTRINSICS.__dict__, "cx": ODD_INTRINSICS.cx + 1.0})
    assert _median_corner_error_px(image, shifted, T_camera_cube)[0] > 2 * MAX_MEDIAN_CORNER_ERROR_PX

    # Each visible face's coloured band shows that face's colour where K puts it.
    faces = _visible_faces(T_camera_cube)
    assert len(faces) >= 2, faces
    for face in faces:
        _, up, normal = CUBE_MARKERS.face_frame(face).T
        band_point_cube = normal * PATCH_SURFACE_M + up * BAND_OFFSET_M
        u, v = np.rint(ODD_INTRINSICS.project(transform_points(T_camera_cube, band_point_cube))[0]).astype(int)
        face_rgb = scene_model.geom_rgba[scene_model.geom(f"cube_face_{face}").id, :3]
        distance = np.linalg.norm(_chromaticity(image[v, u]) - _chromaticity(face_rgb))
        assert distance < 0.08, f"face {face}: pixel ({u}, {v}) is {image[v, u]}, the face is {face_rgb}"


def test_a_scene_camera_renders_what_mujoco_renders_for_it(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    renderer = mujoco.Renderer(scene_model, height=240, width=320)
    try:
        for name in leap.CAMERA_NAMES:
            renderer.update_scene(home_data, camera=name)
            expected = renderer.render().astype(int)
            with VirtualCamera.from_scene_camera(scene_model, home_data, name, width=320, height=240) as camera:
                assert camera.intrinsics.cx == pytest.approx(159.5) and camera.intrinsics.cy == pytest.approx(119.5)
                fovy_rad = np.radians(scene_model.cam_fovy[scene_model.camera(name).id])
                assert camera.intrinsics.fy == pytest.approx(120.0 / np.tan(fovy_rad / 2.0))
                actual = camera.read().image.astype(int)
            # Rasterization may differ by a few levels and along a few edges, nothing more.
            differing = np.mean(np.abs(actual - expected).max(axis=2) > 8)
            assert differing < 1e-3, f"{name}: {differing:.2%} of the pixels differ"
    finally:
        renderer.close()


def test_a_scene_camera_with_sensor_intrinsics_reads_back_exactly() -> None:
    """MuJoCo's ``focalpixel``/``principalpixel`` camera: K comes out as the MJCF says, and the render matches.

    It pins MuJoCo's sign convention: ``principalpixel`` is the image centre minus OpenCV's (cx, cy).
    """
    spec = mujoco.MjSpec.from_file(str(SCENE_XML))  # the scene compiles without a hand
    camera_spec = spec.worldbody.add_camera(name="cam_intrinsic", pos=[0.45, 0.06, 0.45])
    camera_spec.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    camera_spec.alt.xyaxes = [-0.160, 0.987, 0.0, -0.446, -0.072, 0.892]
    camera_spec.resolution = [320, 240]
    camera_spec.sensor_size = [0.0048, 0.0036]
    camera_spec.focal_pixel = [300.0, 310.0]
    camera_spec.principal_pixel = [20.0, -10.0]
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, height=240, width=320)
    renderer.update_scene(data, camera="cam_intrinsic")
    expected = renderer.render().astype(int)
    renderer.close()
    with VirtualCamera.from_scene_camera(model, data, "cam_intrinsic", width=320, height=240) as camera:
        actual = camera.read().image.astype(int)
    intrinsics = camera.intrinsics
    assert (intrinsics.fx, intrinsics.fy) == pytest.approx((300.0, 310.0), rel=1e-6)
    assert (intrinsics.cx, intrinsics.cy) == pytest.approx((159.5 - 20.0, 119.5 + 10.0), abs=1e-4)
    assert np.mean(np.abs(actual - expected).max(axis=2) > 8) < 1e-3


def test_a_hand_mounted_camera_sees_what_the_same_world_pose_sees(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    T_world_camera = _oblique_view(scene_model, home_data)
    T_world_hand = T_world_site(scene_model, home_data, leap.HAND_MOUNT_SITE_NAME)
    T_hand_camera = invert_pose(T_world_hand) @ T_world_camera
    with VirtualCamera(scene_model, home_data, SMALL_INTRINSICS, T_hand_camera=T_hand_camera) as mounted:
        np.testing.assert_allclose(mounted.T_world_camera(), T_world_camera, atol=1e-12)
        mounted_image = mounted.read().image.astype(int)
    with VirtualCamera(scene_model, home_data, SMALL_INTRINSICS, T_world_camera=T_world_camera) as fixed:
        fixed_image = fixed.read().image.astype(int)
    assert np.mean(np.abs(mounted_image - fixed_image).max(axis=2) > 8) < 1e-3


def test_noise_is_seeded_and_off_by_default(scene_model: mujoco.MjModel, home_data: mujoco.MjData) -> None:
    noise = ImageNoise(exposure_gain_range=(0.7, 1.3), read_noise_std=4.0)
    T_world_camera = _oblique_view(scene_model, home_data)

    def frames(noise: ImageNoise | None, seed: int) -> list[np.ndarray]:
        camera = VirtualCamera(
            scene_model, home_data, SMALL_INTRINSICS, T_world_camera=T_world_camera, noise=noise, seed=seed
        )
        with camera:
            return [camera.read().image.astype(int) for _ in range(2)]

    clean = frames(None, seed=0)
    first, again, other_seed = frames(noise, seed=1), frames(noise, seed=1), frames(noise, seed=2)
    assert np.mean(np.abs(clean[0] - clean[1]) > 8) < 1e-3  # no noise unless asked
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other_seed[0])
    assert not np.array_equal(first[0], first[1])  # a fresh draw per frame
    residual = first[0] - clean[0]
    unclipped = (clean[0] > 40) & (clean[0] < 180)
    gain = np.median((first[0][unclipped]) / clean[0][unclipped])
    assert 0.7 <= gain <= 1.3
    assert 2.0 < np.std(residual[unclipped] - (gain - 1.0) * clean[0][unclipped]) < 8.0


def test_render_takes_any_data_and_stamps_its_simulation_time(
    scene_model: mujoco.MjModel, home_data: mujoco.MjData
) -> None:
    other = mujoco.MjData(scene_model)
    other.time = 12.5
    mujoco.mj_forward(scene_model, other)
    with VirtualCamera.from_scene_camera(scene_model, home_data, "cam_top", width=160, height=120) as camera:
        first, second = camera.render(other), camera.read()
    assert first.device_timestamp_s == 12.5 and second.device_timestamp_s == home_data.time
    assert (first.frame_index, second.frame_index) == (0, 1)
    assert first.timestamp_s <= second.timestamp_s


@given(
    fx=st.floats(50.0, 3000.0),
    fy=st.floats(50.0, 3000.0),
    cx_fraction=st.floats(0.2, 0.8),
    cy_fraction=st.floats(0.2, 0.8),
    width=st.integers(16, 1920),
    height=st.integers(16, 1080),
)
def test_intrinsics_survive_the_round_trip_through_a_gl_frustum(
    fx: float, fy: float, cx_fraction: float, cy_fraction: float, width: int, height: int
) -> None:
    intrinsics = Intrinsics(fx=fx, fy=fy, cx=cx_fraction * width, cy=cy_fraction * height, width=width, height=height)
    gl_camera = mujoco.MjvGLCamera()
    gl_camera.frustum_near = 0.0035
    set_gl_camera(gl_camera, intrinsics, pose_matrix(np.eye(3), np.zeros(3)))
    back = intrinsics_of_gl_camera(gl_camera, width, height)
    # MjvGLCamera stores float32: a relative 1e-6 is its precision.
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(back, name) == pytest.approx(getattr(intrinsics, name), rel=2e-6, abs=2e-4)


def test_refusals_name_the_problem(scene_model: mujoco.MjModel, home_data: mujoco.MjData) -> None:
    T = _oblique_view(scene_model, home_data)
    with pytest.raises(CameraNotFoundError, match=r"no camera 'cam_back'; it has \['cam_top', 'cam_side'"):
        VirtualCamera.from_scene_camera(scene_model, home_data, "cam_back")
    with pytest.raises(ValueError, match="exactly one of"):
        VirtualCamera(scene_model, home_data, SMALL_INTRINSICS, T_world_camera=T, T_hand_camera=T)
    with pytest.raises(ValueError, match="cannot apply lens distortion"):
        distorted = Intrinsics(**{**SMALL_INTRINSICS.__dict__, "distortion": (0.1, 0.0, 0.0, 0.0)})
        VirtualCamera(scene_model, home_data, distorted, T_world_camera=T)
    with pytest.raises(ValueError, match="exceeds the scene's offscreen buffer"):
        huge = Intrinsics(fx=1000.0, fy=1000.0, cx=1999.5, cy=1499.5, width=4000, height=3000)
        VirtualCamera(scene_model, home_data, huge, T_world_camera=T)
    with pytest.raises(ValueError, match="not a proper rotation"):
        mirrored = T.copy()
        mirrored[:3, 0] *= -1.0
        VirtualCamera(scene_model, home_data, SMALL_INTRINSICS, T_world_camera=mirrored)
    with pytest.raises(CameraError, match="call start"):
        VirtualCamera(scene_model, home_data, SMALL_INTRINSICS, T_world_camera=T).read()
