"""Small, fast stand-ins for models.registry.ServedModel and the models hooks, used by the
service's unit tests (and usable for local experiments): same interface as
docs/ARCHITECTURE.md, no weights, milliseconds per forward, with knobs (delay_s) to make
batching and overload observable. The real models are exercised by the subprocess tests.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator, Optional

import torch

_impl = contextvars.ContextVar("fake_impl", default="auto")
FAKE_IMPLS = ("auto", "per_group", "slice_sum", "compiled", "fused", "native")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class _Count:
    aten_ops: int
    cuda_kernels: Optional[int] = None


class _Timer:
    seconds = 0.0
    calls = 0


def fake_hooks() -> SimpleNamespace:
    @contextlib.contextmanager
    def use_impl(name):
        token = _impl.set(name)
        try:
            yield
        finally:
            _impl.reset(token)

    def count_launches(fn, *args, **kwargs):
        fn(*args, **kwargs)
        return _Count(aten_ops=100 if _impl.get() == "per_group" else 10)

    @contextlib.contextmanager
    def depthwise_timer():
        t = _Timer()
        t0 = time.perf_counter()
        yield t
        t.seconds, t.calls = (time.perf_counter() - t0) / 2, 1

    return SimpleNamespace(use_impl=use_impl, count_launches=count_launches,
                           depthwise_timer=depthwise_timer, impls=FAKE_IMPLS)


class FakeServedModel:
    """Base: records every forward's (batch rows, impl) in .calls; sleeps delay_s per forward."""

    def __init__(self, name, inputs, outputs, delay_s=0.0):
        self.name, self.inputs, self.outputs = name, inputs, outputs
        self.device = torch.device("cpu")
        self.delay_s = delay_s
        self.calls: list[tuple[int, str]] = []
        self.metadata: dict = {}
        self._lock = threading.Lock()

    def _enter(self, rows: int) -> None:
        assert self._lock.acquire(blocking=False), "two forwards ran concurrently on one model"
        try:
            self.calls.append((rows, _impl.get()))
            if self.delay_s:
                time.sleep(self.delay_s)
        finally:
            self._lock.release()


class FakeClassifier(FakeServedModel):
    """'mobilenet_v2': (B,3,224,224) FP32 -> (B,num_classes) logits = channel means @ W."""

    def __init__(self, num_classes=1000, delay_s=0.0):
        super().__init__("mobilenet_v2", (TensorSpec("input", "FP32", (-1, 3, 224, 224)),),
                         (TensorSpec("logits", "FP32", (-1, num_classes)),), delay_s)
        self.weight = torch.randn(3, num_classes, generator=torch.Generator().manual_seed(0))
        self.labels = [f"label_{i}" for i in range(num_classes)]

    def forward(self, inputs):
        x = inputs["input"]
        self._enter(x.shape[0])
        return {"logits": reference_logits(x, self.weight)}

    def warmup_inputs(self, batch_size=1):
        return {"input": torch.zeros(batch_size, 3, 224, 224)}

    def preprocess(self, image):
        img = image.convert("RGB").resize((224, 224))
        return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1).float() / 255


def reference_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.float().mean(dim=(2, 3)) @ weight


