"""Chat templates: Jinja2 rendered in an immutable, budgeted sandbox.

Templates may come from a request (`chat_template`), so they are untrusted code: the
sandbox blocks attribute access to internals (`__class__`, `__globals__`, ...), calls
to unsafe methods and mutation of the values passed in. The sandbox bounds neither time
nor memory, so every render also gets a budget (the limits below): a template cannot
hold a thread for long or allocate gigabytes. Anything refused, any overrun and any
error in the template becomes a `TemplateRenderError` (HTTP 400).

Renders are synchronous and can take up to `MAX_RENDER_SECONDS`: request handlers call
`render_chat_async`, which renders on the render pool's threads (never on the event
loop), in a fair share per account (`RenderPool`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import re
import sys
import time
import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence, ValuesView
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from string import Formatter
from typing import Any, NoReturn, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

from modelport.errors import RateLimited, TemplateRenderError

# The names Hugging Face chat templates expect to find. `chat_template_kwargs` may add
# more, but may not replace these or the messages.
RESERVED_NAMES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})

# The budget of one render. Real chat templates walk the messages (their parts, tool
# calls, tools) once or twice: a few thousand steps, milliseconds, and about as much
# text as they are given. Every limit is far above that and far below harm.

# Items `range()` may give in one render, all calls together: the sandbox's own cap
# (100,000) is per call, and nested loops multiply it.
MAX_RANGE_ITEMS = 100_000
# Iterations of all `for` loops in one render, whatever they loop over: nested loops
# over a long string or list multiply just as ranges do.
MAX_LOOP_ITERATIONS = 1_000_000
# Characters of any string, items of any list, and characters of the output, before the
# allowance for the input below: `'a' * 10**9` alone would take gigabytes.
MAX_SIZE = 1 << 20
# Each character of input (messages, kwargs, bindings) raises the size limit by this
# much, so that a long conversation (request bodies may be 4 MiB) still renders, even
# with a template that writes each message twice.
SIZE_PER_INPUT_CHAR = 2
# Bits of any integer that arithmetic makes: `10 ** (10 ** 10)` would compute for
# hours. 8192 bits (2,467 digits) is more than any template needs, and Python can
# still print it.
MAX_INT_BITS = 8192
# Wall-clock seconds of one render, checked at every loop step, call, filter, operator
# and output chunk: a worker thread cannot be stopped from outside, so the render
# stops itself.
MAX_RENDER_SECONDS = 1.0

# The budget hangs on `range`: a template variable of that name would replace it.
_SERVER_GLOBALS = frozenset({"range"})


class _LimitExceeded(Exception):
    """A render overran its budget; the message names the limit."""


@dataclass(slots=True)
class _Budget:
    size_limit: int
    deadline: float
    range_items: int = 0
    iterations: int = 0
    output: int = 0

    @classmethod
    def for_inputs(cls, inputs: object) -> _Budget:
        allowance = SIZE_PER_INPUT_CHAR * _text_size(inputs, sys.maxsize)
        return cls(size_limit=MAX_SIZE + allowance, deadline=time.monotonic() + MAX_RENDER_SECONDS)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"it ran longer than {MAX_RENDER_SECONDS:g} s (the time limit per render)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.size_limit:
            raise _LimitExceeded(
                f"{what} would make {size} or more characters or items, over the size limit of {self.size_limit}"
            )

    def step(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise _LimitExceeded(f"it loops more than {MAX_LOOP_ITERATIONS} times (the loop budget per render)")
        self.check_time()

    def write(self, size: int) -> None:
        self.output += size
        if self.output > self.size_limit:
            raise _LimitExceeded(f"the output is over the limit of {self.size_limit} characters")
        self.check_time()


# One budget per render, found by the sandbox's hooks. A context variable rather than
# state on the (shared, cached) environment or template: renders run concurrently in
# worker threads, and each thread, and each `asyncio.to_thread` call, has its own.
_budget: ContextVar[_Budget] = ContextVar("modelport_template_budget")


def _current() -> _Budget:
    budget = _budget.get(None)
    if budget is None:
        # Also what keeps Jinja from folding constants through these hooks at compile
        # time: it takes any exception there for "not a constant".
        raise RuntimeError("templates render only through render_chat or substitute_bindings")
    return budget


def _text_size(value: object, limit: int, indent: int = 0) -> int:
    """About how many characters `str(value)` (or JSON with `indent`) would take,
    counted only until `limit` is passed: values may share parts (`[x, x]`), so their
    text can be exponentially larger than their memory."""
    total = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + (2 if depth else 0)
            continue
        children: Iterable[object]
        if isinstance(item, Namespace):
            total += 12
            children = item._Namespace__attrs.items()
        elif isinstance(item, Mapping):
            total += 2
            children = item.items()
        elif isinstance(item, list | tuple | AbstractSet | ValuesView):
            total += 2
            children = item
        elif isinstance(item, Undefined):
            continue
        elif isinstance(item, bool) or item is None:
            total += 5
            continue
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
            continue
        else:  # floats, and objects whose text the template cannot choose
            total += 64
            continue
        for child in children:
            total += 2 + indent * (depth + 1)
            stack.append((child, depth + 1))
    return total


def _check_result(budget: _Budget, value: object) -> None:
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset):
        budget.check_size(len(value), f"building a {type(value).__name__}")
    elif isinstance(value, int) and not isinstance(value, bool):
        _check_bits(value.bit_length())


def _check_bits(bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise _LimitExceeded(
            f"the result would have about {bits:.0f} bits, over the size limit for numbers of {MAX_INT_BITS} bits"
        )


# printf-style conversions and str.format specs, for their widths and precisions.
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?.", re.DOTALL)
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)


def _printf_size(budget: _Budget, template: str | bytes, values: object) -> int:
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    if isinstance(values, Mapping):
        items: Sequence[object] = list(values.values())
    elif isinstance(values, tuple):
        items = values
    else:
        items = (values,)
    star = max((abs(item) for item in items if isinstance(item, int)), default=0)
    size = len(text) + sum(_text_size(item, budget.size_limit) for item in items)
    for spec in _PRINTF_SPEC.finditer(text):
        for number in spec.groups():
            size += star if number == "*" else int(number or 0)
    return size


def _check_binop(budget: _Budget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | bytes | bytearray | list | tuple) and isinstance(times, int):
                budget.check_size(len(sequence) * times, f"repeating a value {times} times")
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            # The exponent alone bounds the bits from below; checked first, as it may be
            # too large to multiply as a float.
            _check_bits(right)
            _check_bits(right * math.log2(abs(left)))
    elif operator == "+":
        if isinstance(left, str | bytes | bytearray | list | tuple) and isinstance(
            right, str | bytes | bytearray | list | tuple
        ):
            budget.check_size(len(left) + len(right), "joining these values with +")
    elif operator == "%" and isinstance(left, str | bytes):
        budget.check_size(_printf_size(budget, left, right), "%-formatting with these format widths")


def _materialize(budget: _Budget, iterable: Iterable[Any]) -> list[Any] | tuple[Any, ...]:
    # An argument that is joined must be counted first, and a generator counted is used
    # up: the count is of the list that then takes its place.
    if isinstance(iterable, list | tuple):
        return iterable
    items = list(itertools.islice(iterable, budget.size_limit + 1))
    budget.check_size(len(items), "collecting values to join")
    return items


def _joined_size(budget: _Budget, items: Sequence[Any], separator: object) -> int:
    size = len(str(separator)) * max(len(items) - 1, 0)
    for item in items:
        size += _text_size(item, budget.size_limit)
        if size > budget.size_limit:
            break
    return size


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    occurrences = text.count(old) if len(old) else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return int(len(text) + occurrences * max(len(new) - len(old), 0))


# str (and bytes) methods whose result can be much larger than their inputs.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _check_call(budget: _Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call whose result would pass the size limit, before it is made.
    Returns the arguments to call with (an iterable to join, counted, becomes a list)."""
    target: Any = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if isinstance(target, str | bytes | bytearray):
        if name in _PADDING_METHODS and args and isinstance(args[0], int):
            budget.check_size(max(len(target), args[0]), f"padding to a width of {args[0]}")
        elif name == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tabsize, int):
                tab: Any = "\t" if isinstance(target, str) else b"\t"
                tabs = target.count(tab)
                budget.check_size(len(target) + tabs * tabsize, "expanding tabs")
        elif name == "replace" and len(args) >= 2:
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            budget.check_size(_replaced_size(target, args[0], args[1], count), "replacing text")
        elif name == "join" and args:
            items = _materialize(budget, args[0])
            budget.check_size(_joined_size(budget, items, target), "joining these values")
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(value) for value in args[0].values() if isinstance(value, str)), default=1)
            budget.check_size(len(target) * longest, "translating text")
    elif isinstance(target, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if isinstance(length, int):
            budget.check_size(length, "to_bytes()")
    return args


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


# Built-in filters that turn their input into text: a list or dict given to them is
# written out whole.
_STRINGIFYING_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "filesizeformat",
        "forceescape",
        "format",
        "indent",
        "lower",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)


