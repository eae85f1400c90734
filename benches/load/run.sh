#!/usr/bin/env bash
# End-to-end load benchmark: the release binary on loopback, driven by wrk.
#
#   bash benches/load/run.sh                 # every scenario, 3 rounds of 10 s
#   ROUNDS=5 DURATION=20s bash benches/load/run.sh
#   SCENARIOS="audit-off audit-file" bash benches/load/run.sh
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
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"audit-off audit-file audit-stdout"}
PORT=${PORT:-18080}

if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

cargo build --release --locked --bin portcullis
BIN=$PWD/target/release/portcullis
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  GW=(taskset -c 0)
  LOAD=(taskset -c 1)
  PINNING="gateway on core 0, wrk and fixtures on core 1"
else
  GW=()
  LOAD=()
  PINNING="not pinned ($(nproc) core(s))"
fi

"${LOAD[@]}" "$BIN" dev --fixtures-only >"$WORK/fixtures.json" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/fixtures.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; print(json.load(open('$WORK/fixtures.json'))['$1'])"; }
ISSUER=$(field issuer)
UPSTREAM=$(field upstream)
AUDIENCE=$(field audience)
TOKEN=$(field token)

config() { # scenario -> config text
  cat <<TOML
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$((PORT + 1))"

[upstream]
url = "http://$UPSTREAM"

[[issuers]]
name = "dev"
kind = "oidc"
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]

[[routes]]
name = "read"
prefix = "/"
scopes = ["Models.Read"]

[logging]
level = "warn"
TOML
  case "$1" in
    audit-off) printf '\n[audit]\nsink = "off"\n' ;;
    audit-file) printf '\n[audit]\nsink = "file"\nfile = "%s/audit.jsonl"\n' "$WORK" ;;
    audit-stdout) printf '\n[audit]\nsink = "stdout"\n' ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
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

run_round() { # scenario round
  local scenario=$1 round=$2
  rm -f "$WORK"/audit.jsonl* "$WORK/stdout.jsonl"
  config "$scenario" >"$WORK/$scenario.toml"
  "${GW[@]}" "$BIN" run --config "$WORK/$scenario.toml" >"$WORK/stdout.jsonl" 2>"$WORK/$scenario.log" &
  local pid=$!
  PIDS+=($pid)
  ready || { echo "gateway did not become ready:"; cat "$WORK/$scenario.log"; exit 1; }
  local cpu0 cpu1
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  "${LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/openai/models" >"$WORK/$scenario.$round.wrk"
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  local records=0
  if compgen -G "$WORK/audit.jsonl*" >/dev/null; then records=$(cat "$WORK"/audit.jsonl* | wc -l); fi
  [ "$scenario" = audit-stdout ] && records=$(wc -l <"$WORK/stdout.jsonl")
  python3 - "$WORK/$scenario.$round.wrk" "$rss" "$records" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" >"$WORK/$scenario.$round.json" <<'PY'
import json, re, sys
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
}))
PY
}

echo "portcullis load benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $PINNING"
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds per scenario, alternating"
for round in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    run_round "$scenario" "$round"
    echo "  round $round $scenario: $(cat "$WORK/$scenario.$round.json")"
  done
done

python3 - "$WORK" "$ROUNDS" $SCENARIOS <<'PY'
import json, statistics, sys
work, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for s in scenarios:
    runs = [json.load(open(f"{work}/{s}.{r}.json")) for r in range(1, rounds + 1)]
    for r in runs:
        if r["non_2xx"] or r["socket_errors"]:
            sys.exit(f"{s}: {r['non_2xx']} non-2xx responses, socket errors {r['socket_errors']!r}: not a valid run")
        if s.startswith("audit-") and s != "audit-off" and r["audit_records"] < r["requests"]:
            sys.exit(f"{s}: {r['audit_records']} audit records for {r['requests']} requests")
    median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    cpu = sorted(r["cpu_us_per_request"] for r in runs)[len(runs) // 2]
    rows[s] = median | {"rps_all": [round(r["rps"]) for r in runs], "cpu_med": cpu}
print()
print(f"| Scenario | Requests/s (median of {rounds}) | All rounds | p50 | p99 | Gateway CPU/request (median) | Peak RSS |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for s, r in rows.items():
    print(f"| {s} | {r['rps']:.0f} | {r['rps_all']} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['cpu_med']:.1f} µs | {r['peak_rss_kib'] / 1024:.1f} MiB |")
for s in ("audit-file", "audit-stdout"):
    if "audit-off" in rows and s in rows:
        ratio = rows[s]["rps"] / rows["audit-off"]["rps"]
        cpu = rows[s]["cpu_med"] / rows["audit-off"]["cpu_med"]
        print(f"{s} / audit-off: throughput {ratio:.3f} (cost {100 * (1 - ratio):.1f}%), CPU per request {cpu:.3f}; target: cost <= 5%")
PY
