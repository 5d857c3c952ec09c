"""AWS Bedrock's Converse API: `POST /model/{modelId}/converse` and `/converse-stream`.

Requests are signed with AWS Signature Version 4 by botocore's own signer (never by
hand), for the `bedrock` service in the deployment's `region`. The credential is the
account's (a secret holding `aws_access_key_id`, `aws_secret_access_key` and perhaps
`aws_session_token`) or the server's (`api_key_env` naming its secret-key variable,
with the standard `AWS_ACCESS_KEY_ID` and `AWS_SESSION_TOKEN` beside it; the operator
allows the variable in MODELPORT_UPSTREAM_KEY_ENVS and ties it to the Bedrock host, and
that tie is checked against the region's host here, since the host is not a base_url).

Translation: system turns become `system` text blocks, turns `messages` of content
blocks (`text`, `image` as base64 bytes, `toolUse`, `toolResult`); OpenAI `tools`
become `toolConfig.tools[].toolSpec` with `inputSchema.json`, `tool_choice`
auto/required/{function} becomes `{auto}`/`{any}`/`{tool}` ("none", which Converse
lacks, leaves the tools out); sampling goes in `inferenceConfig`. The answer's `toolUse` blocks come back
as OpenAI tool calls (streamed: `contentBlockStart` names the call, `toolUse.input`
deltas carry its arguments). The stream is AWS's binary event-stream framing, read
within the answer bounds (vendors/bounded.py) and decoded by botocore's parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamError

from modelport.errors import InvalidRequest, MissingCredential, ModelportError, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.policy import ServerPolicy
from modelport.vendors.base import Capabilities, ChunkStream, Target
from modelport.vendors.client import UpstreamClient
from modelport.vendors.http_vendor import EventParser, HttpVendor, Outgoing
from modelport.vendors.settings import BedrockSettings
from modelport.vendors.turns import conversation
from modelport.vendors.upstream import (
    RetryPolicy,
    api_key_for,
    configured_headers,
    event_stream,
    join_url,
    json_request,
    scrub,
    send,
    upstream_model,
    without_credential,
)
from modelport.vendors.wire import Inbound, Outbound

SERVICE = "bedrock"  # the signing name of bedrock-runtime
# The server's own AWS variables beside the secret key that `api_key_env` names.
ACCESS_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
SESSION_TOKEN_ENV = "AWS_SESSION_TOKEN"
# The image formats Converse's ImageBlock takes, by media type.
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}

CAPABILITIES = Capabilities(
    vendor="BEDROCK",
    parameters=frozenset({"top_p", "stop_sequences", "tools", "tool_choice"}),
    max_temperature=1.0,  # Converse's inferenceConfig.temperature is 0 to 1
    accepts_images=True,
)

# Converse's StopReason values.
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def bedrock_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


@dataclass(frozen=True, slots=True)
class AwsCredential:
    access_key_id: str
    secret_access_key: str = ""
    session_token: str | None = None
    # Whether it is the server's (api_key_env): then it goes only where the operator ties it.
    from_server: bool = False

    def secrets(self) -> list[str | None]:
        """What is scrubbed from any vendor message (the key id identifies, but is not shown either)."""
        return [self.secret_access_key, self.session_token, self.access_key_id]


def credential_of(target: Target) -> AwsCredential:
    """The AWS credential for a target (see the module docstring); 503 when missing."""
    if target.api_key:
        try:
            stored = json.loads(target.api_key)
        except ValueError:
            stored = None
        needed = ("aws_access_key_id", "aws_secret_access_key")
        if not isinstance(stored, dict) or not all(isinstance(stored.get(key), str) and stored[key] for key in needed):
            raise MissingCredential(
                f"the BEDROCK credential in secret {target.settings.api_key_secret!r} is not a JSON object with "
                "aws_access_key_id and aws_secret_access_key (and optionally aws_session_token)"
            )
        token = stored.get("aws_session_token")
        return AwsCredential(
            stored["aws_access_key_id"], stored["aws_secret_access_key"], token if isinstance(token, str) else None
        )
    secret = api_key_for(target, "BEDROCK")
    if secret is None:
        raise MissingCredential(
            f"deployment {target.deployment_id} has no BEDROCK credential: name an account secret (api_key_secret) "
            "or a server variable (api_key_env)"
        )
    key_id = os.environ.get(ACCESS_KEY_ID_ENV)
    if not key_id:
        raise MissingCredential(
            f"the BEDROCK credential is missing: environment variable {ACCESS_KEY_ID_ENV} is not set on the "
            "modelport server"
        )
    return AwsCredential(key_id, secret, os.environ.get(SESSION_TOKEN_ENV) or None, from_server=True)


@dataclass(frozen=True, slots=True)
class _Signed(Outgoing):
    credential: AwsCredential | None = None


class BedrockVendor(HttpVendor):
    vendor = "BEDROCK"

    def __init__(self, client: UpstreamClient, policy: RetryPolicy, server: ServerPolicy) -> None:
        super().__init__(client, policy)
        self._server = server

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        region = _region(target)
        base_url = target.settings.base_url or bedrock_base_url(region)
        # The model id goes in the path escaped once (`:` of a version, `/` of an ARN);
        # the signer escapes the path once more for the canonical request, as AWS expects.
        model = quote(upstream_model(target), safe="")
        url = join_url(base_url, f"model/{model}/{'converse-stream' if stream else 'converse'}")
        return self._signed(target, url, converse_body(target, call), base_url=base_url)

    async def execute(self, target: Target, body: dict[str, Any]) -> Any:
        """A GENERIC Bedrock model (SGP's `deployments.execute`): `body` POSTed, signed, to
        the deployment's `base_url` (InvokeModel's `.../model/{id}/invoke`, say), never with
        the credential itself in a header as HttpVendor.execute would send an API key."""
        if target.settings.base_url is None:
            raise InvalidRequest(f"deployment {target.deployment_id} names no `base_url` to execute against")
        base_url = str(target.settings.base_url)
        sent = self._signed(target, base_url, body, base_url=base_url)
        answer = await self.answer_of(sent)
        for secret in _secrets(sent):
            answer = without_credential(answer, secret)
        return answer

    def _signed(self, target: Target, url: str, body: dict[str, Any], *, base_url: str) -> _Signed:
        credential = credential_of(target)
        if credential.from_server:
            # The tie of the server's variable to its host (MODELPORT_UPSTREAM_KEY_ENVS),
            # checked on the host this request goes to: the region's, when no base_url says.
            self._server.check_server_key(self.vendor, {**target.parameters, "base_url": base_url})
        request = json_request(self._client, url, body, headers=configured_headers(target))
        sign(request, credential, _region(target))
        return _Signed(request, credential.secret_access_key, credential=credential)

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        message = (payload.get("output") or {}).get("message") or {}
        blocks = message.get("content") or []
        text = "".join(block["text"] for block in blocks if isinstance(block.get("text"), str))
        uses = [block["toolUse"] for block in blocks if isinstance(block.get("toolUse"), dict)]
        tool_calls = [
            {
                "index": index,
                "id": use.get("toolUseId"),
                "type": "function",
                "function": {"name": use.get("name"), "arguments": json.dumps(use.get("input") or {})},
            }
            for index, use in enumerate(uses)
        ]
        usage = payload.get("usage") or {}
        return GenerationChunk(
            text=text,
            tool_calls=tool_calls or None,
            finish_reason=STOP_REASONS.get(str(payload.get("stopReason")), "stop"),
            prompt_tokens=_prompt_tokens(usage),
            response_tokens=usage.get("outputTokens"),
            cached_prompt_tokens=usage.get("cacheReadInputTokens"),
            cache_creation_tokens=usage.get("cacheWriteInputTokens"),
        )

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events()

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        sent = await self.build_request(target, call, stream=True)
        response = await self._send(sent)
        return self._frames(response, _Events(), secrets=_secrets(sent))

    async def _frames(self, response: Inbound, parser: EventParser, *, secrets: list[str | None]) -> ChunkStream:
        """As HttpVendor._chunks, over AWS's binary frames instead of server-sent events."""
        messages = event_stream(response, vendor=self.vendor)
        try:
            async with contextlib.aclosing(messages):
                async for raw in messages:
                    name, payload = _decode(raw)
                    for chunk in parser.parse(name, payload):
                        yield chunk
                    if parser.finished:
                        break
        except ModelportError as exc:
            # An exception event quotes the vendor, which may echo what it was sent.
            exc.detail = scrub(exc.detail, secrets)
            exc.args = (exc.detail,)
            raise
        yield parser.last()

    async def _send(self, sent: Outgoing) -> Inbound:
        return await send(self._client, sent.request, vendor=self.vendor, policy=self._policy, secrets=_secrets(sent))


