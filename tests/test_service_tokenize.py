"""vLLM's tokenizer routes (service/routes_tokenize.py), in-process, against references that do
not go through the route: on the real lfm2-demo, the UTF-8 bytes of fresh random text (non-ASCII
too) and the ChatML it is chatted in, GPT-2's byte alphabet (transformers' bytes_to_unicode in a
`tokenizers` byte-level BPE) for token_strs, and the prompt /v1/chat/completions uses: its
usage.prompt_tokens, and its greedy logprobs, equal to /v1/completions' on the tokenized ids
only if those are the chat route's ids. On a tokenizer.json checkpoint, transformers' own
encode, apply_chat_template, convert_ids_to_tokens and decode (what vLLM calls). Then every
error: a 4xx whose message names what was expected."""
import os
import random
import re

import pytest
from fastapi.testclient import TestClient

from error_bodies import error_message
from inprocess_app import real_lm_client
from server_process import client_ready
from service.app import create_app
from service.errors import is_openai_path
from service.settings import Settings
from service.testing import fake_hooks, fake_models

SEED = int.from_bytes(os.urandom(4), "little")   # fresh text each run; failures print it
ALPHABET = "abcdefghij KLMNOP 0123,.;!?\n\t\"'{}<|>-éàüßøñ€—“”✓中文字日本語👍🏽🦄"
BOS, EOS = 257, 258                               # lfm2-demo's byte tokenizer: pad 256, bos 257, eos 258
MAX_LEN, MAX_CHARS, MAX_BODY = 256, 3000, 2**16
HF_POSITIONS = 256                                # the tiny checkpoint's max_position_embeddings


def _text(rng, n=None):
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60) if n is None else n))


