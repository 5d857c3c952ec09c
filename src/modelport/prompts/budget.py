"""The budget of one chat-template render, and the checks the sandbox runs against it.

Templates may come from a request, so they are untrusted code; Jinja's sandbox
(`prompts/sandbox.py`) keeps them from internals, but bounds neither time nor memory.
Every render gets a `Budget` (the limits below), found by the sandbox's hooks through a
context variable, and each hook asks here, before an operation, whether its result
would pass the budget: a template cannot hold a thread for long or allocate gigabytes.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence, ValuesView
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.runtime import Undefined
from jinja2.utils import Namespace

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


class LimitExceeded(Exception):
    """A render overran its budget; the message names the limit."""


@dataclass(slots=True)
class Budget:
    size_limit: int
    deadline: float
    range_items: int = 0
    iterations: int = 0
    output: int = 0

    @classmethod
    def for_inputs(cls, inputs: object) -> Budget:
        allowance = SIZE_PER_INPUT_CHAR * text_size(inputs, sys.maxsize)
        return cls(size_limit=MAX_SIZE + allowance, deadline=time.monotonic() + MAX_RENDER_SECONDS)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"it ran longer than {MAX_RENDER_SECONDS:g} s (the time limit per render)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.size_limit:
            raise LimitExceeded(
                f"{what} would make {size} or more characters or items, over the size limit of {self.size_limit}"
            )

    def step(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise LimitExceeded(f"it loops more than {MAX_LOOP_ITERATIONS} times (the loop budget per render)")
        self.check_time()

    def write(self, size: int) -> None:
        self.output += size
        if self.output > self.size_limit:
            raise LimitExceeded(f"the output is over the limit of {self.size_limit} characters")
        self.check_time()


# One budget per render, found by the sandbox's hooks. A context variable rather than
# state on the (shared, cached) environment or template: renders run concurrently in
# worker threads, and each thread, and each `asyncio.to_thread` call, has its own.
active_budget: ContextVar[Budget] = ContextVar("modelport_template_budget")


def current_budget() -> Budget:
    budget = active_budget.get(None)
    if budget is None:
        # Also what keeps Jinja from folding constants through these hooks at compile
        # time: it takes any exception there for "not a constant".
        raise RuntimeError("templates render only through render_chat or substitute_bindings")
    return budget


def text_size(value: object, limit: int, indent: int = 0) -> int:
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


def check_result(budget: Budget, value: object) -> None:
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset):
        budget.check_size(len(value), f"building a {type(value).__name__}")
    elif isinstance(value, int) and not isinstance(value, bool):
        check_bits(value.bit_length())


def check_bits(bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(
            f"the result would have about {bits:.0f} bits, over the size limit for numbers of {MAX_INT_BITS} bits"
        )


# printf-style conversions and str.format specs, for their widths and precisions.
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?.", re.DOTALL)
FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)


def _printf_size(budget: Budget, template: str | bytes, values: object) -> int:
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    if isinstance(values, Mapping):
        items: Sequence[object] = list(values.values())
    elif isinstance(values, tuple):
        items = values
    else:
        items = (values,)
    star = max((abs(item) for item in items if isinstance(item, int)), default=0)
    size = len(text) + sum(text_size(item, budget.size_limit) for item in items)
    for spec in _PRINTF_SPEC.finditer(text):
        for number in spec.groups():
            size += star if number == "*" else int(number or 0)
    return size


def check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | bytes | bytearray | list | tuple) and isinstance(times, int):
                budget.check_size(len(sequence) * times, f"repeating a value {times} times")
        if isinstance(left, int) and isinstance(right, int):
            check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            # The exponent alone bounds the bits from below; checked first, as it may be
            # too large to multiply as a float.
            check_bits(right)
            check_bits(right * math.log2(abs(left)))
    elif operator == "+":
        if isinstance(left, str | bytes | bytearray | list | tuple) and isinstance(
            right, str | bytes | bytearray | list | tuple
        ):
            budget.check_size(len(left) + len(right), "joining these values with +")
    elif operator == "%" and isinstance(left, str | bytes):
        budget.check_size(_printf_size(budget, left, right), "%-formatting with these format widths")


def _materialize(budget: Budget, iterable: Iterable[Any]) -> list[Any] | tuple[Any, ...]:
    # An argument that is joined must be counted first, and a generator counted is used
    # up: the count is of the list that then takes its place.
    if isinstance(iterable, list | tuple):
        return iterable
    items = list(itertools.islice(iterable, budget.size_limit + 1))
    budget.check_size(len(items), "collecting values to join")
    return items


def _joined_size(budget: Budget, items: Sequence[Any], separator: object) -> int:
    size = len(str(separator)) * max(len(items) - 1, 0)
    for item in items:
        size += text_size(item, budget.size_limit)
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


def check_call(budget: Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
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


def check_filter(budget: Budget, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse a built-in filter whose result would pass the size limit, before it runs.
    Returns the value to filter (an iterable to join, counted, becomes a list)."""
    limit = budget.size_limit
    if name == "join":
        value = _materialize(budget, value)
        budget.check_size(_joined_size(budget, value, _arg(args, kwargs, 0, "d", "")), "joining these values")
    elif name == "tojson":
        indent = _arg(args, kwargs, 0, "indent", None)
        width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        budget.check_size(text_size(value, limit, max(width, 0)), "writing JSON")
    elif name == "pprint":
        budget.check_size(text_size(value, limit, 1), "pretty-printing a value")
    elif name in _STRINGIFYING_FILTERS:
        size = text_size(value, limit)
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
