#!/usr/bin/env bash
# Benchmark: pgbench against PostgreSQL direct, pglease and PgBouncer, interleaved, on a
# throwaway PostgreSQL cluster; prints per-round TPS, medians, proxy CPU per transaction and
# the pglease/pgbouncer and pglease/direct ratios. SCENARIO=connect measures connections per
# second (pgbench -C, a SCRAM login per transaction); SCENARIO=rotation instead compares
# pglease on static credentials with pglease rotating issued roles every few seconds. See
# benches/README.md; benches/issue-figures.sh runs every scenario in one go.
set -euo pipefail

# ---- knobs (environment) -------------------------------------------------------------------
MODE=${MODE:-transaction}      # pool mode of both proxies: transaction | session
PROTOCOL=${PROTOCOL:-simple}   # pgbench -M: simple | extended | prepared
# pgbench -M against PgBouncer; unset = PROTOCOL, except `extended` when PROTOCOL=prepared in
# transaction mode and the PgBouncer found predates 1.21 (it cannot serve `prepared` there).
PGBOUNCER_PROTOCOL=${PGBOUNCER_PROTOCOL:-}
SCENARIO=${SCENARIO:-select}   # select (-S) | tpcb (pgbench default) | connect (-C -S) | rotation
ROUNDS=${ROUNDS:-3}
# Seconds per run; a rotation run needs room for several leases.
if [[ $SCENARIO == rotation ]]; then DURATION=${DURATION:-60}; else DURATION=${DURATION:-20}; fi
ROTATION_WORKLOAD=${ROTATION_WORKLOAD:-select}  # rotation only: select (-S) | tpcb
CLIENTS=${CLIENTS:-50}
RATE=${RATE:-0}                # pgbench -R: transactions per second offered; 0 = as fast as possible
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}             # pgbench -i -s
WARMUP=${WARMUP:-5}            # seconds of unmeasured load per target before round 1; 0 = none
# pglease-tls: a second pglease with client_tls = "require" (self-signed certificate), pgbench
# with sslmode=require; run it next to `pglease` to see what TLS costs per transaction.
# pglease-scraped: a second pglease with admin_listen on, whose /metrics is fetched every
# SCRAPE_MS milliseconds during its runs; run it next to `pglease` to see what scraping costs.
TARGETS=${TARGETS:-direct pglease pgbouncer}
SCRAPE_MS=${SCRAPE_MS:-100}    # pglease-scraped only: milliseconds between two scrapes
# pglease-base: the same pglease config run by another build (PGLEASE_BASE_BIN, e.g. a release
# build of an older commit), so a before/after comparison shares one interleaved run.
PGLEASE_BASE_BIN=${PGLEASE_BASE_BIN:-}
# A malloc to LD_PRELOAD into the pglease target (and into pglease-base): glibc (none),
# jemalloc, mimalloc, or the path of a shared library. Measures an allocator with no rebuild.
PGLEASE_LD_PRELOAD=${PGLEASE_LD_PRELOAD:-}
PGLEASE_BASE_LD_PRELOAD=${PGLEASE_BASE_LD_PRELOAD:-}
# Where report() appends one tab-separated line of its figures, for benches/issue-figures.sh.
SUMMARY_FILE=${SUMMARY_FILE:-}
SUMMARY_LABEL=${SUMMARY_LABEL:-$SCENARIO}
BENCH_INSTALL=${BENCH_INSTALL:-0}  # 1 = apt-get install pgbouncer when it is missing
KEEP_TMP=${KEEP_TMP:-0}        # 1 = keep the temp dir (logs, configs) after exit
# Session mode pins one upstream per client for the whole run, so a pool smaller than the
# client count would leave clients queued for the entire run; default to one slot per client.
if [[ $MODE == session ]]; then POOL_SIZE=${POOL_SIZE:-$CLIENTS}; else POOL_SIZE=${POOL_SIZE:-10}; fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=""
PG_BIN_DIR="" PSQL="" PGBENCH=""
PG_PORT="" PGLEASE_PORT="" PGBOUNCER_PORT=""
PGLEASE_SCRAPED_PORT="" PGLEASE_SCRAPED_PID="" SCRAPED_ADMIN_PORT="" SCRAPER_PID=""
PGLEASE_PID="" PGLEASE_LOG="" PGLEASE_TLS_PORT="" PGLEASE_TLS_PID="" PGLEASE_BASE_PORT="" PGLEASE_BASE_PID="" PGBOUNCER_PID="" PGBOUNCER_VERSION="" SAMPLER_PID=""
PG_STARTED=0
BENCH_PASSWORD="" BENCH_VERIFIER="" ADMIN_PASSWORD=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
loud() { printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! %s\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' "$*" >&2; }

validate_knobs() {
  [[ $MODE == transaction || $MODE == session ]] || die "MODE must be transaction or session"
  [[ $PROTOCOL =~ ^(simple|extended|prepared)$ ]] || die "PROTOCOL must be simple, extended or prepared"
  [[ -z $PGBOUNCER_PROTOCOL || $PGBOUNCER_PROTOCOL =~ ^(simple|extended|prepared)$ ]] ||
    die "PGBOUNCER_PROTOCOL must be simple, extended or prepared"
  [[ $SCENARIO =~ ^(select|tpcb|connect|rotation)$ ]] || die "SCENARIO must be select, tpcb, connect or rotation"
  [[ $ROTATION_WORKLOAD =~ ^(select|tpcb)$ ]] || die "ROTATION_WORKLOAD must be select or tpcb"
  local n
  for n in ROUNDS DURATION CLIENTS RATE THREADS SCALE WARMUP POOL_SIZE SCRAPE_MS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a non-negative integer, got '${!n}'"
  done
  ((ROUNDS >= 1 && DURATION >= 1 && CLIENTS >= 1 && THREADS >= 1 && POOL_SIZE >= 1 && SCRAPE_MS >= 1)) ||
    die "ROUNDS, DURATION, CLIENTS, THREADS, POOL_SIZE and SCRAPE_MS must be at least 1"
  ((CLIENTS % THREADS == 0)) || die "pgbench needs CLIENTS ($CLIENTS) to be a multiple of THREADS ($THREADS)"
  # Here, before any cluster starts: a bad allocator name fails in a second.
  preload_path "$PGLEASE_LD_PRELOAD" >/dev/null
  preload_path "$PGLEASE_BASE_LD_PRELOAD" >/dev/null
  if [[ $MODE == session && $POOL_SIZE -lt $CLIENTS ]]; then
    loud "MODE=session with POOL_SIZE=$POOL_SIZE < CLIENTS=$CLIENTS: clients beyond the pool wait the whole run"
  fi
}

# ---- processes and cleanup -----------------------------------------------------------------
is_root() { [[ $(id -u) -eq 0 ]]; }

# PostgreSQL refuses to run as root, and PgBouncer refuses without -u, so as root both run as
# the `postgres` OS user and the files they touch are handed to it.
as_pg() {
  if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}
give_to_pg() {
  if is_root; then chown -R postgres: "$@"; fi
}

stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if ((status != 0)) && [[ -n $TMP ]]; then
    local f
    for f in "$TMP"/pglease*.log "$TMP"/pgbouncer/pgbouncer.log "$TMP"/postgres.log; do
      [[ -s $f ]] && { printf '\n--- last lines of %s ---\n' "$f" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  stop_pid "$SAMPLER_PID"
  stop_pid "$PGLEASE_PID"
  stop_pid "$PGLEASE_TLS_PID"
  stop_pid "$PGLEASE_BASE_PID"
  stop_pid "$SCRAPER_PID"
  stop_pid "$PGLEASE_SCRAPED_PID"
  stop_pid "$PGBOUNCER_PID"
  if ((PG_STARTED)); then
    as_pg "$PG_BIN_DIR/pg_ctl" -D "$TMP/pgdata" -m fast -w stop >/dev/null 2>&1
  fi
  if [[ -n $TMP ]]; then
    if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port that nothing answers on right now. Racy by nature, but each port is bound within
# seconds of being chosen, and the picks are kept distinct. Chosen below the kernel's
# ephemeral range: a port there can be the local end of someone's outgoing connection, which
# answers no connect yet makes bind() fail.
free_port() {
  local p i low=32768 span
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  span=$((low - 10000))
  ((span >= 1000)) || span=20000
  for ((i = 0; i < 200; i++)); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    [[ " $PG_PORT $PGLEASE_PORT $PGBOUNCER_PORT $PGLEASE_BASE_PORT " == *" $p "* ]] && continue
    port_open "$p" || { echo "$p"; return 0; }
  done
  die "no free TCP port found"
}

# Waits until something accepts on the port; gives up early if the process that should
# listen there has died.
wait_port() {
  local port=$1 pid=$2 what=$3 i
  for ((i = 0; i < 300; i++)); do
    port_open "$port" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      die "$what exited (status $rc) before listening on port $port"
    fi
    sleep 0.1
  done
  die "$what is not listening on port $port after 30s"
}

# ---- PostgreSQL ----------------------------------------------------------------------------
find_pg_bin() {
  if [[ -n ${PG_BIN:-} ]]; then
    PG_BIN_DIR=$PG_BIN
  elif command -v initdb >/dev/null 2>&1; then
    # Resolved, because PATH may hold only symlinks to a versioned directory.
    PG_BIN_DIR=$(dirname "$(readlink -f "$(command -v initdb)")")
  else
    # Debian/Ubuntu keep the server binaries off PATH, one directory per major version.
    PG_BIN_DIR=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  [[ -n $PG_BIN_DIR && -x $PG_BIN_DIR/initdb && -x $PG_BIN_DIR/pg_ctl ]] ||
    die "PostgreSQL server binaries not found: set PG_BIN or install postgresql"
  PSQL=$(pg_path psql)
  PGBENCH=$(pg_path pgbench)
}

# Client tools from the server's directory when it has them (matching versions), else PATH.
pg_path() {
  if [[ -x $PG_BIN_DIR/$1 ]]; then
    echo "$PG_BIN_DIR/$1"
  else
    command -v "$1" || die "$1 not found"
  fi
}

# Superuser SQL goes over the Unix socket (trust); everything the benchmark measures goes
# over TCP with SCRAM, like a real application.
pg_admin_sql() {
  as_pg "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$TMP/run" -p "$PG_PORT" -U postgres \
    -d postgres -At -c "$1"
}

start_postgres() {
  log "PostgreSQL from $PG_BIN_DIR"
  mkdir -p "$TMP/pgdata" "$TMP/run"
  give_to_pg "$TMP/pgdata" "$TMP/run"
  as_pg "$PG_BIN_DIR/initdb" -D "$TMP/pgdata" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --no-sync >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
  PG_PORT=$(free_port)
  cat >>"$TMP/pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP/run'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '256MB'
EOF
  touch "$TMP/postgres.log"
  give_to_pg "$TMP/postgres.log"
  as_pg "$PG_BIN_DIR/pg_ctl" -D "$TMP/pgdata" -l "$TMP/postgres.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start"
  PG_STARTED=1

  BENCH_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  pg_admin_sql "CREATE ROLE bench LOGIN PASSWORD '$BENCH_PASSWORD'"
  pg_admin_sql "CREATE DATABASE bench OWNER bench"
  # Both proxies check the client's SCRAM proof against this very verifier (salt, iterations
  # and keys alike), so a login costs each of them, and the client, the same work.
  BENCH_VERIFIER=$(pg_admin_sql "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
  [[ $BENCH_VERIFIER == SCRAM-SHA-256\$* ]] || die "unexpected password hash for role bench"
  log "pgbench -i -s $SCALE"
  PGPASSWORD=$BENCH_PASSWORD "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" \
    -U bench bench >"$TMP/pgbench-init.log" 2>&1 ||
    { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

# ---- pglease -------------------------------------------------------------------------------
# Built before PostgreSQL starts: a failed build should cost seconds, not a pgbench -i.
build_pglease() {
  PGLEASE_BIN=${PGLEASE_BIN:-}
  if [[ -z $PGLEASE_BIN ]]; then
    log "cargo build --release (in $REPO)"
    (cd "$REPO" && cargo build --release --bin pglease) || die "cargo build --release failed"
    PGLEASE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pglease
  fi
  [[ -x $PGLEASE_BIN ]] || die "pglease binary not found at $PGLEASE_BIN"
}

# Credentials of the `bench` pool. `static` logs in as the role `bench`; `issuer` makes pglease
# create a short-lived member of `bench` per lease, as the cluster's superuser.
credentials_toml() {
  if [[ $1 == issuer ]]; then
    cat <<EOF
[credentials.bench]
source = "issuer"
admin_url = "postgresql://postgres:$ADMIN_PASSWORD@127.0.0.1:$PG_PORT/bench"
member_of = ["bench"]
ttl = "$ROT_TTL"
max_ttl = "$ROT_MAX_TTL"
rotate_at = $ROT_AT
safety_margin = "$ROT_MARGIN"
prefix = "$ROT_PREFIX"
EOF
  else
    cat <<EOF
[credentials.bench]
source = "static"
username = "bench"
password = "$BENCH_PASSWORD"
EOF
  fi
}

# Starts pglease with `static` (default) or `issuer` credentials; config and log are named
# after $2, so each run of the rotation scenario keeps its own.
start_pglease() {
  local kind=${1:-static} name=${2:-pglease}
  PGLEASE_PORT=$(free_port)
  PGLEASE_LOG=$TMP/$name.log
  {
    cat <<EOF
[proxy]
listen = "127.0.0.1:$PGLEASE_PORT"
${PGLEASE_WORKERS:+workers = $PGLEASE_WORKERS}
${PGLEASE_EXTRA:-}

[[users]]
name = "bench"
password = "$BENCH_VERIFIER"

[[databases]]
name = "bench"
host = "127.0.0.1"
port = $PG_PORT
dbname = "bench"
pool_mode = "$MODE"
pool_size = $POOL_SIZE
credentials = "bench"

EOF
    credentials_toml "$kind"
  } >"$TMP/$name.toml"
  chmod 600 "$TMP/$name.toml"
  local preload
  local -a preload_env=()
  preload=$(preload_path "${PGLEASE_RUN_PRELOAD-$PGLEASE_LD_PRELOAD}")
  if [[ -n $preload ]]; then preload_env=(LD_PRELOAD="$preload"); fi
  # env execs pglease, so $! is pglease's own pid.
  env "${preload_env[@]}" "${PGLEASE_RUN_BIN:-$PGLEASE_BIN}" \
    --config "$TMP/$name.toml" >"$PGLEASE_LOG" 2>&1 &
  PGLEASE_PID=$!
  wait_port "$PGLEASE_PORT" "$PGLEASE_PID" pglease
  if [[ -n $preload ]] && ! grep -qF "$(readlink -f "$preload")" "/proc/$PGLEASE_PID/maps"; then
    die "$name runs without $preload mapped: LD_PRELOAD did not take"
  fi
  log "pglease pid $PGLEASE_PID on port $PGLEASE_PORT${preload:+ (LD_PRELOAD $preload)}"
}

# The shared library for an allocator name (glibc or empty: none; jemalloc; mimalloc) or a
# path, checked to exist.
preload_path() {
  local want=$1 lib=""
  case $want in
    "" | glibc) return 0 ;;
    jemalloc) lib=libjemalloc.so.2 ;;
    mimalloc) lib=libmimalloc.so.2 ;;
    */*) [[ -r $want ]] || die "LD_PRELOAD library $want not found"; echo "$want"; return 0 ;;
    *) die "unknown allocator '$want' (glibc, jemalloc, mimalloc or a path)" ;;
  esac
  want=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
  [[ -n $want ]] || die "$lib not found (Debian: apt-get install libjemalloc2 libmimalloc2.0)"
  echo "$want"
}

# The allocator a pglease target runs with, for the report.
allocator_of() {
  local a
  if [[ $1 == pglease-base ]]; then a=$PGLEASE_BASE_LD_PRELOAD; else a=$PGLEASE_LD_PRELOAD; fi
  case $a in
    "" | glibc) echo glibc ;;
    */*) basename "$a" ;;
    *) echo "$a" ;;
  esac
}

