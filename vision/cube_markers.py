"""Where the ArUco markers sit on the cube: one marker per face, its id, its frame and its corners.

This is the one home of the marker layout. The scene (``sim/models/scene.xml``) draws it with six thin
textured boxes ``cube_marker_<face>``, each centred on its coloured face; their textures are written by::

    python -m handrail.vision.cube_markers sim/models

Face frames: each face has an outward normal ``n`` (cube frame) and an in-plane ``up`` axis; its
``right`` axis is ``up x n``, so (right, up, n) is right-handed. The marker image is printed with its top
edge towards ``up`` and its right edge towards ``right`` (MuJoCo maps a 2D texture onto a box's +z face
that way, with the geom's x = right, y = up). Corner order is ArUco's: top-left, top-right, bottom-right,
bottom-left as seen from outside the cube.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np

# Face name -> (outward normal, up axis), both in the cube frame. The names match the scene's geoms.
_FACE_AXES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "px": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "nx": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "py": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "ny": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "pz": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "nz": ((0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
}


@dataclasses.dataclass(frozen=True)
class CubeMarkerLayout:
    """ArUco markers on the six faces of a cube (all lengths [m], cube frame at the cube's centre).

    Attributes:
        dictionary_id: the OpenCV ArUco dictionary (``cv2.aruco.DICT_*``).
        face_marker_ids: face name -> marker id; faces in :data:`_FACE_AXES` order (px, nx, py, ny, pz, nz).
        marker_edge_m: edge of the marker's black square (its outer border) [m].
        quiet_zone_m: white margin around the black square [m] (part of the printed texture).
        surface_offset_m: distance from the cube centre to the printed surface along each normal [m]; the
            scene's marker boxes sit 1 mm proud of the 30 mm half edge, over the coloured face patches.
        marker_bits: data bits per side of the dictionary (4 for the 4x4 dictionaries).
    """

    dictionary_id: int = cv2.aruco.DICT_4X4_50
    face_marker_ids: tuple[tuple[str, int], ...] = (("px", 0), ("nx", 1), ("py", 2), ("ny", 3), ("pz", 4), ("nz", 5))
    marker_edge_m: float = 0.036
    quiet_zone_m: float = 0.003
    surface_offset_m: float = 0.031
    marker_bits: int = 4

    def __post_init__(self) -> None:
        faces = [face for face, _ in self.face_marker_ids]
        ids = [marker_id for _, marker_id in self.face_marker_ids]
        if sorted(faces) != sorted(_FACE_AXES) or len(set(ids)) != len(ids):
            raise ValueError(
                f"marker layout: need one distinct marker id for each face {sorted(_FACE_AXES)}, got "
                f"{dict(self.face_marker_ids)}"
            )

    @property
    def dictionary(self) -> cv2.aruco.Dictionary:
        return cv2.aruco.getPredefinedDictionary(self.dictionary_id)

    @property
    def marker_ids(self) -> dict[int, str]:
        """Marker id -> face name."""
        return {marker_id: face for face, marker_id in self.face_marker_ids}

    @property
    def textured_half_edge_m(self) -> float:
        """Half the edge of the printed square, quiet zone included (the marker box's half size) [m]."""
        return self.marker_edge_m / 2.0 + self.quiet_zone_m

    def face_frame(self, face: str) -> np.ndarray:
        """Rotation (3x3) whose columns are the face's right, up and normal axes in the cube frame."""
        normal, up = (np.array(axis) for axis in _FACE_AXES[face])
        return np.column_stack([np.cross(up, normal), up, normal])

    def face_center_m(self, face: str) -> np.ndarray:
        """Centre of the printed marker on ``face``, in the cube frame [m] (3,)."""
        return np.array(_FACE_AXES[face][0]) * self.surface_offset_m

    def corners_in_cube_frame(self, marker_id: int) -> np.ndarray:
        """The marker's four corners (4, 3) [m] in the cube frame, in ArUco order (TL, TR, BR, BL)."""
        face = self.marker_ids[marker_id]
        right, up, _ = self.face_frame(face).T
        half_m = self.marker_edge_m / 2.0
        signs = ((-1.0, 1.0), (1.0, 1.0), (1.0, -1.0), (-1.0, -1.0))  # (right, up) of TL, TR, BR, BL
        return np.array([self.face_center_m(face) + half_m * (sr * right + su * up) for sr, su in signs])

    def texture(self, face: str, pixels_per_bit: int = 16) -> np.ndarray:
        """The printed square of ``face`` as a grey image (n, n) uint8: the marker and its white quiet zone."""
        marker_id = dict(self.face_marker_ids)[face]
        cells = self.marker_bits + 2  # the data bits and a one-bit black border on each side
        marker_px = cells * pixels_per_bit
        margin_px = round(self.quiet_zone_m / self.marker_edge_m * marker_px)
        marker = cv2.aruco.generateImageMarker(self.dictionary, marker_id, marker_px, borderBits=1)
        return cv2.copyMakeBorder(marker, margin_px, margin_px, margin_px, margin_px, cv2.BORDER_CONSTANT, value=255)


CUBE_MARKERS = CubeMarkerLayout()


def texture_path(folder: Path, face: str) -> Path:
    """Where the scene expects the texture of ``face``: ``<folder>/cube_marker_<face>.png``."""
    return Path(folder) / f"cube_marker_{face}.png"


def write_textures(folder: Path, layout: CubeMarkerLayout = CUBE_MARKERS) -> list[Path]:
    """Write the six face textures (RGB PNG) into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for face, _ in layout.face_marker_ids:
        path = texture_path(folder, face)
        if not cv2.imwrite(str(path), cv2.cvtColor(layout.texture(face), cv2.COLOR_GRAY2BGR)):
            raise OSError(f"could not write {path} — check that the folder is writable")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the cube's ArUco face textures for the MuJoCo scene.")
    parser.add_argument("folder", type=Path, help="where to write cube_marker_<face>.png (the scene's: sim/models)")
    args = parser.parse_args(argv)
    for path in write_textures(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
