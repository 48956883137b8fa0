"""Calibration files round-trip, and readers refuse unknown versions and malformed fields by name."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handrail.calibration.errors import CalibrationFileError
from handrail.calibration.files import (
    CameraCalibration,
    ExtrinsicsCalibration,
    read_camera_calibration,
    read_extrinsics_calibration,
    to_toml,
    write_camera_calibration,
    write_extrinsics_calibration,
)


def _camera(**changes) -> CameraCalibration:
    fields = dict(
        schema_version=1,
        camera="/dev/video0",
        date="2025-01-31T12:00:00+00:00",
        board="charuco:7x5:0.04:0.03:DICT_5X5_100",
        image_width=640,
        image_height=480,
        K=((610.0, 0.0, 324.5), (0.0, 604.0, 233.0), (0.0, 0.0, 1.0)),
        distortion=(0.01, -0.02, 0.0, 0.0, 0.001),
        rms_px=0.08,
        n_views=15,
    )
    fields.update(changes)
    return CameraCalibration(**fields)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(
    fx=st.floats(1.0, 1e5),
    fy=st.floats(1.0, 1e5),
    cx=finite,
    cy=finite,
    distortion=st.lists(finite, min_size=5, max_size=5),
)
def test_camera_file_round_trips_bit_for_bit(tmp_path_factory, fx, fy, cx, cy, distortion):
    original = _camera(K=((fx, 0.0, cx), (0.0, fy, cy), (0.0, 0.0, 1.0)), distortion=tuple(distortion))
    path = tmp_path_factory.mktemp("camera") / "camera.toml"
    write_camera_calibration(path, original)
    assert read_camera_calibration(path) == original


def test_extrinsics_file_round_trips(tmp_path):
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T[:3, 3] = (0.1, -0.02, 0.4)
    original = ExtrinsicsCalibration(
        schema_version=1, camera="cam_top", date="2025-01-31T12:00:00+00:00", method="hand_eye",
        T_hand_camera=tuple(tuple(row) for row in T.tolist()), rms_px=0.2, n_views=12,
    )  # fmt: skip
    path = write_extrinsics_calibration(tmp_path / "extrinsics.toml", original)
    loaded = read_extrinsics_calibration(path)
    assert loaded == original
    np.testing.assert_array_equal(loaded.T_hand_camera_matrix, T)


def _write_camera_document(path: Path, **changes) -> Path:
    document = _camera().model_dump()
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    path.write_text(to_toml(document))
    return path


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"schema_version": 2}, "schema_version 2 is not supported"),
        ({"schema_version": None}, "schema_version None is not supported"),
        ({"kind": "extrinsics"}, "a 'camera' calibration file was expected"),
        ({"K": [[610.0, 0.0], [0.0, 604.0], [0.0, 0.0]]}, "K"),
        ({"K": [[610.0, 1.0, 320.0], [0.0, 604.0, 240.0], [0.0, 0.0, 1.0]]}, r"K: must be \[\[fx, 0, cx\]"),
        ({"distortion": [0.1, 0.2, 0.3]}, "distortion: OpenCV's model takes 4, 5, 8, 12 or 14"),
        ({"image_width": -640}, "image_width: must be positive"),
        ({"rms_px": None}, "rms_px: missing"),
        ({"date": "yesterday"}, "date"),
        ({"focal_mm": 4.0}, "focal_mm: unknown field"),
    ],
)
def test_malformed_camera_files_are_refused_naming_the_field(tmp_path, changes, named):
    path = _write_camera_document(tmp_path / "camera.toml", **changes)
    with pytest.raises(CalibrationFileError, match=named):
        read_camera_calibration(path)


def test_a_non_rigid_extrinsic_is_refused(tmp_path):
    path = tmp_path / "extrinsics.toml"
    path.write_text(
        to_toml(
            {"schema_version": 1, "kind": "extrinsics", "camera": "c", "date": "2025-01-31T12:00:00+00:00",
             "method": "hand_eye", "T_hand_camera": np.diag([2.0, 1.0, 1.0, 1.0]).tolist(), "rms_px": 0.1, "n_views": 3}
        )
    )  # fmt: skip
    with pytest.raises(CalibrationFileError, match="T_hand_camera: its rotation part is not a proper rotation"):
        read_extrinsics_calibration(path)


def test_a_missing_file_and_bad_toml_are_refused(tmp_path):
    with pytest.raises(CalibrationFileError, match="does not exist"):
        read_camera_calibration(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("K = [[1, 2\n")
    with pytest.raises(CalibrationFileError, match="not valid TOML"):
        read_camera_calibration(tmp_path / "bad.toml")


def test_an_interrupted_write_leaves_the_previous_file_untouched(tmp_path, monkeypatch):
    path = write_camera_calibration(tmp_path / "camera.toml", _camera())
    before = path.read_bytes()

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt  # the operator's Ctrl-C between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_camera_calibration(path, _camera(rms_px=99.0))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["camera.toml"]  # no temporary left behind
    assert math.isclose(read_camera_calibration(path).rms_px, 0.08)
