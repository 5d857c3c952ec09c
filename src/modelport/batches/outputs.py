"""What an OpenAI batch leaves when it ends: its output file (the lines answered 2xx)
and error file (the others), in OpenAI's batch output format, and its `usage`."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.batches.files import FileStore, Owner
from modelport.store import batches as store
from modelport.store.tables import Batch, BatchLine

# Lines read per query while writing.
PAGE = 500


async def write(
    sessions: async_sessionmaker[AsyncSession], files: FileStore, batch: Batch, counts: dict[str, int]
) -> dict[str, str]:
    """The output file (the lines that succeeded) and the error file (the others),
    in OpenAI's batch output format; each only when it has a line, and expiring
    `output_expires_after` after it is written when the batch was created with one."""
    owner = Owner(account_id=batch.account_id, identity_id=batch.identity_id, key_id=batch.key_id)
    seconds = batch.output_expires_after_seconds
    expires_after = timedelta(seconds=seconds) if seconds is not None else None
    written: dict[str, str] = {}
    for column, succeeded, name, present in (
        ("output_file_id", True, "output", counts.get("succeeded", 0)),
        ("error_file_id", False, "error", sum(counts.values()) - counts.get("succeeded", 0)),
    ):
        if present:
            file = await files.write(
                owner,
                purpose="batch_output",
                filename=f"{batch.id}_{name}.jsonl",
                chunks=_records(sessions, batch.id, succeeded),
                capped=False,
                expires_after=expires_after,
            )
            written[column] = file.id
    return written


async def usage(sessions: async_sessionmaker[AsyncSession], batch_id: str) -> dict[str, Any]:
    """The tokens of the lines that succeeded, in OpenAI's batch `usage` shape, from
    each answer's own `usage` (chat and completions, embeddings, responses)."""
    total = Counter[str]()
    after = -1
    while True:
        async with sessions() as session:
            page = await store.lines_page(session, batch_id=batch_id, after_line=after, limit=PAGE)
        if not page:
            break
        for row in page:
            if row.succeeded and isinstance(row.body, dict) and isinstance(row.body.get("usage"), dict):
                total.update(_tokens(row.body["usage"]))
        after = page[-1].line
    return {
        "input_tokens": total["input"],
        "input_tokens_details": {"cached_tokens": total["cached"]},
        "output_tokens": total["output"],
        "output_tokens_details": {"reasoning_tokens": total["reasoning"]},
        "total_tokens": total["input"] + total["output"],
    }


async def _records(sessions: async_sessionmaker[AsyncSession], batch_id: str, succeeded: bool) -> AsyncIterator[bytes]:
    after = -1
    while True:
        async with sessions() as session:
            page = await store.lines_page(session, batch_id=batch_id, after_line=after, limit=PAGE)
        if not page:
            return
        yield b"".join(orjson.dumps(openai_record(batch_id, row)) + b"\n" for row in page if row.succeeded == succeeded)
        after = page[-1].line


def _tokens(usage: dict[str, Any]) -> dict[str, int]:
    """One answer's usage, whichever surface's names it has."""

    def number(*names: str, within: dict[str, Any] | None = None) -> int:
        source = usage if within is None else within
        for name in names:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    input_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return {
        "input": number("prompt_tokens", "input_tokens"),
        "output": number("completion_tokens", "output_tokens"),
        "cached": number("cached_tokens", within=input_details) if isinstance(input_details, dict) else 0,
        "reasoning": number("reasoning_tokens", within=output_details) if isinstance(output_details, dict) else 0,
    }


def openai_record(batch_id: str, row: BatchLine) -> dict[str, Any]:
    """A line of an output or error file, in OpenAI's batch output format."""
    digest = hashlib.sha256(f"{batch_id}:{row.line}".encode()).hexdigest()[:32]
    answered = row.status_code is not None
    return {
        "id": f"batch_req_{digest}",
        "custom_id": row.custom_id,
        "response": (
            {"status_code": row.status_code, "request_id": row.request_id or "", "body": row.body} if answered else None
        ),
        "error": None if answered else row.error,
    }
