"""The LFM2 inference cache: preallocated once, updated in place by every forward.

Slots are shared by the whole batch: prompts are left-padded to one length, so slot `s`
holds the s-th fed column of every row, and `key_mask[b, s]` says whether it was a real
token (padding slots are never attended to). Per row, `positions[b]` counts the real tokens
seen so far: the next token's RoPE position, so a padded row sees exactly the positions it
would see alone.
"""
from __future__ import annotations

import torch

from .config import LFM2Config


class LFM2Cache:
    def __init__(self, config: LFM2Config, batch_size: int, max_length: int,
                 device=None, dtype=torch.float32):
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"a cache needs batch_size >= 1 and max_length >= 1, "
                             f"got {batch_size} and {max_length}")
        b, c, k = batch_size, config.hidden_size, config.conv_L_cache
        kv = (b, config.num_key_value_heads, max_length, config.head_dim)
        self.batch_size, self.max_length = b, max_length
        conv = [t == "conv" for t in config.layer_types]
        # conv layers: the last K-1 values of b*x before the next token, (B, C, K-1).
        self.conv_states = [torch.zeros(b, c, k - 1, device=device, dtype=dtype) if is_conv
                            else None for is_conv in conv]
        # attention layers: keys/values per slot, (B, Hkv, max_length, head_dim).
        self.keys = [None if is_conv else torch.zeros(kv, device=device, dtype=dtype)
                     for is_conv in conv]
        self.values = [None if is_conv else torch.zeros(kv, device=device, dtype=dtype)
                       for is_conv in conv]
        self.key_mask = torch.zeros(b, max_length, dtype=torch.bool, device=device)
        self.positions = torch.zeros(b, dtype=torch.long, device=device)
        self.length = 0  # slots filled (the same for every row)
        # Prefix caching (models/lfm2/prefix_cache.py): a conv layer keeps only its latest state,
        # so the states after earlier columns are taken as a forward goes through them.
        self.conv_taps: dict[int, list[int]] = {}            # column -> rows wanting the state after it
        self.tapped: dict[tuple[int, int], list] = {}        # (row, column) -> per-layer (C, K-1) or None

    def check_model(self, config: LFM2Config, dtype: torch.dtype, device: torch.device):
        """The cache fits a model with this config, dtype and device: one made before model.to(),
        or for another config, failed deep inside attention (or ran on the wrong layers).
        Checked once per (config, dtype, device): eager decode calls it every step."""
        fits = getattr(self, "_fits", None)          # holds config, so `is` cannot see a reused id
        if fits is not None and fits[0] is config and fits[1:] == (dtype, device):
            return
        b, c, k = self.batch_size, config.hidden_size, config.conv_L_cache
        kv = (b, config.num_key_value_heads, self.max_length, config.head_dim)
        want = [(b, c, k - 1) if t == "conv" else kv for t in config.layer_types]
        got = [tuple((s if s is not None else kk).shape) for s, kk in zip(self.conv_states, self.keys)]
        if len(got) != len(want) or any(g != w for g, w in zip(got, want)):
            raise ValueError(f"cache was made for another config (per-layer state shapes {got}, this model "
                             f"needs {want}); make it with this model's new_cache(batch_size, max_length)")
        t = next(s if s is not None else kk for s, kk in zip(self.conv_states, self.keys))
        if t.dtype != dtype or self.key_mask.device != device:
            raise ValueError(f"cache holds {t.dtype} on {self.key_mask.device}, the model is {dtype} on "
                             f"{device}; make it with model.new_cache(batch_size, max_length) after "
                             "model.to(...)")
        self._fits = (config, dtype, device)

    def check_room(self, batch_size: int, new_tokens: int):
        if batch_size != self.batch_size:
            raise ValueError(f"cache was made for batch_size={self.batch_size}, "
                             f"got input with batch {batch_size}; call new_cache(batch_size, ...)")
        if self.length + new_tokens > self.max_length:
            raise ValueError(f"cache holds {self.length} of max_length={self.max_length} slots and "
                             f"cannot take {new_tokens} more; allocate new_cache with a larger "
                             "max_length")

    def write_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, start: int):
        """Store k, v (B, Hkv, L, D) at slots [start, start+L); return views of slots [0, start+L)."""
        end = start + k.shape[2]
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, start:end].copy_(k)
        values[:, :, start:end].copy_(v)
        return keys[:, :, :end], values[:, :, :end]

    def tap_conv(self, layer_idx: int, bcx: torch.Tensor, mask: torch.Tensor | None):
        """Before conv layer `layer_idx` runs columns [length, length + L) of bcx (B, L, 3C):
        keep the state it will have after each tapped column, for the rows that asked: the
        last K-1 values of b*x (masked) up to that column, after the state before the chunk."""
        start, L = self.length, bcx.shape[1]
        wanted = [(c, rows) for c, rows in self.conv_taps.items() if start <= c < start + L]
        if not wanted:
            return
        state = self.conv_states[layer_idx]                              # (B, C, K-1)
        C, k1 = state.shape[1], state.shape[2]
        for c, rows in wanted:
            j = c - start
            cols = slice(max(0, j + 1 - k1), j + 1)                      # at most K-1 columns
            bx = bcx[rows, cols, :C] * bcx[rows, cols, 2 * C:]           # (R, <=K-1, C)
            if mask is not None:
                bx = bx * mask[rows, cols, None].to(bx.dtype)
            ext = torch.cat([state[rows].to(bx.dtype), bx.transpose(1, 2)], dim=-1)   # (R, C, K-1+n)
            for i, r in enumerate(rows):
                taken = self.tapped.setdefault((r, c), [None] * len(self.conv_states))
                taken[layer_idx] = ext[i, :, ext.shape[-1] - k1:].to(state.dtype).clone()   # (C, K-1)

    def advance(self, token_mask: torch.Tensor):
        """After a forward of token_mask (B, L) bool: the slots are filled, positions move on."""
        self.length += token_mask.shape[1]
        self.positions += token_mask.sum(1)

    def reset(self):
        for t in (*self.conv_states, *self.keys, *self.values):
            if t is not None:
                t.zero_()
        self.key_mask.zero_()
        self.positions.zero_()
        self.length = 0


