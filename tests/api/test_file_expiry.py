"""File expiry and a batch's model (issue 26), through the `openai` SDK in strict mode
against the real application, on SQLite and PostgreSQL, with files kept in the database
and in a directory (`MODELPORT_FILES_DIR`): an upload's `expires_after`, a batch's
`output_expires_after` on its output and error files, a file past its expiry gone for
the client and then swept for good by the runner (but a running batch's input kept until
the batch ends), bad expiries refused naming them, and the batch's `model`.

Expiry is made to pass by writing `expires_at` in the past in the database: no test
waits an hour.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import func, select, update

from modelport.store.tables import BatchFile, BatchFileChunk
from tests.api.test_batches import Served, Upstream, _jsonl, _line, _openai, _records, _Transport, _until
from tests.conftest import in_process, own_database, sqlite_settings

HOUR = 3600


@dataclass
class Expiring:
    served: Served
    directory: Path | None  # where the files are kept, when not in the database

    async def stored(self, file_id: str) -> tuple[bool, int]:
        """Whether the file's row is still there (expired or not), and how many chunks."""
        async with self.served.app.state.sessions() as session:
            row = await session.scalar(select(BatchFile.id).where(BatchFile.id == file_id))
            chunks = await session.scalar(
                select(func.count()).select_from(BatchFileChunk).where(BatchFileChunk.file_id == file_id)
            )
        return row is not None, int(chunks or 0)

    async def expire(self, *file_ids: str) -> None:
        """Make the files' expiry pass now."""
        async with self.served.app.state.sessions() as session, session.begin():
            await session.execute(
                update(BatchFile)
                .where(BatchFile.id.in_(file_ids))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

    def kept_in_directory(self, file_id: str) -> bool:
        return self.directory is not None and (self.directory / file_id).exists()


@pytest.fixture(
    scope="module",
    params=[("sqlite", False), ("sqlite", True), ("postgresql", False), ("postgresql", True)],
    ids=["sqlite-db", "sqlite-dir", "postgresql-db", "postgresql-dir"],
)
async def expiring(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Expiring]:
    kind, in_directory = request.param
    data = tmp_path_factory.mktemp("expiry")
    directory = data / "files" if in_directory else None
    upstream = Upstream()
    async with own_database(kind, data) as url:
        settings = sqlite_settings(
            data,
            database_url=url,
            files_dir=str(directory) if directory else None,
            upstream_attempts=1,
            auth_failures_per_minute=0,
            batch_poll_seconds=0.05,
            batch_lease_seconds=3,
        )
        async with in_process(settings, upstream=_Transport(upstream)) as (app, client):
            name = f"expiring-{uuid.uuid4().hex[:8]}"
            created = await client.post(
                "/v4/models",
                json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                      "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up"}},
            )  # fmt: skip
            assert created.status_code == 200, created.text
            deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
            assert deployment.status_code == 200, deployment.text
            yield Expiring(Served(app, client, upstream, name), directory)


async def test_an_upload_with_expires_after_shows_when_it_expires(expiring: Expiring) -> None:
    async with _openai(expiring.served) as sdk:
        expiring_file = await sdk.files.create(
            file=("soon.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": HOUR}
        )
        assert expiring_file.expires_at == expiring_file.created_at + HOUR
        assert (await sdk.files.retrieve(expiring_file.id)).expires_at == expiring_file.created_at + HOUR
        listed = {file.id: file.expires_at async for file in sdk.files.list()}
        assert listed[expiring_file.id] == expiring_file.created_at + HOUR
        longest = await sdk.files.create(
            file=("month.txt", b"x"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 2592000}
        )
        assert longest.expires_at == longest.created_at + 2592000
        kept = await sdk.files.create(file=("kept.jsonl", b"{}\n"), purpose="batch")
        assert kept.expires_at is None


