"""`dwserve serve`'s uvicorn (service/cli.run_server) against clients that abuse a request's
head: megabytes of headers (uvicorn's httptools protocol buffered them all, no bound) and
headers trickled slower than the idle timeout (each byte re-armed nothing: slowloris)."""
import contextlib
import socket
import time

import httpx

from server_process import fake_server_cmd, send_json_post, server_process


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def _reply(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionError, socket.timeout):
        pass
    return data


def test_a_huge_head_is_refused_and_not_buffered():
    with server_process(fake_server_cmd(idle_timeout_s=5.0), timeout=60) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        before = _rss_mib(proc.pid)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(10)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            try:
                for i in range(100):   # 100 MB of headers, if the server keeps reading
                    sock.sendall(b"X-Pad-%d: " % i + b"a" * 1_000_000 + b"\r\n")
            except ConnectionError:
                pass   # refused and closed mid-send: what should happen
            reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 431 ") or reply == b"", reply[:200]
        assert _rss_mib(proc.pid) - before < 50
        assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200


def test_a_head_over_the_bound_is_a_431_however_its_bytes_arrive():
    """The 64 KiB bound on a head (README: "at most 64 KiB (431)") was checked only on reads
    that left the head unfinished: a head whose last bytes came in the read that completed it
    was served, so a 100 KB head sent in one go (or 700 headers of 100 bytes) got a 200."""
    heads = {"one huge header": b"X-Pad: " + b"a" * 100_000 + b"\r\n",
             "many headers": b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(700))}
    with server_process(fake_server_cmd(idle_timeout_s=5.0), timeout=60) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        for what, headers in heads.items():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.settimeout(10)
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
                reply = _reply(sock)
            assert reply.startswith(b"HTTP/1.1 431 "), (what, reply[:200])
            assert b"65536" in reply, reply
        with socket.create_connection(("127.0.0.1", port)) as sock:   # just under the bound: served
            sock.settimeout(10)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
                         + b"a" * 60_000 + b"\r\n\r\n")
            assert _reply(sock).startswith(b"HTTP/1.1 200 ")


def test_a_trickled_head_is_cut_after_the_head_timeout():
    with server_process(fake_server_cmd(idle_timeout_s=1.0, head_timeout_s=2.0), timeout=60) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head, t0, cut = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100, time.time(), None
            for byte in head:   # one byte every 0.2 s: never idle for the 1 s idle timeout
                try:
                    sock.sendall(bytes([byte]))
                except ConnectionError:
                    break
                time.sleep(0.2)
                sock.settimeout(0.01)
                try:
                    if sock.recv(4096, socket.MSG_PEEK) or True:
                        cut = time.time() - t0
                        break
                except socket.timeout:
                    pass
            assert cut is not None and 1.8 < cut < 5, cut
        with httpx.Client(base_url=url, timeout=5) as client:   # a whole request on a new connection
            assert client.get("/v2/health/live").status_code == 200


def test_keep_alive_requests_with_bodies_are_untouched():
    with server_process(fake_server_cmd(idle_timeout_s=1.0), timeout=60) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(50):   # one connection, many heads: none counted into the next
                r = client.post("/v2/models/lfm2/infer", headers={"X-Pad": "a" * 30_000}, json={"inputs": [
                    {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]})
                assert r.status_code == 200, r.text
            time.sleep(0.5)
            assert client.get("/v2/health/live").status_code == 200


@contextlib.contextmanager
def _answer_then_stalled_head(port: int, path: str, body: bytes):
    """A POST, then 0.3 s later (its answer in progress) the first bytes of a next request's
    head, which stall -> the connected socket."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(20)
        send_json_post(sock, path, body)
        time.sleep(0.3)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHo")
        yield sock


def test_a_pipelined_head_cut_waits_for_the_answer_in_progress():
    """A client that pipelines: its first request is still being answered (a 3 s forward) when
    the head of its next one stalls. The raw 408 went out at once, in front of the first
    request's answer, and the connection closed: the first request's 200 was lost and the
    client read a 408 for it. Now the answer goes out first, then the 408 for the stalled head."""
    with server_process(fake_server_cmd(delay_s=3, idle_timeout_s=5.0, head_timeout_s=1.0,
                                        max_queue_delay_ms=0), timeout=60) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        body = b'{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,2]}]}'
        with _answer_then_stalled_head(port, "/v2/models/lfm2/infer", body) as sock:
            reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
        assert b'"logits"' in reply and b"HTTP/1.1 408 " in reply, reply[-300:]


def test_a_deferred_head_cut_reads_nothing_more():
    """The 408 of a stalled head is deferred while an earlier request is answered, and the
    connection's reading paused; but uvicorn resumes reading whenever that request's app awaits
    `receive` (a JSON generation's disconnect watcher, once its first token is in). The rest of
    the cut head was then read and served (a 200 for a request already refused), and the 408
    went out after it. Now nothing more is read once a refusal is decided."""
    with server_process(fake_server_cmd(token_delay_s=1.5, idle_timeout_s=8.0, head_timeout_s=1.0,
                                        max_queue_delay_ms=0), timeout=60) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        body = b'{"input_ids":[1,2],"max_new_tokens":2}'
        with _answer_then_stalled_head(port, "/v1/generate", body) as sock:   # the head: 408 at ~1.3 s
            time.sleep(2.0)                                         # the first token is in: receive awaited again
            sock.sendall(b"st: x\r\n\r\n")
            reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
        assert reply.count(b"HTTP/1.1 200 ") == 1 and b"HTTP/1.1 408 " in reply, reply
