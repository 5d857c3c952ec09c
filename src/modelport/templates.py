"""Chat templates: Jinja2 rendered in an immutable sandbox.

Templates may come from a request (`chat_template`), so they are untrusted code: the
sandbox blocks attribute access to internals (`__class__`, `__globals__`, ...), calls
to unsafe methods, mutation of the values passed in, and huge `range()`s. Anything it
refuses, and any error in the template, becomes a `TemplateRenderError` (HTTP 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelport.errors import TemplateRenderError

# The names Hugging Face chat templates expect to find. `chat_template_kwargs` may add
# more, but may not replace these or the messages.
RESERVED_NAMES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # trim_blocks/lstrip_blocks match how transformers renders chat templates, so a
    # template copied from a model card gives the same prompt here.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except TemplateError as exc:
        raise TemplateRenderError(f"chat_template does not compile: {exc}") from exc


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    extra: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render `messages` with a chat template, in the sandbox."""
    variables: dict[str, Any] = dict(extra or {})
    clash = RESERVED_NAMES & variables.keys()
    if clash:
        raise TemplateRenderError(f"chat_template_kwargs may not set {', '.join(sorted(clash))}: the server sets them")
    variables.update(
        messages=[dict(message) for message in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    compiled = _compile(template)
    try:
        return compiled.render(variables)
    except SecurityError as exc:
        raise TemplateRenderError(f"chat_template tried an operation the sandbox forbids: {exc}") from exc
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"chat_template failed to render: {exc}") from exc


def substitute_bindings(settings: Any, bindings: Mapping[str, Any]) -> Any:
    """Fill `{{ name }}` placeholders in a model's settings (any nesting of dicts and
    lists) with request bindings, rendered in the same sandbox as chat templates."""
    if isinstance(settings, str):
        if "{{" not in settings and "{%" not in settings:
            return settings
        try:
            return _compile(settings).render(dict(bindings))
        except SecurityError as exc:
            raise TemplateRenderError(f"a model setting tried an operation the sandbox forbids: {exc}") from exc
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateRenderError(f"a model setting failed to render with the bindings: {exc}") from exc
    if isinstance(settings, dict):
        return {key: substitute_bindings(value, bindings) for key, value in settings.items()}
    if isinstance(settings, list):
        return [substitute_bindings(value, bindings) for value in settings]
    return settings
