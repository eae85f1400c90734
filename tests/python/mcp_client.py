"""Drives the official MCP Python SDK's client through the gateway: for each
case (a JSON list of {name, token, calls, mode}), connects (mode "auto":
the newest protocol the server speaks; "legacy": the 2025 handshake with
sessions) with the token, lists
the tools and makes each call, and prints one JSON line per case with what
the SDK returned or raised."""

import asyncio
import json
import sys

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client


async def run(url, case):
    out = {"name": case["name"]}
    headers = {"Authorization": f"Bearer {case['token']}"}
    try:
        async with httpx2.AsyncClient(headers=headers) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=case.get("mode", "auto")) as client:
                tools = await client.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                out["calls"] = {}
                for name in case["calls"]:
                    try:
                        result = await client.call_tool(name, {"query": "printer"} if name == "search_docs" else {})
                        out["calls"][name] = {
                            "is_error": bool(result.is_error),
                            "text": " ".join(getattr(c, "text", "") for c in result.content),
                        }
                    except Exception as e:  # what the SDK raises is the point
                        out["calls"][name] = {"raised": type(e).__name__, "message": str(e)}
    except BaseException as e:
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        out["connect_raised"] = type(e).__name__
        out["message"] = str(e)
    return out


async def main():
    url, cases = sys.argv[1], json.loads(sys.argv[2])
    for case in cases:
        print(json.dumps(await run(url, case)), flush=True)


asyncio.run(main())
