"""OpenAI's request and response shapes <-> the one InferenceService.

A request becomes what the service already takes: the sampling parameters as an SGP
`ChatCompletionRequest` / `CompletionRequest` (so every rule of the v4 routes applies:
ranges, clamping, vendor abilities), the messages as OpenAI-style dicts, and the
call-level parameters (tools, response_format, ...) as GenerationCall options. The
service's output (`Generated` pieces) becomes `chat.completion` / `text_completion`
objects or their streamed chunks.

Two choices differ from the v4 routes, to match OpenAI: `temperature` defaults to 1, and
the answer echoes the `model` the caller named. Stop sequences may be more than the v4
routes' 4 where the deployment's vendor takes them (`Capabilities.max_stop_sequences`).
`file` (PDF) and `input_audio` parts travel to the vendors that take them
(`Capabilities.content_kinds`: OpenAI's), and are a 400 naming them elsewhere; so do a
legacy completion's token-id prompts (`TOKEN_PROMPT`: OpenAI-compatible servers and the
embedded engine) and its `echo` with `logprobs` (`PROMPT_LOGPROBS`: the vendor computes
the prompt's log-probabilities and its answer is returned as it is).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import ValidationError

from modelport.errors import InvalidRequest
from modelport.generation import FinishReason
from modelport.generation import TokenLogprob as GeneratedLogprob
from modelport.inference.metering import Generated
from modelport.inference.service import CHAT_WINDOW, TextRequest
from modelport.observability.ids import hex_id
from modelport.schemas import openai as wire
from modelport.schemas.inference import (
    MAX_STOP_SEQUENCES,
    ChatCompletionRequest,
    CompletionRequest,
    EncodedEvent,
    wire_logprobs,
)
from modelport.vendors.base import HINT_PARAMETERS, PROMPT_LOGPROBS, TOKEN_PROMPT

OPENAI_DEFAULT_TEMPERATURE = 1.0
# How a 400 names echo with logprobs where the deployment's vendor cannot compute them
# (inference/calls.py `check_content`): which deployments can.
ECHO_WITH_LOGPROBS = (
    "echo with logprobs (the prompt's own log-probabilities: deployments of OpenAI or of an OpenAI-compatible "
    "server, such as vLLM or llama.cpp's, compute them; the embedded engine does not)"
)
# SGP names -> the OpenAI names a caller sent, for error messages.
_PARAMETER_NAMES = {"stop_sequences": "stop", "chat_history": "messages", "prompt": "messages"}


def chat_request(body: wire.ChatCompletionBody) -> TextRequest:
    messages = _messages(body.messages)
    sampling = _sampling(body, max_tokens=body.max_completion_tokens or body.max_tokens)
    if body.logprobs is not None:
        sampling["logprobs"] = body.logprobs
    if body.top_logprobs is not None:
        sampling["top_logprobs"] = body.top_logprobs
    # A COMPLETION model on the chat route answers the last user turn (as on v4).
    last = body.messages[-1]
    prompt = _text(last.content) if isinstance(last, wire.UserMessage) else ""
    request = _validated(ChatCompletionRequest, {"chat_history": [], "prompt": prompt, **sampling})
    options: dict[str, Any] = _call_options(body)
    needs = _content_needs(body.messages)
    if needs:
        options["content_needs"] = needs
    if body.tools is not None:
        options["tools"] = tuple(tool.model_dump(exclude_none=True) for tool in body.tools)
    if body.tool_choice is not None:
        options["tool_choice"] = body.tool_choice
    if body.functions is not None:  # the deprecated form: the same call, as tools
        options["tools"] = tuple(
            {"type": "function", "function": function.model_dump(exclude_none=True)} for function in body.functions
        )
    if isinstance(body.function_call, wire.FunctionName):
        options["tool_choice"] = {"type": "function", "function": {"name": body.function_call.name}}
    elif body.function_call is not None:
        options["tool_choice"] = body.function_call
    if body.response_format is not None:
        options["response_format"] = body.response_format
    hints = {name: getattr(body, name) for name in CHAT_HINTS if getattr(body, name) is not None}
    # What means nothing without another field is not sent (OpenAI refuses both with a
    # 400): parallel_tool_calls without tools, metadata of a completion it does not store.
    meaningless = [name for name, needs in _NEEDS.items() if name in hints and not getattr(body, needs)]
    for name in meaningless:
        del hints[name]
    if hints:
        options["hints"] = hints
    return TextRequest(request, messages, options, dropped=(*meaningless, *_unsent(body)), window=CHAT_WINDOW)


def text_request(body: wire.TextCompletionBody) -> TextRequest:
    sampling = _sampling(body, max_tokens=body.max_tokens)
    if body.logprobs is not None:
        sampling["logprobs"] = True
        if body.logprobs > 0:
            sampling["top_logprobs"] = body.logprobs
    # The legacy API has none of chat's hints; what its body shares with chat's is named.
    dropped = tuple(name for name in _SHARED_HINTS if getattr(body, name) is not None) + _unsent(body)
    options = _call_options(body)
    needs: dict[str, str] = {}
    [prompt] = body.prompts()  # api/several.py makes a body of each prompt
    if body.echo and body.logprobs is not None:  # only the vendor can compute the prompt's logprobs
        options["echo"] = True
        needs[PROMPT_LOGPROBS] = ECHO_WITH_LOGPROBS
        stop = next((stop for stop in body.stop_sequences() or () if isinstance(prompt, str) and stop in prompt), None)
        if stop is not None:  # the service's stop filter reads the echoed prompt too, and would cut it there
            raise InvalidRequest(f"echo with logprobs: the prompt holds the stop sequence {stop!r}", param="stop")
    if not isinstance(prompt, str):  # token ids: for the vendors that take them
        options["prompt_token_ids"] = tuple(prompt)
        needs[TOKEN_PROMPT] = "prompts as token ids"
        prompt = " ".join(map(str, prompt))  # at least a byte an id: what the limits reserve bounds them
    if needs:
        options["content_needs"] = needs
    return TextRequest(_validated(CompletionRequest, {"prompt": prompt, **sampling}), options=options, dropped=dropped)


# Chat's hints, passed to the service (in OpenAI's names and shapes) for a vendor that
# takes them; any other vendor's call leaves them out, and the header names them
# (inference/params.py). Every hint is one of chat's: the list is decided once.
CHAT_HINTS = tuple(sorted(HINT_PARAMETERS))
_SHARED_HINTS = ("service_tier", "store", "metadata")
_NEEDS = {"parallel_tool_calls": "tools", "metadata": "store"}


def _unsent(body: wire.ChatCompletionBody | wire.TextCompletionBody) -> tuple[str, ...]:
    """What no vendor is sent, whichever serves the call: modelport writes the stream."""
    options = body.stream_options
    return ("stream_options.include_obfuscation",) if options and options.include_obfuscation is not None else ()


def _sampling(body: wire.ChatCompletionBody | wire.TextCompletionBody, *, max_tokens: int | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "temperature": OPENAI_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        "stop_sequences": body.stop_sequences(),
        "max_tokens": max_tokens,
        "top_p": body.top_p,
        "top_k": None if body.top_k is None else float(body.top_k),
        "frequency_penalty": body.frequency_penalty,
        "presence_penalty": body.presence_penalty,
        "stream": body.stream,
    }
    # Only what the caller set: the service refuses set parameters a vendor cannot honour.
    return {name: value for name, value in values.items() if value is not None}


def _call_options(body: wire.ChatCompletionBody | wire.TextCompletionBody) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # n > 1 is answered as n requests of one choice each (api/several.py), each of them here.
    if body.seed is not None:
        options["seed"] = body.seed
    if body.logit_bias is not None:
        options["logit_bias"] = dict(body.logit_bias)
    return options


def _validated(schema: type[CompletionRequest], values: dict[str, Any]) -> Any:
    # The v4 request takes 4 stop sequences; the surface's own bound was checked, and the
    # vendor's is (inference/calls.py): the request is checked with 4, then given them all.
    stops = values.get("stop_sequences")
    if stops is not None:
        values = {**values, "stop_sequences": stops[:MAX_STOP_SEQUENCES]}
    try:
        request = schema.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else "request"
        name = _PARAMETER_NAMES.get(field, field)
        raise InvalidRequest(f"invalid {name}: {error['msg']}", param=name) from exc
    return request.model_copy(update={"stop_sequences": stops}) if stops is not None else request


# The content parts only some vendors take (vendors/base.py OPENAI_CONTENT), as errors name them.
_PART_NEEDS = {"file": "file content parts", "input_audio": "input_audio content parts"}


def _content_needs(messages: list[wire.Message]) -> dict[str, str]:
    kinds = {
        part.type
        for message in messages
        if isinstance(message, wire.UserMessage) and not isinstance(message.content, str)
        for part in message.content
    }
    return {kind: shown for kind, shown in _PART_NEEDS.items() if kind in kinds}


def _text(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, wire.TextPart))


def _messages(messages: list[wire.Message]) -> tuple[dict[str, Any], ...]:
    """The messages as the adapters take them. The deprecated functions API's turns become
    tool turns: an assistant's `function_call` a tool call with an id of its own, and the
    `function` message after it that call's result (the API has no ids: a result belongs
    to the last call before it)."""
    turns: list[dict[str, Any]] = []
    last_call_id = ""
    for index, message in enumerate(messages):
        if isinstance(message, wire.FunctionMessage):
            turns.append({"role": "tool", "tool_call_id": last_call_id, "content": message.content or ""})
            continue
        turn = _message(message)
        if isinstance(message, wire.AssistantMessage) and message.function_call is not None:
            last_call_id = f"call_function_{index}"
            call = {"id": last_call_id, "type": "function", "function": message.function_call.model_dump()}
            turn["tool_calls"] = [*turn.get("tool_calls", []), call]
        turns.append(turn)
    return tuple(turns)


def _message(message: wire.Message) -> dict[str, Any]:
    """One message as the adapters take it (OpenAI-style dicts, system for developer)."""
    if isinstance(message, wire.SystemMessage):
        return {"role": "system", "content": _text(message.content)}
    if isinstance(message, wire.UserMessage):
        if isinstance(message.content, str):
            return {"role": "user", "content": message.content}
        return {"role": "user", "content": [part.model_dump(exclude_none=True) for part in message.content]}
    if isinstance(message, wire.AssistantMessage):
        turn: dict[str, Any] = {"role": "assistant", "content": _text(message.content)}
        if message.tool_calls:
            turn["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        return turn
    assert isinstance(message, wire.ToolMessage)  # function messages are turned into these by `_messages`
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": _text(message.content)}


# --- responses --------------------------------------------------------------------------


def completion_id(prefix: str) -> str:
    return f"{prefix}-{hex_id()}"


def _usage(piece: Generated) -> wire.Usage:
    prompt, completion = piece.prompt_tokens or 0, piece.response_tokens or 0
    # Always there, as OpenAI sends it: the part of prompt_tokens read from the prompt cache.
    details = wire.PromptTokensDetails(cached_tokens=piece.cached_prompt_tokens or 0)
    total = prompt + completion
    return wire.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        prompt_tokens_details=details,
        cost=piece.cost,
    )


def _chat_logprobs(entries: list[GeneratedLogprob]) -> wire.ChoiceLogprobs:
    return wire.ChoiceLogprobs(content=wire_logprobs(entries))


def _tool_calls(calls: list[dict[str, Any]]) -> list[wire.ResponseToolCall]:
    return [
        wire.ResponseToolCall(
            id=str(call.get("id") or completion_id("call")),
            function=wire.ResponseFunctionCall(
                name=str(call["function"]["name"]), arguments=str(call["function"].get("arguments") or "")
            ),
        )
        for call in calls
    ]


def _finish(body: wire.ChatCompletionBody, finish_reason: FinishReason) -> wire.ChatFinishReason:
    """The deprecated functions API's name for a stop to call a function."""
    return "function_call" if body.legacy_functions and finish_reason == "tool_calls" else finish_reason


