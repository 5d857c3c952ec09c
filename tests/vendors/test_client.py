"""The adapters' client (`vendors/client.py`): the same requests on the wire as
httpx.AsyncClient built (headers, URL, query, body, timeouts), whether aiohttp's transport
sends them or an httpx transport is handed them; answers with their request attached, no
cookie carried from one call to the next, and a bounded cache of parsed URLs."""

from __future__ import annotations

import httpx
import pytest

from modelport.vendors import wire
from modelport.vendors.client import UpstreamClient
from modelport.vendors.wire import Timeouts

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
TIMEOUTS = Timeouts(connect=5.0, read=30.0)


@pytest.mark.parametrize(
    "call",
    [
        {"content": b'{"a": 1}', "headers": {"content-type": "application/json", "authorization": "Bearer k"}},
        {"content": b"{}", "headers": {"accept-encoding": "identity"}, "params": {"key": "v", "alt": "sse"}},
        {"data": {"grant_type": "x", "assertion": "y"}, "headers": {"accept": "application/json"}},
        # Defaults replaced in another spelling, where they stand; a name given twice.
        {"content": b"{}", "headers": {"Accept": "text/event-stream", "User-Agent": "sdk/1", "x-a": "1", "X-A": "2"}},
        {"content": b"", "headers": {"x-goog-api-key": "k"}},  # an empty body: Content-Length 0, first
        {},  # no body at all
        {"content": b"abc", "headers": {"Host": "other.test", "Content-Length": "3"}},
        {"content": b"abc", "headers": {"transfer-encoding": "chunked"}},
    ],
)
@pytest.mark.parametrize("method", ["POST", "get", "DELETE"])
async def test_a_request_is_what_httpx_asyncclient_builds(call: dict[str, object], method: str) -> None:
    url = "https://upstream.test:8443/v1/models/m%3Apredict"
    received: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    client = UpstreamClient(httpx.MockTransport(upstream), TIMEOUTS)
    ours = client.build_request(method, url, **call)  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=TIMEOUT) as reference:
        theirs = reference.build_request(method, url, **call)  # type: ignore[arg-type]
    # What aiohttp's transport sends: the URL as encoded, names in lower case, the body.
    assert (ours.method, ours.url.text, str(ours.url.wire)) == (theirs.method, str(theirs.url), str(theirs.url))
    assert [(name.lower(), value) for name, value in ours.headers] == theirs.headers.multi_items()
    assert ours.body == theirs.content
    # What an httpx transport is handed: the request httpx.AsyncClient built.
    await (await client.send(ours)).aclose()
    (seen,) = received
    assert (seen.method, str(seen.url), seen.url.raw_path) == (theirs.method, str(theirs.url), theirs.url.raw_path)
    assert seen.headers.multi_items() == theirs.headers.multi_items()
    assert seen.content == theirs.content
    assert seen.extensions["timeout"] == theirs.extensions["timeout"]


async def test_an_answer_carries_its_request_and_no_cookie_is_sent_again() -> None:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "tenant=a; Path=/"}, content=b"ok")

    client = UpstreamClient(httpx.MockTransport(upstream), TIMEOUTS)
    for _ in range(2):
        request = client.build_request("POST", "http://upstream.test/v1/chat", content=b"{}")
        response = await client.send(request)
        assert response.request is request and [piece async for piece in response.body] == [b"ok"]
        await response.aclose()
    assert all("cookie" not in request.headers for request in seen)


def test_a_header_set_again_keeps_its_place_as_httpx_does() -> None:
    client = UpstreamClient(httpx.MockTransport(lambda request: httpx.Response(200)), TIMEOUTS)
    given = {"Accept-Encoding": "br", "x-a": "1", "X-A": "2"}
    ours = client.build_request("POST", "http://upstream.test/", content=b"{}", headers=given)
    theirs = httpx.Request("POST", "http://upstream.test/", content=b"{}", headers=httpx.Headers(ours.headers))
    for name, value in [("accept-encoding", "gzip"), ("x-a", "3"), ("X-New", "4")]:
        ours.set_header(name, value)
        theirs.headers[name] = value
    assert [(name.lower(), value) for name, value in ours.headers] == theirs.headers.multi_items()
    assert ours.merged_headers() == dict(theirs.headers.items())


def test_the_parsed_urls_kept_are_bounded() -> None:
    client = UpstreamClient(httpx.MockTransport(lambda request: httpx.Response(200)), TIMEOUTS)
    for index in range(1500):
        client.build_request("POST", f"http://upstream-{index}.test/v1")
    assert wire.address.cache_info().currsize <= 1024
