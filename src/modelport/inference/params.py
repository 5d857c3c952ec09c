"""Request parameters against a deployment: defaults, clamping, vendor abilities.

Everything here is pure: it takes the request and what the vendor can do, and either
returns the effective settings or raises the error the caller should see.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

from modelport.errors import InvalidRequest, ValidationFailed
from modelport.generation import GenerationCall, Sampling
from modelport.schemas.inference import CompletionRequest
from modelport.vendors.base import HINT_PARAMETERS, OPTIONAL_PARAMETERS, Capabilities

# The optional parameters that live on the GenerationCall rather than on Sampling
# (the OpenAI-compatible surfaces set them; the SGP v4 request has none of them).
CALL_PARAMETERS = ("tools", "tool_choice", "response_format", "seed", "logit_bias", "n")


def call_parameters(call: GenerationCall) -> set[str]:
    """The GenerationCall-level optional parameters this call actually asks for.

    Defaults ask for nothing: `n` of 1 and `response_format` `{"type": "text"}` (what
    many clients send explicitly) are what every vendor does anyway.
    """
    asked: set[str] = set()
    for name in CALL_PARAMETERS:
        value = getattr(call, name)
        if name == "n":
            if value != 1:
                asked.add(name)
        elif name == "response_format":
            if value is not None and value.get("type", "text") != "text":
                asked.add(name)
        elif value is not None:
            asked.add(name)
    asked.update(call.hints or ())
    return asked


@dataclass(frozen=True, slots=True)
class CallBounds:
    """How many messages and tools one call may carry (config.py's Bounds section).

    The body limit bounds their bytes; these bound their count, which is what every
    later step (templates, token estimates, vendor translations) walks item by item."""

    max_messages: int = 10_000
    max_tools: int = 512


def check_call_bounds(call: GenerationCall, bounds: CallBounds) -> None:
    """400 naming the setting when a call carries more messages or tools than allowed."""
    if call.messages is not None and len(call.messages) > bounds.max_messages:
        raise InvalidRequest(
            f"the request has {len(call.messages)} messages; this server takes at most {bounds.max_messages} "
            "(MODELPORT_MAX_MESSAGES)",
            param="messages",
        )
    if call.tools is not None and len(call.tools) > bounds.max_tools:
        raise InvalidRequest(
            f"the request has {len(call.tools)} tools; this server takes at most {bounds.max_tools} "
            "(MODELPORT_MAX_TOOLS)",
            param="tools",
        )


def without_parameters(call: GenerationCall, dropped: AbstractSet[str]) -> GenerationCall:
    """The call with its dropped GenerationCall-level parameters reset to their defaults,
    and its dropped hints left out."""
    resets: dict[str, Any] = {name: (1 if name == "n" else None) for name in CALL_PARAMETERS if name in dropped}
    if call.hints and dropped & call.hints.keys():
        kept = {name: value for name, value in call.hints.items() if name not in dropped}
        resets["hints"] = kept or None
    return replace(call, **resets) if resets else call


def check_supported(
    request: CompletionRequest | None,
    capabilities: Capabilities,
    *,
    drop_unsupported: bool,
    call: GenerationCall | None = None,
) -> set[str]:
    """Return the parameters to drop; refuse (400) the unsupported ones unless dropping.

    Checks the request's explicit parameters and, when given, the call's
    GenerationCall-level ones (`call_parameters`); either may be left out. Hints
    (HINT_PARAMETERS) the vendor does not honour are always dropped, never refused: a
    model that cannot think answers without thinking. Whoever drops names what it
    dropped to the caller (the x-modelport-dropped header, `calls.text_call`).
    """
    asked = (request.explicit_parameters() if request is not None else set()) & (OPTIONAL_PARAMETERS | HINT_PARAMETERS)
    if call is not None:
        asked |= call_parameters(call)
    unheeded_hints = (asked & HINT_PARAMETERS) - capabilities.parameters
    unsupported = asked - capabilities.parameters - unheeded_hints
    if unsupported and not drop_unsupported:
        names = ", ".join(sorted(unsupported))
        raise InvalidRequest(
            f"{names} {'is' if len(unsupported) == 1 else 'are'} not supported by vendor "
            f"{capabilities.vendor}; remove {'it' if len(unsupported) == 1 else 'them'}, or set "
            "drop_unsupported_params in the model's creation parameters to drop such parameters",
            unsupported_parameters=sorted(unsupported),
        )
    return unsupported | unheeded_hints


def effective_sampling(
    request: CompletionRequest,
    capabilities: Capabilities,
    *,
    dropped: AbstractSet[str] = frozenset(),
) -> Sampling:
    """The sampling settings to send: defaults applied, temperature clamped to the
    vendor's ceiling (SPEC 3.1: 'defaults to the max value'), dropped parameters cleared."""

    def keep(name: str) -> Any:
        return None if name in dropped else getattr(request, name)

    top_k = keep("top_k")
    return Sampling(
        temperature=min(request.temperature, capabilities.max_temperature),
        max_tokens=request.max_tokens,
        top_p=keep("top_p"),
        top_k=int(top_k) if top_k is not None else None,
        frequency_penalty=keep("frequency_penalty"),
        presence_penalty=keep("presence_penalty"),
        stop_sequences=tuple(keep("stop_sequences") or ()),
        logprobs=bool(keep("logprobs")),
        top_logprobs=keep("top_logprobs") or 0,
        reasoning_effort=keep("reasoning_effort"),
    )


_BINDING_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def check_bindings(schema: list[dict[str, Any]], bindings: dict[str, Any]) -> None:
    """Check `model_request_parameters.bindings` against a model's parameter schema (422)."""
    declared = {str(entry["name"]): entry for entry in schema}
    problems: list[str] = []
    for name in sorted(bindings.keys() - declared.keys()):
        problems.append(f"unknown parameter {name!r}")
    for name, entry in sorted(declared.items()):
        if name not in bindings:
            if entry.get("required"):
                problems.append(f"missing required parameter {name!r}")
            continue
        value = bindings[name]
        expected = _BINDING_TYPES.get(str(entry.get("type")), (str,))
        # bool is an int in Python; a declared int or float must not accept true/false.
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            problems.append(f"parameter {name!r} must be of type {entry.get('type')}")
    if problems:
        raise ValidationFailed("invalid model_request_parameters: " + "; ".join(problems), errors=problems)