def _secrets(sent: Outgoing) -> list[str | None]:
    return sent.credential.secrets() if isinstance(sent, _Signed) and sent.credential else [sent.api_key]


def _region(target: Target) -> str:
    region = target.settings.region if isinstance(target.settings, BedrockSettings) else None
    if not region:
        raise InvalidRequest(f"deployment {target.deployment_id} names no BEDROCK `region`")
    return region


def sign(request: Outbound, credential: AwsCredential, region: str) -> None:
    """Sign a request in place with botocore's SigV4 signer. Only the headers present now
    are signed (with the host); the client's defaults and what `send` changes later
    (accept-encoding, the user agent) are left out of the signature, so they may change
    without breaking it."""
    signed = AWSRequest(
        method=request.method,
        url=request.url.text,
        data=request.body,
        headers={name: value for name, value in request.merged_headers().items() if name not in _UNSIGNED},
    )
    signer = SigV4Auth(
        Credentials(credential.access_key_id, credential.secret_access_key, credential.session_token),
        SERVICE,
        region,
    )
    signer.add_auth(signed)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        if name in signed.headers:
            request.set_header(name, signed.headers[name])


# Set by the client on every request, or changed by `send` after signing.
_UNSIGNED = frozenset({"accept", "accept-encoding", "connection", "user-agent", "content-length"})


