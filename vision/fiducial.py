"""The fiducial baseline: the cube's pose from the ArUco markers on its faces, one camera, no learning.

Markers are found with ``cv2.aruco.ArucoDetector`` (sub-pixel corners); the layout in
:mod:`handrail.vision.cube_markers` gives every corner's 3D position on the cube. The pose comes from
``cv2.solvePnP``-family solvers with the camera's calibrated intrinsics: each seen marker proposes the
(up to two) poses IPPE-square finds for it, the proposal that best explains *all* seen corners wins, and
Levenberg-Marquardt refines it on all corners together. One marker suffices; two or more (faces at right
angles) pin the pose down much better.

The estimate is the pose of the cube frame in the camera frame (OpenCV: x right, y down, z forward):
position of the cube centre [m] and orientation as a quaternion (w, x, y, z).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from handrail.vision.camera import Intrinsics
from handrail.vision.cube_markers import CUBE_MARKERS, CubeMarkerLayout
from handrail.vision.transforms import invert_pose, pose_matrix, quat_wxyz_from_matrix

# A marker's corners in its own frame (x right, y up, z out of the face), in ArUco order TL, TR, BR, BL;
# the order SOLVEPNP_IPPE_SQUARE requires. Scaled by half the marker edge.
_UNIT_SQUARE_CORNERS = np.array([[-1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [-1.0, -1.0, 0.0]])


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class MarkerDetection:
    """One detected marker: its id and its four corners (4, 2) [px] in ArUco order (TL, TR, BR, BL)."""

    marker_id: int
    corners_px: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class CubePoseEstimate:
    """The cube's pose in the camera frame.

    Attributes:
        position_m: (3,) cube centre in the camera frame [m].
        quat_wxyz: (4,) orientation of the cube frame in the camera frame, w first, w >= 0.
        marker_ids: the markers the pose was computed from.
        reprojection_rms_px: RMS distance [px] between the detected corners and the pose's projections.
    """

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    marker_ids: tuple[int, ...]
    reprojection_rms_px: float
    T_camera_cube: np.ndarray  # (4, 4), the same pose as a matrix

    @property
    def n_markers(self) -> int:
        return len(self.marker_ids)


class FiducialCubePoseEstimator:
    """Cube pose from one RGB image, using the markers of ``layout`` and a camera's ``intrinsics``.

    Args:
        intrinsics: the calibrated intrinsics of the images it will be given (distortion included).
        layout: where the markers are on the cube.
        max_reprojection_rms_px: refuse (return ``None`` for) poses that explain the corners worse than this.
    """

    def __init__(
        self,
        intrinsics: Intrinsics,
        layout: CubeMarkerLayout = CUBE_MARKERS,
        max_reprojection_rms_px: float = 3.0,
    ) -> None:
        self.intrinsics = intrinsics
        self.layout = layout
        self.max_reprojection_rms_px = max_reprojection_rms_px
        parameters = cv2.aruco.DetectorParameters()
        parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        # A 7x7 px window stays inside the half-bit quiet zone of markers seen large (OpenCV's default 11x11
        # reaches the coloured patch beyond it and pulls the corners); small markers are capped by
        # relativeCornerRefinmentWinSize anyway. On 1280x960 renders it halved the median rotation error;
        # at 640x480 it changes nothing.
        parameters.cornerRefinementWinSize = 3
        self._detector = cv2.aruco.ArucoDetector(layout.dictionary, parameters)
        self._marker_corners_in_marker_frame = _UNIT_SQUARE_CORNERS * (layout.marker_edge_m / 2.0)

    def detect(self, image_rgb: np.ndarray) -> list[MarkerDetection]:
        """The layout's markers in ``image_rgb`` (h, w, 3) uint8; other ids, and repeats of an id, are dropped
        (a repeat keeps the largest instance, since a cube shows each face once)."""
        grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        corners, ids, _rejected = self._detector.detectMarkers(grey)
        if ids is None:
            return []
        best: dict[int, MarkerDetection] = {}
        for marker_corners, marker_id in zip(corners, ids.ravel(), strict=True):
            marker_id = int(marker_id)
            if marker_id not in self.layout.marker_ids:
                continue
            detection = MarkerDetection(marker_id, marker_corners.reshape(4, 2).astype(np.float64))
            if marker_id not in best or _area(detection) > _area(best[marker_id]):
                best[marker_id] = detection
        return [best[marker_id] for marker_id in sorted(best)]

    def estimate(self, image_rgb: np.ndarray) -> CubePoseEstimate | None:
        """The cube's pose in the camera frame, or ``None`` if no marker of the layout is seen (or the best
        pose explains the corners worse than ``max_reprojection_rms_px``)."""
        return self.estimate_from_detections(self.detect(image_rgb))

    def estimate_from_detections(self, detections: list[MarkerDetection]) -> CubePoseEstimate | None:
        """The pose from already detected markers (see :meth:`estimate`)."""
        if not detections:
            return None
        points_cube = np.concatenate([self.layout.corners_in_cube_frame(d.marker_id) for d in detections])
        points_px = np.concatenate([d.corners_px for d in detections])
        candidates = [T for detection in detections for T in self._single_marker_poses(detection)]
        if not candidates:
            return None
        T_camera_cube = min(candidates, key=lambda T: self._rms_px(T, points_cube, points_px))
        T_camera_cube = self._refine(T_camera_cube, points_cube, points_px)
        rms_px = self._rms_px(T_camera_cube, points_cube, points_px)
        if rms_px > self.max_reprojection_rms_px:
            return None
        return CubePoseEstimate(
            position_m=T_camera_cube[:3, 3].copy(),
            quat_wxyz=quat_wxyz_from_matrix(T_camera_cube[:3, :3]),
            marker_ids=tuple(d.marker_id for d in detections),
            reprojection_rms_px=rms_px,
            T_camera_cube=T_camera_cube,
        )

    def _single_marker_poses(self, detection: MarkerDetection) -> list[np.ndarray]:
        """The (up to two) cube poses IPPE-square finds for one marker alone, as T_camera_cube (4x4)."""
        count, rvecs, tvecs, _errors = cv2.solvePnPGeneric(
            self._marker_corners_in_marker_frame,
            detection.corners_px,
            self.intrinsics.K,
            self.intrinsics.distortion_coefficients,
            flags=cv2.SOLVEPNP_IPPE_SQUARE,
        )
        face = self.layout.marker_ids[detection.marker_id]
        T_cube_marker = pose_matrix(self.layout.face_frame(face), self.layout.face_center_m(face))
        T_marker_cube = invert_pose(T_cube_marker)
        return [_pose_from_vectors(rvecs[i], tvecs[i]) @ T_marker_cube for i in range(count)]

    def _refine(self, T_camera_cube: np.ndarray, points_cube: np.ndarray, points_px: np.ndarray) -> np.ndarray:
        rvec, _ = cv2.Rodrigues(T_camera_cube[:3, :3])
        tvec = T_camera_cube[:3, 3].reshape(3, 1).copy()
        rvec, tvec = cv2.solvePnPRefineLM(
            points_cube, points_px, self.intrinsics.K, self.intrinsics.distortion_coefficients, rvec, tvec
        )
        return _pose_from_vectors(rvec, tvec)

    def _rms_px(self, T_camera_cube: np.ndarray, points_cube: np.ndarray, points_px: np.ndarray) -> float:
        points_camera = points_cube @ T_camera_cube[:3, :3].T + T_camera_cube[:3, 3]
        if np.any(points_camera[:, 2] <= 0):
            return float("inf")
        projected_px = self.intrinsics.project(points_camera)
        return float(np.sqrt(np.mean(np.sum((projected_px - points_px) ** 2, axis=1))))


def _pose_from_vectors(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    rotation, _ = cv2.Rodrigues(np.asarray(rvec, dtype=float).reshape(3, 1))
    return pose_matrix(rotation, np.asarray(tvec, dtype=float).reshape(3))


def _area(detection: MarkerDetection) -> float:
    return float(cv2.contourArea(detection.corners_px.astype(np.float32)))
