"""/v1/generate: prompt or input_ids -> tokens, as one JSON reply or an SSE stream.

The generation loop (`lm.stream_generate`) runs as an exclusive job on the model's worker
thread, each token's model step on the compute thread (ModelRuntime.on_compute: other
models' batches run between tokens), and hands each token to the event loop through an
asyncio.Queue, so the event loop never runs model code. A client that disconnects sets `cancel`, which ends the loop at the
next token. Stop strings are matched on the decoded text; while streaming, the last
(longest stop string - 1) characters are held back so a stop string is never half-sent.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from ..runtime import Job, ModelRuntime
from ..schemas import GenerateRequest


@dataclass
class Plan:
    ids: list[int]
    impl: str
    max_new_tokens: int
    sampling: dict[str, Any]
    stop: list[str]
    t_start: float = field(default_factory=time.perf_counter)


class GenerateHandler:
    def setup(self, runtime: ModelRuntime) -> "GenerateHandler":
        self.rt = runtime
        self.lm = runtime.served.lm
        self.tokenizer = self.lm.tokenizer
        meta = getattr(runtime.served, "metadata", None) or {}
        self.vocab_size = int(meta.get("vocab_size") or self.lm.config.vocab_size)
        return self

    def decode(self, req: GenerateRequest) -> Plan:
        s = self.rt.settings
        impl = self.rt.check_impl(req.depthwise_impl)
        if (req.prompt is None) == (req.input_ids is None):
            raise ValueError("expected exactly one of 'prompt' (text) or 'input_ids' (token ids)")
        if req.prompt is not None:
            if len(req.prompt) > s.max_prompt_chars:
                raise ValueError(f"prompt: {len(req.prompt)} characters; the limit is {s.max_prompt_chars}")
            ids = list(self.tokenizer.encode(req.prompt))
        else:
            ids = list(req.input_ids)
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise ValueError(f"input_ids: token ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        if not ids:
            raise ValueError("prompt: expected at least one token")
        if req.max_new_tokens > s.max_new_tokens:
            raise ValueError(f"max_new_tokens: at most {s.max_new_tokens} (DWSERVE_MAX_NEW_TOKENS), got {req.max_new_tokens}")
        if len(ids) + req.max_new_tokens > s.max_sequence_length:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({req.max_new_tokens}) exceeds "
                             f"max_sequence_length {s.max_sequence_length}")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not x for x in stop) or len(stop) > 16 or any(len(x) > 256 for x in stop):
            raise ValueError("stop: expected up to 16 non-empty strings of at most 256 characters")
        sampling = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "seed": req.seed}
        return Plan(ids, impl, req.max_new_tokens, sampling, stop)

    async def events(self, plan: Plan) -> AsyncIterator[dict[str, Any]]:
        """Yields {"token_id", "text"} per token, then one final summary dict.

        Submits the job before the first `yield`-able await, so a full queue surfaces as
        QueueFull from the first `__anext__` (the route turns it into a 503 before any byte
        of the response is sent)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        eos = getattr(self.tokenizer, "eos_token_id", None)

        def put(item):
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed during shutdown: nobody is listening
                pass

        def job():   # on the batcher thread; each token's model step on the compute thread
            steps = self.lm.stream_generate([plan.ids], max_new_tokens=plan.max_new_tokens,
                                            stop_token_ids=[eos] if eos is not None else None,
                                            **plan.sampling)
            try:
                while not cancel.is_set():
                    step = self.rt.on_compute(next, steps, None)
                    if step is None or step[0] is None:
                        break
                    put(("token", int(step[0])))
            finally:
                self.rt.on_compute(steps.close)   # frees the decoder (cache, graph lock) there

        future = self.rt.batcher.submit(Job(job, plan.impl), None, 1)
        future.add_done_callback(lambda f: put(("done", f)))
        labels = (self.rt.name, plan.impl)
        m = self.rt.metrics
        ids: list[int] = []
        sent, text, finish, t_first = 0, "", "length", None
        hold = max((len(x) for x in plan.stop), default=1) - 1
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), self.rt.settings.request_timeout_s)
                except asyncio.TimeoutError:
                    future.cancel()
                    raise
                if kind == "done":
                    if not value.cancelled() and value.exception() is not None:
                        raise value.exception()
                    break
                if t_first is None:
                    t_first = time.perf_counter()
                    m.ttft.labels(*labels).observe(t_first - plan.t_start)
                if value == eos:
                    finish = "stop"
                    cancel.set()
                    continue
                ids.append(value)
                text = self.tokenizer.decode(ids)
                hit = min((text.find(x) for x in plan.stop if x in text), default=-1)
                if hit >= 0:
                    text, finish = text[:hit], "stop"
                    cancel.set()
                    continue
                if len(text) - hold > sent:
                    yield {"token_id": value, "text": text[sent:len(text) - hold]}
                    sent = len(text) - hold
            if sent < len(text):
                yield {"token_id": ids[-1] if ids else None, "text": text[sent:]}
        finally:
            cancel.set()  # client gone or error: stop generating at the next token
            n = len(ids)  # counted also when the client left mid-stream
            m.generated_tokens.labels(*labels).inc(n)
            if n > 1 and t_first is not None:
                m.tpot.labels(*labels).observe((time.perf_counter() - t_first) / (n - 1))
        yield {"done": True, "text": text, "token_ids": ids, "finish_reason": finish,
               "usage": {"prompt_tokens": len(plan.ids), "completion_tokens": n}}

