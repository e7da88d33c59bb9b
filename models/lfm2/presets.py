"""Architecture presets of the LFM2 family (no weights): the published sizes, and the seeded
demos the service and benchmarks build. `LFM2ForCausalLM.from_preset(name)` makes one."""
from __future__ import annotations

from .config import LFM2Config


def _attn_layers(n: int, idxs) -> tuple[str, ...]:
    return tuple("full_attention" if i in idxs else "conv" for i in range(n))


# Architecture only (no weights), values from the published LiquidAI config.json files.
# FFN widths after adjustment: 350m 4608, 700m 6912, 1.2b 8192, 2.6b 10752 (no adjustment).
_PUBLISHED = dict(vocab_size=65536, max_position_embeddings=128_000, num_key_value_heads=8,
                  norm_eps=1e-5, conv_L_cache=3, rope_theta=1_000_000.0, pad_token_id=0,
                  bos_token_id=1, eos_token_id=7)
_IDX16 = (2, 5, 8, 10, 12, 14)
PRESETS: dict[str, LFM2Config] = {
    "lfm2-350m": LFM2Config(**_PUBLISHED, hidden_size=1024, intermediate_size=6656,
                            num_hidden_layers=16, num_attention_heads=16,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-700m": LFM2Config(**_PUBLISHED, hidden_size=1536, intermediate_size=10240,
                            num_hidden_layers=16, num_attention_heads=24,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-1.2b": LFM2Config(**_PUBLISHED, hidden_size=2048, intermediate_size=12288,
                            num_hidden_layers=16, num_attention_heads=32,
                            layer_types=_attn_layers(16, _IDX16)),
    "lfm2-2.6b": LFM2Config(**_PUBLISHED, hidden_size=2048, intermediate_size=10752,
                            num_hidden_layers=30, num_attention_heads=32,
                            block_auto_adjust_ff_dim=False,
                            layer_types=_attn_layers(30, (2, 5, 9, 13, 17, 21, 24, 27))),
    # LFM3-1.7B: transformers' Lfm3Config defaults are its published architecture (K=7 short
    # convs in 13 of 24 layers, 5 sliding-window (256) and 6 full attention layers, head_dim 128).
    "lfm3-1.7b": LFM2Config.from_dict({"model_type": "lfm3"}),
    # The embedded default: seeded random weights + the byte tokenizer (tokenizer.py: bytes
    # 0..255, specials 256..258). 5 conv layers of 1024 channels (so per_group's 1024 launches
    # per layer show), 1 attention layer, a small FFN (384) so the convs are most of the work.
    # Depthwise share = time inside the depthwise block / wall time of the forward
    # (models.profiling.depthwise_timer). Measured on the project's 2-core CPU box, 2 torch
    # threads, after the (B, L, C)-layout slice_sum block (tests/test_lfm2_perf.py re-measures:
    # DWSERVE_PERF=1); prefill = next_token_logits on 128 tokens, decode = one step at pos 128:
    #                  per_group (before)    auto (after)
    #   prefill 128    139 ms  52.6 %        66 ms  3.2 %
    #   decode b=1      78 ms  86.5 %         9 ms  4.7 %
    #   decode b=8     468 ms  95.0 %        23 ms  4.5 %
    # The window is narrow by nature: per conv layer per_group costs ~C launches (~15 ms) and
    # the auto block ~0.4 ms at prefill, ~0.06 ms at decode, so the rest of the layer must
    # cost ~15 ms at prefill and >= 1.2 ms at decode; the FFN width moves both together
    # (same box: FFN 512 gave prefill 48 % / 2.9 %, FFN 768 51 % / 4.1 % with decode 4.8 %).
    # lfm2-demo's LFM3 twin for benchmarks (benchmarks/models.py --cases lfm3): the same width,
    # FFN and byte vocabulary, LFM3's layers: K=7 convs (4 of 6), one sliding-window (64) and
    # one full attention layer (proportional RoPE), gates and sandwich norms. Not served by default.
    "lfm3-demo": LFM2Config(model_type="lfm3", vocab_size=264, hidden_size=1024,
                            intermediate_size=384, block_auto_adjust_ff_dim=False,
                            num_hidden_layers=6, num_attention_heads=16, num_key_value_heads=4,
                            attention_head_dim=64, max_position_embeddings=4096, conv_L_cache=7,
                            layer_types=("conv", "conv", "full_attention", "conv",
                                         "sliding_attention", "conv"),
                            sliding_window=64, partial_rotary_factor=0.5, use_sandwich_norm=True,
                            use_attention_gate=True, pad_token_id=256, bos_token_id=257,
                            eos_token_id=258),
    "lfm2-demo": LFM2Config(vocab_size=264, hidden_size=1024, intermediate_size=384,
                            block_auto_adjust_ff_dim=False, num_hidden_layers=6,
                            num_attention_heads=16, num_key_value_heads=4,
                            max_position_embeddings=4096, rope_theta=1_000_000.0,
                            layer_types=_attn_layers(6, (3,)), pad_token_id=256,
                            bos_token_id=257, eos_token_id=258),
}
