"""A key's budget windows count from its creation, or from the last change of its
`budget_duration` (README, "Limits, budgets and spend"): through the real application on
SQLite and PostgreSQL, with the limits' test clock moved past window ends."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from tests.api.test_limits import (  # noqa: F401  (clock and limited are fixtures)
    FakeClock,
    _chat,
    _deployment,
    _key,
    _settled,
    clock,
    limited,
)

BUDGET = 0.05  # three requests' worth: admitted at spend 0, 0.02 and 0.04
HOUR = 3600


async def _spend_all(app: FastAPI, client: httpx.AsyncClient, deployment: str, key: str) -> int:
    """Requests served until the budget refuses one; the number served."""
    served = 0
    while (answer := await _chat(client, deployment, key)).status_code == 200:
        served += 1
        await _settled(app)
        assert served < 10, "the budget never refused"
    assert answer.status_code == 429 and "max_budget" in answer.json()["detail"]
    return served


async def test_a_new_budget_duration_starts_a_window_at_the_change(
    limited: tuple[FastAPI, httpx.AsyncClient],  # noqa: F811
    clock: FakeClock,  # noqa: F811
) -> None:
    app, client = limited
    deployment = await _deployment(client)
    key_id, key = await _key(client, max_budget=BUDGET, budget_duration="1h")
    created_by = time.time()
    clock.now = created_by
    assert await _spend_all(app, client, deployment, key) == 3

    # Windows counted from the creation and from the change must end at times the test
    # can tell apart: let the wall clock (which stamps the change) move on a little.
    await asyncio.sleep(max(0.0, created_by + 3 - time.time()))
    changed_from = time.time()
    changed = await client.patch(f"/v4/api-keys/{key_id}", json={"budget_duration": "2h"})
    assert changed.status_code == 200 and changed.json()["budget_duration"] == "2h"
    changed_by = time.time()

    # Half an hour after the creation: inside the first 1 h window and inside a 2 h window
    # counted from the creation, both spent; the change started a window of its own.
    clock.now = created_by + HOUR / 2
    assert await _spend_all(app, client, deployment, key) == 3

    # Writing the same duration again (with another limit) is no change: no new window.
    same = await client.patch(f"/v4/api-keys/{key_id}", json={"budget_duration": "2h", "rpm_limit": 100})
    assert same.status_code == 200
    assert (await _chat(client, deployment, key)).status_code == 429

    # A second before two hours from the change: still its window, while a window counted
    # from the creation would have ended two seconds and more ago.
    clock.now = changed_from + 2 * HOUR - 1
    assert (await _chat(client, deployment, key)).status_code == 429
    # Two hours after the change: the next window, the budget whole again.
    clock.now = changed_by + 2 * HOUR + 1
    assert await _spend_all(app, client, deployment, key) == 3