class StaticCache(LFM2Cache):
    """An LFM2Cache whose decode step has fixed shapes and fixed addresses (CUDA graphs).

    Prefill goes through LFM2Cache unchanged (host-side `length`, slot slices). A static
    decode step (LFM2ForCausalLM.static_decode) writes its one column at the device-side
    slot index `slot` and attends over all max_length slots through `key_mask` (unfilled
    slots are False), so no shape or address depends on how many tokens came before.
    Invariant between steps: slot[0] == length. `slot` and `positions` advance on the
    device inside the step; `length` is advanced by the caller on the host (a replayed
    graph runs no Python).
    """

    def __init__(self, config: LFM2Config, batch_size: int, max_length: int,
                 device=None, dtype=torch.float32):
        super().__init__(config, batch_size, max_length, device=device, dtype=dtype)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)   # (1,) next slot to write

    def write_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, start):
        """start int: as LFM2Cache (prefill). start the (1,) `slot` tensor: store the one
        column k, v (B, Hkv, 1, D) there and return all max_length slots (B, Hkv, S, D)."""
        if not isinstance(start, torch.Tensor):
            return super().write_kv(layer_idx, k, v, start)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.index_copy_(2, start, k)          # index on the device: no host sync, fixed shapes
        values.index_copy_(2, start, v)
        return keys, values

    def mark_slot(self):
        """The decode step's new column is a real token in every row (key_mask at `slot`)."""
        self.key_mask.index_fill_(1, self.slot, True)

    def sync_slot(self):
        """After a host-side prefill: the device slot index catches up with `length`."""
        self.slot.fill_(self.length)

    def reset(self):
        super().reset()
        self.slot.zero_()
