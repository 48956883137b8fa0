"""A rollout log in a few numbers: duration, rate, tick-time percentiles, misses, faults, interventions.

:func:`summarize` returns a JSON-ready dict (no NaN: a figure with no data is None) that ``handrail log
info --json`` prints as is; :func:`format_summary` renders it for people.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from handrail.deploy.rollout_log import FAULT, OPERATOR_STOP, PHASES, SAFE_STOP
from handrail.deploy.rollout_reader import RolloutLog

PERCENTILES = (("p50", 50.0), ("p99", 99.0))


def _percentiles_ms(values: NDArray[np.float64]) -> dict[str, float] | None:
    """p50, p99 and max of the finite values [ms], or None when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    figures = {name: round(float(np.percentile(finite, q)), 4) for name, q in PERCENTILES}
    figures["max"] = round(float(finite.max()), 4)
    return figures


def summarize(log: RolloutLog) -> dict[str, Any]:
    """The summary of a rollout log as a JSON-ready dict.

    Keys: path, profile, profile_fingerprint, policy_sha256, task, start_time, truncated, truncation_reason,
    ticks, duration_s (first to last tick start [s]), control_rate_hz (the target), mean_rate_hz,
    tick_time_ms (p50/p99/max of the ``total`` phase), phase_latency_ms (same per phase),
    missed_deadlines, faults, safe_stops, operator_stops, fault_messages, safety_interventions (kind ->
    total), non_finite_values, pose_valid_fraction (of the ticks that had a pose).
    """
    header = log.header
    times = log.time_s[np.isfinite(log.time_s)]
    duration_s = float(times[-1] - times[0]) if times.size >= 2 else 0.0
    has_pose = np.array([source != "" for source in log.pose_source], dtype=bool)
    events_by_kind: dict[str, list[str]] = {}
    for event in log.events:
        events_by_kind.setdefault(event.kind, []).append(event.message)
    phases = {phase: _percentiles_ms(log.latency_ms[phase]) for phase in PHASES}
    return {
        "path": str(log.path),
        "profile": header.profile_name,
        "profile_fingerprint": header.profile_fingerprint,
        "policy_sha256": header.policy_sha256,
        "task": (header.policy_metadata or {}).get("task"),
        "start_time": header.start_time_iso,
        "truncated": log.truncated,
        "truncation_reason": log.truncation_reason,
        "ticks": log.n_ticks,
        "duration_s": round(duration_s, 6),
        "control_rate_hz": header.control_rate_hz,
        "mean_rate_hz": round((times.size - 1) / duration_s, 4) if duration_s > 0 else None,
        "tick_time_ms": phases["total"],
        "phase_latency_ms": {phase: figures for phase, figures in phases.items() if figures is not None},
        "missed_deadlines": int(np.count_nonzero(log.missed_deadline)),
        "faults": len(events_by_kind.get(FAULT, [])),
        "safe_stops": len(events_by_kind.get(SAFE_STOP, [])),
        "operator_stops": len(events_by_kind.get(OPERATOR_STOP, [])),
        "fault_messages": events_by_kind.get(FAULT, []),
        "safety_interventions": {kind: int(counts.sum()) for kind, counts in log.intervention_counts.items()},
        "non_finite_values": int(log.non_finite_count.sum()),
        "pose_valid_fraction": (
            round(float(np.count_nonzero(log.pose_valid & has_pose)) / int(np.count_nonzero(has_pose)), 4)
            if has_pose.any()
            else None
        ),
    }


def _ms(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "no data"
    return "  ".join(f"{name} {value:.3f}" for name, value in figures.items()) + " ms"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary from :func:`summarize` as aligned text lines."""
    rate = summary["mean_rate_hz"]
    interventions = summary["safety_interventions"]
    truncated = f"  (TRUNCATED: {summary['truncation_reason']})" if summary["truncated"] else ""
    lines = [
        ("log", summary["path"] + truncated),
        ("profile", f"{summary['profile']} ({summary['profile_fingerprint']})"),
        ("policy", f"{summary['task'] or '-'}  sha256 {(summary['policy_sha256'] or '-')[:16]}"),
        ("started", summary["start_time"]),
        ("duration", f"{summary['duration_s']:.3f} s, {summary['ticks']} ticks"),
        ("rate", f"{rate:.2f} Hz (target {summary['control_rate_hz']:g} Hz)" if rate else "-"),
        ("tick time", _ms(summary["tick_time_ms"])),
        *((f"  {phase}", _ms(figures)) for phase, figures in summary["phase_latency_ms"].items() if phase != "total"),
        ("missed deadlines", str(summary["missed_deadlines"])),
        ("faults", str(summary["faults"])),
        *(("  fault", message) for message in summary["fault_messages"]),
        ("safe stops", str(summary["safe_stops"])),
        ("operator stops", str(summary["operator_stops"])),
        (
            "interventions",
            ", ".join(f"{kind} {count}" for kind, count in interventions.items() if count) or "none",
        ),
        ("non-finite values", str(summary["non_finite_values"])),
    ]
    if summary["pose_valid_fraction"] is not None:
        lines.append(("pose valid", f"{100 * summary['pose_valid_fraction']:.1f} % of ticks"))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def format_deploy_summary(summary: dict[str, Any], *, hand: str, exit_code: int, stop_reason: str) -> str:
    """What ``handrail deploy`` prints after a run on ``hand`` (a port, or "a virtual hand ..."): the policy's
    time and loop figures from the log's :func:`summarize`, how it ended, where the log is.

    Figures the log does not have (no policy tick ran) are left out rather than printed as None, and the
    sim-vs-real hint appears only when there are ticks to compare.
    """
    ticks = summary["ticks"]
    lines = [f"deploy: {summary['duration_s']:.1f} s of policy on {hand} ({ticks} ticks)"]
    tick = summary["tick_time_ms"]
    if ticks and summary["mean_rate_hz"] is not None and tick is not None:
        lines.append(
            f"  loop: {summary['mean_rate_hz']:.1f} Hz (target {summary['control_rate_hz']:g} Hz), tick p50 "
            f"{tick['p50']:.2f} ms, p99 {tick['p99']:.2f} ms, max {tick['max']:.2f} ms, "
            f"missed deadlines {summary['missed_deadlines']}"
        )
    interventions = summary["safety_interventions"]
    counted = ", ".join(f"{kind} {count}" for kind, count in interventions.items() if count)
    lines.append(f"  safety interventions: {sum(interventions.values())}" + (f" ({counted})" if counted else ""))
    ending = f"safe stop: {stop_reason}" if exit_code else stop_reason or "stopped"
    lines.append(f"  ended: {ending}")
    lines.append(f"  log: {summary['path']}  (handrail log info {summary['path']})")
    if ticks:
        lines.append(f"  sim vs this run: handrail compare {summary['path']}")
    return "\n".join(lines)
