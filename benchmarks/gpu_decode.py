"""LFM2 decoding before/after for benchmarks/gpu.py: tokens/s and kernels per generated token.

Variants (each a depthwise policy and a decoder, models/lfm2/decoding.py):
  before       use_impl("per_group"), cuda_graph=False: C single-channel convs per conv layer
  after-eager  use_impl("auto"), cuda_graph=False: the fused kernels, launched one by one (CUDA)
  after        use_impl("auto"), cuda_graph=None: on CUDA the static step replayed as one graph
  served       use_impl("auto"), the service's /v1/generate path: a continuous batch
               (models/lfm2/continuous.py) of `batch` rows, all sequences admitted together;
               on CUDA a graph per row bucket (slots.py), eager elsewhere
Off CUDA "before", "after" (eager) and "served" (eager) run.

Per (preset, batch, variant): one warm-up generate (the graph variant with the same lengths,
so it captures the static-cache bucket the timed run reuses), then one timed stream_generate
of `new_tokens` tokens: ttft (prefill + first sample), ms/token = median gap between tokens
(one decode step + sampling, host-synchronised), generate tok/s = batch * tokens / total,
decode tok/s = batch / (ms/token). A slow variant stops after `max_s` (>= MIN_TOKENS tokens).
Launches: models.profiling.count_launches around one decoder step (for the graph variant, one
dec.step(): one replay). Host launches per token: eager = one per kernel; graph = the kernel
/graph launch calls the profiler sees in one step (1 expected: cudaGraphLaunch).
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import torch

MIN_TOKENS = 8
LAUNCH_APIS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cuGraphLaunch",
               "cudaLaunchCooperativeKernel")    # prefixes: ...Ex, ..._v10000 variants match


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    impl: str
    cuda_graph: bool | None      # None: graph where the model is on CUDA
    continuous: bool = False     # the service's continuous batch instead of generate()


ORDER = ("before", "after-eager", "after", "served")     # how the table lists them


def variants(device: str) -> list[Variant]:
    """The variants in the order they are measured. On CUDA the graph ("after") and served rows
    come first: the step's budget cuts what is left when it ends, and the first H200 run's cut
    fell on lfm2-350m b16's after rows, behind a per_group "before" at ~450 ms a token."""
    before = Variant("before", "per_group", False)
    served = Variant("served", "auto", None, continuous=True)
    if device == "cuda":
        return [Variant("after", "auto", None), served, before, Variant("after-eager", "auto", False)]
    return [before, Variant("after", "auto", False), served]


def host_launches(fn, *args) -> int | None:
    """Kernel/graph launch API calls the CUDA profiler records while fn runs; None off CUDA
    or when the profiler records no runtime calls at all (then nothing can be said)."""
    if not torch.cuda.is_available():
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn(*args)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == DeviceType.CPU]
    if not any(n.startswith(("cuda", "cu")) for n in names):
        return None
    return sum(1 for n in names if n.startswith(LAUNCH_APIS))


def _prompts(vocab: int, batch: int, length: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1000 + batch)
    return torch.randint(3, vocab, (batch, length), generator=g).tolist()


def _timed_stream(model, prompts, new_tokens, cuda_graph, max_s, sync) -> dict:
    """Consume stream_generate, timestamping every yielded step (each ends in a host sync)."""
    sync()
    t0 = time.perf_counter()
    stamps = []
    stream = model.stream_generate(prompts, max_new_tokens=new_tokens, cuda_graph=cuda_graph)
    try:
        for _ in stream:
            stamps.append(time.perf_counter())
            if stamps[-1] - t0 > max_s and len(stamps) >= MIN_TOKENS:
                break
    finally:
        stream.close()                                   # releases a pooled static decoder
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    step = statistics.median(gaps) if gaps else None
    n, batch = len(stamps), len(prompts)
    return {"tokens_measured": n, "ttft_ms": round((stamps[0] - t0) * 1e3, 3),
            "ms_per_token": None if step is None else round(step * 1e3, 4),
            "generate_tokens_per_s": round(batch * n / (stamps[-1] - t0), 2),
            "decode_tokens_per_s": None if step is None else round(batch / step, 2),
            "total_s": round(stamps[-1] - t0, 4)}


def _launches(model, prompts, max_length, cuda_graph) -> dict:
    """count_launches around one decoder step after a prefill (and one untimed warm step)."""
    from models.lfm2.decoding import open_decoder
    from models.profiling import count_launches
    ids = torch.tensor(prompts, device=model.device)
    with open_decoder(model, ids.shape[0], max_length, cuda_graph) as dec:
        nxt = dec.prefill(ids, None).argmax(-1)
        nxt = dec.step(nxt).argmax(-1)                   # warm: first step of this decoder
        lc = count_launches(dec.step, nxt)
        graph = getattr(dec, "runner", None) is not None
        measured = host_launches(dec.step, nxt) if graph else None
    host = measured if graph else lc.cuda_kernels        # eager: one host launch per kernel
    return {"aten_ops_per_token": lc.aten_ops, "kernels_per_token": lc.cuda_kernels,
            "cuda_graph": graph, "host_launches_per_token": host}