def _decode(raw: bytes) -> tuple[str, Any]:
    """One event-stream message as (event type, JSON payload); an exception message raises."""
    buffer = EventStreamBuffer()
    try:
        buffer.add_data(raw)
        message = next(iter(buffer))
    except (EventStreamError, StopIteration) as exc:
        raise UpstreamError(f"BEDROCK sent a malformed event-stream message ({type(exc).__name__})") from None
    headers = message.headers
    try:
        payload = json.loads(message.payload) if message.payload else {}
    except ValueError:
        raise UpstreamError("BEDROCK sent an event whose payload is not JSON") from None
    kind = headers.get(":message-type")
    if kind in ("exception", "error"):
        name = headers.get(":exception-type") or headers.get(":error-code") or "error"
        detail = payload.get("message") if isinstance(payload, dict) else None
        raise UpstreamError(f"BEDROCK failed mid-stream: {name}: {detail or headers.get(':error-message', '')}")
    return str(headers.get(":event-type", "")), payload


class _Events(EventParser):
    def __init__(self) -> None:
        super().__init__()
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index

    def parse(self, name: str, payload: Any) -> Iterator[GenerationChunk]:
        if not isinstance(payload, dict):
            return
        if name == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = self._tool_index[int(payload.get("contentBlockIndex", 0))] = len(self._tool_index)
                start = {"name": use.get("name"), "arguments": ""}
                yield GenerationChunk(
                    tool_calls=[{"index": index, "id": use.get("toolUseId"), "type": "function", "function": start}]
                )
        elif name == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                yield GenerationChunk(text=delta["text"])
            elif isinstance(delta.get("toolUse"), dict) and delta["toolUse"].get("input"):
                index = self._tool_index.get(int(payload.get("contentBlockIndex", 0)), 0)
                arguments = {"arguments": delta["toolUse"]["input"]}
                yield GenerationChunk(tool_calls=[{"index": index, "function": arguments}])
        elif name == "messageStop":
            self.finish = STOP_REASONS.get(str(payload.get("stopReason")), "stop")
        elif name == "metadata":
            usage = payload.get("usage") or {}
            self.prompt_tokens = _prompt_tokens(usage)
            self.response_tokens = usage.get("outputTokens")
            self.cached_prompt_tokens = usage.get("cacheReadInputTokens")
            self.cache_creation_tokens = usage.get("cacheWriteInputTokens")
            self.finished = True  # metadata is the stream's last event


