"""A real MCP server (the official SDK's MCPServer, streamable HTTP) for the
tests to put behind the gateway. Listens on a free loopback port and prints
the line uvicorn prints, with the port, to stderr."""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("tickets")


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
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)
