"""The embedded model's reused prompt prefix, end to end: a repeated prompt reports it
as cached tokens in OpenAI's and Anthropic's usage fields, and the usage record keeps it."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from modelport.store.tables import UsageRecord
from tests.conftest import CHAT_DEPLOYMENT

MODEL = "smollm2-135m-instruct"


async def test_a_repeated_prompt_reports_its_reused_prefix_as_cached(app: FastAPI, client: httpx.AsyncClient) -> None:
    # A prompt no other test sends: the first call cannot find it kept.
    system = f"You answer questions about bicycles. Case {uuid.uuid4().hex}. Be brief and exact."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Do chains need oil?"}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0}
    first = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
    again = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] < first["prompt_tokens"] // 2
    assert again["prompt_tokens"] == first["prompt_tokens"]
    # All but the last prompt token came from the kept prefix (that one is evaluated for its logits).
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] - 1

    anthropic = await client.post(
        "/v1/messages",
        json={"model": MODEL, "system": system, "messages": messages[1:], "max_tokens": 2, "temperature": 0},
    )
    usage = anthropic.json()["usage"]
    assert usage["cache_read_input_tokens"] == again["prompt_tokens"] - 1
    assert (usage["input_tokens"], usage["cache_creation_input_tokens"]) == (1, 0)

    listing = (await client.get("/v4/model-deployments")).json()["items"]
    [deployment] = [item["id"] for item in listing if item["name"] == CHAT_DEPLOYMENT]
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = (
            await session.execute(
                select(UsageRecord.prompt_tokens, UsageRecord.cached_prompt_tokens)
                .where(UsageRecord.deployment_id == deployment)
                .order_by(UsageRecord.id.desc())
                .limit(3)
            )
        ).all()
    # Newest first: the Anthropic call, the repeated one, the first one.
    reused = (again["prompt_tokens"], again["prompt_tokens"] - 1)
    assert [tuple(row) for row in rows] == [
        reused,
        reused,
        (first["prompt_tokens"], first["prompt_tokens_details"]["cached_tokens"]),
    ]
