"""A TCP proxy for fault injection: sits between a client and a server on loopback and can cut
every connection mid-stream, or refuse new ones for a while (accepted and closed at once, or,
with the port cut, refused by the kernel). Runs its own event loop in a
thread so both sync and async tests can use it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from pathlib import Path

#: Where test servers' ports are picked from: below the range the kernel takes the local ports
#: of outgoing connections from (a port picked there, free when picked, may be a connection's by
#: the time its server binds it: "address already in use").
LOWEST_PORT = 10_000
_pick = random.Random()  # its own: picking ports leaves the global generator's sequence alone
#: Every port this process has handed out. A port is free when picked and taken only when its
#: server binds it, so two picks in a row (the services of one system, a broker and its
#: controller) could name the same port: one is never handed out twice.
_handed_out: set[int] = set()


def _outgoing_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    return free_ports(1, 1)


def free_ports(count: int, step: int) -> int:
    """A port p such that p, p + step, ... (`count` of them) are all free now and were never
    handed out before by this process, each below the ports outgoing connections are given."""
    highest = _outgoing_ports_start() - 1 - step * (count - 1)
    if len(_handed_out) > max((highest - LOWEST_PORT) // 2, 1_000):  # the earliest are long released
        _handed_out.clear()
    while True:
        if highest > LOWEST_PORT:
            base = _pick.randint(LOWEST_PORT, highest)
        else:  # an unusual range: whatever the kernel gives
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                base = int(s.getsockname()[1])
            if base + step * (count - 1) > 65535:
                continue
        ports = {base + step * n for n in range(count)}
        if ports & _handed_out:
            continue
        with contextlib.ExitStack() as bound:
            try:
                for port in ports:
                    s = bound.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.update(ports)
        return base


class TcpProxy:
    """Forwards `listen_port` → `target_port` on 127.0.0.1."""

    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        self.target_port = target_port
        self.listen_port = listen_port or free_port()
        self.loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._refuse_until = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="tcp-proxy", daemon=True)
        self.connections = 0
        self.drops = 0

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    def drop_all(self, refuse_for: float = 0.0) -> int:
        """Reset every open connection (both directions); refuse new ones for `refuse_for` s."""

        async def drop() -> int:
            self._refuse_until = time.monotonic() + refuse_for
            victims = list(self._writers)
            for w in victims:
                sock = w.get_extra_info("socket")
                with contextlib.suppress(Exception):
                    if sock is not None:  # RST instead of FIN: a real connection loss
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    w.transport.abort()
            self._writers.clear()
            return len(victims)

        dropped = asyncio.run_coroutine_threadsafe(drop(), self.loop).result(10)
        self.drops += 1
        return dropped

    def cut(self) -> None:
        """Stop listening, and reset every open connection: new ones are refused, as by a port
        that nothing listens on, until `mend`."""

        async def stop_listening() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        asyncio.run_coroutine_threadsafe(stop_listening(), self.loop).result(10)
        self.drop_all()

    def mend(self) -> None:
        """Listen again after `cut`."""
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
