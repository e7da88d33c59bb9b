"""The OpenAI-compatible API (`POST /v1/completions`, `POST /v1/chat/completions`,
`GET /v1/models`): what LLM load generators and OpenAI clients speak. Each request maps onto
/v1/generate's GenerateRequest (a chat through the model's chat template, models/lfm2/chat.py),
so it has the same limits, validation and continuous batching.

vLLM's sampling extensions (top_k, repetition_penalty, min_p, min_tokens, stop_token_ids,
include_stop_str_in_output, skip_special_tokens, ignore_eos, allowed_token_ids, bad_words) are honoured, and structured
outputs (response_format json_object / json_schema, vLLM's structured_outputs and guided_*:
schemas_structured.py). Fields OpenAI (or vLLM) defines but dwserve cannot honour (best_of,
suffix, tools, predicted outputs, reasoning, audio, ...) are accepted only at their no-op values, else a 400 naming them. Bookkeeping fields clients send (store, metadata,
service_tier, user, ...) are accepted and ignored, as vLLM does. Other fields are a 422.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .errors import FieldError
from .schema_types import Float, Int, Text, TokenId, unicode_problem
from .schemas import GenerateRequest, ImplName
from .schemas_structured import MAX_CHOICES, StructuredOutputs, from_response_format, pick_one


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    include_usage: bool = False
    # vLLM's: with include_usage, every chunk also carries its choice's usage so far
    continuous_usage_stats: bool = False
    # OpenAI's: random padding in each chunk against length side channels; dwserve pads nothing
    # (accepted, so clients that send it are served)
    include_obfuscation: Optional[bool] = None


class _SamplingRequest(BaseModel):
    """What completions and chat completions share: sampling, stop, stream, the extensions.

    Numbers are Int/Float: a JSON true/false is no number (pydantic's lax mode read it as 1/0).
    OpenAI's schema makes the fields with defaults nullable (the openai client sends null for
    an explicit None): null means the default, so those are Optional here only for the schema."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)   # NaN passed le=2 as "not <= 2"

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if v is not None or k not in fields or fields[k].is_required() or fields[k].default is None}
    model: Optional[str] = Field(None, description="the served language model (GET /v1/models)")
    max_tokens: Optional[Int] = Field(None, ge=1, description="default: 16 for completions, the "
                                      "server's max_new_tokens for chat")
    temperature: Optional[Float] = Field(1.0, ge=0.0, le=2.0)
    top_p: Optional[Float] = Field(1.0, gt=0.0, le=1.0)
    top_k: Optional[Int] = Field(None, ge=-1, description="extension: sample from the k most likely; "
                                 "0 or -1 = off (vLLM's convention)")
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[Int] = Field(None, ge=0, le=2**63 - 1)
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    ignore_eos: Optional[bool] = Field(False, description="extension: generate past the end-of-sequence token")
    depthwise_impl: Optional[ImplName] = Field(None, description="extension: the depthwise impl to run")
    # Bookkeeping, ignored: nothing here is stored, tiered or billed, the prefix cache needs no key.
    user: Optional[str] = None
    store: Optional[bool] = None
    metadata: Optional[dict[str, Any]] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    # vLLM's sampling extensions (GenerateRequest says what each does)
    repetition_penalty: Optional[Float] = Field(1.0, gt=0.0, le=100.0)
    min_p: Optional[Float] = Field(0.0, ge=0.0, le=1.0)
    min_tokens: Optional[Int] = Field(0, ge=0)
    stop_token_ids: Optional[list[TokenId]] = Field(None, max_length=64)
    skip_special_tokens: Optional[bool] = True
    include_stop_str_in_output: Optional[bool] = False
    n: Optional[Int] = Field(1, ge=1, description="choices: n sequences of the continuous batch (seed + i each)")
    presence_penalty: Optional[Float] = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: Optional[Float] = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: Optional[dict[int, Float]] = Field(None, description="token id -> added to its logit, -100..100")
    allowed_token_ids: Optional[list[TokenId]] = Field(None, min_length=1, max_length=65536)
    bad_words: Optional[list[Text]] = Field(None, max_length=256)
    # Structured outputs (schemas_structured.py): OpenAI's response_format, vLLM's object and
    # its older guided_* fields; one of them per request.
    response_format: Optional[dict[str, Any]] = None
    structured_outputs: Optional[StructuredOutputs] = None
    guided_json: Optional[Union[dict[str, Any], Text]] = None
    guided_regex: Optional[Text] = None
    guided_choice: Optional[list[Text]] = Field(None, min_length=1, max_length=MAX_CHOICES)
    guided_grammar: Optional[Text] = None

    @property
    def constrained(self) -> bool:
        """Whether any structured output field asks for a constraint."""
        return any(getattr(self, name) is not None for name in (
            "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar")) \
            or (self.response_format or {}).get("type") not in (None, "text")

    def structured(self) -> Optional[StructuredOutputs]:
        """The request's one structured output constraint, whichever field gave it, or None."""
        guided = {"guided_json": {"json": self.guided_json}, "guided_regex": {"regex": self.guided_regex},
                  "guided_choice": {"choice": self.guided_choice}, "guided_grammar": {"grammar": self.guided_grammar}}
        return pick_one(response_format=from_response_format(self.response_format),
                        structured_outputs=self.structured_outputs,
                        **{name: StructuredOutputs(**form).sent_as(name) for name, form in guided.items()
                           if next(iter(form.values())) is not None})

    def _unsupported(self, extra: tuple[tuple[str, bool], ...]) -> list[str]:
        """Fields set to something dwserve cannot do. stream_options without a stream is
        OpenAI's 400 too: include_usage would silently add nothing to a JSON reply."""
        return [name for name, ok in (*extra, ("stream_options without stream: true",
                                               self.stream_options is None or self.stream)) if not ok]

    def _generate(self, max_new_tokens: Optional[int], logprobs: Optional[int], **prompt) -> GenerateRequest:
        return GenerateRequest(**prompt, max_new_tokens=max_new_tokens, logprobs=logprobs,
                               presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                               logit_bias=self.logit_bias, repetition_penalty=self.repetition_penalty,
                               min_p=self.min_p, min_tokens=self.min_tokens, stop_token_ids=self.stop_token_ids,
                               include_stop_str_in_output=self.include_stop_str_in_output,
                               skip_special_tokens=self.skip_special_tokens is not False,
                               temperature=self.temperature, top_k=self.top_k if (self.top_k or 0) > 0 else None,
                               top_p=None if self.top_p >= 1.0 else self.top_p, seed=self.seed,
                               stop=self.stop, ignore_eos=self.ignore_eos, stream=self.stream,
                               depthwise_impl=self.depthwise_impl, structured_outputs=self.structured(),
                               allowed_token_ids=self.allowed_token_ids, bad_words=self.bad_words)

    @property
    def max_tokens_name(self) -> str:   # what the limit errors call the token budget
        return "max_completion_tokens" if getattr(self, "max_completion_tokens", None) else "max_tokens"

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def continuous_usage(self) -> bool:
        """Every streamed chunk carries its choice's usage so far (vLLM's continuous_usage_stats)."""
        return self.include_usage and self.stream_options.continuous_usage_stats


