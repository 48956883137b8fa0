"""The rollout log: an append-only, crash-tolerant MCAP file written by the control loop as it runs.

Three channels, JSON messages with JSON Schemas (``jsonschema``) so Foxglove can plot every field:

- ``/header`` (once, first): :class:`LogHeader` — profile, calibration, policy fingerprint and metadata,
  safety limits, versions, start time.
- ``/tick`` (every control tick): :class:`TickRecord` — measured joint state, raw policy action, targets
  after safety, safety interventions, object pose estimate and its age, per-phase latencies.
- ``/event``: faults, safe stops, operator stops, start/stop and notes (:data:`EVENT_KINDS`).

Crash tolerance: the file is written in small zstd chunks; the chunk in progress is closed and the file
flushed every ``flush_period_s`` (0.5 s) and at once after the header and after every fault, stop or safe
stop event. A ``kill -9`` or crash of the process loses at most the last ``flush_period_s`` of ticks (a
power loss or OS crash may lose more: there is no fsync); :func:`handrail.deploy.rollout_reader.read_rollout_log`
reads such a file up to its last complete chunk.

Non-finite floats (NaN, ±inf) are not valid JSON: they are written as ``null`` and read back as NaN (the
sign of an infinity is lost). Each tick counts them in ``non_finite_count`` (a NaN measured position is
"no measurement", and a ``non_finite`` intervention has no allowed value, so they do occur).

Log times: each message's MCAP ``log_time`` is wall-clock time [ns] derived from the monotonic clock and
the start time in the header (so Foxglove shows real dates with monotonic spacing); the monotonic
timestamp itself [s] is in the message as ``time_s``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from mcap.writer import CompressionType, Writer
from numpy.typing import ArrayLike

from handrail import __version__
from handrail.deploy.rollout_records import (
    EVENT_KINDS,
    EVENT_TOPIC,
    FAULT,
    HEADER_TOPIC,
    INFO,
    JOINT_ARRAYS,
    LOG_SCHEMA_VERSION,
    MESSAGE_ENCODING,
    OPERATOR_STOP,
    PHASES,
    SAFE_STOP,
    SCHEMA_ENCODING,
    START,
    STOP,
    TICK_TOPIC,
    LogHeader,
    PoseRecord,
    RolloutLogError,
    TickRecord,
    file_sha256,
    runtime_versions,
)
from handrail.robot.safety_filter import INTERVENTION_KINDS

__all__ = [
    "EVENT_KINDS",
    "EVENT_TOPIC",
    "FAULT",
    "HEADER_TOPIC",
    "INFO",
    "JOINT_ARRAYS",
    "LOG_SCHEMA_VERSION",
    "OPERATOR_STOP",
    "PHASES",
    "SAFE_STOP",
    "START",
    "STOP",
    "TICK_TOPIC",
    "LogHeader",
    "PoseRecord",
    "RolloutLogError",
    "RolloutLogWriter",
    "TickRecord",
    "file_sha256",
    "runtime_versions",
]

# Events after which the process may well die: on disk at once, not at the next periodic flush.
_FLUSH_NOW_KINDS = frozenset({FAULT, SAFE_STOP, OPERATOR_STOP, STOP})


def _number_or_null(description: str) -> dict[str, Any]:
    return {"type": ["number", "null"], "description": description}


def _array_of_numbers(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": ["number", "null"]}, "description": description}


def _tick_schema() -> dict[str, Any]:
    joint = "per joint, policy order; null = not finite"
    return {
        "title": "handrail.Tick",
        "type": "object",
        "properties": {
            "tick": {"type": "integer", "description": "tick index from the start of the run"},
            "time_s": {"type": "number", "description": "monotonic time at the start of the tick [s]"},
            "position_rad": _array_of_numbers(f"measured joint position [rad], {joint}"),
            "velocity_rad_s": _array_of_numbers(f"measured joint velocity [rad/s], {joint}"),
            "current_ma": _array_of_numbers(f"measured current [mA], {joint}"),
            "temperature_c": _array_of_numbers(f"measured temperature [degC], {joint}"),
            "target_rad": _array_of_numbers(f"target commanded after the safety layer [rad], {joint}"),
            "action": {
                "type": ["array", "null"],
                "items": {"type": ["number", "null"]},
                "description": "raw policy action in [-1, 1]; null when no policy ran",
            },
            "interventions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "joint": {"type": "integer", "description": "joint index; -1 = the whole action"},
                        "kind": {"type": "string", "enum": list(INTERVENTION_KINDS)},
                        "raw": _number_or_null("value the stage received [rad]"),
                        "allowed": _number_or_null("value the stage let through [rad]"),
                    },
                },
            },
            "intervention_counts": {
                "type": "object",
                "properties": {kind: {"type": "integer"} for kind in INTERVENTION_KINDS},
            },
            "pose": {
                "type": ["object", "null"],
                "properties": {
                    "position_m": _array_of_numbers("object position in the hand frame [m] (3)"),
                    "quat_wxyz": _array_of_numbers("object orientation in the hand frame, w first (4)"),
                    "age_s": _number_or_null("age of the estimate [s]"),
                    "source": {"type": "string"},
                    "valid": {"type": "boolean"},
                },
            },
            "latency_ms": {
                "type": "object",
                "properties": {phase: _number_or_null(f"{phase} phase [ms]") for phase in PHASES},
            },
            "missed_deadline": {"type": "boolean"},
            "non_finite_count": {"type": "integer", "description": "non-finite floats written as null"},
        },
    }


def _event_schema() -> dict[str, Any]:
    return {
        "title": "handrail.Event",
        "type": "object",
        "properties": {
            "time_s": {"type": "number", "description": "monotonic time [s]"},
            "tick": {"type": ["integer", "null"], "description": "the last tick written before the event"},
            "kind": {"type": "string", "enum": list(EVENT_KINDS)},
            "message": {"type": "string"},
            "details": {"type": "object"},
        },
    }


def _header_schema() -> dict[str, Any]:
    fields_ = LogHeader.__dataclass_fields__
    return {"title": "handrail.RolloutHeader", "type": "object", "properties": {name: {} for name in fields_}}


def log_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of each topic of a rollout log (the live view advertises the same ones)."""
    return {HEADER_TOPIC: _header_schema(), TICK_TOPIC: _tick_schema(), EVENT_TOPIC: _event_schema()}


