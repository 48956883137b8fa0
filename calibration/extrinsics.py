"""Where a camera sits relative to the hand: ``T_hand_camera`` (OpenCV camera frame in the hand-mount frame).

Two ways, both ending in a reprojection-error fit over every detected corner:

- :func:`extrinsics_from_board_on_hand`: a board fixed at a known pose ``T_hand_board`` on the hand. Every
  view sees the same rigid scene, so all corners of all views go into one PnP.
- :func:`extrinsics_from_hand_eye`: a target carried by a hand link (a finger) through several poses whose
  link poses ``T_hand_link`` come from forward kinematics of the measured joints. Unknowns are
  ``T_hand_camera`` (X) and where the target sits on the link, ``T_link_board`` (Y), linked per view by
  ``T_hand_link_i @ Y = X @ T_camera_board_i`` (the robot-world-hand-eye form ``AY = XB``). A closed-form
  start (Shah 2013: rotations from the null space of a Kronecker system, then translations by least squares)
  is refined by minimising the reprojection error of all corners over both unknowns. OpenCV's
  ``calibrateRobotWorldHandEye`` solves the same start but is absent from OpenCV 5's Python wheel.

The link must rotate about at least two non-parallel axes across the views (abduction and flexion of a
finger do), or the problem is degenerate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from handrail.calibration.board import BoardDetection
from handrail.calibration.errors import CalibrationError
from handrail.calibration.files import ExtrinsicsCalibration, now_iso
from handrail.vision.camera import Intrinsics
from handrail.vision.transforms import invert_pose, pose_matrix, rotation_angle_deg, transform_points

MIN_HAND_EYE_VIEWS = 3
# The link's relative rotations must span two axes by at least this much [deg] for hand-eye to be defined.
MIN_ROTATION_SPREAD_DEG = 5.0
# After the first hand-eye fit a view is dropped when its RMS exceeds both of these (as in intrinsics).
OUTLIER_MIN_RMS_PX = 1.0
OUTLIER_FACTOR = 3.0


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class ExtrinsicsResult:
    """``T_hand_camera`` (4x4) and the fit behind it.

    Attributes:
        T_hand_camera: OpenCV camera frame in the hand-mount frame [m].
        rms_px: reprojection RMS of all used corners through the result.
        n_views: views used; n_rejected: views dropped as outliers. method: ``board_on_hand`` or ``hand_eye``.
        T_link_board: (hand-eye only) where the target sits on the link it rode on.
    """

    T_hand_camera: np.ndarray
    rms_px: float
    n_views: int
    method: str
    T_link_board: np.ndarray | None = None
    n_rejected: int = 0

    def to_file(self, camera: str) -> ExtrinsicsCalibration:
        return ExtrinsicsCalibration(
            schema_version=1,
            camera=camera,
            date=now_iso(),
            method=self.method,
            T_hand_camera=tuple(tuple(float(v) for v in row) for row in self.T_hand_camera),
            rms_px=self.rms_px,
            n_views=self.n_views,
        )

    def format(self) -> str:
        position_mm = 1000.0 * self.T_hand_camera[:3, 3]
        rvec_deg = np.degrees(cv2.Rodrigues(self.T_hand_camera[:3, :3])[0].reshape(3))
        return (
            f"T_hand_camera ({self.method}, {self.n_views} views, {self.n_rejected} rejected, "
            f"reprojection RMS {self.rms_px:.3f} px):\n"
            f"  position [mm] {position_mm[0]:+.2f} {position_mm[1]:+.2f} {position_mm[2]:+.2f}\n"
            f"  rotation vector [deg] {rvec_deg[0]:+.3f} {rvec_deg[1]:+.3f} {rvec_deg[2]:+.3f}"
        )


def board_pose_in_camera(detection: BoardDetection, intrinsics: Intrinsics) -> np.ndarray:
    """``T_camera_board`` (4x4) of one detection by PnP (IPPE for the planar start, then Levenberg-Marquardt)."""
    object_points = detection.object_points_m.astype(np.float64)
    image_points = detection.image_points_px.astype(np.float64)
    K, distortion = intrinsics.K, intrinsics.distortion_coefficients
    ok, rvec, tvec = cv2.solvePnP(object_points, image_points, K, distortion, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError(f"PnP failed on a view with {detection.n_corners} corners")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, K, distortion, rvec, tvec)
    return pose_matrix(cv2.Rodrigues(rvec)[0], tvec.reshape(3))


def extrinsics_from_board_on_hand(
    detections: Sequence[BoardDetection], intrinsics: Intrinsics, T_hand_board: np.ndarray
) -> ExtrinsicsResult:
    """``T_hand_camera`` from views of a board fixed at ``T_hand_board`` (4x4, board frame in the hand frame).

    Raises:
        CalibrationError: no views.
    """
    if not detections:
        raise CalibrationError("extrinsics: the board was not found in any view")
    # Every view sees the same rigid layout: stack the corners of all views into one PnP.
    object_points = np.concatenate([d.object_points_m for d in detections])
    image_points = np.concatenate([d.image_points_px for d in detections])
    stacked = BoardDetection(image_points, object_points, np.arange(len(object_points)))
    T_camera_board = board_pose_in_camera(stacked, intrinsics)
    residuals = _reprojection_residuals_px(T_camera_board, stacked, intrinsics)
    return ExtrinsicsResult(
        T_hand_camera=T_hand_board @ invert_pose(T_camera_board),
        rms_px=float(np.sqrt(np.mean(residuals**2))),
        n_views=len(detections),
        method="board_on_hand",
    )


def extrinsics_from_hand_eye(
    T_hand_link: Sequence[np.ndarray], detections: Sequence[BoardDetection], intrinsics: Intrinsics
) -> ExtrinsicsResult:
    """``T_hand_camera`` from a target riding on a link: per view the link's pose ``T_hand_link[i]`` (4x4, from
    forward kinematics) and the target's detection in the image.

    Raises:
        CalibrationError: fewer than :data:`MIN_HAND_EYE_VIEWS` views, or link motions that do not rotate
            about two different axes (the problem has no unique answer then).
    """
    if len(T_hand_link) != len(detections):
        raise CalibrationError(f"hand-eye: {len(T_hand_link)} link poses but {len(detections)} detections")
    if len(detections) < MIN_HAND_EYE_VIEWS:
        raise CalibrationError(f"hand-eye: {len(detections)} views, need at least {MIN_HAND_EYE_VIEWS} (10+ advised)")
    check_rotation_spread(T_hand_link)
    links, views = list(T_hand_link), list(detections)
    T_camera_board = [board_pose_in_camera(d, intrinsics) for d in views]
    X, Y = _shah_start(links, T_camera_board)
    X, Y, residuals = _refine_hand_eye(X, Y, links, views, intrinsics)
    # A view the others cannot explain (a partly hidden target, a misread corner) is dropped and the fit rerun.
    view_rms_px = np.array(
        [np.sqrt(np.mean(r**2)) for r in np.split(residuals, np.cumsum([d.n_corners for d in views])[:-1])]
    )
    keep = (view_rms_px <= OUTLIER_MIN_RMS_PX) | (view_rms_px <= OUTLIER_FACTOR * np.median(view_rms_px))
    if not keep.all() and keep.sum() >= MIN_HAND_EYE_VIEWS:
        links = [T for T, kept in zip(links, keep, strict=True) if kept]
        views = [d for d, kept in zip(views, keep, strict=True) if kept]
        X, Y, residuals = _refine_hand_eye(X, Y, links, views, intrinsics)
    return ExtrinsicsResult(
        T_hand_camera=X,
        rms_px=float(np.sqrt(np.mean(residuals**2))),
        n_views=len(views),
        method="hand_eye",
        T_link_board=Y,
        n_rejected=len(detections) - len(views),
    )


def check_rotation_spread(T_hand_link: Sequence[np.ndarray], what: str = "hand-eye: the link rotated") -> None:
    """Raise unless the link poses (4x4 each) rotate about two non-parallel axes, each by at least
    :data:`MIN_ROTATION_SPREAD_DEG` relative to the first pose; ``what`` starts the error message.

    Raises:
        CalibrationError: fewer than two distinct rotation axes (hand-eye would have no unique answer).
    """
    reference = T_hand_link[0][:3, :3]
    axes = []
    for T in T_hand_link[1:]:
        rvec = cv2.Rodrigues(reference.T @ T[:3, :3])[0].reshape(3)
        if np.linalg.norm(rvec) > np.radians(MIN_ROTATION_SPREAD_DEG):
            axes.append(rvec / np.linalg.norm(rvec))
    spread = np.linalg.svd(np.array(axes), compute_uv=False) if len(axes) >= 2 else np.zeros(2)
    if spread[1] < np.sin(np.radians(MIN_ROTATION_SPREAD_DEG)):
        raise CalibrationError(
            f"{what} about fewer than two distinct axes across the views — move the finger "
            f"through abduction and flexion both (at least {MIN_ROTATION_SPREAD_DEG:g} deg each)"
        )


def _shah_start(A: list[np.ndarray], B: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form X, Y of ``A_i Y = X B_i`` (Shah, "Solving the robot-world/hand-eye calibration problem
    using the Kronecker product", 2013)."""
    rows = []
    for A_i, B_i in zip(A, B, strict=True):
        # vec(R_A R_Y) = (I kron R_A) vec(R_Y);  vec(R_X R_B) = (R_B^T kron I) vec(R_X), column-major vec.
        rows.append(np.hstack([np.kron(np.eye(3), A_i[:3, :3]), -np.kron(B_i[:3, :3].T, np.eye(3))]))
    _, _, Vt = np.linalg.svd(np.vstack(rows))
    solution = Vt[-1]
    R_Y = _nearest_rotation(solution[:9].reshape(3, 3, order="F"))
    R_X = _nearest_rotation(solution[9:].reshape(3, 3, order="F"))
    # R_A t_Y + t_A = R_X t_B + t_X  ->  [R_A, -I] [t_Y; t_X] = R_X t_B - t_A
    lhs = np.vstack([np.hstack([A_i[:3, :3], -np.eye(3)]) for A_i in A])
    rhs = np.concatenate([R_X @ B_i[:3, 3] - A_i[:3, 3] for A_i, B_i in zip(A, B, strict=True)])
    translations = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return pose_matrix(R_X, translations[3:]), pose_matrix(R_Y, translations[:3])


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to ``matrix`` up to scale and sign (the null vector's sign is arbitrary)."""
    if np.linalg.det(matrix) < 0:
        matrix = -matrix
    U, _, Vt = np.linalg.svd(matrix)
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt


def _refine_hand_eye(
    X: np.ndarray,
    Y: np.ndarray,
    T_hand_link: list[np.ndarray],
    detections: list[BoardDetection],
    intrinsics: Intrinsics,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.optimize import least_squares  # the [calibrate] extra

    def unpack(parameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X_new = pose_matrix(cv2.Rodrigues(parameters[0:3])[0], parameters[3:6])
        Y_new = pose_matrix(cv2.Rodrigues(parameters[6:9])[0], parameters[9:12])
        return X_new, Y_new

    def residuals(parameters: np.ndarray) -> np.ndarray:
        X_new, Y_new = unpack(parameters)
        T_camera_hand = invert_pose(X_new)
        return np.concatenate(
            [
                _reprojection_residuals_px(T_camera_hand @ T_link @ Y_new, detection, intrinsics, signed=True)
                for T_link, detection in zip(T_hand_link, detections, strict=True)
            ]
        )

    start = np.concatenate(
        [cv2.Rodrigues(X[:3, :3])[0].reshape(3), X[:3, 3], cv2.Rodrigues(Y[:3, :3])[0].reshape(3), Y[:3, 3]]
    )
    fit = least_squares(residuals, start, method="lm", x_scale="jac")
    X, Y = unpack(fit.x)
    per_corner = np.linalg.norm(fit.fun.reshape(-1, 2), axis=1)
    return X, Y, per_corner


def _reprojection_residuals_px(
    T_camera_board: np.ndarray, detection: BoardDetection, intrinsics: Intrinsics, signed: bool = False
) -> np.ndarray:
    """Per-corner distances [px] (or, with ``signed``, the flattened (du, dv) pairs) of detection vs projection."""
    projected = intrinsics.project(transform_points(T_camera_board, detection.object_points_m))
    difference = projected - detection.image_points_px
    return difference.reshape(-1) if signed else np.linalg.norm(difference, axis=1)


def pose_error(T_estimate: np.ndarray, T_truth: np.ndarray) -> tuple[float, float]:
    """(translation error [m], rotation error [deg]) between two poses."""
    return (
        float(np.linalg.norm(T_estimate[:3, 3] - T_truth[:3, 3])),
        rotation_angle_deg(T_estimate[:3, :3], T_truth[:3, :3]),
    )
