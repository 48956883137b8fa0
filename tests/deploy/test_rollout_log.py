"""Rollout logs: round trip, NaN handling, crash tolerance (a real SIGKILL), summary, and `handrail log`."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.records import Message
from mcap.stream_reader import StreamReader
from mcap.writer import Writer

from handrail.deploy.rollout_log import (
    PHASES,
    LogHeader,
    PoseRecord,
    RolloutLogError,
    RolloutLogWriter,
    TickRecord,
    file_sha256,
)
from handrail.deploy.rollout_reader import read_rollout_log
from handrail.deploy.rollout_summary import format_summary, summarize
from handrail.robot.safety_filter import Intervention

N_JOINTS = 16
PERIOD_S = 0.01


def _header(profile, tmp_path: Path) -> LogHeader:
    policy = tmp_path / "policy.onnx"
    policy.write_bytes(b"not really onnx, but a file to fingerprint")
    return LogHeader.for_run(
        profile,
        policy_path=policy,
        policy_metadata={"task": "rotate-z", "control_rate_hz": profile.control_rate_hz},
        extra={"reality_seed": 7, "pose_source": "ground_truth"},
    )


def _tick(header: LogHeader, index: int, **overrides) -> TickRecord:
    """A deterministic tick: values depend on the index so that a mix-up between ticks shows."""
    base = np.linspace(-1.0, 1.0, N_JOINTS) + 0.001 * index
    fields = {
        "tick": index,
        "time_s": header.start_monotonic_s + index * PERIOD_S,
        "position_rad": base,
        "velocity_rad_s": 2.0 * base,
        "current_ma": 100.0 * base,
        "temperature_c": 30.0 + base,
        "target_rad": base + 0.01,
        "action": np.clip(base, -1, 1),
        "interventions": (Intervention(3, "speed_limit", 0.5, 0.25),) if index % 4 == 0 else (),
        "pose": PoseRecord(np.array([0.0, 0.01, 0.1 + index * 1e-4]), (1.0, 0.0, 0.0, 0.0), 0.02, "ground_truth", True),
        "latency_ms": {phase: 0.1 * (k + 1) for k, phase in enumerate(PHASES[:-1])} | {"total": 1.0 + index % 10},
        "missed_deadline": index == 5,
    }
    return TickRecord(**(fields | overrides))


def _write_log(path: Path, header: LogHeader, n_ticks: int = 40) -> Path:
    with RolloutLogWriter(path) as writer:
        writer.write_header(header)
        writer.write_event("start", "policy takes over", time_s=header.start_monotonic_s, seconds=2.0)
        for index in range(n_ticks):
            writer.write_tick(_tick(header, index))
        writer.write_event("fault", "motor 7 (index_pip): overload", joint=7, value=np.float64(1.5))
        writer.write_event("safe_stop", "torque off after a fault")
    return path


@pytest.fixture()
def header(profile, tmp_path) -> LogHeader:
    return _header(profile, tmp_path)


@pytest.fixture()
def log_path(tmp_path, header) -> Path:
    return _write_log(tmp_path / "run.mcap", header)


def _raw_messages(path: Path) -> list[tuple[str, bytes]]:
    topics, messages = {}, []
    for record in StreamReader(str(path)).records:
        if hasattr(record, "topic"):
            topics[record.id] = record.topic
        if isinstance(record, Message):
            messages.append((topics[record.channel_id], record.data))
    return messages


# -- round trip ---------------------------------------------------------------------------------------------


def test_header_ticks_and_events_round_trip(log_path, header, profile):
    log = read_rollout_log(log_path)
    assert not log.truncated and log.truncation_reason is None
    assert log.header == header
    assert log.header.policy_sha256 == file_sha256(log_path.parent / "policy.onnx")
    assert log.header.joint_names == profile.joint_names and log.header.calibration is None
    assert set(log.header.versions) >= {"handrail", "mujoco", "onnxruntime", "numpy", "python"}
    assert log.header.profile["name"] == profile.name and log.header.extra["reality_seed"] == 7

    assert log.n_ticks == 40 and log.position_rad.shape == (40, N_JOINTS)
    np.testing.assert_array_equal(log.tick, np.arange(40))
    expected = [_tick(header, index) for index in range(40)]
    np.testing.assert_array_equal(log.time_s, [tick.time_s for tick in expected])
    for name in ("position_rad", "velocity_rad_s", "current_ma", "temperature_c", "target_rad", "action"):
        np.testing.assert_array_equal(getattr(log, name), np.stack([getattr(tick, name) for tick in expected]))
    assert log.policy_active.all()
    np.testing.assert_array_equal(log.intervention_counts["speed_limit"], (np.arange(40) % 4 == 0).astype(int))
    assert log.intervention_counts["position_limit"].sum() == 0
    assert log.interventions[1] == (4, 3, "speed_limit", 0.5, 0.25)
    np.testing.assert_array_equal(log.pose_position_m[:, 2], [tick.pose.position_m[2] for tick in expected])
    assert log.pose_valid.all() and set(log.pose_source) == {"ground_truth"}
    np.testing.assert_array_equal(log.latency_ms["total"], 1.0 + np.arange(40) % 10)
    np.testing.assert_allclose(log.latency_ms["infer"], 0.4)
    assert np.flatnonzero(log.missed_deadline).tolist() == [5]

    assert [event.kind for event in log.events] == ["start", "fault", "safe_stop"]
    assert log.events[0].details == {"seconds": 2.0} and log.events[0].tick is None
    assert log.events[1].details == {"joint": 7, "value": 1.5} and log.events[1].tick == 39


def test_channels_carry_json_schemas_foxglove_can_use(log_path):
    reader_records = list(StreamReader(str(log_path)).records)
    schemas = {record.name: record for record in reader_records if type(record).__name__ == "Schema"}
    channels = {record.topic: record for record in reader_records if type(record).__name__ == "Channel"}
    assert set(channels) == {"/header", "/tick", "/event"}
    assert {channel.message_encoding for channel in channels.values()} == {"json"}
    assert {schema.encoding for schema in schemas.values()} == {"jsonschema"}
    tick_schema = json.loads(schemas["handrail.Tick"].data)
    assert tick_schema["type"] == "object" and "position_rad" in tick_schema["properties"]


def test_a_tick_without_policy_or_pose_reads_back_as_nan(tmp_path, header):
    with RolloutLogWriter(tmp_path / "ramp.mcap") as writer:
        writer.write_header(header)
        writer.write_tick(_tick(header, 0, action=None, pose=None, latency_ms={"total": 0.5}))
        writer.write_tick(_tick(header, 1))
    log = read_rollout_log(tmp_path / "ramp.mcap")
    assert log.policy_active.tolist() == [False, True]
    assert np.isnan(log.action[0]).all() and not np.isnan(log.action[1]).any()
    assert np.isnan(log.pose_position_m[0]).all() and log.pose_source == ("", "ground_truth")
    assert np.isnan(log.latency_ms["read"][0]) and log.latency_ms["total"][0] == 0.5


# -- NaN handling -------------------------------------------------------------------------------------------


def test_non_finite_values_are_written_as_null_counted_and_read_back_as_nan(tmp_path, header):
    position = np.linspace(-1.0, 1.0, N_JOINTS)
    position[2] = np.nan
    action = np.zeros(N_JOINTS)
    action[[0, 1]] = [np.inf, -np.inf]
    path = tmp_path / "nan.mcap"
    with RolloutLogWriter(path) as writer:
        writer.write_header(header)
        writer.write_tick(
            _tick(
                header,
                0,
                position_rad=position,
                action=action,
                interventions=(Intervention(-1, "non_finite", np.inf, np.nan),),
                latency_ms={"total": float("nan")},
            )
        )
        writer.write_event("fault", "NaN action", value=float("nan"), nested={"values": [1.0, np.nan]})
        assert writer.non_finite_count == 1 + 2 + 2 + 1 + 2

    # Every message is strict JSON: the file holds no NaN/Infinity tokens.
    def refuse(token: str) -> None:
        raise AssertionError(f"non-JSON constant {token} in the log")

    for _topic, data in _raw_messages(path):
        json.loads(data, parse_constant=refuse)
    with pytest.raises(AssertionError, match="non-JSON constant"):  # the check above can fail
        json.loads(json.dumps({"x": float("nan")}), parse_constant=refuse)

    log = read_rollout_log(path)
    assert np.isnan(log.position_rad[0, 2]) and np.isfinite(np.delete(log.position_rad[0], 2)).all()
    assert np.isnan(log.action[0, :2]).all() and (log.action[0, 2:] == 0).all()
    assert log.interventions[0].joint == -1 and math.isnan(log.interventions[0].allowed)
    assert np.isnan(log.latency_ms["total"][0]) and log.non_finite_count.tolist() == [6]
    assert log.events[0].details == {"value": None, "nested": {"values": [1.0, None]}}
    assert summarize(log)["non_finite_values"] == 6 and summarize(log)["tick_time_ms"] is None


# -- writer misuse ------------------------------------------------------------------------------------------


def test_the_writer_refuses_bad_input_with_clear_messages(tmp_path, header):
    path = tmp_path / "bad.mcap"
    with RolloutLogWriter(path) as writer:
        with pytest.raises(RolloutLogError, match="before write_header"):
            writer.write_tick(_tick(header, 0))
        writer.write_header(header)
        with pytest.raises(RolloutLogError, match="already written"):
            writer.write_header(header)
        with pytest.raises(RolloutLogError, match=r"position_rad has shape \(15,\), expected \(16,\)"):
            writer.write_tick(_tick(header, 0, position_rad=np.zeros(15)))
        with pytest.raises(RolloutLogError, match="unknown intervention kind 'teleport'; valid kinds: non_finite"):
            writer.write_tick(_tick(header, 0, interventions=[(0, "teleport", 0.0, 0.0)]))
        with pytest.raises(RolloutLogError, match=r"unknown latency phases \['think'\]; valid phases: read"):
            writer.write_tick(_tick(header, 0, latency_ms={"think": 1.0}))
        with pytest.raises(RolloutLogError, match="unknown event kind 'oops'; valid kinds: fault"):
            writer.write_event("oops", "?")
        writer.write_tick(_tick(header, 0))
    writer.close()  # idempotent
    with pytest.raises(RolloutLogError, match="is closed"):
        writer.write_tick(_tick(header, 1))
    with pytest.raises(RolloutLogError, match="already exists"):
        RolloutLogWriter(path)
    assert read_rollout_log(path).n_ticks == 1  # refused ticks left no trace


# -- crash tolerance ----------------------------------------------------------------------------------------


def test_every_prefix_of_a_log_reads_up_to_its_last_complete_chunk(tmp_path, header):
    path = tmp_path / "full.mcap"
    with RolloutLogWriter(path, chunk_size_bytes=4096) as writer:
        writer.write_header(header)
        for index in range(200):
            writer.write_tick(_tick(header, index))
    data = path.read_bytes()
    counts = []
    for size in [0, 5, 40, 300, *np.linspace(0, len(data) - 1, 23).astype(int)[1:]]:
        prefix = tmp_path / f"prefix_{size}.mcap"
        prefix.write_bytes(data[:size])
        try:
            log = read_rollout_log(prefix)
        except RolloutLogError as error:  # only before the header's chunk is complete
            assert re.search("is empty|holds only 5 bytes|holds no complete chunk", str(error)), error
            assert not counts, f"a longer prefix ({size} bytes) was readable before"
            continue
        assert log.truncated and "the file ends inside a record" in log.truncation_reason
        np.testing.assert_array_equal(log.tick, np.arange(log.n_ticks))
        counts.append(log.n_ticks)
    assert counts == sorted(counts) and counts[-1] >= 190
    assert not read_rollout_log(path).truncated


def test_a_damaged_chunk_stops_the_reading_there_without_an_exception(tmp_path, header):
    path = tmp_path / "damaged.mcap"
    with RolloutLogWriter(path, chunk_size_bytes=4096) as writer:
        writer.write_header(header)
        for index in range(100):
            writer.write_tick(_tick(header, index))
    with open(path, "rb") as stream:
        chunks = make_reader(stream).get_summary().chunk_indexes
    middle = chunks[len(chunks) // 2]
    data = bytearray(path.read_bytes())
    data[middle.chunk_start_offset + middle.chunk_length // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    log = read_rollout_log(path)
    assert log.truncated and log.truncation_reason.startswith("damaged near byte")
    assert 0 < log.n_ticks < 100
    np.testing.assert_array_equal(log.tick, np.arange(log.n_ticks))


CHILD = """
import sys, time
import numpy as np
from handrail.deploy.rollout_log import LogHeader, RolloutLogWriter, TickRecord
header = LogHeader(profile_name="test", profile_fingerprint="0", joint_names=tuple(f"j{i}" for i in range(16)),
                   control_rate_hz=500.0, start_time_iso="2026-01-01T00:00:00+00:00",
                   start_monotonic_s=time.monotonic())
