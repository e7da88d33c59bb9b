"""The one OS thread that runs the server's torch work: model building, warm-up, every forward.

Why one thread. ATen's CPU parallelism is OpenMP, and OpenMP gives every OS thread that
enters a parallel region its own team of worker threads. Once more team threads exist than
cores, libgomp stops spin-waiting between parallel regions ("throttled" spinning) and every
one of a forward's ~100 regions pays a sleep/wake-up. Measured on 2 cores: a MobileNetV2
batch-1 forward took 19 ms on the thread that built the model and 35 ms on any other (the
server before this thread existed). With every model's forwards on this thread there is one
team, and the device (CPU cores or one GPU stream) is used by one forward at a time anyway.

    compute = ComputeThread()
    model = compute.call(build_model, "mobilenet_v2")    # runs there, result or exception here
    compute.shutdown()

Batchers keep their own threads (to form batches while a forward runs) and hand each formed
batch to `call`; a call made from the compute thread itself runs inline (no deadlock); a call
after shutdown raises BatcherStopped (503).
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

from .batching import BatcherStopped


class ComputeThread:
    def __init__(self, name: str = "dwserve-compute"):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._ident = self._pool.submit(threading.get_ident).result()   # start it, remember it

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn(*args, **kwargs) on the compute thread and return its result (or raise)."""
        if threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except RuntimeError:   # shut down: a shutdown whose drain ran out of time left a caller behind
            # (a generation still stepping). Said as the draining server's 503, not a bug's traceback.
            raise BatcherStopped("the server is shutting down: its compute thread has stopped") from None
        return future.result()

    def shutdown(self) -> None:
        """Finish what was submitted, then end the thread."""
        self._pool.shutdown(wait=True)
