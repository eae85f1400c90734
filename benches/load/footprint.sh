#!/usr/bin/env bash
# Memory and streaming latency of the release binary on loopback:
#
#   bash benches/load/footprint.sh
#   TOKENS=20000 SAMPLES=200 bash benches/load/footprint.sh   # quicker
#   BIN=/tmp/portcullis-baseline bash benches/load/footprint.sh
#
# 1. Idle RSS: the gateway started with a realistic config (an OIDC issuer,
#    two routes, audit to a hash-chained file), keys loaded, no traffic.
# 2. SSE time to first event: the echo upstream streams one event at once
#    (`Accept: text/event-stream`); a client on a keep-alive connection
#    times request → first `data:` bytes, SAMPLES times directly and SAMPLES
#    times through the gateway (alternating), and the medians' difference is
#    what the gateway adds. The same through an MCP route whose rules filter
#    lists: the message (a `tools/list`) is read and decided, and the answer
#    streams through the list filter (the echo's events are not the list's
#    answer, so they pass byte for byte). And through a model route with a
#    budget: a streamed chat completion is read, decided, reserved in the
#    budget and asked for its usage, and its answer streams through the
#    meter (which reads every event, and holds an event until it is whole
#    to drop the usage chunk the client did not ask for).
# 3. Peak RSS with TOKENS (default 100,000) cached tokens: wrk sends each of
#    TOKENS distinct valid tokens (ES256, minted by the fixtures) until the
#    verified-token cache holds them all, then the process's peak RSS.
#
# The gateway runs on core 0, the fixtures and the clients on core 1 (when
# there are two cores). Needs wrk (installed if missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOKENS=${TOKENS:-100000}
SAMPLES=${SAMPLES:-500}
PORT=${PORT:-18090}

. benches/load/common.sh
start_fixtures --tokens "$TOKENS" --token-alg es256

mkdir -p "$WORK/out" # the audit trail apart from the watched config directory
config_head >"$WORK/gateway.toml"
cat >>"$WORK/gateway.toml" <<TOML
algorithms = ["RS256", "ES256"]

[token_cache]
# The cache is sharded and a shard evicts at its share of the capacity, so
# a cache sized exactly for TOKENS can start evicting a little before (it
# held 99,753 of 100,000): 5 % headroom, and the run checks all are held.
capacity = $((TOKENS + TOKENS / 20))

[[routes]]
name = "health"
prefix = "/health"
public = true

[[routes]]
name = "mcp"
path = "/mcp"
scopes = ["Models.Read"]
[routes.mcp]
resource = "http://127.0.0.1/mcp"

[[mcp_rules]]
route = "mcp"
tools = ["search_*"]
scopes = ["Models.Read"]

[[routes]]
name = "v1"
prefix = "/openai/v1/"
scopes = ["Models.Read"]
[routes.model]

[[budgets]]
name = "per-user-tpm"
key = ["oid"]
tokens_per_minute = 1000000000000

[[routes]]
name = "read"
prefix = "/"
scopes = ["Models.Read"]

[audit]
sink = "file"
file = "$WORK/out/audit.jsonl"

[logging]
level = "warn"
TOML

