"""The OpenAI-compatible routes' replies (completions, chat completions, errors), as OpenAI's
schema writes them; the requests are in schemas_openai.py."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]                        # an echoed prompt's first: null
    top_logprobs: Optional[list[Optional[dict[str, float]]]] = None
    text_offset: list[int]                    # of each token in the completion text


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]]


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0       # prompt tokens restored from the prefix cache


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Optional[PromptTokensDetails] = None


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[Literal["stop", "length"]]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Optional[CompletionUsage] = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Optional[CompletionUsage] = None


class OpenAIError(BaseModel):
    message: str
    type: str                       # invalid_request_error, authentication_error, server_error, ...
    param: Optional[str] = None
    code: Optional[str] = None


class OpenAIErrorResponse(BaseModel):
    """Every error of the OpenAI-compatible routes (service/errors.error_body)."""
    error: OpenAIError


OPENAI_ERROR_RESPONSES = {code: {"model": OpenAIErrorResponse} for code in (400, 401, 404, 413, 422, 503)}
