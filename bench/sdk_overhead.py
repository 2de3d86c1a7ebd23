"""What one upstream call costs through the openai adapter against bare aiohttp, same upstream.

    python bench/sdk_overhead.py [--calls 3000]

Starts nginx (as bench/run.py does) answering a fixed chat completion on 127.0.0.1, then times
sequential calls, one at a time, three ways: the gateway's openai adapter (the SDK on its aiohttp
transport, through `post` and a raw response), the SDK's own `chat.completions.create`, and a bare
aiohttp POST with orjson. The differences are what each layer costs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chat import ChatRequest
from bench.run import nginx
from providers.base import ModelConfig
from providers.openai import OpenAIConfig, OpenAIProvider

MESSAGES = [{"role": "user", "content": "Write a haiku about rain"}]


async def timed(label: str, calls: int, once) -> float:
    for _ in range(min(200, calls)):  # warm the pools
        await once()
    started = time.perf_counter()
    for _ in range(calls):
        await once()
    per_call = (time.perf_counter() - started) / calls * 1e6
    print(f"{label:34} {per_call:8.0f} µs per call", flush=True)
    return per_call


async def measure(upstream: str, calls: int) -> None:
    base = f"{upstream}/json/v1"
    provider = OpenAIProvider("bench", OpenAIConfig(api_key="bench", base_url=base))
    model = ModelConfig(provider="bench", model="gpt-4o-mini")
    request = ChatRequest(messages=MESSAGES)
    await timed("gateway openai adapter", calls, lambda: provider.complete(model, request))
    await timed(
        "SDK chat.completions.create",
        calls,
        lambda: provider.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
    )
    await provider.aclose()
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})
    async with aiohttp.ClientSession() as session:

        async def bare() -> None:
            async with session.post(
                f"{base}/chat/completions",
                data=body,
                headers={"content-type": "application/json", "authorization": "Bearer bench"},
            ) as response:
                orjson.loads(await response.read())

        await timed("bare aiohttp + orjson", calls, bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as upstream:
        asyncio.run(measure(upstream, args.calls))


if __name__ == "__main__":
    main()
