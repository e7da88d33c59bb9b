"""A structured output cannot take the server down: llguidance's compiler recurses once per link
of a `$ref` chain or of a chain of grammar rules, in native code, and on a thread's default
8 MiB stack ~1,000 chained $refs (a 68 KB schema) or ~5,000 chained Lark rules (113 KB)
overflowed it: SIGSEGV, the process gone with every request in flight. Constraints compile on
a thread with a stack sized for the largest one a server takes (models/lfm2/structured.py), and
a constraint over --max-grammar-chars is a 400 naming the field and the limit."""
import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("llguidance")

from error_bodies import error_message  # noqa: E402
from inprocess_app import real_lm_client  # noqa: E402

# Compiled in a child process: without the deep stack it dies of SIGSEGV, which would end pytest.
_COMPILE = textwrap.dedent("""
    import json, sys
    from models.lfm2.structured import compile_constraint, guidance_tokenizer
    from models.registry import build_model
    lm = build_model("lfm2", None, device="cpu", seed=0).lm
    guidance = guidance_tokenizer(lm.tokenizer, lm.config.vocab_size, (lm.config.eos_token_id,))
    kind, value = json.load(sys.stdin)
    c = compile_constraint(guidance, kind, value, lm.config.vocab_size)
    print("compiled", int(c.allowed("cpu").sum()))
""")


def _ref_chain(n):
    defs = {f"d{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}, "required": ["x"]}
            for i in range(n)}
    return {"$ref": "#/$defs/d0", "$defs": {**defs, f"d{n}": {"type": "integer"}}}


def _rule_chain(n):
    return "start: r0\n" + "\n".join(f'r{i}: "a" r{i + 1} | "b"' for i in range(n)) + f'\nr{n}: "c"'


@pytest.mark.parametrize("kind, value", [
    pytest.param("json", _ref_chain(1500), id="ref-chain-1500"),       # 8 MiB overflowed at ~1,000
    pytest.param("grammar", _rule_chain(7000), id="rule-chain-7000"),  # 8 MiB overflowed at ~5,000
])
def test_a_long_chain_compiles_instead_of_crashing(kind, value):
    proc = subprocess.run([sys.executable, "-c", _COMPILE], input=json.dumps([kind, value]), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("compiled"), (proc.returncode, proc.stderr[-2000:])
    assert int(proc.stdout.split()[1]) >= 1   # its first mask allows something: "{" or "a"/"b"


def test_the_library_generate_compiles_on_the_deep_stack_too():
    """LFM2ForCausalLM.generate(structured_outputs=...) from a worker thread (8 MiB stack):
    the same 7,000-rule chain killed the process there (models/lfm2/steering.py)."""
    code = textwrap.dedent("""
        import json, sys, threading, torch
        from models.registry import build_model
        lm = build_model("lfm2", None, device="cpu", seed=0).lm
        grammar = json.load(sys.stdin)
        out = []
        t = threading.Thread(target=lambda: out.append(lm.generate(
            torch.tensor([[1, 2]]), max_new_tokens=2, structured_outputs={"grammar": grammar})))
        t.start(); t.join()
        print("generated", len(out[0][0]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(_rule_chain(7000)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("generated"), (proc.returncode, proc.stderr[-2000:])


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=8, max_grammar_chars=1000) as client:
        yield client


@pytest.mark.parametrize("path, body, field", [
    pytest.param("/v1/completions", {"prompt": "x", "max_tokens": 4, "guided_regex": "a" * 1001}, "guided_regex",
                 id="completions-regex"),
    pytest.param("/v1/generate", {"prompt": "x", "max_new_tokens": 4, "structured_outputs": {"json": _ref_chain(30)}},
                 "structured_outputs", id="generate-schema-object"),
    pytest.param("/v1/generate", {"prompt": "x", "max_new_tokens": 4,
                                  "structured_outputs": {"choice": ["a" * 600, "b" * 401]}},
                 "structured_outputs", id="generate-choices"),
])
def test_a_constraint_over_the_limit_is_a_400_naming_it(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 400 and "the limit is 1000 (--max-grammar-chars)" in error_message(r), r.text
    assert field in error_message(r)
    if path == "/v1/completions":
        assert r.json()["error"]["param"] == field


def test_a_constraint_of_exactly_the_limit_is_taken(client):
    r = client.post("/v1/generate", json={"prompt": "x", "max_new_tokens": 4, "temperature": 0,
                                          "structured_outputs": {"regex": "a" * 1000}})
    assert r.status_code == 200 and r.json()["text"] == "aaaa", r.text
