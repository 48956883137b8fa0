"""The policy file (ONNX): its metadata contract, and reading and describing a file.

A policy file has one input ``obs`` [batch, n_obs] float32 and one output ``action`` [batch, n_act] float32
in [-1, 1], normalization inside the graph. Its ``metadata_props`` hold one entry, :data:`POLICY_METADATA_KEY`,
whose value is a JSON document validated by :class:`PolicyMetadata`: task, seed, domain randomization,
history, max pose age [s], control rate [Hz], hand profile name and fingerprint, the observation spec, the
action spec (joint order and how an action maps to joint targets), the safety limits used in training, the
commit, and optionally facts of the training run.

This module reads files with onnxruntime only: the robot-side deploy path needs neither torch nor the
``onnx`` package (``handrail.sim.export`` writes files and uses both).

Matching a policy to a hand lives in :mod:`handrail.deploy.policy_match`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from handrail.errors import HandrailError
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.actions import ActionMap
from handrail.sim.observation import ObservationSpec
from handrail.sim.tasks import TASK_NAMES

POLICY_METADATA_KEY = "handrail_policy"
POLICY_SCHEMA_VERSION = 1
INPUT_NAME = "obs"
OUTPUT_NAME = "action"
FLOAT_TENSOR = "tensor(float)"  # onnxruntime's name for a float32 tensor


class PolicyFileError(HandrailError):
    """A policy file is missing, not ONNX, lacks handrail metadata, or its metadata is malformed."""


# Each spec is kept in the metadata as the dict it was written as; these check that it parses.
_SPEC_PARSERS = {
    "observation_spec": ObservationSpec.from_dict,
    "action_spec": ActionMap.from_dict,
    "safety_limits": SafetyLimits.from_dict,
}


class PolicyMetadata(BaseModel):
    """The JSON document stored under :data:`POLICY_METADATA_KEY` in a policy file's ``metadata_props``.

    The three specs are kept as their JSON dicts (as written) and checked to parse; :attr:`observation`,
    :attr:`action_map` and :attr:`limits` give the parsed objects.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int
    task: str = Field(min_length=1)
    seed: int
    dr: Any = Field(description="the domain randomization of the run, as training recorded it (JSON)")
    history: int = Field(ge=1)
    max_pose_age_s: float = Field(gt=0, allow_inf_nan=False)
    control_rate_hz: float = Field(gt=0, allow_inf_nan=False)
    profile_name: str = Field(min_length=1)
    profile_fingerprint: str = Field(min_length=1)
    observation_spec: dict[str, Any]
    action_spec: dict[str, Any]
    safety_limits: dict[str, Any]
    commit: str
    # Where the hand should be when the policy takes over [rad], policy order (None: the profile's home pose).
    start_pose_rad: list[float] | None = None
    training: dict[str, Any] | None = None
    # How the training simulator stepped (handrail.sim.sim_settings.SimSettings.to_dict: control rate, physics
    # timestep, substeps, integrator, solver budget); None: the profile's rate on the MJCF's own physics.
    sim: dict[str, Any] | None = None

    @field_validator("observation_spec", "action_spec", "safety_limits")
    @classmethod
    def _spec_parses(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            _SPEC_PARSERS[info.field_name](value)
        except HandrailError as error:
            raise ValueError(str(error)) from error
        return value

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, version: int) -> int:
        if version != POLICY_SCHEMA_VERSION:
            raise ValueError(_schema_message(version))
        return version

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASK_NAMES:
            raise ValueError(f"task {task!r} is unknown to this handrail (it runs {', '.join(TASK_NAMES)})")
        return task

    @model_validator(mode="after")
    def _one_joint_count(self) -> PolicyMetadata:
        limits = self.limits
        if limits.n_joints != self.action_map.n_joints:
            raise ValueError(
                f"safety_limits hold {limits.n_joints} joints but action_spec names {self.action_map.n_joints} "
                "— both must describe the same joints in policy order"
            )
        if self.start_pose_rad is not None:
            # The loop drives the hand there before the policy starts: it must be a pose the limits allow.
            start = np.asarray(self.start_pose_rad, dtype=np.float64)
            if start.shape != (limits.n_joints,):
                raise ValueError(f"start_pose_rad has {start.size} values for {limits.n_joints} joints")
            outside = ~((start >= limits.soft_low_rad - 1e-9) & (start <= limits.soft_high_rad + 1e-9))
            for joint in np.flatnonzero(outside)[:1].tolist():
                raise ValueError(
                    f"start_pose_rad of joint {self.joint_names[joint]!r} = {start[joint]} lies outside its soft "
                    f"limits [{limits.soft_low_rad[joint]}, {limits.soft_high_rad[joint]}] — re-export the policy"
                )
        return self

    @property
    def observation(self) -> ObservationSpec:
        return ObservationSpec.from_dict(self.observation_spec)

    @property
    def action_map(self) -> ActionMap:
        return ActionMap.from_dict(self.action_spec)

    @property
    def limits(self) -> SafetyLimits:
        return SafetyLimits.from_dict(self.safety_limits)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Joints in policy order (the action spec's)."""
        return tuple(self.action_spec["joint_names"])

    @property
    def n_obs(self) -> int:
        return self.observation.n_obs

    @property
    def n_act(self) -> int:
        return len(self.joint_names)

    def to_json(self) -> str:
        """The document for ``metadata_props`` (floats round-trip exactly; no ``training`` key when None)."""
        document = self.model_dump(mode="json")
        for optional in ("training", "sim"):
            if document[optional] is None:
                del document[optional]
        return json.dumps(document, sort_keys=True, separators=(",", ":"))


REQUIRED_FIELDS = tuple(name for name, field in PolicyMetadata.model_fields.items() if field.is_required())


def _schema_message(version: Any) -> str:
    return (
        f"policy metadata schema_version {version!r} is not supported — this handrail reads version "
        f"{POLICY_SCHEMA_VERSION}; use the handrail that exported the policy, or re-export it with this one"
    )


def annotate_hint(path: str | Path) -> str:
    """How to add metadata to ``path``: the command the error messages suggest."""
    return (
        f"add them with `handrail policy annotate {path} --from-checkpoint CKPT` (the checkpoint it was exported "
        "from) or `--metadata meta.json` (a JSON object with these fields)"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_policy_metadata(document: Any, source: str = "the document") -> PolicyMetadata:
    """Validate a metadata document (a mapping); PolicyFileError lists missing, unknown and bad fields.

    ``source`` names where the document came from in the messages (a file, ``--metadata meta.json``).
    """
    if not isinstance(document, Mapping):
        raise PolicyFileError(f"{source}: metadata must be a JSON object, got {type(document).__name__}")
    if "schema_version" in document and document["schema_version"] != POLICY_SCHEMA_VERSION:
        raise PolicyFileError(f"{source}: {_schema_message(document['schema_version'])}")
    try:
        return PolicyMetadata.model_validate(dict(document))
    except ValidationError as error:
        raise PolicyFileError(_describe_validation_error(source, error)) from error


def metadata_from_checkpoint_info(info: Mapping[str, Any], source: str = "checkpoint info") -> PolicyMetadata:
    """The policy metadata of a checkpoint's ``info`` (its keys plus :data:`POLICY_SCHEMA_VERSION`)."""
    return parse_policy_metadata({"schema_version": POLICY_SCHEMA_VERSION, **info}, source)


def _format_sim(sim: dict[str, Any] | None) -> str:
    if not sim:
        return "the profile's rate on the MJCF's own physics (recorded before simulator settings were)"
    keys = ("substeps", "timestep_s", "integrator", "solver_iterations", "impratio")
    if not all(key in sim for key in keys):
        return _short(sim, 100)
    impratio = f"impratio {sim['impratio']:g}" if sim["impratio"] else "the scene's impratio"
    return (
        f"{sim['substeps']} x {sim['timestep_s'] * 1000:.3g} ms {sim['integrator']} physics per tick, "
        f"{sim['solver_iterations']} solver iterations, {impratio}"
    )


def _describe_validation_error(source: str, error: ValidationError) -> str:
    missing, unknown, bad = [], [], []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "<document>"
        if problem["type"] == "missing":
            missing.append(where)
        elif problem["type"] == "extra_forbidden":
            unknown.append(where)
        else:
            message = problem["msg"].removeprefix("Value error, ")
            got = f" (got {_short(problem.get('input'))})" if problem.get("input") is not None else ""
            bad.append(f"{where}: {message}{got}")
    lines = [f"{source} is not valid handrail policy metadata:"]
    if missing:
        lines.append(f"  missing fields: {', '.join(missing)}")
    if unknown:
        lines.append(
            f"  unknown fields: {', '.join(unknown)} — remove them (valid: {', '.join(PolicyMetadata.model_fields)})"
        )
    lines.extend(f"  {line}" for line in bad)
    return "\n".join(lines)


# --- reading a file -------------------------------------------------------------------------------------


class TensorInfo(NamedTuple):
    """One input or output of an ONNX graph: ``shape`` holds ints, or a name/None for a dynamic axis."""

    name: str
    shape: tuple[int | str | None, ...]
    element_type: str  # onnxruntime's spelling, e.g. "tensor(float)"


@dataclass(frozen=True)
class PolicyGraph:
    """What onnxruntime sees in a policy file: its inputs, outputs and custom metadata."""

    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    custom_metadata: dict[str, str]


def read_policy_graph(path: str | Path) -> PolicyGraph:
    """Open ``path`` with onnxruntime; PolicyFileError when it is missing or not a loadable ONNX model."""
    import onnxruntime  # deferred: importing this module (for the metadata schema) needs no runtime

    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(
            f"policy file {path} does not exist — export one with `handrail export CHECKPOINT --out {path}`"
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors surface as our exception, not as runtime log lines
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several pybind error kinds; all mean "not a usable model"
        raise PolicyFileError(
            f"{path} is not an ONNX model onnxruntime can load ({type(error).__name__}: {str(error)[:300]}) — "
            "give the .onnx written by `handrail export`"
        ) from error

    def info(nodes: Sequence[Any]) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(node.name, tuple(node.shape), node.type) for node in nodes)

    return PolicyGraph(
        path=path,
        inputs=info(session.get_inputs()),
        outputs=info(session.get_outputs()),
        custom_metadata=dict(session.get_modelmeta().custom_metadata_map),
    )


def metadata_from_graph(graph: PolicyGraph) -> PolicyMetadata:
    """The handrail metadata of an opened policy file; PolicyFileError naming missing fields and the fix."""
    text = graph.custom_metadata.get(POLICY_METADATA_KEY)
    if text is None:
        others = sorted(graph.custom_metadata)
        carried = f" (it carries only {', '.join(others)})" if others else ""
        raise PolicyFileError(
            f"policy file {graph.path} has no handrail metadata: metadata_props lack {POLICY_METADATA_KEY!r}{carried}, "
            f"so nothing says which hand, observation layout and limits it was trained for. Missing fields: "
            f"{', '.join(REQUIRED_FIELDS)} — {annotate_hint(graph.path)}"
        )
    try:
        document = json.loads(text)
    except ValueError as error:
        raise PolicyFileError(
            f"policy file {graph.path}: metadata {POLICY_METADATA_KEY!r} is not valid JSON ({error}) — "
            f"{annotate_hint(graph.path)}"
        ) from error
    try:
        return parse_policy_metadata(document, f"policy file {graph.path}")
    except PolicyFileError as error:
        missing_hint = f"\n{annotate_hint(graph.path)}" if "missing fields" in str(error) else ""
        raise PolicyFileError(f"{error}{missing_hint}") from error


def read_policy_metadata(path: str | Path) -> PolicyMetadata:
    """The validated handrail metadata of the policy file at ``path``.

    Raises PolicyFileError when the file is missing, not ONNX, has no :data:`POLICY_METADATA_KEY` entry, or
    the entry lacks fields (listed by name, with the ``handrail policy annotate`` command that adds them).
    """
    return metadata_from_graph(read_policy_graph(path))


def io_differences(metadata: PolicyMetadata, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> list[str]:
    """Where a graph's inputs/outputs break the contract (``obs`` [batch, n_obs], ``action`` [batch, n_act])."""
    problems: list[str] = []
    for kind, tensors, name, size in (
        ("input", inputs, INPUT_NAME, metadata.n_obs),
        ("output", outputs, OUTPUT_NAME, metadata.n_act),
    ):
        if len(tensors) != 1:
            listed = ", ".join(tensor.name for tensor in tensors) or "none"
            problems.append(f"the graph needs exactly one {kind} {name!r}, it has {len(tensors)}: {listed}")
            continue
        tensor = tensors[0]
        if tensor.name != name:
            problems.append(f"the graph's {kind} is named {tensor.name!r}, the contract names it {name!r}")
        if tensor.element_type != FLOAT_TENSOR:
            problems.append(f"{kind} {tensor.name!r} is {tensor.element_type}, the contract needs float32")
        if len(tensor.shape) != 2 or tensor.shape[1] != size:
            problems.append(
                f"{kind} {tensor.name!r} has shape {list(tensor.shape)}, but the metadata's spec needs [batch, {size}]"
            )
    return problems


def read_policy(path: str | Path) -> tuple[PolicyMetadata, PolicyGraph]:
    """Metadata and graph of a policy file, checked against each other (PolicyFileError on a disagreement)."""
    graph = read_policy_graph(path)
    metadata = metadata_from_graph(graph)
    problems = io_differences(metadata, graph.inputs, graph.outputs)
    if problems:
        raise PolicyFileError(
            f"policy file {graph.path}: the graph does not fit its own metadata:\n  - "
            + "\n  - ".join(problems)
            + "\nre-export it with `handrail export`, or annotate it with the metadata of the checkpoint it came from"
        )
    return metadata, graph


# --- describing a file ----------------------------------------------------------------------------------


def _format_training(training: Mapping[str, Any] | None) -> str:
    if not training:
        return "(no training facts recorded)"
    return ", ".join(f"{key} {_short(value, 40)}" for key, value in training.items())


def _format_tensor(tensor: TensorInfo) -> str:
    dims = ", ".join("?" if dim is None else str(dim) for dim in tensor.shape)
    return f"{tensor.name} [{dims}] {tensor.element_type}"


def describe_policy(path: str | Path) -> str:
    """A readable summary of a policy file (what ``handrail policy info`` prints).

    Raises PolicyFileError when the file has no (or incomplete) handrail metadata.
    """
    graph = read_policy_graph(path)
    metadata = metadata_from_graph(graph)
    action_map = metadata.action_map
    action_text = f"n_act {metadata.n_act}, mode {action_map.mode}"
    if action_map.max_delta_rad is not None:
        low, high = float(np.min(action_map.max_delta_rad)), float(np.max(action_map.max_delta_rad))
        action_text += f", max_delta_rad {low:.4g}..{high:.4g} rad per tick"
    fields = ", ".join(f"{name} {size}" for name, size in metadata.observation.fields)
    rows = [
        ("policy file", f"{graph.path} ({graph.path.stat().st_size / 1024:.1f} KiB)"),
        ("task", metadata.task),
        ("hand profile", f"{metadata.profile_name} (fingerprint {metadata.profile_fingerprint})"),
        (f"joints ({metadata.n_act})", ", ".join(metadata.joint_names)),
        ("observation", f"n_obs {metadata.n_obs}: {fields}"),
        ("action", action_text),
        ("control rate", f"{metadata.control_rate_hz:g} Hz (the loop runs the policy at this rate)"),
        ("simulator", _format_sim(metadata.sim)),
        ("history", f"{metadata.history}; max pose age {metadata.max_pose_age_s:g} s"),
        ("seed", str(metadata.seed)),
        ("commit", metadata.commit or "(unknown)"),
        ("randomization", _short(metadata.dr, 100)),
        ("training", _format_training(metadata.training)),
        ("inputs", "; ".join(_format_tensor(tensor) for tensor in graph.inputs)),
        ("outputs", "; ".join(_format_tensor(tensor) for tensor in graph.outputs)),
    ]
    problems = io_differences(metadata, graph.inputs, graph.outputs)
    if problems:
        rows.append(("PROBLEMS", "; ".join(problems)))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{printable(label):<{width}}  {printable(value)}" for label, value in rows)


def printable(text: str) -> str:
    """``text`` with control characters escaped: a file's words must not drive the terminal (ANSI escapes)."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)
