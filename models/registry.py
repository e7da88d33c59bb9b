"""Served models by name: build, IO specs (KServe v2 datatypes), validated batched forward.

    served = build_model("mobilenet_v2")                     # seeded weights, BN folded
    served = build_model("mobilenet_v2", "weights.safetensors", device="cuda")
    served = build_model("lfm2", "/models/LFM2-350M")         # a local HF directory
    out = served.forward({"input": x})                       # {"logits": (B, 1000) float32}

`forward` is batched, runs under torch.inference_mode() and honours the caller's
`use_impl(...)` (the depthwise layers read it per call). It validates names, dtypes, shapes
and values and raises ValueError saying what was expected, so the service can answer 4xx.
Outputs are float32 on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .placement import parse_device, parse_dtype

MODEL_NAMES = ("lfm2", "mobilenet_v2")
LFM2_DEFAULT_PRESET = "lfm2-demo"
PRESET_PREFIX = "preset:"          # --model lfm2=preset:NAME: another architecture, seeded weights
LABELS_FILENAME = "labels.txt"     # next to a MobileNetV2 weights file: class names, one per line


@dataclass(frozen=True)
class TensorSpec:
    """One input/output: KServe v2 datatype ("FP32", "INT64") and shape (-1 = variable)."""
    name: str
    datatype: str
    shape: tuple[int, ...]

    def check(self, t) -> None:
        """ValueError unless `t` is a tensor of this rank with the fixed dims (batch >= 1)."""
        want = "[" + ",".join(str(d) for d in self.shape) + "]"
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"input {self.name!r}: expected a tensor of shape {want}, "
                             f"got {type(t).__name__}")
        ok = t.dim() == len(self.shape) and all(d == -1 or d == n for d, n in zip(self.shape, t.shape))
        if not ok or t.numel() == 0:
            raise ValueError(f"input {self.name!r}: expected shape {want} (-1 = any size >= 1), "
                             f"got {list(t.shape)}")


class ServedModel:
    """One loaded model: IO specs, the nn.Module, metadata, and a validated forward."""

    def __init__(self, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 module: nn.Module, device: torch.device, metadata: dict):
        self.name, self.inputs, self.outputs = name, inputs, outputs
        self.module, self.device, self.metadata = module, torch.device(device), metadata
        # output name -> class names, when the model was given them (a labels file): what the
        # classification extension appends to "<value>:<index>"
        self.output_labels: dict[str, list[str]] = {}

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, dict) or set(inputs) != {s.name for s in self.inputs}:
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"model {self.name!r}: expected inputs {[s.name for s in self.inputs]}, "
                             f"got {got}")
        for spec in self.inputs:
            spec.check(inputs[spec.name])
        with torch.inference_mode():
            return self._forward({n: t.to(self.device) for n, t in inputs.items()})

    def _forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def warmup_inputs(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"ServedModel({self.name!r}, device={self.device}, inputs={self.inputs}, outputs={self.outputs})"


class MobileNetServed(ServedModel):
    """`input` FP32 [-1,3,224,224] (ImageNet-normalised) -> `logits` FP32 [-1,num_classes]."""

    def __init__(self, model, device, metadata):
        n = model.num_classes
        super().__init__("mobilenet_v2", (TensorSpec("input", "FP32", (-1, 3, 224, 224)),),
                         (TensorSpec("logits", "FP32", (-1, n)),), model, device, metadata)
        self.labels: list[str] = list(model.labels)
        self.dtype = next(model.parameters()).dtype
        self.graphed = None            # models.graphed.GraphedForward once use_cuda_graphs(True)

    def use_cuda_graphs(self, on: bool = True) -> None:
        """Replay the forward from CUDA graphs (models/graphed.py), or stop (graphs dropped)."""
        if not on:
            self.graphed = None
            return
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, not {self.device}")
        from .graphed import GraphedForward
        self.graphed = GraphedForward(lambda x: self.module(x).float(), (3, 224, 224), self.dtype, self.device,
                                      memory_format=torch.channels_last)

    def preprocess(self, image) -> torch.Tensor:
        """PIL.Image -> (3, 224, 224) float32 on CPU (resize 256, centre crop, normalise)."""
        from .mobilenet_io import preprocess
        return preprocess(image)

    def _forward(self, inputs):
        x = inputs["input"]
        if not x.is_floating_point():
            raise ValueError(f"input 'input': expected FP32 image data, got dtype {x.dtype}")
        if not _all_finite(x):
            raise ValueError("input 'input': expected finite values (no NaN/inf); "
                             "send ImageNet-normalised pixels")
        x = x.to(self.dtype)
        x = x.contiguous(memory_format=torch.channels_last)      # the model is NHWC (build)
        if self.graphed is not None:
            return {"logits": self.graphed(x)}
        return {"logits": self.module(x).float()}

    def warmup_inputs(self, batch_size: int = 1):
        g = torch.Generator().manual_seed(0)
        return {"input": torch.randn(batch_size, 3, 224, 224, generator=g)}


class LFM2Served(ServedModel):
    """`input_ids` INT64 [-1,-1] (left-padded rows) -> `logits` FP32 [-1,vocab], the next token's."""

    def __init__(self, lm, device, metadata):
        v = lm.config.vocab_size
        super().__init__("lfm2", (TensorSpec("input_ids", "INT64", (-1, -1)),),
                         (TensorSpec("logits", "FP32", (-1, v)),), lm, device, metadata)
        self.lm = lm
        self.vocab_size = v
        self.max_length = int(lm.config.max_position_embeddings)

    def _forward(self, inputs):
        ids = inputs["input_ids"]
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"input 'input_ids': expected INT64 token ids, got dtype {ids.dtype}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"input 'input_ids': token ids must be in [0, {self.vocab_size}) "
                             f"(vocab_size), got values in [{lo}, {hi}]")
        if ids.shape[1] > self.max_length:
            raise ValueError(f"input 'input_ids': at most {self.max_length} tokens per row "
                             f"(max_position_embeddings), got {ids.shape[1]}")
        return {"logits": self.lm.next_token_logits(ids.long()).float()}

    def warmup_inputs(self, batch_size: int = 1):
        g = torch.Generator().manual_seed(0)
        return {"input_ids": torch.randint(0, self.vocab_size, (batch_size, 16), generator=g)}