def _prompt_tokens(usage: dict[str, Any]) -> int | None:
    """Every input token: `inputTokens` leaves out the cache reads and writes."""
    if usage.get("inputTokens") is None:
        return None
    cached = int(usage.get("cacheReadInputTokens") or 0) + int(usage.get("cacheWriteInputTokens") or 0)
    return int(usage["inputTokens"]) + cached


# --- the request body ------------------------------------------------------------------------


def converse_body(target: Target, call: GenerationCall) -> dict[str, Any]:
    system, turns = conversation(call)
    sampling = call.sampling
    config = {
        "maxTokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "topP": sampling.top_p,
        "stopSequences": list(sampling.stop_sequences) or None,
    }
    body: dict[str, Any] = {
        "messages": [{"role": turn.role, "content": [_block(part) for part in turn.parts]} for turn in turns],
        "inferenceConfig": {name: value for name, value in config.items() if value is not None},
    }
    if system:
        body["system"] = [{"text": system}]
    if call.tool_choice == "none":
        # Converse has no "none": the tools are left out, which says the same, unless the
        # conversation holds tool blocks (Bedrock then requires the toolConfig).
        if any("toolUse" in block or "toolResult" in block for turn in body["messages"] for block in turn["content"]):
            raise InvalidRequest(
                "Bedrock's Converse API has no tool_choice 'none' for a conversation with tool calls",
                param="tool_choice",
            )
    elif call.tools is not None:
        tool_config: dict[str, Any] = {"tools": [_tool_spec(tool) for tool in call.tools]}
        if call.tool_choice is not None:
            tool_config["toolChoice"] = _tool_choice(call.tool_choice)
        body["toolConfig"] = tool_config
    body.update(target.settings.extra_body or {})
    return body


def _tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest("Bedrock takes function tools only ({'type': 'function', 'function': {...}})")
    function = tool["function"]
    spec: dict[str, Any] = {
        "name": function.get("name"),
        "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function: give {'type': 'function', 'function': {'name': ...}}")
        return {"tool": {"name": name}}
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    raise InvalidRequest(f"tool_choice {choice!r} is not one of auto, required, none or a function")


def _block(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "tool_call":
        return {"toolUse": {"toolUseId": part["id"], "name": part["name"], "input": part["arguments"]}}
    if kind == "tool_result":
        return {"toolResult": {"toolUseId": part["id"], "content": [{"text": part["content"]}]}}
    if kind == "image_data":
        image = part["image_data"]
        return _image(str(image.get("media_type")), image["data"])
    if kind == "image_url":
        # OpenAI's shape: a data: URL carries the image itself, which Converse takes.
        found = _DATA_URL.match(str((part.get("image_url") or {}).get("url", "")))
        if found is None:
            raise InvalidRequest(
                "Bedrock's Converse API takes images as data, not URLs: send a data: URL (base64)", param="messages"
            )
        return _image(found["media"], found["data"])
    return {"text": part["text"]}


_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>[A-Za-z0-9+/=]+)$")


def _image(media_type: str, data: str) -> dict[str, Any]:
    """An ImageBlock: its format, and its bytes base64-encoded (as the JSON wire carries them)."""
    image_format = IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        raise InvalidRequest(f"Bedrock takes png, jpeg, gif or webp images, not {media_type}", param="messages")
    return {"image": {"format": image_format, "source": {"bytes": data}}}
