"""Synthetic datasets on disk: shards of renders plus a JSON manifest; rendered in parallel, resumable.

Layout of a dataset folder::

    manifest.json        format, version, seed, n, shard size, the render config, the stored images'
                         intrinsics, the labels' frames, per-shard counts, render time, complete or not
    shard_00000.npz      samples [0, shard_size), then [shard_size, 2 shard_size), ...

A shard (``numpy.savez``, uncompressed) holds, for its ``k`` samples (S = the crop view's size)::

    images              (k, S, S, 3) uint8       RGB crop-view renders (handrail.vision.crop_view)
    position_m          (k, 3) float32           cube centre in the crop camera frame (OpenCV) [m]
    quat_wxyz           (k, 4) float32           cube orientation in the crop camera frame, w >= 0
    T_hand_crop         (k, 4, 4) float32        the crop camera in the hand frame
    cube_visible_px     (k,) int32               pixels that show the cube (0: hidden or out of view)
    camera_index        (k,) int16               index into the manifest's config.cameras
    joint_qpos_rad      (k, n_joints) float32    the hand's joints, profile order
    sample_index        (k,) int64               the sample's generator is default_rng([seed, sample_index])
    config_fingerprint  () str                   the manifest's; a shard of another config is rendered again

Resuming: :func:`render_dataset` on an existing folder with the same config and seed keeps every shard
that loads and has the right count, and renders the rest (``n`` may grow). A different config or seed is
refused. Shards are written to a temporary name and renamed, so a killed run leaves no half shard.

Held-out sets: render with another ``--seed``. Sample ``i`` of seed ``s`` is a function of ``(s, i)``
alone, so two datasets share samples only if they share a seed; :func:`check_disjoint` refuses that.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from handrail.errors import HandrailError
from handrail.vision.camera import Intrinsics
from handrail.vision.render_config import RenderConfig

DATASET_FORMAT = "handrail-vision-dataset"
DATASET_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_SIZE = 256
LABEL_KEYS = ("position_m", "quat_wxyz", "T_hand_crop", "cube_visible_px", "camera_index", "joint_qpos_rad")


class DatasetError(HandrailError):
    """A dataset folder is missing, malformed, or does not match what it is used for."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A dataset's manifest (``manifest.json``), as read back."""

    path: Path
    seed: int
    n: int
    shard_size: int
    config: dict[str, Any]
    config_fingerprint: str
    intrinsics: Intrinsics
    shards: tuple[dict[str, Any], ...]
    complete: bool
    raw: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def summary(self) -> dict[str, Any]:
        """What a pose model's metadata records about the data it was trained on."""
        return {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "seed_ranges": [[self.seed, 0, self.n]],
            "n": self.n,
            "cameras": list(self.config["cameras"]),
            "config_fingerprint": self.config_fingerprint,
            "render_seconds": self.raw.get("render_seconds"),
            "randomization": self.config["randomization"],
        }


