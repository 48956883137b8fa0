"""Reading a rollout log back: the header, the ticks as numpy arrays, the events; and CSV export.

:func:`read_rollout_log` reads the file front to back with MCAP's stream reader (it never trusts the
summary at the end, which a crashed writer never wrote), so a log cut short by a crash or ``kill -9`` gives
everything up to its last complete chunk, with ``truncated=True`` and the reason — no exception. A file
that is not MCAP, or an MCAP file that is not a handrail rollout log, raises
:class:`~handrail.deploy.rollout_log.RolloutLogError` saying which.

Nulls in the JSON (non-finite values when written) read back as NaN.
"""

from __future__ import annotations

import csv
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zstandard
from mcap.exceptions import EndOfFile, McapError
from mcap.records import Channel, Footer, Message
from mcap.stream_reader import StreamReader
from numpy.typing import NDArray

from handrail.deploy.rollout_log import (
    EVENT_TOPIC,
    HEADER_TOPIC,
    JOINT_ARRAYS,
    PHASES,
    TICK_TOPIC,
    LogHeader,
    RolloutLogError,
)
from handrail.robot.safety_filter import INTERVENTION_KINDS

MCAP_MAGIC = b"\x89MCAP0\r\n"
# Far above any record the writer makes (chunks of tens of KB); a corrupt length fails fast instead.
RECORD_SIZE_LIMIT_BYTES = 256 * 2**20
# What a cut or damaged file can raise inside the stream reader: the reading stops there.
_DAMAGE = (EndOfFile, McapError, ValueError, struct.error, zstandard.ZstdError, RuntimeError)


class LogEvent(NamedTuple):
    """One ``/event``: monotonic time [s], the last tick before it, kind, message and details."""

    time_s: float
    tick: int | None
    kind: str
    message: str
    details: dict[str, Any]


class LoggedIntervention(NamedTuple):
    """One safety intervention: the tick it happened in, joint (-1 = whole action), kind, raw and allowed [rad]."""

    tick: int
    joint: int
    kind: str
    raw: float
    allowed: float


@dataclass(frozen=True, eq=False)  # holds arrays
class RolloutLog:
    """A rollout log in memory. T ticks, n joints; NaN where the log has null (non-finite or absent).

    Attributes:
        header: what the run ran with.
        tick, time_s: (T,) tick indices and monotonic tick start times [s].
        position_rad, velocity_rad_s, current_ma, temperature_c, target_rad: (T, n) in policy order.
        action: (T, n_act) raw policy action; NaN rows where no policy ran (``policy_active`` False).
        intervention_counts: kind -> (T,) interventions of that kind per tick.
        interventions: every intervention, in order.
        pose_position_m (T, 3), pose_quat_wxyz (T, 4), pose_age_s (T,): NaN where the tick had no pose;
        pose_valid (T,), pose_source (T,) ("" where none).
        latency_ms: phase -> (T,) [ms] for every phase of :data:`~handrail.deploy.rollout_log.PHASES`.
        missed_deadline (T,), non_finite_count (T,).
        events: every event, in order.
        truncated: the file was not closed by its writer (crash, kill) or is damaged; ``truncation_reason``
            says where reading stopped.
    """

    path: Path
    header: LogHeader
    tick: NDArray[np.int64]
    time_s: NDArray[np.float64]
    position_rad: NDArray[np.float64]
    velocity_rad_s: NDArray[np.float64]
    current_ma: NDArray[np.float64]
    temperature_c: NDArray[np.float64]
    target_rad: NDArray[np.float64]
    action: NDArray[np.float64]
    policy_active: NDArray[np.bool_]
    intervention_counts: dict[str, NDArray[np.int64]]
    interventions: tuple[LoggedIntervention, ...]
    pose_position_m: NDArray[np.float64]
    pose_quat_wxyz: NDArray[np.float64]
    pose_age_s: NDArray[np.float64]
    pose_valid: NDArray[np.bool_]
    pose_source: tuple[str, ...]
    latency_ms: dict[str, NDArray[np.float64]]
    missed_deadline: NDArray[np.bool_]
    non_finite_count: NDArray[np.int64]
    events: tuple[LogEvent, ...]
    truncated: bool
    truncation_reason: str | None

    @property
    def n_ticks(self) -> int:
        return int(self.tick.shape[0])

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.header.joint_names


class _Scan(NamedTuple):
    header: dict[str, Any] | None
    ticks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    topics: list[str]
    truncation_reason: str | None


