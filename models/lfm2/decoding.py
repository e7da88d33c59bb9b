"""Decoders for generation: the dynamic path, and a static cache replayed as a CUDA graph.

    with open_decoder(model, batch_size, max_length, cuda_graph=None) as dec:
        logits = dec.prefill(ids, mask)     # ids/mask (B, L) left-padded -> (B, V) float32
        logits = dec.step(tokens)           # tokens (B,) int64 -> (B, V): one token per row

EagerDecoder: an LFM2Cache sized to the request; every step runs the model's forward in
Python and its shapes grow with the context (attention over the `length` filled slots).

StaticDecoder: a StaticCache of a bucketed max_length, an input-ids buffer (B, 1) and the
step's output at fixed addresses. With graph=True (CUDA) the step is captured once as a
CUDA graph (after warm-up steps that compile and autotune the kernels) and every token is
one `replay()`: one host launch per token instead of one per kernel. With graph=False the
same static step runs eagerly (what the CPU tests compare with the dynamic path).

Graphs are kept on the model per (batch size, max_length bucket, depthwise policy), at most
MAX_DECODERS (least recently used dropped): every generate() of that key reuses, after a
reset, the same cache and buffers, so a replay never allocates. One generation at a time
uses a static decoder (a lock); a concurrent one with the same key runs eagerly.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

import torch

from models import profiling
from models.depthwise import current_impl

from .cache import StaticCache

MIN_STATIC_LENGTH = 64    # smallest static cache: short requests share one graph
MAX_DECODERS = 8          # static decoders (caches + graphs) kept per model
WARMUP_STEPS = 2          # eager steps before capture: Triton compile/autotune, cuBLAS handles
_POOL_LOCK = threading.Lock()


def static_length(n: int) -> int:
    """Slots of the static cache for n tokens: the next power of two >= n, at least
    MIN_STATIC_LENGTH. Buckets bound the number of graphs; attention reads <= 2x the slots."""
    return max(MIN_STATIC_LENGTH, 1 << (max(n, 1) - 1).bit_length())


def last_logits(model, h: torch.Tensor) -> torch.Tensor:
    return model.lm_head(h[:, -1]).float()                 # (B, L, C) -> (B, V) float32


class EagerDecoder:
    """The dynamic path: model.hidden_states with an LFM2Cache, one Python forward per token."""

    def __init__(self, model, batch_size: int, max_length: int):
        self.model = model
        self.cache = model.new_cache(batch_size, max_length)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.inference_mode():
            return last_logits(self.model, self.model.hidden_states(ids, mask, self.cache))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return last_logits(self.model, self.model.hidden_states(tokens[:, None], None, self.cache))


class GraphRunner:
    """Capture a function once as a CUDA graph and replay it (tests swap in a CPU fake)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.graph = None

    def capture(self, fn, warmup: int):
        """Run fn `warmup` times on a side stream (as PyTorch's graph docs ask), then capture
        one call; returns its outputs, which every replay rewrites in place."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the service's other models) may keep using the GPU.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            return fn()

    def replay(self):
        self.graph.replay()


class StaticDecoder(EagerDecoder):
    """Fixed-address decoding: StaticCache + ids buffer (B, 1); graph=True captures the step."""

    def __init__(self, model, batch_size: int, max_length: int, *, graph: bool):
        self.model, self.graph = model, graph
        with torch.inference_mode(False):   # normal tensors: reusable in and out of inference mode
            self.cache = StaticCache(model.config, batch_size, max_length, device=model.device,
                                     dtype=model.dtype)
            self.ids = torch.zeros(batch_size, 1, dtype=torch.long, device=model.device)  # (B, 1)
        self.runner: GraphRunner | None = None
        self.logits: torch.Tensor | None = None   # (B, V) float32 written by every replay
        self.replays = 0                          # graph replays so far (one per decoded token)
        self.lock = threading.Lock()

    def _forward(self) -> torch.Tensor:
        """The static step: self.ids (B, 1) -> logits (B, V); cache updated in place."""
        return last_logits(self.model, self.model.static_decode(self.ids, self.cache))

    def _capture(self):
        """Warm up and capture the step (the warm-up steps write the cache; prefill resets it)."""
        self.cache.reset()
        runner = GraphRunner(self.model.device)
        with profiling.timers_suspended():   # a timer's device sync would break the capture
            self.logits = runner.capture(self._forward, WARMUP_STEPS)
        self.runner = runner

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.inference_mode():
            if self.graph and self.runner is None:
                self._capture()
            self.cache.reset()
            logits = super().prefill(ids, mask)    # dynamic shapes, host-side slot counter
            self.cache.sync_slot()
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,) -> logits (B, V). In graph mode the result is the captured output
        buffer: read (or copy) it before the next step overwrites it."""
        self.cache.check_room(tokens.shape[0], 1)
        with torch.inference_mode():
            self.ids.copy_(tokens[:, None])
            if self.runner is not None:
                self.runner.replay()
                self.replays += 1
                out = self.logits
            else:
                out = self._forward()
        self.cache.length += 1                    # the device-side slot moved inside the step
        return out


def graphs_supported(model) -> bool:
    return model.device.type == "cuda"


def use_cuda_graph(model, cuda_graph: bool | None) -> bool:
    """None: a CUDA graph wherever the model is on CUDA; True: required; False: eager."""
    if cuda_graph is None:
        return graphs_supported(model)
    if cuda_graph and not graphs_supported(model):
        raise ValueError(f"cuda_graph=True needs the model on a CUDA device, not {model.device}; "
                         "pass cuda_graph=None (graphs where possible) or False")
    return bool(cuda_graph)


def pooled_decoder(model, batch_size: int, length: int) -> StaticDecoder:
    """The model's static decoder for (batch_size, length, current depthwise policy)."""
    pool = model.__dict__.setdefault("_static_decoders", OrderedDict())
    # The weight address: a model moved away and back gets new storage, so new graphs.
    key = (batch_size, length, current_impl(), model.device, model.dtype,
           model.lm_head.weight.data_ptr())
    with _POOL_LOCK:
        dec = pool.pop(key, None) or StaticDecoder(model, batch_size, length, graph=True)
        pool[key] = dec                           # most recently used last
        while len(pool) > MAX_DECODERS:
            pool.popitem(last=False)
    return dec


def clear_decoders(model) -> None:
    """Drop the model's static decoders (their caches and graphs)."""
    with _POOL_LOCK:
        model.__dict__.pop("_static_decoders", None)


@contextlib.contextmanager
def open_decoder(model, batch_size: int, max_length: int, cuda_graph: bool | None = None):
    """A decoder for one generation of batch_size rows and up to max_length tokens."""
    if not use_cuda_graph(model, cuda_graph):
        yield EagerDecoder(model, batch_size, max_length)
        return
    dec = pooled_decoder(model, batch_size, static_length(max_length))
    if not dec.lock.acquire(blocking=False):      # mid-generation elsewhere: run this one eagerly
        yield EagerDecoder(model, batch_size, max_length)
        return
    try:
        yield dec
    finally:
        dec.lock.release()
