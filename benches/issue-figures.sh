#!/usr/bin/env bash
# Every figure of the performance targets in one go, pglease beside PgBouncer: runs
# benches/pgbench.sh once per workload (-S, -M extended, TPC-B -c 20, -M prepared against
# PgBouncer's -M extended and -M prepared, pgbench -C with SCRAM, workers = 1 and 2, rotation
# at a fixed RATE) and benches/idle_clients.sh (idle clients, growth), keeps each one's full
# output, and prints one summary table with the issue's target and whether it held. See
# benches/README.md.
set -euo pipefail

# ---- knobs (environment) -------------------------------------------------------------------
WORKLOADS=${WORKLOADS:-select extended tpcb prepared prepared-pgb connect workers1 workers2 rotation idle}
ROUNDS=${ROUNDS:-3}                       # interleaved rounds of every pgbench workload
DURATION=${DURATION:-20}                  # seconds per pgbench run
ROTATION_ROUNDS=${ROTATION_ROUNDS:-$ROUNDS}
ROTATION_DURATION=${ROTATION_DURATION:-60}  # a rotation run needs room for several leases
# Offered rate of the rotation runs; unset: 0.6 x pglease's median of the `select` workload.
ROTATION_RATE=${ROTATION_RATE:-}
IDLE_N=${IDLE_N:-10000}                   # idle_clients.sh N
IDLE_ROUNDS=${IDLE_ROUNDS:-5}             # idle_clients.sh ROUNDS
IDLE_CYCLE_CLIENTS=${IDLE_CYCLE_CLIENTS:-4000}
# Targets of every pgbench workload; add pglease-base (with PGLEASE_BASE_BIN) for
# before/after columns.
BENCH_TARGETS=${BENCH_TARGETS:-pglease pgbouncer}
OUT_DIR=${OUT_DIR:-}                      # where each workload's output goes; unset: a new temp dir

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# name | knobs for pgbench.sh | what the row shows | the issue's target (see verdict())
workload_def() {
  case $1 in
    select) echo "SCENARIO=select PROTOCOL=simple CLIENTS=50|-S -c 50|tps>=1.05 cpu<=0.9" ;;
    extended) echo "SCENARIO=select PROTOCOL=extended CLIENTS=50|-S -M extended -c 50|tps>=1.05 cpu<=0.9" ;;
    tpcb) echo "SCENARIO=tpcb PROTOCOL=simple CLIENTS=20|TPC-B -c 20|tps>=1.05 cpu<=0.9" ;;
    prepared) echo "SCENARIO=select PROTOCOL=prepared PGBOUNCER_PROTOCOL=extended CLIENTS=50|-S -M prepared vs pgb extended|tps>=1.00" ;;
    # PgBouncer runs -M prepared from 1.21 on (max_prepared_statements), -M extended before.
    prepared-pgb) echo "SCENARIO=select PROTOCOL=prepared CLIENTS=50|-S -M prepared|-" ;;
    connect) echo "SCENARIO=connect PROTOCOL=simple CLIENTS=50|-S -C (SCRAM) conn/s|tps>=1.00" ;;
    workers1) echo "SCENARIO=select PROTOCOL=simple CLIENTS=50 PGLEASE_WORKERS=1|-S -c 50 workers=1|-" ;;
    workers2) echo "SCENARIO=select PROTOCOL=simple CLIENTS=50 PGLEASE_WORKERS=2|-S -c 50 workers=2|-" ;;
    rotation) echo "SCENARIO=rotation PROTOCOL=simple CLIENTS=50|rotation -S -R RATE|worst>=0.95 failed=0" ;;
    idle) echo "|idle clients|idle<=2 growth<=1.10" ;;
    *) return 1 ;;
  esac
}

validate() {
  local n w
  for n in ROUNDS DURATION ROTATION_ROUNDS ROTATION_DURATION IDLE_N IDLE_ROUNDS IDLE_CYCLE_CLIENTS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
  done
  [[ -z $ROTATION_RATE || $ROTATION_RATE =~ ^[1-9][0-9]*$ ]] || die "ROTATION_RATE must be a positive integer"
  for w in $WORKLOADS; do
    workload_def "$w" >/dev/null || die "unknown workload '$w' in WORKLOADS"
  done
}

# One pglease binary for every workload: PGLEASE_BIN, or one release build made here.
pglease_binary() {
  if [[ -z ${PGLEASE_BIN:-} ]]; then
    log "cargo build --release (in $REPO)"
    (cd "$REPO" && cargo build --release --bin pglease) || die "cargo build --release failed"
    PGLEASE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pglease
  fi
  [[ -x $PGLEASE_BIN ]] || die "pglease binary not found at $PGLEASE_BIN"
  export PGLEASE_BIN
}

# The figures are a comparison: without PgBouncer there is nothing to print.
pgbouncer_binary() {
  PGBOUNCER_BIN=${PGBOUNCER_BIN:-pgbouncer}
  command -v "$PGBOUNCER_BIN" >/dev/null 2>&1 ||
    die "PgBouncer not found: set PGBOUNCER_BIN (benches/build-pgbouncer.sh builds one) or install it"
  export PGBOUNCER_BIN
  PGBOUNCER_VERSION=$("$PGBOUNCER_BIN" --version | awk 'NR == 1 {print $2}')
}

