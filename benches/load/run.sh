#!/usr/bin/env bash
# End-to-end load benchmark: the release binary on loopback, driven by wrk.
#
#   bash benches/load/run.sh                 # every scenario, 3 rounds of 10 s
#   ROUNDS=5 DURATION=20s bash benches/load/run.sh
#   SCENARIOS="audit-off audit-file" bash benches/load/run.sh
#   ROUNDS=9 DURATION=8s SCENARIOS="steady reload-storm reload-storm-cold" bash benches/load/run.sh
#   BIN=/tmp/portcullis-baseline bash benches/load/run.sh   # another build
#   PROFILE=/tmp/prof bash benches/load/run.sh   # perf record each round
#   PROFILE=/tmp/prof PERF_ARGS= bash benches/load/run.sh   # flat, no call graphs
#   SYSCALLS=1 bash benches/load/run.sh   # system calls per request (perf stat)
#   TOGETHER=1 SCENARIOS="audit-off audit-file" bash benches/load/run.sh
#   BIN_B=/tmp/portcullis-new TOGETHER=1 SCENARIOS="public public@b" bash benches/load/run.sh
#
# TOGETHER=1 runs a round's scenarios at the same time instead of one
# after the other: each gateway with its own port and wrk, all on the
# gateway core. Their CPU time per request is then measured under the same
# conditions, which on a machine whose speed changes from second to second
# is the steadier comparison; their requests/s are not (they share the
# core, and a process with more threads gets more of it).
#
# A gateway scenario named `<scenario>@b` runs that scenario with the build
# BIN_B instead of BIN (the fixtures stay BIN's): with TOGETHER, two builds
# compared under the same conditions. Each is reported against its
# scenario.
#
# Starts `portcullis dev --fixtures-only` (the embedded issuer serving JWKS,
# an echo upstream, a day-long user token), then for each scenario a gateway
# process from its own config, and runs wrk against it. Scenarios alternate
# round by round (A B A B ...) so that drift hits them alike; the table shows
# each scenario's median round. Where the machine has two cores or more, the
# gateway is pinned to core 0 and wrk plus the fixtures to core 1.
#
# Scenarios (all GET with a valid token, verified-token cache on):
#   audit-off    [audit] sink = "off"
#   audit-file   [audit] sink = "file" (hash-chained, default block policy)
#   audit-stdout [audit] sink = "stdout", into a file (the container case)
#
# Proxy scenarios (SCENARIOS="direct hyper public cached distinct nginx";
# audit off in all):
#   direct       wrk straight to the upstream, no proxy
#   hyper        benches/load/bare_proxy.rs: the gateway's stack (tokio, the
#                hyper-util server and pooled client) forwarding with none of
#                the gateway's work, pinned like the gateway: the floor of
#                any gateway built on that stack
#   hyper-h1     the same with hyper's HTTP/1 server alone (no protocol
#                detection)
#   hyper-conn   HTTP/1 alone, each client connection with its own upstream
#                connection (hyper's connection-level client: no pool)
#   public       the gateway on a public route: no token checked (the floor)
#   cached       the gateway validating a cached token
#   distinct     the gateway with the token cache off and 1,000 distinct
#                tokens in turn: one RS256 verification per request
#   nginx        nginx as a plain reverse proxy, one worker, keep-alive to
#                the upstream, pinned like the gateway (installed from
#                Debian's packages when missing)
#   nginx-log    the same with its access log on (buffered, the combined
#                format): what operators accept a log to cost
#   haproxy      HAProxy with `jwt_verify`, one thread, pinned like the
#                gateway, in its strongest configuration: a static RS256
#                public key (the fixtures' issuer's), `alg`, `iss`, `aud`,
#                `exp` and the scope checked, keep-alive to the upstream
#                (installed from Debian's packages when missing)
# Each of `cached`, `nginx` and `haproxy` also comes as `<name>-post` (a
# 2 KiB JSON body POSTed, the model scenarios' chat completion) and
# `cached` and `haproxy` as `<name>-badsig` (a token whose signature does
# not verify: every answer must be 401).
#
# Model scenarios (SCENARIOS="model budget-local budget-redis"; audit off,
# a 2 KB chat completion POSTed to a model route, the upstream's fixed
# 1 KiB JSON answer, which reports no usage, so each request settles at
# its reservation):
#   model         the model stage alone: strict read, model decision, meter
#   budget-local  and two budgets reserved in the local store
#   budget-redis  and the same two in Redis (a redis-server the script
#                 starts on the load core): one round trip per request
#   model-stream  the same completion asked as a stream of 50 chunks and its
#                 usage (the upstream's `?chunks=50`): read, decided, the
#                 usage read from the stream as it passes
#   stream-plain  the same streamed POST through a plain route (no stage)
#
# MCP scenarios (SCENARIOS="mcp mcp-plain"; audit off): a JSON-RPC
# `tools/call` POSTed with the MCP transport's headers, answered with the
# upstream's fixed JSON:
#   mcp           to an MCP route with a rule for the tool: the message
#                 read and decided, the session and rate stages in place
#   mcp-plain     the same POST to a plain route (the stage's floor)
#
# Reload scenarios (SCENARIOS="steady reload-storm reload-storm-cold"): a
# large config (10,000 agents, 1,000 routes, audit to a file) under a fixed
# request rate (RATE requests/s from `oha --latency-correction`, an
# open-loop client, so that latency is not the load generator's own
# queueing); `reload-storm` alternates the file between two versions and
# asks `POST /reload` back to back for the whole run, measured once
# STORM_WARMUP reloads (default 5) have been applied; `reload-storm-cold`
# measures from the storm's start instead, which includes a fresh gateway's
# first reloads (the heap growing to hold two generations). The storm's
# driver runs on the gateway's core: its CPU counts against the gateway, and
# it does not delay the load generator that measures. Compare p99.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"audit-off audit-file audit-stdout"}
PORT=${PORT:-18080}
RATE=${RATE:-2000}
STORM_WARMUP=${STORM_WARMUP:-5}
# The upstream answers every scenario with the same body of this many bytes
# (`?bytes=N`), not the echo of the request's headers: otherwise a scenario
# whose proxy adds headers would also get a larger answer to relay.
RESPONSE_BYTES=${RESPONSE_BYTES:-1024}
TOGETHER=${TOGETHER:-}
if [ -n "$TOGETHER" ]; then
  for scenario in $SCENARIOS; do
    case "${scenario%@b}" in
      direct | hyper* | nginx* | haproxy* | steady | reload-storm | reload-storm-cold) echo "TOGETHER runs gateway scenarios only, not $scenario" >&2; exit 2 ;;
    esac
  done
