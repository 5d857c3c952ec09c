"""The SGP SDK's files (`client.beta.files`, `/v4/beta/files`, issue 26): every method,
through the SDK with strict response validation, against the real application on
SQLite and PostgreSQL; the file part a plain HTTP client sends; the bounds; and the
walls between these files, the Files API's and another account's."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import scale_gp
from fastapi import FastAPI
from scale_gp import AsyncSGPClient

from modelport.config import Settings
from tests.conftest import ADMIN_KEY, in_process

MAX_BODY_BYTES = 64 * 1024
FILES_MAX_BYTES = 256 * 1024


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, auth_failures_per_minute=0,
        max_body_bytes=MAX_BODY_BYTES, files_max_bytes=FILES_MAX_BYTES,
    )  # fmt: skip
    async with in_process(settings) as both:
        yield both


def _sgp(app: FastAPI, key: str = ADMIN_KEY) -> AsyncSGPClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelport.test")
    return AsyncSGPClient(
        api_key=key, base_url="http://modelport.test", http_client=http, _strict_response_validation=True,
        max_retries=0,
    )  # fmt: skip


@pytest.fixture
async def sdk(served: tuple[FastAPI, httpx.AsyncClient]) -> AsyncIterator[AsyncSGPClient]:
    async with _sgp(served[0]) as client:
        yield client


async def test_a_file_sent_as_the_sdk_sends_it_is_stored_shown_and_read_back(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    text = "id,question\n1,¿qué tal?\n"
    created = await sdk.beta.files.create(file=text)
    data = text.encode()
    assert (created.size, created.md5_checksum) == (len(data), hashlib.md5(data).hexdigest())
    assert (created.filename, created.mime_type, created.object) == ("file", "text/plain", "file")
    admin = (await served[1].get("/user-info")).json()
    assert (created.created_by.id, created.created_by.type) == (admin["id"], "user")

    retrieved = await sdk.beta.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    content = await sdk.beta.files.content(created.id)
    assert await content.read() == data

    deleted = await sdk.beta.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(scale_gp.NotFoundError):
        await sdk.beta.files.retrieve(created.id)
    with pytest.raises(scale_gp.NotFoundError):
        await sdk.beta.files.delete(created.id)


async def test_a_file_part_keeps_its_name_and_media_type_and_its_bytes(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    client = served[1]
    binary = bytes(range(256)) * 8  # not UTF-8: a file part carries bytes, not text
    sent = await client.post("/v4/beta/files", files={"file": ("table.csv", binary, "text/csv")})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["filename"], sent.json()["mime_type"]) == ("table.csv", "text/csv")
    assert sent.json()["md5_checksum"] == hashlib.md5(binary).hexdigest()
    assert await (await sdk.beta.files.content(sent.json()["id"])).read() == binary

    # No media type of its own: guessed from the name.
    guessed = await client.post("/v4/beta/files", files={"file": ("answer.json", b"{}", "application/octet-stream")})
    assert guessed.json()["mime_type"] == "application/json"
    fetched = await client.get(f"/v4/beta/files/{guessed.json()['id']}/content")
    assert (fetched.content, fetched.headers["content-type"]) == (b"{}", "application/json")


async def test_pages_follow_the_cursor_in_the_order_asked_and_filter_by_name(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{letter}.txt" for letter in "dbeac"]
    made = {}
    for size, name in enumerate(names, start=1):
        sent = await served[1].post("/v4/beta/files", files={"file": (name, b"x" * size, "text/plain")})
        assert sent.status_code == 200, sent.text
        made[name] = sent.json()["id"]

    # The SDK follows `starting_after` from page to page until a page is empty.
    by_name = [
        file.filename async for file in sdk.beta.files.list(filename=tag, sort_by="filename", sort_order="asc", limit=2)
    ]
    assert by_name == sorted(names)
    by_size = [file.size async for file in sdk.beta.files.list(filename=tag.upper(), sort_by="size", limit=2)]
    assert by_size == [5, 4, 3, 2, 1]
    newest_first = [file.id async for file in sdk.beta.files.list(filename=tag)]
    assert newest_first == [made[name] for name in reversed(names)]

    # The page just before a file, in the same order.
    first = await sdk.beta.files.list(filename=tag, sort_by="filename", sort_order="asc", limit=10)
    ids = [file.id for file in first.items]
    before = await sdk.beta.files.list(
        filename=tag, sort_by="filename", sort_order="asc", ending_before=ids[3], limit=2
    )
    assert [file.id for file in before.items] == ids[1:3]

    # `%` and `_` in a name filter are the characters themselves, not patterns.
    assert [file async for file in sdk.beta.files.list(filename=f"{tag}%")] == []
    assert [file async for file in sdk.beta.files.list(filename=f"{tag}_d")] == []

    # As on every /v4/beta route, a refused query is a 400 in OpenAI's shape (api/error_shapes.py).
    for bad in ({"sort_by": "md5_checksum"}, {"limit": 0}, {"account_id": "another-account"}):
        with pytest.raises(scale_gp.BadRequestError):
            await sdk.beta.files.list(**bad)  # type: ignore[arg-type]


async def test_these_files_are_apart_from_the_files_api_and_from_other_accounts(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    app, client = served
    mine = await sdk.beta.files.create(file="mine")
    batch_file = await client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", b"{}\n")})
    assert batch_file.status_code == 200, batch_file.text
    assert (await client.get(f"/v1/files/{mine.id}")).status_code == 404
    assert mine.id not in [file["id"] for file in (await client.get("/v1/files")).json()["data"]]
    with pytest.raises(scale_gp.NotFoundError):
        await sdk.beta.files.retrieve(batch_file.json()["id"])

    account = await client.post("/accounts", json={"account_name": f"other-{uuid.uuid4().hex[:8]}"})
    in_other = {"x-selected-account-id": account.json()["account_id"]}
    key = await client.post("/v4/api-keys", json={"role": "admin", "name": "other"}, headers=in_other)
    assert key.status_code == 201, key.text
    async with _sgp(app, key.json()["key"]) as theirs:
        for call in (theirs.beta.files.retrieve, theirs.beta.files.content, theirs.beta.files.delete):
            with pytest.raises(scale_gp.NotFoundError):
                await call(mine.id)
        assert mine.id not in [file.id async for file in theirs.beta.files.list()]
    assert (await sdk.beta.files.retrieve(mine.id)).id == mine.id


async def test_bounds_a_text_field_past_the_body_limit_and_a_file_past_the_file_limit_are_413(
    served: tuple[FastAPI, httpx.AsyncClient], sdk: AsyncSGPClient
) -> None:
    client = served[1]
    with pytest.raises(scale_gp.APIStatusError) as too_long:
        await sdk.beta.files.create(file="x" * (MAX_BODY_BYTES + 1))
    assert too_long.value.status_code == 413
    assert "MODELPORT_MAX_BODY_BYTES" in too_long.value.response.json()["error"]["message"]
    # The same bytes as a file part are taken, up to the file limit...
    part = await client.post("/v4/beta/files", files={"file": ("big.txt", b"x" * (MAX_BODY_BYTES + 1))})
    assert part.status_code == 200, part.text
    # ...and no further.
    too_big = await client.post("/v4/beta/files", files={"file": ("huge.txt", b"x" * (FILES_MAX_BYTES + 70 * 1024))})
    assert too_big.status_code == 413
    assert "MODELPORT_FILES_MAX_BYTES" in too_big.text

    for body in ({"json": {"file": "a"}}, {"files": {"other": ("a.txt", b"a")}}):
        refused = await client.post("/v4/beta/files", **body)  # type: ignore[arg-type]
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "file"
