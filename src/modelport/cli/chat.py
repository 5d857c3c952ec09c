"""`modelport chat`: a conversation with a deployment of a running server, over HTTP
like any client, with the answer streamed to the terminal by Rich as it arrives."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console

from modelport.catalogue.bootstrap import DEFAULT_MODEL_NAME
from modelport.config import Settings

EMBEDDED_DEPLOYMENT = f"{DEFAULT_MODEL_NAME}-embedded"
HELP = "/reset starts over, /exit (or Ctrl-D) ends."


def server_url() -> str:
    """Where `modelport serve` listens, from the same settings it reads."""
    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


class ChatSession:
    def __init__(self, base_url: str, api_key: str, *, parameters: dict[str, Any], system: str | None) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"x-api-key": api_key}, timeout=httpx.Timeout(300, connect=5)
        )
        self.parameters = parameters
        self.system = system
        self.history: list[dict[str, str]] = []
        self.console = Console(highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.http.close()

    def deployment_id(self, reference: str | None) -> tuple[str, str]:
        """(id, name) of the deployment named or identified by `reference`, by default
        the embedded chat model's (else the only READY one)."""
        try:
            response = self.http.get("/v4/model-deployments", params={"limit": 1000})
        except httpx.TransportError as exc:
            raise RuntimeError(f"cannot reach modelport at {self.http.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise RuntimeError(f"listing deployments failed ({response.status_code}): {_detail(response)}")
        items = response.json().get("items", [])
        if reference is not None:
            found = [item for item in items if reference in (item["id"], item["name"])]
            found = found or [item for item in items if item["id"].startswith(reference)]
            found = found or self._deployments_of_model(reference, items)
        else:
            found = [item for item in items if item["name"] == EMBEDDED_DEPLOYMENT]
            found = found or [item for item in items if item["status"] == "READY"]
        if len(found) != 1:
            what = f"deployment {reference!r}" if reference else "a default deployment"
            raise RuntimeError(
                f"cannot pick {what}: {len(found)} match; name one (`modelport deployments list` shows them)"
            )
        return str(found[0]["id"]), str(found[0]["name"])

    def _deployments_of_model(self, name: str, deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The READY deployments of the model named `name` (the first, if several are)."""
        response = self.http.get("/v4/models", params={"limit": 1000})
        if response.status_code != 200:
            return []
        models = {item["id"] for item in response.json().get("items", []) if item.get("name") == name}
        ready = [item for item in deployments if item["model_instance_id"] in models and item["status"] == "READY"]
        return ready[:1]

    def run(self, reference: str | None) -> None:
        deployment, name = self.deployment_id(reference)
        self.console.print(f"[bold]{name}[/bold] [dim]({deployment}); {HELP}[/dim]")
        while True:
            try:
                prompt = self.console.input("[bold green]you>[/bold green] ")
            except EOFError:
                self.console.print()
                return
            if prompt.strip() in ("/exit", "/quit"):
                return
            if prompt.strip() == "/reset":
                self.history.clear()
                self.console.print("[dim](conversation cleared)[/dim]")
                continue
            if not prompt.strip():
                continue
            answer = self.ask(deployment, prompt)
            if answer is not None:
                self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    def ask(self, deployment: str, prompt: str) -> str | None:
        """Stream one answer to the terminal; its text, or None when it failed."""
        history = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        body = {"chat_history": history, "prompt": prompt, "stream": True, **self.parameters}
        parts: list[str] = []
        final: dict[str, Any] = {}
        self.console.print("[bold blue]model>[/bold blue] ", end="")
        with self.http.stream("POST", f"/v4/models/{deployment}/chat-completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                self.console.print(f"[red]error {response.status_code}: {_detail(response)}[/red]")
                return None
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    payload = json.loads(line.removeprefix("data: "))
                    if event == "error":
                        self.console.print(f"\n[red]error: {payload.get('detail')}[/red]")
                        return None
                    text = payload["completions"][0][1][0]
                    parts.append(text)
                    self.console.print(text, end="", markup=False)
                    final = payload
        overhead = response.headers.get("x-modelport-overhead-ms")
        self.console.print(
            f"\n[dim]{final.get('prompt_tokens') or 0} prompt + {final.get('response_tokens') or 0} completion tokens"
            f", finish: {final.get('finish_reason')}{f', gateway overhead {overhead} ms' if overhead else ''}[/dim]"
        )
        return "".join(parts)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:200]
