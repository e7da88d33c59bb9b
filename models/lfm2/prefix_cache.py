"""Prefix caching for the continuous batch: a prompt that starts with tokens already prefilled
(a shared system prompt, an earlier turn of the conversation) starts from their cache state
instead of recomputing it.

LFM2 makes the state at a prefix cheap to keep: after P tokens it is each conv layer's last
K-1 values of b*x, (C, K-1) whatever P is, plus the attention layers' keys and values for the
P slots. So one `Chain` per stored prompt holds the keys/values up to its longest block
boundary and the conv states at every boundary (BLOCK, 2*BLOCK, ...): a prompt sharing any
block-aligned prefix with it starts from there. The conv states at the boundaries are taken
while the prefill goes through them (LFM2Cache.tap_conv); keys/values are sliced afterwards
(later columns never change earlier slots).

    cache = PrefixCache(max_bytes=256 << 20)
    hit = cache.lookup(prompt)        # -> (chain, P) for the longest cached prefix, or None
    cache.restore(hit, group_cache)   # row 0 of a one-row LFM2Cache now holds those P tokens
    keys = cache.request_taps(prompts, offsets, group_cache, skip)  # before a group's prefill
    cache.store(prompts, offsets, group_cache, keys)                # after it

Entries are evicted least recently used first, to stay within max_bytes. A prefix is indexed
by a hash chained block by block (O(prompt) to key every boundary of a prompt), and a hit is
confirmed against the chain's own tokens, so it is an exact match, never a hash collision.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch

BLOCK = 64   # prefixes are cached at multiples of this many tokens


@dataclass(eq=False)   # compared by identity: the LRU and the index hold the same objects
class Chain:
    tokens: tuple[int, ...]                       # the prompt's first `length` tokens
    length: int                                   # tokens whose keys/values are held
    keys: list                                    # per layer: (Hkv, length, D) or None (conv layers)
    values: list
    conv: dict[int, list] = field(default_factory=dict)   # boundary -> per layer (C, K-1) or None
    nbytes: int = 0


def _boundaries(n_tokens: int, block: int) -> list[int]:
    """Prefix lengths worth caching for an n-token prompt: multiples of block, leaving at least
    one token to prefill (its logits are the first generated token's)."""
    return list(range(block, n_tokens, block))


def _keys(prompt: list[int], block: int) -> dict[int, int]:
    """{boundary: key of prompt[:boundary]}, each key chaining the previous one with its block."""
    keys, h = {}, 0
    for b in _boundaries(len(prompt), block):
        h = hash((h, tuple(prompt[b - block:b])))
        keys[b] = h
    return keys


def _salted(prompt: list[int], block: int, salt: int) -> dict[int, int]:
    """_keys in a namespace (PrefixCache.namespace); salt 0: the cache's own keys."""
    keys = _keys(prompt, block)
    return keys if not salt else {b: hash((salt, key)) for b, key in keys.items()}


class PrefixCache:
    def __init__(self, max_bytes: int, block: int = BLOCK):
        if max_bytes < 1 or block < 1:
            raise ValueError(f"PrefixCache: expected max_bytes >= 1 and block >= 1, got {max_bytes}, {block}")
        self.max_bytes, self.block = max_bytes, block
        self.index: dict[int, tuple[Chain, int]] = {}        # prefix key -> (chain, prefix length)
        self.chains: collections.OrderedDict[int, Chain] = collections.OrderedDict()   # LRU order
        self.nbytes = 0
        self.hits = self.hit_tokens = 0

    def namespace(self, name: str) -> "PrefixSpace":
        """A view of this cache whose prefixes are keyed apart from the others' (one per
        depthwise policy's engine), all within this cache's one budget and LRU."""
        return PrefixSpace(self, name)

    def lookup(self, prompt: list[int], salt: int = 0) -> tuple[Chain, int] | None:
        """The longest cached prefix of prompt, as (chain, its length), or None."""
        for b, key in reversed(_salted(prompt, self.block, salt).items()):
            hit = self.index.get(key)
            if hit is not None and hit[1] == b and hit[0].tokens[:b] == tuple(prompt[:b]):
                self.chains.move_to_end(id(hit[0]))
                return hit
        return None

    def restore(self, hit: tuple[Chain, int], cache) -> None:
        """Row 0 of `cache` (an empty one-row LFM2Cache) takes the hit's P tokens."""
        chain, p = hit
        with torch.inference_mode():
            for dst, src in zip((*cache.keys, *cache.values), (*chain.keys, *chain.values)):
                if dst is not None:
                    dst[0, :, :p].copy_(src[:, :p])
            for dst, src in zip(cache.conv_states, chain.conv[p]):
                if dst is not None:
                    dst[0].copy_(src)
            cache.key_mask[0, :p] = True
            cache.positions[0] = p
        cache.length = p
        self.hits += 1
        self.hit_tokens += p

    def request_taps(self, prompts: list[list[int]], offsets: list[int], cache, skip: int = 0,
                     salt: int = 0) -> list[dict]:
        """Before a group's prefill: ask for the conv states at each prompt's uncached block
        boundaries beyond `skip` tokens (row r's prompt starts at column offsets[r]).
        -> each prompt's boundary keys, for store()."""
        keys = [_salted(prompt, self.block, salt) for prompt in prompts]
        for r, off in enumerate(offsets):
            for b, key in keys[r].items():
                if b > skip and key not in self.index:
                    cache.conv_taps.setdefault(off + b - 1, []).append(r)
        return keys

    def store(self, prompts: list[list[int]], offsets: list[int], cache, keys: list[dict]) -> None:
        """After a group's prefill: each row's tapped boundaries become a chain (keys: what
        request_taps returned)."""
        for r, (prompt, off) in enumerate(zip(prompts, offsets)):
            keys_r = keys[r]
            taken = {b: cache.tapped.pop((r, off + b - 1)) for b, key in keys_r.items()
                     if (r, off + b - 1) in cache.tapped and key not in self.index}
            if not taken:
                continue
            longest = max(taken)
            part = lambda t: None if t is None else t[r, :, off:off + longest].clone()   # noqa: E731
            chain = Chain(tuple(prompt[:longest]), longest, [part(k) for k in cache.keys],
                          [part(v) for v in cache.values], taken)
            tensors = [*chain.keys, *chain.values, *(s for states in taken.values() for s in states)]
            chain.nbytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)
            if chain.nbytes > self.max_bytes:
                continue
            self.chains[id(chain)] = chain
            self.nbytes += chain.nbytes
            for b in taken:
                self.index[keys_r[b]] = (chain, b)
            self._evict()
        cache.conv_taps.clear()
        cache.tapped.clear()

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes and self.chains:
            _, old = self.chains.popitem(last=False)
            self.nbytes -= old.nbytes
            for key in [k for k, (c, _) in self.index.items() if c is old]:
                del self.index[key]


