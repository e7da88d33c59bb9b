"""Closed-loop HTTP load for the serving benchmark: `clients` threads, each with one
keep-alive connection, send the same pre-encoded request back to back.

Why a raw-socket client: the benchmark measures the *server's* overhead (end-to-end p50
minus compute p50), and the clients share the server's 2 cores. Every microsecond of
client-side Python lands in the end-to-end latency and takes CPU from the server. Measured
against the same server, batch-1 binary MobileNetV2 requests (600 KB): this client ~2.8 ms
over compute, stdlib http.client ~3.3 ms, httpx ~4.2 ms. It speaks only what the benchmark
needs: HTTP/1.1 POST with Content-Length, replies framed by Content-Length (what dwserve
sends on /infer); anything else is reported as a failed request.

    stats = run_load("http://127.0.0.1:8000", (path, body, headers), clients=16,
                     duration=20, warmup=4)
    on_off = run_interleaved({"on": url_a, "off": url_b}, request, 16, duration=20,
                             warmup=4, rounds=4)     # turns, so drift hits both alike
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np

NO_ANSWER = 0                        # a record's status when no reply came (connection failed)
NO_ANSWER_BACKOFF_S = (0.01, 0.5)    # closed_loop's wait after one: first, then at most (doubling)


class KeepAliveClient:
    """One HTTP/1.1 connection; post() -> (status, headers lower-cased, body)."""

    def __init__(self, host: str, port: int, timeout: float = 120.0):
        self.addr, self.timeout = (host, port), timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.addr, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""
        return sock

    def _read_until(self, sock: socket.socket, n: int | None, marker: bytes = b"") -> None:
        while (marker not in self.buf) if n is None else (len(self.buf) < n):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection mid-reply")
            self.buf += chunk

    def post(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        sock = self.sock or self._connect()
        try:
            sock.sendall(request)
            self._read_until(sock, None, b"\r\n\r\n")
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
            length = int(headers["content-length"])
            self._read_until(sock, length)
            body, self.buf = self.buf[:length], self.buf[length:]
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, body
        except (OSError, ValueError, KeyError, IndexError):
            self.close()   # the next post reconnects
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""


def encode_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def server_timing(header: str) -> dict[str, float]:
    """W3C Server-Timing -> {name: seconds (dur) or value (desc)}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:]) / 1e3
        elif rest.startswith("desc="):
            out[name] = float(rest[5:].strip('"'))
    return out


def run_load(url: str, request, clients: int, duration: float, warmup: float) -> dict:
    """`clients` threads send `request` (path, body, headers) back to back; latency and
    Server-Timing stats over the measured window only (after `warmup` seconds)."""
    return summarize(*_load_window(url, request, clients, duration, warmup), clients)


def run_interleaved(urls: dict[str, str], request, clients: int, duration: float, warmup: float,
                    rounds: int) -> dict[str, dict]:
    """The same load against several servers, taken in turns: `rounds` rounds, each giving
    every server duration/rounds measured seconds (after its own warm-up; the order is
    reversed every other round). A server's stats pool all its rounds, and `round_rps` lists
    its throughput per round. Why: the box drifts over a minute (other tenants, turbo), and
    one long window per server puts that drift into their throughput ratio; turns share it."""
    if rounds < 1:
        raise ValueError(f"expected rounds >= 1, got {rounds}")
    windows: dict[str, list] = {name: [] for name in urls}
    names = list(urls)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            windows[name].append(_load_window(urls[name], request, clients, duration / rounds,
                                              warmup if r == 0 else min(warmup, 1.0)))
    out = {}
    for name, ws in windows.items():
        stats = summarize([rec for w in ws for rec in w[0]], sum(w[1] for w in ws), clients)
        stats["round_rps"] = [_ok_count(w[0]) / w[1] for w in ws]
        out[name] = stats
    return out


def _ok_count(records: list[tuple]) -> float:
    """Successful requests in the window, each counted for the share of it inside (record[6])."""
    return sum(r[6] for r in records if r[2] == 200)


