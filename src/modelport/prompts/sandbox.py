"""Jinja2 in an immutable, budgeted sandbox: the environment chat templates and
model-setting placeholders render in.

The sandbox blocks attribute access to internals (`__class__`, `__globals__`, ...),
calls to unsafe methods and mutation of the values passed in; the hooks here hand every
loop step, call, filter, operator and output chunk to the render's budget
(`prompts/budget.py`). Anything refused, any overrun and any error in the template
becomes a `TemplateRenderError` (HTTP 400).
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from string import Formatter
from typing import Any, NoReturn, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from modelport.errors import TemplateRenderError
from modelport.prompts.budget import (
    FORMAT_SPEC,
    MAX_RANGE_ITEMS,
    Budget,
    LimitExceeded,
    active_budget,
    check_binop,
    check_call,
    check_filter,
    check_result,
    current_budget,
    text_size,
)

# The budget hangs on `range`: a template variable of that name would replace it.
SERVER_GLOBALS = frozenset({"range"})


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context/pass_environment/pass_eval_context get that first.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        passed, value, rest = args[:skip], args[skip], args[skip + 1 :]
        value = check_filter(budget, name, value, rest, kwargs)
        result = func(*passed, value, *rest, **kwargs)
        check_result(budget, result)
        return result

    return bounded


def _counting_range(*args: int) -> range:
    budget = current_budget()
    span = range(*args)
    try:
        budget.range_items += len(span)
    except OverflowError:  # more items than a C integer holds
        budget.range_items = sys.maxsize
    if budget.range_items > MAX_RANGE_ITEMS:
        raise LimitExceeded(f"it loops more than {MAX_RANGE_ITEMS} times over range() (the range() budget per render)")
    return span


def _checked_output(value: Any) -> Any:
    # `{{ value }}` writes str(value); a list or dict that shares its parts can write
    # far more than it holds. Strings are bounded where they are made.
    if not isinstance(value, str):
        budget = current_budget()
        budget.check_size(text_size(value, budget.size_limit), "writing a value out")
    return value


def _bounded_join(parts: Iterable[str]) -> str:
    # Output inside macros and {% set %}/{% filter %}/{% call %} blocks is gathered in a
    # list and joined here, not streamed: count it before joining.
    parts = parts if isinstance(parts, list) else list(parts)
    current_budget().check_size(sum(map(len, parts)), "gathering text in a macro or block")
    return "".join(parts)


class _BoundedFormatter(SandboxedFormatter):
    """str.format in templates, refusing fields (and a total) past the size limit."""

    written = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current_budget()
        spec = FORMAT_SPEC.match(format_spec)
        padding = sum(int(number or 0) for number in spec.groups()) if spec else 0
        size = text_size(value, budget.size_limit) + padding
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
        budget = current_budget()
        budget.check_time()
        check_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        check_result(budget, result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.check_time()
        args = check_call(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        check_result(budget, result)
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
        budget = current_budget()
        for item in iterable:
            budget.step()
            yield item

    def bounded_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        budget = current_budget()
        size = 0
        for part in parts:
            size += text_size(part, budget.size_limit)
            budget.check_size(size, "joining these values with ~")
        return parts


def raise_exception(message: str) -> NoReturn:
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
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = _strftime_now
    # lipsum(n, max=...) writes n paragraphs of up to `max` words; chat templates have
    # no use for it.
    del env.globals["lipsum"]
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    return env


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except (TemplateError, RecursionError) as exc:
        raise TemplateRenderError(f"chat_template does not compile: {exc}") from exc


def _generate(compiled: jinja2.Template, variables: dict[str, Any], budget: Budget) -> str:
    token = active_budget.set(budget)
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
        active_budget.reset(token)


def render_budgeted(
    compiled: jinja2.Template, variables: dict[str, Any], budget: Budget, *, subject: str, failed: str
) -> str:
    try:
        return _generate(compiled, variables, budget)
    except LimitExceeded as exc:
        raise TemplateRenderError(f"{subject} is too costly: {exc}") from exc
    except RecursionError as exc:
        raise TemplateRenderError(f"{subject} is too costly: it nests calls or recursive loops too deeply") from exc
    except SecurityError as exc:
        raise TemplateRenderError(f"{subject} tried an operation the sandbox forbids: {exc}") from exc
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(f"{failed}: {exc}") from exc