# The pglease-tls target: another pglease on static credentials serving TLS only, with a
# self-signed certificate (pgbench's sslmode=require does not verify it).
start_pglease_tls() {
  local port=$PGLEASE_PORT pid=$PGLEASE_PID log=$PGLEASE_LOG
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -keyout "$TMP/tls.key" -out "$TMP/tls.crt" >/dev/null 2>&1 ||
    die "openssl could not make the test certificate"
  PGLEASE_EXTRA=$(printf 'client_tls = "require"\nclient_tls_cert = "%s"\nclient_tls_key = "%s"' \
    "$TMP/tls.crt" "$TMP/tls.key") start_pglease static pglease-tls
  PGLEASE_TLS_PORT=$PGLEASE_PORT PGLEASE_TLS_PID=$PGLEASE_PID
  PGLEASE_PORT=$port PGLEASE_PID=$pid PGLEASE_LOG=$log
}

# The pglease-base target: the plain pglease config, run by PGLEASE_BASE_BIN.
start_pglease_base() {
  local port=$PGLEASE_PORT pid=$PGLEASE_PID log=$PGLEASE_LOG
  [[ -x $PGLEASE_BASE_BIN ]] || die "pglease-base needs PGLEASE_BASE_BIN, an executable pglease build"
  PGLEASE_RUN_BIN=$PGLEASE_BASE_BIN PGLEASE_RUN_PRELOAD=$PGLEASE_BASE_LD_PRELOAD \
    start_pglease static pglease-base
  PGLEASE_BASE_PORT=$PGLEASE_PORT PGLEASE_BASE_PID=$PGLEASE_PID
  PGLEASE_PORT=$port PGLEASE_PID=$pid PGLEASE_LOG=$log
}