class CompletionRequest(_SamplingRequest):
    prompt: Union[str, list[TokenId], list[str], list[list[TokenId]]] = Field(
        ..., description="text or token ids, or a list of prompts (texts or token id lists): "
        "n choices for each, prompt i's at indices i*n .. i*n+n-1")
    best_of: Optional[Int] = None
    logprobs: Optional[Int] = Field(None, ge=0, le=20, description="each token's log-probability and this "
                                    "many most likely alternatives (the model's distribution)")
    echo: Optional[bool] = Field(False, description="the prompt before the completion (with logprobs: the "
                       "prompt tokens' too, the first null); max_tokens 0 scores the prompt only")
    max_tokens: Optional[Int] = Field(None, ge=0, description="default 16; 0 only with echo")
    suffix: Optional[str] = None

    def unsupported(self) -> list[str]:
        return self._unsupported((("best_of", self.best_of in (None, self.n)), ("suffix", not self.suffix),
                                  ("max_tokens 0 without echo", self.max_tokens != 0 or self.echo)))

    @property
    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt, text or token ids: a list of texts or of token id lists is several
        (OpenAI's batched prompts), a text or one token id list is one."""
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], (str, list)):
            return list(self.prompt)
        return [self.prompt]

    def to_generate(self, prompt: Union[str, list[int]]) -> GenerateRequest:
        """One prompt's request (of self.prompts)."""
        text, ids = (prompt, None) if isinstance(prompt, str) else (None, list(prompt))
        # max_tokens 0 (echo only) generates nothing; the plan is made with 1 for its checks.
        if self.max_tokens == 0 and self.min_tokens:
            raise ValueError(f"min_tokens: at most max_tokens (0), got {self.min_tokens}")
        return self._generate(None if self.max_tokens is None else max(self.max_tokens, 1), self.logprobs,
                              prompt=text, input_ids=ids)

    @property
    def scores_only(self) -> bool:
        return self.max_tokens == 0


