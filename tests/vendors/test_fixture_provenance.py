"""The vendor fixtures say where they come from, and hold to the formats they claim.

* Every file under fixtures/documented/<vendor>/ is named in that folder's README.md
  (API version, documentation page, date); every file under fixtures/recorded/ is one
  of the exchanges its recording script wrote down in exchanges.json.
* The OpenAI and Anthropic files parse with the vendors' own SDK types (the `openai` and
  `anthropic` packages the end-to-end tests use): a field renamed, misplaced or of the
  wrong type in a hand-written answer fails here, not silently in the adapter's test.
  So do llama.cpp's recorded chat answers, which claim OpenAI's format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from tests.vendors.recorded import DOCUMENTED, FIXTURES, RECORDED

VENDORS = sorted(path for path in DOCUMENTED.iterdir() if path.is_dir())


def fixture_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix in {".json", ".sse"})


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON payload of each `data:` line of an SSE fixture, `[DONE]` left out."""
    payloads = [line[len("data:") :].strip() for line in path.read_text().splitlines() if line.startswith("data:")]
    return [json.loads(payload) for payload in payloads if payload != "[DONE]"]


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda path: path.name)
def test_each_documented_fixture_is_named_in_its_vendors_readme(vendor: Path) -> None:
    readme = (vendor / "README.md").read_text()
    assert "written by hand" in readme.lower()
    assert "http" in readme  # the documentation pages, linked
    missing = [path.name for path in fixture_files(vendor) if f"`{path.name}`" not in readme]
    assert not missing, f"{vendor.name}/README.md does not describe {missing}"


def test_only_documented_and_recorded_fixtures_exist() -> None:
    assert sorted(path.name for path in FIXTURES.iterdir() if path.is_dir()) == ["documented", "recorded"]
    assert not [path for path in FIXTURES.iterdir() if path.is_file()]


def test_each_recorded_fixture_comes_from_an_exchange_its_script_made() -> None:
    servers = [path for path in RECORDED.iterdir() if path.is_dir() and not path.name.startswith("__")]
    assert [server.name for server in servers] == ["llama-cpp-server"]
    for server in servers:
        provenance = json.loads((server / "exchanges.json").read_text())
        assert set(provenance["exchanges"]) == {path.name for path in fixture_files(server)} - {"exchanges.json"}
        assert provenance["recorded"] and provenance["server"]
        assert (server / "README.md").is_file()


OPENAI_WHOLE = [path for path in fixture_files(DOCUMENTED / "openai") if path.suffix == ".json"]


@pytest.mark.parametrize("path", OPENAI_WHOLE, ids=lambda path: path.name)
def test_openai_answers_parse_as_the_openai_sdks_types(path: Path) -> None:
    body = json.loads(path.read_text())
    kinds: dict[str, tuple[Any, str]] = {
        "embeddings": (CreateEmbeddingResponse, "list"),
        "completion": (Completion, "text_completion"),  # the legacy completions
    }
    kind, shown = next(
        (kinds[prefix] for prefix in kinds if path.name.startswith(prefix)), (ChatCompletion, "chat.completion")
    )
    kind.model_validate(without_echo_nulls(body) if kind is Completion else body)
    assert body["object"] == shown


def without_echo_nulls(body: dict[str, Any]) -> dict[str, Any]:
    """A legacy completion with an echoed prompt's first-token nulls filled in: the API
    sends null there (nothing precedes that token), the SDK's types allow none, and read
    the answer unchecked unless told to be strict."""
    choices = []
    for choice in body["choices"]:
        logprobs = choice.get("logprobs")
        if logprobs:
            logprobs = {**logprobs,
                        "token_logprobs": [0.0 if value is None else value for value in logprobs["token_logprobs"]],
                        "top_logprobs": [value or {} for value in logprobs["top_logprobs"] or []]}  # fmt: skip
        choices.append({**choice, "logprobs": logprobs})
    return {**body, "choices": choices}


@pytest.mark.parametrize(
    "path",
    [
        *(path for path in fixture_files(DOCUMENTED / "openai") if path.suffix == ".sse"),
        RECORDED / "llama-cpp-server" / "stream.sse",
    ],
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_openai_streams_are_chat_completion_chunks(path: Path) -> None:
    chunks = events(path)
    assert chunks
    for chunk in chunks:
        assert ChatCompletionChunk.model_validate(chunk).object == "chat.completion.chunk"
    assert path.read_text().rstrip().endswith("data: [DONE]")


def test_llama_cpp_servers_chat_answer_parses_as_openais() -> None:
    answer = ChatCompletion.model_validate_json((RECORDED / "llama-cpp-server" / "chat.json").read_bytes())
    assert answer.usage is not None and answer.usage.completion_tokens > 0


@pytest.mark.parametrize(
    "path",
    [path for path in fixture_files(DOCUMENTED / "anthropic") if path.name.startswith("message")],
    ids=lambda path: path.name,
)
def test_anthropic_messages_parse_as_the_anthropic_sdks_type(path: Path) -> None:
    assert Message.model_validate_json(path.read_bytes()).type == "message"


@pytest.mark.parametrize(
    "path",
    [path for path in fixture_files(DOCUMENTED / "anthropic") if path.suffix == ".sse"],
    ids=lambda path: path.name,
)
def test_anthropic_streams_are_its_events_named_on_each_event_line(path: Path) -> None:
    """Each `event:` line names the payload's own type, and each payload but an error
    (which the SDK raises rather than parses) is one of the SDK's stream events."""
    lines = path.read_text().splitlines()
    named = [line[len("event:") :].strip() for line in lines if line.startswith("event:")]
    payloads = events(path)
    assert named == [payload["type"] for payload in payloads]
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    for payload in payloads:
        if payload["type"] not in {"ping", "error"}:
            adapter.validate_python(payload)
