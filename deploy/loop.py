"""The fixed-rate control loop: a policy file driving a hand through the one safety layer, logged as it runs.

Per tick, on an absolute schedule (tick k starts at ``t0 + k * period``; a late tick is counted as a
missed deadline and the schedule skips ahead rather than bunching ticks):

    read state -> latest object pose (with its age) -> observation (the shared builder) -> policy ->
    action map -> safety filter -> write -> log

Each phase is timed. Before the policy takes over, the hand is moved from wherever it is to the
policy's start pose (``start_pose_rad`` in its metadata, where training episodes began; else the
profile's home pose) at a slow speed, through
the same safety layer. Endings:

- the time is up, or Ctrl-C / SIGTERM: operator stop (torque off), exit code 0;
- a safety fault (comms, hardware error, overspeed, ...), a non-finite policy output or a non-finite
  reading: safe stop, the reason printed and logged, exit code 3.

The log is written tick by tick (see :mod:`handrail.deploy.rollout_log`), so whatever ends the loop, the
ticks so far stay readable.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from handrail.deploy.pose_source import PoseSource
from handrail.deploy.rollout_log import (
    FAULT,
    OPERATOR_STOP,
    SAFE_STOP,
    START,
    PoseRecord,
    RolloutLogWriter,
    TickRecord,
)
from handrail.deploy.runtime import PolicyOutputError, PolicyRuntime
from handrail.robot.safe_robot import Robot, SafetyFault
from handrail.robot.safety_filter import INTERVENTION_KINDS
from handrail.sim.observation import ObservationBuilder, ObservationInputError
from handrail.sim.tasks import PALM_NORMAL, ROTATE_Z

EXIT_OK = 0
EXIT_SAFE_STOP = 3


@dataclass(frozen=True)
class LoopConfig:
    """How long and how carefully to run."""

    seconds: float | None = 20.0  # None: until stopped
    startup_speed_rad_s: float = 0.5  # joint speed while moving to the start pose
    startup_tolerance_rad: float = 0.05  # start pose reached when every joint is this close
    startup_timeout_s: float = 8.0
    startup_lead_rad: float = 0.1  # a joint's target leads its measured position by at most this
    startup_settle_s: float = 0.5  # the hand counts as stopped when no joint moved ...
    startup_settle_rad: float = 0.005  # ... more than this over that time
    status_interval_s: float = 1.0  # live status line period; 0 disables it


@dataclass
class LoopResult:
    """What a run did: ticks, timing, interventions, and how it ended."""

    exit_code: int = EXIT_OK
    stop_reason: str = ""
    ticks: int = 0
    duration_s: float = 0.0
    missed_deadlines: int = 0
    tick_ms: list[float] = field(default_factory=list)  # host-side time of each tick [ms]
    phase_ms: dict[str, list[float]] = field(default_factory=dict)  # per phase of the log's PHASES [ms]
    jitter_ms: list[float] = field(default_factory=list)  # tick start minus its scheduled time [ms]
    interventions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INTERVENTION_KINDS, 0))
    faults: list[str] = field(default_factory=list)
    startup_s: float = 0.0

    def latency_stats(self) -> dict[str, float]:
        """p50/p99/max host-side tick time and jitter [ms], achieved rate [Hz], missed deadlines."""
        ticks = np.asarray(self.tick_ms) if self.tick_ms else np.zeros(1)
        jitter = np.abs(np.asarray(self.jitter_ms)) if self.jitter_ms else np.zeros(1)
        return {
            "ticks": self.ticks,
            "rate_hz": self.ticks / self.duration_s if self.duration_s > 0 else 0.0,
            "tick_p50_ms": float(np.percentile(ticks, 50)),
            "tick_p99_ms": float(np.percentile(ticks, 99)),
            "tick_max_ms": float(ticks.max()),
            "jitter_p99_ms": float(np.percentile(jitter, 99)),
            "jitter_max_ms": float(jitter.max()),
            "missed_deadlines": self.missed_deadlines,
        }


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the loop's duration (main thread only)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ControlLoop:
    """One run of ``runtime`` on ``robot`` (already started) with poses from ``pose_source``, logged to ``log``.

    The caller writes the log's header and closes it; the loop writes ticks and events.
    """

    def __init__(
        self,
        runtime: PolicyRuntime,
        robot: Robot,
        pose_source: PoseSource,
        log: RolloutLogWriter,
        config: LoopConfig | None = None,
        *,
        status_stream: TextIO | None = None,
        on_tick: Callable[[int], None] | None = None,
    ):
        self.runtime = runtime
        self.robot = robot
        self.pose_source = pose_source
        self.log = log
        self.config = config or LoopConfig()
        self.status_stream = status_stream if status_stream is not None else sys.stderr
        self.on_tick = on_tick
        profile = robot.profile
        self.period_s = profile.control_period_s
        start = runtime.metadata.start_pose_rad
        home = [joint.home_rad for joint in profile.joints]
        self.start_pose_rad = np.array(start if start is not None and len(start) == len(home) else home)
        self.builder = ObservationBuilder(
            runtime.observation_spec, len(profile.joints), runtime.history, max_pose_age_s=runtime.max_pose_age_s
        )
        self.task_input = self._task_input(runtime.task)
        self.result = LoopResult()

    def _task_input(self, task: str) -> NDArray[np.float64]:
        if task == ROTATE_Z:
            return np.array(PALM_NORMAL)
        return self.start_pose_rad.copy()  # pose task: hold the start pose

    # ---- the run -------------------------------------------------------------------------------------------

    def run(self) -> LoopResult:
        """Move to the start pose, then run the policy until the time is up or something stops it."""
        result = self.result
        try:
            with _stop_on_sigterm():
                self._move_to_start()
                self._run_policy()
            self._operator_stop("time is up" if self.config.seconds is not None else "stopped")
        except KeyboardInterrupt:
            self._operator_stop("operator stop (Ctrl-C or SIGTERM)")
        except SafetyFault as fault:
            self._fault(str(fault), fault_kind=fault.record.fault.kind, action=fault.record.action)
        except (PolicyOutputError, ObservationInputError) as error:
            self._fault(
                str(error), fault_kind="policy_output" if isinstance(error, PolicyOutputError) else "bad_reading"
            )
            with contextlib.suppress(Exception):
                self.robot.stop(f"stopped: {error}")
        finally:
            self._status(final=True)
        return result

    def _move_to_start(self) -> None:
        """Bring every joint to the start pose at ``startup_speed_rad_s`` through the safety layer.

        A joint's target never leads its measured position by more than ``startup_lead_rad``, so a finger that
        meets an obstacle on the way (another finger, the object) rests against it at low current instead of
        pushing until the stall detector stops the hand. The policy takes over when every joint is within
        ``startup_tolerance_rad`` of the start pose, or when the hand has stopped moving (blocked joints are
        logged), or after ``startup_timeout_s``.
        """
        config, robot = self.config, self.robot
        step_rad = config.startup_speed_rad_s * self.period_s
        started_s = time.monotonic()
        next_s = started_s
        settle_ticks = max(1, round(config.startup_settle_s / self.period_s))
        history: list[NDArray[np.float64]] = []
        reason = "start pose reached"
        while True:
            state = robot.read()
            error = self.start_pose_rad - state.position_rad
            history = [*history[-settle_ticks:], state.position_rad]
            if np.abs(error).max() <= config.startup_tolerance_rad:
                break
            if len(history) > settle_ticks and np.abs(history[-1] - history[0]).max() < config.startup_settle_rad:
                reason = "the hand stopped short of the start pose (blocked joints); handing over where it is"
                break
            if time.monotonic() - started_s > config.startup_timeout_s:
                reason = "start pose not reached in time; handing over where the hand is"
                break
            last = robot.last_target_rad
            assert last is not None
            target = last + np.clip(self.start_pose_rad - last, -step_rad, step_rad)
            lead = config.startup_lead_rad
            robot.command(np.clip(target, state.position_rad - lead, state.position_rad + lead), state)
            next_s += self.period_s
            time.sleep(max(0.0, next_s - time.monotonic()))
        self.result.startup_s = time.monotonic() - started_s
        short = {
            name: round(float(value), 4)
            for name, value in zip(robot.profile.joint_names, error, strict=True)
            if abs(value) > config.startup_tolerance_rad
        }
        self.log.write_event(START, f"policy takes over: {reason}", startup_s=self.result.startup_s, short_rad=short)

    def _run_policy(self) -> None:
        robot, config, result = self.robot, self.config, self.result
        state = robot.read()
        last_target = robot.last_target_rad
        assert last_target is not None
        self.builder.reset(state.position_rad, last_target, self.pose_source.latest())
        clock = time.monotonic
        t0 = clock()
        slot = 0
        end_s = t0 + config.seconds if config.seconds is not None else math.inf
        self._next_status_s = t0 + config.status_interval_s
        while True:
            scheduled = t0 + slot * self.period_s
            if scheduled >= end_s:
                break
            now = clock()
            if now < scheduled:
                time.sleep(scheduled - now)
            start = clock()
            self._deadline_s = scheduled + self.period_s
            result.jitter_ms.append((start - scheduled) * 1e3)
            self._tick(result.ticks, start)
            result.ticks += 1
            result.duration_s = clock() - t0
            # Absolute schedule: the next slot after now; a tick that overran its period skips slots.
            finished = clock()
            next_slot = slot + 1
            if finished > t0 + next_slot * self.period_s:
                late_slots = math.floor((finished - t0) / self.period_s) - slot
                result.missed_deadlines += late_slots
                next_slot = slot + late_slots + 1
            slot = next_slot
            if self.on_tick is not None:
                self.on_tick(result.ticks)
            if config.status_interval_s > 0 and finished >= self._next_status_s:
                self._status()
                self._next_status_s = finished + config.status_interval_s

    def _tick(self, index: int, start: float) -> None:
        robot, runtime, result = self.robot, self.runtime, self.result
        clock = time.monotonic
        state = robot.read()
        read_end = clock()
        pose = self.pose_source.latest()
        pose_end = clock()
        previous_target = robot.last_target_rad
        assert previous_target is not None
        obs = self.builder.build(state.position_rad, previous_target, pose, self.task_input)
        observe_end = clock()
        action = runtime.act(obs)
        infer_end = clock()
        report = robot.command(runtime.action_map(action, previous_target), state)
        end = clock()
        latency_ms = {
            "read": (read_end - start) * 1e3,
            "pose": (pose_end - read_end) * 1e3,
            "observe": (observe_end - pose_end) * 1e3,
            "infer": (infer_end - observe_end) * 1e3,
            "filter": report.filter_s * 1e3,
            "write": report.write_s * 1e3,
            "total": (end - start) * 1e3,
        }
        for intervention in report.interventions:
            result.interventions[intervention.kind] += 1
        late = end > self._deadline_s
        pose_record = None
        if pose is not None:
            valid = pose.age_s <= runtime.max_pose_age_s
            pose_record = PoseRecord(pose.position_m, pose.quat_wxyz, pose.age_s, pose.source, valid)
        self.log.write_tick(
            TickRecord(
                tick=index,
                time_s=start,
                position_rad=state.position_rad,
                velocity_rad_s=state.velocity_rad_s,
                current_ma=state.current_ma,
                temperature_c=state.temperature_c,
                target_rad=report.target_rad,
                action=action,
                interventions=report.interventions,
                pose=pose_record,
                latency_ms=latency_ms,
                missed_deadline=late,
            )
        )
        for phase, value in latency_ms.items():
            result.phase_ms.setdefault(phase, []).append(value)
        result.tick_ms.append((end - start) * 1e3)

    # ---- endings and status ----------------------------------------------------------------------------------

    def _operator_stop(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            self.robot.stop(reason)
        self.result.stop_reason = reason
        self.log.write_event(OPERATOR_STOP, reason)

    def _fault(self, message: str, **details: Any) -> None:
        self.result.exit_code = EXIT_SAFE_STOP
        self.result.stop_reason = message
        self.result.faults.append(message)
        self.log.write_event(FAULT, message, **details)
        self.log.write_event(SAFE_STOP, message)
        print(f"\nhandrail: safe stop: {message}", file=self.status_stream)

    def _status(self, final: bool = False) -> None:
        if self.config.status_interval_s <= 0 and not final:
            return
        stats = self.result.latency_stats()
        interventions = sum(self.result.interventions.values())
        tty = hasattr(self.status_stream, "isatty") and self.status_stream.isatty()
        prefix = "\r" if tty else ""
        line = (
            f"{prefix}tick {stats['ticks']:6d}  {stats['rate_hz']:5.1f} Hz  p99 {stats['tick_p99_ms']:5.2f} ms  "
            f"missed {stats['missed_deadlines']}  interventions {interventions}  faults {len(self.result.faults)}"
        )
        print(line, end="\n" if final or not tty else "", file=self.status_stream, flush=True)
