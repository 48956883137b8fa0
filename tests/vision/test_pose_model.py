"""The pose CNN's rotation maths, and training through the CLI: the error falls, checkpoints load safely, resume."""

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from handrail.cli_vision import main
from handrail.vision import pose_training
from handrail.vision.dataset import load_samples
from handrail.vision.pose_checkpoint import load_pose_checkpoint, net_from_checkpoint, pose_errors
from handrail.vision.pose_model import (
    PoseNet,
    PoseNetConfig,
    count_parameters,
    geodesic_angle_rad,
    pose_loss,
    quat_wxyz_from_rotation,
    rotation_from_6d,
    rotation_from_quat_wxyz,
)
from handrail.vision.pose_training import PoseTrainConfig, PoseTrainError
from handrail.vision.transforms import matrix_from_quat_wxyz


def _random_quats(n: int, seed: int = 0) -> torch.Tensor:
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(seed)), dim=1)
    return torch.where(quats[:, :1] < 0, -quats, quats)


def test_quaternion_and_matrix_round_trip_including_near_180_degrees() -> None:
    quats = _random_quats(500)
    # Rotations by nearly 180 degrees (w ~ 0) pick the x, y or z pivot of Shepperd's method.
    quats[:3] = torch.tensor([[1e-4, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.6, 0.0, 0.8]])
    quats = torch.nn.functional.normalize(quats, dim=1)
    recovered = quat_wxyz_from_rotation(rotation_from_quat_wxyz(quats))
    sign_free = torch.minimum((recovered - quats).abs().amax(1), (recovered + quats).abs().amax(1))
    assert sign_free.max() < 1e-5
    assert (recovered[:, 0] >= 0).all()
    # The same convention as the numpy side (mujoco's).
    np.testing.assert_allclose(
        rotation_from_quat_wxyz(quats[3:4])[0].numpy(), matrix_from_quat_wxyz(quats[3]), atol=1e-6
    )


def test_the_6d_representation_gives_proper_rotations_and_covers_them() -> None:
    rotation = rotation_from_6d(torch.randn(100, 6))
    identity = torch.eye(3).expand(100, 3, 3)
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, identity, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(100), atol=1e-5)
    # Any rotation is reached: its own first two columns map back to it.
    targets = rotation_from_quat_wxyz(_random_quats(100, seed=1))
    six_d = torch.cat([targets[:, :, 0], targets[:, :, 1]], dim=1)
    assert torch.allclose(rotation_from_6d(six_d), targets, atol=1e-5)


def test_geodesic_angle_is_the_rotation_angle_with_finite_gradients_at_zero() -> None:
    axis_angles = torch.tensor([0.0, 0.3, 1.0, 2.0, 3.1])
    rotations = torch.stack(
        [rotation_from_quat_wxyz(torch.tensor([[math.cos(a / 2), 0.0, math.sin(a / 2), 0.0]]))[0] for a in axis_angles]
    )
    angles = geodesic_angle_rad(torch.eye(3).expand(5, 3, 3), rotations)
    assert torch.allclose(angles, axis_angles, atol=1e-3)
    six_d = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], requires_grad=True)
    geodesic_angle_rad(rotation_from_6d(six_d), torch.eye(3)[None]).sum().backward()
    assert torch.isfinite(six_d.grad).all()


def test_the_loss_ignores_the_pose_of_hidden_cubes_and_teaches_their_confidence_down() -> None:
    torch.manual_seed(0)
    position, rotation = torch.randn(4, 3), rotation_from_6d(torch.randn(4, 6))
    truth_position, truth_rotation = torch.randn(4, 3), rotation_from_6d(torch.randn(4, 6))
    visible = torch.tensor([True, True, False, False])
    _, terms = pose_loss(position, rotation, torch.full((4,), 0.5), truth_position, truth_rotation, visible)
    moved = truth_position.clone()
    moved[2:] += 10.0  # a hidden cube's label does not matter
    _, moved_terms = pose_loss(position, rotation, torch.full((4,), 0.5), moved, truth_rotation, visible)
    assert torch.isclose(terms["loss/position"], moved_terms["loss/position"])
    confident_on_hidden = torch.tensor([0.01, 0.01, 0.99, 0.99])
    _, bad = pose_loss(position, rotation, confident_on_hidden, truth_position, truth_rotation, visible)
    assert bad["loss/confidence"] > terms["loss/confidence"]


