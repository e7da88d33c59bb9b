"""DESIGN.md's Style section, the checkable parts: kernel files ordered jit kernels, launcher,
public function; one frozen pydantic Settings; files near 300 lines. (The rest of the
contract: test_design_contract.py and test_design_contract_service.py.)"""
import ast
from pathlib import Path

import pytest

from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _kernel_files():
    """The modules with Triton kernels and their launchers (not triton_vectors.py: jit helpers only)."""
    return [p for p in sorted((REPO / "models" / "depthwise").glob("*.py"))
            if "@triton.jit" in (text := p.read_text()) and "\ndef _launch" in text]


def test_every_jit_module_is_a_kernel_file_or_helpers_the_kernel_files_import():
    jit = [p for p in sorted((REPO / "models" / "depthwise").glob("*.py")) if "@triton.jit" in p.read_text()]
    helpers = [p for p in jit if p not in _kernel_files()]
    assert [p.name for p in helpers] == ["triton_vectors.py"]
    assert all(not any(isinstance(n, ast.FunctionDef) and not n.decorator_list for n in ast.parse(p.read_text()).body)
               for p in helpers)                                   # jit helpers and nothing else
    users = [p.name for p in _kernel_files() if "from .triton_vectors import" in p.read_text()]
    assert users == ["triton_conv1d_strips.py", "triton_conv2d_nchw_strips.py"]


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in _kernel_files()])
def test_kernel_files_order_jit_kernels_then_launcher_then_public_function(path):
    fns = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
    jit = [any("jit" in ast.unparse(d) for d in f.decorator_list) for f in fns]
    first_plain = jit.index(False)
    assert all(jit[:first_plain]) and not any(jit[first_plain:]), [f.name for f in fns]
    assert any(f.name.startswith("_launch") for f in fns[first_plain:]) and not fns[-1].name.startswith("_")


def test_settings_is_one_frozen_pydantic_settings():
    from pydantic_settings import BaseSettings
    assert issubclass(Settings, BaseSettings) and Settings.model_config["frozen"]
    others = [f"{p.name}:{c.name}" for p in (REPO / "service").glob("*.py") if p.name != "settings.py"
              for c in ast.walk(ast.parse(p.read_text())) if isinstance(c, ast.ClassDef)
              and any(ast.unparse(b).endswith("BaseSettings") for b in c.bases)]
    assert not others, others


def test_files_stay_near_300_lines():
    """'Files under ~300 lines': ~ read as 10%."""
    long = {str(p.relative_to(REPO)): n for d in ("models", "service", "benchmarks", "tests", "deploy")
            for p in (REPO / d).rglob("*.py") if (n := len(p.read_text().splitlines())) > 330}
    assert not long, long
