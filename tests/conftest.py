"""Test-session setup shared by every test file.

Without CUDA the fused Triton kernels can only run under Triton's interpreter, and
`triton.jit` reads TRITON_INTERPRET when a kernel is *defined*, so it has to be set
before anything imports `models.depthwise`. That is why it is done here, at import.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
_INTERPRET_AT_START = os.environ.get("TRITON_INTERPRET")

# Tests run on 2-core CI machines: keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _triton_interpret_is_left_as_found(request):
    """A test that unsets TRITON_INTERPRET in this process (importing benchmarks/ptx.py or
    host_overhead.py does) turns the fused impl off for every later test: fail at the culprit."""
    before = os.environ.get("TRITON_INTERPRET")
    yield
    after = os.environ.get("TRITON_INTERPRET")
    if after != before:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before
        pytest.fail(f"{request.node.nodeid} changed TRITON_INTERPRET from {before!r} to {after!r}; "
                    "run code that needs it unset in a subprocess")


def pytest_collectreport(report):
    """The same leak at import time: a test module that imports such a script at its top level
    unsets it during collection, before any test runs, and the fixture above never sees it."""
    now = os.environ.get("TRITON_INTERPRET")
    if now != _INTERPRET_AT_START:
        raise pytest.UsageError(f"collecting {report.nodeid or 'tests'} changed TRITON_INTERPRET from "
                                f"{_INTERPRET_AT_START!r} to {now!r}; import scripts that unset it in a "
                                "subprocess, not at a test module's top level")
