#!/usr/bin/env bash
# Benchmark: what idle clients cost pglease and PgBouncer in memory, on a throwaway
# PostgreSQL cluster with SCRAM users. Per proxy: RSS before, RSS with N authenticated idle
# clients (asyncpg, from a venv this script makes), KiB per client and RSS after they all
# left (by default each ran one query before going idle: IDLE_QUERY); then, on freshly
# started proxies, ROUNDS rounds of CYCLE_CLIENTS clients that connect, run one query and leave, with RSS at the end of each round and the ratio last/first.
# Uses benches/pgbench.sh's helpers (cluster, proxies, cleanup). See benches/README.md.
set -euo pipefail

# ---- knobs (environment) -------------------------------------------------------------------
N=${N:-10000}                      # idle clients held at once
ROUNDS=${ROUNDS:-5}                # growth test: rounds
CYCLE_CLIENTS=${CYCLE_CLIENTS:-4000}  # growth test: clients per round
SETTLE=${SETTLE:-3}                # seconds between the last client's move and an RSS sample
TARGETS=${TARGETS:-pglease pgbouncer}
VENV=${VENV:-${TMPDIR:-/tmp}/pglease-bench-venv}  # kept between runs: made once
SCALE=${SCALE:-1}                  # pgbench -i -s (no pgbench runs; the table is not used)
MODE=${MODE:-transaction}
POOL_SIZE=${POOL_SIZE:-10}
# 1 = each idle client first runs one query (SELECT 1) and is held idle after it, as a web
# server's pooled connection is between requests; 0 = held straight after its login.
IDLE_QUERY=${IDLE_QUERY:-1}
# Also read (see benches/pgbench.sh): PGLEASE_BIN, PGBOUNCER_BIN, PGLEASE_LD_PRELOAD (glibc,
# jemalloc, mimalloc or a library path, preloaded into pglease), SUMMARY_FILE, KEEP_TMP.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=benches/pgbench.sh
source "$HERE/pgbench.sh"

# Both proxies hold N clients plus the pool; the driver (its own process) holds N sockets.
MAX_CLIENTS=$((N > CYCLE_CLIENTS ? N : CYCLE_CLIENTS))
PGBOUNCER_MAX_CLIENT_CONN=$((MAX_CLIENTS + 100))
PGLEASE_EXTRA="max_client_conn = $((MAX_CLIENTS + 100))"
NOFILE=$((MAX_CLIENTS + 1000))

raise_nofile() {
  if (($(ulimit -n) < NOFILE)); then
    ulimit -Hn "$NOFILE" 2>/dev/null || true
    ulimit -n "$NOFILE" 2>/dev/null || die "ulimit -n $NOFILE refused (hard limit $(ulimit -Hn)): lower N"
  fi
  log "RLIMIT_NOFILE $(ulimit -n)"
}

make_venv() {
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import asyncpg' 2>/dev/null; then
    log "python venv with asyncpg in $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q asyncpg || die "pip install asyncpg failed"
  fi
  log "asyncpg $("$VENV/bin/python" -c 'import asyncpg; print(asyncpg.__version__)')"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The proxy processes are (re)started per test so each test starts from a fresh process.
start_target() {
  case $1 in
    pglease) start_pglease ;;
    pgbouncer) start_pgbouncer ;;
  esac
}
stop_target() {
  case $1 in
    pglease) stop_pid "$PGLEASE_PID"; PGLEASE_PID="" ;;
    # A pidfile left behind would name the old process to the next start.
    pgbouncer) stop_pid "$PGBOUNCER_PID"; PGBOUNCER_PID=""; rm -f "$TMP/pgbouncer/pgbouncer.pid" ;;
  esac
}
label() {
  if [[ $1 == pgbouncer ]]; then echo "pgbouncer $PGBOUNCER_VERSION"; else echo "$1 $(allocator_of "$1")"; fi
}

# Idle test for target $1: appends "target before held after" (KiB) to $TMP/idle.
idle_test() {
  local t=$1 pid port before held after line
  start_target "$t"
  pid=$(target_pid "$t") port=$(target_port "$t")
  sleep "$SETTLE"
  before=$(rss_kib "$pid")
  coproc DRIVER { PGPASSWORD=$BENCH_PASSWORD IDLE_QUERY=$IDLE_QUERY exec "$VENV/bin/python" "$HERE/idle_clients.py" hold "$N" "$port"; }
  read -r line <&"${DRIVER[0]}" || die "$t: the driver ended before opening $N clients"
  [[ $line == "open $N" ]] || die "$t: driver said '$line'"
  sleep "$SETTLE"
  held=$(rss_kib "$pid")
  echo >&"${DRIVER[1]}"
  read -r line <&"${DRIVER[0]}" || true
  wait "$DRIVER_PID" 2>/dev/null || die "$t: the driver failed closing its clients"
  sleep "$SETTLE"
  after=$(rss_kib "$pid")
  log "$(label "$t"): RSS ${before} KiB before, ${held} KiB with $N idle clients, ${after} KiB after"
  echo "$t $before $held $after" >>"$TMP/idle"
  stop_target "$t"
}

