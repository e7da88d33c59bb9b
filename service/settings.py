"""All service configuration in one pydantic-settings `Settings` (env prefix `DWSERVE_`).

Every limit the server enforces lives here, explicitly, so an operator can read the
attack surface off one page: body size, tensor elements, image pixels, sequence length,
generated tokens, batch size, queue depth. Every field has a CLI flag (service/cli.py) but
keep_freed_memory, which is environment-only (DWSERVE_KEEP_FREED_MEMORY).
"""
from __future__ import annotations

import re
import typing
from typing import Annotated, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

try:  # pydantic-settings >= 2.7: let a comma list in DWSERVE_MODELS reach our validator
    from pydantic_settings import NoDecode
except ImportError:  # older: DWSERVE_MODELS must then be JSON, e.g. '["lfm2"]'
    NoDecode = None

IMPL_CHOICES = ("auto", "per_group", "slice_sum", "compiled", "fused", "native")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
GRPC_COMPRESSION_LEVELS = ("none", "low", "medium", "high")   # Triton's, grpc's levels (grpc_server.py)
DEFAULT_MODELS = ("lfm2", "mobilenet_v2")

_ModelList = Annotated[tuple[str, ...], NoDecode] if NoDecode is not None else tuple[str, ...]


class Settings(BaseSettings):
    # env_ignore_empty: `DWSERVE_X=` is as if unset, so an image's default can be taken back
    # (`-e DWSERVE_GRPC_PORT=` turns off the gRPC port the Dockerfiles set; it was a parse error)
    model_config = SettingsConfigDict(env_prefix="DWSERVE_", frozen=True, extra="forbid", env_ignore_empty=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # OIP v2 over gRPC (service/grpc_server.py) on this port, same host; None = off, 0 = any
    # free port (logged). Off by default: two servers on one host would otherwise collide.
    grpc_port: Optional[int] = Field(None, ge=0, le=65535)
    # calls (a stream counts once) the gRPC server runs at once; more are RESOURCE_EXHAUSTED:
    # grpc buffers each call's incoming messages (MiBs a stream) before dwserve sees them
    grpc_max_concurrent_rpcs: int = Field(1024, ge=1)
    device: str = "auto"                                  # auto, cpu, cuda or cuda:N
    # Each entry "NAME" (embedded default weights) or "NAME=PATH" (local weights directory).
    models: _ModelList = DEFAULT_MODELS
    depthwise_impl: str = "auto"
    # Model weights and activations: "auto" = bfloat16 on CUDA (half the bytes through the
    # memory-bound depthwise layers, tensor cores for the rest), float32 on CPU (no fast
    # bf16 on AVX2 parts). Requests and responses stay FP32/INT64 either way.
    dtype: str = "auto"                                   # one of DTYPE_CHOICES
    # seeds torch.Generator for the embedded weights: its range (past it loading failed after start)
    seed: int = Field(0, ge=0, le=2**64 - 1)
    # torch intra-op threads (None = torch's default, one per core). Set it to the CPU quota
    # (k8s limits, a shared box): oversubscribed OpenMP threads spin and can be 10x slower.
    torch_threads: Optional[int] = Field(None, ge=1, le=1024)
    # glibc keeps freed activations in its heap instead of unmapping them (models.allocator):
    # steadier and faster CPU forwards for a little more resident memory.
    keep_freed_memory: bool = True
    # Batched CPU MobileNetV2 forwards run each stage in row chunks whose activations fit this
    # many MiB (models/row_chunks.py; `dwserve bench row_chunks` sweeps it). 0 = whole batches.
    cpu_row_chunk_mib: int = Field(8, ge=0, le=4096)

    # --- dynamic batching -------------------------------------------------------------
    max_batch_size: int = Field(8, ge=1, le=1024)        # rows per forward; 1 = batching off
    max_queue_delay_ms: float = Field(5.0, ge=0, le=10_000)  # how long a batch may wait to fill
    max_queue_size: int = Field(64, ge=1, le=100_000)    # queued requests per model, then 503
    # /v1/generate: generations decoded together, each joining and leaving between steps
    # (continuous batching); 1 = one generation at a time. Each row holds a KV cache of
    # max_sequence_length tokens (lfm2-demo fp32: 4 MiB per row; lfm2-350m: 48 MiB; logged at start).
    max_decode_batch: int = Field(16, ge=1, le=256)
    # Prompt tokens prefilled per decode step while a request joins: a long prompt delays the
    # live generations' next token by one chunk, not by its whole prefill. 0 = whole prompts.
    prefill_chunk_tokens: int = Field(256, ge=0, le=1_000_000)
    # Prefix caching (models/lfm2/prefix_cache.py): prompts starting with an already prefilled
    # 64-token-aligned prefix (a system prompt, an earlier turn) prefill only the rest. MiB of
    # kept state, shared by every depthwise policy's engine (each policy's states apart); 0 = off.
    prefix_cache_mib: int = Field(256, ge=0, le=1_000_000)
    # Sampling defaults of the generate routes (vLLM's --generation-config): "auto" = a field a
    # request leaves out (temperature, top_k, top_p, min_p, repetition_penalty) takes the
    # checkpoint's generation_config.json value where it gives one; "none" = the routes' own.
    generation_config: Literal["auto", "none"] = "auto"

    # --- request limits (each violation is a 4xx, never a 500) ---------------------------
    max_body_bytes: int = Field(32 * 2**20, ge=1024)     # 413 above (Content-Length and streamed)
    # Every request body held at once (bytes), summed over the requests in progress; a body
    # that would pass it is a 503 + Retry-After. None = 8 * max_body_bytes (256 MiB by default).
    max_total_body_bytes: Optional[int] = Field(None, ge=1024)
    # Values (numbers, strings, ...) in one JSON body, counted before it is parsed; 413 above.
    # Parsed, each costs ~32 bytes (up to 16x the body); large tensors travel in binary.
    max_json_values: int = Field(2 * 2**20, ge=1024)
    max_elements: int = Field(8 * 3 * 224 * 224, ge=1)   # per input tensor
    max_new_tokens: int = Field(256, ge=1)
    max_sequence_length: int = Field(2048, ge=1)         # prompt (+ generated) tokens
    max_image_pixels: int = Field(4096 * 4096, ge=1)     # decoded image width*height
    max_prompt_chars: int = Field(100_000, ge=1)
    # a structured output's schema / regex / grammar / choices; at most the size its compile
    # thread's stack is sized for (models/lfm2/structured.py MAX_CONSTRAINT_CHARS)
    max_grammar_chars: int = Field(262_144, ge=1, le=1 << 20)
    max_choices: int = Field(8, ge=1, le=256)            # OpenAI `n`: sequences per request
    max_prompts: int = Field(64, ge=1, le=4096)          # prompts of one OpenAI completions request
    # a request waiting longer for the model gets 503 (a generation: for its next token, so a
    # long one that keeps producing is never cut); a body not all received by then, 408
    request_timeout_s: float = Field(120.0, gt=0)

    # --- response compression (service/compression.py) -----------------------------------
    # gzip/deflate level of REST responses to clients whose Accept-Encoding asks for it:
    # 1 = fastest (a JSON logits body halves at ~80 MiB/s; 6 is 7x slower for 10% less);
    # 0 = off, every response identity. Streams (SSE) are never compressed.
    response_compression_level: int = Field(1, ge=0, le=9)
    # smaller bodies go uncompressed (they fit a packet either way)
    response_compression_min_bytes: int = Field(1024, ge=0)
    # gRPC responses, as Triton's --grpc-infer-response-compression-level: one of
    # GRPC_COMPRESSION_LEVELS. grpc's own levels, which pick an algorithm the client accepts
    # (low: gzip, medium and high: deflate), each at zlib's default level; none = as they are.
    # Off by default, as Triton's: FP32 logits shrink ~7%, for the CPU of compressing every reply.
    grpc_infer_response_compression_level: str = "none"

    # --- security -------------------------------------------------------------------------
    api_key: Optional[str] = None                        # bearer token for inference routes

    # --- measurement ----------------------------------------------------------------------
    launch_recount_every: int = Field(500, ge=1)         # re-run count_launches every N forwards
    depthwise_sample_every: int = Field(20, ge=1)        # run every N-th forward under depthwise_timer
    warmup: bool = True                                  # warm up (and compile) before ready
    # On a CUDA device, replay MobileNetV2's forward from CUDA graphs (models/graphed.py: one per
    # bucket of rows and depthwise policy; per_group and compiled stay eager). On by default since
    # its CUDA test passed on an H200 (tests/test_graphed.py: benchmarks/results/h200-2026-12-04-2/
    # gpu-tests.xml); --no-cuda-graphs / DWSERVE_CUDA_GRAPHS=0 turn it off. A no-op on CPU (graphs
    # are CUDA's: service/app.py). LFM2's decode steps are graphed on CUDA regardless.
    cuda_graphs: bool = True
    # on SIGTERM, how long in-flight requests get to finish before they are cut; 0 = at once.
    # At most a day: the drain joins threads with it, which raise OverflowError past
    # threading.TIMEOUT_MAX (inf made the shutdown fail and skip the drain)
    graceful_shutdown_s: float = Field(30.0, ge=0, le=86_400)
    # seconds a connection may sit with no request in progress (also before its first byte),
    # and a request's body pause mid-upload (then 408)
    idle_timeout_s: float = Field(5.0, gt=0)
    # seconds a request's head (request line and headers) may take from its first byte; then
    # 408 and the connection is closed (a client trickling headers: slowloris). service/cli.py
    head_timeout_s: float = Field(10.0, gt=0)
    # uvicorn's log level and the root logger's (--log-level): one of LOG_LEVELS
    log_level: str = "info"
    # text, or json: one JSON object per line for a log pipeline (service/logs.py)
    log_format: str = "text"
    # one line per request on the dwserve.access logger (health probes and scrapes at debug)
    access_log: bool = True

    # --help shows these unset as 'none' ('--grpc-port ... none: off'): the word is taken as unset
    @field_validator("grpc_port", "torch_threads", "max_total_body_bytes", mode="before")
    @classmethod
    def _none_word(cls, value):
        return None if isinstance(value, str) and value.strip().lower() == "none" else value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value):
        # "" (`--host "$HOST"`, HOST unset): uvicorn bound every interface unasked and gRPC failed
        if not value.strip():
            raise ValueError("expected an address or host name (0.0.0.0 or :: for every interface)")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(value)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value):
        if not value:
            raise ValueError("expected at least one NAME or NAME=PATH")
        for entry in value:   # "lfm2=" served the embedded default as if no path were meant
            name, eq, path = (part.strip() for part in entry.partition("="))
            if not name or (eq and not path):
                raise ValueError(f"expected NAME or NAME=PATH, got {entry!r}")
        names = [entry.split("=", 1)[0].strip() for entry in value]
        if len(set(names)) != len(names):
            raise ValueError(f"expected each model name at most once, got {names}")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value):
        # Only what a client can send back: a secret file's trailing newline (or any control or
        # non-ASCII character) made a key no request could match, every one a silent 401.
        if value is not None and not re.fullmatch(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?", value):
            raise ValueError("expected visible ASCII characters (spaces only between them), as an "
                             "Authorization header or gRPC metadata can carry; a trailing newline from a "
                             "secret file?")
        return value

    # A word setting takes any case and surrounding spaces (DWSERVE_LOG_FORMAT=JSON as
    # DWSERVE_LOG_LEVEL=WARNING) and holds the word as its choices write it: all lower-case,
    # so nothing is ambiguous. service/cli.py's word flags do the same (_word).
    @field_validator("log_level", "log_format", "depthwise_impl", "dtype", "device", "generation_config",
                     "grpc_infer_response_compression_level", mode="before")
    @classmethod
    def _lower_word(cls, value):
        return value.strip().lower() if isinstance(value, str) else value

    # Choices checked here rather than by a regex pattern: the error names them in words.
    @field_validator("depthwise_impl", "dtype", "log_level", "log_format", "grpc_infer_response_compression_level")
    @classmethod
    def _check_choice(cls, value, info: ValidationInfo):
        return _one_of(value, {"depthwise_impl": IMPL_CHOICES, "dtype": DTYPE_CHOICES,
                               "log_level": LOG_LEVELS, "log_format": LOG_FORMATS,
                               "grpc_infer_response_compression_level": GRPC_COMPRESSION_LEVELS}[info.field_name])

    @field_validator("device")
    @classmethod
    def _check_device(cls, value):
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N (a GPU index), got {value!r}")
        return value

    @field_validator("max_total_body_bytes")
    @classmethod
    def _check_total_body(cls, value, info: ValidationInfo):
        one = info.data.get("max_body_bytes")   # declared above, so validated first
        if value is not None and one is not None and value < one:
            raise ValueError(f"expected at least max_body_bytes ({one}): a body of that size could never "
                             "be taken; raise this or lower --max-body-bytes")
        return value

    @property
    def total_body_limit(self) -> int:
        """Bytes of request bodies held at once (service/body.py): max_total_body_bytes or its default."""
        return self.max_total_body_bytes if self.max_total_body_bytes is not None else 8 * self.max_body_bytes

    def model_entries(self) -> list[tuple[str, Optional[str]]]:
        """[(name, path or None)] from the `models` entries."""
        out = []
        for entry in self.models:
            name, _, path = entry.partition("=")
            out.append((name.strip(), path.strip() or None))
        return out

    def resolved_dtype(self, device: str) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if device.startswith("cuda") else "float32"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def expected(field: str, error: dict) -> str:
    """What setting `field` takes, in words, for one of pydantic's errors about it (the CLI's
    message): a validator's own message, else the field's type and all its bounds (pydantic
    names one violated bound, and 'nan' as 'should be <= 10000')."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    info = Settings.model_fields.get(field)
    if info is None:
        return error["msg"]
    kinds = set(typing.get_args(info.annotation)) | {info.annotation}
    if bool in kinds:
        return "expected a boolean (1/0, true/false, yes/no, on/off)"
    kind = "an integer" if int in kinds else "a number" if float in kinds else None
    if kind is None:
        return error["msg"]
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{op} {getattr(m, name)}" for m in info.metadata for name, op in ops.items()
              if getattr(m, name, None) is not None]
    return f"expected {kind}" + (" " + " and ".join(bounds) if bounds else "")