def _chatml(messages, generation_prompt=True):
    """lfm2-demo's chat prompt, written out: ChatML turns, the assistant's opened (bos is an id)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


@pytest.fixture(scope="module")
def demo():
    with real_lm_client(max_sequence_length=MAX_LEN, max_new_tokens=8, max_prompt_chars=MAX_CHARS,
                        max_body_bytes=MAX_BODY) as client:
        yield client


def _ok(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 200, (SEED, body, r.text)
    return r.json()


# ---------------------------------------------------------------- lfm2-demo's byte tokenizer

def test_completion_form_is_the_utf8_bytes_after_bos(demo):
    tok = demo.app.state.service.runtimes["lfm2"].served.lm.tokenizer   # the served tokenizer itself
    rng = random.Random(SEED)
    for _ in range(20):
        text = _text(rng)
        got = _ok(demo, "/tokenize", {"model": "lfm2", "prompt": text})
        assert got == {"count": len(text.encode()) + 1, "max_model_len": MAX_LEN,
                       "tokens": [BOS, *text.encode()], "token_strs": None} and got["tokens"] == tok.encode(text), \
            (SEED, text)
        bare = _ok(demo, "/tokenize", {"prompt": text, "add_special_tokens": False})
        assert bare["tokens"] == list(text.encode()) and bare["count"] == len(bare["tokens"]), (SEED, text)


def test_token_strs_spell_bytes_as_a_byte_level_vocabulary_does(demo):
    """A `tokenizers` byte-level BPE whose vocabulary is the 256 bytes in GPT-2's alphabet is the
    byte tokenizer exported: its encode gives the same ids and its pieces are the token_strs."""
    convert = pytest.importorskip("transformers.convert_slow_tokenizer")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    spelled = convert.bytes_to_unicode()                  # byte -> its character
    ref = Tokenizer(models.BPE(vocab={spelled[b]: b for b in range(256)}, merges=[]))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.decoder = decoders.ByteLevel()
    text = _text(random.Random(SEED + 2), 80)
    got = _ok(demo, "/tokenize", {"prompt": text, "return_token_strs": True})
    assert got["tokens"][1:] == ref.encode(text).ids, (SEED, text)
    assert got["token_strs"] == ["<|startoftext|>", *(ref.id_to_token(i) for i in got["tokens"][1:])], (SEED, text)
    assert _ok(demo, "/tokenize", {"prompt": "a", "return_token_strs": None})["token_strs"] is None   # null: the default


def test_detokenize_round_trips_and_writes_specials_by_name(demo):
    rng = random.Random(SEED + 3)
    for _ in range(10):
        text = _text(rng)
        bare = _ok(demo, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
        assert _ok(demo, "/detokenize", {"tokens": bare}) == {"prompt": text}, (SEED, text)
        with_bos = _ok(demo, "/tokenize", {"prompt": text})["tokens"]   # vLLM decodes specials as text
        assert _ok(demo, "/detokenize", {"model": "lfm2", "tokens": with_bos})["prompt"] == "<|startoftext|>" + text
    cut = [*"✓".encode()[:2], EOS, 0x41]                  # half a character, then eos
    assert _ok(demo, "/detokenize", {"tokens": cut})["prompt"] == "\ufffd<|im_end|>A"
    assert _ok(demo, "/detokenize", {"tokens": []})["prompt"] == ""


def _conversation(rng):
    turns = [{"role": "system", "content": _text(rng, 12)}] if rng.random() < 0.5 else []
    return turns + [{"role": "user", "content": _text(rng, 20)}]


def test_chat_form_is_the_chatml_the_chat_route_renders(demo):
    rng = random.Random(SEED + 4)
    for _ in range(10):
        messages = _conversation(rng)
        for generation_prompt in (True, False):
            got = _ok(demo, "/tokenize", {"messages": messages, "add_generation_prompt": generation_prompt})
            assert got["tokens"] == [BOS, *_chatml(messages, generation_prompt).encode()], (SEED, messages)
    developer = [{"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]}]
    assert _ok(demo, "/tokenize", {"messages": developer})["tokens"] == \
        [BOS, *_chatml([{"role": "system", "content": "be brief"}]).encode()]   # the chat route's message forms


def test_chat_form_ids_are_the_chat_completions_prompt(demo):
    """usage.prompt_tokens is the count; the tokens given to /v1/completions as ids score and
    generate exactly as /v1/chat/completions does on the messages (greedy, logprobs)."""
    messages = _conversation(random.Random(SEED + 5))
    ids = _ok(demo, "/tokenize", {"messages": messages})["tokens"]
    common = {"max_tokens": 4, "temperature": 0, "ignore_eos": True}
    chat = _ok(demo, "/v1/chat/completions", {"messages": messages, "logprobs": True, **common})
    completion = _ok(demo, "/v1/completions", {"prompt": ids, "logprobs": 0, **common})
    assert chat["usage"]["prompt_tokens"] == len(ids) == completion["usage"]["prompt_tokens"], (SEED, messages)
    chat_lps = [t["logprob"] for t in chat["choices"][0]["logprobs"]["content"]]
    assert chat_lps == pytest.approx(completion["choices"][0]["logprobs"]["token_logprobs"], abs=1e-4), (SEED, messages)
    assert chat["choices"][0]["message"]["content"] == completion["choices"][0]["text"]


def test_a_prompt_past_max_model_len_is_counted_not_refused(demo):
    """As vLLM: /tokenize says how long it is; generation is what refuses it."""
    text = "x" * (MAX_LEN + 40)
    got = _ok(demo, "/tokenize", {"prompt": text})
    assert got["count"] == MAX_LEN + 41 > got["max_model_len"] == MAX_LEN
    r = demo.post("/v1/completions", json={"prompt": got["tokens"], "max_tokens": 1})
    assert r.status_code == 400 and f"exceeds {MAX_LEN} tokens" in error_message(r), r.text


# ---------------------------------------------------------------- errors

def _refused(client, path, body, status, *words):
    r = client.post(path, json=body)
    assert r.status_code == status, (body, r.status_code, r.text)
    message = error_message(r)
    assert all(w in message for w in words), (words, message)


@pytest.mark.parametrize("path, body", [pytest.param("/tokenize", {"prompt": "a"}, id="tokenize"),
                                        pytest.param("/detokenize", {"tokens": [1]}, id="detokenize")])
def test_another_model_is_the_openai_routes_404(demo, path, body):
    _refused(demo, path, {**body, "model": "gpt-4"}, 404, "'gpt-4'", "'lfm2'", "GET /v1/models")
    _refused(demo, path, {**body, "model": "m" * 5000}, 404, "(5000 characters)")   # echoed short


@pytest.mark.parametrize("body", [pytest.param({}, id="neither"), pytest.param([1, 2], id="not-an-object"),
                                  pytest.param({"prompt": "a", "messages": [{"role": "user", "content": "a"}]},
                                               id="both")])
def test_a_body_of_neither_form_names_both(demo, body):
    _refused(demo, "/tokenize", body, 400, "exactly one of 'prompt'", "'messages'")


CHAT = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("field, value, named", [
    pytest.param("continue_final_message", True, "continue_final_message", id="continue_final_message"),
    pytest.param("add_special_tokens", True, "add_special_tokens", id="add_special_tokens"),
    pytest.param("chat_template", "{{ messages }}", "chat_template", id="chat_template"),
    pytest.param("chat_template_kwargs", {"enable_thinking": False}, "chat_template_kwargs", id="chat_template_kwargs"),
    pytest.param("tools", [{"type": "function", "function": {"name": "f"}}], "tools", id="tools"),
    pytest.param("mm_processor_kwargs", {"a": 1}, "mm_processor_kwargs", id="mm_processor_kwargs")])
def test_chat_fields_that_would_change_the_ids_are_refused(demo, field, value, named):
    """A 400 naming the field, in OpenAI's `param` too (it was null); several leave it null."""
    _refused(demo, "/tokenize", {"messages": CHAT, field: value}, 400, "unsupported", named, "/v1/chat/completions")
    assert demo.post("/tokenize", json={"messages": CHAT, field: value}).json()["error"]["param"] == named
    both = demo.post("/tokenize", json={"messages": CHAT, field: value, "media_io_kwargs": {"a": 1}})
    assert both.status_code == 400 and both.json()["error"]["param"] is None, both.text