# The pglease-scraped target: another pglease on static credentials with its admin endpoint
# on, scraped during its runs (see scrape_loop).
start_pglease_scraped() {
  local port=$PGLEASE_PORT pid=$PGLEASE_PID log=$PGLEASE_LOG
  SCRAPED_ADMIN_PORT=$(free_port)
  PGLEASE_EXTRA="admin_listen = \"127.0.0.1:$SCRAPED_ADMIN_PORT\"" start_pglease static pglease-scraped
  PGLEASE_SCRAPED_PORT=$PGLEASE_PORT PGLEASE_SCRAPED_PID=$PGLEASE_PID
  PGLEASE_PORT=$port PGLEASE_PID=$pid PGLEASE_LOG=$log
  wait_port "$SCRAPED_ADMIN_PORT" "$PGLEASE_SCRAPED_PID" "pglease admin endpoint"
}

# Fetches /metrics every SCRAPE_MS ms until killed, appending one line per answered scrape
# (its status line) to $1, so the report can say how many scrapes the run really had.
scrape_loop() {
  local out=$1 pause
  pause=$(awk -v ms="$SCRAPE_MS" 'BEGIN {printf "%.3f", ms / 1000}')
  while :; do
    # In the background, so a slow answer does not stretch the interval.
    { curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 \
      "http://127.0.0.1:$SCRAPED_ADMIN_PORT/metrics" >>"$out" 2>/dev/null || echo fail >>"$out"; } &
    sleep "$pause"
  done
}