"${GW[@]}" "$BIN" run --config "$WORK/gateway.toml" >/dev/null 2>"$WORK/gateway.log" &
GATEWAY=$!
PIDS+=($GATEWAY)
metric() {
  curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
for _ in $(seq 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((PORT + 1))/readyz")" = 200 ] && break
  sleep 0.05
done
rss() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$GATEWAY/status"; }
sleep 1
IDLE=$(rss VmRSS)

# SSE: request → first event, direct and through the gateway, alternating.
"${LOAD[@]}" python3 - "$UPSTREAM" "127.0.0.1:$PORT" "$(cat "$WORK/token")" "$SAMPLES" >"$WORK/sse.json" <<'PY'
import http.client, json, statistics, sys, time
direct, gateway, token, samples = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
names = ("direct", "gateway", "mcp", "model")
conns = {name: http.client.HTTPConnection(*(direct if name == "direct" else gateway).split(":")) for name in names}
times = {name: [] for name in names}
message = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
chat = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
for i in range(samples * len(names) + 40):
    name = names[i % len(names)]
    conn = conns[name]
    started = time.perf_counter()
    if name == "mcp":
        conn.request("POST", "/mcp?events=1", body=message, headers={**headers, "Content-Type": "application/json"})
    elif name == "model":
        conn.request("POST", "/openai/v1/chat/completions?events=1", body=chat, headers={**headers, "Content-Type": "application/json"})
    else:
        conn.request("POST", "/openai/deployments/d/chat/completions?events=1", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    first = resp.read1()
    elapsed = time.perf_counter() - started
    assert first.startswith(b"data:"), first
    resp.read()
    if i >= 40:  # warm-up: connections, caches, the token's first verification
        times[name].append(elapsed * 1000)
out = {}
for name, ts in times.items():
    ts.sort()
    out[name] = {"p50_ms": statistics.median(ts), "p99_ms": ts[int(len(ts) * 0.99) - 1]}
print(json.dumps(out))
PY

# Fill the cache: every token once (and some twice), until it holds them all.
FILLED=0
SENT=0
for _ in $(seq 20); do
  START=$SENT TOKENS_FILE="$WORK/tokens.txt" "${LOAD[@]}" wrk -t1 -c32 -d5s -s "$WORK/tokens.lua" \
    "http://127.0.0.1:$PORT/openai/models" >"$WORK/wrk.out"
  grep -q "Non-2xx" "$WORK/wrk.out" && { cat "$WORK/wrk.out"; echo "fill: refused requests" >&2; exit 1; }
  SENT=$((SENT + $(grep -oP '\d+(?= requests in)' "$WORK/wrk.out")))
  FILLED=$(metric gateway_token_cache_entries)
  [ "${FILLED%.*}" -ge "$TOKENS" ] && break
done

python3 - "$IDLE" "$(rss VmRSS)" "$(rss VmHWM)" "$FILLED" "$TOKENS" "$WORK/sse.json" "$PINNING" <<'PY'
import json, sys
idle, rss, peak, filled, tokens = (int(float(x)) for x in sys.argv[1:6])
sse = json.load(open(sys.argv[6]))
mib = lambda kib: f"{kib / 1024:.1f} MiB"
print(f"portcullis footprint: {sys.argv[7]}")
print("| Measure | Value | Target |")
print("| --- | --- | --- |")
print(f"| Idle RSS (keys loaded, audit file open, no traffic) | {mib(idle)} | < 20 MiB |")
print(f"| RSS with {filled:,} cached tokens | {mib(rss)} | |")
print(f"| Peak RSS with {filled:,} cached tokens | {mib(peak)} | < 64 MiB |")
d, g = sse["direct"], sse["gateway"]
print(f"| SSE first event, direct (p50 / p99) | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} ms | |")
print(f"| SSE first event, through the gateway (p50 / p99) | {g['p50_ms']:.3f} / {g['p99_ms']:.3f} ms | |")
print(f"| Added by the gateway (p50) | {g['p50_ms'] - d['p50_ms']:.3f} ms | < 1 ms |")
m = sse["mcp"]
print(f"| SSE first event, through an MCP route with list filtering (p50 / p99) | {m['p50_ms']:.3f} / {m['p99_ms']:.3f} ms | |")
print(f"| Added by the gateway on the MCP route (p50) | {m['p50_ms'] - d['p50_ms']:.3f} ms | < 1 ms |")
o = sse["model"]
print(f"| SSE first event, through a model route with a budget and usage metering (p50 / p99) | {o['p50_ms']:.3f} / {o['p99_ms']:.3f} ms | |")
print(f"| Added by the gateway on the model route (p50) | {o['p50_ms'] - d['p50_ms']:.3f} ms | < 1 ms |")
if filled < tokens:
    sys.exit(f"the cache holds {filled} of {tokens} tokens: not a valid run")
PY