writer = RolloutLogWriter(sys.argv[1], flush_period_s=float(sys.argv[2]), chunk_size_bytes=1 << 20)
writer.write_header(header)
writer.write_event("start", "child writing")
zeros = np.zeros(16)
for index in range(1_000_000):
    writer.write_tick(TickRecord(index, time.monotonic(), zeros + index, zeros, zeros, zeros, zeros,
                                 latency_ms={"total": 0.1}))
    if index % 100 == 0:
        print(index, flush=True)
    time.sleep(0.002)
"""


def _write_and_kill(path: Path, flush_period_s: float) -> int:
    """Run a writer in a child process, SIGKILL it after >= 300 ticks; returns the ticks it had written."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(flush_period_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        written = 0
        deadline = time.monotonic() + 30.0
        while written < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"the writer child exited early: {child.stderr.read()}")
            written = int(line)
        assert written >= 300, "the writer child was too slow"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return written


def test_sigkill_mid_run_leaves_a_readable_log_with_most_ticks(tmp_path):
    path = tmp_path / "killed.mcap"
    written = _write_and_kill(path, flush_period_s=0.05)
    log = read_rollout_log(path)
    assert log.truncated and "did not close" in log.truncation_reason
    assert log.header.profile_name == "test" and log.events[0].kind == "start"
    # Flushed every 50 ms at ~2 ms per tick: at most a few dozen ticks are lost.
    assert log.n_ticks >= written - 60
    np.testing.assert_array_equal(log.tick, np.arange(log.n_ticks))
    np.testing.assert_array_equal(log.position_rad[:, 0], np.arange(log.n_ticks))
    assert summarize(log)["truncated"] is True


