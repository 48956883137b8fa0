"""The pose model file (ONNX) contract and its metadata, readable without torch or onnx.

The file holds one graph:

- input ``image``: [batch, S, S, 3] **uint8**, RGB, NHWC — a crop-view image exactly as a :class:`Frame`
  holds pixels (the normalization ``(x / 255 - mean) / std`` is inside the graph, so no caller can get it
  wrong);
- outputs ``position_m`` [batch, 3] float32: cube centre [m] in the crop camera frame (OpenCV: x right, y
  down, z forward); ``quat_wxyz`` [batch, 4] float32: cube orientation in that frame, w >= 0;
  ``confidence`` [batch] float32 in (0, 1) (see :mod:`handrail.vision.pose_model`).

``metadata_props["handrail_pose_model"]`` is a JSON object (:class:`PoseModelMetadata`): input size and
normalization, the intrinsics of the images it was trained on, the crop view (field of view and aim point
in the hand frame: how to resample a real camera's frame into the model's input), the object (name, size,
markings), the confidence's meaning, the training data (its manifest's summary, seed ranges included) and
the training run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from handrail.errors import HandrailError
from handrail.vision.camera import Intrinsics
from handrail.vision.crop_view import CropView

POSE_MODEL_METADATA_KEY = "handrail_pose_model"
POSE_MODEL_FORMAT = "handrail-pose-model"
POSE_MODEL_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("position_m", "quat_wxyz", "confidence")
DEFAULT_MODEL_FILENAME = "pose_model.onnx"


class PoseModelError(HandrailError):
    """A pose model file is missing, not ours, or does not fit the contract."""


@dataclasses.dataclass(frozen=True)
class PoseModelMetadata:
    """The facts a pose model file carries (see the module docstring)."""

    crop_view: CropView
    object_name: str
    object_size_m: float
    normalization: dict[str, Any]
    training_data: dict[str, Any]
    training: dict[str, Any]
    network: dict[str, Any]
    confidence: dict[str, Any]

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the model's input images (the crop view's)."""
        return self.crop_view.intrinsics

    @property
    def input_size_px(self) -> int:
        return self.crop_view.size_px

    @property
    def training_seed_ranges(self) -> list[list[int]]:
        """``[seed, start, stop)`` of the training samples (for refusing overlapping held-out sets)."""
        return [list(map(int, r)) for r in self.training_data.get("seed_ranges", [])]

    def to_json(self) -> str:
        intrinsics = self.intrinsics
        document = {
            "format": POSE_MODEL_FORMAT,
            "version": POSE_MODEL_VERSION,
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", intrinsics.height, intrinsics.width, 3],
                "dtype": "uint8",
                "layout": "NHWC",
                "channels": "RGB",
            },
            "normalization": self.normalization,
            "outputs": {
                "position_m": "[batch, 3] float32, cube centre in the crop camera frame (OpenCV) [m]",
                "quat_wxyz": "[batch, 4] float32, cube orientation in the crop camera frame, w >= 0",
                "confidence": "[batch] float32 in (0, 1)",
            },
            "intrinsics": {
                "fx": intrinsics.fx,
                "fy": intrinsics.fy,
                "cx": intrinsics.cx,
                "cy": intrinsics.cy,
                "width": intrinsics.width,
                "height": intrinsics.height,
            },
            "crop_view": self.crop_view.as_dict(),
            "object": {"name": self.object_name, "size_m": self.object_size_m},
            "confidence": self.confidence,
            "training_data": self.training_data,
            "training": self.training,
            "network": self.network,
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> PoseModelMetadata:
        """Parse and check the metadata JSON of the file ``where`` (named in errors).

        Raises:
            PoseModelError: not JSON, another format or version, a missing field, or intrinsics that do not
                match the crop view.
        """
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise PoseModelError(f"{where}: metadata {POSE_MODEL_METADATA_KEY!r} is not JSON ({error})") from error
        if document.get("format") != POSE_MODEL_FORMAT or document.get("version") != POSE_MODEL_VERSION:
            raise PoseModelError(
                f"{where}: metadata is {document.get('format')!r} version {document.get('version')!r}; this handrail "
                f"reads {POSE_MODEL_FORMAT!r} version {POSE_MODEL_VERSION} — export the model again"
            )
        try:
            metadata = cls(
                crop_view=CropView.from_dict(document["crop_view"]),
                object_name=str(document["object"]["name"]),
                object_size_m=float(document["object"]["size_m"]),
                normalization=document["normalization"],
                training_data=document["training_data"],
                training=document["training"],
                network=document["network"],
                confidence=document["confidence"],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PoseModelError(f"{where}: metadata lacks or mangles a field ({error!r}) — export it again") from error
        stated = document.get("intrinsics", {})
        actual = metadata.intrinsics
        if any(abs(float(stated.get(k, -1)) - getattr(actual, k)) > 1e-6 for k in ("fx", "fy", "cx", "cy", "width")):
            raise PoseModelError(f"{where}: metadata intrinsics {stated} do not match its crop view {actual}")
        return metadata


BUNDLED_POSE_MODEL = "cube_pose.onnx"


def bundled_pose_model_path() -> Path:
    """The committed cube pose model (``vision/models/cube_pose.onnx``; its record beside it).

    Raises:
        PoseModelError: it is missing from this installation.
    """
    from importlib import resources

    path = Path(str(resources.files("handrail.vision").joinpath("models", BUNDLED_POSE_MODEL)))
    if not path.is_file():
        raise PoseModelError(f"the bundled pose model {path} is missing — reinstall handrail or pass a model file")
    return path


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or a training run folder holding :data:`DEFAULT_MODEL_FILENAME`.

    Raises:
        PoseModelError: neither exists.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_MODEL_FILENAME
    if not path.is_file():
        raise PoseModelError(
            f"{path}: no pose model file — train one with `handrail vision train` (it exports "
            f"{DEFAULT_MODEL_FILENAME}) or export a checkpoint with `handrail vision export`"
        )
    return path


def metadata_from_custom_map(custom: dict[str, str], where: str) -> PoseModelMetadata:
    """The metadata from an ONNX file's ``metadata_props`` as a dict (onnxruntime's ``custom_metadata_map``)."""
    if POSE_MODEL_METADATA_KEY not in custom:
        raise PoseModelError(
            f"{where}: no {POSE_MODEL_METADATA_KEY!r} metadata — not a handrail pose model (keys: {sorted(custom)})"
        )
    return PoseModelMetadata.from_json(custom[POSE_MODEL_METADATA_KEY], where)