def _encodable(text: str, where: str) -> str:
    problem = unicode_problem(text)
    if problem is not None:
        raise FieldError(where, f"{where}: {problem}")
    return text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # text, or content parts of which dwserve reads the text ones: [{"type": "text", "text": ...}]
    content: Union[str, list[dict[str, Any]], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None
    tool_call_id: Optional[str] = None
    # A reply's message fields: `choice.message.model_dump()` appended to a history sends them back.
    refusal: Optional[str] = None          # an assistant's refusal: its text, when content is null
    annotations: Optional[list[dict[str, Any]]] = None   # citations: no part of the text, ignored
    audio: Optional[dict[str, Any]] = None
    function_call: Optional[dict[str, Any]] = None

    def text(self, index: int) -> str:
        """The message's text, or a FieldError naming the path to what is wrong as a validation
        error names it, in the message and OpenAI's `param` (messages[0].content, as OpenAI does)."""
        where = f"messages[{index}]"
        tooling = [name for name, used in (("role", self.role == "tool"), ("tool_calls", self.tool_calls),
                                           ("function_call", self.function_call), ("audio", self.audio)) if used]
        if tooling:   # named by the first such field of the message
            path = f"{where}.{tooling[0]}"
            raise FieldError(path, f"{path}: tool messages, tool_calls, function_call and audio are unsupported; "
                             "dwserve chats in text")
        if self.content is None and self.refusal is not None:
            return _encodable(self.refusal, f"{where}.refusal")
        if isinstance(self.content, str):
            return _encodable(self.content, f"{where}.content")
        if self.content is None:
            raise FieldError(f"{where}.content", f"{where}.content: expected text (a string, or a list of "
                             "{\"type\": \"text\", \"text\": ...} parts)")
        parts = []
        for j, part in enumerate(self.content):
            if part.get("type") != "text":
                raise FieldError(f"{where}.content[{j}]", f"{where}.content[{j}]: expected {{\"type\": \"text\", "
                                 f"\"text\": ...}}; only text parts are supported, got type {part.get('type')!r}")
            if not isinstance(part.get("text"), str):   # a text part: its text is what is wrong
                got = "none" if part.get("text") is None else type(part["text"]).__name__
                raise FieldError(f"{where}.content[{j}].text", f"{where}.content[{j}].text: expected a string, "
                                 f"got {got}")
            parts.append(_encodable(part["text"], f"{where}.content[{j}].text"))
        return "".join(parts)


MAX_MESSAGES = 2048   # a request's messages, as OpenAI's API bounds them


def _few_enough(messages):
    """Counted before each message is validated: 400,000 empty messages (13 MB) cost 570 MB
    and seconds of the event loop as models, past every limit on their content."""
    if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
        raise ValueError(f"at most {MAX_MESSAGES} messages (as OpenAI's API), got {len(messages)}")
    return messages


Messages = Annotated[list[ChatMessage], BeforeValidator(_few_enough), Field(min_length=1)]


class ChatCompletionRequest(_SamplingRequest):
    messages: Messages
    max_completion_tokens: Optional[Int] = Field(None, ge=1, description="the newer name of max_tokens")
    logprobs: Optional[bool] = None
    top_logprobs: Optional[Int] = Field(None, ge=0, le=20)
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None      # without tools: nothing to call, ignored
    # Refused unless at their no-op values: each asks for something the reply cannot carry.
    prediction: Optional[dict[str, Any]] = None     # usage would owe accepted/rejected prediction tokens
    reasoning_effort: Optional[str] = None          # the model does not reason (OpenAI's 400 for such models)
    modalities: Optional[list[str]] = None          # ["text"] only: no audio out
    audio: Optional[dict[str, Any]] = None
    functions: Optional[list[dict[str, Any]]] = None   # the legacy tools
    function_call: Optional[Union[str, dict[str, Any]]] = None

    def unsupported(self) -> list[str]:
        return self._unsupported((
            ("top_logprobs without logprobs: true", self.top_logprobs is None or bool(self.logprobs)),
            ("tools", not self.tools), ("tool_choice", self.tool_choice in (None, "none")),
            ("prediction (no predicted outputs)", self.prediction is None),
            ("reasoning_effort (the model does not reason)", self.reasoning_effort is None),
            ("modalities (text only)", self.modalities in (None, ["text"])),
            ("audio", self.audio is None), ("functions", not self.functions),
            ("function_call", self.function_call in (None, "none"))))

    def to_messages(self) -> list[dict[str, str]]:
        """-> [{"role", "content"}] for the chat template (developer is the newer system)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
                for i, m in enumerate(self.messages)]

    def to_generate(self, input_ids: list[int], default_max_tokens: int) -> GenerateRequest:
        return self._generate(self.max_completion_tokens or self.max_tokens or default_max_tokens,
                              (self.top_logprobs or 0) if self.logprobs else None, input_ids=input_ids)
