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

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """eos (the one special token) skipped, or written `<eos>`."""
        eos = "" if skip_special_tokens else "<eos>"
        return "".join(eos if i == self.eos_token_id else chr(32 + i) for i in ids)

    @staticmethod
    def render_chat(messages: list[dict]) -> str:
        """The fake's chat template: "<role>content" per message, then "<assistant>"."""
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.encode(self.render_chat(messages))


class FakeLM:
    """Deterministic LM: next token = (last + 1) % (vocab - 1); with a seed, sampled."""

    def __init__(self, vocab_size: int, owner: FakeServedModel, token_delay_s: float = 0.0):
        self.tokenizer = FakeTokenizer(vocab_size)
        self.config = SimpleNamespace(vocab_size=vocab_size, max_position_embeddings=1 << 20)   # positions unbounded
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

    def continuous_batch(self, capacity: int, max_length: int, prefill_chunk=None,
                         prefix_cache=None) -> "FakeContinuousBatch":
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

    @property
    def decode_only(self) -> bool:
        """As ContinuousBatch's: the next step only decodes live rows (none joins)."""
        return (bool(self.rows) and (not self.waiting or len(self.rows) >= self.capacity)
                and not any(s.cancelled for s in self.rows))

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
            while nxt in s.stop_token_ids and len(s.tokens) < s.min_tokens:   # the engine masks stop tokens
                nxt = (nxt + 1) % (vocab - 1)
            if getattr(s, "logprobs", None) is not None:   # the fake's: -0.5 for its pick, then -1.5, -2.5, ...
                s.token_logprobs.append((-0.5, [((nxt + j) % (vocab - 1), -0.5 - j) for j in range(s.logprobs)]))
            s.record(nxt)
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


def serve_fake(argv=None) -> None:
    """`python -c "from service.testing import serve_fake; serve_fake()" --port P [--delay-s D]
    [--token-delay-s T] [Settings overrides as --key value]`: the real server stack (same
    uvicorn config as `dwserve serve`) around fake models, for tests of process behaviour."""
    import argparse
    import sys

    from .app import create_app
    from .cli import run_server
    from .logs import configure_logging
    from .settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = {rest[i].lstrip("-").replace("-", "_"): rest[i + 1] for i in range(0, len(rest), 2)}
    settings = Settings(**overrides)
    level = settings.log_level if "log_level" in overrides else "warning"   # quiet unless asked
    configure_logging(level, settings.log_format)
    app = create_app(settings, models=fake_models(args.delay_s, args.token_delay_s), hooks=fake_hooks())
    run_server(app, settings, level)
