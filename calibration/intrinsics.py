"""Camera intrinsics from views of a board: detect, refine, reject bad views with a reason, calibrate.

:func:`calibrate_intrinsics` takes images (RGB), finds the board in each, rejects views that cannot help
(board not found, too few corners, corners on one line, another image size) or that disagree with the rest
(reprojection RMS an outlier after a first fit), runs ``cv2.calibrateCamera`` on what is left and reports
per-view and overall RMS [px], plus how much of the image area the corners covered.
:func:`capture_views` pulls the images from any :class:`~handrail.vision.camera.Camera` (a live device, an
image folder, a virtual camera).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from handrail.calibration.board import BoardDetection, BoardSpec
from handrail.calibration.errors import CalibrationError
from handrail.calibration.files import CameraCalibration, now_iso
from handrail.vision.camera import Camera, EndOfStreamError, FrameTimeoutError

MIN_VIEWS = 4
MIN_CORNERS_PER_VIEW = 6
# A view whose RMS exceeds both this and OUTLIER_FACTOR x the median view RMS is dropped after the first fit.
OUTLIER_MIN_RMS_PX = 1.0
OUTLIER_FACTOR = 3.0
# The coverage grid: image area cut into this many cells (columns, rows).
COVERAGE_GRID = (8, 6)


@dataclasses.dataclass(frozen=True)
class ViewResult:
    """What happened to one image: used (with its reprojection RMS) or rejected (with the reason)."""

    index: int
    accepted: bool
    reason: str = ""
    n_corners: int = 0
    rms_px: float = float("nan")


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class IntrinsicsResult:
    """The calibration and how it came about.

    Attributes:
        K: (3, 3) camera matrix [px]. distortion: (5,) k1, k2, p1, p2, k3.
        image_size: (width, height) [px]. rms_px: overall reprojection RMS over all used corners.
        views: one :class:`ViewResult` per input image, in input order.
        coverage: fraction of :data:`COVERAGE_GRID` cells holding at least one used corner.
        coverage_image: (h, w, 3) uint8 RGB picture of the used corners over the image area.
        rvecs, tvecs: board pose per *used* view (Rodrigues, [m]), in order of ``views``' accepted entries.
    """

    K: np.ndarray
    distortion: np.ndarray
    image_size: tuple[int, int]
    rms_px: float
    views: tuple[ViewResult, ...]
    coverage: float
    coverage_image: np.ndarray
    rvecs: tuple[np.ndarray, ...]
    tvecs: tuple[np.ndarray, ...]

    @property
    def n_used(self) -> int:
        return sum(view.accepted for view in self.views)

    def to_file(self, board: BoardSpec, camera: str) -> CameraCalibration:
        """The versioned camera calibration file's content."""
        return CameraCalibration(
            schema_version=1,
            camera=camera,
            date=now_iso(),
            board=str(board),
            image_width=self.image_size[0],
            image_height=self.image_size[1],
            K=tuple(tuple(float(v) for v in row) for row in self.K),
            distortion=tuple(float(v) for v in self.distortion),
            rms_px=self.rms_px,
            n_views=self.n_used,
        )

    def format(self) -> str:
        """A human-readable report: per-view lines, then K, distortion, RMS and coverage."""
        lines = []
        for view in self.views:
            if view.accepted:
                lines.append(f"  view {view.index:3d}: used      {view.n_corners:3d} corners, RMS {view.rms_px:.3f} px")
            else:
                lines.append(f"  view {view.index:3d}: rejected  {view.reason}")
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        lines += [
            f"used {self.n_used} of {len(self.views)} views; overall RMS {self.rms_px:.3f} px",
            f"fx {fx:.2f}  fy {fy:.2f}  cx {cx:.2f}  cy {cy:.2f} [px]  image {self.image_size[0]}x{self.image_size[1]}",
            "distortion (k1 k2 p1 p2 k3) " + " ".join(f"{c:+.5f}" for c in self.distortion),
            f"coverage {100 * self.coverage:.0f}% of the image area ({COVERAGE_GRID[0]}x{COVERAGE_GRID[1]} cells)"
            + ("" if self.coverage >= 0.6 else " — move the board into the empty areas, corners especially"),
        ]
        return "\n".join(lines)


