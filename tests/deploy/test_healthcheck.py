"""The image's health check (`python -m pizzeria.chassis.healthcheck`): it finds the service the
container serves, asks it on that service's port, and fails on anything but a 200."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pizzeria.chassis import healthcheck
from pizzeria.kit.settings import Settings


class Answers(BaseHTTPRequestHandler):
    """/ready answers 503 (a dependency is down), /health 200, /empty 204."""

    def do_GET(self) -> None:
        self.send_response({"/health": 200, "/empty": 204}.get(self.path, 503))
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def fake_proc(tmp_path: Path, *commands: list[str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for pid, argv in enumerate(commands, start=1):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()
    return tmp_path


def test_finds_the_served_service_among_the_processes(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        ["/sbin/docker-init", "--", "pizzeria", "serve", "orders"],
        ["/opt/pizzeria/bin/python", "/opt/pizzeria/bin/pizzeria", "serve", "orders"],
    )
    assert healthcheck.served_service(proc) == "orders"
    assert healthcheck.served_service(fake_proc(tmp_path / "none", ["pizzeria", "migrate"])) is None
    assert healthcheck.served_service(fake_proc(tmp_path / "bad", ["pizzeria", "serve", "nope"])) is None
    other = fake_proc(tmp_path / "other", ["pizzeria", "dlq", "list", "--service", "orders"])
    assert healthcheck.served_service(other) is None


def test_asks_the_service_port_on_loopback_when_it_listens_everywhere() -> None:
    settings = Settings(PIZZERIA_HOST="0.0.0.0")
    assert healthcheck.probe_url("kitchen", "/ready", settings) == "http://127.0.0.1:5006/ready"


def test_healthy_only_on_200(
    tmp_path: Path, server: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = fake_proc(tmp_path / "p", ["pizzeria", "serve", "audit"])
    monkeypatch.setenv("AUDIT_PORT", str(server))
    monkeypatch.setenv("PIZZERIA_HOST", "0.0.0.0")
    assert healthcheck.main(["/health"], proc=proc) == 0
    assert healthcheck.main(["/ready"], proc=proc) == 1
    assert healthcheck.main(["/empty"], proc=proc) == 1
    assert "503" in capsys.readouterr().err
    assert healthcheck.main(["/health", "catalog"], proc=proc) == 1  # nothing on catalog's port
    assert healthcheck.main([], proc=fake_proc(tmp_path / "empty")) == 1