class FakeTokenizer:
    """Characters <-> ids: id = ord(ch) - 32 for printable ASCII; eos = vocab_size - 1."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.eos_token_id = vocab_size, vocab_size - 1

    def encode(self, text: str) -> list[int]:
        return [min(max(ord(c) - 32, 0), self.vocab_size - 2) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(32 + i) for i in ids if i != self.eos_token_id)


class FakeLM:
    """Deterministic LM: next token = (last + 1) % (vocab - 1); with a seed, sampled."""

    def __init__(self, vocab_size: int, owner: FakeServedModel, token_delay_s: float = 0.0):
        self.tokenizer = FakeTokenizer(vocab_size)
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.owner, self.token_delay_s = owner, token_delay_s

    def stream_generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                        seed=None, stop_token_ids=None) -> Iterator[list]:
        self.owner._enter(len(prompts))
        gen = torch.Generator().manual_seed(seed or 0)
        last = [p[-1] for p in prompts]
        done = [False] * len(prompts)
        for _ in range(max_new_tokens):
            step = []
            for i, tok in enumerate(last):
                if done[i]:
                    step.append(None)
                    continue
                nxt = (tok + 1) % (self.config.vocab_size - 1)
                if temperature > 0:
                    nxt = int(torch.randint(0, self.config.vocab_size - 1, (1,), generator=gen))
                last[i] = nxt
                done[i] = bool(stop_token_ids) and nxt in stop_token_ids
                step.append(nxt)
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            yield step
            if all(done):
                return

    def continuous_batch(self, capacity: int, max_length: int) -> "FakeContinuousBatch":
        return FakeContinuousBatch(self, capacity)

    def generate(self, prompts, max_new_tokens, **kw):
        out = [[] for _ in prompts]
        for step in self.stream_generate(prompts, max_new_tokens, **kw):
            for i, t in enumerate(step):
                if t is not None:
                    out[i].append(t)
        return out


class FakeContinuousBatch:
    """models.lfm2.continuous.ContinuousBatch's interface over FakeLM's rule: each step admits
    waiting sequences up to `capacity` rows, then every live one gets its next token; one
    owner._enter(rows) per step (so a concurrent forward would be caught), token_delay_s each."""

    def __init__(self, lm: FakeLM, capacity: int):
        self.lm, self.capacity = lm, capacity
        self.waiting: collections.deque = collections.deque()
        self.rows: list = []
        self.steps: list[int] = []       # live rows per step

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.rows)

    def add(self, seq):
        if seq.max_new_tokens == 0:
            seq.done, seq.finish_reason = True, "length"
            return seq
        seq.generator = torch.Generator().manual_seed(seq.seed or 0)
        self.waiting.append(seq)
        return seq

    def step(self):
        for s in [*self.rows, *self.waiting]:
            if s.cancelled and not s.done:
                s.done, s.finish_reason = True, "cancelled"
        self.waiting = collections.deque(s for s in self.waiting if not s.done)
        self.rows = [s for s in self.rows if not s.done]
        while self.waiting and len(self.rows) < self.capacity:
            self.rows.append(self.waiting.popleft())
        if not self.rows:
            return []
        self.lm.owner._enter(len(self.rows))
        self.steps.append(len(self.rows))
        vocab, out = self.lm.config.vocab_size, []
        for s in self.rows:
            last = s.tokens[-1] if s.tokens else s.prompt[-1]
            nxt = (last + 1) % (vocab - 1)
            if s.temperature > 0:
                nxt = int(torch.randint(0, vocab - 1, (1,), generator=s.generator))
            s.tokens.append(nxt)
            if nxt in s.stop_token_ids:
                s.done, s.finish_reason = True, "stop"
            elif len(s.tokens) >= s.max_new_tokens:
                s.done, s.finish_reason = True, "length"
            out.append((s, nxt))
        if self.lm.token_delay_s:
            time.sleep(self.lm.token_delay_s)
        self.rows = [s for s in self.rows if not s.done]
        return out


class FakeLanguageModel(FakeServedModel):
    """'lfm2': (B, L) INT64 ids -> (B, vocab) next-token logits, one-hot of (last + 1)."""

    def __init__(self, vocab_size=96, delay_s=0.0, token_delay_s=0.0):
        super().__init__("lfm2", (TensorSpec("input_ids", "INT64", (-1, -1)),),
                         (TensorSpec("logits", "FP32", (-1, vocab_size)),), delay_s)
        self.metadata = {"vocab_size": vocab_size}
        self.lm = FakeLM(vocab_size, self, token_delay_s)

    def forward(self, inputs):
        ids = inputs["input_ids"]
        self._enter(ids.shape[0])
        nxt = (ids[:, -1] + 1) % (self.metadata["vocab_size"] - 1)
        return {"logits": torch.nn.functional.one_hot(nxt, self.metadata["vocab_size"]).float()}

    def warmup_inputs(self, batch_size=1):
        return {"input_ids": torch.ones(batch_size, 4, dtype=torch.int64)}


def fake_models(delay_s: float = 0.0, token_delay_s: float = 0.0) -> dict:
    return {"lfm2": FakeLanguageModel(delay_s=delay_s, token_delay_s=token_delay_s),
            "mobilenet_v2": FakeClassifier(delay_s=delay_s)}


def malformed_requests(vocab: int, max_sequence_length: int, max_batch_size: int, max_body_bytes: int):
    """A battery of bad requests: (id, method, path, httpx kwargs, expected status or None for
    any 4xx). Every one must get a 4xx with an {"error": ...} body and leave the server up."""
    import gzip
    import io
    import json as _json

    mb, lm = "/v2/models/mobilenet_v2/infer", "/v2/models/lfm2/infer"

    def img(shape=(1, 3, 224, 224), **kw):
        t = {"name": "input", "shape": list(shape), "datatype": "FP32", "data": [0.0]}
        t.update(kw)
        return {"inputs": [t]}

    def ids(data, shape=None, **kw):
        t = {"name": "input_ids", "shape": shape or [1, len(data)], "datatype": "INT64", "data": data}
        t.update(kw)
        return {"inputs": [t]}

    def binary(request: dict, tail: bytes, header=None):
        head = _json.dumps(request).encode()
        return {"content": head + tail, "headers": {"Inference-Header-Content-Length": str(header if header is not None else len(head)),
                                                    "Content-Type": "application/octet-stream"}}

    bin_ids = {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
    png = io.BytesIO()
    try:
        from PIL import Image
        Image.new("RGB", (8, 8)).save(png, format="PNG")
    except ImportError:  # pragma: no cover
        pass
    P = lambda path, status=None, **kw: (path, status, kw)  # noqa: E731
    cases = {
        "bad-json": P(mb, 400, content=b"{not json"),
        "empty-body": P(mb, 400, content=b""),
        "json-array": P(mb, 400, content=b"[]"),
        "deep-nesting": P(mb, 400, content=b"[" * 50_000),
        "no-inputs": P(mb, 400, json={}),
        "empty-inputs": P(mb, 400, json={"inputs": []}),
        "unknown-field": P(mb, 400, json={**img(), "bogus": 1}),
        "wrong-input-name": P(mb, 400, json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}),
        "wrong-dtype": P(mb, 400, json=img(shape=(1,), datatype="FP64")),
        "unknown-dtype": P(mb, 400, json=img(shape=(1,), datatype="FOO")),
        "wrong-rank": P(mb, 400, json=img(shape=(3,), data=[0, 0, 0])),
        "wrong-fixed-dim": P(lm, 400, **binary({"inputs": [{**bin_ids, "shape": [1, 1, 2]}]}, b"\0" * 16)),
        "shape-data-mismatch": P(mb, 400, json=img()),
        "huge-declared-shape": P(mb, 400, json=img(shape=(10**6, 3, 224, 224))),
        "negative-dim": P(mb, 400, json=img(shape=(-1, 3, 224, 224))),
        "non-int-shape": P(mb, 400, json=img(shape=("a",))),
        "string-data": P(lm, 400, json=ids(["a", "b"])),
        "nan-data": P(mb, 400, content=b'{"inputs":[{"name":"input","shape":[1,1,1,1],"datatype":"FP32","data":[NaN]}]}'),
        "float-token-ids": P(lm, 400, json=ids([1.5, 2.0])),
        "out-of-vocab": P(lm, 400, json=ids([1, vocab + 5])),
        "negative-token": P(lm, 400, json=ids([-3, 1])),
        "int64-overflow": P(lm, 400, json=ids([2**70, 1])),
        "too-long-sequence": P(lm, 400, json=ids([1] * (max_sequence_length + 1))),
        "batch-over-limit": P(lm, 400, json=ids([1] * (max_batch_size + 1), shape=[max_batch_size + 1, 1])),
        "zero-batch": P(lm, 400, json=ids([], shape=[0, 3])),
        "bad-impl-name": P(lm, 400, json={**ids([1, 2]), "parameters": {"depthwise_impl": "warp_speed"}}),
        "impl-not-string": P(lm, 400, json={**ids([1, 2]), "parameters": {"depthwise_impl": 3}}),
        "unknown-output": P(lm, 400, json={**ids([1, 2]), "outputs": [{"name": "nope"}]}),
        "binary-output-not-bool": P(lm, 400, json={**ids([1, 2]), "parameters": {"binary_data_output": "yes"}}),
        "bin-header-not-int": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header="ten")),
        "bin-header-past-end": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header=10**6)),
        "bin-size-wrong": P(lm, 400, **binary({"inputs": [{**bin_ids, "parameters": {"binary_data_size": 12}}]}, b"\0" * 12)),
        "bin-truncated": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 8)),
        "bin-trailing-bytes": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 24)),
        "bin-header-cuts-json": P(lm, 400, **binary({"inputs": [bin_ids]}, b"\0" * 16, header=5)),
        "unknown-model": P("/v2/models/resnet/infer", 404, json=ids([1])),
        "unknown-version": P("/v2/models/lfm2/versions/7/infer", 404, json=ids([1])),
        "text-content-type": P(lm, 415, content=b"hello", headers={"Content-Type": "text/plain"}),
        "form-not-json": P(lm, 400, data={"a": "b"}),
        "multipart-content-type": P(lm, 415, files={"file": ("x.json", b"{}", "application/json")}),
        "unknown-encoding": P(lm, 415, content=b"xx", headers={"Content-Encoding": "br"}),
        "broken-gzip": P(lm, 400, content=b"not gzip", headers={"Content-Encoding": "gzip"}),
        "gzip-bomb": P(lm, 413, content=gzip.compress(b" " * (max_body_bytes + 10)), headers={"Content-Encoding": "gzip"}),
        "oversized-body": P(mb, 413, content=b" " * (max_body_bytes + 1)),
        "generate-both-inputs": P("/v1/generate", 400, json={"prompt": "a", "input_ids": [1]}),
        "generate-no-input": P("/v1/generate", 400, json={"max_new_tokens": 2}),
        "generate-absurd-max-new": P("/v1/generate", 400, json={"prompt": "a", "max_new_tokens": 10**9}),
        "generate-negative-temp": P("/v1/generate", 422, json={"prompt": "a", "temperature": -1}),
        "generate-top-p-zero": P("/v1/generate", 422, json={"prompt": "a", "top_p": 0}),
        "generate-out-of-vocab": P("/v1/generate", 400, json={"input_ids": [vocab + 1]}),
        "generate-empty-ids": P("/v1/generate", 400, json={"input_ids": []}),
        "generate-bad-impl": P("/v1/generate", 422, json={"prompt": "a", "depthwise_impl": "turbo"}),
        "generate-stream-not-bool": P("/v1/generate", 422, json={"prompt": "a", "stream": "perhaps"}),
        "generate-not-json": P("/v1/generate", 422, content=b"prompt=a", headers={"Content-Type": "text/plain"}),
        "generate-prompt-number": P("/v1/generate", 422, json={"prompt": 5}),
        "generate-huge-prompt": P("/v1/generate", 400, json={"prompt": "a" * (max_sequence_length + 5)}),
        "classify-not-image": P("/v1/classify", 400, files={"file": ("a.txt", b"hello, not an image", "text/plain")}),
        "classify-truncated-png": P("/v1/classify", 400, files={"file": ("a.png", png.getvalue()[:30], "image/png")}),
        "classify-empty-file": P("/v1/classify", 400, files={"file": ("a.png", b"", "image/png")}),
        "classify-no-file": P("/v1/classify", 422, json={"file": "x"}),
        "classify-top-k-zero": P("/v1/classify?top_k=0", 422, files={"file": ("a.png", png.getvalue(), "image/png")}),
        "classify-bad-impl": P("/v1/classify?depthwise_impl=nope", 422, files={"file": ("a.png", png.getvalue(), "image/png")}),
    }
    return [(name, "POST", path, kw, status) for name, (path, status, kw) in cases.items()]


def serve_fake(argv=None) -> None:
    """`python -c "from service.testing import serve_fake; serve_fake()" --port P [--delay-s D]
    [--token-delay-s T] [Settings overrides as --key value]`: the real server stack (same
    uvicorn config as `dwserve serve`) around fake models, for tests of process behaviour."""
    import argparse
    import sys

    from .app import create_app
    from .cli import run_server
    from .settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = {rest[i].lstrip("-").replace("-", "_"): rest[i + 1] for i in range(0, len(rest), 2)}
    settings = Settings(**overrides)
    app = create_app(settings, models=fake_models(args.delay_s, args.token_delay_s), hooks=fake_hooks())
    run_server(app, settings, "warning")