def closed_loop(make_sender, clients: int, duration: float, warmup: float) -> tuple[list[tuple], float]:
    """`clients` threads, each with its own sender (make_sender(): a context manager giving
    send() -> (status, Server-Timing value)), sending back to back for warmup + duration
    seconds -> (records of the measured window, its length: `duration`). One loop for HTTP
    (below) and gRPC (grpc_load.py).

    A record is (t_end, latency_s, status, compute_s, queue_s, batch_rows, share, timed): every
    request that overlaps the window [warmup, warmup + duration], `share` the fraction of its
    time inside it, `timed` whether it started inside (only those go into the latency stats).
    Each client is busy the whole window, so the shares of a client's requests add up to the
    window over its latency: throughput = sum of shares / window, whatever the latencies. (Whole
    requests over a window stretched to the last one's end read the slower clients' last
    request as idle time: 10-20% low when a request takes a tenth of the window or more.)"""
    records, lock = [], threading.Lock()
    t_start = time.perf_counter()
    t_measure, t_stop = t_start + warmup, t_start + warmup + duration

    def worker():
        backoff = 0.0
        with make_sender() as send:
            while (now := time.perf_counter()) < t_stop:
                status, timing_header = send()
                t1 = time.perf_counter()
                if t1 > t_measure:
                    share = (min(t1, t_stop) - max(now, t_measure)) / max(t1 - now, 1e-9)
                    timing = server_timing(timing_header)
                    with lock:
                        records.append((t1, t1 - now, status, timing.get("compute"), timing.get("queue"),
                                        timing.get("batch"), share, now >= t_measure))
                # No answer at all (refused, reset, timed out): a server that is down or
                # restarting refuses in microseconds, and retrying at once spun a core for the
                # whole window (taking it from a server sharing the box) and piled up millions of
                # records. Wait, doubling up to NO_ANSWER_BACKOFF_S[1], never past the window;
                # each try stays a record with status 0, an error in summarize.
                if status == NO_ANSWER:
                    lo, hi = NO_ANSWER_BACKOFF_S
                    backoff = min(max(2 * backoff, lo), hi)
                    time.sleep(max(0.0, min(backoff, t_stop - time.perf_counter())))
                else:
                    backoff = 0.0

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, duration


def _load_window(url: str, request, clients: int, duration: float, warmup: float
                 ) -> tuple[list[tuple], float]:
    """-> (records of the measured window, its length in seconds)."""
    path, body, headers = request
    host, port = url.removeprefix("http://").rsplit(":", 1)
    raw = encode_post(host, path, body, headers)

    @contextlib.contextmanager
    def sender():
        client = KeepAliveClient(host, int(port))

        def send():
            try:
                status, reply, _ = client.post(raw)
            except (OSError, ValueError, KeyError, IndexError):
                return NO_ANSWER, ""
            return status, reply.get("server-timing", "")
        try:
            yield send
        finally:
            client.close()

    return closed_loop(sender, clients, duration, warmup)


def summarize(records: list[tuple], window_s: float, clients: int) -> dict:
    """records (t_end, latency_s, status, compute_s, queue_s, batch_rows, share, timed) of a
    window_s-second window (closed_loop) -> the scenario stats: throughput from the shares of
    the successful requests, latencies and counts over the requests started in the window."""
    ok = [r for r in records if r[2] == 200 and r[7]]
    if not ok:
        statuses = sorted({r[2] for r in records})
        why = " (0: no answer, the connection failed: is the server up on that port?)" if NO_ANSWER in statuses else ""
        raise RuntimeError(f"no successful requests; statuses {statuses}{why}")
    lat = np.array([r[1] for r in ok])
    comp = np.array([r[3] for r in ok if r[3] is not None])
    queue = np.array([r[4] for r in ok if r[4] is not None])
    rows = np.array([r[5] for r in ok if r[5] is not None])
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
    return {"clients": clients, "requests": len(ok), "errors": sum(1 for r in records if r[7]) - len(ok),
            "throughput_rps": _ok_count(records) / window_s,
            "p50_s": pct(lat, 50), "p95_s": pct(lat, 95), "p99_s": pct(lat, 99), "mean_s": float(lat.mean()),
            "compute_p50_s": pct(comp, 50), "queue_p50_s": pct(queue, 50),
            "batch_rows_mean": float(rows.mean()) if len(rows) else None}