class PrefixSpace:
    """One engine's part of a shared PrefixCache (the server's engines, one per depthwise
    policy, share --prefix-cache-mib: an engine with a cache of its own held the whole budget
    again). Its prefixes are keyed apart (a salt on the key chain): another policy's states
    differ by float rounding, and a restored sequence must get the tokens it gets without the
    cache. Same interface as PrefixCache; nbytes and max_bytes are the shared cache's."""

    def __init__(self, cache: PrefixCache, name: str):
        self.cache, self.salt = cache, hash(("dwserve-prefix-space", name))

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    @property
    def max_bytes(self) -> int:
        return self.cache.max_bytes

    def lookup(self, prompt: list[int]) -> tuple[Chain, int] | None:
        return self.cache.lookup(prompt, self.salt)

    def restore(self, hit: tuple[Chain, int], cache) -> None:
        self.cache.restore(hit, cache)

    def request_taps(self, prompts: list[list[int]], offsets: list[int], cache, skip: int = 0) -> list[dict]:
        return self.cache.request_taps(prompts, offsets, cache, skip, self.salt)

    def store(self, prompts: list[list[int]], offsets: list[int], cache, keys: list[dict]) -> None:
        self.cache.store(prompts, offsets, cache, keys)   # keys: request_taps', salted
