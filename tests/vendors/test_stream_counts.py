"""Counts are never missing (SPEC 3.7): a stream from llama.cpp's server, which sends no
usage block, still ends with prompt_tokens and response_tokens, and its usage record
says they are estimated."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from modelport.store.tables import UsageRecord
from tests.vendors.conftest import deploy

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three fruits."}]


async def last_usage(app: Any, deployment: str) -> UsageRecord:
    await app.state.usage.flush()
    async with app.state.sessions() as session:
        rows = await session.scalars(
            select(UsageRecord).where(UsageRecord.deployment_id == deployment).order_by(UsageRecord.id.desc())
        )
        return rows.first()  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["chat-completions", "completions"])
async def test_a_stream_without_usage_ends_with_counts(
    vendor_app: tuple[Any, httpx.AsyncClient], llama_server: str, route: str
) -> None:
    app, client = vendor_app
    model_type = "CHAT_COMPLETION" if route == "chat-completions" else "COMPLETION"
    deployment = await deploy(client, vendor="LLMENGINE", model_type=model_type, base_url=llama_server,
                              model="smollm2")  # fmt: skip
    body: dict[str, Any] = {"prompt": MESSAGES[1]["content"], "temperature": 0, "max_tokens": 20}
    if route == "chat-completions":
        body["chat_history"] = MESSAGES[:1]
    plain = (await client.post(f"/v4/models/{deployment}/{route}", json=body)).json()
    assert not (await last_usage(app, deployment)).estimated  # the non-streamed answer has real counts

    streamed = await client.post(f"/v4/models/{deployment}/{route}", json={**body, "stream": True})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    final = events[-1]
    assert isinstance(final["prompt_tokens"], int) and final["prompt_tokens"] > 0
    # One delta a token on llama.cpp's server: the answer's count is the real one.
    assert final["response_tokens"] == plain["response_tokens"]
    record = await last_usage(app, deployment)
    assert record.estimated
    assert (record.prompt_tokens, record.response_tokens) == (final["prompt_tokens"], final["response_tokens"])
