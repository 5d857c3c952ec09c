"""An httpx transport that answers from vendor fixture files and keeps what it was sent.

The fixtures say where they come from by where they lie (each folder's README.md has
the details):
* `fixtures/documented/<vendor>/`: written by hand in the shapes the vendor's API
  reference documents (no call to the vendor was made);
* `fixtures/recorded/<server>/`: real answers of a real server, recorded here by the
  script beside them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).parent / "fixtures"
DOCUMENTED = FIXTURES / "documented"
RECORDED = FIXTURES / "recorded"


@dataclass
class Recorded(httpx.AsyncBaseTransport):
    """`answers` maps the upstream model name to (status, fixture file under `fixtures/`,
    such as `documented/openai/reasoning.json`)."""

    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    sent: list[httpx.Request] = field(default_factory=list)
    # Upstream model name -> a function that builds the answer from the request (for
    # answers that depend on what was sent, such as one batch of a split input).
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)

    def last_body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.sent[-1].content)
        return body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        body = json.loads(request.content)
        # Anthropic names the model in the body, LLM Engine v1 in the query, Gemini in the
        # path (models/{model}:method).
        model = (
            body.get("model")
            or request.url.params.get("model_endpoint_name")
            or request.url.path.split("/models/")[1].split(":")[0]
        )
        if model in self.handlers:
            return httpx.Response(200, json=self.handlers[model](body))
        status, name = self.answers[model]
        content = (FIXTURES / name).read_bytes()
        media = "text/event-stream" if name.endswith(".sse") else "application/json"
        return httpx.Response(status, content=content, headers={"content-type": media})
