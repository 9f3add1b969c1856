#!/usr/bin/env bash
# Load and memory benchmark of authgate beside nginx and HAProxy, measured in one run so every
# figure can be read as a ratio to the nginx plain-proxy row of the same run.
#
#   bash benches/load/run.sh            # full run: release build, ~6 minutes
#   bash benches/load/run.sh --smoke    # proves the script works: debug binary, 1 s per row, < 60 s
#
# Options (full run defaults in brackets): --duration S [10] seconds per row at 32 connections,
# --duration1 S [5] at 1 connection, --warmup S [2], --mem-conns N [10000], --no-micro (skip the
# micro benchmarks), --rows a,b,c (only these row ids; the nginx row is always kept).
# Environment: SERVER_CPU [0] and CLIENT_CPU [1] (taskset cores), BENCH_OUT [target/bench-load].
#
# Read benches/README.md before reading the numbers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
MODE=full
DURATION=10
DURATION1=5
WARMUP=2
MEM_CONNS=10000
MICRO=1
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --duration) DURATION=$2; shift ;;
    --duration1) DURATION1=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --mem-conns) MEM_CONNS=$2; shift ;;
    --no-micro) MICRO=0 ;;
    --rows) ONLY=$2; shift ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$MODE" = smoke ]; then
  # wrk counts whole seconds, so a smoke row is 1 s at 32 connections only, without warm-up.
  DURATION=1; DURATION1=0; WARMUP=0; MEM_CONNS=200; MICRO=0
fi
CONNS=(32)
[ "$DURATION1" -gt 0 ] && CONNS+=(1)

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=$(realpath -m "${BENCH_OUT:-$ROOT/target/bench-load}")  # nginx -p needs absolute paths
W="$OUT/work"
ISSUER="http://bench.authgate.invalid"
T0=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log() { printf '[%3ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "FAILED: $*"; log "logs are in $W"; exit 1; }

# ---------------------------------------------------------------- tools
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=/usr/sbin/nginx
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((MEM_CONNS + 1000)) ] || die "fd limit $(ulimit -n) is too low for $MEM_CONNS connections"
if [ "$(nproc)" -lt 2 ]; then
  log "fewer than 2 cores: load generator and servers will share one (figures less meaningful)"
  CLIENT_CPU=$SERVER_CPU
fi
PIN_S=(taskset -c "$SERVER_CPU")
PIN_C=(taskset -c "$CLIENT_CPU")

# ---------------------------------------------------------------- build
cd "$ROOT"
if [ "$MODE" = smoke ]; then
  # The debug build `cargo test` already made; this is a no-op after it.
  cargo build --locked --quiet --bin authgate --example mint
  BIN="$ROOT/target/debug/authgate"; MINT="$ROOT/target/debug/examples/mint"
else
  log "cargo build --release (minutes on a cold target/)"
  cargo build --locked --release --quiet --bin authgate --example mint
  BIN="$ROOT/target/release/authgate"; MINT="$ROOT/target/release/examples/mint"
fi

rm -rf "$W"; mkdir -p "$W"
RESULTS="$OUT/results.tsv"; MEM="$OUT/memory.tsv"; MICRO_OUT="$OUT/micro.txt"
: > "$RESULTS"; : > "$MEM"; : > "$MICRO_OUT"

# ---------------------------------------------------------------- processes
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NG=$(free_port); NGS=$(free_port); HA=$(free_port)
AG=$(free_port); AGS=$(free_port); ADM=$(free_port)

