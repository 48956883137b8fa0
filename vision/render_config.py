"""What a synthetic dataset renders: the cameras, the crop view and every randomization range.

The ranges live here and nowhere else; :class:`RenderConfig` is written into every dataset manifest (and its
fingerprint into every shard), so a dataset always says how it was made. :mod:`handrail.vision.synthetic`
documents what each range does, in the order a sample draws them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from handrail.sim import leap
from handrail.vision.crop_view import CropView

CUBE_EDGE_M = 0.06  # the scene's cube (sim/models/scene.xml: box half size 0.03)


@dataclasses.dataclass(frozen=True)
class Randomization:
    """Every randomization range of the synthetic data (lengths [m], angles [deg], colours in [0, 1])."""

    camera_position_jitter_m: float = 0.02
    camera_rotation_jitter_deg: float = 3.0
    hand_pose_blend: tuple[float, float] = (0.0, 1.0)
    cube_x_hand_m: tuple[float, float] = (0.015, 0.095)
    cube_y_hand_m: tuple[float, float] = (-0.04, 0.04)
    cube_resting_probability: float = 0.5
    cube_lift_m: tuple[float, float] = (0.002, 0.06)
    max_cube_penetration_m: float = 0.002
    placement_attempts: int = 50
    key_light_elevation_deg: tuple[float, float] = (25.0, 90.0)
    key_light_distance_m: tuple[float, float] = (0.6, 1.5)
    key_light_intensity: tuple[float, float] = (0.3, 1.0)
    fill_light_intensity: tuple[float, float] = (0.0, 0.4)
    headlight_ambient: tuple[float, float] = (0.1, 0.5)
    headlight_diffuse: tuple[float, float] = (0.0, 0.4)
    light_tint: float = 0.15
    face_colour_jitter: float = 0.08
    face_brightness: tuple[float, float] = (0.75, 1.25)
    marker_grey: tuple[float, float] = (0.40, 0.65)
    floor_colour: tuple[float, float] = (0.05, 0.9)
    floor_plain_probability: float = 0.5
    material_brightness: tuple[float, float] = (0.6, 1.6)
    blur_probability: float = 0.5
    blur_sigma_px: tuple[float, float] = (0.3, 1.2)
    motion_blur_probability: float = 0.15
    motion_blur_length_px: tuple[float, float] = (2.0, 6.0)
    exposure_gain: tuple[float, float] = (0.7, 1.3)
    read_noise_std: tuple[float, float] = (0.0, 6.0)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple | list):
                if len(value) != 2 or not value[0] <= value[1]:
                    raise ValueError(f"randomization {field.name} = {value}: give a (low, high) pair with low <= high")
                object.__setattr__(self, field.name, (float(value[0]), float(value[1])))
        for name in ("cube_resting_probability", "floor_plain_probability", "blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"randomization {name} = {getattr(self, name)}: a probability must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """What a synthetic dataset renders: the crop view, the cameras it is aimed from, and the randomization.

    Attributes:
        cameras: scene cameras (``handrail.sim.leap.CAMERA_NAMES``) to jitter around; one per sample.
        view: the model's crop view (its intrinsics are the stored images' intrinsics).
        randomization: the ranges.
        profile: hand profile TOML (``None``: the bundled LEAP hand); its soft limits bound the hand poses.
        shadow_size: shadow-map size [px] (the scene's 4096 costs 3x the render time on a software renderer).
    """

    cameras: tuple[str, ...] = ("cam_top",)
    view: CropView = dataclasses.field(default_factory=CropView)
    randomization: Randomization = dataclasses.field(default_factory=Randomization)
    profile: str | None = None
    shadow_size: int = 1024

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("render config: give at least one camera")
        unknown = [name for name in self.cameras if name not in leap.CAMERA_NAMES]
        if unknown:
            raise ValueError(f"render config: unknown cameras {unknown}; the scene has {list(leap.CAMERA_NAMES)}")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    def as_dict(self) -> dict[str, Any]:
        return {
            "cameras": list(self.cameras),
            "view": self.view.as_dict(),
            "randomization": {k: list(v) if isinstance(v, tuple) else v for k, v in _fields(self.randomization)},
            "profile": self.profile,
            "shadow_size": self.shadow_size,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RenderConfig:
        return cls(
            cameras=tuple(values["cameras"]),
            view=CropView.from_dict(values["view"]),
            randomization=Randomization(**values["randomization"]),
            profile=values.get("profile"),
            shadow_size=int(values["shadow_size"]),
        )


def _fields(instance: Any) -> list[tuple[str, Any]]:
    return [(field.name, getattr(instance, field.name)) for field in dataclasses.fields(instance)]
