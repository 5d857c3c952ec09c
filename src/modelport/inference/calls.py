"""What a text request becomes: the `GenerationCall` a vendor adapter receives.

Every surface hands the service the same three things (see `compat/`): the sampling
parameters as an SGP `CompletionRequest` (so ranges, clamping and vendor abilities are
checked once, the same way), the messages as OpenAI-style dicts for a chat request, and
the call-level parameters (tools, response_format, ...) as options.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling
from modelport.inference.params import CallBounds, check_call_bounds, check_supported, without_parameters
from modelport.limits.pricing import prompt_token_bound
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest
from modelport.vendors.base import Capabilities, Target

CHAT_TYPES = frozenset({"CHAT_COMPLETION"})
TEXT_TYPES = frozenset({"CHAT_COMPLETION", "COMPLETION"})


@dataclass(frozen=True, slots=True)
class WindowRules:
    """How a surface's max_tokens meets the context window (`max_tokens_for`).

    The SGP v4 routes keep the platform's rules (SPEC 3.1): the vendor family's default
    when absent, a 400 naming both numbers when too large. The OpenAI-compatible
    surfaces follow OpenAI: chat without max_tokens gets what the window leaves
    (`fill`), and a max_tokens the window can never hold is clamped to it (`clamp`),
    said so in the x-modelport-dropped header."""

    fill: bool = False
    clamp: bool = False


V4_WINDOW = WindowRules()


@dataclass(frozen=True, slots=True)
class MaxTokens:
    """What the vendor is sent as max_tokens, the most tokens the answer can have (what
    the limits reserve), and, when a too-large request was clamped, how the header says
    so (`max_tokens=clamped:N`, or `max_tokens=clamped` where the vendor itself fills
    what the window leaves with the prompt's real token count)."""

    sent: int | None
    bound: int
    clamped: str | None = None


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
    window: WindowRules = V4_WINDOW,
) -> tuple[GenerationCall, tuple[str, ...]]:
    """The call for a chat model (messages) or a completion model (the prompt alone),
    its call-level options checked like the sampling parameters, within `bounds`, with
    its `max_tokens` decided (`max_tokens_for`); and what was left out of it or changed
    (`dropped`, the options' dropped hints and parameters, a clamped max_tokens), in the
    x-modelport-dropped header's terms."""
    changes = sorted(dropped)
    check_content((options or {}).get("content_needs"), capabilities, target)
    check_stop_sequences(sampling, capabilities, target)
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
        dropped_options = check_supported(None, capabilities, drop_unsupported=drop, call=call)
        changes += sorted(dropped_options - dropped)
        call = _effort_as_sampling(without_parameters(call, dropped_options))
    check_call_bounds(call, bounds)
    decided = max_tokens_for(call, capabilities, target.context_window, default_max_tokens, window=window)
    if decided.clamped:
        changes.append(decided.clamped)
    sampling = call.sampling
    if decided.sent != sampling.max_tokens:  # mostly the request's own, kept: no copy
        sampling = replace(sampling, max_tokens=decided.sent)
    return replace(call, sampling=sampling, response_token_bound=decided.bound), tuple(changes)


def _effort_as_sampling(call: GenerationCall) -> GenerationCall:
    """A kept `reasoning_effort` hint goes where every adapter reads it (the v4
    request's own `reasoning_effort` is already there)."""
    if not call.hints or "reasoning_effort" not in call.hints:
        return call
    hints = {name: value for name, value in call.hints.items() if name != "reasoning_effort"}
    effort = call.hints["reasoning_effort"]
    return replace(call, sampling=replace(call.sampling, reasoning_effort=effort), hints=hints or None)


