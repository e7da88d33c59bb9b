"""/v1/generate: prompt or input_ids -> tokens, as one JSON reply or an SSE stream.

Generation is continuously batched (service.generation): the request becomes a Sequence
handed to the model's GenerationScheduler, which advances every live sequence one token
per step on the compute thread and sends each token to the event loop through an
asyncio.Queue, so the event loop never runs model code. A client that disconnects, a stop
string or a timeout cancels the sequence, which frees its row before the next step. How the
tokens become text (stop strings and tokens, min_tokens, what a stream may send yet, special
tokens' text) is text_output.py's.

With --generation-config auto (the default, as vLLM's), a sampling field a request leaves out
(temperature, top_k, top_p, min_p, repetition_penalty) takes the checkpoint's
generation_config.json value (LFM2ForCausalLM.generation_defaults) where it gives one.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, AsyncIterator, Optional

from models.lfm2 import logit_processing, token_masks
from models.lfm2.generation_config import SAMPLING_FIELDS
from models.lfm2.tokenizer import end_of_sequence_ids

from ..errors import FieldError, within
from ..generation import GenerationScheduler
from ..runtime import ModelRuntime
from ..schemas import GenerateRequest
from .text_output import KeepingSpecialTokens, sendable, stop_string_cut

log = logging.getLogger("dwserve.generation")


def request_defaults(generation_defaults: dict) -> dict:
    """A checkpoint's sampling defaults (generation_config.py) as GenerateRequest fields, as
    vLLM takes them (do_sample is not one: a request samples when its temperature is > 0);
    top_k 0 is off, which a request left without top_k already is."""
    return {k: v for k, v in generation_defaults.items()
            if k in SAMPLING_FIELDS and k != "do_sample" and not (k == "top_k" and v == 0)}


def given_fields(request) -> set[str]:
    """The fields a request (a pydantic model) gave a value: a null one is left out, as vLLM
    reads null (the default, here the checkpoint's); OpenAI's top_k null, /v1/generate's and
    Triton's top_k/top_p null counted as set and dropped the checkpoint's value."""
    return {k for k in request.model_fields_set if getattr(request, k) is not None}


@dataclass
class Plan:
    ids: list[int]
    impl: str
    max_new_tokens: int
    sampling: dict[str, Any]
    stop: list[str]
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    stop_token_ids: tuple[int, ...] = ()      # the request's, besides eos
    min_tokens: int = 0
    include_stop: bool = False                # include_stop_str_in_output
    tokenizer: Any = None                     # what its text is decoded with (None: token ids only)
    constraint: Any = None                    # structured outputs: its TokenConstraint (one per sequence)
    t_start: float = field(default_factory=time.perf_counter)


class GenerateHandler:
    def setup(self, runtime: ModelRuntime) -> "GenerateHandler":
        self.rt = runtime
        self.lm = runtime.served.lm
        self.tokenizer = self.lm.tokenizer   # None: a checkpoint without tokenizer.json (token ids only)
        self.eos_token_ids = end_of_sequence_ids(self.tokenizer, self.lm.config)   # every one stops
        meta = getattr(runtime.served, "metadata", None) or {}
        self.sampling_defaults = request_defaults(getattr(self.lm, "generation_defaults", None) or {}) \
            if runtime.settings.generation_config == "auto" else {}
        if self.sampling_defaults:   # as vLLM says so: a request's defaults are not the routes' documented ones
            log.info("%s: sampling defaults from its generation_config.json for what a request leaves out: %s "
                     "(--generation-config none: the routes' own)", runtime.name,
                     ", ".join(f"{k}={v}" for k, v in self.sampling_defaults.items()))
        self.vocab_size = int(meta.get("vocab_size") or self.lm.config.vocab_size)
        s = runtime.settings
        # The tokens one sequence may hold: the server's limit, or less if the model's positions
        # end sooner (as /v2 infer refuses rows past max_position_embeddings).
        positions = int(self.lm.config.max_position_embeddings)
        self.max_length = min(s.max_sequence_length, positions)
        self.max_length_source = ("max_sequence_length: --max-sequence-length, DWSERVE_MAX_SEQUENCE_LENGTH"
                                  if s.max_sequence_length <= positions
                                  else "the model's max_position_embeddings")
        self.scheduler = GenerationScheduler(runtime, s.max_decode_batch, self.max_length,
                                             s.prefill_chunk_tokens or None)
        if s.warmup:
            self.scheduler.warmup()
        self.scheduler.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish the accepted generations, accept no more."""
        self.scheduler.stop(timeout)

    def decode(self, req: GenerateRequest, max_tokens_name: str = "max_new_tokens", default_new_tokens: int = 32,
               client_set: Optional[set[str]] = None, compiled: Optional[dict] = None, generates: bool = True,
               prompt_name: Optional[str] = None) -> Plan:
        """-> the request's Plan, or ValueError (a 400) saying what to change. max_tokens_name:
        what the client called max_new_tokens (OpenAI's and Triton's `max_tokens`), for the errors.
        A request without it gets default_new_tokens, or fewer where the server's max_new_tokens
        or the sequence length leaves less room: a 400 for a limit the client never named was the
        answer on a server started with --max-new-tokens below the default. client_set: the
        fields the client gave (default: req's own non-null ones), the others take the model's
        sampling defaults. compiled: the request's structured output constraint once compiled,
        shared by its plans (_constraint). generates False: the plan only scores its prompt (echo
        with max_tokens 0), which may then fill the sequence length. prompt_name: the field that held
        the prompt (text_input, messages, completions' prompt), named by a prompt too long or token ids
        out of the vocabulary (default prompt or input_ids)."""
        unset = {k: v for k, v in self.sampling_defaults.items()
                 if k not in (given_fields(req) if client_set is None else client_set)}
        if unset:
            req = req.model_copy(update=unset)
        s = self.rt.settings
        impl = self.rt.check_impl(req.depthwise_impl)
        if (req.prompt is None) == (req.input_ids is None):
            raise ValueError("expected exactly one of 'prompt' (text) or 'input_ids' (token ids)")
        if req.prompt is not None:
            if len(req.prompt) > s.max_prompt_chars:
                raise ValueError(f"prompt: {len(req.prompt)} characters; the limit is {s.max_prompt_chars}")
            if self.tokenizer is None:
                raise ValueError(f"model {self.rt.name!r} has no tokenizer (no tokenizer.json beside its "
                                 "config.json): send token ids as 'input_ids' instead of a text 'prompt'")
            ids = list(self.tokenizer.encode(req.prompt))
        else:
            ids = list(req.input_ids)
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:   # named as the client sent them: completions' token ids are its `prompt`
                field = prompt_name or "input_ids"
                raise FieldError(field, f"{field}: token ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        if not ids:
            raise ValueError("prompt: expected at least one token")
        wanted = req.max_new_tokens
        if wanted is None:
            wanted = max(1, min(default_new_tokens, s.max_new_tokens, self.max_length - len(ids)))
        if wanted > s.max_new_tokens:
            limit = "" if max_tokens_name == "max_new_tokens" else ", the server's max_new_tokens"
            raise ValueError(f"{max_tokens_name}: at most {s.max_new_tokens}{limit} (DWSERVE_MAX_NEW_TOKENS), "
                             f"got {wanted}")
        if len(ids) > self.max_length - generates:   # no room for the prompt (and one token): name its field
            field = prompt_name or ("prompt" if req.prompt is not None else "input_ids")
            room = f"prompt + generated tokens, at most {self.max_length - 1} for a prompt" if generates else "a prompt"
            fix = " or start the server with a larger --max-sequence-length" if "DWSERVE" in self.max_length_source else ""
            raise FieldError(field, ("" if field == "prompt" else f"{field}: ") + f"prompt ({len(ids)} tokens) exceeds "
                             f"{self.max_length} tokens, the limit of {room} ({self.max_length_source}); shorten it{fix}")
        if generates and len(ids) + wanted > self.max_length:
            raise FieldError(max_tokens_name, f"prompt ({len(ids)} tokens) + {max_tokens_name} ({wanted}) exceeds "
                             f"{self.max_length} tokens ({self.max_length_source})")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not x for x in stop) or len(stop) > 16 or any(len(x) > 256 for x in stop):
            raise ValueError("stop: expected up to 16 non-empty strings of at most 256 characters")
        if stop and self.tokenizer is None:
            raise ValueError(f"stop: model {self.rt.name!r} has no tokenizer to match text against; "
                             "leave 'stop' out")
        stop_ids = tuple(dict.fromkeys(req.stop_token_ids or ()))
        bad = [t for t in stop_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"stop_token_ids: token ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        if req.min_tokens > wanted:
            raise ValueError(f"min_tokens: at most {max_tokens_name} ({wanted}), got {req.min_tokens}")
        sampling = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "seed": req.seed,
                    "presence_penalty": req.presence_penalty, "frequency_penalty": req.frequency_penalty,
                    "logit_bias": req.logit_bias, "repetition_penalty": req.repetition_penalty, "min_p": req.min_p,
                    "min_tokens": req.min_tokens,
                    **token_masks.sequence_fields(req.allowed_token_ids, req.bad_words, self.tokenizer)}
        logit_processing.check(SimpleNamespace(**sampling, max_new_tokens=wanted, stop_token_ids=stop_ids, tokens=()),
                               self.vocab_size)   # a 400 before any queueing
        tokenizer = self.tokenizer if req.skip_special_tokens or self.tokenizer is None \
            else KeepingSpecialTokens(self.tokenizer)
        constraint = self._constraint(req.structured_outputs, {} if compiled is None else compiled) \
            if req.structured_outputs is not None else None
        return Plan(ids, impl, wanted, sampling, stop, req.ignore_eos, req.logprobs, stop_ids, req.min_tokens,
                    req.include_stop_str_in_output, tokenizer, constraint)

    def _constraint(self, spec, compiled: dict):
        """A structured output's TokenConstraint (models/lfm2/structured.py), or ValueError (a
        400) naming what is wrong with it. The grammar is compiled here, before any queueing
        (a large schema: ~0.1 s; plan() and the OpenAI routes call decode off the event loop
        when a request asks for a constraint), once per request: every prompt and choice of one
        request has the same constraint, so `compiled` (the request's, shared by its plans)
        holds it and each plan gets a copy, its own place in the grammar. Copies share
        llguidance's lexer (its states are built once), and with it its limits: a compiled
        constraint is never kept for later requests, whose output would then depend on what
        earlier ones explored."""
        from models.lfm2.structured import ConstraintError, compile_constraint, guidance_tokenizer
        if self.tokenizer is None:
            raise ValueError(f"structured outputs: model {self.rt.name!r} has no tokenizer (tokenizer.json) to hold "
                             "text to a grammar with")
        template = compiled.get("constraint")
        if template is None:
            kind, value = spec.kind
            guidance = guidance_tokenizer(self.tokenizer, self.vocab_size, self.eos_token_ids)
            try:   # the template is never advanced; a refusal names the constraint as the client gave it
                template = compiled["constraint"] = compile_constraint(
                    guidance, kind, value, self.vocab_size, self.rt.settings.max_grammar_chars, "--max-grammar-chars")
            except ConstraintError as exc:   # "guided_regex: ...", OpenAI's param its request field
                raise FieldError(spec.path.split(".")[0], f"{spec.path}: {exc.detail}") from None
        return template.copy()

    async def plan(self, req: GenerateRequest, **kwargs) -> Plan:
        """decode(req, **kwargs), in a worker thread when the request asks for a structured
        output (its grammar compiles there, not on the event loop every other request streams from)."""
        if req.structured_outputs is None:
            return self.decode(req, **kwargs)
        return await asyncio.to_thread(functools.partial(self.decode, req, **kwargs))

    async def events(self, plan: Plan) -> AsyncIterator[dict[str, Any]]:
        """Yields {"token_id", "text"} per token, then one final summary dict.

        Submits the sequence before the first `yield`-able await, so a full queue surfaces as
        QueueFull from the first `__anext__` (the route turns it into a 503 before any byte
        of the response is sent)."""
        from models.lfm2.continuous import Sequence

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stops = tuple(dict.fromkeys((*plan.stop_token_ids, *(() if plan.ignore_eos else self.eos_token_ids))))

        def put(item):   # on the scheduler thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed during shutdown: nobody is listening
                pass

        seq = Sequence(plan.ids, plan.max_new_tokens, stop_token_ids=stops,
                       logprobs=plan.logprobs, constraint=plan.constraint, **plan.sampling)
        ticket = self.scheduler.submit(seq, plan.impl, put)
        labels = (self.rt.name, plan.impl)
        m = self.rt.metrics
        ids: list[int] = []
        sent, text, finish, t_first = 0, "", "length", None
        carried = 0   # tokens whose logprobs an event has carried
        covered = 0   # tokens an event has named (its token_ids): several when a character spans tokens
        eos_ended = 0   # 1 once a stop token ended it: generated, so counted (as vLLM and OpenAI do), but no text
        stop_entry = None   # that stop token's logprobs (final["stop_logprobs"]), left out of ids
        floor = 0       # where a stop string may start ending: the text before min_tokens' token

        def entry(i: int) -> dict:   # the i-th generated token's logprobs (recorded before it is sent)
            lp, top = seq.token_logprobs[i]
            return {"token_id": ids[i], "logprob": lp, "top": [{"token_id": t, "logprob": v} for t, v in top]}

        def piece(token_id, text_piece: str) -> dict:
            """A streamed piece: the tokens its text completes (token_ids; token_id the last, or None:
            a piece of held-back text only) and, with logprobs, theirs."""
            nonlocal carried, covered
            event = {"token_id": token_id, "token_ids": ids[covered:], "text": text_piece,
                     "tokens": len(ids)}   # tokens: generated so far
            covered = len(ids)
            if plan.logprobs is not None:
                event["logprobs"], carried = [entry(i) for i in range(carried, len(ids))], len(ids)
            return event

        hold = max((len(x) for x in plan.stop), default=1) - 1
        ended = False   # the scheduler said done (not an error, a timeout or a client gone)
        try:
            while True:
                kind, value = await within(queue.get, self.rt.settings.request_timeout_s)
                if kind == "error":
                    raise value
                if kind == "done":
                    if plan.constraint is not None and plan.constraint.error is not None:   # not "stop": not complete
                        raise ValueError(f"structured output: the constraint engine gave up after {len(ids)} tokens "
                                         f"({plan.constraint.error}); simplify the schema, regex or grammar")
                    if value == "stop" and plan.constraint is not None and plan.constraint.complete:
                        finish = "stop"   # its structured output is complete
                    ended = True
                    break
                if t_first is None:
                    t_first = time.perf_counter()
                    m.ttft.labels(*labels).observe(t_first - plan.t_start)
                if finish == "stop":  # a token already under way when a stop string ended it
                    continue
                if value in stops:    # the scheduler ends the sequence after it
                    finish = "stop"
                    if not plan.include_stop:
                        eos_ended = 1
                        if plan.logprobs is not None and len(seq.token_logprobs) > len(ids):   # recorded before sent
                            lp, top = seq.token_logprobs[len(ids)]
                            stop_entry = {"token_id": value, "logprob": lp,
                                          "top": [{"token_id": t, "logprob": v} for t, v in top]}
                        continue
                ids.append(value)
                if plan.tokenizer is None:   # token ids only: each token is its own event
                    yield piece(value, "")
                    continue
                text = plan.tokenizer.decode(ids)
                if len(ids) < plan.min_tokens:   # less an incomplete character, which min_tokens'
                    floor = sendable(text, 0)    # token may complete (a stop string may end in it)
                elif finish != "stop":
                    cut = stop_string_cut(text, plan.stop, floor, plan.include_stop)
                    if cut is not None:
                        text, finish = text[:cut], "stop"
                        self.scheduler.cancel(ticket)
                        continue
                end = sendable(text, hold)
                if end > sent:
                    yield piece(value, text[sent:end])
                    sent = end
            if sent < len(text) or carried < len(ids) and plan.logprobs is not None:
                yield piece(ids[-1] if ids else None, text[sent:])
        finally:
            if not seq.done:  # client gone, timeout or error: its row is freed before the next step
                self.scheduler.cancel(ticket)
            self.rt.statistics.generation_done(ended, ticket.enqueued, ticket.started)
            n = len(ids) + eos_ended   # delivered (dwserve_generated_tokens_total counts as made: service/generation.py)
            cached = getattr(seq, "cached_tokens", 0)
            if cached:
                m.prefix_cached_tokens.labels(*labels).inc(cached)
            if n > 1 and t_first is not None:
                m.tpot.labels(*labels).observe((time.perf_counter() - t_first) / (n - 1))
        final = {"done": True, "text": text, "token_ids": ids, "finish_reason": finish,
                 "usage": {"prompt_tokens": len(plan.ids), "completion_tokens": n,
                           "cached_tokens": getattr(seq, "cached_tokens", 0)}}
        if plan.logprobs is not None:   # ids are a prefix of the generated tokens (no eos, nothing after a stop)
            final["logprobs"] = [entry(i) for i in range(len(ids))]
            # the stop token that ended it (no text): completions list it, as OpenAI and vLLM do
            final["stop_logprobs"] = [stop_entry] if stop_entry is not None else []
        yield final