fi

install_missing() { # command package: Debian's package when the command is missing
  command -v "$1" >/dev/null 2>&1 && return
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
case " $SCENARIOS " in *" nginx"*) install_missing nginx nginx ;; esac
case " $SCENARIOS " in *" haproxy"*) install_missing haproxy haproxy ;; esac

case " $SCENARIOS " in
  *" steady "* | *" reload-storm "* | *" reload-storm-cold "*)
    # A fixed request rate needs an open-loop client; oha is built from
    # crates.io (about 10 minutes on two cores, once).
    command -v oha >/dev/null 2>&1 || cargo install --locked oha
    ;;
esac
. benches/load/common.sh
# Audit trails and stdout apart from the configs: the gateway watches its
# config's directory, and a file written there on every request would wake
# the watcher as often.
OUT=$WORK/out
mkdir -p "$OUT"

case " $SCENARIOS " in
  *" hyper"*)
    # BIN may be a baseline build; the example is always this checkout's.
    cargo build --release --locked --example bare_proxy
    BARE_PROXY=$PWD/target/release/examples/bare_proxy
    ;;
esac

TOKENS=0
case " $SCENARIOS " in *" distinct "* | *" distinct@b "*) TOKENS=1000 ;; esac
start_fixtures --tokens "$TOKENS"
# The fixtures' token with one character of its signature changed: still
# base64url, never valid.
BAD_TOKEN=$(python3 -c 'import sys; t = sys.argv[1]; i = len(t) - 10; print(t[:i] + ("B" if t[i] != "B" else "C") + t[i + 1:])' "$TOKEN")