# Runs workload $1 with pgbench.sh; its summary line lands in $OUT_DIR/summary.tsv.
run_pgbench_workload() {
  local w=$1 knobs rounds=$ROUNDS duration=$DURATION rate=0 targets=$BENCH_TARGETS
  knobs=$(workload_def "$w" | cut -d '|' -f 1)
  if [[ $w == rotation ]]; then
    rounds=$ROTATION_ROUNDS duration=$ROTATION_DURATION rate=$(rotation_rate)
    targets=pglease
  fi
  local -a env_args
  read -r -a env_args <<<"$knobs"
  # Knobs a workload does not set keep the caller's values (MODE, POOL_SIZE, WARMUP, ...),
  # except these, which would silently change what a row means.
  [[ $knobs == *PGLEASE_WORKERS=* ]] || env_args+=("PGLEASE_WORKERS=${PGLEASE_WORKERS:-}")
  [[ $knobs == *PGBOUNCER_PROTOCOL=* ]] || env_args+=(PGBOUNCER_PROTOCOL=)
  log "$w: ${env_args[*]} ROUNDS=$rounds DURATION=$duration RATE=$rate"
  env "${env_args[@]}" ROUNDS="$rounds" DURATION="$duration" RATE="$rate" TARGETS="$targets" \
    SUMMARY_FILE="$OUT_DIR/$w.tsv" SUMMARY_LABEL="$w" "$HERE/pgbench.sh" \
    >"$OUT_DIR/$w.txt" 2>"$OUT_DIR/$w.log"
}

run_idle_workload() {
  log "idle: N=$IDLE_N ROUNDS=$IDLE_ROUNDS CYCLE_CLIENTS=$IDLE_CYCLE_CLIENTS"
  N=$IDLE_N ROUNDS=$IDLE_ROUNDS CYCLE_CLIENTS=$IDLE_CYCLE_CLIENTS TARGETS="pglease pgbouncer" \
    SUMMARY_FILE="$OUT_DIR/idle.tsv" "$HERE/idle_clients.sh" >"$OUT_DIR/idle.txt" 2>"$OUT_DIR/idle.log"
}

# ROTATION_RATE, else 0.6 x the select workload's pglease median (rounded to 100), so every
# second should carry exactly the offered load and a held-up second stands out.
rotation_rate() {
  if [[ -n $ROTATION_RATE ]]; then echo "$ROTATION_RATE"; return; fi
  local med
  med=$(awk -F '\t' 'NR == 1 {print $2}' "$OUT_DIR/select.tsv" 2>/dev/null || true)
  if [[ -z $med || $med == - ]]; then
    log "rotation: no select figure to derive RATE from and no ROTATION_RATE: running at RATE=10000"
    echo 10000
    return
  fi
  awk -v m="$med" 'BEGIN {r = int(m * 0.6 / 100) * 100; print (r > 0 ? r : 100)}'
}

# ---- the table -----------------------------------------------------------------------------
# Every row goes through one format, so the columns line up.
row() { printf '%-13s %-36s %9s %9s %6s %7s %7s %6s %6s %-10s %-22s %s\n' "$@"; }

header() {
  row workload figure pglease pgbouncer ratio "pgl us" "pgb us" "cpu" rounds pgbouncer \
    "issue target" verdict
  row "" "" "" "" "" "/txn" "/txn" ratio "" "" "" ""
}

# met / MISSED for a target such as "tps>=1.05 cpu<=0.9" given the measured ratios.
verdict() {
  local target=$1 tps=$2 cpu=$3 bad=${4:-0/0}
  [[ $target == - ]] && { echo "(reported)"; return; }
  [[ $bad == 0/0 ]] || { echo "NOT COMPARABLE (failed/aborted $bad)"; return; }
  awk -v t="$target" -v tps="$tps" -v cpu="$cpu" 'BEGIN {
    n = split(t, parts, " "); ok = 1
    for (i = 1; i <= n; i++) {
      if (parts[i] ~ /^tps>=/) { want = substr(parts[i], 6); if (tps == "-" || tps + 0 < want + 0) ok = 0 }
      if (parts[i] ~ /^cpu<=/) { want = substr(parts[i], 6); if (cpu == "-" || cpu + 0 > want + 0) ok = 0 }
    }
    print (ok ? "met" : "MISSED")
  }'
}

