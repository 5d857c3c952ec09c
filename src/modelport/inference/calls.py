"""What a text request becomes: the `GenerationCall` a vendor adapter receives.

Every surface hands the service the same three things (see `compat/`): the sampling
parameters as an SGP `CompletionRequest` (so ranges, clamping and vendor abilities are
checked once, the same way), the messages as OpenAI-style dicts for a chat request, and
the call-level parameters (tools, response_format, ...) as options.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling
from modelport.inference.params import CallBounds, check_call_bounds, check_supported, without_parameters
from modelport.limits.pricing import prompt_token_bound
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest
from modelport.vendors.base import Capabilities, Target

CHAT_TYPES = frozenset({"CHAT_COMPLETION"})
TEXT_TYPES = frozenset({"CHAT_COMPLETION", "COMPLETION"})


def text_call(
    request: CompletionRequest,
    sampling: Sampling,
    *,
    model_type: str,
    capabilities: Capabilities,
    target: Target,
    dropped: set[str],
    messages: tuple[dict[str, Any], ...] | None,
    options: dict[str, Any] | None,
    bounds: CallBounds,
    default_max_tokens: int,
) -> GenerationCall:
    """The call for a chat model (messages) or a completion model (the prompt alone),
    its call-level options checked like the sampling parameters, within `bounds`, with
    its `max_tokens` decided (`max_tokens_for`)."""
    if isinstance(request, ChatCompletionRequest) and model_type in CHAT_TYPES:
        assert messages is not None, "every surface sends a chat request's messages (compat/)"
        check_images(messages, capabilities)
        call = GenerationCall(
            sampling=sampling,
            messages=messages,
            chat_template=None if "chat_template" in dropped else request.chat_template,
            chat_template_kwargs=None if "chat_template_kwargs" in dropped else request.chat_template_kwargs,
        )
    else:
        # A completion model called on chat-completions answers the prompt alone
        # (the platform's documented behaviour: history is disregarded).
        call = GenerationCall(sampling=sampling, prompt=request.prompt)
    if options:  # the compatible surfaces' call-level parameters, checked like the others
        call = replace(call, **options)
        drop = bool(target.settings.drop_unsupported_params)
        call = without_parameters(call, check_supported(None, capabilities, drop_unsupported=drop, call=call))
    check_call_bounds(call, bounds)
    max_tokens, bound = max_tokens_for(call, capabilities, target.context_window, default_max_tokens)
    return replace(call, sampling=replace(call.sampling, max_tokens=max_tokens), response_token_bound=bound)


def max_tokens_for(
    call: GenerationCall, capabilities: Capabilities, context_window: int | None, default_max_tokens: int
) -> tuple[int | None, int]:
    """(what the vendor is sent as max_tokens, the most tokens the answer can have):
    decided here, once, before admission, so the limits reserve the second (SPEC 3.1).

    - The request's own value, unchanged: whoever knows the prompt's real token count
      (the embedded engine, or the upstream) refuses one that does not fit the window,
      naming both numbers.
    - Else the vendor family's default (`Capabilities.default_max_tokens`: LLM Engine
      100; Anthropic 10,000, capped at the model's output limit), likewise unchanged:
      trimming it here could only use the prompt's byte count, which for a long prompt
      would leave a one-token answer where the real tokens fit.
    - Else the vendor's own default, which fills the window: nothing is sent (an OpenAI
      model's output cap may be below the window, and a number past it is a 400), except
      to a vendor that must be told (`fills_window`) of a model whose window is known.
      The answer can have what the window leaves, or with no window known the server's
      default (MODELPORT_LIMITS_DEFAULT_MAX_TOKENS).

    What the window leaves is counted with the prompt at its upper bound (a token is at
    least a byte, `prompt_token_bound`), so that it always fits.
    """
    if call.sampling.max_tokens is not None:
        return call.sampling.max_tokens, call.sampling.max_tokens
    if capabilities.default_max_tokens is not None:
        return capabilities.default_max_tokens, capabilities.default_max_tokens
    if not context_window:
        return None, default_max_tokens
    room = max(1, context_window - prompt_token_bound(call))
    return (room if capabilities.fills_window else None), room


def check_images(messages: tuple[dict[str, Any], ...], capabilities: Capabilities) -> None:
    """400 when a message holds an image and the deployment's model cannot take one."""
    for message in messages:
        content = message.get("content")
        has_images = isinstance(content, list) and any(part.get("type") != "text" for part in content)
        if has_images and not capabilities.accepts_images:
            raise InvalidRequest(
                f"this deployment's model (vendor {capabilities.vendor}) cannot take images; send text content only"
            )
