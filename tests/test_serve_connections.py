"""`dwserve serve`'s uvicorn (service/cli.run_server) under idle connections: they neither
take the server down nor stay open for good.

uvicorn's limit_concurrency (once max(64, 4 * max_queue_size)) counted idle sockets, and past
it every request, liveness included, got a plain-text 503. The server here is the real stack
(run_server) around the fake models, on a loopback port, with a 1 s idle timeout."""
import socket
import time

import httpx

from server_process import fake_server_cmd, server_process


def _server():
    """The real stack (run_server) around the fake models, with a 1 s idle timeout."""
    return server_process(fake_server_cmd(idle_timeout_s=1.0, max_queue_size=4), timeout=60)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True


def test_idle_connections_neither_block_requests_nor_stay_open():
    with _server() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]   # > the old cap, 64
        try:
            time.sleep(0.3)
            with httpx.Client(base_url=url, timeout=10) as client:
                live = client.get("/v2/health/live")
                assert live.status_code == 200 and live.json() == {"live": True}
                assert client.get("/v2/health/ready").status_code == 200
                assert client.get("/metrics").status_code == 200
                r = client.post("/v2/models/lfm2/infer", json={"inputs": [
                    {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]})
                assert r.status_code == 200, r.text
            # Never a byte sent: closed by the server after the idle timeout (1 s here).
            deadline = time.time() + 10
            while not all(_closed_by_server(s) for s in idle[:5]) and time.time() < deadline:
                time.sleep(0.2)
            assert all(_closed_by_server(s) for s in idle), "idle connections are still open"
        finally:
            for s in idle:
                s.close()
        assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers, then Content-Length bytes of body): its head and
    body may arrive in separate segments, so a single recv() can return either part."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-body: {data!r}"
        body += chunk
    assert len(body) == length, "more bytes than one response"
    return head + b"\r\n\r\n" + body


def test_a_connection_that_sends_a_request_is_served_not_cut_by_the_idle_timer():
    """The timer armed at connect is cancelled by the first byte: a request that takes longer
    than the idle timeout to arrive in pieces, then a keep-alive second request, both answered."""
    with _server() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(10)
            request = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
            s.sendall(request[:10])
            time.sleep(1.5)                        # > the idle timeout, mid-request
            s.sendall(request[10:])
            first = _read_response(s)
            assert first.startswith(b"HTTP/1.1 200"), first
            s.sendall(request)                     # the same connection, kept alive
            second = _read_response(s)
            assert second.startswith(b"HTTP/1.1 200"), second


def test_a_response_before_its_body_was_read_closes_the_connection():
    """A GET with Content-Length 10^9 (answered without reading it), then one body byte and
    silence: the connection stayed open past every timeout (1,927 of 2,000 such held at 45 s),
    uvicorn's idle timer waiting for a request to end."""
    with _server() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
            sock.settimeout(5)
            reply = sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200"), reply
            time.sleep(0.2)
            try:
                sock.sendall(b"a")   # a byte of the unread body: the idle timer was cancelled for good
            except ConnectionError:
                return               # already closed
            deadline = time.time() + 3
            while not _closed_by_server(sock):
                assert time.time() < deadline, "the connection is still open"
        finally:
            sock.close()

