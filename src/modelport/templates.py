"""Chat templates: Jinja2 rendered in an immutable, bounded sandbox.

Templates may come from a request (`chat_template`), so they are untrusted code: the
sandbox blocks attribute access to internals (`__class__`, `__globals__`, ...), calls
to unsafe methods and mutation of the values passed in. On top of that a render is
*bounded*, so that one request cannot freeze the server or take its memory:
* time: a trace hook on the template's own code ends a render that runs past
  `RENDER_SECONDS` (any loop, whatever it iterates over);
* loops: `range()` counts iterations across the whole render, not per call, so nested
  loops cannot multiply past `MAX_ITERATIONS`;
* size: `*`, `**`, `+` and `%` are checked before they build a value, padding filters
  and format widths are capped, and the output stops at `MAX_OUTPUT_CHARS`.
Rendering runs on a worker thread (`render_chat_async`), never on the event loop.
Anything refused, and any error in the template, is a `TemplateRenderError` (400).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from types import FrameType
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelport.errors import TemplateRenderError

# The names Hugging Face chat templates expect to find. `chat_template_kwargs` may add
# more, but may not replace these or the messages.
RESERVED_NAMES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})

# A real chat template renders in well under a millisecond, loops over the messages
# once or twice and produces about the size of the request; these leave ample room.
RENDER_SECONDS = 1.0
MAX_ITERATIONS = 100_000
MAX_OUTPUT_CHARS = 4 * 1024 * 1024  # the largest request body is 4 MiB by default
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
MAX_EXPONENT_BITS = 4096
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\d+)|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


class RenderLimitExceeded(SecurityError):
    pass


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _check_format(fmt: str) -> None:
    for match in _WIDE_FORMAT.finditer(fmt):
        width = int(match.group(1) or match.group(2))
        if width > MAX_VALUE_CHARS:
            raise RenderLimitExceeded(f"a format width of {width} is over the limit of {MAX_VALUE_CHARS}")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with operators that check what they would build."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            huge = isinstance(left, int) and isinstance(right, int) and abs(left) > 1
            if huge and right * abs(left).bit_length() > MAX_EXPONENT_BITS:
                raise RenderLimitExceeded(f"{left} ** {right} is over the size limit for numbers")
        elif operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if _size(sequence) and isinstance(count, int) and _size(sequence) * count > MAX_VALUE_CHARS:
                    raise RenderLimitExceeded(f"repeating a value {count} times is over the limit of {MAX_VALUE_CHARS}")
        elif operator == "+":
            if _size(left) + _size(right) > MAX_VALUE_CHARS:
                raise RenderLimitExceeded(f"joining these values is over the limit of {MAX_VALUE_CHARS}")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # `'{:>999999999}'.format(x)`: the format string is checked when `.format` is looked up.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str):
            _check_format(owner)
        return super().wrap_str_format(value)


def _bounded_width(filter_function: Callable[..., Any], argument: int) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        width = args[argument] if len(args) > argument else next(iter(kwargs.values()), 0)
        if isinstance(width, int) and width > MAX_VALUE_CHARS:
            raise RenderLimitExceeded(f"a width of {width} is over the limit of {MAX_VALUE_CHARS}")
        return filter_function(*args, **kwargs)

    return bounded


@lru_cache(maxsize=1)
def _environment() -> BoundedSandbox:
    # trim_blocks/lstrip_blocks match how transformers renders chat templates, so a
    # template copied from a model card gives the same prompt here.
    env = BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    for name in ("center", "indent", "wordwrap", "truncate"):
        env.filters[name] = _bounded_width(env.filters[name], 1)
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except TemplateError as exc:
        raise TemplateRenderError(f"chat_template does not compile: {exc}") from exc


class _Budget:
    """One render's allowance of time and loop iterations."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + RENDER_SECONDS
        self.iterations = 0

    def range(self, *args: int) -> range:
        numbers = range(*args)
        self.iterations += len(numbers)
        if self.iterations > MAX_ITERATIONS:
            raise RenderLimitExceeded(f"the template loops more than {MAX_ITERATIONS} times in all")
        return numbers

    def trace(self, frame: FrameType, event: str, _arg: Any) -> Any:
        # Only the template's own code is traced line by line: a check per line costs
        # little there, and nothing elsewhere.
        if event == "call":
            return self.trace if frame.f_code.co_filename == "<template>" else None
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"the template ran longer than {RENDER_SECONDS:g} s")
        return self.trace


def _render(compiled: jinja2.Template, variables: dict[str, Any]) -> str:
    budget = _Budget()
    variables["range"] = budget.range
    pieces: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(budget.trace)
    try:
        for piece in compiled.generate(variables):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise RenderLimitExceeded(f"the template's output is over the limit of {MAX_OUTPUT_CHARS} characters")
            pieces.append(piece)
    finally:
        sys.settrace(previous)
    return "".join(pieces)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    extra: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render `messages` with a chat template, in the bounded sandbox."""
    variables: dict[str, Any] = dict(extra or {})
    clash = (RESERVED_NAMES | {"range"}) & variables.keys()
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
        return _render(compiled, variables)
    except RenderLimitExceeded as exc:
        raise TemplateRenderError(f"chat_template is too costly to render: {exc}") from exc
    except SecurityError as exc:
        raise TemplateRenderError(f"chat_template tried an operation the sandbox forbids: {exc}") from exc
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"chat_template failed to render: {exc}") from exc


async def render_chat_async(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """`render_chat` on a worker thread: the event loop serves others meanwhile."""
    return await asyncio.to_thread(
        render_chat, template, messages, bos_token=bos_token, eos_token=eos_token, extra=extra
    )


def substitute_bindings(settings: Any, bindings: Mapping[str, Any]) -> Any:
    """Fill `{{ name }}` placeholders in a model's settings (any nesting of dicts and
    lists) with request bindings, rendered in the same sandbox as chat templates."""
    if isinstance(settings, str):
        if "{{" not in settings and "{%" not in settings:
            return settings
        try:
            return _render(_compile(settings), dict(bindings))
        except RenderLimitExceeded as exc:
            raise TemplateRenderError(f"a model setting is too costly to render: {exc}") from exc
        except SecurityError as exc:
            raise TemplateRenderError(f"a model setting tried an operation the sandbox forbids: {exc}") from exc
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateRenderError(f"a model setting failed to render with the bindings: {exc}") from exc
    if isinstance(settings, dict):
        return {key: substitute_bindings(value, bindings) for key, value in settings.items()}
    if isinstance(settings, list):
        return [substitute_bindings(value, bindings) for value in settings]
    return settings