REDIS_PORT=$((PORT + 50))
case " $SCENARIOS " in
  *" budget-redis"*)
    command -v redis-server >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    "${LOAD[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >"$WORK/redis.log" &
    PIDS+=($!)
    until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
    ;;
esac
# The chat completion the model scenarios post (about 2 KB).
python3 - >"$WORK/chat.lua" <<'PY'
import json
body = json.dumps({"model": "gpt-4o-mini", "max_completion_tokens": 512,
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "lorem ipsum dolor sit amet " * 68}]})
print(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}')
PY
# The same completion asked as a stream (the stream scenarios).
python3 - >"$WORK/stream.lua" <<'PY'
import json
body = json.dumps({"model": "gpt-4o-mini", "max_completion_tokens": 512, "stream": True,
    "messages": [{"role": "system", "content": "You are terse."},
                 {"role": "user", "content": "lorem ipsum dolor sit amet " * 68}]})
print('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
      'wrk.headers["Accept"] = "text/event-stream"\n'
      f'wrk.body = {json.dumps(body)}')
PY
# The MCP tool call the MCP scenarios post.
python3 - >"$WORK/mcp.lua" <<'PY'
import json
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
    "params": {"name": "search_docs", "arguments": {"query": "printer"}}})
print('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
      'wrk.headers["Accept"] = "application/json, text/event-stream"\n'
      'wrk.headers["MCP-Protocol-Version"] = "2025-11-25"\n'
      f'wrk.body = {json.dumps(body)}')
PY

config() { # scenario -> config text
  config_head
  cat <<TOML

[[routes]]
name = "read"
prefix = "/"
scopes = ["Models.Read"]

[logging]
level = "warn"
TOML
  case "${1%@b}" in
    audit-off | cached | cached-post | cached-badsig) printf '\n[audit]\nsink = "off"\n' ;;
    stream-plain) printf '\n[audit]\nsink = "off"\n' ;;
    model | model-stream | budget-local | budget-redis)
      printf '\n[audit]\nsink = "off"\n[[routes]]\nname = "v1"\nprefix = "/openai/v1/"\nscopes = ["Models.Read"]\n[routes.model]\n'
      case "${1%@b}" in model | model-stream) ;; *) printf '\n[[budgets]]\nname = "per-user-tpm"\nkey = ["tid", "oid"]\ntokens_per_minute = 1000000000000\n[[budgets]]\nname = "per-app-monthly"\nkey = ["azp", "model"]\ntokens = 1000000000000\nperiod = "month"\n' ;; esac
      [ "${1%@b}" != budget-redis ] || printf '\n[budget_store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"
      ;;
    public) printf '\n[audit]\nsink = "off"\n[[routes]]\nname = "open"\nprefix = "/open"\npublic = true\n' ;;
    mcp-plain) printf '\n[audit]\nsink = "off"\n' ;;
    mcp)
      printf '\n[audit]\nsink = "off"\n[[routes]]\nname = "mcp"\npath = "/mcp"\nmethods = ["POST", "GET", "DELETE"]\nscopes = ["Models.Read"]\n'
      printf '[routes.mcp]\nresource = "http://127.0.0.1:%s/mcp"\nscopes_supported = ["%s/Models.Read"]\n' "$PORT" "$AUDIENCE"
      printf '\n[[mcp_rules]]\nroute = "mcp"\ntools = ["search_*"]\nscopes = ["Models.Read"]\n'
      ;;
    distinct) printf '\n[audit]\nsink = "off"\n[token_cache]\nenabled = false\n' ;;
    audit-file) printf '\n[audit]\nsink = "file"\nfile = "%s/%s.audit.jsonl"\n' "$OUT" "$1" ;;
    audit-stdout) printf '\n[audit]\nsink = "stdout"\n' ;;
    steady | reload-storm | reload-storm-cold)
      printf '\n[audit]\nsink = "file"\nfile = "%s/%s.audit.jsonl"\n' "$OUT" "$1"
      large "${2:-0}"
      ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