async def test_a_bad_expires_after_is_a_400_naming_it(expiring: Expiring) -> None:
    served = expiring.served
    async with _openai(served) as sdk:
        before = len([file async for file in sdk.files.list()])
        for expires_after in (
            {"anchor": "created_at", "seconds": HOUR - 1},
            {"anchor": "created_at", "seconds": 2592001},
            {"anchor": "last_active_at", "seconds": HOUR},
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.files.create(file=("f.jsonl", b"{}\n"), purpose="batch", expires_after=expires_after)  # type: ignore[arg-type]
            assert refused.value.param == "expires_after", expires_after
        # What the SDK's types would not send, as a client may.
        for fields in (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "an hour"},
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600.5"},
            {"expires_after[anchor]": "created_at"},
            {"expires_after[seconds]": "3600"},
            {"expires_after": '{"anchor": "created_at", "seconds": 3600}'},
        ):
            answer = await served.client.post(
                "/v1/files", data={"purpose": "batch", **fields}, files={"file": ("f.jsonl", b"{}\n")}
            )
            assert answer.status_code == 400, (fields, answer.text)
            error = answer.json()["error"]
            assert (error["type"], error["param"]) == ("invalid_request_error", "expires_after"), fields
            assert "3600" in error["message"] and "2592000" in error["message"]
        assert len([file async for file in sdk.files.list()]) == before  # nothing refused was kept

        source = await sdk.files.create(file=("in.jsonl", _jsonl([_line("b", served.model)])), purpose="batch")
        for output_expires_after in (
            {"anchor": "created_at", "seconds": 60},
            {"anchor": "created_at", "seconds": 2592001},
            {"anchor": "completed_at", "seconds": HOUR},
            {"anchor": "created_at", "seconds": "3600"},
            {"anchor": "created_at", "seconds": HOUR, "days": 1},
            {"seconds": HOUR},
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.batches.create(
                    input_file_id=source.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    output_expires_after=output_expires_after,  # type: ignore[arg-type]
                )
            assert (refused.value.param or "").startswith("output_expires_after"), output_expires_after
        assert source.id not in {batch.input_file_id async for batch in sdk.batches.list()}


async def test_an_expired_file_is_gone_then_swept_but_a_running_batchs_input_stays_until_it_ends(
    expiring: Expiring,
) -> None:
    served = expiring.served
    tag = uuid.uuid4().hex[:6]
    lines = [_line(f"{tag}-{index}", served.model, prompt=f"slow {tag} {index}") for index in range(2)]
    served.upstream.release.clear()
    async with _openai(served) as sdk:
        plain = await sdk.files.create(file=("plain.txt", b"p" * 10), purpose="user_data")
        source = await sdk.files.create(file=("slow.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

        async def started() -> int:
            return sum(count for prompt, count in served.upstream.calls.items() if prompt.startswith(f"slow {tag}"))

        await _until(started, lambda count: count == 2)  # the batch is running, its input read
        assert await expiring.stored(plain.id) == (True, 0 if expiring.directory else 1)
        await expiring.expire(plain.id, source.id)

        # Gone for the client at once, swept or not.
        for file_id in (plain.id, source.id):
            for call in (sdk.files.retrieve, sdk.files.content, sdk.files.delete):
                with pytest.raises(openai.NotFoundError):
                    await call(file_id)
        assert not {plain.id, source.id} & {file.id async for file in sdk.files.list()}
        with pytest.raises(openai.NotFoundError):
            await sdk.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")

        # The runner's sweep deletes the plain file for good...
        await _until(lambda: expiring.stored(plain.id), lambda stored: stored == (False, 0))
        assert not expiring.kept_in_directory(plain.id)
        # ...and, in the same pass, keeps the running batch's input.
        source_rows, source_chunks = await expiring.stored(source.id)
        assert source_rows and (expiring.kept_in_directory(source.id) or source_chunks == 1)

        served.upstream.release.set()
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 0)
        assert done.output_file_id is not None
        assert len(_records((await sdk.files.content(done.output_file_id)).content)) == 2
        # Once the batch ended, its expired input goes at the next sweep.
        await _until(lambda: expiring.stored(source.id), lambda stored: stored == (False, 0))
        assert not expiring.kept_in_directory(source.id)
        assert (await sdk.batches.retrieve(batch.id)).status == "completed"


async def test_a_batchs_model_and_its_output_files_expiry(expiring: Expiring) -> None:
    served = expiring.served
    tag = uuid.uuid4().hex[:6]
    lines: list[Any] = [
        b"not json",  # not a request: the model is not read from it
        _line(f"{tag}-url", "wrong-url-model") | {"url": "/v1/embeddings"},  # not the batch's endpoint
        _line(f"{tag}-0", served.model),  # the first request: the batch's model
        _line(f"{tag}-1", "no-such-model"),  # another model: refused alone (404), into the error file
    ]
    async with _openai(served) as sdk:
        source = await sdk.files.create(file=("mixed.jsonl", _jsonl(lines)), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 2 * HOUR},
        )
        done = await _until(lambda: sdk.batches.retrieve(batch.id), lambda found: found.status == "completed")
        assert done.model == served.model
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (1, 3)
        assert done.output_file_id is not None and done.error_file_id is not None
        for file_id in (done.output_file_id, done.error_file_id):
            written = await sdk.files.retrieve(file_id)
            assert written.purpose == "batch_output"
            assert written.expires_at == written.created_at + 2 * HOUR
        assert (await sdk.files.retrieve(source.id)).expires_at is None  # the input keeps its own
        assert [found.model async for found in sdk.batches.list() if found.id == batch.id] == [served.model]

        # Without output_expires_after, the output is kept until deleted.
        plain = await sdk.files.create(file=("one.jsonl", _jsonl([_line(f"{tag}-p", served.model)])), purpose="batch")
        kept = await sdk.batches.create(
            input_file_id=plain.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ended = await _until(lambda: sdk.batches.retrieve(kept.id), lambda found: found.status == "completed")
        assert ended.output_file_id is not None and ended.model == served.model
        assert (await sdk.files.retrieve(ended.output_file_id)).expires_at is None
