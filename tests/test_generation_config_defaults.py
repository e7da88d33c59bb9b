"""A checkpoint's generation_config.json sampling fields as generate()'s defaults
(models/lfm2/generation_config.py), as transformers takes them: greedy tokens with the file's
repetition_penalty equal transformers' Lfm2ForCausalLM.generate reading the same directory; a
sampling call gets the tokens of the same call with the filled values spelled out; bad values
name the file and the field."""
import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.lfm2 import LFM2ForCausalLM  # noqa: E402
from models.lfm2.generation import with_model_defaults  # noqa: E402
from test_lfm2 import make_hf  # noqa: E402

FILE_SAMPLING = {"do_sample": True, "temperature": 0.3, "min_p": 0.15, "repetition_penalty": 1.05}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_gen_defaults")
    make_hf(path, seed=31)
    return path


def _with_generation_config(src, dst, **fields):
    shutil.copytree(src, dst)
    (dst / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2,
                                                           "pad_token_id": 0, **fields}))
    return dst


@pytest.mark.parametrize("defaults, call, want", [
    pytest.param({}, {}, (None, None, None, None, None, None), id="nothing-anywhere"),
    pytest.param({}, dict(do_sample=True), (True, 1.0, 50, 1.0, None, 1.0), id="do_sample-transformers-defaults"),
    pytest.param(FILE_SAMPLING, {}, (True, 0.3, 50, 1.0, 0.15, 1.05), id="file-samples"),
    pytest.param(FILE_SAMPLING, dict(temperature=0.7), (None, 0.7, 50, 1.0, 0.15, 1.05), id="temperature-call"),
    pytest.param({"min_p": 0.1}, dict(temperature=0.7), (None, 0.7, None, None, 0.1, None), id="temperature-call-no-do_sample"),
    pytest.param(FILE_SAMPLING, dict(do_sample=False), (False, None, None, None, 0.15, 1.05), id="greedy-call"),
    pytest.param(FILE_SAMPLING, dict(top_k=5, min_p=0.0, repetition_penalty=1.0), (True, 0.3, 5, 1.0, 0.0, 1.0),
                 id="call-wins"),
    pytest.param({"temperature": 0.6, "top_p": 0.9}, {}, (None, None, None, 0.9, None, None), id="no-do_sample-greedy"),
    pytest.param({"do_sample": True, "top_k": 0}, {}, (True, 1.0, None, 1.0, None, 1.0), id="top_k-0-off"),
])
def test_what_the_call_leaves_out_comes_from_the_file(defaults, call, want):
    args = {k: call.get(k) for k in ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")}
    assert with_model_defaults(defaults, **args) == want


def test_greedy_with_the_files_repetition_penalty_equals_transformers(checkpoint, tmp_path):
    path = _with_generation_config(checkpoint, tmp_path / "gen", repetition_penalty=1.4)
    ref = transformers.Lfm2ForCausalLM.from_pretrained(path).eval()
    ours = LFM2ForCausalLM.from_pretrained(path)
    assert ours.generation_defaults == {"repetition_penalty": 1.4}
    prompt = [[1, 5, 9, 5, 9, 5, 9]]
    with torch.no_grad():
        want = ref.generate(torch.tensor(prompt), max_new_tokens=10, eos_token_id=None)[0, 7:].tolist()
    assert ours.generate(prompt, max_new_tokens=10, eos_token_id=None, stop_token_ids=()) == [want]
    plain = LFM2ForCausalLM.from_pretrained(checkpoint)
    assert plain.generation_defaults == {} and plain.generate(prompt, max_new_tokens=10) != [want]


def test_a_sampling_file_samples_as_the_spelled_out_call(checkpoint, tmp_path):
    path = _with_generation_config(checkpoint, tmp_path / "gen", **FILE_SAMPLING)
    ours, plain = LFM2ForCausalLM.from_pretrained(path), LFM2ForCausalLM.from_pretrained(checkpoint)
    prompts = [[1, 5, 9], [1, 7]]
    got = ours.generate(prompts, max_new_tokens=8, seed=4)
    assert got == plain.generate(prompts, max_new_tokens=8, seed=4, temperature=0.3, top_k=50, min_p=0.15,
                                 repetition_penalty=1.05)
    assert ours.generate(prompts, max_new_tokens=8, do_sample=False) == plain.generate(
        prompts, max_new_tokens=8, repetition_penalty=1.05)


@pytest.mark.parametrize("fields, match", [
    pytest.param(dict(temperature=-1), "temperature must be a number >= 0", id="temperature"),
    pytest.param(dict(top_k=2.5), "top_k must be an int", id="top_k"),
    pytest.param(dict(top_p=0), "top_p must be a number in", id="top_p"),
    pytest.param(dict(min_p=2), "min_p must be a number in", id="min_p"),
    pytest.param(dict(repetition_penalty=0), "repetition_penalty must be a number in", id="repetition_penalty"),
    pytest.param(dict(do_sample="yes"), "do_sample must be true or false", id="do_sample"),
])
def test_bad_sampling_fields_name_the_file(checkpoint, tmp_path, fields, match):
    path = _with_generation_config(checkpoint, tmp_path / "gen", **fields)
    with pytest.raises(ValueError, match=r"generation_config\.json: " + match):
        LFM2ForCausalLM.from_pretrained(path)


def test_a_file_that_is_no_object_names_the_file(checkpoint, tmp_path):
    path = tmp_path / "gen"
    shutil.copytree(checkpoint, path)
    (path / "generation_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"generation_config\.json: expected a JSON object"):
        LFM2ForCausalLM.from_pretrained(path)
