"""Files and Batches (OpenAI) and Message Batches (Anthropic), issue 26, through the real
`openai` and `anthropic` SDKs in strict mode against the real application, on SQLite
and PostgreSQL, in front of an upstream answered in-process that counts its calls per
prompt (each line's prompt names its custom_id).

A restart in the middle of a batch and a second replica are in
tests/e2e/test_batches_restart.py; the embedded model in tests/e2e/test_batches_embedded.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI
from openai.types.responses import Response
from sqlalchemy import func, select

from modelport.store.tables import UsageRecord
from tests.conftest import ADMIN_KEY, in_process, own_database, sqlite_settings

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
FILES_MAX_BYTES = 256 * 1024
MAX_LINES = 300
ACCOUNT_MAX_BYTES = 1024 * 1024
CONCURRENCY = 4
T = TypeVar("T")


@dataclass
class Upstream:
    """An OpenAI-compatible upstream that answers `echo: <prompt>` and counts the calls
    per prompt; a prompt starting with `slow` waits until `release` is set."""

    calls: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "prompt" in body:  # /v1/completions
            self.calls[body["prompt"]] += 1
            choice = {"index": 0, "text": f"echo: {body['prompt']}", "finish_reason": "stop", "logprobs": None}
            answer = {"id": "t", "object": "text_completion", "created": 0, "model": "up", "choices": [choice]}
            return httpx.Response(200, json={**answer, "usage": USAGE})
        prompt = body["messages"][-1]["content"]
        if isinstance(prompt, list):
            prompt = "".join(part.get("text", "") for part in prompt)
        self.calls[prompt] += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if prompt.startswith("slow"):
                await self.release.wait()
            elif prompt.startswith("paced"):
                await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        choice = {"index": 0, "message": {"role": "assistant", "content": f"echo: {prompt}"}, "finish_reason": "stop"}
        answer = {"id": "c", "object": "chat.completion", "created": 0, "model": "up", "choices": [choice]}
        return httpx.Response(200, json={**answer, "usage": USAGE})


@dataclass
class Served:
    app: FastAPI
    client: httpx.AsyncClient
    upstream: Upstream
    model: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    data = tmp_path_factory.mktemp("batches")
    upstream = Upstream()
    async with own_database(request.param, data) as url:
        settings = sqlite_settings(
            data,
            database_url=url,
            upstream_attempts=1,
            usage_flush_seconds=0.2,
            auth_failures_per_minute=0,
            files_max_bytes=FILES_MAX_BYTES,
            files_max_bytes_per_account=ACCOUNT_MAX_BYTES,
            batch_max_lines=MAX_LINES,
            batch_concurrency=CONCURRENCY,
            batch_poll_seconds=0.05,
            batch_lease_seconds=3,
        )
        async with in_process(settings, upstream=_Transport(upstream)) as (app, client):
            name = f"batched-{uuid.uuid4().hex[:8]}"
            created = await client.post(
                "/v4/models",
                json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                      "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
            )  # fmt: skip
            assert created.status_code == 200, created.text
            deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
            assert deployment.status_code == 200, deployment.text
            yield Served(app, client, upstream, name)


class _Transport(httpx.AsyncBaseTransport):
    """The upstream, answered in-process (an async handler: it may wait)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self.upstream(request)


def _openai(served: Served, key: str = ADMIN_KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app), base_url="http://modelport.test")
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://modelport.test/v1", http_client=http, _strict_response_validation=True
    )


def _anthropic(served: Served, key: str = ADMIN_KEY) -> anthropic.AsyncAnthropic:
    # This anthropic SDK speaks through httpx2 (httpx's successor), which has the same ASGI transport.
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=served.app), base_url="http://modelport.test")
    return anthropic.AsyncAnthropic(
        api_key=key, base_url="http://modelport.test", http_client=http, _strict_response_validation=True
    )


def _line(custom_id: str, model: str, prompt: str | None = None, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt or f"line {custom_id}"}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": messages, "max_tokens": 5, **body},
    }


def _jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