# ---- PgBouncer -----------------------------------------------------------------------------
# PGBOUNCER_BIN names the binary (a build of a newer release, say); PATH's otherwise.
PGBOUNCER_BIN=${PGBOUNCER_BIN:-pgbouncer}
find_pgbouncer() {
  command -v "$PGBOUNCER_BIN" >/dev/null 2>&1 && return 0
  [[ $PGBOUNCER_BIN == pgbouncer ]] || die "PGBOUNCER_BIN=$PGBOUNCER_BIN is not executable"
  if [[ $BENCH_INSTALL == 1 ]]; then
    log "installing pgbouncer (BENCH_INSTALL=1)"
    apt-get install -y pgbouncer >/dev/null || die "apt-get install pgbouncer failed"
    command -v pgbouncer >/dev/null 2>&1 && return 0
  fi
  return 1
}

start_pgbouncer() {
  local dir=$TMP/pgbouncer version extra=""
  mkdir -p "$dir"
  PGBOUNCER_PORT=$(free_port)
  # The same SCRAM verifier PostgreSQL holds (and pglease's [[users]] entry): PgBouncer then
  # authenticates the client and reuses the client's SCRAM keys for its own upstream login,
  # with no plaintext on disk.
  printf '"bench" "%s"\n' "$BENCH_VERIFIER" >"$dir/userlist.txt"
  version=$("$PGBOUNCER_BIN" --version | awk 'NR == 1 {print $2}')
  PGBOUNCER_VERSION=$version
  # Protocol-level prepared statements in transaction mode arrived in PgBouncer 1.21.
  local prepared_ok=0
  printf '1.21\n%s\n' "$version" | sort -V -C && prepared_ok=1
  if [[ -z $PGBOUNCER_PROTOCOL ]]; then
    PGBOUNCER_PROTOCOL=$PROTOCOL
    if [[ $PROTOCOL == prepared && $MODE == transaction ]] && ((!prepared_ok)); then
      PGBOUNCER_PROTOCOL=extended
      log "pgbouncer $version cannot serve -M prepared in transaction mode: it runs -M extended"
    fi
  fi
  if [[ $PGBOUNCER_PROTOCOL == prepared ]] && ((prepared_ok)); then
    extra="max_prepared_statements = 200"
  fi
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = $MODE
default_pool_size = $POOL_SIZE
max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-200}
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
$extra
EOF
  chmod 600 "$dir/userlist.txt" "$dir/pgbouncer.ini"
  give_to_pg "$dir"
  # runuser's PAM session puts the soft RLIMIT_NOFILE back to 1024, which would cap PgBouncer
  # at about 1000 clients: it starts with the soft limit raised to the hard one.
  # shellcheck disable=SC2016
  as_pg bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"' "$PGBOUNCER_BIN" -d -q \
    "$dir/pgbouncer.ini" || die "pgbouncer failed to start"
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $dir/pgbouncer.pid ]] && break
    sleep 0.1
  done
  PGBOUNCER_PID=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
  [[ -n $PGBOUNCER_PID ]] || die "pgbouncer wrote no pidfile"
  wait_port "$PGBOUNCER_PORT" "$PGBOUNCER_PID" pgbouncer
  log "pgbouncer $version pid $PGBOUNCER_PID on port $PGBOUNCER_PORT"
}

# ---- measuring -----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# utime+stime in clock ticks, summed over all threads (the kernel aggregates them in the
# thread-group leader's stat). The comm field may hold spaces, so fields are counted after ')'.
cpu_ticks() {
  local pid=$1 stat rest f
  [[ -n $pid && -r /proc/$pid/stat ]] || { echo 0; return; }
  stat=$(</proc/"$pid"/stat)
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}

target_port() {
  case $1 in
    direct) echo "$PG_PORT" ;;
    pglease) echo "$PGLEASE_PORT" ;;
    pglease-tls) echo "$PGLEASE_TLS_PORT" ;;
    pglease-scraped) echo "$PGLEASE_SCRAPED_PORT" ;;
    pglease-base) echo "$PGLEASE_BASE_PORT" ;;
    pgbouncer) echo "$PGBOUNCER_PORT" ;;
  esac
}
target_pid() {
  case $1 in
    pglease) echo "$PGLEASE_PID" ;;
    pglease-tls) echo "$PGLEASE_TLS_PID" ;;
    pglease-scraped) echo "$PGLEASE_SCRAPED_PID" ;;
    pglease-base) echo "$PGLEASE_BASE_PID" ;;
    pgbouncer) echo "$PGBOUNCER_PID" ;;
    *) echo "" ;;
  esac
}

# The pgbench -M a target is run with: PROTOCOL, or PGBOUNCER_PROTOCOL for PgBouncer.
target_protocol() {
  if [[ ${1:-} == pgbouncer ]]; then echo "${PGBOUNCER_PROTOCOL:-$PROTOCOL}"; else echo "$PROTOCOL"; fi
}

# libpq's sslmode for target $1: TLS for pglease-tls only, plaintext everywhere else.
target_sslmode() {
  if [[ $1 == pglease-tls ]]; then echo require; else echo disable; fi
}

# pgbench's arguments for target $1 (pglease when left out).
pgbench_args() {
  local args=(-n -c "$CLIENTS" -j "$THREADS" -M "$(target_protocol "${1:-pglease}")")
  if [[ $SCENARIO == select || $SCENARIO == connect || ($SCENARIO == rotation && $ROTATION_WORKLOAD == select) ]]; then
    args+=(-S)
  fi
  # A new connection, so a SCRAM login to the target, for every transaction.
  if [[ $SCENARIO == connect ]]; then args+=(-C); fi
  if ((RATE > 0)); then args+=(-R "$RATE"); fi
  printf '%s\n' "${args[@]}"
}

# pgbench's TPS: "without initial connection time", or with -C "including reconnection times"
# (there every transaction is one connection, so it is also the connect rate).
pgbench_tps() {
  awk '/^tps = .*(without initial connection time|including reconnection times)/ {print $3}' "$1"
}

