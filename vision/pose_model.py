"""The cube pose CNN (torch): one crop-view image in; cube position, orientation and a confidence out.

Architecture (``width`` = w, input S x S; defaults w = 24, S = 128, about 1.1 M parameters, 4.5 MB float32):

- inside the graph: uint8 NHWC RGB -> float, ``(x / 255 - 0.5) / 0.25``, NCHW, plus two coordinate channels
  (u, v in [-1, 1]; CoordConv) so that the head can read *where* things are, which pooling alone forgets;
- a ResNet-style trunk: a stride-2 3x3 stem (w), then basic residual blocks at strides 2, 2, 2
  (4/3 w, 8/3 w, 16/3 w channels) and one more block at S / 16; batch norm, ReLU;
- a 1x1 conv to 32 channels, flattened (the S / 16 x S / 16 grid keeps the layout), a 256-unit layer, then
  three heads:

  * **position** as (u, v, s): the cube centre's image position relative to the centre, in half-widths, and
    its log depth relative to ``depth_reference_m``. ``z = depth_reference_m * exp(s)``,
    ``x = z u tan(fov / 2)``, ``y = z v tan(fov / 2)`` (the crop view's pinhole; position [m], camera frame).
    Image position and depth are what the pixels show directly; metric x, y follow exactly.
  * **orientation** as the continuous 6D representation of Zhou et al. (CVPR 2019, "On the Continuity of
    Rotation Representations in Neural Networks"): two 3-vectors, Gram-Schmidt-orthonormalized into the first
    two columns of the rotation matrix, the third their cross product. Why this and not a quaternion: the
    face markings make every face and its in-plane direction distinct, so the cube's pose is **unique** — no
    symmetry group to quotient out — and what remains is to regress one rotation well; the 6D map is
    continuous and surjective onto SO(3) (a quaternion has the q / -q double cover and any 4D or 3D output is
    discontinuous somewhere), so no sign-invariant loss is needed. The loss is the geodesic angle. The file's
    quaternion output is computed from the matrix in the graph (Shepperd's branch choice, w >= 0).
  * **confidence** in (0, 1): a sigmoid trained (binary cross-entropy, soft targets) to predict
    ``exp(-(position error / 10 mm + rotation error / 10 deg))`` of this very prediction — 1 means no error
    expected, 0.37 about 10 mm or 10 deg, and ~0 for a hidden cube (samples with fewer than
    ``min_visible_px`` cube pixels have target 0 and no pose loss). A network's errors on its training images
    understate its errors on new ones, so the trained head is overconfident; after training, an exponent
    (``confidence_exponent``, c -> c ** e) is fitted on the validation split and applied in the exported graph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional

IMAGE_MEAN = 0.5  # of x / 255, every channel
IMAGE_STD = 0.25
CONFIDENCE_POSITION_SCALE_M = 0.010
CONFIDENCE_ROTATION_SCALE_RAD = math.radians(10.0)
HEAD_CHANNELS = 32
HIDDEN_UNITS = 256


@dataclasses.dataclass(frozen=True)
class PoseNetConfig:
    """Shape of the network and the crop view it reads (stored with every checkpoint and in the ONNX file)."""

    image_size: int = 128
    fov_deg: float = 28.0
    width: int = 24
    depth_reference_m: float = 0.40
    confidence_exponent: float = 1.0  # applied by ExportablePoseNet; fitted on held-back data after training

    def __post_init__(self) -> None:
        if self.image_size % 16 != 0:
            raise ValueError(f"pose net: image_size must be a multiple of 16, got {self.image_size}")
        if self.width < 4:
            raise ValueError(f"pose net: width must be >= 4, got {self.width}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.relu(self.bn1(self.conv1(x)))
        return functional.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PoseNet(nn.Module):
    """Cube pose from crop-view images (see the module docstring for the layout and the outputs)."""

    def __init__(self, config: PoseNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        channels = (w, round(4 * w / 3), round(8 * w / 3), round(16 * w / 3))
        self.stem = nn.Sequential(
            nn.Conv2d(5, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            BasicBlock(channels[0], channels[1], 2),
            BasicBlock(channels[1], channels[2], 2),
            BasicBlock(channels[2], channels[3], 2),
            BasicBlock(channels[3], channels[3], 1),
        )
        grid = config.image_size // 16
        self.reduce = nn.Sequential(nn.Conv2d(channels[3], HEAD_CHANNELS, 1), nn.ReLU())
        self.hidden = nn.Sequential(nn.Linear(HEAD_CHANNELS * grid * grid, HIDDEN_UNITS), nn.ReLU())
        self.position_head = nn.Linear(HIDDEN_UNITS, 3)
        self.rotation_head = nn.Linear(HIDDEN_UNITS, 6)
        self.confidence_head = nn.Linear(HIDDEN_UNITS, 1)
        nn.init.zeros_(self.position_head.weight)
        nn.init.zeros_(self.position_head.bias)
        coords = torch.linspace(-1.0, 1.0, config.image_size)
        size = config.image_size
        # Fixed by the config: not part of the state dict.
        self.register_buffer("coord_u", coords.view(1, 1, 1, -1).expand(1, 1, size, size).clone(), persistent=False)
        self.register_buffer("coord_v", coords.view(1, 1, -1, 1).expand(1, 1, size, size).clone(), persistent=False)
        self.tan_half_fov = math.tan(math.radians(config.fov_deg) / 2.0)

    @staticmethod
    def normalize(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB -> float (N, 3, H, W), ``(x / 255 - IMAGE_MEAN) / IMAGE_STD``."""
        x = images_uint8_nhwc.to(torch.float32).permute(0, 3, 1, 2)
        return (x / 255.0 - IMAGE_MEAN) / IMAGE_STD

    def forward(self, images_uint8_nhwc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(position_m (N, 3), rotation (N, 3, 3), confidence (N,)) from uint8 (N, H, W, 3) RGB images."""
        return self.forward_normalized(self.normalize(images_uint8_nhwc))

    def forward_normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`forward`, from images already normalized (N, 3, H, W) float (training augments these)."""
        batch = x.shape[0]
        x = torch.cat([x, self.coord_u.expand(batch, -1, -1, -1), self.coord_v.expand(batch, -1, -1, -1)], dim=1)
        features = self.hidden(torch.flatten(self.reduce(self.blocks(self.stem(x))), 1))
        uvs = self.position_head(features)
        depth_m = self.config.depth_reference_m * torch.exp(uvs[:, 2:3])
        position_m = torch.cat([uvs[:, 0:2] * self.tan_half_fov * depth_m, depth_m], dim=1)
        rotation = rotation_from_6d(self.rotation_head(features))
        confidence = torch.sigmoid(self.confidence_head(features)[:, 0])
        return position_m, rotation, confidence


class ExportablePoseNet(nn.Module):
    """The graph the ONNX file holds: uint8 images -> (position_m, quat_wxyz, calibrated confidence)."""

    def __init__(self, net: PoseNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position_m, rotation, confidence = self.net(image)
        return position_m, quat_wxyz_from_rotation(rotation), confidence**self.net.config.confidence_exponent


def rotation_from_6d(x: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) from 6D vectors (N, 6) (Zhou et al.): columns b1, b2, b1 x b2."""
    a1, a2 = x[:, 0:3], x[:, 3:6]
    b1 = functional.normalize(a1, dim=1, eps=1e-6)
    b2 = functional.normalize(a2 - (b1 * a2).sum(dim=1, keepdim=True) * b1, dim=1, eps=1e-6)
    b3 = _cross(b1, b2)
    return torch.stack([b1, b2, b3], dim=2)


def quat_wxyz_from_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (N, 4), w first and w >= 0, of rotation matrices (N, 3, 3).

    Shepperd's method without branches (ONNX-exportable): all four candidate formulas are computed and the
    one with the largest pivot (the best-conditioned) is gathered.
    """
    r = rotation
    r00, r01, r02 = r[:, 0, 0], r[:, 0, 1], r[:, 0, 2]
    r10, r11, r12 = r[:, 1, 0], r[:, 1, 1], r[:, 1, 2]
    r20, r21, r22 = r[:, 2, 0], r[:, 2, 1], r[:, 2, 2]
    pivots = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], 1)
    candidates = torch.stack(
        [
            torch.stack([pivots[:, 0], r21 - r12, r02 - r20, r10 - r01], 1),
            torch.stack([r21 - r12, pivots[:, 1], r01 + r10, r02 + r20], 1),
            torch.stack([r02 - r20, r01 + r10, pivots[:, 2], r12 + r21], 1),
            torch.stack([r10 - r01, r02 + r20, r12 + r21, pivots[:, 3]], 1),
        ],
        1,
    )  # (N, 4 candidates, 4)
    best = torch.argmax(pivots, dim=1).view(-1, 1, 1).expand(-1, 1, 4)
    quat = torch.gather(candidates, 1, best)[:, 0, :]
    quat = functional.normalize(quat, dim=1, eps=1e-12)
    return torch.where(quat[:, 0:1] < 0, -quat, quat)