def test_the_default_network_is_small() -> None:
    net = PoseNet(PoseNetConfig())
    assert 0.5e6 < count_parameters(net) < 2e6  # a few MB as float32
    position_m, rotation, confidence = net.eval()(torch.zeros(2, 128, 128, 3, dtype=torch.uint8))
    assert position_m.shape == (2, 3) and rotation.shape == (2, 3, 3) and confidence.shape == (2,)


def test_training_through_the_cli_makes_the_error_fall(tiny_run: Path, tiny_dataset: Path) -> None:
    checkpoint = load_pose_checkpoint(tiny_run)  # torch.load(weights_only=True) inside
    trained = net_from_checkpoint(checkpoint)
    torch.manual_seed(0)  # the run's seed: the same initial weights
    untrained = PoseNet(PoseNetConfig(**checkpoint["network"])).eval()
    samples = load_samples(tiny_dataset)
    n_train = 61  # the last 5 % (3 samples) are the run's validation split
    args = (samples["images"][:n_train], samples["position_m"][:n_train], samples["quat_wxyz"][:n_train])
    before_mm, before_deg, _ = pose_errors(untrained, *args)
    after_mm, after_deg, _ = pose_errors(trained, *args)
    print(
        f"\ntiny run, training images: position median {np.median(before_mm):.1f} -> {np.median(after_mm):.1f} mm, "
        f"rotation median {np.median(before_deg):.1f} -> {np.median(after_deg):.1f} deg"
    )
    assert np.median(after_mm) < 0.6 * np.median(before_mm)
    assert np.median(after_deg) < 0.75 * np.median(before_deg)
    with (tiny_run / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 20 and int(rows[-1]["step"]) == 60
    losses = [float(row["train_loss"]) for row in rows]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    assert (tiny_run / "checkpoints" / "epoch_0020.pt").is_file() and (tiny_run / "run.json").is_file()


def test_resume_continues_the_run_and_a_second_run_is_refused(
    tiny_run: Path, tiny_dataset: Path, tiny: SimpleNamespace, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("latest.pt", "metrics.csv"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    args = ["train", "--data", str(tiny_dataset), "--out", str(run), *tiny.train_args, "--no-export"]
    assert main(args) == 2  # an existing run without --resume
    args[args.index("--epochs") + 1] = "21"
    assert main([*args, "--resume"]) == 0
    checkpoint = load_pose_checkpoint(run / "latest.pt")
    assert checkpoint["epoch"] == 21 and checkpoint["step"] == 63
    with pytest.raises(PoseTrainError, match="--epochs or --minutes"):
        PoseTrainConfig(data=tiny_dataset, out=run)


def test_the_confidence_exponent_tames_an_overconfident_head(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 40
    split = pose_training._Split(
        images=np.zeros((n, 16, 16, 3), np.uint8),
        position_m=np.zeros((n, 3), np.float32),
        quat_wxyz=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        visible=np.ones(n, bool),
    )

    def errors(position_mm: float, rotation_deg: float, confidence: float):
        return lambda *_: (np.full(n, position_mm), np.full(n, rotation_deg), np.full(n, confidence))

    # Says 0.9 but is 20 mm and 30 deg off (target exp(-5) ~ 0.007): the exponent pushes it towards 0.
    monkeypatch.setattr(pose_training, "pose_errors", errors(20.0, 30.0, 0.9))
    exponent = pose_training._fit_confidence_exponent(None, split)
    assert exponent > 8.0 and 0.9**exponent < 0.4
    # Says what it is (0.37 for 5 mm and 5 deg): left about alone.
    monkeypatch.setattr(pose_training, "pose_errors", errors(5.0, 5.0, math.exp(-1.0)))
    assert 0.8 < pose_training._fit_confidence_exponent(None, split) < 1.25
