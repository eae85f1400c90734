# Shared by run.sh and footprint.sh (sourced from the repository root):
# wrk, the release binary, a work directory cleaned up on exit, core
# pinning, and the fixtures (`portcullis dev --fixtures-only`).

if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

# BIN=path/to/portcullis measures another build (a baseline).
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin portcullis
  BIN=$PWD/target/release/portcullis
fi
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
  PINNING="gateway on core 0, clients and fixtures on core 1"
else
  GW=()
  LOAD=()
  PINNING="not pinned ($(nproc) core(s))"
fi

# start_fixtures [dev flags...]: the issuer and echo upstream on the load
# core; sets ISSUER, UPSTREAM, AUDIENCE, TOKEN, and writes the distinct
# tokens (if any) one per line to $WORK/tokens.txt and a wrk script that
# sends them in turn, from START on, to $WORK/tokens.lua.
start_fixtures() {
  "${LOAD[@]}" "$BIN" dev --fixtures-only "$@" >"$WORK/fixtures.json" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 1200); do [ -s "$WORK/fixtures.json" ] && break; sleep 0.1; done
  python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
fixtures = json.load(open(f"{work}/fixtures.json"))
for name in ("issuer", "upstream", "audience", "token"):
    open(f"{work}/{name}", "w").write(fixtures[name])
open(f"{work}/tokens.txt", "w").write("\n".join(fixtures["tokens"]) + "\n")
PY
  ISSUER=$(cat "$WORK/issuer")
  UPSTREAM_URL=$(cat "$WORK/upstream")
  UPSTREAM=${UPSTREAM_URL#http://} # host:port
  AUDIENCE=$(cat "$WORK/audience")
  TOKEN=$(cat "$WORK/token")
  cat >"$WORK/tokens.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
-- A run goes on where the previous one stopped (START requests in).
local i = tonumber(os.getenv("START") or "0")
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA
}

# The config both scripts start from: listeners on PORT and PORT + 1, the
# fixtures' upstream and issuer (the issuer's table left open for more keys).
config_head() {
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
TOML
}