def chat_completion(body: wire.ChatCompletionBody, generated: Generated) -> wire.ChatCompletion:
    tool_calls = _tool_calls(generated.tool_calls) if generated.tool_calls else None
    message = wire.ResponseMessage(content=generated.text if generated.text or not tool_calls else None)
    if body.legacy_functions and tool_calls:
        # One call in the deprecated API: the first (the model was offered no parallel calls).
        message.function_call = tool_calls[0].function
    else:
        message.tool_calls = tool_calls
    return wire.ChatCompletion(
        id=completion_id("chatcmpl"),
        created=int(time.time()),
        model=body.model,
        choices=[
            wire.ChatChoice(
                index=0,
                message=message,
                finish_reason=_finish(body, generated.finish_reason or "stop"),
                logprobs=_chat_logprobs(generated.logprobs) if body.logprobs else None,
            )
        ],
        usage=_usage(generated),
    )


async def chat_chunks(
    body: wire.ChatCompletionBody, pieces: AsyncIterator[Generated], *, templated: bool = True
) -> AsyncIterator[wire.ChatCompletionChunk | EncodedEvent]:
    """OpenAI's stream: the role first, then content and tool-call deltas, then the finish
    reason in a chunk of its own, then (with `stream_options.include_usage`) the usage in
    a chunk with no choices.

    A content delta without log-probabilities, nearly every event, is the same bytes every
    time but for its text: it is made from a template, the chunk's id, time and model
    encoded once rather than once a token (byte for byte what the chunk's model writes,
    `tests/compat/test_openai_chunk_template.py`); the other events go through the model.
    Not `templated`: every event is its model, for a caller that changes them (several
    choices merged into one stream, `api/several.py`)."""
    identity = {"id": completion_id("chatcmpl"), "created": int(time.time()), "model": body.model}
    head, tail = content_delta_template(identity)

    def chunk(delta: wire.ChunkDelta, **fields: Any) -> wire.ChatCompletionChunk:
        return wire.ChatCompletionChunk(**identity, choices=[wire.ChunkChoice(index=0, delta=delta, **fields)])

    yield chunk(wire.ChunkDelta(role="assistant", content=""))
    async for piece in pieces:
        if piece.text or piece.logprobs:
            if body.logprobs:
                yield chunk(wire.ChunkDelta(content=piece.text), logprobs=_chat_logprobs(piece.logprobs))
            elif templated:
                yield EncodedEvent(head + orjson.dumps(piece.text) + tail)
            else:
                yield chunk(wire.ChunkDelta(content=piece.text))
        if piece.tool_calls:
            deltas = [wire.DeltaToolCall.model_validate(call) for call in piece.tool_calls]
            if not body.legacy_functions:
                yield chunk(wire.ChunkDelta(tool_calls=deltas))
            else:  # the deprecated API streams its one call's name and arguments
                for delta in deltas:
                    if delta.index == 0 and delta.function is not None:
                        yield chunk(wire.ChunkDelta(function_call=delta.function))
        if piece.finish_reason is not None:
            yield chunk(wire.ChunkDelta(), finish_reason=_finish(body, piece.finish_reason))
            if body.include_usage():
                yield wire.ChatCompletionChunk(**identity, choices=[], usage=_usage(piece))


