"""vLLM's tokenizer routes, `POST /tokenize` and `POST /detokenize`, with vLLM's request and
reply shapes, so a client or load generator counts and builds the served model's token ids
without a copy of its tokenizer (lfm2-demo's byte tokenizer exists nowhere else).

- /tokenize, completion form: `prompt` -> the ids /v1/generate and /v1/completions make of it
  (add_special_tokens, default true: the bos id first, as generation encodes a text prompt).
- /tokenize, chat form: `messages` -> the ids /v1/chat/completions prompts with: the same
  message checks (ChatCompletionRequest.to_messages) and the same call of the model's chat
  template (tokenizer.apply_chat_template); add_generation_prompt false leaves the assistant's
  turn unopened. vLLM's fields that would change the ids in a way dwserve's chat route never
  does (continue_final_message, add_special_tokens true, a request's chat_template or
  chat_template_kwargs, tools, processor kwargs) are a 400 naming them, not ignored.
- Reply `{"count", "max_model_len", "tokens", "token_strs"}`; max_model_len is the most tokens
  (prompt + generated) a generation may hold: the generate handler's max_length. As vLLM does,
  a prompt past it is counted, not refused: this is how a client learns how much to cut. The
  prompt's characters are held to DWSERVE_MAX_PROMPT_CHARS, as generation holds them.
- token_strs (return_token_strs): each token as the vocabulary spells it, vLLM's
  convert_ids_to_tokens: a tokenizer.json's pieces (`Ġfox`, `<|im_end|>`); the byte tokenizer
  has no vocabulary file, so its bytes are spelled as a byte-level BPE vocabulary spells them
  (GPT-2's alphabet: `Ġ` for a space) and its special ids by name (`<|startoftext|>`).
- /detokenize: `tokens` -> `{"prompt"}`, special tokens written by name (vLLM decodes with
  transformers' default, skip_special_tokens false). An id outside [0, vocab_size) is a 400.

Neither route runs the model: they are not metered inference routes (the guard counts them
as it counts /v1/models: an access line, no dwserve_requests_total series), and they answer
while generations queue. Bodies go through the guard's limits like every route's.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from models.lfm2.tokenizer import N_BYTES, ByteTokenizer, HFTokenizer, byte_level_bytes

from .errors import FieldError, ServiceError, is_openai_path, model_not_found
from .openai_common import token_name
from .routes_openai_chat import chat_prompt_ids
from .routes_v1 import ERROR_RESPONSES
from .schema_types import Text, TokenId
from .schemas_openai import ChatCompletionRequest, Messages
from .schemas_openai_replies import OPENAI_ERROR_RESPONSES

router = APIRouter(tags=["tokenizer"])
# Errors come in OpenAI's shape where errors.is_openai_path says so for these paths. No 401:
# the guard asks a bearer token of metered inference routes only (vLLM: of /v1 routes only).
_ERRORS = {code: response for code, response in
           (OPENAI_ERROR_RESPONSES if is_openai_path("/tokenize") else ERROR_RESPONSES).items() if code != 401}


class _TokenizeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="the served language model (GET /v1/models)")
    return_token_strs: Optional[bool] = Field(False, description="also each token as the vocabulary spells it")


class TokenizeCompletionRequest(_TokenizeBase):
    prompt: Text
    add_special_tokens: bool = Field(True, description="the bos token first, as generation encodes a prompt")


class TokenizeChatRequest(_TokenizeBase):
    messages: Messages
    add_generation_prompt: bool = Field(True, description="open the assistant's turn, as /v1/chat/completions does")
    # vLLM's, accepted at their no-op values only (unsupported() names the others)
    continue_final_message: bool = False
    add_special_tokens: bool = Field(False, description="true is unsupported: the chat template writes them")
    chat_template: Optional[str] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None
    mm_processor_kwargs: Optional[dict[str, Any]] = None
    media_io_kwargs: Optional[dict[str, Any]] = None
    tools: Optional[list[dict[str, Any]]] = None

    def unsupported(self) -> list[str]:
        return [name for name, ok in (
            ("continue_final_message (the chat route always closes the last message's turn)",
             not self.continue_final_message),
            ("add_special_tokens (the chat template writes the special tokens)", not self.add_special_tokens),
            ("chat_template (the model's own template renders every chat)", self.chat_template is None),
            ("chat_template_kwargs (the template gets messages and add_generation_prompt only)",
             not self.chat_template_kwargs),
            ("mm_processor_kwargs", not self.mm_processor_kwargs), ("media_io_kwargs", not self.media_io_kwargs),
            ("tools", not self.tools)) if not ok]


def _form(body: Any) -> Optional[str]:
    """Which of vLLM's two forms a body is: one with `messages` is a chat, with `prompt` a completion."""
    if not isinstance(body, dict) or ("prompt" in body) == ("messages" in body):
        return None
    return "chat-form" if "messages" in body else "completion-form"   # errors.UNION_TAGS


