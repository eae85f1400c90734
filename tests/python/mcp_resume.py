"""The official MCP Python SDK's client, with a token that expires while a
slow tool call streams its answer: it uses that token until its `exp`, then
a fresh one (as a client with a token cache does). Usage:
mcp_resume.py URL SHORT_TOKEN FRESH_TOKEN N (how far the tool counts). Prints one JSON line: the tool's
answer, the progress it saw, and each request it sent (method, which token,
Last-Event-ID)."""

import asyncio
import base64
import json
import sys
import time

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client


def exp_of(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["exp"]


class CachedToken(httpx2.Auth):
    """The short token until it expires, then the fresh one."""

    def __init__(self, short, fresh, sent):
        self.short, self.fresh, self.sent = short, fresh, sent
        self.expires = exp_of(short)

    def auth_flow(self, request):
        use_short = time.time() < self.expires
        token = self.short if use_short else self.fresh
        request.headers["Authorization"] = f"Bearer {token}"
        self.sent.append(
            {
                "method": request.method,
                "token": "short" if use_short else "fresh",
                "last_event_id": request.headers.get("last-event-id"),
            }
        )
        yield request


async def main():
    url, short, fresh, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sent, progress = [], []

    async def on_progress(done, total, message):
        progress.append(done)

    async with httpx2.AsyncClient(auth=CachedToken(short, fresh, sent), timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode="legacy") as client:
            result = await client.call_tool(
                "slow_count", {"n": n}, progress_callback=on_progress
            )
    text = " ".join(getattr(c, "text", "") for c in result.content)
    print(json.dumps({"text": text, "progress": progress, "sent": sent}), flush=True)


asyncio.run(main())
