"""Every `bash` and `python` snippet of the README runs against a fresh server, so that a
snippet cannot rot again (the first SDK snippet once failed on every fresh install).

The server is a real `modelport serve` with the embedded models; a snippet's
`http://127.0.0.1:8080` becomes its address and `mp_...` its admin key, and the shell
snippets get `BASE`, `KEY` and `DEPLOYMENT` (the default chat deployment) as a reader
would have set them. A snippet that cannot run here (a hosted vendor's key, Docker, a
cluster, the test suite itself) is marked in the README, on the line before its fence,
with `<!-- not run by tests/e2e/test_readme.py: why -->`; the mark must say why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_DEPLOYMENT
from tests.prerequisites import debian_executable
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "mp_readme_admin_key_0123456789abcdef"
NOT_RUN = re.compile(r"<!-- not run by tests/e2e/test_readme\.py: (?P<why>.+?) -->")
FENCE = re.compile(r"^```(?P<language>bash|python)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Snippet:
    line: int
    language: str
    code: str
    not_run: str | None  # why, when marked

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def snippets() -> list[Snippet]:
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = NOT_RUN.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(line, match["language"], match["code"], marked["why"] if marked else None))
    return found


SNIPPETS = snippets()


def test_the_readme_has_snippets_and_every_one_not_run_says_why() -> None:
    assert len([snippet for snippet in SNIPPETS if snippet.not_run is None]) >= 5
    for snippet in SNIPPETS:
        assert snippet.not_run is None or len(snippet.not_run.split()) >= 3, f"{snippet}: say why it is not run"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the server's address, the default chat deployment's id)."""
    data = tmp_path_factory.mktemp("readme")
    with modelport_serving(data, api_key=KEY) as base_url:
        listing = httpx.get(f"{base_url}/v4/model-deployments", headers={"x-api-key": KEY}).json()["items"]
        [chat] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
        yield base_url, chat["id"]


# After the register/ask helpers are defined, use them the way the README goes on to.
_USE_HELPERS = """
registered=$(register '{"name": "readme-upstream", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
  "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}}')
test -n "$registered" && test "$registered" != null
ask "$DEPLOYMENT"
"""


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.not_run is None], ids=str)
def test_the_snippet_runs(snippet: Snippet, served: tuple[str, str], tmp_path: Path) -> None:
    base_url, deployment = served
    code = snippet.code.replace("http://127.0.0.1:8080", base_url).replace('"mp_..."', repr(KEY))
    env = {**os.environ, "BASE": base_url, "KEY": KEY, "DEPLOYMENT": deployment}
    if snippet.language == "python":
        command = [sys.executable, "-c", code]
    else:
        debian_executable("jq", "jq", "README_TOOLS")  # the register helpers use it
        code = code.replace("KEY=mp_...", f"KEY={KEY}")
        if "register()" in code:
            code += _USE_HELPERS
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{snippet} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{snippet} printed nothing"
    # An answer, not an error body printed by curl.
    assert '"detail"' not in done.stdout and '"error"' not in done.stdout, f"{snippet}:\n{done.stdout}"
