"""The OpenAI-compatible completions API (`POST /v1/completions`, `GET /v1/models`): what LLM
load generators and OpenAI clients speak. A completion request maps onto /v1/generate's
GenerateRequest, so it has the same limits, validation and continuous batching.

Fields OpenAI defines but dwserve cannot honour (several choices, logprobs, echo,
penalties, logit_bias, suffix) are accepted only at their no-op values and otherwise
answered with a 400 that names them; unknown fields are a 422, like every dwserve route.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from .schemas import GenerateRequest, ImplName


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="the served language model (GET /v1/models)")
    prompt: Union[str, list[int], list[str], list[list[int]]] = Field(
        ..., description="text or token ids; one prompt per request")
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=1, description="extension: sample from the k most likely")
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    ignore_eos: bool = Field(False, description="extension: generate past the end-of-sequence token")
    depthwise_impl: Optional[ImplName] = Field(None, description="extension: the depthwise impl to run")
    user: Optional[str] = None
    # OpenAI fields with a single supported value:
    n: int = 1
    best_of: Optional[int] = None
    logprobs: Optional[int] = None
    echo: bool = False
    suffix: Optional[str] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None

    def unsupported(self) -> list[str]:
        """Fields set to something dwserve cannot do."""
        bad = [name for name, ok in (
            ("n", self.n == 1), ("best_of", self.best_of in (None, 1)), ("logprobs", self.logprobs is None),
            ("echo", not self.echo), ("suffix", not self.suffix),
            ("presence_penalty", self.presence_penalty == 0.0),
            ("frequency_penalty", self.frequency_penalty == 0.0), ("logit_bias", not self.logit_bias)) if not ok]
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], (str, list)) \
                and len(self.prompt) != 1:
            bad.append("prompt (one prompt per request)")
        return bad

    def to_generate(self) -> GenerateRequest:
        prompt = self.prompt[0] if isinstance(self.prompt, list) and self.prompt \
            and isinstance(self.prompt[0], (str, list)) else self.prompt
        text, ids = (prompt, None) if isinstance(prompt, str) else (None, list(prompt))
        return GenerateRequest(prompt=text, input_ids=ids, max_new_tokens=self.max_tokens,
                               temperature=self.temperature, top_k=self.top_k,
                               top_p=None if self.top_p >= 1.0 else self.top_p, seed=self.seed,
                               stop=self.stop, ignore_eos=self.ignore_eos, stream=self.stream,
                               depthwise_impl=self.depthwise_impl)


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Optional[Literal["stop", "length"]]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[CompletionUsage] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "dwserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
