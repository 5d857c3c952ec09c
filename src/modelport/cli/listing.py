"""How the CLI shows rows: a table when it fits, else one record per row, or JSON.

No cell is ever cut or folded mid-word: an id is pasted into the next command, and
`CHAT_CO/MPLETIO/N` helps nobody. So a table is printed only when every cell fits on
its line at the terminal's width; a terminal too narrow for it gets the same rows as
records (`name: value` lines), and output that is not a terminal (a pipe, a file)
gets the whole table, as wide as it needs. `--json` prints the rows as a JSON list of
objects with the same fields, for scripts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Print the rows as JSON, for scripts.")]

# Tables without outer borders: a 36-character id and a few short columns fit in 80.
_COMPACT = {"box": None, "padding": (0, 1), "pad_edge": False, "header_style": "bold underline"}


@dataclass(slots=True)
class Listing:
    """Rows of text cells under `columns`; the first column is the row's id."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        assert len(cells) == len(self.columns), "one cell per column"
        self.rows.append(tuple("" if cell is None else str(cell) for cell in cells))

    def show(self, as_json: bool = False, console: Console | None = None) -> None:
        if as_json:
            records = [dict(zip(self.columns, row, strict=True)) for row in self.rows]
            typer.echo(json.dumps(records, indent=2))
            return
        console = console or Console(soft_wrap=False)
        width = self._natural_width()
        if not console.is_terminal:
            console = Console(soft_wrap=False, width=max(80, width), file=console.file)
        if width <= console.width:
            console.print(self._table())
        else:
            self._records(console)

    def _table(self) -> Table:
        table = Table(title=self.title, **_COMPACT)  # type: ignore[arg-type]
        for column in self.columns:
            table.add_column(column, no_wrap=True)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _natural_width(self) -> int:
        """The table's width with every cell whole: the widest cell of each column, and
        one space either side of each column but the outer edges."""
        widths = [cell_len(column) for column in self.columns]
        for row in self.rows:
            widths = [max(width, cell_len(cell)) for width, cell in zip(widths, row, strict=True)]
        return sum(widths) + 2 * (len(widths) - 1)

    def _records(self, console: Console) -> None:
        label = max(len(column) for column in self.columns) + 1
        console.print(f"[bold underline]{self.title}[/bold underline]")
        for row in self.rows:
            console.print()
            for column, cell in zip(self.columns, row, strict=True):
                console.print(f"{column + ':':<{label}} {cell}", markup=False, highlight=False, soft_wrap=True)
