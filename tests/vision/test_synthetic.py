"""Synthetic renders: the CLI writes shards and a manifest, labels match the pixels, resuming skips finished work."""

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from handrail.cli_vision import main
from handrail.vision.crop_view import CropView
from handrail.vision.dataset import DatasetError, check_disjoint, load_samples, read_manifest, render_dataset
from handrail.vision.render_config import CUBE_EDGE_M, RenderConfig
from handrail.vision.synthetic import SyntheticRenderer
from handrail.vision.transforms import matrix_from_quat_wxyz

N_CHECKED = 12


def test_the_cli_writes_shards_and_a_manifest(tiny_dataset: Path, tiny: SimpleNamespace) -> None:
    manifest = read_manifest(tiny_dataset)
    assert manifest.complete and manifest.n == tiny.n and manifest.seed == 0
    assert [shard["count"] for shard in manifest.shards] == [tiny.shard_size, tiny.n - tiny.shard_size]
    assert manifest.config["cameras"] == ["cam_top", "cam_side", "cam_front"]
    assert manifest.intrinsics == CropView(size_px=tiny.size_px).intrinsics
    raw = json.loads((tiny_dataset / "manifest.json").read_text())
    assert raw["config"]["randomization"]["cube_x_hand_m"] == [0.015, 0.095]  # the ranges are recorded
    samples = load_samples(tiny_dataset)
    assert samples["images"].shape == (tiny.n, tiny.size_px, tiny.size_px, 3) and samples["images"].dtype == np.uint8
    assert samples["position_m"].dtype == np.float32 and samples["position_m"].shape == (tiny.n, 3)
    np.testing.assert_allclose(np.linalg.norm(samples["quat_wxyz"], axis=1), 1.0, atol=1e-5)
    assert (samples["quat_wxyz"][:, 0] >= 0).all()
    np.testing.assert_array_equal(samples["sample_index"], np.arange(tiny.n))
    assert set(samples["camera_index"].tolist()) == {0, 1, 2}
    # The cube sits 0.3-0.5 m in front of the cameras, and is seen in nearly every render.
    assert ((samples["position_m"][:, 2] > 0.3) & (samples["position_m"][:, 2] < 0.5)).all()
    assert np.mean(samples["cube_visible_px"] > 0) > 0.9


def _cube_corners_px(position_m: np.ndarray, quat_wxyz: np.ndarray, view: CropView) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    corners_camera = position_m + (signs * CUBE_EDGE_M / 2.0) @ matrix_from_quat_wxyz(quat_wxyz).T
    return view.intrinsics.project(corners_camera)


def test_labels_put_the_cube_where_the_image_shows_it(tiny_dataset: Path) -> None:
    """The labelled centre projects onto cube pixels, and every cube pixel lies inside the labelled cube's
    silhouette (its projected corners' hull) — which checks position, orientation and intrinsics at once.

    Cube pixels come from a segmentation render of the same sample (same camera, same state): colour
    thresholds cannot tell the cube's faces from a randomly coloured floor."""
    manifest = read_manifest(tiny_dataset)
    config = RenderConfig.from_dict(manifest.config)
    samples = load_samples(tiny_dataset, limit=N_CHECKED)
    renderer = SyntheticRenderer(config)
    try:
        outcomes = []
        for index in range(N_CHECKED):
            image, label, cube_mask = renderer.render_with_mask(manifest.seed, index)
            # Rendering again, in another process, gives the stored sample bit for bit.
            np.testing.assert_array_equal(image, samples["images"][index])
            np.testing.assert_allclose(label.position_m, samples["position_m"][index], atol=1e-6)
            outcomes.append(_label_agrees(cube_mask, samples["position_m"][index], samples["quat_wxyz"][index], config))
            # A label 2 cm off is caught.
            shifted = samples["position_m"][index] + np.array([0.02, 0.0, 0.0])
            if cube_mask.sum() > 50:
                assert not all(_label_agrees(cube_mask, shifted, samples["quat_wxyz"][index], config)), index
    finally:
        renderer.close()
    centre_on_cube = [centre for centre, _ in outcomes]
    inside_hull = [inside for _, inside in outcomes]
    assert all(inside_hull)
    assert np.mean(centre_on_cube) >= 0.75  # a finger may cover the centre


def _label_agrees(
    cube_mask: np.ndarray, position_m: np.ndarray, quat_wxyz: np.ndarray, config: RenderConfig
) -> tuple[bool, bool]:
    """(the projected centre lands on cube pixels, every cube pixel is inside the projected cube)."""
    view = config.view
    centre = view.intrinsics.project(position_m[None])[0]
    column, row = round(float(centre[0])), round(float(centre[1]))
    size = view.size_px
    near_centre = cube_mask[max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2]
    centre_on_cube = 0 <= row < size and 0 <= column < size and bool(near_centre.any())
    hull = cv2.convexHull(_cube_corners_px(position_m, quat_wxyz, view).astype(np.float32))
    silhouette = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(silhouette, np.round(hull).astype(np.int32), 1)
    silhouette = cv2.dilate(silhouette, np.ones((3, 3), np.uint8))  # half a pixel of rounding either side
    return centre_on_cube, not np.any(cube_mask & (silhouette == 0))


def test_render_resumes_and_refuses_other_settings(tiny_dataset: Path, tiny: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for path in tiny_dataset.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    first, second = out / "shard_00000.npz", out / "shard_00001.npz"
    kept_mtime = first.stat().st_mtime_ns
    stored = second.read_bytes()
    second.unlink()
    args = ["--n", str(tiny.n), "--size", str(tiny.size_px), "--shard-size", str(tiny.shard_size), "--camera", "all"]
    assert main(["render", *args, "--out", str(out), "--no-progress"]) == 0
    assert first.stat().st_mtime_ns == kept_mtime  # the complete shard was skipped
    with np.load(second) as rendered_again, np.load(tiny_dataset / "shard_00001.npz") as original:
        np.testing.assert_array_equal(rendered_again["images"], original["images"])  # deterministic per seed
    assert len(stored) > 0 and read_manifest(out).complete
    with pytest.raises(DatasetError, match="seed 0 there, 5 asked"):
        render_dataset(RenderConfig.from_dict(read_manifest(out).config), tiny.n, out, seed=5, progress=False)
    assert main(["render", *args[:-2], "--camera", "cam_top", "--out", str(out), "--no-progress"]) == 2


def test_heldout_sets_must_not_share_seeds(tiny_dataset: Path, heldout_dataset: Path, tiny: SimpleNamespace) -> None:
    heldout = read_manifest(heldout_dataset)
    assert heldout.seed == tiny.heldout_seed and heldout.complete and len(heldout.shards) == 2  # rendered by 2 workers
    check_disjoint(read_manifest(tiny_dataset).summary()["seed_ranges"], heldout)
    with pytest.raises(DatasetError, match="seed 0, which the model was trained on"):
        check_disjoint(read_manifest(tiny_dataset).summary()["seed_ranges"], read_manifest(tiny_dataset))


def test_spawned_workers_render_the_same_samples_as_one_process(heldout_dataset: Path) -> None:
    manifest = read_manifest(heldout_dataset)
    stored = load_samples(heldout_dataset)
    renderer = SyntheticRenderer(RenderConfig.from_dict(manifest.config))
    try:
        for index in (0, 15):  # one from each worker's shard
            image, label = renderer.render(manifest.seed, index)
            np.testing.assert_array_equal(image, stored["images"][index])
            np.testing.assert_allclose(label.quat_wxyz, stored["quat_wxyz"][index], atol=1e-6)
    finally:
        renderer.close()
