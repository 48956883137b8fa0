"""Sub-pixel corners of a square marker from its four edges: straight lines fitted to edge points, intersected.

A marker's outer corner is not a saddle point (as a chessboard's is) but the tip of a dark square on a light
ground. Gradient-based corner refinement (``cornerSubPix``, ArUco's ``CORNER_REFINE_SUBPIX``) puts a blurred tip
about a quarter of a pixel inside the square, so the marker reads small and a pose from it reads too far: at
0.4 m a 3 cm marker's depth comes out about 1.5 mm long. The edges themselves are not biased: across a blurred
step edge the intensity crosses the middle of its dark and light levels where the edge is. So each side is
sampled along its middle 70 %, each sample's edge point is that middle-level crossing on a profile across the
side, a line is fitted to the points (total least squares), and neighbouring lines are intersected.
"""

from __future__ import annotations

import cv2
import numpy as np

# The part of a side sampled (away from the corners, where two edges blur into each other).
_SIDE_FRACTION = (0.15, 0.85)
_SAMPLE_SPACING_PX = 1.5
_PROFILE_STEP_PX = 0.25
# The profile across an edge spans this fraction of a marker cell each way (it must stay inside the black border
# on one side and the white quiet zone on the other), within these bounds [px].
_PROFILE_CELL_FRACTION = 0.45
_PROFILE_HALF_LENGTH_PX = (1.5, 4.0)
# Profiles with less contrast than this between their dark and light ends [8-bit levels] are not used.
_MIN_CONTRAST = 25.0
_MIN_POINTS_PER_SIDE = 4
# A refined corner further than this from the detector's is not trusted [px].
_MAX_SHIFT_PX = 3.0


def refine_marker_corners(grey: np.ndarray, corners_px: np.ndarray, cells_per_side: int) -> np.ndarray:
    """``corners_px`` (4, 2) of a marker (in order around it) refined by edge fitting in the 8-bit ``grey`` image;
    ``cells_per_side`` counts the marker's cells including its black border (e.g. 6 for DICT_4X4). Where a side
    has too few clean edge points (occlusion, low contrast), the corners are returned unchanged."""
    corners = np.asarray(corners_px, dtype=np.float64).reshape(4, 2)
    image = np.asarray(grey, dtype=np.float32)
    side_px = float(np.mean(np.linalg.norm(corners - np.roll(corners, -1, axis=0), axis=1)))
    half_length_px = float(np.clip(_PROFILE_CELL_FRACTION * side_px / cells_per_side, *_PROFILE_HALF_LENGTH_PX))
    lines = []
    for index in range(4):
        line = _fit_edge_line(image, corners[index], corners[(index + 1) % 4], half_length_px)
        if line is None:
            return corners
        lines.append(line)
    refined = np.array([_intersect(lines[index - 1], lines[index]) for index in range(4)])
    if not np.all(np.isfinite(refined)) or np.max(np.linalg.norm(refined - corners, axis=1)) > _MAX_SHIFT_PX:
        return corners
    return refined


def _fit_edge_line(
    image: np.ndarray, start_px: np.ndarray, end_px: np.ndarray, half_length_px: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """(point, unit direction) of the line through the edge from ``start_px`` to ``end_px``, or None."""
    length_px = float(np.linalg.norm(end_px - start_px))
    direction = (end_px - start_px) / length_px
    normal = np.array([-direction[1], direction[0]])
    n_samples = max(_MIN_POINTS_PER_SIDE, int(length_px * (_SIDE_FRACTION[1] - _SIDE_FRACTION[0]) / _SAMPLE_SPACING_PX))
    along = np.linspace(*_SIDE_FRACTION, n_samples)
    across_px = np.arange(-half_length_px, half_length_px + 1e-9, _PROFILE_STEP_PX)
    on_side = start_px + along[:, None] * (end_px - start_px)  # (samples, 2)
    positions = on_side[:, None, :] + across_px[None, :, None] * normal  # (samples, steps, 2)
    profiles = cv2.remap(
        image, positions[..., 0].astype(np.float32), positions[..., 1].astype(np.float32), cv2.INTER_LINEAR
    )
    points = []
    for sample, profile in enumerate(profiles):
        low, high = float(profile.min()), float(profile.max())
        if high - low < _MIN_CONTRAST:
            continue
        above = profile - 0.5 * (low + high)
        crossings = np.flatnonzero(np.signbit(above[:-1]) != np.signbit(above[1:]))
        if len(crossings) == 0:
            continue
        step = crossings[np.argmin(np.abs(across_px[crossings]))]  # the crossing nearest the detected edge
        offset_px = across_px[step] + _PROFILE_STEP_PX * above[step] / (above[step] - above[step + 1])
        points.append(on_side[sample] + offset_px * normal)
    if len(points) < _MIN_POINTS_PER_SIDE:
        return None
    points_px = np.array(points)
    centre = points_px.mean(axis=0)
    _, _, Vt = np.linalg.svd(points_px - centre)
    return centre, Vt[0]


def _intersect(line_a: tuple[np.ndarray, np.ndarray], line_b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (point_a, direction_a), (point_b, direction_b) = line_a, line_b
    matrix = np.column_stack([direction_a, -direction_b])
    if abs(np.linalg.det(matrix)) < 1e-9:
        return np.full(2, np.nan)
    along_a = np.linalg.solve(matrix, point_b - point_a)[0]
    return point_a + along_a * direction_a
