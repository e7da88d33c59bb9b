"""Row-slotted decoding for continuous batching: sequences join and leave between steps.

A SlotDecoder holds `capacity` cache rows of `max_length` slots. Each live sequence owns one
row, and the live rows are always the prefix [0, n): a sequence that leaves is replaced by
the last live row (one row copy), so a step runs on rows [0, n) and never on holes.

Unlike StaticCache, whose rows share one slot counter (left-padded prompts of one
request), every row here has its own next slot `slot[r]` and RoPE position `positions[r]`:
a sequence that joined late sits at a lower slot than one that has decoded for a while.
The decode step writes row r's key/value at slot[r] and attends over the row's key_mask,
so each row sees exactly the context it would see alone.

    dec = SlotDecoder(model, capacity=16, max_length=2048)
    rows, logits = dec.admit([[1, 5, 9], [1, 7]])    # prefill into free rows -> (2, V)
    rows = dec.attach(prefill)                       # or: a finished Prefill (prefill.py) moves in
    dec.set_next(rows, tokens)                       # each row's next input token
    logits = dec.step()                              # (n, V): one token for every live row
    dec.release(row)                                 # the last live row moves into `row`

On CUDA (graph=True) the step over rows [0, b) is captured once per bucket b (powers of
two up to capacity) when the decoder is made, before any row is live; a step for n rows
replays the bucket >= n, and rows [n, b) compute values nobody reads. Off CUDA the step
runs eagerly on exactly n rows and attends only over the slots in use.
"""
from __future__ import annotations

import torch

from models import profiling

from .cache import LFM2Cache
from .decoding import WARMUP_STEPS, GraphRunner, last_logits
from .prefill import Prefill


def buckets(capacity: int) -> list[int]:
    """Row counts a graph is captured for: 1, 2, 4, ... and capacity itself."""
    out, b = [], 1
    while b < capacity:
        out.append(b)
        b *= 2
    return out + [capacity]


class _RowsView(LFM2Cache):
    """The cache a decode step of rows [lo, hi) sees: views of a SlotDecoder's buffers (writes
    land there). It writes each row's one new column at that row's own slot and attends over
    slots [0, span)."""

    def __init__(self, store: LFM2Cache, lo: int, hi: int, span: int, slot, write_idx, true):
        rows = slice(lo, hi)
        self.batch_size, self.max_length, self.length = hi - lo, span, 0
        self.conv_states = [None if s is None else s[rows] for s in store.conv_states]
        self.keys = [None if k is None else k[rows, :, :span] for k in store.keys]
        self.values = [None if v is None else v[rows, :, :span] for v in store.values]
        self.key_mask = store.key_mask[rows, :span]
        self.positions = store.positions[rows]
        self.slot = slot                     # (n,) each row's next slot (decode views only)
        self._idx = write_idx                # (n,) where this step writes (slot, kept < span)
        self._true = true                    # (n,) bool ones: a device tensor, not a host True
        self._row = torch.arange(hi - lo, device=store.key_mask.device)

    def mark_slot(self):
        # clamp: rows past the live ones (a graph bucket's padding) keep advancing their slot;
        # they must never index out of bounds. Live rows are always < span (admission checks).
        torch.clamp(self.slot, max=self.max_length - 1, out=self._idx)
        self.key_mask.index_put_((self._row, self._idx), self._true)

    def write_kv(self, layer_idx, k, v, start):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self._row, :, self._idx] = k[:, :, 0]   # (n, Hkv, D) at each row's own slot
        values[self._row, :, self._idx] = v[:, :, 0]
        return keys, values


