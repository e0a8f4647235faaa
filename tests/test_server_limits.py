"""A real `lsr serve` on loopback against slow and broken clients: idle connections, a trickled request head, a
half-sent body and a client that leaves mid-body are each closed within the configured deadline with one log
line, while /health stays fast."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import pytest

TIMEOUT_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(api_index_dir):
    port = _free_port()
    env = dict(os.environ, LSR_HEADER_TIMEOUT_S=str(TIMEOUT_S), LSR_BODY_TIMEOUT_S=str(TIMEOUT_S),
               LSR_KEEP_ALIVE_S="2", LSR_WARM_UP="false")
    proc = subprocess.Popen([sys.executable, "-c", "from lsr.api.cli import main; main()", "serve", str(api_index_dir),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("lsr serve did not start: " + "".join(lines[-20:]))
    yield port, base, lines
    proc.terminate()
    proc.wait(timeout=30)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
        return True, data
    except (socket.timeout, ConnectionResetError):
        return False, data


def test_slow_clients_are_cut_off_and_health_stays_fast(server):
    port, base, lines = server
    start = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    trickle = socket.create_connection(("127.0.0.1", port))
    trickle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"query\": ")
    leaver = socket.create_connection(("127.0.0.1", port))
    leaver.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"qu")
    time.sleep(0.3)
    leaver.close()

    stop = threading.Event()

    def keep_trickling():
        while not stop.is_set():
            try:
                trickle.sendall(b"X")
            except OSError:
                return
            time.sleep(0.3)
    threading.Thread(target=keep_trickling, daemon=True).start()

    t0 = time.perf_counter()
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    assert time.perf_counter() - t0 < 1.0, "/health was slowed by the hanging clients"

    limit = TIMEOUT_S + 3.0
    for sock in idle:
        closed, data = _closed_within(sock, limit)
        assert closed and data == b"", "an idle connection was not closed"
    closed, data = _closed_within(trickle, limit)
    stop.set()
    assert closed and data.startswith(b"HTTP/1.1 408"), data[:80]
    closed, data = _closed_within(half_body, limit)
    assert closed and b" 408 " in data.split(b"\r\n", 1)[0], data[:80]
    assert time.monotonic() - start < 2 * limit

    time.sleep(0.5)
    log = "".join(lines)
    assert log.count("no request within") >= 3
    assert log.count("request head incomplete") == 1
    assert log.count("request body not received") == 1
    assert log.count("client disconnected before sending the whole body") == 1
    assert "Exception in ASGI application" not in log and "Traceback" not in log
    for sock in idle:
        sock.close()
