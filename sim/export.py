"""ONNX export: a training checkpoint -> a policy file the robot runs with onnxruntime alone.

:func:`export_policy` bakes the observation normalizer and the deterministic actor into one graph
(``obs`` [batch, n_obs] float32 -> ``action`` [batch, n_act] float32 in [-1, 1]), writes the checkpoint's
facts into ``metadata_props`` (:mod:`handrail.deploy.policy_file` is the contract) and proves the file
computes the checkpoint's policy: onnxruntime against torch (max abs difference <= :data:`PARITY_ATOL`)
and against the checkpoint's numpy reference :meth:`Checkpoint.act` (<= :data:`REFERENCE_ATOL`, float32
against float64), on observations around the normalizer's mean and far outside it. A failed check deletes
the partial file and raises :class:`ExportError`; the output appears only complete (written, then renamed).

:func:`annotate_policy` adds or replaces the metadata of an ONNX exported by another tool.

Exporter: torch's TorchScript-based exporter (``dynamo=False``). The torch.export-based one needs
``onnxscript``, which the ``train`` extra does not install; an MLP has no control flow to gain from it.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from handrail.deploy.policy_file import (
    POLICY_METADATA_KEY,
    PolicyMetadata,
    TensorInfo,
    io_differences,
    metadata_from_checkpoint_info,
    read_policy,
)
from handrail.deploy.policy_match import check_policy_matches
from handrail.errors import HandrailError
from handrail.robot.profile import load_profile
from handrail.sim.checkpoint import Checkpoint, load_checkpoint

PARITY_ATOL = 1e-5  # onnxruntime vs torch, both float32
REFERENCE_ATOL = 1e-4  # onnxruntime (float32) vs Checkpoint.act (float64)
OPSET_VERSION = 17
EXTREME_FRACTION = 0.1  # share of parity samples far outside the normalizer's range
_ACTIVATION_MODULES = {"elu": nn.ELU, "tanh": nn.Tanh, "relu": nn.ReLU}


class ExportError(HandrailError):
    """A policy could not be exported, or the exported file does not compute the checkpoint's policy."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_policy` wrote and how closely it matches the checkpoint."""

    path: Path
    n_obs: int
    n_act: int
    parity_samples: int
    max_abs_diff: float  # onnxruntime vs torch
    max_abs_diff_reference: float  # onnxruntime vs Checkpoint.act
    file_size_bytes: int
    warnings: tuple[str, ...] = ()  # from the check against ``profile``: same hand, other name or fingerprint

    def format(self) -> str:
        return "\n".join(
            (
                *(f"warning: {warning}" for warning in self.warnings),
                f"wrote {self.path} ({self.file_size_bytes / 1024:.1f} KiB): obs [batch, {self.n_obs}] -> "
                f"action [batch, {self.n_act}]",
                f"parity on {self.parity_samples} observations: max |onnxruntime - torch| = {self.max_abs_diff:.2e} "
                f"(limit {PARITY_ATOL:g}); max |onnxruntime - checkpoint| = {self.max_abs_diff_reference:.2e} "
                f"(limit {REFERENCE_ATOL:g})",
            )
        )


