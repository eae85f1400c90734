"""A real MCP server (the official SDK's MCPServer, streamable HTTP) for the
tests to put behind the gateway. Listens on a free loopback port and prints
the line uvicorn prints, with the port, to stderr.

Usage: mcp_server.py PORT [--resumable]. Resumable: it keeps every event in
memory (the SDK's EventStore), so that a client whose stream ends can
reconnect with Last-Event-ID and miss nothing, and it has a slow tool that
reports progress while it runs."""

import asyncio
import itertools
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("tickets")
resumable = "--resumable" in sys.argv


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, with ids that say where."""

    def __init__(self):
        self.events = []  # (event_id, stream_id, message)
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        found = [i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id]
        if not found:
            return None
        stream_id = self.events[found[0]][1]
        for eid, sid, message in self.events[found[0] + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream_id


if resumable:

    @server.tool()
    async def slow_count(n: int, ctx: Context) -> str:
        """Counts to n, slowly, telling how far it got."""
        for i in range(1, n + 1):
            await asyncio.sleep(0.3)
            await ctx.report_progress(i, n)
        return f"counted to {n}"


@server.tool()
def search_docs(query: str) -> str:
    """Searches the ticket docs."""
    return f"found: {query}"


@server.tool()
def delete_everything() -> str:
    """Deletes every ticket."""
    return "deleted"


@server.prompt()
def summarize(ticket: str) -> str:
    """Summarizes a ticket."""
    return f"Summarize ticket {ticket}."


# The gateway checks Origin and Host in front of it.
server.run(
    transport="streamable-http",
    host="127.0.0.1",
    port=int(sys.argv[1]),
    event_store=MemoryEventStore() if resumable else None,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)
