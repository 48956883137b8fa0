"""A live view of the running loop in Foxglove: the rollout log's channels, streamed while the hand runs.

``handrail deploy|demo --view`` starts a Foxglove WebSocket server on 127.0.0.1 (never another address; port
8765 by default) with the same channels and JSON schemas as the MCAP log — ``/header``, ``/tick`` (measured vs
target per joint, interventions, the pose estimate, latencies), ``/event`` (faults, safe stops) — so a layout
made for a log file works live — plus ``/camera`` (JPEG, up to 10 Hz) when the pose comes from a camera.
Open Foxglove (app or https://app.foxglove.dev), "Open connection", Foxglove
WebSocket, ``ws://localhost:8765``; from another machine, tunnel it (``ssh -L 8765:localhost:8765 robot``).

Why Foxglove (``foxglove-sdk``) rather than Rerun: our logs are MCAP with JSON schemas already, which Foxglove
plays natively; the same panels serve a recorded run and a live one.

The view never slows the loop. The log writer hands each message's JSON (already made for the log) to
:meth:`LiveView.tee`, which only puts it on a bounded queue — a full queue drops the message and counts it.
A thread of its own publishes to the server, which drops what no client subscribed to. With no viewer
connected nothing accumulates: the queue is bounded and drained, and the server keeps no backlog.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
import time
from typing import Any

from handrail.deploy.rollout_log import log_schemas
from handrail.deploy.rollout_records import MESSAGE_ENCODING, SCHEMA_ENCODING
from handrail.errors import HandrailError

SUBPROTOCOL = "foxglove.sdk.v1"  # what this SDK's server speaks (it refuses the older foxglove.websocket.v1)
MESSAGE_DATA = 0x01  # the server's binary opcode for a message on a subscription
DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
CAMERA_TOPIC = "/camera"
IMAGE_RATE_HZ = 10.0  # camera frames published at most this often (JPEG, on the pose source's thread)
QUEUE_SIZE = 256  # messages waiting for the publisher thread; more are dropped (counted)


class LiveViewError(HandrailError):
    """The live view could not start (the port is taken, the SDK is missing)."""


class LiveView:
    """A Foxglove WebSocket server on the loopback interface, fed from the rollout log writer's tee."""

    def __init__(self, port: int = DEFAULT_PORT, *, queue_size: int = QUEUE_SIZE):
        try:
            import foxglove
        except ImportError as error:  # a dependency of handrail: a broken install
            raise LiveViewError(f"--view needs foxglove-sdk ({error}) — reinstall handrail") from error
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(
                name="handrail", host=LOOPBACK, port=port, context=self._context, message_backlog_size=queue_size
            )
        except Exception as error:  # the SDK raises its own errors for a taken port
            raise LiveViewError(
                f"--view: no live view server on {LOOPBACK}:{port} ({error}) — pick --view-port"
            ) from error
        self.port = int(self._server.port)
        self._channels: dict[str, Any] = {
            topic: foxglove.Channel(
                topic,
                message_encoding=MESSAGE_ENCODING,
                schema=foxglove.Schema(
                    name=schema["title"], encoding=SCHEMA_ENCODING, data=json.dumps(schema).encode()
                ),
                context=self._context,
            )
            for topic, schema in log_schemas().items()
        }
        from foxglove.channels import CompressedImageChannel

        self._camera = CompressedImageChannel(CAMERA_TOPIC, context=self._context)
        self._last_image_s = -float("inf")
        self.images = 0
        self._queue: queue.Queue[tuple[str, int, bytes] | None] = queue.Queue(maxsize=queue_size)
        self.published = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._publish, name="handrail-live-view", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://localhost:{self.port}"

    def tee(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Called by the log writer on the control thread: queue the message, or drop it; never wait."""
        try:
            self._queue.put_nowait((topic, log_time_ns, data))
        except queue.Full:
            self.dropped += 1

    def image(self, rgb: Any, captured_s: float, frame_id: str = "camera") -> None:
        """A camera frame (H, W, 3 RGB uint8) from a pose source's own thread: JPEG, at most IMAGE_RATE_HZ, on
        ``/camera`` (a ``foxglove.CompressedImage``). Never called from the control thread."""
        if captured_s - self._last_image_s < 1.0 / IMAGE_RATE_HZ:
            return
        self._last_image_s = captured_s
        import cv2
        from foxglove.messages import CompressedImage, Timestamp

        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
        if ok:
            stamp = Timestamp.from_epoch_secs(time.time())
            self._camera.log(CompressedImage(timestamp=stamp, frame_id=frame_id, data=jpeg.tobytes(), format="jpeg"))
            self.images += 1

    @property
    def waiting(self) -> int:
        """Messages queued for the publisher thread (at most the queue size)."""
        return self._queue.qsize()

    def _publish(self) -> None:
        while (item := self._queue.get()) is not None:
            topic, log_time_ns, data = item
            channel = self._channels.get(topic)
            if channel is not None:
                channel.log(data, log_time=log_time_ns)
                self.published += 1

    def close(self) -> None:
        """Stop publishing (what is queued goes out first) and stop the server."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=2.0)
        for channel in [*self._channels.values(), self._camera]:
            channel.close()
        self._server.stop()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveViewClient(threading.Thread):
    """A minimal Foxglove WebSocket client (``websockets``, a dev dependency): subscribes to ``topic`` and keeps
    each message's arrival time and JSON. For tests and ``benchmarks/loop.py --view``; people use Foxglove."""

    def __init__(self, url: str, topic: str = "/tick"):
        super().__init__(name="handrail-live-view-client", daemon=True)
        self.url, self.topic = url, topic
        self.arrivals: list[float] = []
        self.messages: list[dict[str, Any]] = []
        self.payloads: list[bytes] = []
        self.topics: set[str] = set()
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.url, subprotocols=[SUBPROTOCOL], open_timeout=10) as connection:  # type: ignore[list-item]
                subscribed = False
                while not self.stop.is_set():
                    try:
                        frame = connection.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    if isinstance(frame, str):
                        message = json.loads(frame)
                        if message.get("op") == "advertise":
                            channels = {channel["topic"]: channel for channel in message["channels"]}
                            self.topics |= set(channels)
                            if not subscribed and self.topic in channels:
                                channel_id = channels[self.topic]["id"]
                                request = {"op": "subscribe", "subscriptions": [{"id": 1, "channelId": channel_id}]}
                                connection.send(json.dumps(request))
                                subscribed = True
                    elif frame[0] == MESSAGE_DATA and struct.unpack_from("<I", frame, 1)[0] == 1:
                        self.arrivals.append(time.monotonic())
                        payload = bytes(frame[13:])  # after the opcode, the subscription id and the timestamp
                        self.payloads.append(payload)
                        if payload[:1] == b"{":  # the log's JSON channels (the camera's is protobuf)
                            self.messages.append(json.loads(payload))
        except BaseException as error:  # kept for the caller
            self.error = error

    def rate_hz(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m handrail.deploy.live_view [URL] [--seconds N]``: subscribe to /tick and print the rate (a check
    without Foxglove, and the benchmark's viewer in a process of its own, as a real viewer is)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("url", nargs="?", default=f"ws://localhost:{DEFAULT_PORT}")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    client = LiveViewClient(args.url)
    client.start()
    time.sleep(args.seconds)
    client.close()
    print(json.dumps({"messages": len(client.messages), "rate_hz": client.rate_hz(), "error": repr(client.error)}))
    return 0 if client.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