class PolicyModule(nn.Module):
    """The deployed policy: ``clip(actor(clip((obs - mean) / sqrt(var + eps), ±clip_obs)), -1, 1)``."""

    def __init__(self, checkpoint: Checkpoint):
        super().__init__()
        std = np.sqrt(np.asarray(checkpoint.obs_var, dtype=np.float64) + checkpoint.obs_epsilon)
        self.register_buffer("obs_mean", torch.tensor(checkpoint.obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(std, dtype=torch.float32))
        self.clip_obs = float(checkpoint.clip_obs)
        layers: list[nn.Module] = []
        last = len(checkpoint.actor_weights) - 1
        for index, (weight, bias) in enumerate(zip(checkpoint.actor_weights, checkpoint.actor_biases, strict=True)):
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
                linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))
            layers.append(linear)
            if index < last:
                layers.append(_ACTIVATION_MODULES[checkpoint.activation]())
        self.actor = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        normalized = torch.clamp((obs - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs)
        return torch.clamp(self.actor(normalized), -1.0, 1.0)


def build_policy_module(checkpoint: Checkpoint) -> PolicyModule:
    """The checkpoint's deterministic policy as a torch module in eval mode."""
    return PolicyModule(checkpoint).eval()


def parity_observations(checkpoint: Checkpoint, samples: int, seed: int) -> np.ndarray:
    """(samples, n_obs) float32: most within a few std of the mean, the rest far beyond ``clip_obs``."""
    rng = np.random.default_rng(seed)
    std = np.sqrt(checkpoint.obs_var + checkpoint.obs_epsilon)
    z_scores = rng.normal(0.0, 3.0, size=(samples, checkpoint.n_obs))
    extreme = rng.random(samples) < EXTREME_FRACTION
    z_scores[extreme] *= 10.0 * checkpoint.clip_obs  # saturates the observation clip
    z_scores[0] = 0.0  # the mean itself
    return (checkpoint.obs_mean + z_scores * std).astype(np.float32)


def _onnx_graph_io(model: onnx.ModelProto) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Inputs and outputs of ``model`` as TensorInfo, spelled as onnxruntime does ("tensor(float)")."""
    initializers = {initializer.name for initializer in model.graph.initializer}

    def info(value: onnx.ValueInfoProto) -> TensorInfo:
        tensor_type = value.type.tensor_type
        dims = tuple(
            dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None) for dim in tensor_type.shape.dim
        )
        element = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        return TensorInfo(value.name, dims, f"tensor({element})")

    inputs = tuple(info(value) for value in model.graph.input if value.name not in initializers)
    return inputs, tuple(info(value) for value in model.graph.output)


def _write_metadata(model: onnx.ModelProto, metadata: PolicyMetadata) -> None:
    """Add or replace our metadata_props entry, keeping any other tool's entries."""
    kept = [prop for prop in model.metadata_props if prop.key != POLICY_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = POLICY_METADATA_KEY, metadata.to_json()


def _check_graph(model: onnx.ModelProto, metadata: PolicyMetadata, where: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{where} fails the ONNX checker: {error}") from error
    problems = io_differences(metadata, *_onnx_graph_io(model))
    if problems:
        raise ExportError(
            f"{where} does not fit the policy metadata:\n  - " + "\n  - ".join(problems) + "\nthe contract: one "
            "input 'obs' [batch, n_obs] float32 and one output 'action' [batch, n_act] float32 — export the "
            "policy with these names and sizes, or use the metadata of the policy it really is"
        )


def _save_atomically(model: onnx.ModelProto, out_path: Path) -> None:
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        onnx.save(model, partial)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)


def _run_onnxruntime(model_path: Path, obs: np.ndarray) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    (action,) = session.run(["action"], {"obs": obs})
    return np.asarray(action)


def _parity(
    checkpoint: Checkpoint, module: PolicyModule, model_path: Path, samples: int, seed: int
) -> tuple[float, float]:
    """(max |onnxruntime - torch|, max |onnxruntime - Checkpoint.act|); ExportError beyond the limits."""
    obs = parity_observations(checkpoint, samples, seed)
    onnx_action = _run_onnxruntime(model_path, obs)
    with torch.no_grad():
        torch_action = module(torch.from_numpy(obs)).numpy()
    reference_action = checkpoint.act(obs)
    if onnx_action.shape != reference_action.shape:
        raise ExportError(f"the exported graph returns shape {onnx_action.shape}, expected {reference_action.shape}")
    max_abs_diff = float(np.max(np.abs(onnx_action - torch_action)))
    max_abs_diff_reference = float(np.max(np.abs(onnx_action - reference_action)))
    if not max_abs_diff <= PARITY_ATOL:
        raise ExportError(
            f"onnxruntime and torch disagree by up to {max_abs_diff:.3g} (limit {PARITY_ATOL:g}) on {samples} "
            "observations — the exported graph is not the torch policy; report this with the checkpoint"
        )
    if not max_abs_diff_reference <= REFERENCE_ATOL:
        raise ExportError(
            f"the exported graph differs from the checkpoint's own policy (Checkpoint.act) by up to "
            f"{max_abs_diff_reference:.3g} (limit {REFERENCE_ATOL:g}) — normalization or actor were built wrong"
        )
    return max_abs_diff, max_abs_diff_reference


def _export_graph(module: PolicyModule, n_obs: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of one that needs onnxscript (see the module docstring).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.zeros(1, n_obs, dtype=torch.float32),),
            buffer,
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
            opset_version=OPSET_VERSION,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def _run_facts(checkpoint_path: Path) -> dict[str, Any]:
    """The training facts of the run a checkpoint file belongs to (``run.json`` of its run folder), if any."""
    folder = checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent
    for candidate in (folder / "run.json", folder.parent / "run.json"):
        if candidate.is_file():
            try:
                record = json.loads(candidate.read_text())
            except ValueError:
                return {}
            keys = ("command", "wall_s", "steps_per_s", "hyperparameters", "cpu_count", "dynamics")
            return {key: record[key] for key in keys if key in record}
    return {}


def export_policy(
    checkpoint: Checkpoint | str | Path,
    out_path: str | Path,
    *,
    parity_samples: int = 1000,
    seed: int = 0,
    profile: str | Path | None = None,
) -> ExportReport:
    """Export ``checkpoint`` (a Checkpoint, a checkpoint file or a run folder) to the policy file ``out_path``.

    Raises ExportError (the file is then not written) when the checkpoint's facts are not valid policy
    metadata, the graph fails the ONNX checker, or onnxruntime's actions differ from torch's by more than
    :data:`PARITY_ATOL` or from :meth:`Checkpoint.act` by more than :data:`REFERENCE_ATOL`. With ``profile`` (a
    hand profile file) the checkpoint must have been trained for that hand (ExportError otherwise).
    """
    if not (isinstance(parity_samples, int) and parity_samples >= 1):
        raise ExportError(f"parity_samples = {parity_samples!r} must be a positive integer")
    source = f"checkpoint {checkpoint}" if not isinstance(checkpoint, Checkpoint) else "checkpoint info"
    run_facts: dict[str, Any] = {}
    if not isinstance(checkpoint, Checkpoint):
        run_facts = _run_facts(Path(checkpoint))
        checkpoint = load_checkpoint(checkpoint)
    info = dict(checkpoint.info)
    if run_facts and "training" not in info:
        info["training"] = {**run_facts, "steps": checkpoint.num_timesteps}
    metadata = metadata_from_checkpoint_info(info, source)
    warnings: tuple[str, ...] = ()
    if profile is not None:
        # The deploy loop's check, before a file is written: refused where the hand would refuse it.
        warnings = tuple(check_policy_matches(metadata, load_profile(profile), source=source))
    if (metadata.n_obs, metadata.n_act) != (checkpoint.n_obs, checkpoint.n_act):
        raise ExportError(
            f"{source}: the specs say n_obs {metadata.n_obs}, n_act {metadata.n_act} but the actor takes "
            f"{checkpoint.n_obs} and returns {checkpoint.n_act} — the checkpoint is inconsistent; use another one"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = build_policy_module(checkpoint)
    model = _export_graph(module, checkpoint.n_obs)
    _write_metadata(model, metadata)
    _check_graph(model, metadata, f"the graph exported from {source}")
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        onnx.save(model, partial)
        max_abs_diff, max_abs_diff_reference = _parity(checkpoint, module, partial, parity_samples, seed)
        read_policy(partial)  # the metadata as the robot reads it, and the graph fitting it
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportReport(
        path=out_path,
        n_obs=checkpoint.n_obs,
        n_act=checkpoint.n_act,
        parity_samples=parity_samples,
        max_abs_diff=max_abs_diff,
        max_abs_diff_reference=max_abs_diff_reference,
        file_size_bytes=out_path.stat().st_size,
        warnings=warnings,
    )


def annotate_policy(
    onnx_in: str | Path,
    out_path: str | Path,
    metadata: Mapping[str, Any] | PolicyMetadata,
    *,
    source: str = "the metadata given",
) -> PolicyMetadata:
    """Write ``onnx_in`` with handrail metadata to ``out_path`` (may be the same file; replaced atomically).

    ``metadata`` is validated as :class:`PolicyMetadata` (``schema_version`` may be left out) and must fit
    the graph: one input ``obs`` [batch, n_obs], one output ``action`` [batch, n_act], float32. Raises
    PolicyFileError on bad metadata (``source`` names it in the message), ExportError when the file is not
    ONNX or does not fit.
    """
    if not isinstance(metadata, PolicyMetadata):
        metadata = metadata_from_checkpoint_info(metadata, source)
    onnx_in = Path(onnx_in)
    if not onnx_in.is_file():
        raise ExportError(f"ONNX file {onnx_in} does not exist — check the path")
    try:
        model = onnx.load(onnx_in)
    except Exception as error:  # protobuf raises DecodeError and others on a file that is not ONNX
        raise ExportError(f"{onnx_in} is not an ONNX model ({type(error).__name__}: {error})") from error
    _check_graph(model, metadata, f"ONNX file {onnx_in}")
    _write_metadata(model, metadata)
    _save_atomically(model, Path(out_path))
    return metadata