pgbench_row() {
  local w=$1 figure target line
  figure=$(workload_def "$w" | cut -d '|' -f 2)
  target=$(workload_def "$w" | cut -d '|' -f 3)
  line=$(head -n 1 "$OUT_DIR/$w.tsv" 2>/dev/null || true)
  if [[ -z $line ]]; then
    row "$w" "$figure" - - - - - - - - "$target" "FAILED (see $OUT_DIR/$w.log)"
    return
  fi
  local a b tr ca cb cr rounds v pa pb bad btr bcr
  IFS=$'\t' read -r _ a b tr ca cb cr rounds v pa pb bad _ btr bcr <<<"$line"
  # The issue's -M prepared target compares with PgBouncer's -M extended; say which ran.
  if [[ $pa != "$pb" && $figure != *" vs pgb "* ]]; then figure+=" (pgb -M $pb)"; fi
  row "$w" "$figure" "$a" "$b" "$tr" "$ca" "$cb" "$cr" "$rounds" "$v" "$target" \
    "$(verdict "$target" "$tr" "$cr" "$bad")"
  if [[ ${btr:--} != - ]]; then
    row "" "  pglease/pglease-base" "" "" "$btr" "" "" "$bcr" "" "" "" ""
  fi
}

rotation_row() {
  local line ratio failed aborted rounds v rate floor target verdict
  target=$(workload_def rotation | cut -d '|' -f 3)
  line=$(head -n 1 "$OUT_DIR/rotation.tsv" 2>/dev/null || true)
  if [[ -z $line ]]; then
    row rotation "worst 1s / steady median" - - - - - - - - "$target" "FAILED (see $OUT_DIR/rotation.log)"
    return
  fi
  IFS=$'\t' read -r _ ratio _ _ failed aborted rounds v rate floor <<<"$line"
  verdict=MISSED
  awk -v r="$ratio" -v f="$failed" -v a="$aborted" 'BEGIN {exit !(r >= 0.95 && f == 0 && a == 0)}' && verdict=met
  row rotation "worst 1s/median at -R $rate" "$ratio" - - - - - "$rounds" "$v" "$target" \
    "$verdict (failed $failed, aborted $aborted; steady runs' own floor ${floor:-?})"
}

idle_rows() {
  local kind target k t value n v
  if [[ ! -s $OUT_DIR/idle.tsv ]]; then
    row idle "KiB per idle client" - - - - - - - - "idle<=2" "FAILED (see $OUT_DIR/idle.log)"
    return
  fi
  for kind in idle growth; do
    local pgl="-" pgb="-" rounds="-" ver="-"
    # read's last, failed call empties its variables: keep what a line gave in others.
    while IFS=$'\t' read -r k t value n _ v; do
      [[ $k == "$kind" ]] || continue
      if [[ $t == pgbouncer* ]]; then pgb=$value; else pgl=$value; fi
      rounds=$n ver=$v
    done <"$OUT_DIR/idle.tsv"
    if [[ $kind == idle ]]; then
      target="<= 2 KiB/client"
      row idle "KiB/client, $IDLE_N idle" "$pgl" "$pgb" "$(ratio_of "$pgl" "$pgb")" - - - 1 "$ver" \
        "$target" "$(awk -v x="$pgl" 'BEGIN {print (x != "-" && x <= 2 ? "met" : "MISSED")}')"
    else
      target="r$rounds/r1 <= 1.10"
      row growth "RSS r$rounds/r1, $IDLE_CYCLE_CLIENTS clients" "$pgl" "$pgb" - - - - "$rounds" "$ver" \
        "$target" "$(awk -v x="$pgl" 'BEGIN {print (x != "-" && x <= 1.10 ? "met" : "MISSED")}')"
    fi
  done
}

ratio_of() { awk -v x="$1" -v y="$2" 'BEGIN {print (x != "-" && y != "-" && y > 0 ? sprintf("%.2f", x / y) : "-")}'; }

summary() {
  local w
  printf '\nIssue figures: pglease %s vs PgBouncer %s; ROUNDS=%s DURATION=%ss; MODE=%s POOL_SIZE=%s; %s CPUs; outputs in %s\n' \
    "$PGLEASE_BIN" "$PGBOUNCER_VERSION" "$ROUNDS" "$DURATION" "${MODE:-transaction}" "${POOL_SIZE:-10}" \
    "$(nproc)" "$OUT_DIR"
  printf 'ratio = pglease/pgbouncer (TPS: higher is better; cpu = proxy CPU per transaction: lower is better)\n\n'
  header
  for w in $WORKLOADS; do
    case $w in
      rotation) rotation_row ;;
      idle) idle_rows ;;
      *) pgbench_row "$w" ;;
    esac
  done
}

main() {
  validate
  pglease_binary
  pgbouncer_binary
  if [[ -z $OUT_DIR ]]; then OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pglease-figures.XXXXXX"); fi
  mkdir -p "$OUT_DIR"
  log "outputs in $OUT_DIR; workloads: $WORKLOADS"
  local w
  for w in $WORKLOADS; do
    rm -f "$OUT_DIR/$w.tsv"
    # One failed workload is reported in the table; the others still run.
    if [[ $w == idle ]]; then
      run_idle_workload || log "idle failed: see $OUT_DIR/idle.log"
    else
      run_pgbench_workload "$w" || log "$w failed: see $OUT_DIR/$w.log"
    fi
  done
  summary | tee "$OUT_DIR/summary.txt"
}

main "$@"
