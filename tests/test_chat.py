"""Chat templates (models/lfm2/chat.py): a checkpoint's template renders and tokenizes exactly
as transformers' apply_chat_template does on the same tokenizer.json, where templates come
from, the demo's byte-level ChatML, and template errors as ValueError."""
import dataclasses
import json
import random

import pytest

from models.lfm2 import LFM2ForCausalLM
from models.lfm2.chat import load_chat_template, render_chat
from models.lfm2.config import PRESETS
from models.lfm2.tokenizer import ByteTokenizer, HFTokenizer

SPECIALS = ["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"]   # ids 0..3
# A ChatML template in the style of LFM2's: an optional system turn, non-string content as
# JSON, a role check through raise_exception, loop controls, bos text first.
TEMPLATE = """{{- bos_token -}}
{%- set ns = namespace(system="") -%}
{%- if messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] -%}{%- endif -%}
{%- if ns.system -%}{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}{%- endif -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{%- continue -%}{%- endif -%}
  {%- if message['role'] not in ['user', 'assistant'] -%}{{- raise_exception('unknown role ' + message['role']) -}}{%- endif -%}
  {%- set content = message['content'] if message['content'] is string else message['content'] | tojson -%}
  {{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""
WORDS = "the quick brown fox jumps over a lazy dog déjà vu naïve café ✓ 42 tokens, chat; templates!".split()


def _tokenizer_dir(tmp_path, template_in="config"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"bos_token": "<|startoftext|>", "eos_token": {"content": "<|im_end|>"}, "pad_token": "<|pad|>"}
    if template_in == "config":
        config["chat_template"] = TEMPLATE
    elif template_in == "named":
        config["chat_template"] = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": TEMPLATE}]
    else:
        (tmp_path / "chat_template.jinja").write_text(TEMPLATE)
        config["chat_template"] = "this one is ignored: the .jinja file wins"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def _config():
    return dataclasses.replace(PRESETS["lfm2-demo"], vocab_size=400, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _conversation(rng):
    turns = [{"role": "system", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))}] \
        if rng.random() < 0.5 else []
    for i in range(rng.randint(1, 4)):
        role = "user" if i % 2 == 0 else "assistant"
        turns.append({"role": role, "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))})
    return turns


@pytest.mark.parametrize("template_in", [pytest.param(w, id=w) for w in ("config", "named", "jinja_file")])
def test_matches_transformers_apply_chat_template(tmp_path, template_in):
    transformers = pytest.importorskip("transformers")
    path = _tokenizer_dir(tmp_path, template_in)
    ours = HFTokenizer(path / "tokenizer.json", _config())
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<|startoftext|>",
                                               eos_token="<|im_end|>", pad_token="<|pad|>")
    ref.chat_template = TEMPLATE
    rng = random.Random()
    for _ in range(20):
        messages = _conversation(rng)
        for gen in (True, False):
            want = ref.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True)
            want = list(want["input_ids"] if hasattr(want, "keys") else want)
            assert ours.apply_chat_template(messages, add_generation_prompt=gen) == want, messages
            assert want[0] == 1    # the bos id, from the template's bos text


def test_loaded_checkpoint_carries_its_template(tmp_path):
    path = _tokenizer_dir(tmp_path, "jinja_file")
    assert load_chat_template(path) == TEMPLATE
    assert load_chat_template(tmp_path / "elsewhere") is None
    tok = HFTokenizer(path / "tokenizer.json", _config())
    text = tok.decode(tok.apply_chat_template([{"role": "user", "content": "a lazy dog"}]))
    assert text.endswith("user\na lazy dog\nassistant\n")   # specials skipped by decode


def test_template_errors_are_value_errors(tmp_path):
    tok = HFTokenizer(_tokenizer_dir(tmp_path) / "tokenizer.json", _config())
    with pytest.raises(ValueError, match="chat template: unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="non-empty list"):
        tok.apply_chat_template([])
    with pytest.raises(ValueError, match="chat template"):
        render_chat("{% for %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="chat template"):   # the sandbox: no attribute escapes
        render_chat("{{ messages.__class__.__mro__ }}", [{"role": "user", "content": "x"}])
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_byte_tokenizer_speaks_chatml():
    tok = ByteTokenizer(PRESETS["lfm2-demo"])
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    ids = tok.apply_chat_template(messages)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids) == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhéllo<|im_end|>\n"
                               "<|im_start|>assistant\nhi<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n"
                               "<|im_start|>assistant\n")
    assert not tok.decode(tok.apply_chat_template(messages, add_generation_prompt=False)).endswith("assistant\n")
    assert LFM2ForCausalLM.from_preset("lfm2-demo").tokenizer.apply_chat_template(messages) == ids


def test_filters_and_loop_controls_render_as_transformers(tmp_path):
    """tojson (unicode kept, key order kept), break/continue, trim/lstrip: the environment's
    details, on a template without whitespace control."""
    transformers = pytest.importorskip("transformers")
    path = _tokenizer_dir(tmp_path)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<|startoftext|>",
                                               eos_token="<|im_end|>")
    template = ("{% for m in messages %}\n"
                "  {% if loop.index > 3 %}{% break %}{% endif %}\n"
                "  {% if m.role == 'system' %}{% continue %}{% endif %}\n"
                "{{ m | tojson }} {{ m.content | tojson(indent=2) }}\n"
                "{% endfor %}{{ eos_token }}")
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "déjà \"vu\"\n✓"},
                {"role": "assistant", "content": "naïve"}, {"role": "user", "content": "cut by break"}]
    want = ref.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=False)
    assert render_chat(template, messages, eos_token="<|im_end|>", add_generation_prompt=False) == want


def test_token_bytes_join_to_the_texts_utf8(tmp_path):
    """token_bytes: each token's raw bytes, so a character split over tokens (each decoding to
    U+FFFD alone) is whole again when they are joined, as OpenAI's logprobs `bytes` promise."""
    hf = HFTokenizer(_tokenizer_dir(tmp_path) / "tokenizer.json", _config())
    byte = ByteTokenizer(PRESETS["lfm2-demo"])
    text = "déjà vu ✓ naïve café ✓✓ 😀"
    for tok in (hf, byte):
        ids = tok.encode(text)
        split = [i for i in ids if "\ufffd" in tok.decode([i])]
        assert split, "the text must split a character over tokens"
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert hf.token_bytes(hf.bos_token_id) == b"" == byte.token_bytes(byte.bos_token_id)   # specials: no text