# ---- building -------------------------------------------------------------------------------
def _all_finite(x: torch.Tensor) -> bool:
    """An inf or NaN anywhere makes the sum non-finite, and the sum is one vectorised pass
    (0.1 ms for 8 images against 3 ms for isfinite().all()); only a non-finite sum (bad
    input, or finite values that overflow it) pays for the exact elementwise check."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _build_mobilenet(path, device, dtype, seed, labels) -> MobileNetServed:
    from .mobilenet import MobileNetV2, mobilenet_v2
    from .mobilenet_io import read_labels
    if path is None:
        model, source = mobilenet_v2(seed=seed), f"seeded random weights (seed={seed})"
    else:
        p = Path(path)
        model, source = MobileNetV2.from_file(p), str(p)
        if labels is None and (p.parent / LABELS_FILENAME).is_file():
            labels = p.parent / LABELS_FILENAME
    model.labels = read_labels(labels, model.num_classes)
    n_params = sum(t.numel() for t in model.parameters())
    model.fold_bn()
    # NHWC on every device: cuDNN's and oneDNN's depthwise/pointwise kernels prefer it. On 2 CPU
    # cores (AMD EPYC, 2 threads) a batch-1 forward measured 18-22 ms NHWC vs 27 ms NCHW, batch 8
    # 15 vs 23-28 ms per row (auto then picks native for every depthwise layer:
    # benchmarks/results/ops-cpu.md, the "-cl" rows).
    model = model.to(device=device, dtype=dtype)
    model.to_channels_last()
    meta = {"architecture": "mobilenet_v2", "source": source, "num_classes": model.num_classes,
            "parameters": n_params, "depthwise_layers": model.num_depthwise, "bn_folded": True,
            "channels_last": True, "dtype": str(dtype).removeprefix("torch."),
            "labels_source": str(labels) if labels is not None else "class_<i>"}
    served = MobileNetServed(model, device, meta)
    if labels is not None:
        served.output_labels = {"logits": model.labels}
    return served


def _build_lfm2(path, device, dtype, seed, preset: str) -> LFM2Served:
    from .lfm2 import LFM2ForCausalLM
    if path is None:
        lm = LFM2ForCausalLM.from_preset(preset, seed=seed, device=device, dtype=dtype)
        source = f"preset {preset} with seeded random weights (seed={seed})"
    else:
        lm, source = LFM2ForCausalLM.from_pretrained(path, device=device, dtype=dtype), str(path)
    lm.eval()
    c = lm.config
    meta = {"architecture": c.model_type, "source": source, "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "conv_layers": sum(t == "conv" for t in c.layer_types),
            "conv_kernel_size": c.conv_L_cache,
            "sliding_window": c.sliding_window,      # None: every attention layer sees all
            "experts": c.num_experts,                # 0: dense feed-forward (not LFM2-MoE)
            "experts_per_token": c.num_experts_per_tok if c.num_experts else 0,
            "max_position_embeddings": c.max_position_embeddings,
            "parameters": sum(t.numel() for t in lm.parameters()),
            "dtype": str(dtype).removeprefix("torch."),
            "has_tokenizer": lm.tokenizer is not None}   # False: HF dir without tokenizer.json
    for tok in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(c, tok, None) is not None:
            meta[tok] = getattr(c, tok)
    return LFM2Served(lm, device, meta)


def check_source(name: str, path: str | Path | None = None) -> None:
    """ValueError saying what `name` takes unless (name, path) names something servable: a
    model of MODEL_NAMES; "preset:NAME" of an lfm2 preset; an existing weights file for
    mobilenet_v2, a directory with a valid LFM2 config.json for lfm2. Reads no weights, so
    `dwserve serve` calls it before binding its port; build_model calls it before loading."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    if isinstance(path, str) and path.startswith(PRESET_PREFIX):
        if name != "lfm2":
            raise ValueError(f"{name}: '{PRESET_PREFIX}NAME' applies to lfm2 (an architecture of "
                             "models/lfm2/presets.py with seeded weights)")
        from .lfm2 import PRESETS
        if path[len(PRESET_PREFIX):] not in PRESETS:
            raise ValueError(f"unknown LFM2 preset {path[len(PRESET_PREFIX):]!r}; expected one of {sorted(PRESETS)}")
        return
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{name}: weights path {str(path)!r} does not exist")
    if name == "mobilenet_v2":
        if p.is_dir():
            raise ValueError(f"mobilenet_v2: expected a .safetensors or .pth weights file, "
                             f"{str(p)!r} is a directory")
        from .mobilenet_io import check_weights_file
        check_weights_file(p)
    elif not p.is_dir():
        raise ValueError(f"lfm2: expected a local Hugging Face directory (config.json + "
                         f"*.safetensors), {str(path)!r} is not a directory")
    elif not (p / "config.json").is_file():
        raise ValueError(f"lfm2: no config.json in {str(path)!r}; expected a local Hugging Face "
                         "directory (config.json + *.safetensors)")
    else:   # a few hundred bytes: another model's directory (its model_type) is said here, not after startup
        from .lfm2 import LFM2Config
        from .lfm2.checkpoint import INDEX, SINGLE
        LFM2Config.from_json(p / "config.json")
        if not ((p / SINGLE).is_file() or (p / INDEX).is_file()):
            legacy = sorted(f.name for f in p.glob("pytorch_model*.bin"))
            hint = (f"; it has {legacy[0]}: save the weights as safetensors (transformers' "
                    "save_pretrained does by default)") if legacy else ""
            raise ValueError(f"lfm2: no weights in {str(path)!r}: expected {SINGLE} or {INDEX} (sharded){hint}")


