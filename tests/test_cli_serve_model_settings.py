"""`dwserve serve`'s settings that reach the models (service/cli.py, service/app.py): a model
that cannot load is exit 1 with a one-line reason, the dtype (flag, variable, auto per device)
builds the models in it, and the CPU row-chunk budget (--cpu-row-chunk-mib) sets MobileNetV2's
row chunks."""
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service import cli
from service.settings import Settings

import cli_capture

captured = cli_capture.captured   # serve without uvicorn: the Settings it would serve with


def test_serve_exits_1_when_a_model_cannot_load(tmp_path):
    """A weights file found unreadable only when loaded: exit 1 with the reason, logged as one
    line (a ValueError says what is wrong; its traceback says nothing more)."""
    corrupt = tmp_path / "corrupt-weights.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--log-level", "error",
                           "--model", f"mobilenet_v2={corrupt}"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "model loading failed" in proc.stderr and "corrupt-weights" in proc.stderr
    assert "not a readable safetensors file" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_dtype_flag_env_and_auto(monkeypatch, captured):
    monkeypatch.setenv("DWSERVE_DTYPE", "float16")
    assert cli.main(["serve"]) == 0
    assert captured["settings"].dtype == "float16"
    assert cli.main(["serve", "--dtype", "bfloat16"]) == 0
    assert captured["settings"].resolved_dtype("cpu") == "bfloat16"
    auto = Settings(dtype="auto")
    assert (auto.resolved_dtype("cpu"), auto.resolved_dtype("cuda"), auto.resolved_dtype("cuda:1")) == \
        ("float32", "bfloat16", "bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        Settings(dtype="float64")


def test_service_builds_models_in_the_settings_dtype():
    """Service._build hands the resolved dtype to the registry: a bf16 MobileNetV2 still
    takes FP32 input and answers FP32 logits (the protocol's types do not change)."""
    import torch

    from service.app import Service
    svc = Service(Settings(models=["mobilenet_v2"], dtype="bfloat16"))
    served = svc._build("mobilenet_v2", "cpu")
    assert served.metadata["dtype"] == "bfloat16" and served.dtype == torch.bfloat16
    out = served.forward({"input": torch.randn(1, 3, 224, 224)})["logits"]
    assert out.dtype == torch.float32 and out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("env, expected", [
    pytest.param(None, 8 << 20, id="default-8MiB"),
    pytest.param("0", None, id="0-whole-batches"),
    pytest.param("2", 2 << 20, id="2MiB"),
])
def test_service_sets_the_row_chunk_budget_from_settings(monkeypatch, env, expected):
    from models.row_chunks import CPU_ROW_CHUNK_BYTES
    from service.app import Service
    if env is not None:
        monkeypatch.setenv("DWSERVE_CPU_ROW_CHUNK_MIB", env)
    svc = Service(Settings(models=["mobilenet_v2", "lfm2"]))
    assert svc._build("mobilenet_v2", "cpu").module.row_chunk_bytes == expected
    assert not hasattr(svc._build("lfm2", "cpu").module, "row_chunk_bytes")
    assert Settings.model_fields["cpu_row_chunk_mib"].default << 20 == CPU_ROW_CHUNK_BYTES  # one default


def test_row_chunk_flag_reaches_settings(captured):
    assert cli.main(["serve", "--cpu-row-chunk-mib", "0"]) == 0
    assert captured["settings"].cpu_row_chunk_mib == 0


def test_row_chunk_budget_rejects_negative():
    with pytest.raises(ValidationError, match="cpu_row_chunk_mib"):
        Settings(cpu_row_chunk_mib=-1)