# Growth test for target $1: appends "target round rss" (KiB) to $TMP/growth.
growth_test() {
  local t=$1 pid port r out rss
  start_target "$t"
  pid=$(target_pid "$t") port=$(target_port "$t")
  sleep "$SETTLE"
  echo "$t 0 $(rss_kib "$pid")" >>"$TMP/growth"
  for ((r = 1; r <= ROUNDS; r++)); do
    out=$(PGPASSWORD=$BENCH_PASSWORD "$VENV/bin/python" "$HERE/idle_clients.py" cycle "$CYCLE_CLIENTS" "$port") ||
      die "$t: round $r failed"
    [[ $out == "cycled $CYCLE_CLIENTS" ]] || die "$t: round $r: driver said '$out'"
    sleep "$SETTLE"
    rss=$(rss_kib "$pid")
    log "$(label "$t"): round $r RSS ${rss} KiB"
    echo "$t $r $rss" >>"$TMP/growth"
  done
  stop_target "$t"
}

idle_report() {
  local t
  printf '\nIdle clients: N=%s, MODE=%s, POOL_SIZE=%s, IDLE_QUERY=%s, asyncpg, SCRAM; pgbouncer %s; RSS in KiB\n' \
    "$N" "$MODE" "$POOL_SIZE" "$IDLE_QUERY" "${PGBOUNCER_VERSION:-not run}"
  printf '%-18s %10s %12s %14s %10s\n' target before "with N idle" "KiB/client" after
  while read -r t before held after; do
    printf '%-18s %10s %12s %14s %10s\n' "$(label "$t")" "$before" "$held" \
      "$(awk -v a="$held" -v b="$before" -v n="$N" 'BEGIN {printf "%.2f", (a - b) / n}')" "$after"
  done <"$TMP/idle"
  printf '\nGrowth: %s rounds of %s clients (connect, SELECT 1, leave); RSS in KiB at each round end\n' \
    "$ROUNDS" "$CYCLE_CLIENTS"
  for t in "${RUN[@]}"; do
    awk -v t="$t" -v name="$(label "$t")" '
      $1 == t {rss[$2] = $3; if ($2 > last) last = $2}
      END {
        printf "%-18s start %s;", name, rss[0]
        for (r = 1; r <= last; r++) printf " %s", rss[r]
        printf "; last/first %.3f\n", rss[last] / rss[1]
      }' "$TMP/growth"
  done
  idle_summary
}

# For benches/issue-figures.sh, tab-separated lines in SUMMARY_FILE: "idle target KiB/client
# N RSS-after-all-left pgbouncer" and "growth target last/first rounds RSS-at-the-end pgbouncer".
idle_summary() {
  [[ -n ${SUMMARY_FILE:-} ]] || return 0
  local t v=${PGBOUNCER_VERSION:-not run}
  while read -r t before held after; do
    awk -v t="$(label "$t")" -v a="$held" -v b="$before" -v n="$N" -v after="$after" -v v="$v" \
      'BEGIN {printf "idle\t%s\t%.2f\t%s\t%s\t%s\n", t, (a - b) / n, n, after, v}'
  done <"$TMP/idle" >>"$SUMMARY_FILE"
  for t in "${RUN[@]}"; do
    awk -v t="$t" -v name="$(label "$t")" -v v="$v" '
      $1 == t {rss[$2] = $3; if ($2 > last) last = $2}
      END {printf "growth\t%s\t%.3f\t%d\t%s\t%s\n", name, rss[last] / rss[1], last, rss[last], v}' "$TMP/growth"
  done >>"$SUMMARY_FILE"
}

idle_main() {
  local t
  for n in N ROUNDS CYCLE_CLIENTS SETTLE POOL_SIZE; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
  done
  ((N >= 1 && ROUNDS >= 1 && CYCLE_CLIENTS >= 1)) || die "N, ROUNDS and CYCLE_CLIENTS must be at least 1"
  preload_path "$PGLEASE_LD_PRELOAD" >/dev/null
  find_pg_bin
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/pglease-idle.XXXXXX")
  chmod 755 "$TMP"
  declare -ga RUN=()
  read -r -a want <<<"$TARGETS"
  for t in "${want[@]}"; do
    case $t in
      pglease) build_pglease ;;
      pgbouncer) find_pgbouncer || die "pgbouncer not found: install it or set PGBOUNCER_BIN" ;;
      *) die "unknown target '$t' in TARGETS (pglease, pgbouncer)" ;;
    esac
    RUN+=("$t")
  done
  raise_nofile
  make_venv
  start_postgres
  # PgBouncer's version is read when it starts; start it once so every label carries it.
  if [[ " ${RUN[*]} " == *" pgbouncer "* ]]; then start_pgbouncer; stop_target pgbouncer; fi
  : >"$TMP/idle"
  : >"$TMP/growth"
  for t in "${RUN[@]}"; do idle_test "$t"; done
  for t in "${RUN[@]}"; do growth_test "$t"; done
  idle_report
}

idle_main "$@"
