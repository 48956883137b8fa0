"""Calibration targets: a ChArUco board, a plain chessboard, or a single ArUco marker, from one spec string.

Spec strings (the CLI's ``--board``):

- ``charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT`` — e.g. ``charuco:7x5:0.04:0.03:DICT_5X5_100``: COLS x ROWS
  squares, square edge and marker edge [m], an OpenCV ArUco dictionary. Partial views work (each corner has
  an id).
- ``chessboard:COLSxROWS:SQUARE_M`` — e.g. ``chessboard:9x6:0.025``: COLS x ROWS **inner** corners (OpenCV's
  ``patternSize``), square edge [m]. The whole board must be in view.
- ``aruco:EDGE_M:DICT:ID`` — e.g. ``aruco:0.03:DICT_4X4_50:7``: one marker of edge EDGE_M [m] (its black
  square), for hand-eye calibration where a board does not fit on a finger.

Board frame (OpenCV's object-point frame): origin at the top-left of the printed pattern (for a chessboard:
its first inner corner, for a marker: its centre), x along the printed image's columns, y along its rows
(down), z = x × y pointing *into* the board, away from a viewer who reads the print.
"""

from __future__ import annotations

import dataclasses
import re

import cv2
import numpy as np

from handrail.calibration.errors import BoardSpecError
from handrail.calibration.marker_edges import refine_marker_corners

# Corner sub-pixel refinement: the search window's half size [px] and the stop criteria.
_SUBPIX_HALF_WINDOW_PX = 5
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
_SPEC_EXAMPLES = "charuco:7x5:0.04:0.03:DICT_5X5_100, chessboard:9x6:0.025 or aruco:0.03:DICT_4X4_50:7"


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class BoardDetection:
    """Corners of a board found in one image.

    Attributes:
        image_points_px: (n, 2) float32 pixel coordinates (u, v) of the corners found, sub-pixel refined.
        object_points_m: (n, 3) float32 the same corners in the board frame [m] (z = 0).
        corner_ids: (n,) which board corners they are (row-major index into the board's corners).
    """

    image_points_px: np.ndarray
    object_points_m: np.ndarray
    corner_ids: np.ndarray

    @property
    def n_corners(self) -> int:
        return len(self.corner_ids)


