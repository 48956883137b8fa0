"""Versioned calibration files: camera intrinsics and camera extrinsics, as TOML, written atomically.

Every file starts with ``schema_version`` and ``kind``; readers refuse an unknown version or another kind
before looking at anything else, then validate every field (pydantic) and name the field that is wrong.

Camera file (``kind = "camera"``)::

    schema_version = 1
    kind = "camera"
    camera = "/dev/video0"            # what identifies the camera (serial, path)
    date = "2025-01-31T12:00:00+00:00"
    board = "charuco:7x5:0.04:0.03:DICT_5X5_100"
    image_width = 640
    image_height = 480
    K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # [px]
    distortion = [k1, k2, p1, p2, k3]           # OpenCV's model; 4, 5 or 8 coefficients
    rms_px = 0.12                                # overall reprojection RMS
    n_views = 20

Extrinsics file (``kind = "extrinsics"``)::

    schema_version = 1
    kind = "extrinsics"
    camera = "/dev/video0"
    date = "..."
    method = "board_on_hand"          # or "hand_eye"
    T_hand_camera = [[...], [...], [...], [0, 0, 0, 1]]   # OpenCV camera frame in the hand-mount frame [m]
    rms_px = 0.3                      # reprojection RMS of the board corners through the result
    n_views = 12
"""

from __future__ import annotations

import datetime
import math
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from handrail import toml_file
from handrail.calibration.errors import CalibrationFileError
from handrail.vision.camera import Intrinsics

CAMERA_SCHEMA_VERSION = 1
EXTRINSICS_SCHEMA_VERSION = 1


class _CalibrationFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    kind: str
    camera: str
    date: str

    @field_validator("date")
    @classmethod
    def _iso_date(cls, date: str) -> str:
        datetime.datetime.fromisoformat(date)
        return date


