"""LFM2ForCausalLM: the hybrid conv/attention language model (transformers' Lfm2ForCausalLM).

One forward path for prefill, cached decode and plain scoring: the model builds a
`StepContext` (RoPE cos/sin at each row's own positions, the attention mask over cached +
new slots, the padding mask for the convs) and every layer reads it. Left padding is the
batching convention: padded columns never reach a conv state (their b*x is zeroed inside
short_conv_block) nor an attention score (their key slots are masked).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .cache import LFM2Cache
from .config import PRESETS, LFM2Config
from .layers import DecoderLayer, RMSNorm, RotaryEmbedding, StepContext


class LFM2Model(nn.Module):
    """Embedding -> decoder layers -> final norm (named `embedding_norm` as in HF)."""

    def __init__(self, config: LFM2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # One RoPE per attention layer type present: full attention (LFM2's default RoPE, or
        # LFM3's proportional one) and LFM3's sliding-window layers (default RoPE, own theta).
        lfm3, d = config.model_type == "lfm3", config.head_dim
        self.rotary_embs = nn.ModuleDict()
        if "full_attention" in config.layer_types:
            self.rotary_embs["full_attention"] = RotaryEmbedding(d, config.rope_theta,
                                                                 config.rotary_dims, float32=lfm3)
        if "sliding_attention" in config.layer_types:
            self.rotary_embs["sliding_attention"] = RotaryEmbedding(d, config.sliding_rope_theta,
                                                                    float32=lfm3)
        self.embedding_norm = RMSNorm(config.hidden_size, config.norm_eps)

    def forward(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        h = self.embed_tokens(input_ids)                      # (B, L, C)
        for layer in self.layers:
            h = layer(h, ctx)
        return self.embedding_norm(h)


class LFM2ForCausalLM(nn.Module):
    def __init__(self, config: LFM2Config, tokenizer=None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.generation_defaults: dict = {}   # generation_config.json's sampling fields (from_pretrained)
        self.model = LFM2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self):
        """lm_head shares the embedding matrix when tie_word_embeddings (all published LFM2s)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "lfm2-demo", seed: int = 0, device=None, dtype=None):
        """Architecture `name` from PRESETS with seeded random weights (never downloads)."""
        if name not in PRESETS:
            raise ValueError(f"unknown LFM2 preset {name!r}; expected one of {sorted(PRESETS)}")
        from .tokenizer import ByteTokenizer
        config = PRESETS[name]
        tok = ByteTokenizer(config) if name.endswith("-demo") else None   # the demos' byte vocabulary
        model = cls.empty(config, device=device, tokenizer=tok)
        model.init_weights(seed)
        model.to(dtype=dtype or torch.float32).tie_weights()
        return model.eval()

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None):
        """A local HF directory (config.json + model.safetensors or its sharded index)."""
        from .loading import load_pretrained
        return load_pretrained(cls, path, device=device, dtype=dtype)

    @classmethod
    def empty(cls, config: LFM2Config, device=None, tokenizer=None, dtype=None):
        """Uninitialised parameters on `device` in `dtype` (default float32), without paying for
        a random init or ever holding them in another dtype."""
        with torch.device("meta"):
            model = cls(config, tokenizer=tokenizer)
        if dtype is not None:
            model.to(dtype=dtype)                  # on meta: free
        model.to_empty(device=torch.device(device or "cpu"))
        model.tie_weights()  # to_empty replaces parameters one by one, untying them
        for rope in model.model.rotary_embs.values():
            rope.reset_buffers()
        return model

    @torch.no_grad()
    def init_weights(self, seed: int = 0):
        """Deterministic init from `seed` on CPU (same weights on every device): norms 1,
        biases 0, matrices and conv kernels N(0, initializer_range)."""
        g = torch.Generator().manual_seed(seed)
        std = self.config.initializer_range
        for name, p in sorted(self.named_parameters()):
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)

    # ---- forward ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def new_cache(self, batch_size: int, max_length: int) -> LFM2Cache:
        """Preallocated conv-state (B, C, K-1) and KV caches, for batch_size rows of up to
        max_length tokens (prompt + generated, padding included)."""
        return LFM2Cache(self.config, batch_size, max_length, device=self.device, dtype=self.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: LFM2Cache | None = None) -> torch.Tensor:
        """input_ids (B, L) int64, attention_mask (B, L) 1 = token / 0 = left padding ->
        logits (B, L, V). With a cache, the tokens continue what it holds and it is updated."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, cache))

    def hidden_states(self, input_ids, attention_mask=None, cache=None) -> torch.Tensor:
        """The final-norm hidden states (B, L, C); `forward` without the lm_head."""
        token_mask = self._check_inputs(input_ids, attention_mask, cache)
        ctx = self._context(input_ids.shape, token_mask, cache)
        h = self.model(input_ids, ctx)
        if cache is not None:
            cache.advance(ctx.token_mask if ctx.token_mask is not None
                          else torch.ones_like(input_ids, dtype=torch.bool))
        return h

    def static_decode(self, input_ids: torch.Tensor, cache) -> torch.Tensor:
        """One decode step with fixed shapes and addresses, for CUDA-graph capture:
        input_ids (B, 1) real tokens (unchecked: checking would sync with the host), cache a
        StaticCache -> final-norm hidden states (B, 1, C). Advances cache.slot and
        cache.positions on the device; the caller advances cache.length on the host."""
        h = self.model(input_ids, self._static_context(cache))
        cache.positions.add_(1)
        cache.slot.add_(1)
        return h

    def next_token_logits(self, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """(B, L) -> (B, V) float32 logits for the token after each (left-padded) row."""
        with torch.inference_mode():
            h = self.hidden_states(input_ids, attention_mask)[:, -1]
            return self.lm_head(h).float()

    def _check_inputs(self, input_ids, attention_mask, cache):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 \
                or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError("input_ids must be an integer tensor of shape (batch, length), got "
                             f"{getattr(input_ids, 'shape', type(input_ids))}")
        b, L = input_ids.shape
        if b < 1 or L < 1:
            raise ValueError(f"input_ids must have at least one row and one token, got {(b, L)}")
        v = self.config.vocab_size
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= v:
            raise ValueError(f"input_ids must be token ids in [0, vocab_size={v}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if cache is not None:
            if not isinstance(cache, LFM2Cache):
                raise ValueError(f"cache must be an LFM2Cache from model.new_cache(batch_size, max_length), "
                                 f"got {type(cache).__name__}")
            cache.check_model(self.config, self.dtype, self.device)
            cache.check_room(b, L)
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {(b, L)}, got "
                             f"{getattr(attention_mask, 'shape', type(attention_mask))}")
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        if L > 1 and (mask[:, 1:].int() < mask[:, :-1].int()).any():
            raise ValueError("attention_mask must be left padding: 0s then 1s in every row")
        if bool(mask.all()):
            return None
        # A padding column after a row's real tokens would enter its conv window as a zero
        # (and shift its RoPE), so the continuation would silently differ from the tokens alone.
        if cache is not None and bool(((cache.positions > 0) & ~mask.all(1)).any()):
            raise ValueError("attention_mask must be left padding of the whole sequence: a row whose tokens "
                             "are already in the cache takes no more padding (0s only before its first token)")
        return mask

    def _context(self, shape, token_mask, cache) -> StepContext:
        b, L = shape
        dev = self.device
        start = cache.length if cache is not None else 0
        tok = token_mask if token_mask is not None else torch.ones(b, L, dtype=torch.bool, device=dev)
        # Each row's RoPE position counts only its real tokens (padding gets a dummy value).
        pos = tok.long().cumsum(1) - 1
        if cache is not None:
            pos = pos + cache.positions[:, None]
            cache.key_mask[:, start:start + L] = tok
            key_ok = cache.key_mask[:, :start + L]                       # (B, S)
        else:
            key_ok = tok
        pos = pos.clamp_min(0)
        q_slot = torch.arange(start, start + L, device=dev)[:, None]     # (L, 1)
        k_slot = torch.arange(start + L, device=dev)[None, :]            # (1, S)
        attn = (k_slot <= q_slot)[None] & key_ok[:, None, :]             # (B, L, S)
        itself = (k_slot == q_slot)[None]  # a padded query sees itself: no all-masked rows
        masks = {"full_attention": (attn | itself)[:, None]}
        if self.config.sliding_window is not None:
            window = self._window(key_ok, pos)                           # (B, L, S)
            masks["sliding_attention"] = ((attn & window) | itself)[:, None]
        return StepContext(self._rope(pos), masks, token_mask, cache, start)

    def _static_context(self, cache) -> StepContext:
        """_context for one real token per row at the device-side slot cache.slot: the same
        positions and masks as the dynamic path, over all max_length key slots."""
        pos = cache.positions[:, None]                                   # (B, 1)
        cache.mark_slot()                                                # the new slot is a token
        masks = {"full_attention": cache.key_mask[:, None, None, :]}     # (B, 1, 1, S=max_length)
        if self.config.sliding_window is not None:
            window = self._window(cache.key_mask, pos)                   # (B, 1, S)
            masks["sliding_attention"] = (cache.key_mask[:, None, :] & window)[:, None]
        return StepContext(self._rope(pos), masks, None, cache, cache.slot)

    def _rope(self, pos: torch.Tensor) -> dict:
        return {kind: rope(pos, self.dtype) for kind, rope in self.model.rotary_embs.items()}

    def _window(self, key_ok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """key_ok (B, S) real-token slots, pos (B, L) query positions -> (B, L, S): the key is
        among the query's last sliding_window positions (itself included). A row's real slots
        hold its tokens in position order, so a slot's position is the count of real slots
        before it."""
        key_pos = key_ok.long().cumsum(1) - 1                            # (B, S)
        return key_pos[:, None, :] > pos[:, :, None] - self.config.sliding_window

    # ---- generation (generation.py) --------------------------------------------------------
    def generate(self, prompts=None, max_new_tokens: int = 32, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_token_ids=(), cuda_graph: bool | None = None, *, input_ids=None, attention_mask=None,
                 do_sample: bool | None = None, eos_token_id=None, min_p: float | None = None,
                 repetition_penalty: float | None = None, **steering) -> list[list[int]]:
        """New tokens per prompt (a stop token, when hit, is the last one kept). temperature
        None: 0 (greedy), or 1.0 with do_sample=True. cuda_graph: None = decode through a
        captured CUDA graph on CUDA, eagerly elsewhere; False = eager. transformers' names:
        input_ids (the prompts: `generate(**tokenizer(texts, return_tensors="pt", padding=True))`),
        attention_mask (left-padded (B, L) prompts), do_sample, eos_token_id, min_p,
        repetition_penalty (generation.py). steering: prefix_allowed_tokens_fn,
        logits_processor, structured_outputs ({"json": schema}, ...), tokenizer (steering.py)."""
        from .generation import check_keywords, generate
        check_keywords("generate", steering)
        return generate(self, _prompts(prompts, input_ids), max_new_tokens, temperature, top_k, top_p, seed,
                        stop_token_ids, cuda_graph, attention_mask=attention_mask, do_sample=do_sample,
                        eos_token_id=eos_token_id, min_p=min_p, repetition_penalty=repetition_penalty, **steering)

    def continuous_batch(self, capacity: int, max_length: int, cuda_graph: bool | None = None,
                         prefill_chunk: int | None = None, prefix_cache=None):
        """An engine that decodes up to `capacity` sequences together, each joining and
        leaving between steps (continuous.py; what the service's /v1/generate runs on);
        prefix_cache: a PrefixCache (prefix_cache.py) or None."""
        from .continuous import ContinuousBatch
        return ContinuousBatch(self, capacity, max_length, cuda_graph, prefill_chunk, prefix_cache)

    def stream_generate(self, prompts=None, max_new_tokens: int = 32, temperature: float | None = None,
                        top_k: int | None = None, top_p: float | None = None,
                        seed: int | None = None, stop_token_ids=(),
                        cuda_graph: bool | None = None, *, input_ids=None, attention_mask=None,
                        do_sample: bool | None = None, eos_token_id=None, min_p: float | None = None,
                        repetition_penalty: float | None = None, **steering) -> Iterator[list[int | None]]:
        """One token per prompt per step; None for prompts that have already stopped."""
        from .generation import check_keywords, stream_generate
        check_keywords("stream_generate", steering)
        return stream_generate(self, _prompts(prompts, input_ids), max_new_tokens, temperature, top_k, top_p, seed,
                               stop_token_ids, cuda_graph, attention_mask=attention_mask, do_sample=do_sample,
                               eos_token_id=eos_token_id, min_p=min_p, repetition_penalty=repetition_penalty,
                               **steering)


def _prompts(prompts, input_ids):
    """generate()'s prompts, positional or as transformers' input_ids keyword: exactly one."""
    if (prompts is None) == (input_ids is None):
        raise ValueError("expected the prompts once: positionally or as input_ids= (transformers' name), "
                         f"got {'both' if prompts is not None else 'neither'}")
    return prompts if prompts is not None else input_ids