large() { # version -> 1,000 routes and 10,000 agents; versions differ in one agent's name
  python3 - "$1" <<'PY'
import sys
v = sys.argv[1]
out = []
for r in range(1000):
    out.append(f'[[routes]]\nname = "r{r}"\npath = "/svc{r}/deployments/{{deployment}}/chat/completions"\nmethods = ["POST"]\nroles = ["Models.Invoke"]\n')
for a in range(10000):
    name = f"agent {a}" + (f" v{v}" if a == 7 else "")
    out.append(f'[[agents]]\nid = "{a:08x}-0000-4000-8000-000000000000"\nname = "{name}"\nowner = "owner-{a}"\nroutes = ["r{a % 1000}", "r0"]\nparams = {{ deployment = ["d0", "d{a}"] }}\n')
print("\n".join(out))
PY
}

storm() { # scenario -> reloads of its config back to back, alternating versions, until killed
  # One Python process: hard links swapped in by rename (no copying) and one
  # keep-alive connection for POST /reload, so that the driver itself takes
  # next to no CPU.
  config "$1" 0 >"$WORK/version0.toml"
  config "$1" 1 >"$WORK/version1.toml"
  set -- "$WORK/$1.toml"
  exec nice -n 19 python3 - "$1" "$WORK" "$((PORT + 1))" 2>"$WORK/storm.log" <<'PY'
import http.client, os, sys
path, work, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = http.client.HTTPConnection("127.0.0.1", port)
n = 0
while True:
    n += 1
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    os.link(f"{work}/version{n % 2}.toml", tmp)
    os.replace(tmp, path)
    admin.request("POST", "/reload")
    admin.getresponse().read()
PY
}