def config_fingerprint(config_dict: dict[str, Any]) -> str:
    """A short hash of a render config (its JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode()).hexdigest()[:16]


def shard_name(shard_index: int) -> str:
    return f"shard_{shard_index:05d}.npz"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """(start, stop) sample indices of each shard of an ``n``-sample dataset."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def render_dataset(
    config: RenderConfig,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    workers: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
) -> Manifest:
    """Render ``n`` samples of ``config`` into ``out`` (see :mod:`handrail.vision.synthetic` for what a sample is).

    ``workers`` > 1 renders shards in that many spawned processes, each with its own renderer; the result is
    the same as with one. Returns the manifest, written complete.

    Raises:
        DatasetError: ``out`` holds a dataset of another config, seed or shard size (the message says which);
            or a worker failed (its error is in the message).
    """
    if n < 1 or shard_size < 1 or workers < 1:
        raise DatasetError(f"render: need n >= 1, shard_size >= 1 and workers >= 1, got {n}, {shard_size}, {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = config.as_dict()
    fingerprint = config_fingerprint(config_dict)
    manifest_path = out / MANIFEST_NAME
    previous_seconds = 0.0
    if manifest_path.exists():
        previous = read_manifest(out)
        _check_resumable(previous, seed, shard_size, fingerprint)
        previous_seconds = float(previous.raw.get("render_seconds") or 0.0)

    ranges = shard_ranges(n, shard_size)
    todo = [
        (index, start, stop)
        for index, (start, stop) in enumerate(ranges)
        if not _shard_is_complete(out / shard_name(index), stop - start, fingerprint)
    ]
    _write_manifest(out, config, fingerprint, seed, n, shard_size, ranges, complete=False, seconds=previous_seconds)
    started_s = time.monotonic()
    done_before = n - sum(stop - start for _, start, stop in todo)
    with tqdm(total=n, initial=done_before, unit="img", desc="render", disable=not progress) as bar:
        for count in _render_shards(config_dict, seed, out, fingerprint, todo, workers):
            bar.update(count)
    seconds = previous_seconds + time.monotonic() - started_s
    _write_manifest(out, config, fingerprint, seed, n, shard_size, ranges, complete=True, seconds=seconds)
    return read_manifest(out)


def read_manifest(folder: str | Path) -> Manifest:
    """Read and check ``folder/manifest.json``.

    Raises:
        DatasetError: no manifest, not JSON, another format, or an unknown version.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: no dataset manifest — render one with `handrail vision render --out {folder}`")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}) — render the dataset again") from error
    if raw.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: format {raw.get('format')!r} is not {DATASET_FORMAT!r}")
    if raw.get("version") != DATASET_VERSION:
        raise DatasetError(
            f"{path}: dataset version {raw.get('version')!r}; this handrail reads version {DATASET_VERSION} — "
            "render it again with this version"
        )
    intrinsics = raw["intrinsics"]
    return Manifest(
        path=path,
        seed=int(raw["seed"]),
        n=int(raw["n"]),
        shard_size=int(raw["shard_size"]),
        config=raw["config"],
        config_fingerprint=raw["config_fingerprint"],
        intrinsics=Intrinsics(
            fx=intrinsics["fx"],
            fy=intrinsics["fy"],
            cx=intrinsics["cx"],
            cy=intrinsics["cy"],
            width=intrinsics["width"],
            height=intrinsics["height"],
        ),
        shards=tuple(raw["shards"]),
        complete=bool(raw["complete"]),
        raw=raw,
    )


def load_samples(folder: str | Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """All samples of a complete dataset (or its first ``limit``) as arrays keyed like the shards.

    Raises:
        DatasetError: the dataset is incomplete, or a shard is missing or does not match the manifest.
    """
    manifest = read_manifest(folder)
    if not manifest.complete:
        raise DatasetError(
            f"{manifest.folder}: the dataset is incomplete — finish it with the same `handrail vision render` "
            "command (it resumes)"
        )
    total = manifest.n if limit is None else min(limit, manifest.n)
    samples: dict[str, np.ndarray] = {}
    filled = 0
    for shard in manifest.shards:
        if filled >= total:
            break
        path = manifest.folder / shard["file"]
        if not _shard_is_complete(path, shard["count"], manifest.config_fingerprint):
            raise DatasetError(f"{path}: missing or not of this dataset — render the dataset again (it resumes)")
        with np.load(path) as arrays:
            count = min(shard["count"], total - filled)
            for key in ("images", *LABEL_KEYS, "sample_index"):
                part = arrays[key][:count]
                if key not in samples:  # allocated once: no second copy of the images while loading
                    samples[key] = np.empty((total, *part.shape[1:]), dtype=part.dtype)
                samples[key][filled : filled + count] = part
        filled += count
    return samples


def check_disjoint(training_seed_ranges: Sequence[Sequence[int]], heldout: Manifest) -> None:
    """Refuse a held-out set that shares samples with the training data.

    ``training_seed_ranges``: ``[seed, start, stop)`` triples of the training samples (from the pose model's
    metadata). Two samples are the same exactly when their seed and index are.

    Raises:
        DatasetError: naming the shared seed and index range, and how to render a held-out set.
    """
    for seed, start, stop in training_seed_ranges:
        if int(seed) == heldout.seed and max(int(start), 0) < min(int(stop), heldout.n):
            raise DatasetError(
                f"{heldout.folder}: rendered with seed {heldout.seed}, which the model was trained on (samples "
                f"[{start}, {stop})) — render a held-out set with a seed never used in training, e.g. "
                f"`handrail vision render --seed {heldout.seed + 1000} ...`"
            )


def _check_resumable(previous: Manifest, seed: int, shard_size: int, fingerprint: str) -> None:
    differences = []
    if previous.seed != seed:
        differences.append(f"seed {previous.seed} there, {seed} asked")
    if previous.shard_size != shard_size:
        differences.append(f"shard size {previous.shard_size} there, {shard_size} asked")
    if previous.config_fingerprint != fingerprint:
        differences.append("render config differs (cameras, size, randomization or profile)")
    if differences:
        raise DatasetError(
            f"{previous.folder}: holds a dataset that cannot be resumed with these settings: "
            + "; ".join(differences)
            + " — use another --out folder, or the settings in its manifest.json"
        )


def _shard_is_complete(path: Path, count: int, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as arrays:
            return str(arrays["config_fingerprint"]) == fingerprint and len(arrays["sample_index"]) == count
    except (OSError, ValueError, KeyError, EOFError):
        return False


def _write_manifest(
    out: Path,
    config: RenderConfig,
    fingerprint: str,
    seed: int,
    n: int,
    shard_size: int,
    ranges: list[tuple[int, int]],
    *,
    complete: bool,
    seconds: float,
) -> None:
    intrinsics = config.view.intrinsics
    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "n": n,
        "shard_size": shard_size,
        "complete": complete,
        "render_seconds": round(seconds, 1),
        "sample_rng": "numpy.random.default_rng([seed, sample_index])",
        "image": {"height": intrinsics.height, "width": intrinsics.width, "channels": "RGB", "dtype": "uint8"},
        "intrinsics": {
            "fx": intrinsics.fx,
            "fy": intrinsics.fy,
            "cx": intrinsics.cx,
            "cy": intrinsics.cy,
            "width": intrinsics.width,
            "height": intrinsics.height,
        },
        "label_frames": {
            "position_m, quat_wxyz": "cube in the crop camera frame (OpenCV: x right, y down, z forward)",
            "T_hand_crop": "crop camera in the hand frame (site hand_mount)",
        },
        "config": config.as_dict(),
        "config_fingerprint": fingerprint,
        "shards": [
            {"file": shard_name(index), "start": start, "count": stop - start}
            for index, (start, stop) in enumerate(ranges)
        ],
    }
    partial = out / (MANIFEST_NAME + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(out / MANIFEST_NAME)


def _render_shards(
    config_dict: dict[str, Any], seed: int, out: Path, fingerprint: str, todo: list[tuple[int, int, int]], workers: int
) -> Iterable[int]:
    """Render the shards in ``todo``; yields each finished shard's sample count."""
    if not todo:
        return
    jobs = [(seed, str(out), fingerprint, index, start, stop) for index, start, stop in todo]
    if workers == 1:
        _init_worker(config_dict)
        try:
            for job in jobs:
                yield _render_shard(job)
        finally:
            _close_worker()
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(config_dict,)) as pool:
        try:
            yield from pool.imap_unordered(_render_shard, jobs)
        except Exception as error:
            raise DatasetError(f"render: a worker failed: {type(error).__name__}: {error}") from error