def _scan(path: Path) -> _Scan:
    """Every message of the file in file order, stopping quietly where the file ends early or is damaged."""
    header: dict[str, Any] | None = None
    ticks: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    topics: dict[int, str] = {}
    footer_seen = False
    reason = None
    with open(path, "rb") as stream:
        start = stream.read(len(MCAP_MAGIC))
        if len(start) < len(MCAP_MAGIC) and MCAP_MAGIC.startswith(start):
            size = "is empty" if not start else f"holds only {len(start)} bytes"
            raise RolloutLogError(f"{path} {size}: its writer stopped before writing anything (crash at start?)")
        if start != MCAP_MAGIC:
            raise RolloutLogError(
                f"{path} is not an MCAP file (it does not start with the MCAP magic bytes) — "
                "pass a rollout log written by handrail (.mcap)"
            )
        stream.seek(0)
        reader = StreamReader(stream, validate_crcs=True, record_size_limit=RECORD_SIZE_LIMIT_BYTES)
        try:
            for record in reader.records:
                if isinstance(record, Channel):
                    topics[record.id] = record.topic
                elif isinstance(record, Message):
                    topic = topics.get(record.channel_id)
                    if topic == TICK_TOPIC:
                        ticks.append(json.loads(record.data))
                    elif topic == EVENT_TOPIC:
                        events.append(json.loads(record.data))
                    elif topic == HEADER_TOPIC and header is None:
                        header = json.loads(record.data)
                elif isinstance(record, Footer):
                    footer_seen = True
        except _DAMAGE as error:
            # A short read at the end of the file is a cut (crash); anywhere else the bytes are damaged.
            if isinstance(error, EndOfFile) or stream.tell() >= os.fstat(stream.fileno()).st_size:
                reason = f"the file ends inside a record at byte {stream.tell()}: its writer did not close it (crash?)"
            else:
                reason = f"damaged near byte {stream.tell()}: {type(error).__name__}: {error}"
        if reason is None and not footer_seen:
            reason = "the file has no footer: its writer did not close it (crash?)"
    return _Scan(header, ticks, events, sorted(set(topics.values())), reason)


def _rows(ticks: list[dict[str, Any]], key: str, width: int) -> NDArray[np.float64]:
    """(T, width) floats from a per-tick list field; None (absent or null) -> NaN."""
    out = np.full((len(ticks), width), np.nan)
    for row, tick in enumerate(ticks):
        values = tick.get(key)
        if values is not None:
            out[row, : len(values)] = np.array(values, dtype=np.float64)[:width]
    return out


def read_rollout_log(path: str | Path) -> RolloutLog:
    """Read a rollout log; a log cut short by a crash reads up to its last complete chunk (``truncated``)."""
    path = Path(path)
    if not path.is_file():
        raise RolloutLogError(f"rollout log {path} does not exist — check the path")
    scan = _scan(path)
    if scan.header is None:
        if not scan.topics and scan.truncation_reason is not None:
            raise RolloutLogError(
                f"{path} holds no complete chunk: its writer stopped before the header reached the disk "
                f"({scan.truncation_reason})"
            )
        if TICK_TOPIC not in scan.topics:
            raise RolloutLogError(
                f"{path} has no {TICK_TOPIC} channel — not a handrail rollout log "
                f"(its topics: {', '.join(scan.topics) or 'none'})"
            )
        raise RolloutLogError(f"{path} has no {HEADER_TOPIC} message — not a handrail rollout log")
    header = LogHeader.from_dict(scan.header, source=str(path))
    try:
        return _build(path, header, scan)
    except (KeyError, TypeError, ValueError) as error:
        raise RolloutLogError(
            f"{path}: malformed {TICK_TOPIC} or {EVENT_TOPIC} message ({type(error).__name__}: {error}) — "
            "the log was not written by this handrail's RolloutLogWriter"
        ) from error