nginx_config() { # scenario -> a plain reverse proxy to the same upstream
  local log="access_log off;"
  [ "$1" != nginx-log ] || log="access_log $OUT/nginx.access.log combined buffer=64k flush=1s;"
  cat <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.log warn;
events { worker_connections 1024; }
http {
  $log
  upstream echo { server $UPSTREAM; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
}

haproxy_config() { # HAProxy verifying the token itself, then proxying
  cat <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.now) date
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$WORK/issuer.pem") -m int 1 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str "$ISSUER" }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str "$AUDIENCE" }
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny deny_status 403 unless { var(txn.bearer),jwt_payload_query('\$.scp') -m sub Models.Read }
  default_backend upstream
backend upstream
  server echo $UPSTREAM
HAPROXY
}

issuer_pem() { # the fixtures' issuer's public key, as the PEM HAProxy reads
  python3 - "$ISSUER" >"$WORK/issuer.pem" <<'PY'
import base64, json, sys, urllib.request
issuer = sys.argv[1]
meta = json.load(urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration"))
key = next(k for k in json.load(urllib.request.urlopen(meta["jwks_uri"]))["keys"] if k["kty"] == "RSA")
b64 = lambda s: int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")
def der(tag, body):
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | len(n.to_bytes((n.bit_length() + 7) // 8, "big"))]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body
def integer(v):
    b = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return der(0x02, b)
rsa = der(0x30, integer(b64(key["n"])) + integer(b64(key["e"])))
algorithm = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + der(0x05, b""))
spki = der(0x30, algorithm + der(0x03, b"\0" + rsa))
text = base64.encodebytes(spki).decode().replace("\n", "")
print("-----BEGIN PUBLIC KEY-----")
print("\n".join(text[i:i + 64] for i in range(0, len(text), 64)))
print("-----END PUBLIC KEY-----")
PY
  openssl pkey -pubin -in "$WORK/issuer.pem" -noout
}

reloads() { # config reloads applied so far (0 before the gateway answers)
  { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" 2>/dev/null || true; } |
    awk '/^gateway_config_reloads_total\{result="applied"\}/ {print $2; found=1} END {if (!found) print 0}'
}

to_wrk() { # oha's JSON summary -> the lines of wrk's that the parser reads
  python3 -c '
import json, sys
d = json.load(sys.stdin)
ms = lambda p: d["latencyPercentiles"][p] * 1000
codes = d["statusCodeDistribution"]
total = sum(codes.values())
ok = sum(n for c, n in codes.items() if c.startswith("2"))
print("     50%%    %.3fms\n     99%%    %.3fms" % (ms("p50"), ms("p99")))
print(f"  {total} requests in")
print("Requests/sec: %.1f" % d["summary"]["requestsPerSec"])
if total > ok:
    print(f"Non-2xx or 3xx responses: {total - ok}")
# The requests still in flight when the run ends are not errors.
errors = {e: n for e, n in d["errorDistribution"].items() if e != "aborted due to deadline"}
if errors:
    print("Socket errors: " + json.dumps(errors))
'
}

answering() { # url: wait (up to 5 s) until a proxy answers it
  for _ in $(seq 100); do curl -s -o /dev/null "$1" && return; sleep 0.05; done
}

ready() {
  python3 - "$((PORT + 1))" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.05)
sys.exit(1)
PY
}

# Per scenario in the round being run: its process, its listener port,
# what wrk targets, the reloads before the load, nginx's and the storm's
# processes.
declare -A PID PORTS TARGET RELOADS0 NGINX_PID STORMER

start_scenario() { # scenario port
  local scenario=$1
  local PORT=$2
  PORTS[$scenario]=$PORT
  # The storm leaves the config as a hard link to one of its versions.
  rm -f "$OUT/$scenario".audit.jsonl* "$OUT/$scenario.stdout.jsonl" "$WORK/$scenario.toml"
  local answer="?bytes=$RESPONSE_BYTES"
  TARGET[$scenario]="http://127.0.0.1:$PORT/openai/models$answer"
  case "$scenario" in
    direct)
      # The upstream itself (its process, on the load generator's core).
      TARGET[$scenario]="http://$UPSTREAM/openai/models$answer"
      PID[$scenario]=$(pgrep -f -- "--fixtures-only" | head -1)
      ;;
    hyper | hyper-h1 | hyper-conn)
      local mode=auto-pool
      [ "$scenario" != hyper-h1 ] || mode=h1-pool
      [ "$scenario" != hyper-conn ] || mode=h1-conn
      BARE_MODE=$mode "${GW[@]}" "$BARE_PROXY" "127.0.0.1:$PORT" "$UPSTREAM" &
      PID[$scenario]=$!
      PIDS+=($!)
      answering "${TARGET[$scenario]}"
      ;;
    nginx | nginx-post | nginx-log)
      nginx_config "$scenario" >"$WORK/nginx.conf"
      "${GW[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" &
      NGINX_PID[$scenario]=$!
      PIDS+=($!)
      answering "${TARGET[$scenario]}"
      PID[$scenario]=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
      ;;
    haproxy | haproxy-post | haproxy-badsig)
      [ -s "$WORK/issuer.pem" ] || issuer_pem
      haproxy_config >"$WORK/haproxy.cfg"
      "${GW[@]}" haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
      PID[$scenario]=$!
      PIDS+=($!)
      until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.05; done
      ;;
    *)
      config "$scenario" >"$WORK/$scenario.toml"
      local bin=$BIN
      [ "${scenario%@b}" = "$scenario" ] || bin=${BIN_B:?"BIN_B names the build of the @b scenarios"}
      "${GW[@]}" "$bin" run --config "$WORK/$scenario.toml" >"$OUT/$scenario.stdout.jsonl" 2>"$WORK/$scenario.log" &
      PID[$scenario]=$!
      PIDS+=($!)
      ready || { echo "gateway did not become ready:"; cat "$WORK/$scenario.log"; exit 1; }
      ;;
  esac
  [ "${scenario%@b}" != public ] || TARGET[$scenario]="http://127.0.0.1:$PORT/open/models$answer"
  case "${scenario%@b}" in
    model | budget-local | budget-redis) TARGET[$scenario]="http://127.0.0.1:$PORT/openai/v1/chat/completions$answer" ;;
    mcp | mcp-plain) TARGET[$scenario]="http://127.0.0.1:$PORT/mcp$answer" ;;
    model-stream | stream-plain) TARGET[$scenario]="http://127.0.0.1:$PORT/openai/v1/chat/completions?chunks=50" ;;
  esac
  RELOADS0[$scenario]=$(reloads)
  STORMER[$scenario]=""
  case "${scenario%@b}" in
    reload-storm | reload-storm-cold)
      storm "$scenario" &
      STORMER[$scenario]=$!
      [ ${#GW[@]} -eq 0 ] || taskset -pc 0 "$!" >/dev/null
      ;;
  esac
  if [ "${scenario%@b}" = reload-storm ]; then
    # Measured from the storm under way: the first reloads, which grow the
    # heap to hold two generations, are reload-storm-cold's.
    local waited=0
    until [ $(($(reloads) - RELOADS0[$scenario])) -ge "$STORM_WARMUP" ]; do
      waited=$((waited + 1))
      [ "$waited" -le 1200 ] || { echo "the storm applied no $STORM_WARMUP reloads in 60 s:" >&2; cat "$WORK/storm.log" "$WORK/$scenario.log" >&2; exit 1; }
      sleep 0.05
    done
    RELOADS0[$scenario]=$(reloads)
  fi
}

drive() { # scenario round: the load, then the gateway's figures for the round
  local scenario=$1 round=$2 script=() perf="" token=$TOKEN
  local pid=${PID[$scenario]}
  [ "${scenario%@b}" != distinct ] || script=(-s "$WORK/tokens.lua")
  case "${scenario%@b}" in model | budget-local | budget-redis | *-post) script=(-s "$WORK/chat.lua") ;; esac
  case "${scenario%@b}" in mcp | mcp-plain) script=(-s "$WORK/mcp.lua") ;; esac
  case "${scenario%@b}" in model-stream | stream-plain) script=(-s "$WORK/stream.lua") ;; esac
  case "${scenario%@b}" in *-badsig) token=$BAD_TOKEN ;; esac
  if [ -n "${PROFILE:-}" ]; then
    # Call graphs of the process under test, from its own core's samples.
    mkdir -p "$PROFILE"
    perf record -q -F 999 ${PERF_ARGS---call-graph dwarf,16384} -p "$pid" -o "$PROFILE/$scenario.$round.data" 2>/dev/null &
    perf=$!
  fi
  local counting=""
  if [ -n "${SYSCALLS:-}" ]; then
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$WORK/$scenario.$round.sys" 2>/dev/null &
    counting=$!
  fi
  local cpu0 cpu1
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  case "${scenario%@b}" in
    steady | reload-storm | reload-storm-cold)
      "${LOAD[@]}" oha -z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction --no-tui --output-format json \
        -H "Authorization: Bearer $TOKEN" "${TARGET[$scenario]}" | to_wrk >"$WORK/$scenario.$round.wrk"
      ;;
    *)
      TOKENS_FILE="$WORK/tokens.txt" "${LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" \
        -H "Authorization: Bearer $token" "${TARGET[$scenario]}" >"$WORK/$scenario.$round.wrk"
      ;;
  esac
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  [ -z "$perf" ] || { kill -INT "$perf"; wait "$perf" || true; }
  [ -z "$counting" ] || { kill -INT "$counting"; wait "$counting" || true; }
  echo "$((cpu1 - cpu0))" >"$WORK/$scenario.$round.cpu"
}

