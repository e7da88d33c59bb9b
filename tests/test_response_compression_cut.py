"""Response compression (service/compression.py) cut by the server's shutdown: uvicorn cancels
the requests still running when --graceful-shutdown-s runs out. One cancelled while its big
body was being compressed in a worker thread had sent nothing (its start held by the
middleware), so uvicorn answered its own plain-text 500 ("ASGI callable returned without
starting response") while the guard, which had seen the start, counted a 200. The reply is
ready by then: it goes as it is, and the cancellation goes on."""
import asyncio
import threading

from service import compression


def test_a_reply_cut_while_compressed_off_the_loop_still_goes_whole(monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = compression.compress

    def slow(body, coding, level):   # in the worker thread: held until the task is cancelled
        entered.set()
        release.wait(10)
        return real(body, coding, level)
    monkeypatch.setattr(compression, "compress", slow)
    body = b"x" * (compression.OFF_LOOP_BYTES + 1)   # big: compressed off the loop
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    async def run() -> bool:
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"accept-encoding", b"gzip")]}
        task = asyncio.ensure_future(compression.CompressionMiddleware(app, min_bytes=1024, level=1)(
            scope, receive, send))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        finally:
            release.set()
        return False

    assert asyncio.run(run()), "the cancellation was swallowed"
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 200 and sent[1]["body"] == body and not sent[1].get("more_body", False)
    assert headers[b"content-length"] == str(len(body)).encode() and b"content-encoding" not in headers