# $1 pid -> that pid and its children (nginx master + workers)
family() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
# utime+stime in clock ticks, summed over pids
ticks() {
  local total=0 p v
  for p in "$@"; do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# a /proc/PID/status field in kB, summed over pids
status_kb() {
  local field=$1 total=0 p v; shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
wait_http() { # url [expected status] [pid that must stay alive]
  local i
  for i in $(seq 1 200); do
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then die "the server for $1 exited"; fi
    code=$(curl -sk -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)
    if [ -n "${2:-}" ]; then [ "$code" = "$2" ] && return 0; else [ "$code" != 000 ] && return 0; fi
    sleep 0.1
  done
  die "$1 did not answer ${2:-}"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- keys, tokens, certificate
"$MINT" "$W" "$ISSUER"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$W/tls.key" -out "$W/tls.crt" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

# ---------------------------------------------------------------- configs
# The upstream: nginx answering a 2-byte 200 on every path, and the JWKS as a static file.
cat > "$W/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/upstream.pid;
error_log $W/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP;
    location = /jwks.json { default_type application/json; alias $W/jwks.json; }
    location / { return 200 "ok"; }
  }
}
EOF

# nginx as a plain reverse proxy: keep-alive upstream connections, like authgate's pool.
nginx_proxy_conf() { # access_log value, max connections
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
events { worker_connections ${2:-4096}; }
http {
  access_log $1;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream app { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NG;
    listen 127.0.0.1:$NGS ssl;
    ssl_certificate $W/tls.crt;
    ssl_certificate_key $W/tls.key;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

# HAProxy 2.6: verify the RS256 signature on every request (it has no cache), plus alg, iss,
# aud and exp, like authgate's required route.
cat > "$W/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:$HA
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str $ISSUER }
  http-request deny deny_status 401 unless { var(txn.aud) -m str api }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$W/rs256.pub.pem") -m int 1 }
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  default_backend app
backend app
  server up 127.0.0.1:$UP
EOF

# authgate: variant warn (access log off), info (the default level: access log on), nocache
# (token_cache_entries = 0), mem (long idle timeouts and room for the memory benchmark).
authgate_conf() {
  local cache="" server=""
  [ "$1" = nocache ] && cache="token_cache_entries = 0"
  [ "$1" = mem ] && server=$'max_connections = 30000\nheader_read_timeout = "300s"\nidle_timeout = "300s"'
  cat <<EOF
[server]
shutdown_delay = "0s"
$server
[[listener]]
address = "127.0.0.1:$AG"
[[listener]]
address = "127.0.0.1:$AGS"
tls = { cert = "$W/tls.crt", key = "$W/tls.key" }
[admin]
address = "127.0.0.1:$ADM"
[auth]
$cache
[[provider]]
name = "bench"
issuer = "$ISSUER"
jwks_uri = "http://127.0.0.1:$UP/jwks.json"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
[[route]]
name = "public"
path_prefix = "/public"
upstream = "http://127.0.0.1:$UP"
auth = "public"
[[route]]
name = "api"
path_prefix = "/api"
upstream = "http://127.0.0.1:$UP"
EOF
}

# Starts server kind $1; sets SERVER_PID (empty for none).
start_server() {
  SERVER_PID=""
  case "$1" in
    direct) ;;
    nginx|nginx-log|nginx-mem)
      local alog=off conns=4096
      [ "$1" = nginx-log ] && alog="$W/nginx-access.log"
      [ "$1" = nginx-mem ] && conns=30000
      nginx_proxy_conf "$alog" "$conns" > "$W/nginx.conf"
      "${PIN_S[@]}" "$NGINX" -p "$W" -c "$W/nginx.conf" 2>>"$W/nginx.err" &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      wait_http "http://127.0.0.1:$NG/public/ready" 200 "$SERVER_PID" ;;
    haproxy)
      "${PIN_S[@]}" "$HAPROXY" -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      wait_http "http://127.0.0.1:$HA/" 401 "$SERVER_PID" ;;
    ag-*)
      local variant=${1#ag-} level=warn
      [ "$variant" = info ] && level=info
      authgate_conf "$variant" > "$W/authgate.toml"
      "$BIN" check --config "$W/authgate.toml" >/dev/null || die "authgate check refused the config"
      RUST_LOG=$level "${PIN_S[@]}" "$BIN" run --config "$W/authgate.toml" \
        >/dev/null 2>"$W/authgate-$variant.log" &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      wait_http "http://127.0.0.1:$ADM/readyz" 200 "$SERVER_PID" ;;
    *) die "unknown server $1" ;;
  esac
}

# One request before measuring: the row must answer what it claims to measure.
expect() { # url token-file status [reason]
  local args=(-sk -o "$W/check.body" -w '%{http_code}')
  [ -n "$2" ] && args+=(-H "Authorization: Bearer $(cat "$W/$2")")
  local code
  code=$(curl "${args[@]}" "$1") || true
  [ "$code" = "$3" ] || die "$1 with ${2:-no token}: status $code, expected $3: $(head -c 300 "$W/check.body")"
  if [ -n "${4:-}" ]; then
    grep -q "\"reason\":\"$4\"" "$W/check.body" || die "$1: reason is not $4: $(head -c 300 "$W/check.body")"
  fi
}