finish_scenario() { # scenario round
  local scenario=$1 round=$2
  local PORT=${PORTS[$scenario]}
  local pid=${PID[$scenario]} stormer=${STORMER[$scenario]}
  local reloaded=$(($(reloads) - RELOADS0[$scenario]))
  [ -z "$stormer" ] || { kill "$stormer"; wait "$stormer" 2>/dev/null || true; cat "$WORK/storm.log" >&2; }
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  case "$scenario" in
    direct) ;;
    nginx | nginx-post | nginx-log)
      kill -QUIT "$(cat "$WORK/nginx.pid")"
      wait "${NGINX_PID[$scenario]}" || true
      ;;
    *)
      kill -TERM "$pid"
      wait "$pid" || true
      ;;
  esac
  local records=0
  if compgen -G "$OUT/$scenario.audit.jsonl*" >/dev/null; then records=$(cat "$OUT/$scenario".audit.jsonl* | wc -l); fi
  [ "${scenario%@b}" = audit-stdout ] && records=$(wc -l <"$OUT/$scenario.stdout.jsonl")
  python3 - "$WORK/$scenario.$round.wrk" "$rss" "$records" "$(cat "$WORK/$scenario.$round.cpu")" "$(getconf CLK_TCK)" "$reloaded" "$WORK/$scenario.$round.sys" >"$WORK/$scenario.$round.json" <<'PY'