class SlotDecoder:
    def __init__(self, model, capacity: int, max_length: int, *, graph: bool):
        if capacity < 1 or max_length < 2:
            raise ValueError(f"SlotDecoder needs capacity >= 1 and max_length >= 2, got {capacity}, {max_length}")
        self.model, self.capacity, self.max_length, self.graph = model, capacity, max_length, graph
        dev = model.device
        with torch.inference_mode(False):   # normal tensors: usable in and out of inference mode
            self.store = LFM2Cache(model.config, capacity, max_length, device=dev, dtype=model.dtype)
            self.slot = torch.zeros(capacity, dtype=torch.long, device=dev)      # (R,)
            self.write_idx = torch.zeros(capacity, dtype=torch.long, device=dev)  # (R,)
            self.ids = torch.zeros(capacity, 1, dtype=torch.long, device=dev)     # (R, 1) next inputs
            self.ones = torch.ones(capacity, dtype=torch.bool, device=dev)        # (R,)
        self.lengths = [0] * capacity       # host copy of slot[r] for live rows
        self.live = 0                       # rows [0, live) hold sequences
        self.steps = 0                      # decode steps run (graph replays when graph=True)
        self._graphs: dict[int, tuple[GraphRunner, torch.Tensor]] = {}
        if graph:
            self._capture_all()

    # --- views and the step ---------------------------------------------------------------
    def _decode_view(self, n: int, span: int) -> _RowsView:
        return _RowsView(self.store, 0, n, span, self.slot[:n], self.write_idx[:n], self.ones[:n])

    def _forward(self, n: int, span: int) -> torch.Tensor:
        """Rows [0, n) take one token each (ids[:n]) -> logits (n, V) float32."""
        view = self._decode_view(n, span)
        return last_logits(self.model, self.model.static_decode(self.ids[:n], view))

    def _capture_all(self):
        """One graph per bucket, captured while no row is live; then every row is reset."""
        # a depthwise timer's device sync would break a capture
        with torch.inference_mode(), profiling.timers_suspended():
            for b in buckets(self.capacity):
                runner = GraphRunner(self.model.device)
                self._reset_rows(0, self.capacity)
                out = runner.capture(lambda b=b: self._forward(b, self.max_length), WARMUP_STEPS)
                self._graphs[b] = (runner, out)
            self._reset_rows(0, self.capacity)

    def step(self) -> torch.Tensor:
        """One decode step of every live row -> logits (live, V) float32 (in graph mode a view
        of the captured output: read it before the next step)."""
        n = self.live
        if n == 0:
            raise ValueError("SlotDecoder.step: no live rows; admit() a sequence first")
        if max(self.lengths[:n]) >= self.max_length:
            raise ValueError(f"a row reached max_length={self.max_length} slots; release it first")
        with torch.inference_mode():
            if self.graph:
                b = next(b for b in sorted(self._graphs) if b >= n)
                runner, out = self._graphs[b]
                runner.replay()
                logits = out[:n]
            else:
                logits = self._forward(n, max(self.lengths[:n]) + 1)
        for r in range(n):
            self.lengths[r] += 1
        self.steps += 1
        return logits

    # --- rows joining and leaving ---------------------------------------------------------
    @property
    def free(self) -> int:
        return self.capacity - self.live

    def admit(self, prompts: list[list[int]]) -> tuple[list[int], torch.Tensor]:
        """Prefill prompts (left-padded together, in one go) into the next free rows -> (their
        row indices, next-token logits (m, V) float32)."""
        self._check_room(len(prompts), max(len(p) for p in prompts))
        prefill = Prefill(self.model, prompts)
        logits = prefill.advance()
        return self.attach(prefill), logits

    def attach(self, prefill: Prefill, src_rows: list[int] | None = None) -> list[int]:
        """A finished Prefill's cache moves into the next free rows -> their indices. Each row
        then sits at slot = the padded prompt width; its padding slots are never attended to.
        src_rows: the prefill row each new row copies (one prompt prefilled once for several
        sequences); default one row per prefill row."""
        if not prefill.finished:
            raise ValueError("attach: the prefill has columns left; advance() it to the end first")
        width, src = prefill.width, prefill.cache
        src_rows = list(range(prefill.rows)) if src_rows is None else src_rows
        m = len(src_rows)
        self._check_room(m, width)
        lo, hi = self.live, self.live + m
        s = self.store
        with torch.inference_mode():
            take = torch.tensor(src_rows, device=src.key_mask.device)
            self._reset_rows(lo, hi)
            for dst, part in zip(s.conv_states, src.conv_states):
                if dst is not None:
                    dst[lo:hi].copy_(part[take])                        # (m, C, K-1)
            for dst, part in zip((*s.keys, *s.values), (*src.keys, *src.values)):
                if dst is not None:
                    dst[lo:hi, :, :width].copy_(part[take])             # (m, Hkv, width, D)
            s.key_mask[lo:hi, :width] = src.key_mask[take]
            s.positions[lo:hi] = src.positions[take]
            self.slot[lo:hi] = width
        self.lengths[lo:hi] = [width] * m
        self.live = hi
        return list(range(lo, hi))

    def _check_room(self, m: int, width: int):
        if not 1 <= m <= self.free:
            raise ValueError(f"admit: {m} prompts, {self.free} free rows (capacity {self.capacity})")
        if width >= self.max_length:
            raise ValueError(f"admit: a {width}-token prompt leaves no room in max_length={self.max_length}")

    def set_next(self, rows: list[int], tokens: torch.Tensor) -> None:
        """The token each of `rows` feeds at the next step; tokens (len(rows),) int64."""
        if not rows:
            return
        with torch.inference_mode():
            index = torch.tensor(rows, device=self.ids.device)
            self.ids[index, 0] = tokens.to(device=self.ids.device, dtype=self.ids.dtype)

    def release(self, row: int) -> int | None:
        """Free `row`; the last live row moves into it. Returns the row that moved (its old
        index) or None when `row` was the last one."""
        if not 0 <= row < self.live:
            raise ValueError(f"release: row {row} is not live (live rows: 0..{self.live - 1})")
        last = self.live - 1
        with torch.inference_mode():
            if row != last:
                self._copy_row(last, row)
            self._reset_rows(last, last + 1)
        self.lengths[row] = self.lengths[last]
        self.lengths[last] = 0
        self.live = last
        return last if row != last else None

    def _copy_row(self, src: int, dst: int):
        span = self.lengths[src]
        s = self.store
        for t in s.conv_states:
            if t is not None:
                t[dst].copy_(t[src])
        for t in (*s.keys, *s.values):
            if t is not None:
                t[dst, :, :span].copy_(t[src, :, :span])
        s.key_mask[dst].copy_(s.key_mask[src])
        for t in (s.positions, self.slot, self.ids):
            t[dst] = t[src]

    def _reset_rows(self, lo: int, hi: int):
        s = self.store
        for t in s.conv_states:
            if t is not None:
                t[lo:hi].zero_()
        for t in (s.key_mask, s.positions, self.slot):
            t[lo:hi] = 0
        # keys/values need no clearing: a slot is read only after its key_mask turns True,
        # and that happens in the same step that writes it.