cat > "$W/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
EOF

run_wrk() { # conns seconds url token-file
  local args=(-t1 "-c$1" "-d$2s" --timeout 5s -s "$W/report.lua")
  [ -n "$4" ] && args+=(-H "Authorization: Bearer $(cat "$W/$4")")
  "${PIN_C[@]}" wrk "${args[@]}" "$3" > "$W/wrk.out" 2>&1 || die "wrk failed: $(cat "$W/wrk.out")"
  grep '^RESULT' "$W/wrk.out" | tail -1 | cut -d' ' -f2-
}

# ---------------------------------------------------------------- the rows
# id | label | server | url | token file | expected status | expected reason
H="http://127.0.0.1"; S="https://127.0.0.1"
ROWS=(
  "direct|upstream nginx, direct|direct|$H:$UP/x||200|"
  "nginx|nginx plain proxy, access log off|nginx|$H:$NG/public/x||200|"
  "nginx-log|nginx plain proxy, access log on|nginx-log|$H:$NG/public/x||200|"
  "haproxy|HAProxy 2.6 jwt_verify RS256 (no cache)|haproxy|$H:$HA/x|rs256.valid|200|"
  "public|authgate public route, access log off|ag-warn|$H:$AG/public/x||200|"
  "public-log|authgate public route, access log on (info)|ag-info|$H:$AG/public/x||200|"
  "rs-cached|authgate RS256 required, cached|ag-warn|$H:$AG/api/x|rs256.valid|200|"
  "rs-nocache|authgate RS256, cache off|ag-nocache|$H:$AG/api/x|rs256.valid|200|"
  "es-nocache|authgate ES256, cache off|ag-nocache|$H:$AG/api/x|es256.valid|200|"
  "badsig|authgate RS256 bad signature (401)|ag-warn|$H:$AG/api/x|rs256.badsig|401|bad_signature"
  "expired|authgate RS256 expired (401)|ag-warn|$H:$AG/api/x|rs256.expired|401|token_expired"
  "malformed|authgate malformed token (401)|ag-warn|$H:$AG/api/x|malformed|401|malformed_token"
  "tls-nginx|TLS: nginx plain proxy|nginx|$S:$NGS/public/x||200|"
  "tls-rs-cached|TLS: authgate RS256 cached|ag-warn|$S:$AGS/api/x|rs256.valid|200|"
  "nginx-again|nginx plain proxy again (drift)|nginx|$H:$NG/public/x||200|"
)

log "upstream nginx on cpu $SERVER_CPU; servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU"
"${PIN_S[@]}" "$NGINX" -p "$W" -c "$W/upstream.conf" 2>>"$W/upstream.err" &
UP_PID=$!; PIDS+=("$UP_PID")
wait_http "$H:$UP/x" 200 "$UP_PID"
expect "$H:$UP/jwks.json" "" 200

# The auth peer must refuse what it should, or its row measures nothing.
start_server haproxy
expect "$H:$HA/x" rs256.valid 200
expect "$H:$HA/x" rs256.badsig 401
expect "$H:$HA/x" rs256.expired 401
expect "$H:$HA/x" "" 401
stop "$SERVER_PID"