class CameraCalibration(_CalibrationFile):
    """A camera's intrinsics as calibrated: K [px], OpenCV distortion, the image size they hold for."""

    kind: Literal["camera"] = "camera"
    board: str
    image_width: int
    image_height: int
    K: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
    distortion: tuple[float, ...]
    rms_px: float
    n_views: int

    @field_validator("K")
    @classmethod
    def _pinhole(cls, K: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
        if K[0][1] != 0 or K[1][0] != 0 or tuple(K[2]) != (0.0, 0.0, 1.0) or K[0][0] <= 0 or K[1][1] <= 0:
            raise ValueError("must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        if not all(math.isfinite(value) for row in K for value in row):
            raise ValueError("must hold finite numbers")
        return K

    @field_validator("distortion")
    @classmethod
    def _opencv_model(cls, distortion: tuple[float, ...]) -> tuple[float, ...]:
        if len(distortion) not in (4, 5, 8, 12, 14):
            raise ValueError(f"OpenCV's model takes 4, 5, 8, 12 or 14 coefficients, got {len(distortion)}")
        return distortion

    @field_validator("image_width", "image_height", "n_views")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("rms_px")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError("must be a finite number >= 0")
        return value

    def intrinsics(self) -> Intrinsics:
        """As the vision stage's :class:`~handrail.vision.camera.Intrinsics` (distortion cut to 4, 5 or 8)."""
        distortion = self.distortion if len(self.distortion) in (4, 5, 8) else self.distortion[:8]
        return Intrinsics.from_K(np.array(self.K), self.image_width, self.image_height, distortion=distortion)


class ExtrinsicsCalibration(_CalibrationFile):
    """Where a camera sits on the hand: ``T_hand_camera`` (4x4, OpenCV camera frame in the hand-mount frame)."""

    kind: Literal["extrinsics"] = "extrinsics"
    method: Literal["board_on_hand", "hand_eye"]
    T_hand_camera: tuple[tuple[float, float, float, float], ...]
    rms_px: float
    n_views: int

    @field_validator("T_hand_camera")
    @classmethod
    def _rigid(cls, T: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
        matrix = np.array(T, dtype=float)
        if matrix.shape != (4, 4) or not np.allclose(matrix[3], (0, 0, 0, 1)):
            raise ValueError("must be a 4x4 homogeneous transform with last row [0, 0, 0, 1]")
        rotation = matrix[:3, :3]
        if not (np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6) and np.linalg.det(rotation) > 0):
            raise ValueError("its rotation part is not a proper rotation (orthonormal, det +1)")
        return T

    @property
    def T_hand_camera_matrix(self) -> np.ndarray:
        return np.array(self.T_hand_camera, dtype=float)


_Document = TypeVar("_Document", bound=BaseModel)


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string (seconds)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_camera_calibration(path: Path, calibration: CameraCalibration) -> Path:
    """Write ``calibration`` to ``path`` atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(Path(path), to_toml(calibration.model_dump()))


def write_extrinsics_calibration(path: Path, calibration: ExtrinsicsCalibration) -> Path:
    """Write ``calibration`` to ``path`` atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(Path(path), to_toml(calibration.model_dump()))


def read_camera_calibration(path: Path) -> CameraCalibration:
    """Read and validate a camera calibration file.

    Raises:
        CalibrationFileError: missing or unreadable file, bad TOML, unknown ``schema_version``, another
            ``kind``, or a malformed field (the message names it).
    """
    return read_calibration_file(Path(path), CameraCalibration, "camera", CAMERA_SCHEMA_VERSION)


def read_extrinsics_calibration(path: Path) -> ExtrinsicsCalibration:
    """Read and validate an extrinsics calibration file (failure modes as :func:`read_camera_calibration`)."""
    return read_calibration_file(Path(path), ExtrinsicsCalibration, "extrinsics", EXTRINSICS_SCHEMA_VERSION)


def read_calibration_file(
    path: Path, model: type[_Document], kind: str, version: int, *, validation_hint: str = ""
) -> _Document:
    """Read a calibration file of ``kind``: TOML, then its ``schema_version`` and ``kind``, then ``model``.

    Every calibration file (camera, extrinsics, joints, dynamics) goes through here, so they all reject an
    unknown version, a file of another kind and a malformed field the same way. ``validation_hint`` is a
    line appended when a field is malformed (how to get a correct file).

    Raises:
        CalibrationFileError: naming the file and the version, kind or field that is wrong.
    """
    document = read_toml(path, f"{kind} calibration")
    found_version = document.get("schema_version")
    if found_version != version:
        raise CalibrationFileError(
            f"{kind} calibration {path}: schema_version {found_version!r} is not supported (this handrail reads "
            f"{version}) — recalibrate with this handrail or upgrade it"
        )
    found_kind = document.get("kind")
    if found_kind != kind:
        raise CalibrationFileError(
            f"{path}: kind = {found_kind!r}, but a {kind!r} calibration file was expected — pass the right file"
        )
    try:
        return model.model_validate(document)
    except ValidationError as error:
        message = describe_validation_error(f"{kind} calibration {path}", error)
        raise CalibrationFileError(message + (f"\n  ({validation_hint})" if validation_hint else "")) from error


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse ``path`` as TOML, or raise :class:`CalibrationFileError` naming ``what`` and the problem."""
    return toml_file.read_toml(path, what, CalibrationFileError)


def describe_validation_error(what: str, error: ValidationError) -> str:
    """One line per problem: the field's dotted path, what is wrong, what was found."""
    lines = [f"{what} is invalid:"]
    for problem in error.errors():
        field_path = ".".join(str(part) for part in problem["loc"]) or "<root>"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field — remove it or check its spelling"
        elif problem["type"] == "missing":
            message = "missing — add it"
        got = problem.get("input")
        got_text = f" (got {got!r})" if problem["type"] not in ("missing", "extra_forbidden") else ""
        lines.append(f"  {field_path}: {message}{got_text}")
    return "\n".join(lines)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never a part.

    The text goes to a temporary file in the same folder, is flushed to disk, then renamed over ``path``
    (``os.replace`` is atomic on POSIX and Windows). An interruption before the rename leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The new file keeps the old one's permissions (mkstemp's are 0600), or gets the usual ones (umask).
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML text of a document of scalars, (nested) lists of scalars, and one level of sub-tables.

    Floats are written with ``repr`` so they read back bit for bit.
    """
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in document.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for name, table in tables:
        scalars = {key: value for key, value in table.items() if not isinstance(value, Mapping)}
        if scalars:
            lines.append(f"\n[{_key(name)}]")
            lines.extend(f"{_key(key)} = {_toml_value(value)}" for key, value in scalars.items())
        for key, value in table.items():
            if isinstance(value, Mapping):
                lines.append(f"\n[{_key(name)}.{_key(key)}]")
                lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"cannot write non-finite number {number} to a calibration file")
        return repr(number)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
