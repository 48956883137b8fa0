"""The pose model's view: a small virtual pinhole camera at a real camera's centre, turned towards the palm.

The model never sees a whole camera image. It sees a ``size_px`` x ``size_px`` **crop view**: a pinhole camera
with fixed intrinsics (square pixels, principal point at the centre, field of view ``fov_deg``) that shares
the real camera's optical centre and is rotated, by the smallest rotation, so that its optical axis passes
through a fixed point of the hand frame (``roi_center_hand_m``, the middle of the space the cube occupies in
and above the palm). A pure rotation about the optical centre sees the same rays, so the crop view is an
exact resampling of the real image (a homography; with lens distortion, a remap), whatever that camera's
intrinsics, and the model's input always has the same intrinsics, stored in the model file.

Frames: ``crop`` is an OpenCV camera frame (x right, y down, z forward). ``R_camera_crop`` rotates crop-frame
vectors into the real camera's frame; the model predicts ``T_crop_cube``, and
``T_hand_cube = T_hand_camera @ T_camera_crop @ T_crop_cube``.

Synthetic data is rendered directly through the crop view (:mod:`handrail.vision.synthetic`); real or full
virtual-camera frames are resampled into it by :meth:`CropView.warper` (:mod:`handrail.vision.pose_estimator`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from handrail.vision.camera import Intrinsics
from handrail.vision.transforms import invert_pose, pose_matrix, transform_points

# Resample through an area-averaged copy once the source has this many pixels per crop pixel, so that
# minification does not alias (bilinear remap alone looks at 4 source pixels, whatever the scale).
_PRESHRINK_ABOVE_SCALE = 1.5


@dataclasses.dataclass(frozen=True)
class CropView:
    """The crop view's geometry: image size [px], field of view [deg] and aim point in the hand frame [m].

    The defaults frame the cube in and above the LEAP palm from the scene cameras (about 0.35-0.40 m away):
    28 degrees span about 0.18 m at 0.36 m, and the 6 cm cube is about 40 px wide at 128 px.
    """

    size_px: int = 128
    fov_deg: float = 28.0
    roi_center_hand_m: tuple[float, float, float] = (0.055, 0.0, 0.06)

    def __post_init__(self) -> None:
        if not 16 <= self.size_px <= 1024:
            raise ValueError(f"crop view: size_px must be in [16, 1024], got {self.size_px}")
        if not 1.0 <= self.fov_deg <= 120.0:
            raise ValueError(f"crop view: fov_deg must be in [1, 120] degrees, got {self.fov_deg}")
        object.__setattr__(self, "roi_center_hand_m", tuple(float(v) for v in self.roi_center_hand_m))

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the crop image: square pixels, principal point at the image centre, no distortion."""
        focal_px = (self.size_px / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)
        centre_px = (self.size_px - 1) / 2.0
        return Intrinsics(fx=focal_px, fy=focal_px, cx=centre_px, cy=centre_px, width=self.size_px, height=self.size_px)

    def R_camera_crop(self, T_hand_camera: np.ndarray) -> np.ndarray:
        """Rotation (3x3) of the crop frame in the real camera's frame: the smallest rotation that turns the
        camera's optical axis onto the ray through ``roi_center_hand_m``.

        Raises:
            ValueError: the aim point is at or behind the camera (more than 80 degrees off its axis).
        """
        roi_camera = transform_points(invert_pose(np.asarray(T_hand_camera, dtype=float)), self.roi_center_hand_m)[0]
        distance_m = float(np.linalg.norm(roi_camera))
        ray = roi_camera / distance_m if distance_m > 0 else roi_camera
        if distance_m == 0 or ray[2] < math.cos(math.radians(80.0)):
            raise ValueError(
                f"crop view: the aim point {self.roi_center_hand_m} (hand frame) is at {roi_camera.round(3).tolist()} "
                f"in the camera frame, not in front of it — check T_hand_camera (OpenCV frame: z forward)"
            )
        return rotation_between(np.array([0.0, 0.0, 1.0]), ray)

    def T_camera_crop(self, T_hand_camera: np.ndarray) -> np.ndarray:
        """The crop frame in the real camera's frame (4x4): same origin, rotated by :meth:`R_camera_crop`."""
        return pose_matrix(self.R_camera_crop(T_hand_camera), np.zeros(3))

    def T_hand_crop(self, T_hand_camera: np.ndarray) -> np.ndarray:
        """The crop frame in the hand frame (4x4)."""
        return np.asarray(T_hand_camera, dtype=float) @ self.T_camera_crop(T_hand_camera)

    def warper(self, intrinsics: Intrinsics, T_hand_camera: np.ndarray) -> CropWarper:
        """A resampler from images of a camera with ``intrinsics`` mounted at ``T_hand_camera`` into this view."""
        return CropWarper(self, intrinsics, self.R_camera_crop(T_hand_camera))

    def as_dict(self) -> dict[str, Any]:
        return {"size_px": self.size_px, "fov_deg": self.fov_deg, "roi_center_hand_m": list(self.roi_center_hand_m)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CropView:
        return cls(
            size_px=int(values["size_px"]),
            fov_deg=float(values["fov_deg"]),
            roi_center_hand_m=tuple(float(v) for v in values["roi_center_hand_m"]),
        )


class CropWarper:
    """Resamples one camera's frames into a :class:`CropView` (precomputed maps; lens distortion included).

    The maps are made once here; :meth:`warp` costs one (optional) area shrink and one remap.
    """

    def __init__(self, view: CropView, intrinsics: Intrinsics, R_camera_crop: np.ndarray) -> None:
        self.view = view
        self.source_intrinsics = intrinsics
        self.R_camera_crop = np.asarray(R_camera_crop, dtype=float)
        crop = view.intrinsics
        # Source pixels per crop pixel; well above 1 the crop is a minification: area-shrink the frame first.
        if min(intrinsics.fx, intrinsics.fy) / crop.fx > _PRESHRINK_ABOVE_SCALE:
            scale = crop.fx / min(intrinsics.fx, intrinsics.fy)
            self._shrunk_size = (max(1, round(intrinsics.width * scale)), max(1, round(intrinsics.height * scale)))
        else:
            self._shrunk_size = None
        source = intrinsics if self._shrunk_size is None else _scaled(intrinsics, *self._shrunk_size)
        rows, cols = np.mgrid[0 : crop.height, 0 : crop.width].astype(np.float64)
        rays_crop = np.stack(
            [(cols - crop.cx) / crop.fx, (rows - crop.cy) / crop.fy, np.ones_like(cols)], axis=-1
        ).reshape(-1, 3)
        rays_camera = rays_crop @ self.R_camera_crop.T
        pixels, _ = cv2.projectPoints(rays_camera, np.zeros(3), np.zeros(3), source.K, source.distortion_coefficients)
        pixels = pixels.reshape(crop.height, crop.width, 2).astype(np.float32)
        self._map_x, self._map_y = cv2.convertMaps(pixels[..., 0], pixels[..., 1], cv2.CV_16SC2)

    def warp(self, image_rgb: np.ndarray) -> np.ndarray:
        """The crop view (size, size, 3) uint8 of a frame (h, w, 3) uint8 from the camera this warper was made for.

        Raises:
            ValueError: the frame's size is not the one the intrinsics describe.
        """
        height, width = image_rgb.shape[:2]
        if (width, height) != (self.source_intrinsics.width, self.source_intrinsics.height):
            raise ValueError(
                f"crop view: frame is {width}x{height} but the camera's intrinsics are for "
                f"{self.source_intrinsics.width}x{self.source_intrinsics.height} — give the intrinsics of this stream"
            )
        source = image_rgb
        if self._shrunk_size is not None:
            source = cv2.resize(image_rgb, self._shrunk_size, interpolation=cv2.INTER_AREA)
        return cv2.remap(source, self._map_x, self._map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def rotation_between(from_unit: np.ndarray, to_unit: np.ndarray) -> np.ndarray:
    """The smallest rotation (3x3) taking unit vector ``from_unit`` onto unit vector ``to_unit`` (not opposite)."""
    axis = np.cross(from_unit, to_unit)
    sin_angle = float(np.linalg.norm(axis))
    cos_angle = float(np.dot(from_unit, to_unit))
    if sin_angle < 1e-12:
        return np.eye(3)
    axis /= sin_angle
    skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + sin_angle * skew + (1.0 - cos_angle) * (skew @ skew)


def _scaled(intrinsics: Intrinsics, width: int, height: int) -> Intrinsics:
    """Intrinsics of the image resized to ``width`` x ``height`` (pixel edges kept: u + 0.5 scales)."""
    scale_x, scale_y = width / intrinsics.width, height / intrinsics.height
    return Intrinsics(
        fx=intrinsics.fx * scale_x,
        fy=intrinsics.fy * scale_y,
        cx=(intrinsics.cx + 0.5) * scale_x - 0.5,
        cy=(intrinsics.cy + 0.5) * scale_y - 0.5,
        width=width,
        height=height,
        distortion=intrinsics.distortion,
    )