def rotation_from_quat_wxyz(quat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) of quaternions (N, 4), w first (normalized first)."""
    w, x, y, z = functional.normalize(quat, dim=1).unbind(1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1),
        ],
        1,
    )


def geodesic_angle_rad(rotation_a: torch.Tensor, rotation_b: torch.Tensor) -> torch.Tensor:
    """Angle [rad] (N,) of the rotation between ``rotation_a`` and ``rotation_b`` (N, 3, 3).

    atan2 of sine and cosine, not acos of the trace: acos has an infinite gradient at 0 and 180 degrees.
    """
    relative = rotation_a.transpose(1, 2) @ rotation_b
    cosine = (relative.diagonal(dim1=1, dim2=2).sum(1) - 1.0) / 2.0
    axis_sine = torch.stack(
        [
            relative[:, 2, 1] - relative[:, 1, 2],
            relative[:, 0, 2] - relative[:, 2, 0],
            relative[:, 1, 0] - relative[:, 0, 1],
        ],
        1,
    )
    sine = torch.sqrt((axis_sine * axis_sine).sum(1) + 1e-12) / 2.0
    return torch.atan2(sine, cosine)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms: position L1 [per cm], geodesic rotation [per 10 deg], confidence BCE."""

    position_per_cm: float = 1.0
    rotation_per_10_deg: float = 1.0
    confidence: float = 0.1