def _finite_list(values: ArrayLike, name: str, length: int | None) -> tuple[list[float | None], int]:
    """``values`` as a JSON list, non-finite entries as None; also how many were non-finite."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RolloutLogError(f"tick field {name} is not an array of numbers: {error}") from error
    if array.ndim != 1 or (length is not None and array.shape[0] != length):
        expected = f"({length},)" if length is not None else "one-dimensional"
        raise RolloutLogError(f"tick field {name} has shape {array.shape}, expected {expected}")
    finite = np.isfinite(array)
    if finite.all():
        return array.tolist(), 0
    return [value if ok else None for value, ok in zip(array.tolist(), finite.tolist(), strict=True)], int(
        finite.size - np.count_nonzero(finite)
    )


def _finite_float(value: Any) -> tuple[float | None, int]:
    """``value`` as a float, or None when it is None or not finite; also 1 if it was a non-finite number."""
    if value is None:
        return None, 0
    number = float(value)
    return (number, 0) if math.isfinite(number) else (None, 1)


def _jsonable(value: Any) -> tuple[Any, int]:
    """``value`` made JSON-safe (numpy -> Python, paths -> str, non-finite floats -> None); nulled count."""
    if value is None or isinstance(value, (bool, str, int)):
        return value, 0
    if isinstance(value, (float, np.floating)):
        return _finite_float(value)
    if isinstance(value, np.integer):
        return int(value), 0
    if isinstance(value, np.bool_):
        return bool(value), 0
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        out, nulled = {}, 0
        for key, item in value.items():
            out[str(key)], count = _jsonable(item)
            nulled += count
        return out, nulled
    if isinstance(value, (list, tuple)):
        items = [_jsonable(item) for item in value]
        return [item for item, _ in items], sum(count for _, count in items)
    return str(value), 0


class RolloutLogWriter:
    """Writes one rollout log (MCAP) as the loop runs. Not thread-safe: call it from the loop's thread.

    Order: :meth:`write_header` once, then any number of :meth:`write_tick` and :meth:`write_event`, then
    :meth:`close` (idempotent; also on leaving a ``with`` block). A log that was never closed (crash) is
    still readable up to its last flush.

    Args:
        path: the ``.mcap`` file to create; its folder is created if needed.
        flush_period_s: close the chunk in progress and flush the file at least this often [s].
        chunk_size_bytes: close a chunk once it holds this many bytes, whatever the time.
        overwrite: replace an existing file (default: refuse, a rollout log is a record).
        clock: the monotonic clock [s] used for flush timing and default event times.
        tee: also called with (topic, log time [ns], JSON bytes) for every message written — the live view
            (:mod:`handrail.deploy.live_view`) gets exactly what the log gets; it must return at once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        flush_period_s: float = 0.5,
        chunk_size_bytes: int = 32 * 1024,
        overwrite: bool = False,
        clock: Callable[[], float] = time.monotonic,
        tee: Callable[[str, int, bytes], None] | None = None,
    ):
        if not (flush_period_s > 0 and chunk_size_bytes > 0):
            raise RolloutLogError(
                f"flush_period_s = {flush_period_s!r} and chunk_size_bytes = {chunk_size_bytes!r} must be positive"
            )
        self.path = Path(path)
        self.flush_period_s = float(flush_period_s)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file: IO[bytes] = open(self.path, "wb" if overwrite else "xb")
        except FileExistsError as error:
            raise RolloutLogError(
                f"rollout log {self.path} already exists — choose another path (or pass overwrite=True)"
            ) from error
        self._writer = Writer(self._file, chunk_size=chunk_size_bytes, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library=f"handrail {__version__}")
        self._channels = {
            topic: self._writer.register_channel(
                topic,
                MESSAGE_ENCODING,
                self._writer.register_schema(schema["title"], SCHEMA_ENCODING, json.dumps(schema).encode()),
            )
            for topic, schema in log_schemas().items()
        }
        self._tee = tee
        self._header: LogHeader | None = None
        self._start_unix_ns = 0
        self._last_flush_s = clock()
        self._last_tick: int | None = None
        self._closed = False
        self.n_ticks = 0
        self.non_finite_count = 0  # non-finite floats written as null, over the whole log

    # -- writing --------------------------------------------------------------------------------------------

    def write_header(self, header: LogHeader) -> None:
        """Write the header (once, before any tick or event) and flush it to disk."""
        self._check_open()
        if self._header is not None:
            raise RolloutLogError(f"rollout log {self.path}: the header was already written (once per log)")
        document, nulled = _jsonable(header.to_dict())
        self._header = header
        self._start_unix_ns = header.start_unix_ns
        self._add(HEADER_TOPIC, header.start_monotonic_s, document)
        self.non_finite_count += nulled
        self.flush()

    def write_tick(self, record: TickRecord) -> None:
        """Append one tick; raises :class:`RolloutLogError` on a wrong array shape or unknown phase/kind."""
        header = self._require_header("write_tick")
        n = header.n_joints
        message: dict[str, Any] = {"tick": int(record.tick), "time_s": float(record.time_s)}
        nulled = 0 if math.isfinite(message["time_s"]) else 1
        if nulled:
            message["time_s"] = None
        for name in JOINT_ARRAYS:
            message[name], count = _finite_list(getattr(record, name), name, n)
            nulled += count
        if record.action is not None:
            message["action"], count = _finite_list(record.action, "action", None)
            nulled += count
        else:
            message["action"] = None
        interventions, counts = [], dict.fromkeys(INTERVENTION_KINDS, 0)
        for joint, kind, raw, allowed in record.interventions:
            if kind not in counts:
                raise RolloutLogError(
                    f"tick {record.tick}: unknown intervention kind {kind!r}; valid kinds: {', '.join(counts)}"
                )
            counts[kind] += 1
            raw_value, raw_nulled = _finite_float(raw)
            allowed_value, allowed_nulled = _finite_float(allowed)
            nulled += raw_nulled + allowed_nulled
            interventions.append({"joint": int(joint), "kind": kind, "raw": raw_value, "allowed": allowed_value})
        message["interventions"] = interventions
        message["intervention_counts"] = counts
        message["pose"], count = self._pose(record.pose)
        nulled += count
        message["latency_ms"], count = self._latency(record.tick, record.latency_ms)
        nulled += count
        message["missed_deadline"] = bool(record.missed_deadline)
        message["non_finite_count"] = nulled
        self._add(TICK_TOPIC, record.time_s, message)
        self.non_finite_count += nulled
        self.n_ticks += 1
        self._last_tick = message["tick"]
        self._maybe_flush()

    def write_event(self, kind: str, message: str, *, time_s: float | None = None, **details: Any) -> None:
        """Append an event (:data:`EVENT_KINDS`); faults, stops and safe stops are flushed to disk at once.

        ``time_s`` is the monotonic time [s] (default: now); ``details`` must be JSON-like (numpy values and
        paths are converted, non-finite floats become null).
        """
        self._require_header("write_event")
        if kind not in EVENT_KINDS:
            raise RolloutLogError(f"unknown event kind {kind!r}; valid kinds: {', '.join(EVENT_KINDS)}")
        event_time_s = self._clock() if time_s is None else float(time_s)
        clean_details, nulled = _jsonable(details)
        document = {
            "time_s": event_time_s,
            "tick": self._last_tick,
            "kind": kind,
            "message": str(message),
            "details": clean_details,
        }
        self._add(EVENT_TOPIC, event_time_s, document)
        self.non_finite_count += nulled
        if kind in _FLUSH_NOW_KINDS:
            self.flush()
        else:
            self._maybe_flush()

    def flush(self) -> None:
        """Close the chunk in progress and push everything written so far to the OS (no fsync)."""
        self._check_open()
        self._writer.flush()  # closes the chunk in progress (mcap >= 1.5) and flushes the file object
        self._last_flush_s = self._clock()

    def close(self) -> None:
        """Finish the file (summary, footer) and close it. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()
        finally:
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RolloutLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RolloutLogError(f"rollout log {self.path} is closed — open a new writer")

    def _require_header(self, what: str) -> LogHeader:
        self._check_open()
        if self._header is None:
            raise RolloutLogError(f"rollout log {self.path}: {what} before write_header — write the header first")
        return self._header

    def _add(self, topic: str, time_s: float, document: Mapping[str, Any]) -> None:
        try:
            data = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as error:
            raise RolloutLogError(f"{topic} message cannot be written as JSON: {error}") from error
        elapsed_s = time_s - self._header.start_monotonic_s if self._header is not None else 0.0
        log_time_ns = max(0, self._start_unix_ns + int(elapsed_s * 1e9)) if math.isfinite(elapsed_s) else 0
        self._writer.add_message(self._channels[topic], log_time=log_time_ns, data=data, publish_time=log_time_ns)
        if self._tee is not None:
            self._tee(topic, log_time_ns, data)

    def _maybe_flush(self) -> None:
        if self._clock() - self._last_flush_s >= self.flush_period_s:
            self.flush()

    @staticmethod
    def _pose(pose: PoseRecord | None) -> tuple[dict[str, Any] | None, int]:
        if pose is None:
            return None, 0
        position, n_position = _finite_list(pose.position_m, "pose.position_m", 3)
        quat, n_quat = _finite_list(pose.quat_wxyz, "pose.quat_wxyz", 4)
        age, n_age = _finite_float(pose.age_s)
        document = {"position_m": position, "quat_wxyz": quat, "age_s": age, "source": str(pose.source)}
        document["valid"] = bool(pose.valid)
        return document, n_position + n_quat + n_age

    @staticmethod
    def _latency(tick: int, latency_ms: Mapping[str, float]) -> tuple[dict[str, float | None], int]:
        document: dict[str, float | None] = {}
        nulled = 0
        for phase in PHASES:
            value = latency_ms.get(phase)
            if value is not None:
                value, count = _finite_float(value)
                nulled += count
            document[phase] = value
        if len(latency_ms) > sum(phase in latency_ms for phase in PHASES):
            unknown = sorted(set(latency_ms) - set(PHASES))
            raise RolloutLogError(f"tick {tick}: unknown latency phases {unknown}; valid phases: {', '.join(PHASES)}")
        return document, nulled