@dataclasses.dataclass(frozen=True)
class BoardSpec:
    """A calibration target, parsed from a spec string (see the module docstring).

    Attributes:
        kind: ``charuco``, ``chessboard`` or ``aruco``.
        columns, rows: squares (charuco) or inner corners (chessboard); 1 x 1 for a marker.
        square_m: square edge [m] (charuco, chessboard) or the marker's edge (aruco).
        marker_m: marker edge [m] (charuco, aruco); 0 for a chessboard.
        dictionary_name: ``DICT_*`` name (charuco, aruco); empty for a chessboard.
        marker_id: the marker's id (aruco); 0 otherwise.
    """

    kind: str
    columns: int
    rows: int
    square_m: float
    marker_m: float = 0.0
    dictionary_name: str = ""
    marker_id: int = 0

    @classmethod
    def parse(cls, spec: str) -> BoardSpec:
        """Parse ``spec``.

        Raises:
            BoardSpecError: naming the part that is wrong and showing the accepted forms.
        """
        parts = spec.strip().split(":")
        kind = parts[0].lower()
        try:
            if kind == "charuco" and len(parts) == 5:
                columns, rows = _grid(parts[1])
                board = cls(kind, columns, rows, _length(parts[2]), _length(parts[3]), _dictionary_name(parts[4]))
                if board.marker_m >= board.square_m:
                    raise BoardSpecError(f"marker edge {board.marker_m} m must be smaller than the square's")
                if columns < 3 or rows < 3:
                    raise BoardSpecError("a ChArUco board needs at least 3x3 squares")
                return board
            if kind == "chessboard" and len(parts) == 3:
                columns, rows = _grid(parts[1])
                if columns < 3 or rows < 3 or columns == rows:
                    raise BoardSpecError(
                        "a chessboard needs at least 3x3 inner corners and different counts along its two sides "
                        "(a square one has no defined orientation)"
                    )
                return cls(kind, columns, rows, _length(parts[2]))
            if kind == "aruco" and len(parts) == 4:
                edge_m = _length(parts[1])
                dictionary_name = _dictionary_name(parts[2])
                marker_id = int(parts[3])
                size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary_name)).bytesList.shape[0]
                if not 0 <= marker_id < size:
                    raise BoardSpecError(f"marker id {marker_id} is not in {dictionary_name} (ids 0..{size - 1})")
                return cls(kind, 1, 1, edge_m, edge_m, dictionary_name, marker_id)
        except BoardSpecError as error:
            raise BoardSpecError(f"board {spec!r}: {error} — e.g. {_SPEC_EXAMPLES}") from None
        except ValueError as error:
            raise BoardSpecError(f"board {spec!r}: {error} — e.g. {_SPEC_EXAMPLES}") from None
        raise BoardSpecError(f"board {spec!r}: unknown kind or wrong number of ':' parts — use {_SPEC_EXAMPLES}")

    def __str__(self) -> str:
        if self.kind == "charuco":
            return f"charuco:{self.columns}x{self.rows}:{self.square_m:g}:{self.marker_m:g}:{self.dictionary_name}"
        if self.kind == "chessboard":
            return f"chessboard:{self.columns}x{self.rows}:{self.square_m:g}"
        return f"aruco:{self.square_m:g}:{self.dictionary_name}:{self.marker_id}"

    @property
    def dictionary(self) -> cv2.aruco.Dictionary:
        return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary_name))

    @property
    def corners_m(self) -> np.ndarray:
        """All the board's corners (n, 3) float32 [m] in the board frame, in corner-id order."""
        if self.kind == "charuco":
            return np.asarray(self._charuco_board().getChessboardCorners(), dtype=np.float32).reshape(-1, 3)
        if self.kind == "chessboard":
            column, row = np.meshgrid(np.arange(self.columns), np.arange(self.rows))
            grid = np.stack([column.ravel(), row.ravel(), np.zeros(column.size)], axis=1)
            return (grid * self.square_m).astype(np.float32)
        half_m = self.square_m / 2.0
        # ArUco corner order: top-left, top-right, bottom-right, bottom-left of the printed marker (y down).
        return np.array(
            [[-half_m, -half_m, 0], [half_m, -half_m, 0], [half_m, half_m, 0], [-half_m, half_m, 0]], np.float32
        )

    @property
    def pattern_size_m(self) -> tuple[float, float]:
        """(width, height) [m] of the printed pattern (for a chessboard: its outer squares included)."""
        if self.kind == "charuco":
            return self.columns * self.square_m, self.rows * self.square_m
        if self.kind == "chessboard":
            return (self.columns + 1) * self.square_m, (self.rows + 1) * self.square_m
        return self.square_m, self.square_m

    @property
    def pattern_origin_m(self) -> tuple[float, float]:
        """Where the printed pattern's top-left edge lies in the board frame (x, y) [m]."""
        if self.kind == "charuco":
            return 0.0, 0.0
        if self.kind == "chessboard":
            return -self.square_m, -self.square_m
        return -self.square_m / 2.0, -self.square_m / 2.0

    def image(self, pixels_per_m: float, margin_m: float = 0.0) -> np.ndarray:
        """The pattern as a grey image (h, w) uint8 at ``pixels_per_m``, with a white margin of ``margin_m``.

        Pixel (u, v) of the result shows board point ``pattern_origin + ((u + 0.5) / pixels_per_m - margin_m,
        (v + 0.5) / pixels_per_m - margin_m)``: the pattern fills exactly whole pixels when its edges land on
        pixel boundaries, which they do when ``square_m * pixels_per_m`` is an integer.
        """
        width_m, height_m = self.pattern_size_m
        width_px, height_px = round(width_m * pixels_per_m), round(height_m * pixels_per_m)
        if self.kind == "charuco":
            pattern = self._charuco_board().generateImage((width_px, height_px), marginSize=0, borderBits=1)
        elif self.kind == "chessboard":
            square_px = self.square_m * pixels_per_m
            column = (np.arange(width_px) + 0.5) // square_px
            row = (np.arange(height_px) + 0.5) // square_px
            # The top-left (outer) square is black, as in OpenCV's pattern.
            pattern = np.where((row[:, None] + column[None, :]) % 2 == 0, 0, 255).astype(np.uint8)
        else:
            pattern = cv2.aruco.generateImageMarker(self.dictionary, self.marker_id, width_px, borderBits=1)
        margin_px = round(margin_m * pixels_per_m)
        return cv2.copyMakeBorder(pattern, margin_px, margin_px, margin_px, margin_px, cv2.BORDER_CONSTANT, value=255)

    def detect(self, image_rgb: np.ndarray) -> BoardDetection | None:
        """Find the board's corners in an RGB (or grey) image; ``None`` when the board is not found."""
        grey = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        if self.kind == "charuco":
            return self._detect_charuco(grey)
        if self.kind == "chessboard":
            return self._detect_chessboard(grey)
        return self._detect_marker(grey)

    def _charuco_board(self) -> cv2.aruco.CharucoBoard:
        return cv2.aruco.CharucoBoard((self.columns, self.rows), self.square_m, self.marker_m, self.dictionary)

    def _detect_charuco(self, grey: np.ndarray) -> BoardDetection | None:
        detector = cv2.aruco.CharucoDetector(self._charuco_board())
        charuco_corners, charuco_ids, _, _ = detector.detectBoard(grey)
        if charuco_ids is None or len(charuco_ids) < 4:
            return None
        ids = charuco_ids.reshape(-1).astype(np.int32)
        image_points = _refine(grey, charuco_corners.reshape(-1, 2))
        return BoardDetection(image_points, self.corners_m[ids], ids)

    def _detect_chessboard(self, grey: np.ndarray) -> BoardDetection | None:
        pattern = (self.columns, self.rows)
        found, corners = cv2.findChessboardCornersSB(
            grey, pattern, flags=cv2.CALIB_CB_EXHAUSTIVE + cv2.CALIB_CB_ACCURACY
        )
        if not found:
            found, corners = cv2.findChessboardCorners(grey, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH)
            if not found:
                return None
        image_points = _refine(grey, corners.reshape(-1, 2))
        ids = np.arange(self.columns * self.rows, dtype=np.int32)
        return BoardDetection(image_points, self.corners_m, ids)

    def _detect_marker(self, grey: np.ndarray) -> BoardDetection | None:
        parameters = cv2.aruco.DetectorParameters()
        parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        corners, ids, _ = cv2.aruco.ArucoDetector(self.dictionary, parameters).detectMarkers(grey)
        if ids is None:
            return None
        for marker_corners, marker_id in zip(corners, ids.reshape(-1), strict=True):
            if int(marker_id) == self.marker_id:
                # Edge fitting removes the quarter-pixel inward bias of sub-pixel refinement at a square's tips.
                cells_per_side = self.dictionary.markerSize + 2  # the bits and a one-cell black border
                refined = refine_marker_corners(grey, np.reshape(marker_corners, (4, 2)), cells_per_side)
                image_points = refined.astype(np.float32)
                return BoardDetection(image_points, self.corners_m, np.arange(4, dtype=np.int32))
        return None


def _refine(grey: np.ndarray, corners_px: np.ndarray) -> np.ndarray:
    corners = np.ascontiguousarray(corners_px, dtype=np.float32).reshape(-1, 1, 2)
    window = (_SUBPIX_HALF_WINDOW_PX, _SUBPIX_HALF_WINDOW_PX)
    return cv2.cornerSubPix(grey, corners, window, (-1, -1), _SUBPIX_CRITERIA).reshape(-1, 2)


def _grid(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if match is None:
        raise BoardSpecError(f"grid {text!r} must be COLSxROWS, e.g. 7x5")
    return int(match.group(1)), int(match.group(2))


def _length(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise BoardSpecError(f"length {text!r} must be in metres, between 0 and 1")
    return value


def _dictionary_name(text: str) -> str:
    name = text.strip().upper()
    if not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
        known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
        raise BoardSpecError(f"unknown ArUco dictionary {text!r}; known: {', '.join(known)}")
    return name