CLK_TCK=$(getconf CLK_TCK)
for row in "${ROWS[@]}"; do
  IFS='|' read -r id label server url token status reason <<<"$row"
  if [ -n "$ONLY" ] && [ "$id" != nginx ] && [[ ",$ONLY," != *",$id,"* ]]; then continue; fi
  start_server "$server"
  expect "$url" "$token" "$status" "$reason"
  if [ "$WARMUP" -gt 0 ]; then run_wrk 32 "$WARMUP" "$url" "$token" >/dev/null; fi
  for c in "${CONNS[@]}"; do
    [ "$id" = nginx-again ] && [ "$c" = 1 ] && continue
    secs=$DURATION; [ "$c" = 1 ] && secs=$DURATION1
    proxy=(); up=()
    # shellcheck disable=SC2207
    if [ -n "$SERVER_PID" ]; then proxy=($(family "$SERVER_PID")); fi
    # shellcheck disable=SC2207
    up=($(family "$UP_PID"))
    p0=$(ticks "${proxy[@]}"); u0=$(ticks "${up[@]}")
    res=$(run_wrk "$c" "$secs" "$url" "$token")
    p1=$(ticks "${proxy[@]}"); u1=$(ticks "${up[@]}")
    hwm=$(status_kb VmHWM "${proxy[@]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$label" "$status" "$c" "$res" \
      "$((p1 - p0))" "$((u1 - u0))" "$hwm" >> "$RESULTS"
    log "$(printf '%-45s c=%-2s %s' "$label" "$c" "$res")"
  done
  if [ -n "$SERVER_PID" ]; then stop "$SERVER_PID"; fi
  rm -f "$W/nginx-access.log" "$W/authgate-info.log"
done

# ---------------------------------------------------------------- raw signature cost
if [ "$MODE" = smoke ]; then
  "${PIN_S[@]}" openssl speed -seconds 1 rsa2048 ecdsap256 > "$OUT/openssl-speed.txt" 2>/dev/null
else
  log "openssl speed -seconds 2 rsa2048 ecdsap256"
  "${PIN_S[@]}" openssl speed -seconds 2 rsa2048 ecdsap256 > "$OUT/openssl-speed.txt" 2>/dev/null
fi

# ---------------------------------------------------------------- memory
# RSS idle (after start and one request), with MEM_CONNS idle keep-alive connections (each has
# served one request), and after the client closed them.
memory_row() { # label server url tls
  start_server "$2"
  curl -sk -o /dev/null "$3"
  sleep 1
  local pids idle
  # shellcheck disable=SC2207
  pids=($(family "$SERVER_PID"))
  idle=$(status_kb VmRSS "${pids[@]}")
  "${PIN_C[@]}" python3 "$HERE/idle_conns.py" "$3" "$MEM_CONNS" > "$W/client.out" 2>&1 &
  local client=$! i
  PIDS+=("$client")
  for i in $(seq 1 1200); do
    grep -q '^ready' "$W/client.out" 2>/dev/null && break
    kill -0 "$client" 2>/dev/null || die "idle_conns.py: $(cat "$W/client.out")"
    sleep 0.1
  done
  grep -q '^ready' "$W/client.out" || die "idle_conns.py never got ready: $(cat "$W/client.out")"
  read -r _ ok failed < <(grep '^ready' "$W/client.out")
  sleep 1
  local open hwm after
  open=$(status_kb VmRSS "${pids[@]}"); hwm=$(status_kb VmHWM "${pids[@]}")
  stop "$client"
  sleep 2
  after=$(status_kb VmRSS "${pids[@]}")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$ok" "$failed" "$idle" "$open" "$hwm" "$after" >> "$MEM"
  log "memory: $1: idle ${idle} kB, ${ok} connections (${failed} failed) ${open} kB, closed ${after} kB"
  stop "$SERVER_PID"
}
log "memory: $MEM_CONNS idle keep-alive connections"
memory_row "authgate, plaintext" ag-mem "$H:$AG/public/x"
memory_row "authgate, TLS" ag-mem "$S:$AGS/public/x"
memory_row "nginx, plaintext" nginx-mem "$H:$NG/public/x"
memory_row "nginx, TLS" nginx-mem "$S:$NGS/public/x"

# ---------------------------------------------------------------- micro benchmarks
if [ "$MICRO" = 1 ]; then
  log "micro benchmarks (cargo bench --bench routes --bench micro, pinned to cpu $SERVER_CPU)"
  cargo bench --locked --quiet --no-run --bench routes --bench micro 2>/dev/null
  "${PIN_S[@]}" cargo bench --locked --quiet --bench routes --bench micro > "$MICRO_OUT" 2>&1
fi

# ---------------------------------------------------------------- report
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "mode=$MODE"
  echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "cores=$(nproc)"
  echo "kernel=$(uname -r)"
  echo "nginx=$($NGINX -v 2>&1 | sed 's/.*nginx\///')"
  echo "haproxy=$($HAPROXY -v | awk 'NR==1 {print $3}')"
  echo "wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')"
  echo "clk_tck=$CLK_TCK"
  echo "duration=$DURATION"
  echo "duration1=$DURATION1"
  echo "warmup=$WARMUP"
  echo "mem_conns=$MEM_CONNS"
  echo "loadavg=$LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "server_cpu=$SERVER_CPU"
  echo "client_cpu=$CLIENT_CPU"
} > "$OUT/meta.txt"
python3 "$HERE/report.py" "$OUT" | tee "$OUT/report.md"
log "done; raw figures in $OUT"
