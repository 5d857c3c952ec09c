"""Chat templates and model-setting placeholders, rendered in the budgeted sandbox.

Templates may come from a request (`chat_template`), so they are untrusted code: they
render in an immutable sandbox (`prompts/sandbox.py`) within a budget of time and size
(`prompts/budget.py`); anything refused, any overrun and any error in the template
becomes a `TemplateRenderError` (HTTP 400).

Renders are synchronous and can take up to `MAX_RENDER_SECONDS`: request handlers call
`render_chat_async`, which renders on the render pool's threads (never on the event
loop), in a fair share per account (`prompts/render_pool.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec

from modelport.errors import TemplateRenderError
from modelport.prompts.budget import Budget
from modelport.prompts.render_pool import render_pool, render_scope
from modelport.prompts.sandbox import SERVER_GLOBALS, compile_template, render_budgeted

# The names Hugging Face chat templates expect to find. `chat_template_kwargs` may add
# more, but may not replace these or the messages.
RESERVED_NAMES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})

P = ParamSpec("P")


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    extra: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render `messages` with a chat template, in the sandbox, within the budget.
    Takes up to `MAX_RENDER_SECONDS`: in a request, use `render_chat_async`."""
    variables: dict[str, Any] = dict(extra or {})
    clash = (RESERVED_NAMES | SERVER_GLOBALS) & variables.keys()
    if clash:
        raise TemplateRenderError(f"chat_template_kwargs may not set {', '.join(sorted(clash))}: the server sets them")
    variables.update(
        messages=[dict(message) for message in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    compiled = compile_template(template)
    budget = Budget.for_inputs(variables)
    return render_budgeted(
        compiled, variables, budget, subject="chat_template", failed="chat_template failed to render"
    )


def _on_render_pool(render: Callable[P, str]) -> Callable[P, Coroutine[Any, Any, str]]:
    """`render`, on the render pool's threads, so that a slow template delays only its
    own request, counted against the account of the request being served
    (`render_scope`), whose limits then reserve the prompt it made."""

    async def rendered(*args: P.args, **kwargs: P.kwargs) -> str:
        scope = render_scope.get()
        account = scope.account if scope is not None else ""
        text = await render_pool().run(account, functools.partial(render, *args, **kwargs))
        if scope is not None and scope.on_rendered is not None:
            await scope.on_rendered(text)
        return text

    return rendered


# `render_chat`, with the same arguments, for a request (see `_on_render_pool`).
render_chat_async = _on_render_pool(render_chat)


async def substitute_bindings_async(settings: Any, bindings: Mapping[str, Any], *, account: str) -> Any:
    """`substitute_bindings` on the render pool, in `account`'s share: placeholders
    render in the same sandbox as chat templates, and can cost as much."""
    return await render_pool().run(account, functools.partial(substitute_bindings, settings, bindings))


def substitute_bindings(settings: Any, bindings: Mapping[str, Any]) -> Any:
    """Fill `{{ name }}` placeholders in a model's settings (any nesting of dicts and
    lists) with request bindings, rendered in the same sandbox as chat templates. All
    the placeholders of one call share one budget."""
    return _substitute(settings, dict(bindings), None)


def _substitute(settings: Any, bindings: dict[str, Any], budget: Budget | None) -> Any:
    if isinstance(settings, str):
        if "{{" not in settings and "{%" not in settings:
            return settings
        budget = budget or Budget.for_inputs(bindings)
        return render_budgeted(
            compile_template(settings),
            dict(bindings),
            budget,
            subject="a model setting",
            failed="a model setting failed to render with the bindings",
        )
    if isinstance(settings, dict):
        budget = budget or Budget.for_inputs(bindings)
        return {key: _substitute(value, bindings, budget) for key, value in settings.items()}
    if isinstance(settings, list):
        budget = budget or Budget.for_inputs(bindings)
        return [_substitute(value, bindings, budget) for value in settings]
    return settings