def _timed_continuous(model, prompts, new_tokens, max_s, sync) -> dict:
    """The served path: a ContinuousBatch of len(prompts) rows (graphs captured when it is
    made, on CUDA), warmed by one short round, then every prompt added at once and stepped
    to the end; each step() ends in a host read of its tokens. Launches: one decoder step
    with every row live."""
    from models.lfm2.continuous import Sequence
    from models.profiling import count_launches
    batch = len(prompts)
    engine = model.continuous_batch(batch, len(prompts[0]) + new_tokens + 4)
    for round_tokens in (2, new_tokens):                 # warm-up round, then the timed one
        seqs = [engine.add(Sequence(list(p), max_new_tokens=round_tokens)) for p in prompts]
        sync()
        t0, stamps = time.perf_counter(), []
        while engine.busy:
            engine.step()
            stamps.append(time.perf_counter())
            if stamps[-1] - t0 > max_s and len(stamps) >= MIN_TOKENS:
                for s in seqs:
                    engine.cancel(s)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    step = statistics.median(gaps) if gaps else None
    n = len(stamps)
    dec = engine.decoder
    rows, _ = dec.admit([list(p) for p in prompts])      # every row live for one counted step
    dec.set_next(rows, torch.zeros(batch, dtype=torch.long))
    dec.step()                                           # warm
    lc = count_launches(dec.step)
    host = host_launches(dec.step) if dec.graph else lc.cuda_kernels
    return {"tokens_measured": n, "ttft_ms": round((stamps[0] - t0) * 1e3, 3),
            "ms_per_token": None if step is None else round(step * 1e3, 4),
            "generate_tokens_per_s": round(sum(len(s.tokens) for s in seqs) / (stamps[-1] - t0), 2),
            "decode_tokens_per_s": None if step is None else round(batch / step, 2),
            "total_s": round(stamps[-1] - t0, 4), "aten_ops_per_token": lc.aten_ops,
            "kernels_per_token": lc.cuda_kernels, "cuda_graph": dec.graph, "host_launches_per_token": host}


def measure(model, preset: str, batch: int, v: Variant, prompt_len: int, new_tokens: int,
            max_s: float) -> dict:
    from models.depthwise import use_impl
    from benchmarks.timing import synchronizer
    row = {"preset": preset, "batch": batch, "variant": v.name, "impl": v.impl,
           "cuda_graph": v.cuda_graph, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
           "dtype": str(model.dtype).removeprefix("torch."), "error": None}
    prompts = _prompts(model.config.vocab_size, batch, prompt_len)
    sync = synchronizer(model.device)
    graph = v.cuda_graph is None and model.device.type == "cuda"
    try:
        with use_impl(v.impl):
            if v.continuous:
                row.update(_timed_continuous(model, prompts, new_tokens, max_s, sync))
                return row
            # warm-up: kernels compiled, cuDNN/cuBLAS handles made, graph captured for this bucket
            model.generate(prompts, max_new_tokens=new_tokens if graph else 2, cuda_graph=v.cuda_graph)
            row.update(_timed_stream(model, prompts, new_tokens, v.cuda_graph, max_s, sync))
            row.update(_launches(model, prompts, prompt_len + new_tokens, v.cuda_graph))
    except Exception as exc:                             # record, keep the other variants
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return row


def run(presets, batches, prompt_len: int, new_tokens: int, device: str, dtype: torch.dtype,
        deadline: float, max_s: float, rows: list, skipped: list, log=print) -> None:
    """Append a row for every preset x batch x variant started before `deadline` to `rows`
    (as each finishes: a caller keeps them when interrupted), the others to `skipped`."""
    from models.lfm2 import LFM2ForCausalLM
    models: dict = {}                   # preset -> model, built on its first row (every preset's kept)
    # Variant-major across presets and batches: every preset's graph rows, then every per_group
    # "before" (seconds a row at lfm2-350m), the after-eager rows (not in issue 6's list) last, so
    # a budget cut falls on those, never on a required row (the second H200 run cut all of
    # lfm2-350m b16 behind lfm2-demo's and b1's slow rows).
    for v in variants(device):
        for preset in presets:
            for batch in batches:
                if time.perf_counter() > deadline:
                    skipped.append(f"{preset} b{batch} {v.name}")
                    continue
                if preset not in models:
                    models[preset] = LFM2ForCausalLM.from_preset(preset, seed=0, device=device, dtype=dtype)
                r = measure(models[preset], preset, batch, v, prompt_len, new_tokens, max_s)
                rows.append(r)
                log(f"decode {preset} b{batch} {v.name:12s} " + (
                    f"ERROR {r['error']}" if r["error"] else
                    f"{r['generate_tokens_per_s']} tok/s gen, {r['ms_per_token']} ms/token, "
                    f"{r['kernels_per_token']} kernels, {r['aten_ops_per_token']} aten ops, "
                    f"host {r['host_launches_per_token']} per token"))
    models.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