def content_delta_template(identity: dict[str, Any]) -> tuple[bytes, bytes]:
    """The bytes of a content delta's chunk before and after its text (JSON-encoded)."""
    head = (
        b'{"id":' + orjson.dumps(identity["id"]) + b',"object":"chat.completion.chunk","created":'
        + orjson.dumps(identity["created"]) + b',"model":' + orjson.dumps(identity["model"])
        + b',"choices":[{"index":0,"delta":{"content":'
    )  # fmt: skip
    return head, b"}}]}"


def _text_logprobs(entries: list[GeneratedLogprob], offset: int) -> wire.TextLogprobs:
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return wire.TextLogprobs(
        tokens=[entry.token for entry in entries],
        token_logprobs=[entry.logprob for entry in entries],
        # An echoed prompt's first token has neither (null), as OpenAI sends it.
        top_logprobs=[
            None if entry.logprob is None else {alt.token: alt.logprob for alt in entry.top_logprobs}
            for entry in entries
        ],
        text_offset=offsets,
    )


def _text_finish(generated: Generated) -> Any:
    # The legacy API has no tool calls; what stopped for one stopped all the same.
    return "stop" if generated.finish_reason == "tool_calls" else generated.finish_reason


def text_completion(body: wire.TextCompletionBody, generated: Generated) -> wire.TextCompletion:
    logprobs = _text_logprobs(generated.logprobs, 0) if body.logprobs is not None else None
    return wire.TextCompletion(
        id=completion_id("cmpl"),
        created=int(time.time()),
        model=body.model,
        choices=[
            wire.TextChoice(index=0, text=generated.text, finish_reason=_text_finish(generated), logprobs=logprobs)
        ],
        usage=_usage(generated),
    )


async def text_chunks(
    body: wire.TextCompletionBody, pieces: AsyncIterator[Generated]
) -> AsyncIterator[wire.TextCompletion]:
    identity = {"id": completion_id("cmpl"), "created": int(time.time()), "model": body.model}
    offset = 0
    async for piece in pieces:
        logprobs = _text_logprobs(piece.logprobs, offset) if body.logprobs is not None else None
        offset += len(piece.text)
        choice = wire.TextChoice(index=0, text=piece.text, finish_reason=_text_finish(piece), logprobs=logprobs)
        yield wire.TextCompletion(**identity, choices=[choice])
        if piece.finish_reason is not None and body.include_usage():
            yield wire.TextCompletion(**identity, choices=[], usage=_usage(piece))