def test_the_kill_test_fails_without_the_periodic_flush(tmp_path):
    path = tmp_path / "unflushed.mcap"
    written = _write_and_kill(path, flush_period_s=1000.0)
    assert read_rollout_log(path).n_ticks < written - 60  # the 1 MiB chunk was still in memory


# -- summary ------------------------------------------------------------------------------------------------


def test_summary_counts_what_the_log_holds(log_path, header):
    summary = summarize(read_rollout_log(log_path))
    assert summary["ticks"] == 40 and summary["duration_s"] == pytest.approx(39 * PERIOD_S)
    assert summary["mean_rate_hz"] == pytest.approx(1 / PERIOD_S)
    totals = 1.0 + np.arange(40) % 10
    assert summary["tick_time_ms"] == {
        "p50": pytest.approx(np.percentile(totals, 50)),
        "p99": pytest.approx(np.percentile(totals, 99)),
        "max": 10.0,
    }
    assert summary["missed_deadlines"] == 1 and summary["faults"] == 1 and summary["safe_stops"] == 1
    assert summary["fault_messages"] == ["motor 7 (index_pip): overload"]
    assert summary["safety_interventions"]["speed_limit"] == 10 and summary["task"] == "rotate-z"
    json.dumps(summary, allow_nan=False)
    text = format_summary(summary)
    assert "missed deadlines   1" in text and "speed_limit 10" in text and "p99" in text


