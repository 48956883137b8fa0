"""The serial port under the Dynamixel SDK's packet code: our status timeout, a short blocking wait instead of
a hot spin while reading, and pyserial's errors turned into :class:`~handrail.robot.errors.PortError` (a comms
fault for the safety layer) wherever the SDK touches the port — a vanished USB adapter raises in clear, poll
and write, not only in write.
"""

from __future__ import annotations

import contextlib
import select

import dynamixel_sdk as sdk
import serial

from handrail.robot.errors import PortError


class SerialPort(sdk.PortHandler):
    """The SDK's port with our timeout and a short blocking wait instead of a hot spin while reading."""

    def __init__(self, port_name: str, timeout_ms: float):
        super().__init__(port_name)
        self.timeout_ms = timeout_ms

    def setPacketTimeout(self, packet_length: int) -> None:
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.timeout_ms

    def readPort(self, length: int) -> bytes:
        try:
            data = self.ser.read(length)
        except (serial.SerialException, OSError):
            # pyserial's word for a port that reports readiness but yields nothing (a vanished USB
            # adapter, a pty whose other end stopped): no bytes; the SDK's timeout turns it into an error.
            data = b""
        if not data:
            # Sleep until bytes arrive (at most 0.5 ms) rather than spinning the CPU the virtual hand needs.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                select.select([self.ser.fileno()], [], [], 0.0005)
        return data

    def writePort(self, packet: bytes | list[int]) -> int:
        try:
            return self.ser.write(packet)
        except (serial.SerialException, OSError) as error:
            raise self._gone("sending", error) from error

    def clearPort(self) -> None:
        # Every transmission starts here: a port that vanished raises pyserial's error, which must reach the
        # safety layer as a comms fault (a BusError), not as an unexpected exception.
        try:
            self.ser.reset_input_buffer()
        except (serial.SerialException, OSError) as error:
            raise self._gone("clearing its input", error) from error

    def getBytesAvailable(self) -> int:
        try:
            return self.ser.in_waiting
        except (serial.SerialException, OSError) as error:
            raise self._gone("polling", error) from error

    def _gone(self, doing: str, error: Exception) -> PortError:
        return PortError(f"serial port {self.port_name} failed while {doing}: {error} — was the USB adapter unplugged?")
