"""The `websockets` client (the library most Python WebSocket code uses)
through the gateway: sends a message every 100 ms and reads its echo until
the connection closes. Usage: ws_client.py URL TOKEN. Prints one JSON line:
how many echoes came back, and the close code, reason and time (Unix
seconds) the client saw."""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main():
    url, token = sys.argv[1], sys.argv[2]
    echoes = 0
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        try:
            while True:
                await ws.send("ping")
                assert await ws.recv() == "ping"
                echoes += 1
                await asyncio.sleep(0.1)
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            print(
                json.dumps(
                    {
                        "echoes": echoes,
                        "code": rcvd.code if rcvd else None,
                        "reason": rcvd.reason if rcvd else None,
                        "at": time.time(),
                        "raised": type(closed).__name__,
                    }
                ),
                flush=True,
            )


asyncio.run(main())