# One measured run. Appends "target round tps latency_ms txns failed cpu_ticks exit" to
# $TMP/results; a run that aborted still records what pgbench printed, flagged by its exit.
run_one() {
  local target=$1 round=$2 port pid out before after rc=0 tps lat txns failed
  port=$(target_port "$target")
  pid=$(target_pid "$target")
  out=$TMP/run-$target-$round.log
  local -a args
  mapfile -t args < <(pgbench_args "$target")
  if [[ $target == pglease-scraped ]]; then
    scrape_loop "$TMP/scrapes-$round" &
    SCRAPER_PID=$!
  fi
  before=$(cpu_ticks "$pid")
  PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=$(target_sslmode "$target") "$PGBENCH" "${args[@]}" \
    -T "$DURATION" -h 127.0.0.1 -p "$port" -U bench bench >"$out" 2>&1 || rc=$?
  after=$(cpu_ticks "$pid")
  if [[ -n $SCRAPER_PID ]]; then
    stop_pid "$SCRAPER_PID"
    SCRAPER_PID=""
  fi
  if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
    die "$target (pid $pid) died during round $round; pgbench said: $(grep -m 1 -i error "$out")"
  fi
  tps=$(pgbench_tps "$out")
  lat=$(awk '/^latency average = / {print $4}' "$out")
  txns=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]}' "$out")
  failed=$(awk -F': ' '/^number of failed transactions/ {split($2, a, " "); print a[1]}' "$out")
  printf '%s %s %s %s %s %s %s %s\n' "$target" "$round" "${tps:-0}" "${lat:-0}" "${txns:-0}" \
    "${failed:-0}" "$((after - before))" "$rc" >>"$TMP/results"
  if ((rc != 0)); then
    loud "pgbench against $target (round $round) exited with $rc; its first errors:"
    grep -m 3 -i 'error' "$out" >&2 || tail -n 5 "$out" >&2
  fi
  log "round $round $target: tps=${tps:-?} latency=${lat:-?}ms"
}

warm_up() {
  local target port
  local -a args
  for target in "$@"; do
    mapfile -t args < <(pgbench_args "$target")
    port=$(target_port "$target")
    log "warm-up ${WARMUP}s: $target"
    PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=$(target_sslmode "$target") "$PGBENCH" "${args[@]}" \
      -T "$WARMUP" -h 127.0.0.1 -p "$port" -U bench bench >"$TMP/warmup-$target.log" 2>&1 || true
  done
}

# Round r runs the targets rotated left by r-1, so each target takes each place in the
# order in turn and no one of them always runs first (cold) or last (after the others' load).
run_rounds() {
  local -a targets=("$@")
  local n=${#targets[@]} r i
  : >"$TMP/results"
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      run_one "${targets[$(((i + r - 1) % n))]}" "$r"
    done
  done
}

# ==== ROTATION SCENARIO =====================================================================
# Two pglease runs against the same cluster, alternating in order from round to round:
# `steady` on static credentials, and `rotating` on the embedded issuer with a short lease
# replaced at half its life, so a 60 s run crosses about a dozen rotations. `pgbench -P 1`
# gives one TPS figure per second: a rotation that stalls the pool shows as a dip in the
# rotating run's worst second, one that breaks connections as failed transactions or aborted
# clients. Direct and PgBouncer have nothing to rotate, so this scenario runs pglease alone.
ROT_PREFIX=benchrot
ROT_TTL_S=10
ROT_AT=0.5
ROT_MAX_TTL=2m
ROT_MARGIN=2s
ROT_TTL=${ROT_TTL_S}s

# Unions, once a second, the issued roles logged in to PostgreSQL. pglease drops each role
# once its connections have drained, so pg_roles at the end would show only the last one.
sample_issued_roles() {
  local out=$1
  while :; do
    pg_admin_sql "SELECT DISTINCT usename FROM pg_stat_activity WHERE usename LIKE '${ROT_PREFIX}\\_%'" \
      >>"$out" 2>/dev/null || true
    sleep 1
  done
}

# One run on a fresh pglease: warm-up, then the measured pgbench -P 1. Appends "run round
# median worst worst_at max_lat tps failed aborted roles issued revoked exit" to
# $TMP/rotation-results and the kept seconds ("t tps lat") to $TMP/seconds-<run>-<round>.
rotation_run() {
  local run=$1 round=$2 creds=static rc=0
  local out=$TMP/rotation-$1-$2.log roles=$TMP/roles-$1-$2 secs=$TMP/seconds-$1-$2
  [[ $run == rotating ]] && creds=issuer
  local -a args
  mapfile -t args < <(pgbench_args)
  start_pglease "$creds" "pglease-$run-$round"
  if ((WARMUP > 0)); then
    log "warm-up ${WARMUP}s: $run"
    PGPASSWORD=$BENCH_PASSWORD "$PGBENCH" "${args[@]}" -T "$WARMUP" -h 127.0.0.1 \
      -p "$PGLEASE_PORT" -U bench bench >"$TMP/warmup-$run-$round.log" 2>&1 || true
  fi
  : >"$roles"
  # Both runs sample, so the sampler's own cost (a psql every second) weighs on both alike.
  sample_issued_roles "$roles" &
  SAMPLER_PID=$!
  log "round $round $run: pgbench -T $DURATION -P 1"
  local t0
  t0=$(date +%s.%N)
  PGPASSWORD=$BENCH_PASSWORD "$PGBENCH" "${args[@]}" -T "$DURATION" -P 1 -h 127.0.0.1 \
    -p "$PGLEASE_PORT" -U bench bench >"$out" 2>&1 || rc=$?
  stop_pid "$SAMPLER_PID"
  SAMPLER_PID=""
  kill -0 "$PGLEASE_PID" 2>/dev/null ||
    die "pglease ($run) died during round $round; pgbench said: $(grep -m 1 -i error "$out")"
  stop_pid "$PGLEASE_PID"
  PGLEASE_PID=""

  # Seconds 1-2 (connecting, pool filling) and the last one (clients stopping) are noise.
  awk -v d="$DURATION" '/^progress: / {t = $2 + 0; if (t > 2 && t <= d - 1) print t, $4, $7}' \
    "$out" >"$secs"
  local med worst tps failed aborted nroles issued=- revoked=-
  med=$(awk '{print $2}' "$secs" | median)
  worst=$(sort -g -k2,2 "$secs" | awk 'NR == 1 {print $2, $1} END {if (NR == 0) print "0 -"}' | head -n 1)
  worst+=" "$(awk '$3 > m {m = $3} END {print m + 0}' "$secs")
  tps=$(pgbench_tps "$out")
  failed=$(awk -F': ' '/^number of failed transactions/ {split($2, a, " "); print a[1]}' "$out")
  aborted=$(grep -cE 'client [0-9]+ .*abort' "$out" || true)
  nroles=$(sort -u "$roles" | grep -c . || true)
  if [[ $run == rotating ]]; then
    # Whole pglease lifetime, warm-up included: revoked close behind issued means old roles
    # really are dropped once drained.
    issued=$(grep -c 'lease issued' "$PGLEASE_LOG" || true)
    revoked=$(grep -c 'lease revoked' "$PGLEASE_LOG" || true)
    rotation_seconds "$t0" "$secs" "$TMP/published-$run-$round" >"$TMP/near-$run-$round"
  fi
  printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$run" "$round" "${med:-0}" "$worst" "${tps:-0}" \
    "${failed:-0}" "${aborted:-0}" "$nroles" "$issued" "$revoked" "$rc" >>"$TMP/rotation-results"
  if ((rc != 0)); then
    loud "pgbench against pglease ($run, round $round) exited with $rc; its first errors:"
    grep -m 3 -i 'error' "$out" >&2 || tail -n 5 "$out" >&2
  fi
  log "round $round $run: median ${med:-?} tps, worst second ${worst%% *} tps"
}

# Splits the kept seconds of a rotating run into those within 2 s after a rotation ("1 tps")
# and the rest ("0 tps"), so a cost of rotating stands out from the machine's noise. The
# rotation times are the `lease published` audit lines, taken relative to pgbench's start.
rotation_seconds() {
  local t0=$1 secs=$2 published=$3 ts
  sed 's/\x1b\[[0-9;]*m//g' "$PGLEASE_LOG" | awk '/lease published/ {print $1}' |
    while read -r ts; do
      date -d "$ts" +%s.%N 2>/dev/null || true
    done | awk -v t0="$t0" '{print $1 - t0}' >"$published"
  awk 'NR == FNR {p[NR] = $1; n = NR; next}
       {near = 0; for (i = 1; i <= n; i++) if (p[i] > $1 - 2 && p[i] <= $1) near = 1; print near, $2}' \
    "$published" "$secs"
}

scenario_rotation() {
  ADMIN_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  # initdb's pg_hba.conf asks for SCRAM on 127.0.0.1; the issuer logs in there as postgres.
  pg_admin_sql "ALTER ROLE postgres PASSWORD '$ADMIN_PASSWORD'"
  PGPASSWORD=$ADMIN_PASSWORD "$PSQL" -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench \
    -c 'SELECT 1' >/dev/null || die "the superuser cannot log in over TCP with its password"
  log "SCENARIO=rotation: steady (static) vs rotating (issuer, ttl $ROT_TTL, rotate_at $ROT_AT);" \
    "WORKLOAD=$ROTATION_WORKLOAD CLIENTS=$CLIENTS THREADS=$THREADS POOL_SIZE=$POOL_SIZE" \
    "DURATION=${DURATION}s ROUNDS=$ROUNDS; $(nproc) CPUs"
  : >"$TMP/rotation-results"
  local r
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then
      rotation_run steady "$r"
      rotation_run rotating "$r"
    else
      rotation_run rotating "$r"
      rotation_run steady "$r"
    fi
  done
  rotation_report
}

# Reads "count values..." for the seconds near a rotation, then for the others.
rotation_split_line() {
  local near other mn mo
  read -r -a near
  read -r -a other
  mn=$(printf '%s\n' "${near[@]:1}" | grep . | median)
  mo=$(printf '%s\n' "${other[@]:1}" | grep . | median)
  awk -v a="$mn" -v b="$mo" -v na="${near[0]:-0}" -v nb="${other[0]:-0}" 'BEGIN {
    printf "rotating: median TPS of the %d s within 2 s after a rotation / of the other %d s = %.3f\n",
      na, nb, (b > 0 ? a / b : 0)
  }'
}

