"""Lists of the catalogue: sort orders as the SDK sends them, and pages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from modelport.errors import field_error
from modelport.schemas.catalogue import Page

RowT = TypeVar("RowT")
ItemT = TypeVar("ItemT")


def parse_sort(values: list[str] | None, allowed: frozenset[str]) -> list[tuple[str, bool]]:
    """`["name:asc", "created_at:desc"]` (the SDK sends them comma-joined) -> columns."""
    order: list[tuple[str, bool]] = []
    for value in (part for item in values or [] for part in item.split(",") if part):
        column, _, direction = value.partition(":")
        if column not in allowed or direction not in {"asc", "desc"}:
            raise field_error(
                ["query", "sort_by"],
                f"cannot sort by {value!r}; sortable: {', '.join(sorted(allowed))} with :asc or :desc",
                "sort_by",
            )
        order.append((column, direction == "desc"))
    return order


def page_of(rows: Iterable[RowT], shown: Callable[[RowT], ItemT], *, page: int, limit: int, total: int) -> Page[ItemT]:
    return Page(items=[shown(row) for row in rows], current_page=page, items_per_page=limit, total_item_count=total)