def calibrate_intrinsics(images: Sequence[np.ndarray], board: BoardSpec) -> IntrinsicsResult:
    """Calibrate a camera from RGB images of ``board``.

    Raises:
        CalibrationError: fewer than :data:`MIN_VIEWS` usable views (the message lists the rejections).
    """
    if not images:
        raise CalibrationError("camera calibration: no images given")
    height, width = images[0].shape[:2]
    views: list[ViewResult] = []
    detections: dict[int, BoardDetection] = {}
    for index, image in enumerate(images):
        problem, detection = _check_view(image, board, (width, height))
        if detection is None:
            views.append(ViewResult(index, False, problem))
        else:
            detections[index] = detection
            views.append(ViewResult(index, True, n_corners=detection.n_corners))
    _require_enough(views, detections)

    K, distortion, rvecs, tvecs, per_view_rms = _fit(detections, (width, height))
    median_rms_px = float(np.median(list(per_view_rms.values())))
    outliers = {
        index: rms
        for index, rms in per_view_rms.items()
        if rms > OUTLIER_MIN_RMS_PX and rms > OUTLIER_FACTOR * median_rms_px
    }
    if outliers:
        for index, rms in outliers.items():
            del detections[index]
            views[index] = ViewResult(
                index, False, f"reprojection RMS {rms:.2f} px vs median {median_rms_px:.2f} px (blur or a bent board?)"
            )
        _require_enough(views, detections)
        K, distortion, rvecs, tvecs, per_view_rms = _fit(detections, (width, height))

    views = [dataclasses.replace(view, rms_px=per_view_rms[view.index]) if view.accepted else view for view in views]
    all_errors = np.concatenate([_residuals_px(detections[i], K, distortion, rvecs[i], tvecs[i]) for i in detections])
    coverage, coverage_image = _coverage(detections.values(), (width, height))
    return IntrinsicsResult(
        K=K,
        distortion=distortion.reshape(-1)[:5],
        image_size=(width, height),
        rms_px=float(np.sqrt(np.mean(all_errors**2))),
        views=tuple(views),
        coverage=coverage,
        coverage_image=coverage_image,
        rvecs=tuple(rvecs[i] for i in detections),
        tvecs=tuple(tvecs[i] for i in detections),
    )


def capture_views(
    camera: Camera,
    n_views: int,
    *,
    board: BoardSpec | None = None,
    min_interval_s: float = 0.0,
    max_frames: int = 10_000,
    timeout_s: float = 2.0,
) -> list[np.ndarray]:
    """Up to ``n_views`` RGB images from a started ``camera``.

    With ``board``, only frames where the board is found count (others are skipped; a live session can run
    while the operator moves the board). ``min_interval_s`` spaces the views in time so a still board does
    not fill the set. Stops at the end of a folder or file, or after ``max_frames`` frames read.
    """
    images: list[np.ndarray] = []
    last_taken_s = -np.inf
    for _ in range(max_frames):
        if len(images) >= n_views:
            break
        try:
            frame = camera.read(timeout_s=timeout_s)
        except (EndOfStreamError, FrameTimeoutError):
            break
        now_s = time.monotonic()
        if now_s - last_taken_s < min_interval_s:
            continue
        if board is not None and board.detect(frame.image) is None:
            continue
        images.append(frame.image)
        last_taken_s = now_s
    return images


