"""Pydantic models for the wire formats: OIP v2 (KServe v2) and the /v1 convenience API.

These serve two purposes: validating JSON bodies (bad shape -> 400/422 with {"error"}) and
documenting /openapi.json. Field names follow the OIP v2 REST spec exactly.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from .codec import DTYPES
from .schema_types import Float, Int, StrictBool, StrictFloat, StrictInt, StrictTokenId, Text, TokenId
from .schemas_structured import StructuredOutputs

# Request-level parameters are free-form in OIP v2 (tritonclient sends e.g. `priority`,
# `timeout`); /infer reads `depthwise_impl`, `binary_data_output` and `timeout`
# (service/handlers/tensor.py) and ignores the rest.
Parameters = dict[str, Any]


class ErrorResponse(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters = {}


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=8)
    # The codec checks it (its 400 names the supported ones); the schema lists them for clients.
    datatype: str = Field(max_length=16, json_schema_extra={"enum": sorted(DTYPES)})
    parameters: Optional[Parameters] = None
    # Row-major values, flat or nested; absent when the tensor travels as binary data.
    data: Optional[list[Any]] = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    parameters: Optional[Parameters] = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Optional[str] = Field(None, max_length=256)
    # Not OIP's, but KServe's python SDK (InferRequest.to_rest) writes it into every request;
    # ignored, as KServe's and Triton's servers ignore it: the URL names the model.
    model_name: Optional[str] = Field(None, max_length=256)
    parameters: Optional[Parameters] = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=16)
    outputs: Optional[list[RequestOutput]] = Field(None, max_length=16)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[Parameters] = None
    data: Optional[list[Any]] = None


class InferResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    outputs: list[ResponseOutput]


# --- Triton's model-repository extension (service/triton_ext.py) ---------------------------

class RepositoryIndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: StrictBool = False     # true: list only the models that are ready


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


class RepositoryModelRequest(BaseModel):
    """Body of load / unload: Triton's `parameters` (a config override, `file:` contents,
    unload_dependents)."""
    model_config = ConfigDict(extra="forbid")
    parameters: Optional[Parameters] = None


# --- /v1 convenience API ----------------------------------------------------------------

ImplName = Literal["auto", "per_group", "slice_sum", "compiled", "fused", "native"]


# /v1/generate and the generate extension: floats finite (NaN passed `le=100` as "not <= 100"),
# true/false no number, text valid Unicode.
_GENERATE_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
# A sampling field sent as null is left out (vLLM's reading): it then takes the checkpoint's
# generation_config value, or the route's default (handlers/generate.py given_fields).
_NULL_MEANS_DEFAULT = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def _null_sampling_left_out(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if v is not None or k not in _NULL_MEANS_DEFAULT}


class GenerateRequest(BaseModel):
    model_config = _GENERATE_CONFIG
    _nulls = model_validator(mode="before")(_null_sampling_left_out)
    prompt: Optional[Text] = Field(None, description="text prompt; give this or input_ids")
    input_ids: Optional[list[StrictTokenId]] = Field(None, description="token ids; give this or prompt")
    max_new_tokens: Optional[StrictInt] = Field(None, ge=1, description="tokens to generate; default 32, or fewer "
                                          "where --max-new-tokens or the sequence length leaves less room")
    temperature: StrictFloat = Field(0.0, ge=0.0, le=100.0, description="0 = greedy")
    top_k: Optional[StrictInt] = Field(None, ge=1)
    top_p: Optional[StrictFloat] = Field(None, gt=0.0, le=1.0)
    seed: Optional[StrictInt] = Field(None, ge=0, le=2**63 - 1)
    stop: Optional[Union[Text, list[Text]]] = Field(None, description="stop strings (text)")
    ignore_eos: StrictBool = Field(False, description="keep generating past the end-of-sequence token "
                             "(fixed-length outputs for load tests)")
    stream: StrictBool = False
    depthwise_impl: Optional[ImplName] = None
    presence_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0, description="subtracted from the logit of every "
                                    "token generated so far (OpenAI's)")
    frequency_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0, description="times how often it was generated")
    logit_bias: Optional[dict[int, StrictFloat]] = Field(None, description="token id -> added to its logit, -100..100")
    logprobs: Optional[StrictInt] = Field(None, ge=0, le=20, description="each generated token's log-probability "
                                    "(the model's distribution, before temperature/top-k/top-p) and this many "
                                    "most likely alternatives; streamed, each event carries those of the tokens its text completes")
    # transformers' and vLLM's sampling controls (models/lfm2/logit_processing.py)
    repetition_penalty: StrictFloat = Field(1.0, gt=0.0, le=100.0, description="the logit of every token of the prompt "
                                      "and of the generated text divided by it where positive, multiplied where "
                                      "negative (transformers'/vLLM's); 1 = off, > 1 discourages repeats")
    min_p: StrictFloat = Field(0.0, ge=0.0, le=1.0, description="sampling drops a token less likely than min_p times "
                         "the most likely one (after temperature); 0 = off")
    min_tokens: StrictInt = Field(0, ge=0, description="no stop token (eos, stop_token_ids) and no stop string "
                            "ends the generation before this many tokens (vLLM's)")
    stop_token_ids: Optional[list[StrictTokenId]] = Field(None, max_length=64, description="token ids that end the "
                                                    "generation, besides the model's end-of-sequence ids")
    include_stop_str_in_output: StrictBool = Field(False, description="keep the stop string, or a stop token's text "
                                             "and id, at the end of the output (vLLM's)")
    skip_special_tokens: StrictBool = Field(True, description="false: special tokens' text (`<|im_end|>`) is written "
                                      "into the output, as transformers' decode(skip_special_tokens=False)")
    structured_outputs: Optional[StructuredOutputs] = Field(None, description="the output held to a JSON schema, "
                                                            "a regex, a choice or a grammar (vLLM's)")
    allowed_token_ids: Optional[list[StrictTokenId]] = Field(None, min_length=1, max_length=65536, description="only "
                                                       "these token ids may be generated (vLLM's; no eos is added)")
    bad_words: Optional[list[Text]] = Field(None, max_length=256, description="words never generated: a word's "
                                            "last token is held off once the output ends with the rest of it (vLLM's)")


class TopLogprob(BaseModel):
    token_id: int
    logprob: float


class TokenLogprob(BaseModel):
    token_id: int
    logprob: float
    top: list[TopLogprob]


class GenerateUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(0, description="prompt tokens restored from the prefix cache, not prefilled")


class GenerateResponse(BaseModel):
    model: str
    text: str
    token_ids: list[int]
    finish_reason: Literal["length", "stop"]
    usage: GenerateUsage
    parameters: Parameters
    logprobs: Optional[list[TokenLogprob]] = None


class ClassLabel(BaseModel):
    index: int
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    labels: list[ClassLabel]
    parameters: Parameters


# --- Triton's generate extension (service/routes_v2_generate.py) ---------------------------

class TritonGenerateParameters(BaseModel):
    """What a generate request may set, at the top level (TRT-LLM's `max_tokens`,
    `stop_words`, ...) or under `parameters`: the /v1/generate fields by their usual LLM
    backend names."""
    model_config = _GENERATE_CONFIG
    _nulls = model_validator(mode="before")(_null_sampling_left_out)
    max_tokens: Optional[Int] = Field(None, ge=1)   # default: /v1/generate's (GenerateHandler.decode)
    temperature: Float = Field(0.0, ge=0.0, le=100.0, description="0 = greedy")
    top_k: Optional[Int] = Field(None, ge=-1, description="0 or -1 = off (TRT-LLM's and vLLM's conventions)")
    top_p: Optional[Float] = Field(None, gt=0.0, le=1.0)
    seed: Optional[Int] = Field(None, ge=0, le=2**63 - 1)
    random_seed: Optional[Int] = Field(None, ge=0, le=2**63 - 1, description="TRT-LLM's name for seed")
    stop: Optional[Union[Text, list[Text]]] = None
    stop_words: Optional[Union[Text, list[Text]]] = Field(None, description="TRT-LLM's name for stop")
    bad_words: Optional[Union[Text, list[Text]]] = Field(None, description="words never generated (TRT-LLM's, "
                                                         "vLLM's: GenerateRequest)")
    allowed_token_ids: Optional[list[TokenId]] = Field(None, min_length=1, max_length=65536)
    ignore_eos: bool = False
    presence_penalty: Float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: Float = Field(0.0, ge=-2.0, le=2.0)
    # vLLM's SamplingParams names, as its Triton backend takes them (see GenerateRequest)
    repetition_penalty: Float = Field(1.0, gt=0.0, le=100.0)
    min_p: Float = Field(0.0, ge=0.0, le=1.0)
    min_tokens: Int = Field(0, ge=0)
    stop_token_ids: Optional[list[TokenId]] = Field(None, max_length=64)
    # TRT-LLM's: its documented requests send both (routes_v2_generate.to_generate)
    end_id: Optional[TokenId] = Field(None, ge=0, description="TRT-LLM's: one more stop token id (not in the text)")
    pad_id: Optional[TokenId] = Field(None, ge=0, description="TRT-LLM's: checked, ignored (replies are not padded)")
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    structured_outputs: Optional[StructuredOutputs] = None
    stream: Optional[bool] = Field(None, description="ignored: the URL decides (generate or generate_stream)")
    exclude_input_in_output: Optional[bool] = Field(
        None, description="true (the default): text_output is the generated text; false: the prompt, then it "
                          "(vLLM's backend default; streamed, the first event carries the prompt)")
    depthwise_impl: Optional[ImplName] = None


class TritonGenerateRequest(TritonGenerateParameters):
    """`{"text_input": ..., "parameters": {...}}`; parameters may also sit at the top level, or
    in `sampling_parameters` as a JSON string, as Triton's vLLM backend takes them."""
    id: Optional[str] = Field(None, max_length=256)
    text_input: Text
    parameters: Optional[TritonGenerateParameters] = None
    sampling_parameters: Optional[Union[str, dict]] = Field(
        None, description="vLLM backend's form: the parameters as a JSON object, or a string holding one")


class TritonGenerateResponse(BaseModel):
    model_name: str
    model_version: str
    id: Optional[str] = None
    text_output: str
    finish_reason: Optional[str] = None
    usage: Optional[GenerateUsage] = None
    parameters: Optional[Parameters] = None
