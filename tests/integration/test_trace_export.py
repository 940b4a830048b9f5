"""Where spans go: to an OpenTelemetry collector over OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, else to the service's JSON lines file."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pizzeria.kit import tracing
from pizzeria.kit.settings import Settings


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Collector.received.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_spans_go_to_the_collector_when_one_is_configured(collector: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    provider = tracing.configure_tracing("orders", Settings())
    with tracing.span("POST /api/v1/orders"):
        pass
    provider.force_flush()
    [(path, content_type, body)] = Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    sent = ExportTraceServiceRequest.FromString(body)
    [resource] = sent.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "orders"
    assert [s.name for scope in resource.scope_spans for s in scope.spans] == ["POST /api/v1/orders"]
    provider.shutdown()


def test_without_a_collector_spans_are_json_lines_in_the_var_directory(tmp_path: Path) -> None:
    provider = tracing.configure_tracing("kitchen", Settings(PIZZERIA_VAR_DIR=str(tmp_path)))  # type: ignore[call-arg]
    with tracing.span("kitchen ticket ready"):
        pass
    provider.force_flush()
    [line] = (tmp_path / "traces" / "kitchen.jsonl").read_bytes().splitlines()
    span = orjson.loads(line)
    assert (span["name"], span["service"], span["parent_id"]) == ("kitchen ticket ready", "kitchen", None)
    assert len(span["trace_id"]) == 32
    provider.shutdown()