async def _until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 90) -> T:
    """Poll `read` until `done` says so, or fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"not done in {seconds} s: {value}"
        await asyncio.sleep(0.05)


def _records(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]


async def test_a_batch_of_100_lines_runs_each_once_and_malformed_lines_fail_alone(served: Served) -> None:
    tag = uuid.uuid4().hex[:6]
    good = [_line(f"{tag}-{index}", served.model) for index in range(100)]
    bad = [
        b'{"custom_id": "broken", "method": "POST"',  # not JSON
        _line("", served.model) | {"custom_id": None},  # no custom_id
        _line(f"{tag}-0", served.model, prompt="duplicate"),  # a custom_id used already
        _line(f"{tag}-url", served.model) | {"url": "/v1/nothing"},  # not the batch's endpoint
        _line(f"{tag}-body", served.model, temperature="hot"),  # a body the route refuses
        _line(f"{tag}-\u0000", served.model),  # a custom_id no database can hold
    ]
    async with _openai(served) as sdk:
        uploaded = await sdk.files.create(file=("requests.jsonl", _jsonl(good[:50] + bad + good[50:])), purpose="batch")
        assert (uploaded.purpose, uploaded.status, uploaded.filename) == ("batch", "processed", "requests.jsonl")
        assert uploaded.bytes == len(_jsonl(good[:50] + bad + good[50:]))
        batch = await sdk.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": tag},
        )
        assert batch.status == "validating" and batch.metadata == {"run": tag}
        assert batch.id.startswith("batch_") and batch.request_counts is not None
        finished = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert finished.request_counts is not None
        counts = finished.request_counts
        assert (counts.total, counts.completed, counts.failed) == (106, 100, 6)
        assert finished.output_file_id and finished.error_file_id
        assert finished.in_progress_at and finished.finalizing_at and finished.completed_at
        # The tokens of the lines that succeeded (each answer: 10 in, 5 out).
        assert finished.usage is not None
        assert (finished.usage.input_tokens, finished.usage.output_tokens) == (1000, 500)
        assert finished.usage.total_tokens == 1500

        output = _records((await sdk.files.content(finished.output_file_id)).content)
        assert sorted(record["custom_id"] for record in output) == sorted(line["custom_id"] for line in good)
        for record in output:
            assert record["error"] is None and record["id"].startswith("batch_req_")
            response = record["response"]
            assert response["status_code"] == 200 and response["request_id"]
            assert response["body"]["choices"][0]["message"]["content"] == f"echo: line {record['custom_id']}"
        errors = _records((await sdk.files.content(finished.error_file_id)).content)
        by_code = {(record["error"] or {}).get("code"): record for record in errors}
        codes = Counter((record["error"] or {}).get("code") for record in errors)
        assert codes == {"invalid_json": 1, "missing_custom_id": 2, "duplicate_custom_id": 1, "invalid_url": 1, None: 1}
        refused = by_code[None]["response"]
        assert refused["status_code"] == 400 and refused["body"]["error"]["param"] == "temperature"
        assert by_code["duplicate_custom_id"]["custom_id"] == f"{tag}-0"

        output_file = await sdk.files.retrieve(finished.output_file_id)
        assert output_file.purpose == "batch_output"
        listed = [file.id async for file in sdk.files.list(purpose="batch_output")]
        assert {finished.output_file_id, finished.error_file_id} <= set(listed)

    # Each good line reached the upstream once, the duplicate and the refused ones never.
    assert all(served.upstream.calls[f"line {line['custom_id']}"] == 1 for line in good)
    assert served.upstream.calls["duplicate"] == 0 and served.upstream.calls[f"line {tag}-body"] == 0
    # Each line was billed as a request of the key that created the batch.
    await served.app.state.usage.flush()
    async with served.app.state.sessions() as session:
        billed = await session.scalar(
            select(func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.status == 200, UsageRecord.key_id.is_not(None))
        )
    assert (billed or 0) >= 100


async def test_a_completions_batch(served: Served) -> None:
    tag = uuid.uuid4().hex[:6]
    lines = [
        {"custom_id": f"t{index}", "method": "POST", "url": "/v1/completions",
         "body": {"model": served.model, "prompt": f"text {tag} {index}", "max_tokens": 5}}
        for index in range(3)
    ]  # fmt: skip
    async with _openai(served) as sdk:
        uploaded = await sdk.files.create(file=("text.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert done.output_file_id is not None and done.endpoint == "/v1/completions"
        output = _records((await sdk.files.content(done.output_file_id)).content)
    texts = {record["custom_id"]: record["response"]["body"]["choices"][0]["text"] for record in output}
    assert texts == {f"t{index}": f"echo: text {tag} {index}" for index in range(3)}


async def test_a_responses_batch(served: Served) -> None:
    """Lines calling /v1/responses on a chat-only upstream (modelport translates, and
    writes the Responses object itself): each output line's body is a Responses object,
    as the SDK's own `Response` type parses it strictly."""
    tag = uuid.uuid4().hex[:6]
    model = f"chat-only-{tag}"
    created = await served.client.post(
        "/v4/models",
        json={"name": model, "model_type": "CHAT_COMPLETION", "model_vendor": "OTHER",
              "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await served.client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    lines = [
        {"custom_id": f"r{index}", "method": "POST", "url": "/v1/responses",
         "body": {"model": model, "input": f"resp {tag} {index}", "max_output_tokens": 16}}
        for index in range(3)
    ]  # fmt: skip
    async with _openai(served) as sdk:
        uploaded = await sdk.files.create(file=("responses.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert done.endpoint == "/v1/responses" and done.output_file_id is not None and done.error_file_id is None
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (3, 0)
        assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (30, 15)
        output = _records((await sdk.files.content(done.output_file_id)).content)
    answers = {}
    for record in output:
        assert record["error"] is None and record["response"]["status_code"] == 200
        answer = Response.model_validate(record["response"]["body"], strict=True)
        assert answer.id.startswith("resp_") and answer.object == "response" and answer.status == "completed"
        answers[record["custom_id"]] = answer.output_text
    assert answers == {f"r{index}": f"echo: resp {tag} {index}" for index in range(3)}


async def test_cancel_stops_new_lines_lets_running_ones_finish(served: Served) -> None:
    tag = uuid.uuid4().hex[:6]
    lines = [_line(f"{tag}-{index}", served.model, prompt=f"slow {tag} {index}") for index in range(20)]
    served.upstream.release.clear()
    async with _openai(served) as sdk:
        uploaded = await sdk.files.create(file=("slow.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

        def running() -> int:
            return sum(count for prompt, count in served.upstream.calls.items() if prompt.startswith(f"slow {tag}"))

        async def calls() -> int:
            return running()

        await _until(calls, lambda count: count == CONCURRENCY)
        cancelling = await sdk.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        served.upstream.release.set()
        cancelled = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "cancelled")
        assert cancelled.request_counts is not None and cancelled.request_counts.completed == CONCURRENCY
        assert running() == CONCURRENCY  # no line started after the cancel
        assert cancelled.output_file_id and cancelled.error_file_id
        errors = _records((await sdk.files.content(cancelled.error_file_id)).content)
        assert len(errors) == 20 - CONCURRENCY
        assert {record["error"]["code"] for record in errors} == {"batch_cancelled"}
        # Cancelling what has ended changes nothing.
        again = await sdk.batches.cancel(batch.id)
        assert again.status == "cancelled"


async def test_cancelling_an_anthropic_batch_cancels_the_requests_not_started(served: Served) -> None:
    tag = uuid.uuid4().hex[:6]
    requests: list[Any] = [
        {"custom_id": f"s-{tag}-{index}", "params": {"model": served.model, "max_tokens": 5,
                                                     "messages": [{"role": "user", "content": f"slow a{tag} {index}"}]}}
        for index in range(10)
    ]  # fmt: skip
    served.upstream.release.clear()

    async def started() -> int:
        return sum(count for prompt, count in served.upstream.calls.items() if prompt.startswith(f"slow a{tag}"))

    async with _anthropic(served) as sdk:
        created = await sdk.messages.batches.create(requests=requests)
        await _until(started, lambda count: count == CONCURRENCY)
        canceling = await sdk.messages.batches.cancel(created.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        served.upstream.release.set()
        ended = await _until(
            lambda: sdk.messages.batches.retrieve(created.id), lambda found: found.processing_status == "ended"
        )
        counts = ended.request_counts
        assert (counts.succeeded, counts.canceled, counts.errored, counts.processing) == (CONCURRENCY, 6, 0, 0)
        kinds = Counter([entry.result.type async for entry in await sdk.messages.batches.results(created.id)])
        assert kinds == {"succeeded": CONCURRENCY, "canceled": 6}
    assert await started() == CONCURRENCY


async def test_batches_list_by_cursor_and_files_list_and_delete(served: Served) -> None:
    async with _openai(served) as sdk:
        uploaded = await sdk.files.create(file=("one.jsonl", _jsonl([_line("only", served.model)])), purpose="batch")
        made = [
            (
                await sdk.batches.create(
                    input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
            ).id
            for _ in range(3)
        ]
        first = await sdk.batches.list(limit=2)
        assert len(first.data) == 2 and first.has_more
        every = [batch.id async for batch in sdk.batches.list(limit=2)]
        assert every[:3] == list(reversed(made))  # newest first, across pages
        assert len(every) == len(set(every))

        files = [file.id async for file in sdk.files.list(limit=1, order="asc")]
        assert uploaded.id in files and len(files) == len(set(files))
        # A cursor that is gone (a file deleted while paging) ends the listing, never restarts it.
        assert (await sdk.files.list(after="file-gone")).data == []
        assert (await sdk.batches.list(after="batch_gone")).data == []
        # A running batch's input stays; once they ended, it goes.
        for batch_id in made:
            await _until(partial(sdk.batches.retrieve, batch_id), lambda found: found.status == "completed")
        deleted = await sdk.files.delete(uploaded.id)
        assert deleted.deleted and deleted.id == uploaded.id
        with pytest.raises(openai.NotFoundError):
            await sdk.files.retrieve(uploaded.id)


async def test_another_accounts_files_and_batches_are_not_found(served: Served) -> None:
    account = await served.client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:8]}"})
    assert account.status_code == 200, account.text
    in_other = {"x-selected-account-id": account.json()["account_id"]}
    key = await served.client.post("/v4/api-keys", json={"role": "admin", "name": "other"}, headers=in_other)
    assert key.status_code == 201, key.text
    async with _openai(served) as mine, _openai(served, key.json()["key"]) as theirs:
        uploaded = await mine.files.create(file=("mine.jsonl", _jsonl([_line("x", served.model)])), purpose="batch")
        batch = await mine.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for call in (
            lambda: theirs.files.retrieve(uploaded.id),
            lambda: theirs.files.content(uploaded.id),
            lambda: theirs.files.delete(uploaded.id),
            lambda: theirs.batches.retrieve(batch.id),
            lambda: theirs.batches.cancel(batch.id),
            lambda: theirs.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                await call()
            assert refused.value.body is not None and "error" in refused.value.response.json()
        assert uploaded.id not in [file.id async for file in theirs.files.list()]
        assert batch.id not in [found.id async for found in theirs.batches.list()]
    request = {"custom_id": "x", "params": {"model": served.model, "max_tokens": 5, "messages": []}}
    async with _anthropic(served) as mine_a, _anthropic(served, key.json()["key"]) as theirs_a:
        message_batch = await mine_a.messages.batches.create(requests=[request])  # type: ignore[list-item]
        for anthropic_call in (
            lambda: theirs_a.messages.batches.retrieve(message_batch.id),
            lambda: theirs_a.messages.batches.cancel(message_batch.id),
            lambda: theirs_a.messages.batches.delete(message_batch.id),
        ):
            with pytest.raises(anthropic.NotFoundError):
                await anthropic_call()
        assert message_batch.id not in [found.id async for found in theirs_a.messages.batches.list()]
        with pytest.raises(anthropic.NotFoundError) as results:
            await theirs_a.get(f"/v1/messages/batches/{message_batch.id}/results", cast_to=httpx2.Response)
        assert results.value.response.json()["error"]["type"] == "not_found_error"


async def test_a_line_runs_as_the_key_that_created_the_batch(served: Served) -> None:
    """A key allowed only another model: each line is refused as that key's own request is."""
    other = f"other-{uuid.uuid4().hex[:8]}"
    created = await served.client.post(
        "/v4/models", json={"name": other, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI"}
    )
    assert created.status_code == 200, created.text
    key = await served.client.post("/v4/api-keys", json={"role": "member", "name": "narrow", "models": [other]})
    assert key.status_code == 201, key.text
    async with _openai(served, key.json()["key"]) as sdk:
        uploaded = await sdk.files.create(file=("n.jsonl", _jsonl([_line("n1", served.model)])), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert done.output_file_id is None and done.error_file_id
        [record] = _records((await sdk.files.content(done.error_file_id)).content)
        assert record["response"]["status_code"] == 404
        assert record["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert served.upstream.calls["line n1"] == 0


async def test_a_batch_goes_at_the_pace_its_keys_limits_allow(served: Served) -> None:
    """A key with max_parallel_requests 1: the lines refused for now (429) are sent again
    after their Retry-After, one at a time upstream, and every one succeeds."""
    key = await served.client.post("/v4/api-keys", json={"role": "member", "name": "one", "max_parallel_requests": 1})
    assert key.status_code == 201, key.text
    tag = uuid.uuid4().hex[:6]
    lines = [_line(f"{tag}-{index}", served.model, prompt=f"paced {tag} {index}") for index in range(6)]
    served.upstream.most_in_flight = 0
    async with _openai(served, key.json()["key"]) as sdk:
        uploaded = await sdk.files.create(file=("paced.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (6, 0)
    assert served.upstream.most_in_flight == 1
    assert all(served.upstream.calls[f"paced {tag} {index}"] == 1 for index in range(6))


async def test_bounds_a_file_over_the_cap_is_413_and_too_many_lines_400(served: Served) -> None:
    async with _openai(served) as sdk:
        with pytest.raises(openai.APIStatusError) as too_large:
            await sdk.files.create(file=("big.jsonl", b"x" * (FILES_MAX_BYTES + 70 * 1024)), purpose="batch")
        assert too_large.value.status_code == 413
        assert "MODELPORT_FILES_MAX_BYTES" in too_large.value.response.json()["error"]["message"]
        # Just over the file's own bound, within the multipart envelope's allowance.
        with pytest.raises(openai.APIStatusError) as just_over:
            await sdk.files.create(file=("big.jsonl", b"x" * (FILES_MAX_BYTES + 1)), purpose="batch")
        assert just_over.value.status_code == 413
        with pytest.raises(openai.BadRequestError, match="MODELPORT_BATCH_MAX_LINES"):
            lines = [_line(f"c{index}", served.model) for index in range(MAX_LINES + 1)]
            await sdk.files.create(file=("many.jsonl", _jsonl(lines)[: FILES_MAX_BYTES - 1]), purpose="batch")
        with pytest.raises(openai.BadRequestError):
            await sdk.files.create(file=("a.txt", b"hello"), purpose="nonsense")  # type: ignore[arg-type]

    # A body without a declared length is counted as it arrives.
    async def chunks() -> AsyncIterator[bytes]:
        boundary = b"--b\r\n"
        yield boundary + b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="f.jsonl"\r\n\r\n'
        for _ in range(FILES_MAX_BYTES // 1024 + 80):
            yield b"y" * 1024
        yield b"\r\n--b--\r\n"

    streamed = await served.client.post(
        "/v1/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"]["type"] == "invalid_request_error"


async def test_bounds_an_accounts_files_hold_at_most_their_bound_together(served: Served) -> None:
    account = await served.client.post("/accounts", json={"account_name": f"full-{uuid.uuid4().hex[:8]}"})
    in_other = {"x-selected-account-id": account.json()["account_id"]}
    key = await served.client.post("/v4/api-keys", json={"role": "member", "name": "full"}, headers=in_other)
    piece = b"z" * (200 * 1024)
    async with _openai(served, key.json()["key"]) as sdk:
        kept = [await sdk.files.create(file=(f"{index}.txt", piece), purpose="user_data") for index in range(5)]
        with pytest.raises(openai.APIStatusError) as full:
            await sdk.files.create(file=("more.txt", piece), purpose="user_data")
        assert full.value.status_code == 413
        assert "MODELPORT_FILES_MAX_BYTES_PER_ACCOUNT" in full.value.response.json()["error"]["message"]
        assert len([file async for file in sdk.files.list()]) == 5  # the refused one is not kept
        await sdk.files.delete(kept[0].id)
        again = await sdk.files.create(file=("more.txt", piece), purpose="user_data")
        assert (await sdk.files.content(again.id)).content == piece


async def test_anthropic_message_batches_through_the_sdk(served: Served) -> None:
    tag = uuid.uuid4().hex[:6]
    requests: list[Any] = [
        {"custom_id": f"a-{tag}-{index}", "params": {"model": served.model, "max_tokens": 5,
                                                     "messages": [{"role": "user", "content": f"anth {tag} {index}"}]}}
        for index in range(3)
    ]  # fmt: skip
    requests.append({"custom_id": f"bad-{tag}", "params": {"model": served.model, "messages": []}})  # no max_tokens
    async with _anthropic(served) as sdk:
        created = await sdk.messages.batches.create(requests=requests)
        assert created.processing_status == "in_progress" and created.id.startswith("msgbatch_")
        assert created.request_counts.processing == 4 and created.results_url is None
        ended = await _until(
            lambda: sdk.messages.batches.retrieve(created.id), lambda found: found.processing_status == "ended"
        )
        counts = ended.request_counts
        assert (counts.succeeded, counts.errored, counts.processing, counts.canceled) == (3, 1, 0, 0)
        assert ended.ended_at is not None and ended.results_url
        results = {entry.custom_id: entry.result async for entry in await sdk.messages.batches.results(created.id)}
        assert len(results) == 4
        for index in range(3):
            result = results[f"a-{tag}-{index}"]
            assert result.type == "succeeded"
            assert result.message.content[0].type == "text"
            assert result.message.content[0].text == f"echo: anth {tag} {index}"
        failed = results[f"bad-{tag}"]
        assert failed.type == "errored" and failed.error.error.type == "invalid_request_error"

        listed = [batch.id async for batch in sdk.messages.batches.list(limit=1)]
        assert created.id in listed and len(listed) == len(set(listed))
        still = await sdk.messages.batches.cancel(created.id)  # ended: as it was
        assert still.processing_status == "ended"
        deleted = await sdk.messages.batches.delete(created.id)
        assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await sdk.messages.batches.retrieve(created.id)
        with pytest.raises(anthropic.BadRequestError):
            await sdk.messages.batches.create(requests=[{"custom_id": "same", "params": requests[0]["params"]}] * 2)
    # The OpenAI surface does not see Anthropic's batches, nor their requests as files.
    async with _openai(served) as openai_sdk:
        with pytest.raises(openai.NotFoundError):
            await openai_sdk.batches.retrieve(created.id)


async def test_files_kept_in_a_directory(tmp_path: Any) -> None:
    """MODELPORT_FILES_DIR: a file's bytes are a file there (named by its id alone), read
    back and run as a batch from there, and gone with it."""
    directory = tmp_path / "files"
    upstream = Upstream()
    settings = sqlite_settings(
        tmp_path, files_dir=str(directory), batch_poll_seconds=0.05, upstream_attempts=1, auth_failures_per_minute=0
    )
    async with in_process(settings, upstream=_Transport(upstream)) as (app, client):
        created = await client.post(
            "/v4/models",
            json={"name": "kept", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                  "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
        )  # fmt: skip
        await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
        served = Served(app, client, upstream, "kept")
        content = _jsonl([_line("d1", "kept"), _line("d2", "kept")])
        async with _openai(served) as sdk:
            uploaded = await sdk.files.create(file=("../../escape.jsonl", content), purpose="batch")
            assert (directory / uploaded.id).read_bytes() == content
            assert [path.name for path in directory.iterdir()] == [uploaded.id]
            assert (await sdk.files.content(uploaded.id)).content == content
            batch = await sdk.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
            assert done.request_counts is not None and done.request_counts.completed == 2
            assert done.output_file_id is not None and (directory / done.output_file_id).exists()
            await sdk.files.delete(uploaded.id)
            assert not (directory / uploaded.id).exists()