import json, os, re, sys
text = open(sys.argv[1]).read()
def latency(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
total = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(json.dumps({
    "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
    "p50_ms": latency(50), "p99_ms": latency(99),
    "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
    "socket_errors": errors.group(1) if errors else "",
    "peak_rss_kib": int(sys.argv[2]), "audit_records": int(sys.argv[3]),
    # The gateway's CPU time (user + system) per request: steadier than
    # requests/s on a machine whose speed drifts.
    "cpu_us_per_request": round(int(sys.argv[4]) / int(sys.argv[5]) * 1e6 / total, 1),
    "reloads": int(sys.argv[6]),
    **({"syscalls_per_request": round(int(re.search(r"^(\d+),", open(sys.argv[7]).read(), re.M).group(1)) / total, 2)}
       if os.path.exists(sys.argv[7]) else {}),
}))
PY
  echo "  round $round $scenario: $(cat "$WORK/$scenario.$round.json")"
}

echo "portcullis load benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $PINNING"
echo "wrk -t1 -c$CONNECTIONS -d$DURATION (reload scenarios: oha -c$CONNECTIONS -q$RATE), $ROUNDS rounds per scenario, alternating"
for round in $(seq "$ROUNDS"); do
  if [ -n "$TOGETHER" ]; then
    # Every scenario at once, each with its own port pair and wrk, sharing
    # the gateway core: the machine's speed changes hit them alike.
    i=0
    for scenario in $SCENARIOS; do start_scenario "$scenario" $((PORT + 2 * i)); i=$((i + 1)); done
    drivers=()
    for scenario in $SCENARIOS; do
      drive "$scenario" "$round" &
      drivers+=($!)
    done
    wait "${drivers[@]}"
    for scenario in $SCENARIOS; do finish_scenario "$scenario" "$round"; done
  else
    for scenario in $SCENARIOS; do
      start_scenario "$scenario" "$PORT"
      drive "$scenario" "$round"
      finish_scenario "$scenario" "$round"
    done
  fi
done

VERIFY_BOUND=""
case " $SCENARIOS " in
  *" distinct "*)
    # The bound for cache misses: one RS256 (2048-bit) verification per
    # request on the gateway's core, as OpenSSL measures it.
    VERIFY_BOUND=$("${GW[@]}" openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $NF}')
    ;;
esac

VERIFY_BOUND=$VERIFY_BOUND RATE=$RATE CONNECTIONS=$CONNECTIONS python3 - "$WORK" "$ROUNDS" $SCENARIOS <<'PY'
import json, os, statistics, sys
work, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for s in scenarios:
    runs = [json.load(open(f"{work}/{s}.{r}.json")) for r in range(1, rounds + 1)]
    for r in runs:
        # A refusal scenario is valid when every answer is a refusal.
        refused = r["requests"] if s.removesuffix("@b").endswith("-badsig") else 0
        if r["non_2xx"] != refused or r["socket_errors"]:
            sys.exit(f"{s}: {r['non_2xx']} non-2xx responses, socket errors {r['socket_errors']!r}: not a valid run")
        base = s.removesuffix("@b")
        if base.startswith("audit-") and base != "audit-off" and r["audit_records"] < r["requests"]:
            sys.exit(f"{s}: {r['audit_records']} audit records for {r['requests']} requests")
    # Each figure is its own median over the rounds (a round that is slow
    # in one figure need not be in another).
    med = lambda k: statistics.median(r[k] for r in runs)
    rows[s] = {k: med(k) for k in ("rps", "p50_ms", "p99_ms", "peak_rss_kib")} | {
        "runs": runs,
        "rps_all": [round(r["rps"]) for r in runs],
        "p99_all": [round(r["p99_ms"], 2) for r in runs],
        "cpu_med": med("cpu_us_per_request"),
    }
