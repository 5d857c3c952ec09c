"""`modelport ... --help` says what each option wants (`NAME|ID`, `URL`, `DOLLARS`), never
a bare type (`TEXT`, `INTEGER`, `<str>`), and flags carry no value label (issue 25)."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from modelport.cli import prepare
from modelport.cli.main import app

# What Click, Typer and argparse print when an option has no label of its own.
BARE_TYPE = re.compile(r"<(?:str|int|float|bool)>|\b(?:TEXT|INTEGER|FLOAT|BOOLEAN|RANGE)\b")


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under `group` (Typer's own Click classes), with the words
    that name it."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


ALL = list(commands(typer.main.get_command(app)))


def help_text(path: tuple[str, ...]) -> str:
    # Wide enough that no label is cut or wrapped; no colour codes between words.
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_command_tree_is_walked() -> None:
    named = {" ".join(path) for path, _ in ALL}
    assert {"serve", "keys create", "keys update", "spend", "chat", "usage", "deployments reset"} <= named


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=lambda path: " ".join(path) or "modelport")
def test_no_help_shows_a_bare_type_label(path: tuple[str, ...]) -> None:
    text = help_text(path)
    assert not BARE_TYPE.findall(text), text


def test_every_value_option_and_argument_has_a_label_and_no_flag_has_one() -> None:
    for path, command in ALL:
        for parameter in command.params:
            where = f"modelport {' '.join(path)} {parameter.name}"
            if parameter.param_type_name == "option" and parameter.is_flag:
                assert parameter.metavar is None, where
            else:
                assert parameter.metavar, where


def test_each_argument_is_explained_by_its_name_in_the_commands_help() -> None:
    for path, command in ALL:
        for parameter in command.params:
            if parameter.param_type_name == "argument":
                usage, _, body = help_text(path).partition("\n\n")
                assert parameter.metavar in usage and parameter.metavar in body, (path, parameter.metavar)


def test_options_show_what_they_want() -> None:
    create = help_text(("keys", "create"))
    for label in ("--account", "NAME|ID"), ("--max-budget", "DOLLARS"), ("--role", "admin|member"):
        assert re.search(rf"{re.escape(label[0])}\s+{re.escape(label[1])}", create), create
    serve = help_text(("serve",))
    assert re.search(r"--database-url\s+URL", serve) and re.search(r"--workers\s+COUNT", serve), serve
    listed = help_text(("keys", "list"))
    assert re.search(r"--json\s+Print", listed), listed  # a flag: its help follows, no value label


def test_the_prepare_step_says_its_timeout_is_seconds() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as ended:
        prepare.main(["--help"])
    assert ended.value.code == 0
    assert "--timeout SECONDS" in out.getvalue()
    assert not BARE_TYPE.findall(out.getvalue())
