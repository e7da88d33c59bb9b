"""Reading a checkpoint from disk: a file that is not safetensors names itself, bad device and
dtype arguments fail before any I/O, and the load's memory peak is the model, not the model
plus the whole checkpoint (models/lfm2/checkpoint.py reads one tensor at a time)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402
from test_lfm2 import make_hf  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_ckpt")
    make_hf(path, seed=3)
    return path


def _copy_config(src: Path, dst: Path) -> Path:
    dst.mkdir(exist_ok=True)
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


@pytest.mark.parametrize("damage", [
    pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    pytest.param(lambda data: b"\x00" * 64, id="garbage"),
    pytest.param(lambda data: b"", id="empty"),
])
def test_a_broken_weights_file_is_named(ckpt, tmp_path, damage):
    broken = _copy_config(ckpt, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(damage((ckpt / "model.safetensors").read_bytes()))
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file.*again"):
        LFM2ForCausalLM.from_pretrained(broken)


def test_a_broken_shard_is_named(ckpt, tmp_path):
    sharded = _copy_config(ckpt, tmp_path / "sharded")
    tensors = load_file(ckpt / "model.safetensors")
    names = sorted(tensors)
    files = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, part in files.items():
        save_file({n: tensors[n] for n in part}, sharded / fname)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: f for f, part in files.items() for n in part}}))
    second = sharded / "model-00002-of-00002.safetensors"
    second.write_bytes(second.read_bytes()[:100])
    with pytest.raises(ValueError, match="model-00002-of-00002.safetensors: not a readable safetensors file"):
        LFM2ForCausalLM.from_pretrained(sharded)


@pytest.mark.parametrize("kwargs, match", [
    pytest.param(dict(device="gpu"), "device must be 'cpu', 'cuda", id="unknown-device"),
    pytest.param(dict(dtype=torch.int64), "dtype must be one of", id="int-dtype"),
    pytest.param(dict(dtype="half-ish"), "dtype must be one of", id="bad-dtype-name"),
] + ([] if torch.cuda.is_available() else
     [pytest.param(dict(device="cuda"), "CUDA is not available here", id="cuda-absent")]))
def test_bad_device_or_dtype_fails_before_reading(tmp_path, kwargs, match):
    """The path does not even exist: the argument check comes first."""
    with pytest.raises(ValueError, match=match):
        LFM2ForCausalLM.from_pretrained(tmp_path / "not-there", **kwargs)


def test_dtype_by_name_is_the_torch_dtype(ckpt):
    by_name = LFM2ForCausalLM.from_pretrained(ckpt, dtype="bfloat16")
    by_dtype = LFM2ForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16)
    assert {p.dtype for p in by_name.parameters()} == {torch.bfloat16}
    for a, b in zip(by_name.state_dict().values(), by_dtype.state_dict().values()):
        assert torch.equal(a, b)


PEAK_SCRIPT = textwrap.dedent("""
    import gc, sys, threading, time
    import torch
    from models.lfm2 import LFM2ForCausalLM

    def anon_bytes():   # resident anonymous memory: not the checkpoint's file pages (mmap)
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    path, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    LFM2ForCausalLM.from_pretrained(path, dtype=dtype)         # warm: lazy imports, allocator
    gc.collect()
    base, peak, done = anon_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    model = LFM2ForCausalLM.from_pretrained(path, dtype=dtype)
    done.set()
    sampler.join()
    size = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    print(size, peak[0] - base)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc")
def test_load_peak_is_about_the_model_not_the_checkpoint_too(tmp_path):
    """A float32 checkpoint loaded as bfloat16: reading the whole checkpoint, then building the
    model in float32 and converting, peaked at 2.3x the served model; one tensor at a time into
    a model built in bfloat16 peaks at the model plus its largest tensor."""
    make_hf(tmp_path, seed=5, vocab_size=4096, hidden_size=512, intermediate_size=1536, num_attention_heads=8,
            num_hidden_layers=8, layer_types=["conv", "conv", "full_attention", "conv"] * 2)
    largest = max(t.numel() for t in load_file(tmp_path / "model.safetensors").values()) * 4   # float32 on disk
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path), "bfloat16"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    size, peak = map(int, out.stdout.split()[-2:])
    assert peak <= size + largest + 16 * 2**20, (size, peak, largest)