def _check_filter(budget: _Budget, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse a built-in filter whose result would pass the size limit, before it runs.
    Returns the value to filter (an iterable to join, counted, becomes a list)."""
    limit = budget.size_limit
    if name == "join":
        value = _materialize(budget, value)
        budget.check_size(_joined_size(budget, value, _arg(args, kwargs, 0, "d", "")), "joining these values")
    elif name == "tojson":
        indent = _arg(args, kwargs, 0, "indent", None)
        width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        budget.check_size(_text_size(value, limit, max(width, 0)), "writing JSON")
    elif name == "pprint":
        budget.check_size(_text_size(value, limit, 1), "pretty-printing a value")
    elif name in _STRINGIFYING_FILTERS:
        size = _text_size(value, limit)
        budget.check_size(size, f"writing a value out ({name} filter)")
        if name == "center":
            width = _arg(args, kwargs, 0, "width", 80)
            if isinstance(width, int):
                budget.check_size(width, f"padding to a width of {width}")
        elif name == "indent":
            width = _arg(args, kwargs, 0, "width", 4)
            step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            budget.check_size(size + (str(value).count("\n") + 1) * step, "indenting text")
        elif name == "wordwrap":
            width = _arg(args, kwargs, 0, "width", 79)
            wrapstring = _arg(args, kwargs, 2, "wrapstring", None) or "\n"
            if isinstance(width, int) and width > 0:
                lines = size // width + str(value).count("\n") + 1
                budget.check_size(size + lines * len(str(wrapstring)), "wrapping text")
        elif name == "replace" and len(args) >= 2:
            count = _arg(args, kwargs, 2, "count", None)
            budget.check_size(_replaced_size(str(value), str(args[0]), str(args[1]), count), "replacing text")
        elif name == "format" and isinstance(value, str):
            budget.check_size(_printf_size(budget, value, kwargs or args), "%-formatting with these format widths")
    elif name in ("batch", "slice"):
        count = _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 0)
        if isinstance(count, int):
            budget.check_size(count, f"splitting into {count} parts")
    elif name == "sum":
        start = _arg(args, kwargs, 1, "start", 0)
        if not isinstance(start, int | float):
            # Adding lists or tuples copies the growing total at every step.
            raise TemplateError("the sum filter adds numbers only")
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context/pass_environment/pass_eval_context get that first.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.check_time()
        passed, value, rest = args[:skip], args[skip], args[skip + 1 :]
        value = _check_filter(budget, name, value, rest, kwargs)
        result = func(*passed, value, *rest, **kwargs)
        _check_result(budget, result)
        return result

    return bounded


def _counting_range(*args: int) -> range:
    budget = _current()
    span = range(*args)
    try:
        budget.range_items += len(span)
    except OverflowError:  # more items than a C integer holds
        budget.range_items = sys.maxsize
    if budget.range_items > MAX_RANGE_ITEMS:
        raise _LimitExceeded(f"it loops more than {MAX_RANGE_ITEMS} times over range() (the range() budget per render)")
    return span


def _checked_output(value: Any) -> Any:
    # `{{ value }}` writes str(value); a list or dict that shares its parts can write
    # far more than it holds. Strings are bounded where they are made.
    if not isinstance(value, str):
        budget = _current()
        budget.check_size(_text_size(value, budget.size_limit), "writing a value out")
    return value


def _bounded_join(parts: Iterable[str]) -> str:
    # Output inside macros and {% set %}/{% filter %}/{% call %} blocks is gathered in a
    # list and joined here, not streamed: count it before joining.
    parts = parts if isinstance(parts, list) else list(parts)
    _current().check_size(sum(map(len, parts)), "gathering text in a macro or block")
    return "".join(parts)


class _BoundedFormatter(SandboxedFormatter):
    """str.format in templates, refusing fields (and a total) past the size limit."""

    written = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = _current()
        spec = _FORMAT_SPEC.match(format_spec)
        padding = sum(int(number or 0) for number in spec.groups()) if spec else 0
        size = _text_size(value, budget.size_limit) + padding
        budget.check_size(self.written + size, "str.format() with these format widths")
        text = super().format_field(value, format_spec)
        self.written += len(text)
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


def _environment_call(name: str, argument: nodes.Node) -> nodes.Call:
    return nodes.Call(
        nodes.EnvironmentAttribute(name), [cast(nodes.Expr, argument)], [], None, None, lineno=argument.lineno
    )


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop and every `~` passing the budget."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Each `for` loops over `environment.bounded_iter(...)`, and so does each
        # `loop(...)` of a recursive loop: every step of every loop is counted.
        for loop in list(node.find_all(nodes.For)):
            loop.iter = _environment_call("bounded_iter", loop.iter)
            if loop.recursive:
                for call in list(loop.find_all(nodes.Call)):
                    if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
                        call.args[0] = _environment_call("bounded_iter", call.args[0])
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja writes it, but the parts are measured together before they are
        # joined: `~` builds strings as `+` does.
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.bounded_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(_bounded_join)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        budget.check_time()
        _check_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        _check_result(budget, result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.check_time()
        args = _check_call(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        _check_result(budget, result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own, with formatters that count what they write.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        f_self: Any = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type: type[str] = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: Formatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return str_type(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _current()
        for item in iterable:
            budget.step()
            yield item

    def bounded_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        budget = _current()
        size = 0
        for part in parts:
            size += _text_size(part, budget.size_limit)
            budget.check_size(size, "joining these values with ~")
        return parts


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> _BoundedEnvironment:
    # trim_blocks/lstrip_blocks match how transformers renders chat templates, so a
    # template copied from a model card gives the same prompt here.
    env = _BoundedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.loopcontrols"],
        finalize=_checked_output,
    )
    env.globals["range"] = _counting_range
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    # lipsum(n, max=...) writes n paragraphs of up to `max` words; chat templates have
    # no use for it.
    del env.globals["lipsum"]
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except (TemplateError, RecursionError) as exc:
        raise TemplateRenderError(f"chat_template does not compile: {exc}") from exc


def _generate(compiled: jinja2.Template, variables: dict[str, Any], budget: _Budget) -> str:
    token = _budget.set(budget)
    try:
        chunks: list[str] = []
        stream = cast(Generator[str, None, None], compiled.generate(variables))
        try:
            for chunk in stream:
                budget.write(len(chunk))
                chunks.append(chunk)
        finally:
            stream.close()
        return "".join(chunks)
    finally:
        _budget.reset(token)


def _render(compiled: jinja2.Template, variables: dict[str, Any], budget: _Budget, *, subject: str, failed: str) -> str:
    try:
        return _generate(compiled, variables, budget)
    except _LimitExceeded as exc:
        raise TemplateRenderError(f"{subject} is too costly: {exc}") from exc
    except RecursionError as exc:
        raise TemplateRenderError(f"{subject} is too costly: it nests calls or recursive loops too deeply") from exc
    except SecurityError as exc:
        raise TemplateRenderError(f"{subject} tried an operation the sandbox forbids: {exc}") from exc
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"{failed}: {exc}") from exc


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
    clash = (RESERVED_NAMES | _SERVER_GLOBALS) & variables.keys()
    if clash:
        raise TemplateRenderError(f"chat_template_kwargs may not set {', '.join(sorted(clash))}: the server sets them")
    variables.update(
        messages=[dict(message) for message in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    compiled = _compile(template)
    budget = _Budget.for_inputs(variables)
    return _render(compiled, variables, budget, subject="chat_template", failed="chat_template failed to render")


async def render_chat_async(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    extra: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """`render_chat` on the render pool's threads, so that a slow template delays only
    its own request, counted against the account of the request being served
    (`render_scope`), whose limits then reserve the prompt it made."""
    scope = render_scope.get()
    render = functools.partial(
        render_chat,
        template,
        messages,
        bos_token=bos_token,
        eos_token=eos_token,
        extra=extra,
        add_generation_prompt=add_generation_prompt,
    )
    text = await render_pool().run(scope.account if scope is not None else "", render)
    if scope is not None and scope.on_rendered is not None:
        await scope.on_rendered(text)
    return text


# ---- The render pool: fair shares of the threads that render templates (SPEC 9) ----


@dataclass(frozen=True, slots=True)
class RenderScope:
    """Whose request the renders in this task serve (set by the service per request)."""

    account: str
    # Called with each chat prompt rendered for the request, before a vendor sends it:
    # the limits reserve the prompt as rendered (inference/admission.py, `reserve_rendered`).
    on_rendered: Callable[[str], Awaitable[None]] | None = None


render_scope: ContextVar[RenderScope | None] = ContextVar("modelport_render_scope", default=None)


class _AccountRenders:
    __slots__ = ("slots", "users")

    def __init__(self, per_account: int) -> None:
        self.slots = asyncio.Semaphore(per_account)
        self.users = 0  # renders waiting for a slot or holding one


class RenderPool:
    """The threads that render chat templates, shared fairly between accounts.

    A render is pure Python and holds the GIL while it runs, so each render running at
    once takes a share of the event loop's time: 30 one-second templates at once
    slowed every other request, and /health/live, from milliseconds to seconds
    (issue 21). Hence:

    - at most `threads` renders run at once, on threads of their own (not asyncio's
      default executor, which name lookups and other `to_thread` work share);
    - an account has at most `per_account` renders running or queued for a thread; one
      more waits for a slot up to `MAX_RENDER_SECONDS` (the longest one render can
      take), then is refused with 429 naming `template_renders_per_account`. Waiting
      that long lets an ordinary burst of millisecond renders through; refusing after
      it keeps one account's flood from piling up requests (and their bodies) here;
    - at most `queue` renders wait or run in all; past that, 429 naming
      `template_render_queue`, before anything waits.

    A render keeps its slot until its thread finishes, even when its request was
    cancelled: a thread cannot be stopped, only the render's own budget ends it.
    """

    def __init__(self, *, threads: int = 4, per_account: int = 2, queue: int = 64) -> None:
        self.threads = threads
        self.per_account = per_account
        self.queue = queue
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="modelport-render")
        self._accounts: dict[str, _AccountRenders] = {}
        self._pending = 0  # renders waiting for a slot, for a thread, or running

    async def run(self, account: str, render: Callable[[], str]) -> str:
        if self._pending >= self.queue:
            raise RateLimited(
                f"the server is already rendering or waiting to render {self._pending} chat templates "
                f"(template_render_queue is {self.queue}); try again shortly",
                retry_after="1",
            )
        renders = self._accounts.get(account)
        if renders is None:
            renders = self._accounts[account] = _AccountRenders(self.per_account)
        renders.users += 1
        self._pending += 1
        try:
            async with asyncio.timeout(MAX_RENDER_SECONDS):
                await renders.slots.acquire()
        except BaseException as exc:
            self._leave(account, renders)
            if isinstance(exc, TimeoutError):
                raise RateLimited(
                    f"this account already has {self.per_account} chat template renders under way "
                    "(template_renders_per_account); try again shortly",
                    retry_after="1",
                ) from None
            raise
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(render)
        except BaseException:
            self._finished(account, renders)
            raise
        future.add_done_callback(lambda _: self._call_in_loop(loop, account, renders))
        return await asyncio.wrap_future(future)

    def _call_in_loop(self, loop: asyncio.AbstractEventLoop, account: str, renders: _AccountRenders) -> None:
        # On the render thread: the counts belong to the event loop.
        try:
            loop.call_soon_threadsafe(self._finished, account, renders)
        except RuntimeError:  # the loop has closed: nobody waits any more
            self._finished(account, renders)

    def _finished(self, account: str, renders: _AccountRenders) -> None:
        renders.slots.release()
        self._leave(account, renders)

    def _leave(self, account: str, renders: _AccountRenders) -> None:
        renders.users -= 1
        self._pending -= 1
        if renders.users == 0 and self._accounts.get(account) is renders:
            del self._accounts[account]

    def shutdown(self) -> None:
        """No more renders; those queued or running finish (their requests wait on them)."""
        self._executor.shutdown(wait=False)


_pool: RenderPool | None = None


def render_pool() -> RenderPool:
    global _pool
    if _pool is None:
        _pool = RenderPool()
    return _pool


def configure_render_pool(*, threads: int, per_account: int, queue: int) -> RenderPool:
    """Size the render pool from the settings (`template_render_*`); renders already
    under way finish on the old one."""
    global _pool
    current = _pool
    if current is not None and (current.threads, current.per_account, current.queue) == (threads, per_account, queue):
        return current
    if current is not None:
        current.shutdown()
    _pool = RenderPool(threads=threads, per_account=per_account, queue=queue)
    return _pool


async def substitute_bindings_async(settings: Any, bindings: Mapping[str, Any], *, account: str) -> Any:
    """`substitute_bindings` on the render pool, in `account`'s share: placeholders
    render in the same sandbox as chat templates, and can cost as much."""
    return await render_pool().run(account, functools.partial(substitute_bindings, settings, bindings))


def substitute_bindings(settings: Any, bindings: Mapping[str, Any]) -> Any:
    """Fill `{{ name }}` placeholders in a model's settings (any nesting of dicts and
    lists) with request bindings, rendered in the same sandbox as chat templates. All
    the placeholders of one call share one budget."""
    return _substitute(settings, dict(bindings), None)


def _substitute(settings: Any, bindings: dict[str, Any], budget: _Budget | None) -> Any:
    if isinstance(settings, str):
        if "{{" not in settings and "{%" not in settings:
            return settings
        budget = budget or _Budget.for_inputs(bindings)
        return _render(
            _compile(settings),
            dict(bindings),
            budget,
            subject="a model setting",
            failed="a model setting failed to render with the bindings",
        )
    if isinstance(settings, dict):
        budget = budget or _Budget.for_inputs(bindings)
        return {key: _substitute(value, bindings, budget) for key, value in settings.items()}
    if isinstance(settings, list):
        budget = budget or _Budget.for_inputs(bindings)
        return [_substitute(value, bindings, budget) for value in settings]
    return settings
