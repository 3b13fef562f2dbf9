"""A TCP proxy in front of a real Redis that a test controls: it can answer chosen commands with a
reply of its own (a RESP error such as `-LOADING ...`, a doctored INFO) or reset every connection.

It forwards one command at a time per client connection and reads exactly one reply for it, so an
injected reply always lands in its command's place, pipelined or not. RESP2 only (redis-py's default).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass


@dataclass
class _Rule:
    command: str
    reply: bytes
    # How many more times the rule fires; None: until removed.
    remaining: int | None
    # Only when the command's first argument (a subcommand, e.g. CREATE for XGROUP) matches.
    subcommand: str | None = None


class RespProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._rules: list[_Rule] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.injected: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_connections()
        if self._server is not None:
            await self._server.wait_closed()

    def answer(
        self, command: str, reply: bytes, *, times: int | None = 1, subcommand: str | None = None
    ) -> None:
        """Answer the next `times` `command`s (None: all) with `reply` (raw RESP) instead of Redis."""
        self._rules.append(_Rule(command.upper(), reply, times, subcommand.upper() if subcommand else None))

    def fail(self, command: str, error: str, *, times: int | None = 1, subcommand: str | None = None) -> None:
        """Answer `command` with the RESP error `error` (e.g. "LOADING Redis is loading")."""
        self.answer(command, f"-{error}\r\n".encode(), times=times, subcommand=subcommand)

    def clear(self) -> None:
        self._rules.clear()

    def reset_connections(self) -> None:
        """Close every client connection with a TCP reset (SO_LINGER 0), as a crashed server would."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    def _injection(self, command: list[bytes]) -> bytes | None:
        name = command[0].decode().upper() if command else ""
        sub = command[1].decode(errors="replace").upper() if len(command) > 1 else None
        for rule in self._rules:
            if rule.command != name or (rule.subcommand is not None and rule.subcommand != sub):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
            self.injected[name] = self.injected.get(name, 0) + 1
            return rule.reply
        return None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
            while True:
                raw, command = await _read_command(client_reader)
                injected = self._injection(command)
                if injected is not None:
                    client_writer.write(injected)
                else:
                    upstream_writer.write(raw)
                    client_writer.write(await _read_reply(upstream_reader))
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(client_writer)
            client_writer.transport.abort()
            if upstream_writer is not None:
                upstream_writer.transport.abort()


async def _read_command(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes]]:
    """One client command (an array of bulk strings, or an inline command): raw bytes and parts."""
    header = await reader.readuntil(b"\r\n")
    if not header.startswith(b"*"):
        return header, header.strip().split()
    raw = [header]
    parts: list[bytes] = []
    for _ in range(int(header[1:-2])):
        length_line = await reader.readuntil(b"\r\n")
        data = await reader.readexactly(int(length_line[1:-2]) + 2)
        raw += [length_line, data]
        parts.append(data[:-2])
    return b"".join(raw), parts


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One complete RESP2 reply, nested arrays included, as raw bytes."""
    line = await reader.readuntil(b"\r\n")
    kind = line[:1]
    if kind in (b"+", b"-", b":"):
        return line
    if kind == b"$":
        length = int(line[1:-2])
        return line if length < 0 else line + await reader.readexactly(length + 2)
    if kind == b"*":
        count = int(line[1:-2])
        parts = [line]
        for _ in range(max(count, 0)):
            parts.append(await _read_reply(reader))
        return b"".join(parts)
    raise ConnectionError(f"unexpected RESP reply line {line!r}")