rotation_report() {
  local res=$TMP/rotation-results args steady_med worst failed aborted roles_min
  args=$(pgbench_args | tr '\n' ' ')
  printf '\npgbench %s-T %s -P 1, %s round(s); MODE=%s POOL_SIZE=%s; PostgreSQL %s; pgbouncer %s (not run: nothing to rotate); %s CPUs\n' \
    "$args" "$DURATION" "$ROUNDS" "$MODE" "$POOL_SIZE" "$("$PSQL" --version | awk '{print $3}')" \
    "$(pgbouncer_label)" "$(nproc)"
  printf 'steady: static credentials; rotating: issuer, ttl %s, rotate_at %s, safety_margin %s, max_ttl %s\n' \
    "$ROT_TTL" "$ROT_AT" "$ROT_MARGIN" "$ROT_MAX_TTL"
  printf 'per-second figures leave out seconds 1-2 and the last one\n'
  printf '%-9s %5s %10s %12s %5s %11s %11s %7s %7s %11s\n' run round "median tps" "worst 1s tps" "at s" \
    "max lat ms" "pgbench tps" failed aborted "roles seen"
  awk '{printf "%-9s %5s %10.0f %12.0f %5s %11.1f %11.0f %7s %7s %11s%s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9,
        ($1 == "rotating" ? $10 : "-"), ($13 != 0 ? "  (pgbench exit " $13 ")" : "")}' "$res"
  awk '$1 == "rotating" {printf "pglease log, rotating round %s: %s leases issued, %s revoked (warm-up included)\n", $2, $11, $12}' "$res"
  # Pooled over rounds: the steady median of every kept second, the rotating run's single worst.
  steady_med=$(cat "$TMP"/seconds-steady-* | awk '{print $2}' | median)
  worst=$(cat "$TMP"/seconds-rotating-* | awk '{print $2}' | sort -g | head -n 1)
  failed=$(awk '$1 == "rotating" {s += $8} END {print s + 0}' "$res")
  aborted=$(awk '$1 == "rotating" {s += $9} END {print s + 0}' "$res")
  roles_min=$(awk '$1 == "rotating" && (m == "" || $10 < m) {m = $10} END {print m + 0}' "$res")
  echo
  awk -v w="${worst:-0}" -v m="$steady_med" -v f="$failed" 'BEGIN {
    r = (m > 0 ? w / m : 0)
    printf "rotation: worst 1s TPS / steady median = %.3f (target >= 0.95), failed = %d (target 0)%s\n",
      r, f, (r >= 0.95 && f == 0 ? "" : "  <- MISSED")
  }'
  cat "$TMP"/near-rotating-* | awk '{v[$1] = v[$1] " " $2; n[$1]++} END {print n[1] + 0, v[1]; print n[0] + 0, v[0]}' |
    rotation_split_line
  # The same ratio with no rotation at all: how much a second dips on this machine anyway.
  cat "$TMP"/seconds-steady-* | awk '{print $2}' | sort -g | head -n 1 |
    awk -v m="$steady_med" -v rate="$RATE" '{
      r = (m > 0 ? $1 / m : 0)
      printf "steady:   worst 1s TPS / steady median = %.3f (noise floor, no rotation)\n", r
      if (r < 0.95 && rate == 0)
        print "steady:   noise floor below 0.95: the target line cannot tell a rotation from noise here; rerun with RATE (benches/README.md)"
    }'
  printf 'rotation: aborted clients = %s (target 0), issued roles seen per run >= %s (about %s expected)\n' \
    "$aborted" "$roles_min" \
    "$(awk -v d="$DURATION" -v t="$ROT_TTL_S" -v a="$ROT_AT" 'BEGIN {printf "%d", d / (t * a) + 1}')"
  if [[ -n $SUMMARY_FILE ]]; then
    # label, worst/steady, steady median, worst second, failed, aborted, rounds, pgbouncer,
    # rate, and the steady runs' own worst second / their median (the noise floor)
    local floor
    floor=$(cat "$TMP"/seconds-steady-* | awk '{print $2}' | sort -g | head -n 1)
    awk -v l="$SUMMARY_LABEL" -v w="${worst:-0}" -v m="$steady_med" -v f="$failed" -v a="$aborted" \
      -v r="$ROUNDS" -v v="$(pgbouncer_label)" -v rate="$RATE" -v fl="${floor:-0}" 'BEGIN {
        printf "%s\t%.3f\t%.0f\t%.0f\t%d\t%d\t%s\t%s\t%s\t%.3f\n", l, (m > 0 ? w / m : 0), m, w, f, a, r, v,
          rate, (m > 0 ? fl / m : 0)
      }' >>"$SUMMARY_FILE"
  fi
}
# ============================================================================================