def build_model(name: str, path: str | Path | None = None, *, device="cpu", dtype=None, seed: int = 0,
                labels: str | Path | None = None) -> ServedModel:
    """A ServedModel for `name` in MODEL_NAMES. path None = the embedded seeded default;
    lfm2 also takes "preset:NAME" (models/lfm2/presets.py, seeded: lfm3-demo, lfm2-350m, ...);
    mobilenet_v2 takes a weights file (.safetensors/.pth; class names from `labels` or a
    labels.txt beside it), lfm2 a local HF directory of an LFM2, LFM2-MoE or LFM3 checkpoint. Never
    downloads."""
    check_source(name, path)
    dev, dt = parse_device(device, default="auto"), parse_dtype(dtype)
    preset = None
    if isinstance(path, str) and path.startswith(PRESET_PREFIX):
        preset, path = path[len(PRESET_PREFIX):], None
    if name != "mobilenet_v2" and labels is not None:
        raise ValueError("labels= applies to mobilenet_v2 only; lfm2 has a tokenizer")
    # Parameters as normal tensors even when called inside inference mode: they keep a version
    # counter, which the depthwise caches (slice_sum's views, fused's tap-major weights) key on.
    with torch.inference_mode(False):
        if name == "mobilenet_v2":
            return _build_mobilenet(path, dev, dt, seed, labels)
        return _build_lfm2(path, dev, dt, seed, preset or LFM2_DEFAULT_PRESET)