def pose_loss(
    position_m: torch.Tensor,
    rotation: torch.Tensor,
    confidence: torch.Tensor,
    true_position_m: torch.Tensor,
    true_rotation: torch.Tensor,
    visible: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss and its named terms (each a scalar; errors per sample, detached, for logging).

    ``visible`` (N,) bool: samples that show enough of the cube to have a pose loss; the others teach the
    confidence head only (target 0).
    """
    position_error_m = (position_m - true_position_m).abs().sum(1)  # L1 over x, y, z
    position_distance_m = (position_m - true_position_m).norm(dim=1)
    angle_rad = geodesic_angle_rad(rotation, true_rotation)
    mask = visible.to(position_m.dtype)
    n_visible = mask.sum().clamp(min=1.0)
    position_term = (position_error_m / 0.01 * mask).sum() / n_visible
    rotation_term = (angle_rad / math.radians(10.0) * mask).sum() / n_visible
    target = torch.exp(
        -(position_distance_m / CONFIDENCE_POSITION_SCALE_M + angle_rad / CONFIDENCE_ROTATION_SCALE_RAD)
    ).detach()
    target = target * mask
    confidence_term = functional.binary_cross_entropy(confidence.clamp(1e-6, 1 - 1e-6), target)
    total = (
        weights.position_per_cm * position_term
        + weights.rotation_per_10_deg * rotation_term
        + weights.confidence * confidence_term
    )
    terms = {
        "loss": total.detach(),
        "loss/position": position_term.detach(),
        "loss/rotation": rotation_term.detach(),
        "loss/confidence": confidence_term.detach(),
        "position_error_m": position_distance_m.detach(),
        "rotation_error_rad": angle_rad.detach(),
    }
    return total, terms


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cross product (N, 3) written out (exports to plain ONNX ops)."""
    return torch.stack(
        [
            a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
            a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
            a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
        ],
        1,
    )