_worker_renderer: Any = None


def _init_worker(config_dict: dict[str, Any]) -> None:
    """Make this process's renderer (spawned workers: before their first shard)."""
    global _worker_renderer
    os.environ.setdefault("MUJOCO_GL", "egl")
    from handrail.vision.synthetic import SyntheticRenderer

    _worker_renderer = SyntheticRenderer(RenderConfig.from_dict(config_dict))


def _close_worker() -> None:
    global _worker_renderer
    if _worker_renderer is not None:
        _worker_renderer.close()
        _worker_renderer = None


def _render_shard(job: tuple[int, str, str, int, int, int]) -> int:
    seed, out, fingerprint, shard_index, start, stop = job
    renderer = _worker_renderer
    images, labels = [], []
    for index in range(start, stop):
        image, label = renderer.render(seed, index)
        images.append(image)
        labels.append(label)
    arrays = {
        "images": np.stack(images),
        "position_m": np.array([label.position_m for label in labels], dtype=np.float32),
        "quat_wxyz": np.array([label.quat_wxyz for label in labels], dtype=np.float32),
        "T_hand_crop": np.array([label.T_hand_crop for label in labels], dtype=np.float32),
        "cube_visible_px": np.array([label.cube_visible_px for label in labels], dtype=np.int32),
        "camera_index": np.array([label.camera_index for label in labels], dtype=np.int16),
        "joint_qpos_rad": np.array([label.joint_qpos_rad for label in labels], dtype=np.float32),
        "sample_index": np.arange(start, stop, dtype=np.int64),
        "config_fingerprint": np.array(fingerprint),
    }
    path = Path(out) / shard_name(shard_index)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)
    return stop - start
