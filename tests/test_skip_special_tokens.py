"""skip_special_tokens false (vLLM's; transformers' decode argument): special tokens' text is
written into the output. The tokenizers' decode against transformers' own on a tokenizer.json
and against the byte tokenizer's names; then the real lfm2-demo behind /v1/generate (JSON and
streamed), completions (logprob names and text offsets) and chat (logprob bytes), with a
logit_bias that makes every token an unused special id."""
import json

import pytest

from inprocess_app import real_lm_client
from models.lfm2.presets import PRESETS
from models.lfm2.tokenizer import ByteTokenizer, HFTokenizer
from service.routes_v2_generate import to_generate
from service.schemas import TritonGenerateRequest
from test_chat import _config, _tokenizer_dir

SPECIAL = 259                      # lfm2-demo: an unused special id, named <|special_259|>
NAME = "<|special_259|>"


def test_byte_tokenizer_writes_specials_by_name():
    tok = ByteTokenizer(PRESETS["lfm2-demo"])          # pad 256, bos 257, eos 258
    ids = [257, *b"Hi \xc3", 258, *b"\xa9!"]
    assert tok.decode(ids) == "Hi é!"                   # skipped, the character's bytes meet
    assert tok.decode(ids, skip_special_tokens=False) == "<|startoftext|>Hi \ufffd<|im_end|>\ufffd!"


def test_tokenizer_json_decode_equals_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = _tokenizer_dir(tmp_path)
    ours = HFTokenizer(path / "tokenizer.json", _config())
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
    ids = [1, *ours.encode("the quick fox", add_special_tokens=False), 2, 0]
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert "<|im_end|>" in ours.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="module")
def client():
    with real_lm_client(max_sequence_length=256, max_new_tokens=8) as client:
        yield client


FORCED = {"logit_bias": {str(SPECIAL): 100}, "ignore_eos": True}


@pytest.mark.parametrize("skip, text", [pytest.param(True, "", id="skipped"),
                                        pytest.param(False, NAME * 3, id="written")])
def test_generate_writes_specials_only_when_asked(client, skip, text):
    body = {"prompt": "hi", "max_new_tokens": 3, "skip_special_tokens": skip, **FORCED}
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["text"], r.json()["token_ids"]) == (text, [SPECIAL] * 3)
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert "".join(e.get("text", "") for e in events[:-1]) == text == events[-1]["text"]


def test_openai_logprobs_name_and_place_the_written_specials(client):
    args = {"max_tokens": 3, "skip_special_tokens": False, "logprobs": 1, **FORCED}
    r = client.post("/v1/completions", json={"prompt": "hi", **args})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == NAME * 3
    assert choice["logprobs"]["tokens"] == [NAME] * 3
    assert choice["logprobs"]["text_offset"] == [0, len(NAME), 2 * len(NAME)]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **args,
                                                  "logprobs": True, "top_logprobs": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == NAME * 3
    assert [t["bytes"] for t in choice["logprobs"]["content"]] == [list(NAME.encode())] * 3


def test_triton_generate_passes_skip_special_tokens_on():
    body = TritonGenerateRequest.model_validate({"text_input": "a", "sampling_parameters":
                                                 json.dumps({"skip_special_tokens": False})})
    assert to_generate(body, stream=False)[0].skip_special_tokens is False


def test_an_echoed_text_prompts_offsets_follow_the_text_as_sent(client):
    """echo puts a text prompt as sent before the completion: the bos encode() added has no text
    there, whatever skip_special_tokens says (its offsets counted `<|startoftext|>`, so `h` of
    "hi" was placed at 15, past the prompt). JSON and streamed alike."""
    body = {"prompt": "hi", "max_tokens": 2, "echo": True, "logprobs": 0, "skip_special_tokens": False, **FORCED}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    want = ["<|startoftext|>", "h", "i", NAME, NAME]
    assert (choice["text"], choice["logprobs"]["tokens"]) == ("hi" + NAME * 2, want)
    assert choice["logprobs"]["text_offset"] == [0, 0, 1, 2, 2 + len(NAME)]
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    streamed = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert sum((lp["text_offset"] for lp in streamed), []) == choice["logprobs"]["text_offset"]