# ---- report --------------------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -v t="$1" -v c="$2" '$1 == t {print $c}' "$TMP/results"; }

report() {
  local -a targets=("$@")
  local t r header="target         " args
  args=$(pgbench_args | tr '\n' ' ')
  printf '\npgbench %s-T %s, %s round(s); MODE=%s POOL_SIZE=%s; PostgreSQL %s; pgbouncer %s; %s CPUs\n' \
    "$args" "$DURATION" "$ROUNDS" "$MODE" "$POOL_SIZE" "$("$PSQL" --version | awk '{print $3}')" \
    "$(pgbouncer_label)" "$(nproc)"
  printf 'pglease: workers %s, allocator %s' "${PGLEASE_WORKERS:-one per CPU}" "$(allocator_of pglease)"
  if [[ " ${targets[*]} " == *" pglease-base "* ]]; then
    printf '; pglease-base: %s, allocator %s' "$PGLEASE_BASE_BIN" "$(allocator_of pglease-base)"
  fi
  if [[ $SCENARIO == connect ]]; then
    printf '; -C: every transaction is a new connection with a SCRAM login, so tps = connections/s'
  fi
  echo
  header+=$(printf ' %-9s' "-M")
  for ((r = 1; r <= ROUNDS; r++)); do header+=$(printf ' %9s ' "r$r tps"); done
  printf '%s %11s %10s %11s %7s %7s\n' "$header" "median tps" "lat ms" "cpu us/txn" failed aborted
  declare -gA MED_TPS=() CPU_US=()
  for t in "${targets[@]}"; do
    local line
    line=$(printf '%-15s %-9s' "$t" "$(target_protocol "$t")")
    for ((r = 1; r <= ROUNDS; r++)); do
      line+=$(awk -v t="$t" -v r="$r" '$1 == t && $2 == r {printf " %9.0f%s", $3, ($8 != 0 ? "!" : " ")}' "$TMP/results")
    done
    MED_TPS[$t]=$(col "$t" 3 | median)
    local lat failed aborted ticks txns cpu="-"
    lat=$(col "$t" 4 | median)
    failed=$(col "$t" 6 | awk '{s += $1} END {print s + 0}')
    aborted=$(col "$t" 8 | awk '$1 != 0 {n++} END {print n + 0}')
    # CPU is pooled over all rounds: per run it is only a few hundred 10 ms ticks.
    if [[ -n $(target_pid "$t") ]]; then
      ticks=$(col "$t" 7 | awk '{s += $1} END {print s + 0}')
      txns=$(col "$t" 5 | awk '{s += $1} END {print s + 0}')
      cpu=$(awk -v k="$ticks" -v n="$txns" -v hz="$CLK_TCK" 'BEGIN {if (n > 0) printf "%.1f", k / hz * 1e6 / n; else print "-"}')
    fi
    # shellcheck disable=SC2034 # read by `ratio` through a name reference
    CPU_US[$t]=$cpu
    printf '%s %11.0f %10.3f %11s %7s %7s\n' "$line" "${MED_TPS[$t]}" "$lat" "$cpu" "$failed" "$aborted"
  done
  echo
  local versus=""
  if [[ $(target_protocol pglease) != $(target_protocol pgbouncer) ]]; then
    versus=" (pglease -M $(target_protocol pglease), pgbouncer -M $(target_protocol pgbouncer))"
  fi
  local pgb=pgbouncer${PGBOUNCER_VERSION:+ $PGBOUNCER_VERSION}
  ratio pglease pgbouncer "pglease/$pgb tps$versus" MED_TPS
  ratio pglease direct "pglease/direct    tps" MED_TPS
  ratio pglease pgbouncer "pglease/$pgb cpu/txn" CPU_US
  if [[ " ${targets[*]} " == *" pglease-tls "* ]]; then
    ratio pglease-tls pglease "pglease tls/plain  tps" MED_TPS
    ratio pglease-tls pglease "pglease tls/plain  cpu/txn" CPU_US
  fi
  if [[ " ${targets[*]} " == *" pglease-base "* ]]; then
    ratio pglease pglease-base "pglease/pglease-base tps" MED_TPS
    ratio pglease pglease-base "pglease/pglease-base cpu/txn" CPU_US
  fi
  if [[ " ${targets[*]} " == *" pglease-scraped "* ]]; then
    ratio pglease-scraped pglease "pglease scraped/plain tps (every ${SCRAPE_MS} ms)" MED_TPS
    ratio pglease-scraped pglease "pglease scraped/plain cpu/txn" CPU_US
    local answered failed_scrapes
    answered=$(cat "$TMP"/scrapes-* 2>/dev/null | grep -c '^200$' || true)
    failed_scrapes=$(cat "$TMP"/scrapes-* 2>/dev/null | grep -vc '^200$' || true)
    printf 'scrapes during pglease-scraped runs: %s answered 200, %s not\n' "$answered" "$failed_scrapes"
  fi
  summary_line
}