def test_chat_fields_at_their_no_op_values_are_accepted(demo):
    want = _ok(demo, "/tokenize", {"messages": CHAT})
    assert _ok(demo, "/tokenize", {"messages": CHAT, "continue_final_message": False, "add_special_tokens": False,
                                   "chat_template": None, "chat_template_kwargs": {}, "tools": [],
                                   "mm_processor_kwargs": None}) == want


@pytest.mark.parametrize("path, body, status, words", [
    pytest.param("/tokenize", {"prompt": "a", "temperature": 0}, 400, ("temperature", "Extra inputs"), id="extra-field"),
    pytest.param("/tokenize", {"prompt": 5}, 400, ("prompt", "valid string"), id="prompt-not-text"),
    pytest.param("/tokenize", {"prompt": "a", "add_special_tokens": "maybe"}, 400, ("add_special_tokens",),
                 id="flag-not-bool"),
    pytest.param("/tokenize", {"messages": []}, 400, ("messages", "at least 1"), id="no-messages"),
    pytest.param("/tokenize", {"messages": [{"role": "tool", "content": "x"}]}, 400, ("messages[0]", "tool"),
                 id="tool-message"),
    pytest.param("/tokenize", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
                 ("messages[0].content[0]", "text"), id="image-part"),
    pytest.param("/tokenize", {"prompt": "x" * (MAX_CHARS + 1)}, 400, ("prompt", "DWSERVE_MAX_PROMPT_CHARS"),
                 id="prompt-chars"),
    pytest.param("/tokenize", {"messages": [{"role": "user", "content": "x" * (MAX_CHARS + 1)}]}, 400,
                 ("messages", "DWSERVE_MAX_PROMPT_CHARS"), id="chat-chars"),
    pytest.param("/tokenize", {"prompt": "x" * MAX_BODY}, 413, (str(MAX_BODY),), id="body-limit"),
    pytest.param("/detokenize", {"tokens": [1, 264]}, 400, ("[0, 264)", "[264]"), id="id-past-vocab"),
    pytest.param("/detokenize", {"tokens": [-1]}, 400, ("[0, 264)", "[-1]"), id="negative-id"),
    pytest.param("/detokenize", {"tokens": [True]}, 400, ("integers",), id="bool-id"),
    pytest.param("/detokenize", {"tokens": [1.5]}, 400, ("tokens",), id="float-id"),
    pytest.param("/detokenize", {}, 400, ("tokens", "required"), id="no-tokens"),
])
def test_bad_input_is_a_4xx_naming_what_was_expected(demo, path, body, status, words):
    _refused(demo, path, body, status, *words)


def test_prompt_chars_are_held_as_generation_holds_them(demo):
    long = "x" * (MAX_CHARS + 1)
    for path, body in (("/tokenize", {"prompt": long}), ("/v1/completions", {"prompt": long, "max_tokens": 1})):
        _refused(demo, path, body, 400, f"{MAX_CHARS + 1} characters", f"limit is {MAX_CHARS}")


def test_a_lone_surrogate_is_a_400(demo):
    r = demo.post("/tokenize", content=b'{"prompt": "a\\ud800"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "surrogate" in error_message(r), r.text


def test_not_metered_as_inference(demo):
    """As /v1/models: an access line, no dwserve_requests_total series, no X-Depthwise-Impl."""
    def served_requests():
        text = demo.get("/metrics").text
        return sum(float(v) for v in re.findall(r"^dwserve_requests_total\{[^}]*\} (\S+)$", text, re.M))
    before = served_requests()
    r = demo.post("/tokenize", json={"prompt": "a"})
    assert r.status_code == 200 and "x-depthwise-impl" not in r.headers and "x-request-id" in r.headers
    assert demo.post("/detokenize", json={"tokens": [65]}).status_code == 200
    assert served_requests() == before


@pytest.mark.xfail(not is_openai_path("/tokenize") or not is_openai_path("/detokenize"), strict=True,
                   reason="service/errors.py's _OPENAI_PATHS lacks /tokenize and /detokenize")
def test_errors_are_in_openai_shape(demo):
    for path, body in (("/tokenize", {"prompt": "a", "model": "gpt-4"}), ("/detokenize", {"tokens": [999]})):
        error = demo.post(path, json=body).json()["error"]
        assert isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error), error