def write_coverage_image(path: Path, result: IntrinsicsResult) -> Path:
    """Write the coverage picture as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(result.coverage_image, cv2.COLOR_RGB2BGR)):
        raise CalibrationError(f"could not write {path} — check that the folder is writable")
    return path


def _check_view(image: np.ndarray, board: BoardSpec, image_size: tuple[int, int]) -> tuple[str, BoardDetection | None]:
    height, width = image.shape[:2]
    if (width, height) != image_size:
        return f"image is {width}x{height}, the first was {image_size[0]}x{image_size[1]}", None
    detection = board.detect(image)
    if detection is None:
        return f"board {board} not found", None
    if detection.n_corners < MIN_CORNERS_PER_VIEW:
        return f"only {detection.n_corners} corners (need {MIN_CORNERS_PER_VIEW})", None
    object_points = detection.object_points_m[:, :2].astype(float)
    spread = np.linalg.svd(object_points - object_points.mean(axis=0), compute_uv=False)
    if spread[1] < 1e-3 * max(spread[0], 1e-12) or spread[1] < 0.5 * board.square_m:
        return "corners lie on one line (a plane needs two directions)", None
    return "", detection


def _require_enough(views: Sequence[ViewResult], detections: dict[int, BoardDetection]) -> None:
    if len(detections) >= MIN_VIEWS:
        return
    rejected = [f"view {view.index}: {view.reason}" for view in views if not view.accepted]
    raise CalibrationError(
        f"camera calibration: {len(detections)} usable views, need at least {MIN_VIEWS} (15-30 recommended, board "
        f"tilted and covering the whole image). Rejected:\n  " + "\n  ".join(rejected[:30])
    )


def _fit(
    detections: dict[int, BoardDetection], image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray], dict[int, float]]:
    indices = list(detections)
    object_points = [detections[i].object_points_m.reshape(-1, 1, 3) for i in indices]
    image_points = [detections[i].image_points_px.reshape(-1, 1, 2) for i in indices]
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    _, K, distortion, rvecs, tvecs = cv2.calibrateCamera(
        object_points, image_points, image_size, None, None, criteria=criteria
    )
    rvecs_by_view = {i: np.asarray(r).reshape(3) for i, r in zip(indices, rvecs, strict=True)}
    tvecs_by_view = {i: np.asarray(t).reshape(3) for i, t in zip(indices, tvecs, strict=True)}
    per_view_rms = {
        i: float(np.sqrt(np.mean(_residuals_px(detections[i], K, distortion, rvecs_by_view[i], tvecs_by_view[i]) ** 2)))
        for i in indices
    }
    return K, distortion, rvecs_by_view, tvecs_by_view, per_view_rms


def _residuals_px(
    detection: BoardDetection, K: np.ndarray, distortion: np.ndarray, rvec: np.ndarray, tvec: np.ndarray
) -> np.ndarray:
    """Distance [px] between each detected corner and its projection, (n,)."""
    projected, _ = cv2.projectPoints(detection.object_points_m, rvec, tvec, K, distortion)
    return np.linalg.norm(projected.reshape(-1, 2) - detection.image_points_px, axis=1)


def _coverage(detections: Sequence[BoardDetection], image_size: tuple[int, int]) -> tuple[float, np.ndarray]:
    width, height = image_size
    columns, rows = COVERAGE_GRID
    hits = np.zeros((rows, columns), dtype=bool)
    picture = np.full((height, width, 3), 32, dtype=np.uint8)
    for detection in detections:
        points = detection.image_points_px
        column = np.clip((points[:, 0] / width * columns).astype(int), 0, columns - 1)
        row = np.clip((points[:, 1] / height * rows).astype(int), 0, rows - 1)
        hits[row, column] = True
    cell_width, cell_height = width / columns, height / rows
    for row in range(rows):
        for column in range(columns):
            colour = (40, 110, 40) if hits[row, column] else (110, 40, 40)
            top_left = (round(column * cell_width) + 1, round(row * cell_height) + 1)
            bottom_right = (round((column + 1) * cell_width) - 2, round((row + 1) * cell_height) - 2)
            cv2.rectangle(picture, top_left, bottom_right, colour, thickness=-1)
    for detection in detections:
        for u, v in detection.image_points_px:
            cv2.circle(picture, (round(float(u)), round(float(v))), 2, (255, 230, 60), thickness=-1)
    return float(hits.mean()), picture