def _build(path: Path, header: LogHeader, scan: _Scan) -> RolloutLog:
    ticks = scan.ticks
    n_joints = header.n_joints
    n_act = max((len(tick["action"]) for tick in ticks if tick.get("action") is not None), default=n_joints)
    arrays = {name: _rows(ticks, name, n_joints) for name in JOINT_ARRAYS}
    poses = [tick.get("pose") or {} for tick in ticks]
    interventions = tuple(
        LoggedIntervention(
            int(tick["tick"]),
            int(item["joint"]),
            str(item["kind"]),
            np.nan if item["raw"] is None else float(item["raw"]),
            np.nan if item["allowed"] is None else float(item["allowed"]),
        )
        for tick in ticks
        for item in tick.get("interventions", ())
    )
    return RolloutLog(
        path=path,
        header=header,
        tick=np.array([tick["tick"] for tick in ticks], dtype=np.int64),
        time_s=np.array([tick["time_s"] for tick in ticks], dtype=np.float64),
        **arrays,
        action=_rows(ticks, "action", n_act),
        policy_active=np.array([tick.get("action") is not None for tick in ticks], dtype=bool),
        intervention_counts={
            kind: np.array([tick["intervention_counts"].get(kind, 0) for tick in ticks], dtype=np.int64)
            for kind in INTERVENTION_KINDS
        },
        interventions=interventions,
        pose_position_m=_rows(poses, "position_m", 3),
        pose_quat_wxyz=_rows(poses, "quat_wxyz", 4),
        pose_age_s=np.array([pose.get("age_s") for pose in poses], dtype=np.float64),
        pose_valid=np.array([bool(pose.get("valid", False)) for pose in poses], dtype=bool),
        pose_source=tuple(str(pose.get("source", "")) for pose in poses),
        latency_ms={
            phase: np.array([tick["latency_ms"].get(phase) for tick in ticks], dtype=np.float64) for phase in PHASES
        },
        missed_deadline=np.array([bool(tick["missed_deadline"]) for tick in ticks], dtype=bool),
        non_finite_count=np.array([tick.get("non_finite_count", 0) for tick in ticks], dtype=np.int64),
        events=tuple(
            LogEvent(float(event["time_s"]), event.get("tick"), event["kind"], event["message"], event["details"])
            for event in scan.events
        ),
        truncated=scan.truncation_reason is not None,
        truncation_reason=scan.truncation_reason,
    )


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def export_csv(log: RolloutLog, folder: str | Path) -> list[Path]:
    """Write ``ticks.csv``, ``interventions.csv``, ``events.csv`` and ``header.json`` into ``folder``.

    ``ticks.csv`` has one row per tick and one column per joint quantity (``position_rad.<joint>``,
    ``action.<joint>``, ``latency_ms.<phase>``, ``interventions.<kind>``, ``pose_position_m.x``, ...);
    NaN is written as ``nan`` (``pandas.read_csv`` reads it back as NaN).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    joints = list(log.joint_names)
    action_names = joints if log.action.shape[1] == len(joints) else [str(i) for i in range(log.action.shape[1])]
    blocks: list[tuple[list[str], NDArray[Any]]] = [
        (["tick"], log.tick[:, None]),
        (["time_s"], log.time_s[:, None]),
    ]
    blocks += [([f"{name}.{joint}" for joint in joints], getattr(log, name)) for name in JOINT_ARRAYS]
    blocks += [
        ([f"action.{joint}" for joint in action_names], log.action),
        (["policy_active"], log.policy_active[:, None].astype(np.int64)),
        ([f"interventions.{kind}" for kind in INTERVENTION_KINDS], _stack(log.intervention_counts, log.n_ticks)),
        ([f"latency_ms.{phase}" for phase in PHASES], _stack(log.latency_ms, log.n_ticks)),
        (["missed_deadline"], log.missed_deadline[:, None].astype(np.int64)),
        ([f"pose_position_m.{axis}" for axis in "xyz"], log.pose_position_m),
        ([f"pose_quat_wxyz.{axis}" for axis in "wxyz"], log.pose_quat_wxyz),
        (["pose_age_s"], log.pose_age_s[:, None]),
        (["pose_valid"], log.pose_valid[:, None].astype(np.int64)),
        (["non_finite_count"], log.non_finite_count[:, None]),
    ]
    columns = [name for names, _ in blocks for name in names] + ["pose_source"]
    table = np.concatenate([values.astype(object) for _, values in blocks], axis=1) if log.n_ticks else None
    rows = [[*row, source] for row, source in zip(table.tolist(), log.pose_source, strict=True)] if log.n_ticks else []
    written = [_write_csv(folder / "ticks.csv", columns, rows)]
    written.append(
        _write_csv(
            folder / "interventions.csv",
            ["tick", "joint", "joint_name", "kind", "raw", "allowed"],
            [
                [item.tick, item.joint, joints[item.joint] if 0 <= item.joint < len(joints) else "", *item[2:]]
                for item in log.interventions
            ],
        )
    )
    written.append(
        _write_csv(
            folder / "events.csv",
            ["time_s", "tick", "kind", "message", "details"],
            [[*event[:4], json.dumps(event.details)] for event in log.events],
        )
    )
    header_path = folder / "header.json"
    header_path.write_text(json.dumps(log.header.to_dict(), indent=2) + "\n")
    written.append(header_path)
    return written


def _stack(columns: dict[str, NDArray[Any]], n_ticks: int) -> NDArray[Any]:
    return np.stack(list(columns.values()), axis=1) if columns else np.zeros((n_ticks, 0))