def test_a_server_without_lfm2_says_so():
    models = {"mobilenet_v2": fake_models()["mobilenet_v2"]}
    app = create_app(Settings(models=("mobilenet_v2",), warmup=False), models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        _refused(client, "/tokenize", {"prompt": "a"}, 404, "lfm2", "DWSERVE_MODELS")
        _refused(client, "/detokenize", {"tokens": [1]}, 404, "lfm2", "DWSERVE_MODELS")


# ---------------------------------------------------------------- a tokenizer.json checkpoint

@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny random LFM2 with test_chat's byte-level BPE tokenizer.json and ChatML template
    (pad 0, bos 1, eos 2), served; and transformers' tokenizer over the same files."""
    transformers = pytest.importorskip("transformers")
    from models.registry import build_model
    from test_chat import TEMPLATE, _tokenizer_dir
    from test_lfm2 import make_hf
    path = tmp_path_factory.mktemp("lfm2_tokenizer_json")
    make_hf(path, seed=7, vocab_size=400)
    _tokenizer_dir(path)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<|startoftext|>",
                                               eos_token="<|im_end|>", pad_token="<|pad|>")
    ref.chat_template = TEMPLATE
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=4 * HF_POSITIONS, max_new_tokens=4),
                     models={"lfm2": build_model("lfm2", str(path), device="cpu")})
    with TestClient(app) as client:
        yield client_ready(client, timeout=60), ref


def test_tokenizer_json_as_transformers_tokenizes_and_decodes(hf):
    client, ref = hf
    rng = random.Random(SEED + 6)
    words = "the quick brown fox jumps over a lazy dog déjà vu naïve café ✓ 42 tokens".split()
    for _ in range(10):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + _text(rng, 4)
        for special in (True, False):
            got = _ok(client, "/tokenize", {"prompt": text, "add_special_tokens": special, "return_token_strs": True})
            want = ref(text, add_special_tokens=special)["input_ids"]
            assert (got["tokens"], got["count"], got["max_model_len"]) == (want, len(want), HF_POSITIONS), (SEED, text)
            assert got["token_strs"] == ref.convert_ids_to_tokens(want), (SEED, text)
        ids = [1, *ref(text, add_special_tokens=False)["input_ids"], 2, 0]   # bos, text, eos, pad
        assert _ok(client, "/detokenize", {"tokens": ids})["prompt"] == ref.decode(ids), (SEED, text)


def test_tokenizer_json_chat_as_transformers_and_the_chat_route(hf):
    client, ref = hf
    rng = random.Random(SEED + 7)
    for _ in range(5):
        messages = [{"role": "system", "content": _text(rng, 8)}, {"role": "user", "content": _text(rng, 10)}]
        for generation_prompt in (True, False):
            got = _ok(client, "/tokenize", {"messages": messages, "add_generation_prompt": generation_prompt})
            want = ref.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
            want = list(want["input_ids"] if hasattr(want, "keys") else want)
            assert got["tokens"] == want and got["tokens"][0] == 1, (SEED, messages)
        chat = _ok(client, "/v1/chat/completions", {"messages": messages, "max_tokens": 1})
        assert chat["usage"]["prompt_tokens"] == _ok(client, "/tokenize", {"messages": messages})["count"]


def test_a_checkpoint_without_a_tokenizer_says_so(tmp_path_factory):
    pytest.importorskip("transformers")
    from models.registry import build_model
    from test_lfm2 import make_hf
    path = tmp_path_factory.mktemp("lfm2_no_tokenizer")
    make_hf(path, seed=8)
    app = create_app(Settings(models=("lfm2",), warmup=False, max_sequence_length=64, max_new_tokens=4),
                     models={"lfm2": build_model("lfm2", str(path), device="cpu")})
    with TestClient(app) as client:
        client_ready(client, timeout=60)
        _refused(client, "/tokenize", {"prompt": "a"}, 400, "no tokenizer", "tokenizer.json", "input_ids")
        _refused(client, "/detokenize", {"tokens": [1]}, 400, "no tokenizer", "tokenizer.json")


def test_model_cards_say_max_model_len_as_tokenize_does(demo):
    """vLLM's model cards carry max_model_len (benchmark clients read it there); it is the
    sequence length /tokenize reports and generation holds to."""
    listed = demo.get("/v1/models").json()["data"]
    one = demo.get("/v1/models/lfm2").json()
    told = demo.post("/tokenize", json={"prompt": "a"}).json()["max_model_len"]
    assert [c["max_model_len"] for c in listed] == [one["max_model_len"]] == [told] == [MAX_LEN]