# -- the CLI ------------------------------------------------------------------------------------------------


@pytest.fixture()
def handrail_log(monkeypatch):
    """``handrail.cli.main`` with the ``log`` commands, registered here if cli.py does not register them yet."""
    import handrail.cli as cli
    from handrail.cli_log import add_log_commands

    build_parser = cli.build_parser
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    if "log" not in commands.choices:

        def with_log_commands() -> argparse.ArgumentParser:
            parser = build_parser()
            subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            add_log_commands(subparsers)
            return parser

        monkeypatch.setattr(cli, "build_parser", with_log_commands)
    return cli.main


def test_log_info_prints_the_summary(handrail_log, log_path, capsys):
    assert handrail_log(["log", "info", str(log_path)]) == 0
    text = capsys.readouterr().out
    assert "40 ticks" in text and "faults             1" in text and "TRUNCATED" not in text
    assert handrail_log(["log", "info", str(log_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ticks"] == 40 and summary["safety_interventions"]["speed_limit"] == 10


def test_log_info_reports_a_truncated_log(handrail_log, log_path, tmp_path, capsys):
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(log_path.read_bytes()[:-200])
    assert handrail_log(["log", "info", str(cut)]) == 0
    assert "TRUNCATED" in capsys.readouterr().out


def test_log_export_writes_plain_csv(handrail_log, log_path, tmp_path, profile, capsys):
    out = tmp_path / "csv"
    assert handrail_log(["log", "export", str(log_path), "--csv", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with open(out / "ticks.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 40
    first_joint = profile.joint_names[0]
    assert float(rows[1][f"position_rad.{first_joint}"]) == pytest.approx(-1.0 + 0.001)
    assert float(rows[0]["latency_ms.total"]) == 1.0 and rows[5]["missed_deadline"] == "1"
    assert rows[0]["interventions.speed_limit"] == "1" and rows[0]["pose_source"] == "ground_truth"
    assert {f"action.{name}" for name in profile.joint_names} <= set(rows[0])
    with open(out / "events.csv", newline="") as stream:
        events = list(csv.DictReader(stream))
    assert [event["kind"] for event in events] == ["start", "fault", "safe_stop"]
    assert json.loads(events[1]["details"]) == {"joint": 7, "value": 1.5}
    with open(out / "interventions.csv", newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 10
    assert json.loads((out / "header.json").read_text())["profile_name"] == profile.name


def test_malformed_files_give_clear_errors(handrail_log, tmp_path, capsys):
    not_mcap = tmp_path / "notes.mcap"
    not_mcap.write_text("just some text, not a log\n")
    assert handrail_log(["log", "info", str(not_mcap)]) == 2
    assert "is not an MCAP file" in capsys.readouterr().err

    foreign = tmp_path / "foreign.mcap"
    with open(foreign, "wb") as stream:
        writer = Writer(stream)
        writer.start()
        channel = writer.register_channel("/camera", "json", writer.register_schema("x", "jsonschema", b"{}"))
        writer.add_message(channel, log_time=0, data=b"{}", publish_time=0)
        writer.finish()
    assert handrail_log(["log", "export", str(foreign), "--csv", str(tmp_path / "x")]) == 2
    assert "no /tick channel — not a handrail rollout log (its topics: /camera)" in capsys.readouterr().err

    assert handrail_log(["log", "info", str(tmp_path / "missing.mcap")]) == 2
    assert "does not exist" in capsys.readouterr().err
