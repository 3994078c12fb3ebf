"""The edge (``python -m dealerline_cli.edge``, started as ``make run`` starts it) in front
of three real HTTP/WebSocket servers that answer with what reached them: each path goes
where the production Ingress sends it, the request arrives as the client sent it (body,
query, ``Host``, ``X-Twilio-Signature``) with forwarded headers added and hop-by-hop ones
gone, WebSockets carry text and binary both ways with subprotocol and close code, and a
refused handshake or a service that is down is told to the client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from dealerline_cli.edge import ESCALATION_WEBHOOK_PATHS
from dealerline_common.net import free_port

# Close codes of the sockets the upstream servers saw their client (the edge) close.
DISCONNECTS: list[int] = []


def _service(name: str) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        response = JSONResponse(
            {
                "service": name,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": request.headers.items(),
                "body": (await request.body()).decode(),
            },
            status_code=201 if request.url.path.endswith("/created") else 200,
        )
        response.set_cookie("first", "1")
        response.set_cookie("second", "2")
        return response

    async def socket(ws: WebSocket) -> None:
        if ws.url.path.endswith("/refuse"):
            await ws.close(code=1008)  # before accepting: the handshake is answered 403
            return
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=offered[0] if offered else None)
        await ws.send_json({"service": name, "headers": ws.headers.items()})
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                DISCONNECTS.append(message.get("code", 1005))
                return
            if message.get("text") == "close please":
                await ws.close(code=4001, reason="asked to")
                return
            if message.get("text") is not None:
                await ws.send_text("echo:" + message["text"])
            else:
                await ws.send_bytes(message["bytes"][::-1])

    return Starlette(
        routes=[
            WebSocketRoute("/{path:path}", socket),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT"]),
        ]
    )


class ServerThread:
    """A uvicorn server on a free port in a thread of its own."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            _service(name), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"upstream-{name}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the upstream server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _start_edge(
    gateway: str, escalation: str, dashboard: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "dealerline_cli.edge", "--port", str(port)]
    argv += ["--gateway", gateway, "--escalation", escalation, "--dashboard", dashboard]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_live(process, url, log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then re-raises the signal it caught (so it ends by SIGTERM).
    assert process.wait(15) in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text() and "ERROR" not in log.read_text()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    with (
        ServerThread("gateway") as gw,
        ServerThread("escalation") as esc,
        ServerThread("dashboard-api") as dash,
    ):
        process, url = _start_edge(gw.url, esc.url, dash.url, log)
        try:
            yield url
        finally:
            _stop(process, log)


def _wait_live(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the edge exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"the edge did not come up:\n{log.read_text()}")


def _echo(response: httpx.Response) -> dict[str, object]:
    assert response.status_code in (200, 201), response.text
    return json.loads(response.text)


def _headers(echo: dict[str, object]) -> dict[str, str]:
    pairs = echo["headers"]
    assert isinstance(pairs, list)
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("path", ESCALATION_WEBHOOK_PATHS)
def test_the_human_legs_webhooks_reach_the_escalation_service(edge: str, path: str) -> None:
    echo = _echo(httpx.post(f"{edge}{path}?session_id=s1&attempt=1", data={"CallStatus": "x"}))
    assert echo["service"] == "escalation"
    assert echo["path"] == path
    assert echo["query"] == "session_id=s1&attempt=1"
    assert echo["body"] == "CallStatus=x"


@pytest.mark.parametrize(
    "path",
    ["/api/voice/incoming", "/api/voice/escalate", "/api/voice/return-to-ai", "/api/voice/x"],
)
def test_the_rest_of_api_voice_reaches_the_gateway(edge: str, path: str) -> None:
    assert _echo(httpx.post(f"{edge}{path}", data={"a": "b"}))["service"] == "gateway"


def test_a_webhook_arrives_as_twilio_sent_it_with_forwarded_headers(edge: str) -> None:
    query = "session_id=abc&task_id=t%2F1&attempt=2"
    response = httpx.post(
        f"{edge}/api/voice/human-status?{query}",
        content=b"CallSid=CA1&CallStatus=ringing&Caller=%2B14155550123",
        headers={
            "Host": "dealer.example.com",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": "c2lnbmF0dXJl",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must not pass",
            "Proxy-Authorization": "Basic c2VjcmV0",
        },
    )
    echo = _echo(response)
    headers = _headers(echo)
    assert echo["query"] == query
    assert echo["body"] == "CallSid=CA1&CallStatus=ringing&Caller=%2B14155550123"
    assert headers["host"] == "dealer.example.com"
    assert headers["x-twilio-signature"] == "c2lnbmF0dXJl"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "dealer.example.com"
    assert "x-hop" not in headers and "proxy-authorization" not in headers
    assert int(headers["content-length"]) == len(echo["body"])  # type: ignore[arg-type]


def test_a_tunnels_forwarded_headers_are_kept_and_the_peer_appended(edge: str) -> None:
    echo = _echo(
        httpx.get(
            f"{edge}/api/voice/incoming",
            headers={
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "abc.trycloudflare.com",
            },
        )
    )
    headers = _headers(echo)
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "abc.trycloudflare.com"


def test_the_response_comes_back_whole(edge: str) -> None:
    response = httpx.put(f"{edge}/api/voice/created", content=b"x" * 200_000)
    assert response.status_code == 201
    cookies = sorted(c.split("=")[0] for c in response.headers.get_list("set-cookie"))
    assert cookies == ["first", "second"]
    assert len(_echo(response)["body"]) == 200_000  # type: ignore[arg-type]


def test_the_edge_answers_its_own_health_and_serves_no_metrics(edge: str) -> None:
    assert httpx.get(f"{edge}/readyz").status_code == 200
    assert httpx.get(f"{edge}/metrics").status_code == 404


@pytest.mark.parametrize("path", ["/", "/api/calls", "/api/auth/login", "/assets/app.js"])
def test_everything_else_reaches_the_dashboard(edge: str, path: str) -> None:
    assert _echo(httpx.get(f"{edge}{path}"))["service"] == "dashboard-api"


def test_a_dashboard_socket_reaches_the_dashboard(edge: str) -> None:
    with connect("ws" + edge.removeprefix("http") + "/ws/sales") as ws:
        assert json.loads(ws.recv())["service"] == "dashboard-api"


def test_a_service_that_is_down_is_a_502_naming_it(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    log = tmp_path / "edge.log"
    process, url = _start_edge(down, down, down, log)
    try:
        response = httpx.post(f"{url}/api/voice/human-answer")
        assert response.status_code == 502
        assert "escalation" in response.text
        with pytest.raises(InvalidStatus) as refused:
            connect("ws" + url.removeprefix("http") + "/api/voice/media-stream")
        assert refused.value.response.status_code == 502
    finally:
        _stop(process, log)
    assert "escalation unavailable" in log.read_text()


def test_a_media_stream_passes_both_ways_with_its_signature(edge: str) -> None:
    ws_url = "ws" + edge.removeprefix("http") + "/api/voice/media-stream?x=1"
    with connect(
        ws_url,
        additional_headers={"X-Twilio-Signature": "d3Nz"},
        subprotocols=["audio.twilio.com"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "audio.twilio.com"
        hello = json.loads(ws.recv())
        headers = dict(hello["headers"])
        assert hello["service"] == "gateway"
        assert headers["x-twilio-signature"] == "d3Nz"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-host"] == edge.removeprefix("http://")
        for i in range(50):
            ws.send(f'{{"event":"media","sequenceNumber":"{i}"}}')
            assert ws.recv() == f'echo:{{"event":"media","sequenceNumber":"{i}"}}'
        ws.send(b"\x01\x02\x03")
        assert ws.recv() == b"\x03\x02\x01"
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")


def test_a_refused_handshake_is_refused_to_the_client(edge: str) -> None:
    ws_url = "ws" + edge.removeprefix("http") + "/api/voice/media-stream/refuse"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_the_client_hanging_up_closes_the_services_socket(edge: str) -> None:
    ws_url = "ws" + edge.removeprefix("http") + "/api/voice/media-stream"
    before = len(DISCONNECTS)
    with connect(ws_url) as ws:
        ws.recv()
        ws.close(code=4002)
    deadline = time.monotonic() + 10
    while len(DISCONNECTS) == before:
        assert time.monotonic() < deadline, "the service's socket stayed open"
        time.sleep(0.02)
    assert DISCONNECTS[before:] == [4002]
    with connect(ws_url) as again:  # and the edge serves the next stream
        assert json.loads(again.recv())["service"] == "gateway"