def max_tokens_for(
    call: GenerationCall,
    capabilities: Capabilities,
    context_window: int | None,
    default_max_tokens: int,
    *,
    window: WindowRules = V4_WINDOW,
) -> MaxTokens:
    """What the vendor is sent as max_tokens and the most tokens the answer can have:
    decided here, once, before admission, so the limits reserve the second (SPEC 3.1).

    - The request's own value, unchanged: whoever knows the prompt's real token count
      (the embedded engine, or the upstream) refuses one that does not fit the window,
      naming both numbers. Except, on the compatible surfaces (`window.clamp`), a value
      that no prompt could fit with (at least the whole window) is clamped: sent as
      nothing to a vendor that then fills what the window leaves itself, else as what
      the window leaves with the prompt at its upper bound.
    - Else the vendor family's default (`Capabilities.default_max_tokens`: LLM Engine
      100; Anthropic 10,000, capped at the model's output limit), likewise unchanged:
      trimming it here could only use the prompt's byte count, which for a long prompt
      would leave a one-token answer where the real tokens fit. On the compatible
      surfaces' chat (`window.fill`) a platform default (`platform_default`: LLM Engine's
      100) gives way to the next rule, as OpenAI's chat fills the window.
    - Else the vendor's own default, which fills the window: nothing is sent (an OpenAI
      model's output cap may be below the window, and a number past it is a 400; the
      embedded engine fills what the window leaves with the prompt's real token count),
      except to a vendor that must be told (`fills_window`) of a model whose window is
      known. The answer can have what the window leaves, or with no window known the
      server's default (MODELPORT_LIMITS_DEFAULT_MAX_TOKENS).

    What the window leaves is counted with the prompt at its upper bound (a token is at
    least a byte, `prompt_token_bound`), so that it always fits.
    """
    requested = call.sampling.max_tokens
    fills_itself = not capabilities.fills_window and (
        capabilities.default_max_tokens is None or capabilities.platform_default
    )
    if requested is not None:
        if not (window.clamp and context_window and requested >= context_window):
            return MaxTokens(requested, requested)
        room = max(1, context_window - prompt_token_bound(call))
        if fills_itself:
            return MaxTokens(None, room, "max_tokens=clamped")
        return MaxTokens(room, room, f"max_tokens=clamped:{room}")
    default = capabilities.default_max_tokens
    if default is not None and not (window.fill and capabilities.platform_default):
        return MaxTokens(default, default)
    if not context_window:
        if default is not None:  # a platform default, where there is no window to fill
            return MaxTokens(default, default)
        return MaxTokens(None, default_max_tokens)
    room = max(1, context_window - prompt_token_bound(call))
    return MaxTokens(room if capabilities.fills_window else None, room)


def check_content(needs: dict[str, str] | None, capabilities: Capabilities, target: Target) -> None:
    """400 naming what the request carries that the deployment's vendor cannot take
    (Anthropic's documents and server tools, OpenAI's files and audio, ...), and the
    deployment: they are never dropped, which would answer another question."""
    missing = [shown for kind, shown in (needs or {}).items() if kind not in capabilities.content_kinds]
    if missing:
        raise InvalidRequest(
            f"deployment {target.deployment_id} (vendor {capabilities.vendor}) cannot take {', '.join(missing)}; "
            "remove them or call a deployment whose vendor takes them"
        )


def check_stop_sequences(sampling: Sampling, capabilities: Capabilities, target: Target) -> None:
    """400 when a call has more stop sequences than the deployment's vendor takes."""
    count, most = len(sampling.stop_sequences), capabilities.max_stop_sequences
    if count > most:
        raise InvalidRequest(
            f"the request has {count} stop sequences; deployment {target.deployment_id} "
            f"(vendor {capabilities.vendor}) takes at most {most}"
        )


def check_images(messages: tuple[dict[str, Any], ...], capabilities: Capabilities) -> None:
    """400 when a message holds an image and the deployment's model cannot take one."""
    for message in messages:
        content = message.get("content")
        has_images = isinstance(content, list) and any(part.get("type") != "text" for part in content)
        if has_images and not capabilities.accepts_images:
            raise InvalidRequest(
                f"this deployment's model (vendor {capabilities.vendor}) cannot take images; send text content only"
            )