TokenizeRequest = Annotated[
    Union[Annotated[TokenizeCompletionRequest, Tag("completion-form")],
          Annotated[TokenizeChatRequest, Tag("chat-form")]],
    Discriminator(_form, custom_error_type="tokenize_form", custom_error_message=(
        "expected exactly one of 'prompt' (text: the completion form) or 'messages' (a chat: the chat form)"))]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: Optional[list[str]] = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="the served language model (GET /v1/models)")
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str


def _generate_handler(request: Request, model: Optional[str]):
    """The language model's generate handler with a tokenizer: 404 when no language model is
    served or `model` names another one, 503 while it loads, 400 when it has no tokenizer."""
    svc = request.app.state.service
    name = svc.generate_model
    if name is None:
        raise ServiceError(404, f"{request.url.path} needs the lfm2 model's tokenizer; this server does not "
                                "serve lfm2 (DWSERVE_MODELS)")
    if model is not None and model != name:   # the OpenAI routes' 404 (openai_common.start)
        raise model_not_found(model, name)
    svc.runtime(name)   # 503 while loading
    handler = svc.generate
    if handler.tokenizer is None:
        raise ValueError(f"model {name!r} has no tokenizer (no tokenizer.json beside its config.json), so "
                         f"{request.url.path} cannot work: it serves token ids only (/v1/generate's input_ids)")
    return handler


def _check_chars(chars: int, where: str, limit: int) -> None:
    if chars > limit:
        raise ValueError(f"{where}: {chars} characters; the limit is {limit} (DWSERVE_MAX_PROMPT_CHARS)")


def _chat_ids(body: TokenizeChatRequest, handler) -> list[int]:
    """The messages as /v1/chat/completions turns them into a prompt (the same checks and call)."""
    messages = ChatCompletionRequest.model_construct(messages=body.messages).to_messages()
    return chat_prompt_ids(handler, messages, body.add_generation_prompt)


@lru_cache(maxsize=1)
def _byte_spellings() -> tuple[str, ...]:
    """Byte b -> the character a byte-level BPE vocabulary spells it with (GPT-2's bytes_to_unicode)."""
    return tuple(ch for ch, _ in sorted(byte_level_bytes().items(), key=lambda item: item[1]))


def token_strs(tokenizer, ids: list[int]) -> list[str]:
    """Each id as the vocabulary spells it (vLLM's convert_ids_to_tokens)."""
    if isinstance(tokenizer, ByteTokenizer):
        spell = _byte_spellings()
        return [spell[i] if 0 <= i < N_BYTES else tokenizer.special_token_name(i) for i in ids]
    if isinstance(tokenizer, HFTokenizer):   # its special_token_name is the vocabulary's id_to_token, any id
        return [tokenizer.special_token_name(i) for i in ids]
    return [token_name(tokenizer, i)[0] for i in ids]   # any other tokenizer: as logprobs name its tokens


@router.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
async def tokenize(body: TokenizeRequest, request: Request):
    handler = _generate_handler(request, body.model)
    if isinstance(body, TokenizeChatRequest):
        bad = body.unsupported()
        if bad:
            message = (f"unsupported: {'; '.join(bad)}. /tokenize's chat form gives the prompt "
                       "/v1/chat/completions makes of the messages, which takes none of these")
            # one field at fault: `param` names it, as the chat route's own refusals do (openai_common.start)
            raise FieldError(bad[0].split()[0], message) if len(bad) == 1 else ValueError(message)
        ids = _chat_ids(body, handler)
    else:
        _check_chars(len(body.prompt), "prompt", handler.rt.settings.max_prompt_chars)
        # as /v1/generate encodes a text prompt (the tokenizers add the bos id by default)
        ids = list(handler.tokenizer.encode(body.prompt) if body.add_special_tokens
                   else handler.tokenizer.encode(body.prompt, add_special_tokens=False))
    return {"count": len(ids), "max_model_len": handler.max_length, "tokens": ids,
            "token_strs": token_strs(handler.tokenizer, ids) if body.return_token_strs else None}


@router.post("/detokenize", response_model=DetokenizeResponse, responses=_ERRORS)
async def detokenize(body: DetokenizeRequest, request: Request):
    handler = _generate_handler(request, body.model)
    bad = [t for t in body.tokens if not 0 <= t < handler.vocab_size]
    if bad:
        raise ValueError(f"tokens: token ids must be in [0, {handler.vocab_size}) (the model's vocab_size), "
                         f"got {bad[:5]}")
    return {"prompt": handler.tokenizer.decode(body.tokens, skip_special_tokens=False)}
