"""The adapters' client (`vendors/client.py`): the same requests on the wire as
httpx.AsyncClient built (headers, URL, query, body, timeouts), answers with their request
attached, no cookie carried from one call to the next, and a bounded cache of parsed URLs."""

from __future__ import annotations

import httpx
import pytest

from modelport.vendors import client as client_module
from modelport.vendors.client import UpstreamClient

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


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
    ours = UpstreamClient(httpx.MockTransport(lambda request: httpx.Response(200)), TIMEOUT).build_request(
        method,
        url,
        **call,  # type: ignore[arg-type]
    )
    async with httpx.AsyncClient(timeout=TIMEOUT) as reference:
        theirs = reference.build_request(method, url, **call)  # type: ignore[arg-type]
    assert (ours.method, str(ours.url), ours.url.raw_path) == (theirs.method, str(theirs.url), theirs.url.raw_path)
    # What reaches the wire (the transport sends `multi_items()`): names, values, order.
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.content == theirs.content  # read already, as httpx reads a body given whole
    assert ours.read() == theirs.read()
    assert ours.extensions["timeout"] == theirs.extensions["timeout"]


async def test_an_answer_carries_its_request_and_no_cookie_is_sent_again() -> None:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "tenant=a; Path=/"}, content=b"ok")

    client = UpstreamClient(httpx.MockTransport(upstream), TIMEOUT)
    for _ in range(2):
        request = client.build_request("POST", "http://upstream.test/v1/chat", content=b"{}")
        response = await client.send(request, stream=True)
        assert response.request is request and await response.aread() == b"ok"
    assert all("cookie" not in request.headers for request in seen)


async def test_a_whole_answer_is_not_read_for_the_caller() -> None:
    client = UpstreamClient(httpx.MockTransport(lambda request: httpx.Response(200)), TIMEOUT)
    with pytest.raises(ValueError, match="streamed"):
        await client.send(client.build_request("GET", "http://upstream.test/"), stream=False)


def test_the_parsed_urls_kept_are_bounded() -> None:
    client = UpstreamClient(httpx.MockTransport(lambda request: httpx.Response(200)), TIMEOUT)
    for index in range(1500):
        client.build_request("POST", f"http://upstream-{index}.test/v1")
    assert client_module._parsed.cache_info().currsize <= 1024