# PgBouncer's version, or why it did not run: printed beside every figure that involves it.
pgbouncer_label() {
  if [[ -n $PGBOUNCER_VERSION ]]; then echo "$PGBOUNCER_VERSION"; else echo "${MISSING[pgbouncer]:-not run}"; fi
}

# One tab-separated line for benches/issue-figures.sh: label; pglease and pgbouncer median
# TPS and their ratio; pglease and pgbouncer CPU per transaction and their ratio; rounds; the
# pgbouncer version; the -M of each; failed transactions/aborted runs of the two; workers;
# pglease/pglease-base TPS and CPU ratios ("-" without pglease-base).
summary_line() {
  [[ -n $SUMMARY_FILE ]] || return 0
  local bad
  bad=$(awk '($1 == "pglease" || $1 == "pgbouncer") {f += $6; if ($8 != 0) n++} END {print f + 0 "/" n + 0}' "$TMP/results")
  {
    printf '%s' "$SUMMARY_LABEL"
    summary_pair pglease pgbouncer
    printf '\t%s\t%s\t%s\t%s\t%s\t%s' "$ROUNDS" "$(pgbouncer_label)" "$(target_protocol pglease)" \
      "$(target_protocol pgbouncer)" "$bad" "${PGLEASE_WORKERS:-auto}"
    printf '\t%s\t%s\n' "$(ratio_value "${MED_TPS[pglease]:-}" "${MED_TPS[pglease-base]:-}")" \
      "$(ratio_value "${CPU_US[pglease]:-}" "${CPU_US[pglease-base]:-}")"
  } >>"$SUMMARY_FILE"
}

# "\ttps_a\ttps_b\tratio\tcpu_a\tcpu_b\tratio" for targets $1 and $2, "-" where one is missing.
summary_pair() {
  local a=${MED_TPS[$1]:-} b=${MED_TPS[$2]:-}
  printf '\t%s\t%s\t%s\t%s\t%s\t%s' "$(awk -v x="${a:--}" 'BEGIN {print (x == "-" ? x : sprintf("%.0f", x))}')" \
    "$(awk -v x="${b:--}" 'BEGIN {print (x == "-" ? x : sprintf("%.0f", x))}')" "$(ratio_value "$a" "$b")" \
    "${CPU_US[$1]:--}" "${CPU_US[$2]:--}" "$(ratio_value "${CPU_US[$1]:-}" "${CPU_US[$2]:-}")"
}

# x / y to three places, or "-" when either is missing ("" or "-") or y is 0.
ratio_value() {
  awk -v x="${1:--}" -v y="${2:--}" 'BEGIN {print (x != "-" && y != "-" && y > 0 ? sprintf("%.3f", x / y) : "-")}'
}

ratio() {
  local a=$1 b=$2 label=$3
  local -n values=$4
  local va=${values[$a]:-} vb=${values[$b]:-}
  if [[ -z $va || $va == - ]]; then printf '%s: n/a (%s: %s)\n' "$label" "$a" "${MISSING[$a]:-not run}"; return; fi
  if [[ -z $vb || $vb == - ]]; then printf '%s: n/a (%s: %s)\n' "$label" "$b" "${MISSING[$b]:-not run}"; return; fi
  awk -v x="$va" -v y="$vb" -v l="$label" 'BEGIN {if (y > 0) printf "%s: %.3f\n", l, x / y; else printf "%s: n/a\n", l}'
}

# ---- main ----------------------------------------------------------------------------------
main() {
  validate_knobs
  find_pg_bin
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/pglease-bench.XXXXXX")
  chmod 755 "$TMP"
  declare -gA MISSING=()
  local -a want run=()
  read -r -a want <<<"$TARGETS"
  ((${#want[@]} > 0)) || die "TARGETS is empty"
  local t
  for t in "${want[@]}"; do
    [[ $t =~ ^(direct|pglease|pglease-tls|pglease-scraped|pglease-base|pgbouncer)$ ]] || die "unknown target '$t' in TARGETS"
  done
  if [[ $SCENARIO == rotation ]]; then
    # Only named in the report: the scenario runs pglease alone.
    if find_pgbouncer; then
      PGBOUNCER_VERSION=$("$PGBOUNCER_BIN" --version | awk 'NR == 1 {print $2}')
    else
      MISSING[pgbouncer]="not installed"
    fi
    build_pglease
    start_postgres
    scenario_rotation
    return
  fi
  if [[ " ${want[*]} " == *" pgbouncer "* ]] && ! find_pgbouncer; then
    MISSING[pgbouncer]="not installed"
    loud "pgbouncer: not installed (apt-get install pgbouncer, or BENCH_INSTALL=1); running without it"
  fi

  if [[ " ${want[*]} " == *" pglease"* ]]; then
    build_pglease
  fi
  start_postgres
  for t in "${want[@]}"; do
    case $t in
      pglease) start_pglease ;;
      pglease-tls) start_pglease_tls ;;
      pglease-scraped) start_pglease_scraped ;;
      pglease-base) start_pglease_base ;;
      pgbouncer) [[ -n ${MISSING[pgbouncer]:-} ]] && continue; start_pgbouncer ;;
    esac
    run+=("$t")
  done

  log "targets: ${run[*]}; MODE=$MODE PROTOCOL=$PROTOCOL SCENARIO=$SCENARIO CLIENTS=$CLIENTS" \
    "THREADS=$THREADS POOL_SIZE=$POOL_SIZE DURATION=${DURATION}s ROUNDS=$ROUNDS; $(nproc) CPUs"
  if ((WARMUP > 0)); then warm_up "${run[@]}"; fi
  run_rounds "${run[@]}"
  report "${run[@]}"
}

# Sourced by benches/idle_clients.sh for its helpers: run only when executed.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