print()
print(f"Medians of {rounds} rounds:")
print("| Scenario | Requests/s | All rounds | p50 | p99 | p99, all rounds | Gateway CPU/request | Peak RSS |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for s, r in rows.items():
    print(f"| {s} | {r['rps']:.0f} | {r['rps_all']} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['p99_all']} | {r['cpu_med']:.1f} µs | {r['peak_rss_kib'] / 1024:.1f} MiB |")
def paired(a, b, key):
    """The median over rounds of a's figure over b's in the same round.

    The scenarios of one round run back to back, so this ratio is robust
    to the machine's speed drifting between rounds, which moves a ratio of
    medians by several percent here."""
    return statistics.median(x[key] / y[key] for x, y in zip(rows[a]["runs"], rows[b]["runs"]))
def ratio(a, b, target, what):
    if a in rows and b in rows:
        r = rows[a]["rps"] / rows[b]["rps"]
        pr = paired(a, b, "rps")
        pc = paired(a, b, "cpu_us_per_request")
        print(f"{a} / {b}: throughput {r:.3f} (medians), {pr:.3f} (paired by round); "
              f"CPU per request {pc:.3f} (paired); target: {what} {target}")
ratio("audit-file", "audit-off", ">= 0.95", "auditing costs at most 5%:")
ratio("audit-stdout", "audit-off", ">= 0.95", "auditing costs at most 5%:")
ratio("cached", "public", ">= 0.95", "validation keeps of the no-auth floor")
ratio("cached", "nginx", ">= 0.8", "validation against nginx as a plain proxy")
ratio("cached-post", "nginx-post", ">= 0.8", "validation against nginx as a plain proxy, POST 2 KiB")
ratio("cached", "haproxy", ">= 2.5", "against HAProxy jwt_verify")
ratio("cached-post", "haproxy-post", ">= 2.0", "against HAProxy jwt_verify, POST 2 KiB")
ratio("cached-badsig", "haproxy-badsig", ">= 1.1", "saying no to a bad signature, against HAProxy")
if all(s in rows for s in ("cached", "nginx")):
    p99 = rows["cached"]["p99_ms"] / rows["nginx"]["p99_ms"]
    print(f"cached / nginx p99 at {os.environ.get('CONNECTIONS', '32')} connections: {p99:.2f}x (medians), "
          f"{paired('cached', 'nginx', 'p99_ms'):.2f}x (paired); target: <= 1.5x at 64 connections")
if all(s in rows for s in ("audit-file", "audit-off", "nginx-log", "nginx")):
    ours = paired("audit-file", "audit-off", "cpu_us_per_request")
    theirs = paired("nginx-log", "nginx", "cpu_us_per_request")
    print(f"audit-file / audit-off CPU per request {ours:.3f} against nginx-log / nginx {theirs:.3f} (paired); "
          f"target: the audit trail costs no more than nginx's access log")
ratio("public", "direct", "(information)", "the proxy hop")
ratio("mcp", "mcp-plain", "(information)", "the MCP stage on a tools/call")
ratio("model-stream", "stream-plain", "(information)", "the model stage on a streamed completion, usage metered")
ratio("hyper", "nginx", "(information)", "the stack's floor against nginx")
ratio("public", "hyper", "(information)", "the gateway's own work on a public route")
for s in rows:
    if s.endswith("@b"):
        ratio(s, s.removesuffix("@b"), "(information)", "build B against BIN")
if "distinct" in rows and os.environ.get("VERIFY_BOUND"):
    bound = float(os.environ["VERIFY_BOUND"])
    r = rows["distinct"]["rps"] / bound
    print(f"distinct / one RS256 verification per request ({bound:.0f}/s on one core, openssl speed): {r:.3f}; target: >= 0.80")
for storm in ("reload-storm", "reload-storm-cold"):
    if "steady" in rows and storm in rows:
        p99 = rows[storm]["p99_ms"] / rows["steady"]["p99_ms"]
        pr = paired(storm, "steady", "p99_ms")
        reloads = [r["reloads"] for r in rows[storm]["runs"]]
        print(f"{storm} / steady at {os.environ['RATE']} requests/s: p99 {p99:.2f}x (medians), {pr:.2f}x (paired by round); "
              f"{reloads} reloads applied per round; target: <= 1.5x")
PY
