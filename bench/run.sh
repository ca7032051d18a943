#!/usr/bin/env bash
# bench/run.sh — quotagate against nginx proxy_pass, in one run, on this machine.
#
# Both proxies run pinned to core 0, never at the same time, in front of the same simulated
# provider (`quotagate sim`), which shares core 1 with the load generator. The gateway runs
# with auth and the ledger on (workers: 1), its SQLite file on disk (never tmpfs: the run
# stops if the scratch directory is on tmpfs/ramfs); nginx with an upstream keepalive pool
# and proxy_buffering off. Each proxy is started fresh (the gateway with an empty ledger)
# for every round below. Figures (see docs/bench.md):
#   A  non-stream RPS (wrk -c32) and CPU µs per request (utime+stime of the proxy / requests),
#      in ROUNDS interleaved pairs: gateway, nginx, gateway, nginx, ... each a 2 s warm-up and
#      BENCH_SECONDS measured. Each side's figure is the median of its rounds; each ratio is the
#      median of the per-pair ratios (min–max shown), so drift in machine load hits both sides
#      of a pair alike.
#   B  p50/p99 at a fixed 1,000 req/s (after a 2 s warm-up at that rate), minus the same for
#      a direct call to the simulator
#   C  1,000 concurrent streams (100 events, 50 ms apart): CPU µs per forwarded event,
#      RSS per open stream, incomplete streams
#   E  the quota decision at scale: the gateway with 10,000 accounts (100 providers of 100
#      accounts, one model each, every account with a window and a credits bucket) against the
#      same gateway with 2 accounts serving the same 100 models, requests spread over the 100
#      models: RPS in ROUNDS interleaved pairs (median of pair ratios) and instructions per
#      request (one callgrind run each, 2,000 requests to one model)
#   F  keys at scale: the benchmark key as an admin key in the key store (the same three
#      policies, the same secret) among 10 keys, and among 1,000,000 (BENCH_F_KEYS); the
#      gateway alone, no key in its config, the same requests as A: RPS and CPU µs per
#      request in BENCH_F_ROUNDS interleaved pairs (median of pair ratios), start-up time
#      (launch to the "listening" log line) and VmRSS after start-up, and instructions per
#      request (BENCH_CG_RUNS interleaved callgrind runs each as in D, started with
#      --instr-atstart=no so 1,000,000 keys load at valgrind's uninstrumented speed). The
#      stores are made once by bench/keystore.py from a template the gateway writes itself
#      (one key made through the admin API), cached in BENCH_KEYS_DIR, and copied fresh
#      (empty ledger) for every start
#   D  instructions per request under valgrind --tool=callgrind (200 warm-up requests, counters
#      zeroed, 2,000 requests, counters dumped; 0.5 s of quiet before each so the ledger writer
#      has flushed), BENCH_CG_RUNS times each, interleaved; the median is reported, with the
#      min–max (the gateway's count moves by a few parts per thousand with timing: reads that
#      find nothing, rows per ledger transaction). The ledger starts empty here too: its size
#      moves the gateway's count (by ~3 % between an empty ledger and one of 680k rows)
# Every response of every run, warm-ups included, must be 2xx. qgload counts every status
# itself. In A, the warm-ups count every status through a wrk Lua response() hook; the measured
# runs go without it (it costs wrk CPU on core 1) and rely on wrk's own count of statuses
# >= 400 and its socket errors; after each gateway round every ledger row must be 2xx (but
# up to 32 rows of 499 per wrk run: requests wrk still had in flight when it stopped).
# Any non-2xx response, socket error, missing answer or proxy death stops the run with a
# message naming the phase and the status counts, and exit status 1 (no table). Incomplete
# streams in C are a reported figure: the table is still written, then the run exits 1.
# Progress (A, E and F pair by pair, D and F's callgrind run by run) goes to stderr; the results to stdout and to
# bench/results/latest.txt (BENCH_OUT).
#
# Environment:
#   QG_BIN=path        gateway binary to measure (default build/quotagate)
#   QG_SIM_BIN=path    binary that runs `sim` (default: QG_BIN)
#   QG_LOAD=path       qgload binary (default build/qgload)
#   BENCH_SECONDS=10   length of each measured run in A and B
#   BENCH_ROUNDS=3     gateway/nginx pairs in A (and E)
#   BENCH_F_ROUNDS=n   10-key/large-store pairs in F (default: BENCH_ROUNDS)
#   BENCH_CG_RUNS=3    callgrind runs of each proxy in D, and of each store in F
#   BENCH_F_KEYS=1000000  keys in F's large store (the small one has 10)
#   BENCH_KEYS_DIR=dir cache of F's stores (default build/bench; delete it to remake them)
#   BENCH_TMP=dir      scratch directory, ledger included; must be on disk (default build/bench-tmp)
#   BENCH_OUT=path     results file (default bench/results/latest.txt)
#   BENCH_KEEP=1       keep the scratch run directory (configs, logs, ledger, callgrind files)
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
abs() { case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
BIN=$(abs "${QG_BIN:-$PWD/build/quotagate}")
SIM_BIN=$(abs "${QG_SIM_BIN:-$BIN}")
LOAD=$(abs "${QG_LOAD:-$PWD/build/qgload}")
DUR=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CG_RUNS=${BENCH_CG_RUNS:-3}
TMPROOT=$(abs "${BENCH_TMP:-$PWD/build/bench-tmp}")
KEYS_DIR=$(abs "${BENCH_KEYS_DIR:-$PWD/build/bench}")
F_KEYS=${BENCH_F_KEYS:-1000000}
F_ROUNDS=${BENCH_F_ROUNDS:-$ROUNDS}
OUT=$(abs "${BENCH_OUT:-$PWD/bench/results/latest.txt}")
SIM=19401 GW=19402 NGX=19403
KEY=bench-key-000001

fail() { printf 'bench: FAIL: %s\n' "$*" >&2; exit 1; }
for b in "$BIN" "$SIM_BIN" "$LOAD"; do [ -x "$b" ] || fail "$b is not an executable (build it, or set QG_BIN / QG_SIM_BIN / QG_LOAD)"; done
for t in wrk nginx valgrind callgrind_control taskset; do command -v $t >/dev/null || fail "$t not found (scripts/deps.sh bench)"; done
case $DUR in '' | *[!0-9]* | 0) fail "BENCH_SECONDS must be a positive integer" ;; esac
case $ROUNDS in '' | *[!0-9]* | 0) fail "BENCH_ROUNDS must be a positive integer" ;; esac
case $CG_RUNS in '' | *[!0-9]* | 0) fail "BENCH_CG_RUNS must be a positive integer" ;; esac
case $F_ROUNDS in '' | *[!0-9]* | 0) fail "BENCH_F_ROUNDS must be a positive integer" ;; esac
case $F_KEYS in '' | *[!0-9]*) fail "BENCH_F_KEYS must be an integer above 10" ;; esac
[ "$F_KEYS" -gt 10 ] || fail "BENCH_F_KEYS must be an integer above 10"

mkdir -p "$TMPROOT"
dir=$(mktemp -d "$TMPROOT/run.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
fstype=$(df --output=fstype "$dir" | tail -1 | tr -d ' ')
case $fstype in tmpfs | ramfs) fail "$TMPROOT is on $fstype; the ledger must be on disk (set BENCH_TMP to a directory on disk)" ;; esac
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_port() { for _ in $(seq 1 1200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; fail "port $1 never opened"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

cat >"$dir/gw.yaml" <<EOF
listen: 127.0.0.1:$GW
workers: 1
admin_token: bench-admin
store: { sqlite: $dir/ledger.db }
limits: { max_connections: 20000 }
providers:
  - name: sim
    dialect: openai
    base_url: http://127.0.0.1:$SIM/v1
    models: [bench-model]
    accounts:
      # the full quota path: a window and a credits bucket counted on every request, the
      # simulator's rate-limit headers captured, the choice made by the quota engine
      - { name: a, api_key: sim-bench, buckets: [ { name: day, kind: window, unit: tokens, limit: 1000000000000, period: 1d },
                                                  { name: credits, kind: credits, unit: requests, limit: 1000000000000 } ] }
keys:
  # three periodic policies on the benchmark key (issue 15's measure): every request is
  # pre-checked, reserved in three windows, settled, and answered with x-quota headers
  - name: bench
    key: $KEY
    policies:
      - { period: 5h, limit: 1000000000000, unit: tokens }
      - { period: daily, limit: 1000000000000, unit: requests, anchor: "2026-01-01T00:00:00+08:00" }
      - { period: monthly, limit: 1000000000, unit: usd, boundary: graceful }
EOF
# F: the same gateway with no key in its config: the benchmark key is in the store
sed '/^keys:/,$d' "$dir/gw.yaml" >"$dir/gw-keys.yaml"
sed "s|sqlite: $dir/ledger.db|sqlite: $dir/template.db|" "$dir/gw-keys.yaml" >"$dir/template.yaml"
# E: 100 models over 2 accounts, and over 10,000 (100 providers of 100 accounts)
bucket_list='[ { name: day, kind: window, unit: tokens, limit: 1000000000000, period: 1d }, { name: credits, kind: credits, unit: requests, limit: 1000000000000 } ]'
scale_head() { printf 'listen: 127.0.0.1:%s\nworkers: 1\nadmin_token: bench-admin\nstore: { sqlite: %s/ledger.db }\nlimits: { max_connections: 20000 }\nkeys:\n  - { name: bench, key: %s }\nproviders:\n' $GW "$dir" $KEY; }
{ scale_head
  printf '  - name: sim\n    dialect: openai\n    base_url: http://127.0.0.1:%s/v1\n    models: [' $SIM
  for m in $(seq -w 0 99); do printf '%sbench-model-%s' "$([ $m = 00 ] || echo ', ')" $m; done
  printf ']\n    accounts:\n'
  for a in 1 2; do printf '      - { name: a%s, api_key: sim-bench, buckets: %s }\n' $a "$bucket_list"; done
} >"$dir/gw-2.yaml"
{ scale_head
  for m in $(seq -w 0 99); do
    printf '  - name: sim%s\n    dialect: openai\n    base_url: http://127.0.0.1:%s/v1\n    models: [bench-model-%s]\n    accounts:\n' $m $SIM $m
    for a in $(seq -w 0 99); do printf '      - { name: a%s, api_key: sim-bench, buckets: %s }\n' $a "$bucket_list"; done
  done
} >"$dir/gw-10k.yaml"
cat >"$dir/models.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{"model":"bench-model-%02d","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}', n % 100))
end
EOF
cat >"$dir/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 20000;
error_log $dir/nginx-error.log; pid $dir/nginx.pid;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path $dir; proxy_temp_path $dir;
  upstream sim { server 127.0.0.1:$SIM; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / { proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF
cat >"$dir/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
EOF
# The same requests with a response() hook that counts every status; done() prints the counts
# on one line. Warm-ups only: the hook costs wrk 1-2 µs per response on core 1, which it
# shares with the simulator, and would cap the faster proxy's RPS.
{ cat "$dir/post.lua"; cat <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local all, codes, total, non2xx, parts = {}, {}, 0, 0, {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do all[s] = (all[s] or 0) + n end
  end
  for s in pairs(all) do table.insert(codes, s) end
  table.sort(codes)
  for _, s in ipairs(codes) do
    total = total + all[s]
    if s < 200 or s > 299 then non2xx = non2xx + all[s] end
    table.insert(parts, s .. ":" .. all[s])
  end
  local e = summary.errors
  io.write(string.format("qg-check: requests=%d responses=%d non2xx=%d statuses=%s socket_errors=connect:%d,read:%d,write:%d,timeout:%d\n",
    summary.requests, total, non2xx, #parts > 0 and table.concat(parts, ",") or "-", e.connect, e.read, e.write, e.timeout))
end
EOF
} >"$dir/count.lua"

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }

start_sim() { taskset -c 1 "$SIM_BIN" sim --listen 127.0.0.1:$SIM "$@" >"$dir/sim.log" 2>&1 & sim_pid=$!; pids+=("$sim_pid"); wait_port $SIM; }
stop_sim() { kill -0 "$sim_pid" 2>/dev/null || fail "the simulator died (log: $(tail -3 "$dir/sim.log" | tr '\n' ' '))"; kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; }
# F's stores: keys-small (10 keys) and keys-large (F_KEYS), each started from a fresh copy
declare -A F_STORE=([keys-small]="$KEYS_DIR/keys-10.db" [keys-large]="$KEYS_DIR/keys-$F_KEYS.db")
start_proxy() { # start_proxy gateway|nginx|direct|keys-small|keys-large [wrapper...] ; sets proxy_pid, port, key
  local which=$1; shift
  case $which in
  keys-small | keys-large) port=$GW key=$KEY; rm -f "$dir"/ledger.db "$dir"/ledger.db-wal "$dir"/ledger.db-shm "$dir/gw.log"
    cp "${F_STORE[$which]}" "$dir/ledger.db"; sync "$dir/ledger.db"   # no writeback of the copy during the run
    launch_ns=$(date +%s%N)
    taskset -c 0 "$@" "$BIN" serve -c "$dir/gw-keys.yaml" >"$dir/gw.log" 2>&1 &
    proxy_pid=$!; pids+=("$proxy_pid"); wait_listening "$which"; return ;;
  gateway | gw-2 | gw-10k) port=$GW key=$KEY; rm -f "$dir"/ledger.db "$dir"/ledger.db-wal "$dir"/ledger.db-shm   # an empty ledger each start
    local cfg=$dir/gw.yaml; [ "$which" = gateway ] || cfg=$dir/$which.yaml
    taskset -c 0 "$@" "$BIN" serve -c "$cfg" >"$dir/gw.log" 2>&1 & ;;
  nginx) port=$NGX key=$KEY; taskset -c 0 "$@" nginx -c "$dir/nginx.conf" >"$dir/nginx.log" 2>&1 & ;;
  direct) port=$SIM key=sim-bench proxy_pid=; return ;;
  esac
  proxy_pid=$!; pids+=("$proxy_pid"); wait_port $port
}
# wait_listening WHICH: until the gateway logs "listening" (its keys are loaded by then); sets
# start_ms, from launch to the line seen (polled every 10 ms from core 1), and rss_kib (VmRSS).
wait_listening() {
  local out rc=0 why=died
  out=$(taskset -c 1 bash -c 'until grep -q " listening on " "$1" 2>/dev/null; do
      kill -0 "$2" 2>/dev/null || exit 1; [ $(($(date +%s) - $3 / 1000000000)) -lt 600 ] || exit 2; sleep 0.01; done
    echo $((($(date +%s%N) - $3) / 1000000))' _ "$dir/gw.log" "$proxy_pid" "$launch_ns") || rc=$?
  [ $rc = 2 ] && why="was not listening after 600 s"
  [ $rc = 0 ] || fail "F ($1): the gateway $why starting on ${F_STORE[$1]}; last lines of its log: $(tail -3 "$dir/gw.log" 2>/dev/null | tr '\n' ' ')"
  start_ms=$out
  rss_kib=$(awk '/^VmRSS:/{print $2}' "/proc/$proxy_pid/status")
}
# A proxy that died before we stop it fails the run (the bench once found a crash this way).
check_alive() { # check_alive PHASE WHICH
  [ -z "$proxy_pid" ] && return 0
  kill -0 "$proxy_pid" 2>/dev/null && return 0
  local rc=0; wait "$proxy_pid" || rc=$?
  local log=$dir/gw.log; [ "$2" = nginx ] && log=$dir/nginx-error.log
  fail "$1: $2 died (exit status $rc); last lines of its log: $(tail -3 "$log" 2>/dev/null | tr '\n' ' ')"
}
stop_proxy() { [ -z "$proxy_pid" ] && return 0; kill -TERM "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }

# run_wrk PHASE WHICH SECONDS count|plain: wrk against the current proxy; sets wrk_out, wrk_reqs.
# count: every status counted by the Lua hook; fails on any non-2xx, on a socket error, or if
#   the hook did not see every response.
# plain (measured runs, no hook): fails on wrk's "Non-2xx or 3xx responses" (wrk counts status
#   >= 400 there, whatever the label says) and on any socket error. A 1xx/3xx is caught by the
#   warm-ups' hook and, for the gateway, by the ledger check after each round (check_ledger).
run_wrk() {
  local phase=$1 which=$2 secs=$3 mode=$4 rc=0 script=$dir/post.lua
  [ "$mode" = count ] && script=$dir/count.lua
  [ "$mode" = models ] && script=$dir/models.lua
  wrk_out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}"s -s "$script" "http://127.0.0.1:$port/v1/chat/completions" 2>&1) || rc=$?
  check_alive "$phase" "$which"
  [ $rc = 0 ] || fail "$phase ($which): wrk exited with status $rc: $(echo "$wrk_out" | tail -3 | tr '\n' ' ')"
  wrk_reqs=$(echo "$wrk_out" | awk '/requests in/{print $1}')
  [ -n "$wrk_reqs" ] && [ "$wrk_reqs" -gt 0 ] || fail "$phase ($which): wrk completed no request: $(echo "$wrk_out" | tail -3 | tr '\n' ' ')"
  local bad se
  bad=$(echo "$wrk_out" | awk '/Non-2xx or 3xx responses:/{print $NF}')
  se=$(echo "$wrk_out" | awk '/Socket errors:/{sub(/.*Socket errors: /, ""); gsub(/ /, ""); print}')
  if [ "$mode" = count ]; then
    local chk resp non2xx st
    chk=$(echo "$wrk_out" | grep '^qg-check:' || true)
    [ -n "$chk" ] || fail "$phase ($which): wrk printed no status counts: $(echo "$wrk_out" | tail -3 | tr '\n' ' ')"
    resp=$(field "$chk" responses) non2xx=$(field "$chk" non2xx) st=$(field "$chk" statuses) se=$(field "$chk" socket_errors)
    [ "$non2xx" = 0 ] || fail "$phase ($which): $non2xx of $resp responses were not 2xx (status:count $st; socket errors $se)"
    [ "$se" = "connect:0,read:0,write:0,timeout:0" ] || fail "$phase ($which): wrk socket errors $se (status:count $st)"
    [ "$resp" = "$wrk_reqs" ] || fail "$phase ($which): wrk counted $wrk_reqs responses but the status hook saw $resp (status:count $st)"
  else
    [ -z "$bad" ] || fail "$phase ($which): $bad of $wrk_reqs responses had a status >= 400 (wrk: \"Non-2xx or 3xx responses: $bad\"), $((wrk_reqs - bad)) a status below 400${se:+; socket errors $se}"
    [ -z "$se" ] || fail "$phase ($which): wrk socket errors ($se) over $wrk_reqs responses, none with a status >= 400"
  fi
}
# check_ledger PHASE MIN MAX499: after a gateway round (stopped, so the ledger is committed),
# every row must be 2xx except up to MAX499 rows of 499 (wrk leaves with up to 32 requests in
# flight at the end of each run: "client closed request", no response sent), and there must be
# at least MIN 2xx rows (the responses wrk counted).
check_ledger() {
  local out
  out=$(python3 -c '
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT status, COUNT(*) FROM ledger GROUP BY status ORDER BY status").fetchall()
ok = sum(n for s, n in rows if isinstance(s, int) and 200 <= s <= 299)
left = sum(n for s, n in rows if s == 499)
print("rows=%d ok=%d left=%d bad=%d statuses=%s" % (sum(n for _, n in rows), ok, left, sum(n for _, n in rows) - ok - left,
      ",".join("%s:%d" % (s, n) for s, n in rows) or "-"))
' "$dir/ledger.db" 2>&1) || fail "$1 (gateway): cannot read the statuses in the ledger: $out"
  [ "$(field "$out" bad)" = 0 ] && [ "$(field "$out" left)" -le "$3" ] ||
    fail "$1 (gateway): $(($(field "$out" rows) - $(field "$out" ok))) of the ledger's $(field "$out" rows) rows are not 2xx (status:count $(field "$out" statuses); up to $3 rows of 499 are expected)"
  [ "$(field "$out" ok)" -ge "$2" ] || fail "$1 (gateway): the ledger has $(field "$out" ok) 2xx rows, fewer than the $2 responses wrk counted (status:count $(field "$out" statuses))"
}
# run_qgload PHASE WHICH ARGS...: qgload against the current proxy; sets load_out. Fails on any
# non-2xx response, error or missing answer (qgload's exit status).
run_qgload() {
  local phase=$1 which=$2 rc=0; shift 2
  load_out=$(taskset -c 1 "$LOAD" "$@" 2>&1) || rc=$?
  check_alive "$phase" "$which"
  [ $rc = 0 ] && return 0
  local line; line=$(echo "$load_out" | grep '^mode=' || true)
  [ -n "$line" ] || fail "$phase ($which): qgload exited with status $rc: $(echo "$load_out" | tail -3 | tr '\n' ' ')"
  fail "$phase ($which): $(field "$line" non2xx) responses not 2xx (status:count $(field "$line" statuses)), $(field "$line" errors) connection errors, $(field "$line" missing) never answered: $line"
}
old_qgload() { fail "$LOAD does not count statuses (built from an older bench/qgload.c: make build/qgload)"; }
expect_requests() { # expect_requests PHASE WHICH N: load_out must report exactly N 2xx responses
  [ -n "$(field "$load_out" non2xx)" ] || old_qgload
  local got; got=$(field "$load_out" requests)
  [ "$got" = "$3" ] || fail "$1 ($2): expected $3 responses, qgload got $got: $load_out"
}

# callgrind_run PHASE WHICH [valgrind option...]: one callgrind count of the current build of
# WHICH (D, F); sets ir, instructions per measured request. 200 warm-up requests, counters
# zeroed, 2,000 requests, counters dumped. With --instr-atstart=no (F: a million keys load
# uninstrumented) instrumentation is turned on once the proxy listens, before the warm-up.
callgrind_run() {
  local phase=$1 which=$2 f; shift 2
  start_proxy $which valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$which.%p" -q "$@"
  case " $* " in *" --instr-atstart=no "*)
    callgrind_control -i on "$proxy_pid" >/dev/null 2>&1 || fail "$phase ($which): callgrind_control -i on failed" ;;
  esac
  run_qgload "$phase warm-up" $which rate -p $port -r 100 -d 2 -c 1 -k $KEY -m bench-model     # 200 requests
  expect_requests "$phase warm-up" $which 200
  sleep 0.5   # the ledger writer flushes every 100 ms: the warm-up's rows land before the zero
  callgrind_control -z "$proxy_pid" >/dev/null 2>&1 || fail "$phase ($which): callgrind_control -z failed"
  run_qgload "$phase" $which rate -p $port -r 400 -d 5 -c 1 -k $KEY -m bench-model             # measured: 2,000
  expect_requests "$phase" $which 2000
  checked=$((checked + 2000))
  sleep 0.5   # ... and the measured rows before the dump
  callgrind_control -d "$proxy_pid" >/dev/null 2>&1 || fail "$phase ($which): callgrind_control -d failed"
  sleep 0.5
  f=$(ls -t "$dir"/cg.$which."$proxy_pid".* 2>/dev/null | head -1)
  [ -n "$f" ] || fail "$phase ($which): callgrind wrote no dump"
  ir=$(awk '/^summary:|^totals:/{print $2; exit}' "$f")
  [ -n "$ir" ] || fail "$phase ($which): no total in $f"
  ir=$(awk -v i="$ir" 'BEGIN{printf "%.0f", i / 2000}')
  check_alive "$phase" $which
  stop_proxy
}

median() { # median FORMAT VALUE...
  local f=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v f="$f" '{a[NR] = $1} END {printf f, NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f–%.2f", lo, hi}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.4f", a / b; else print "n/a" }'; }
fmt() { awk -v a="$1" -v f="$2" 'BEGIN{printf f, a}'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%d", a - b}'; }
per_stream() { awk -v a="$(field "$1" rss_during_kib)" -v b="$(field "$1" rss_before_kib)" 'BEGIN{printf "%.1f", (a - b) / 1000}'; }

declare -A R
# measured_round PHASE WHICH: on the started proxy, a 2 s warm-up and a measured wrk run;
# stops it, checks the gateway's ledger, sets R[WHICH.rps] and R[WHICH.cpu_us]
measured_round() {
  local phase=$1 which=$2 warm c0 c1
  run_wrk "$phase warm-up" $which 2 count
  warm=$wrk_reqs
  c0=$(cpu_ticks "$proxy_pid")
  run_wrk "$phase" $which "$DUR" plain
  c1=$(cpu_ticks "$proxy_pid")
  check_alive "$phase" $which
  stop_proxy
  if [ $which != nginx ]; then check_ledger "$phase" $((warm + wrk_reqs)) 64; fi
  checked=$((checked + wrk_reqs))
  R[$which.rps]=$(echo "$wrk_out" | awk '/Requests\/sec/{print $2}')
  R[$which.cpu_us]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$wrk_reqs" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
}
rps_ratios=() cpu_ratios=() g_rps=() n_rps=() g_cpu=() n_cpu=() pair_lines=()
checked=0   # responses checked 2xx in measured runs

# ---- A: closed-loop RPS and CPU per request, gateway and nginx interleaved pair by pair
start_sim --chunks 8 --workers 1
for r in $(seq 1 "$ROUNDS"); do
  for which in gateway nginx; do
    start_proxy $which
    measured_round "A round $r/$ROUNDS" $which
  done
  g_rps+=("${R[gateway.rps]}") n_rps+=("${R[nginx.rps]}") g_cpu+=("${R[gateway.cpu_us]}") n_cpu+=("${R[nginx.cpu_us]}")
  rps_ratios+=("$(div "${R[gateway.rps]}" "${R[nginx.rps]}")") cpu_ratios+=("$(div "${R[gateway.cpu_us]}" "${R[nginx.cpu_us]}")")
  pair_lines+=("$(printf "  pair %d: RPS gateway %s, nginx %s, ratio %s; CPU µs/request gateway %s, nginx %s" "$r" \
    "${R[gateway.rps]}" "${R[nginx.rps]}" "$(fmt "${rps_ratios[-1]}" %.3f)" "${R[gateway.cpu_us]}" "${R[nginx.cpu_us]}")")
  echo "${pair_lines[-1]}" >&2
done

# ---- B: latency at a fixed rate, straight at the simulator and through each proxy
for which in direct gateway nginx; do
  start_proxy $which
  run_qgload "B warm-up" $which rate -p $port -r 1000 -d 2 -c 64 -k $key -m bench-model
  run_qgload "B" $which rate -p $port -r 1000 -d "$DUR" -c 64 -k $key -m bench-model
  expect_requests B $which $((1000 * DUR))
  checked=$((checked + 1000 * DUR))
  R[$which.lat]=$load_out
  stop_proxy
done
stop_sim

# ---- C: 1,000 concurrent streams
start_sim --chunks 100 --chunk-delay 50ms --workers 1
incomplete_total=0
for which in gateway nginx; do
  start_proxy $which
  sleep 0.5
  c0=$(cpu_ticks "$proxy_pid")
  rc=0; out=$(taskset -c 1 "$LOAD" streams -p $port -n 1000 -k $KEY -m bench-model -s 3 -P "$proxy_pid" 2>&1) || rc=$?
  c1=$(cpu_ticks "$proxy_pid")
  check_alive C $which
  stop_proxy
  line=$(echo "$out" | grep '^mode=streams' || true)
  [ -n "$line" ] || fail "C ($which): qgload streams exited with status $rc: $(echo "$out" | tail -3 | tr '\n' ' ')"
  [ -n "$(field "$line" non2xx)" ] || old_qgload
  [ "$(field "$line" non2xx)" = 0 ] || fail "C ($which): $(field "$line" non2xx) of 1000 streams answered non-2xx (status:count $(field "$line" statuses)): $line"
  incomplete_total=$((incomplete_total + $(field "$line" incomplete)))
  checked=$((checked + $(field "$line" complete)))
  R[$which.streams]=$line
  ev=$(field "$line" events)
  R[$which.cpu_ev]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$ev" 'BEGIN{printf "%.2f", (n ? t / hz * 1e6 / n : 0)}')
done
stop_sim

# ---- E: the quota decision with 10,000 accounts against 2 (gateway only, same requests)
start_sim --chunks 8 --workers 1
e_ratios=() e_small=() e_large=()
for r in $(seq 1 "$ROUNDS"); do
  for which in gw-2 gw-10k; do
    phase="E round $r/$ROUNDS"
    start_proxy $which
    run_wrk "$phase warm-up" $which 2 models
    run_wrk "$phase" $which "$DUR" models
    check_alive "$phase" $which
    stop_proxy
    check_ledger "$phase" "$wrk_reqs" 64
    R[$which.rps]=$(echo "$wrk_out" | awk '/Requests\/sec/{print $2}')
  done
  e_small+=("${R[gw-2.rps]}") e_large+=("${R[gw-10k.rps]}")
  e_ratios+=("$(div "${R[gw-10k.rps]}" "${R[gw-2.rps]}")")
  echo "  E pair $r: RPS 2 accounts ${R[gw-2.rps]}, 10,000 accounts ${R[gw-10k.rps]}, ratio $(fmt "${e_ratios[-1]}" %.3f)" >&2
done
for which in gw-2 gw-10k; do
  start_proxy $which valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$which.%p" -q
  run_qgload "E callgrind warm-up" $which rate -p $port -r 100 -d 2 -c 1 -k $KEY -m bench-model-07
  sleep 0.5
  callgrind_control -z "$proxy_pid" >/dev/null 2>&1 || fail "E ($which): callgrind_control -z failed"
  run_qgload "E callgrind" $which rate -p $port -r 400 -d 5 -c 1 -k $KEY -m bench-model-07
  expect_requests "E callgrind" $which 2000
  sleep 0.5
  callgrind_control -d "$proxy_pid" >/dev/null 2>&1 || fail "E ($which): callgrind_control -d failed"
  sleep 0.5
  f=$(ls -t "$dir"/cg.$which."$proxy_pid".* 2>/dev/null | head -1)
  R[$which.ir]=$(awk '/^summary:|^totals:/{printf "%.0f", $2 / 2000; exit}' "$f")
  echo "  E callgrind: $which ${R[$which.ir]} Ir/request" >&2
  check_alive "E callgrind" $which
  stop_proxy
done
stop_sim

# ---- F: keys at scale: the benchmark key among 10 admin keys in the store, and among F_KEYS
# F's stores, made once: a template the gateway writes itself (its schema, and one admin key
# made through the admin API with the three policies of gw.yaml's bench key), then
# bench/keystore.py: that key renamed key_0000000000000000 with the secret $KEY, and the
# filler keys after it. A store older than the template is made again; delete the directory
# to remake everything (e.g. after a schema change)
make_stores() {
  mkdir -p "$KEYS_DIR"
  local tpl=$KEYS_DIR/keys-template.db n
  if [ ! -f "$tpl" ]; then
    rm -f "$dir"/template.db "$dir"/template.db-wal "$dir"/template.db-shm
    taskset -c 0 "$BIN" serve -c "$dir/template.yaml" >"$dir/template.log" 2>&1 &
    proxy_pid=$!; pids+=("$proxy_pid"); wait_port $GW
    "$BIN" keys create bench -c "$dir/template.yaml" --policy period=5h,limit=1000000000000,unit=tokens \
      --policy period=daily,limit=1000000000000,unit=requests,anchor=2026-01-01T00:00:00+08:00 \
      --policy period=monthly,limit=1000000000,unit=usd,boundary=graceful >"$dir/template-create.log" 2>&1 ||
      fail "F: quotagate keys create failed: $(tail -3 "$dir/template-create.log" | tr '\n' ' ')"
    stop_proxy
    python3 -c 'import sqlite3, sys; d = sqlite3.connect(sys.argv[2]); sqlite3.connect(sys.argv[1]).backup(d); d.execute("PRAGMA journal_mode=DELETE")' \
      "$dir/template.db" "$tpl.tmp" && mv "$tpl.tmp" "$tpl" || fail "F: cannot copy the template store to $tpl"
    echo "  F: made the template store $tpl" >&2
  fi
  for n in 10 "$F_KEYS"; do
    [ "$KEYS_DIR/keys-$n.db" -nt "$tpl" ] && continue   # made from this template: kept
    python3 bench/keystore.py "$tpl" "$KEYS_DIR/keys-$n.db" "$n" "$KEY" >&2 || fail "F: bench/keystore.py could not make the store of $n keys"
  done
}
make_stores
start_sim --chunks 8 --workers 1
f_ratios=() f_cpu_ratios=() f_cpu_small=() f_cpu_large=() f_small=() f_large=() f_st_small=() f_st_large=() f_rss_small=() f_rss_large=() f_lines=()
for r in $(seq 1 "$F_ROUNDS"); do
  for which in keys-small keys-large; do
    start_proxy $which
    R[$which.start_ms]=$start_ms R[$which.rss]=$rss_kib
    measured_round "F round $r/$F_ROUNDS" $which
  done
  f_cpu_small+=("${R[keys-small.cpu_us]}") f_cpu_large+=("${R[keys-large.cpu_us]}")
  f_cpu_ratios+=("$(div "${R[keys-large.cpu_us]}" "${R[keys-small.cpu_us]}")")
  f_small+=("${R[keys-small.rps]}") f_large+=("${R[keys-large.rps]}")
  f_st_small+=("${R[keys-small.start_ms]}") f_st_large+=("${R[keys-large.start_ms]}")
  f_rss_small+=("${R[keys-small.rss]}") f_rss_large+=("${R[keys-large.rss]}")
  f_ratios+=("$(div "${R[keys-large.rps]}" "${R[keys-small.rps]}")")
  f_lines+=("$(printf "  pair %d: RPS 10 keys %s, %s keys %s, ratio %s; CPU µs/request %s / %s; start-up %s / %s ms; VmRSS %s / %s KiB" "$r" \
    "${R[keys-small.rps]}" "$F_KEYS" "${R[keys-large.rps]}" "$(fmt "${f_ratios[-1]}" %.3f)" "${R[keys-small.cpu_us]}" "${R[keys-large.cpu_us]}" \
    "${R[keys-small.start_ms]}" "${R[keys-large.start_ms]}" "${R[keys-small.rss]}" "${R[keys-large.rss]}")")
  echo "  F ${f_lines[-1]#  }" >&2
done
f_ir_small=() f_ir_large=()
for r in $(seq 1 "$CG_RUNS"); do
  for which in keys-small keys-large; do
    callgrind_run "F callgrind run $r/$CG_RUNS" $which --instr-atstart=no
    if [ $which = keys-small ]; then f_ir_small+=("$ir"); else f_ir_large+=("$ir"); fi
    echo "  F callgrind run $r: $which $ir Ir/request" >&2
  done
done
stop_sim

# ---- D: instructions per request (callgrind), same requests for both, runs interleaved
start_sim --chunks 8 --workers 1
g_ir=() n_ir=()
for r in $(seq 1 "$CG_RUNS"); do
  for which in gateway nginx; do
    phase="D run $r/$CG_RUNS"
    callgrind_run "$phase" $which
    if [ $which = gateway ]; then g_ir+=("$ir"); else n_ir+=("$ir"); fi
    echo "  D run $r: $which $ir Ir/request" >&2
  done
done
stop_sim
R[gateway.ir]=$(median %.0f "${g_ir[@]}") R[nginx.ir]=$(median %.0f "${n_ir[@]}")
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%d–%d", lo, hi}'; }

rps_med=$(median %.4f "${rps_ratios[@]}") cpu_med=$(median %.4f "${cpu_ratios[@]}")
{
echo "quotagate bench — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) cores, $(uname -r)"
echo "gateway: $BIN (sha256 $(sha256sum "$BIN" | cut -c1-12)); nginx $(nginx -v 2>&1 | sed 's|.*/||')"
echo "proxies pinned to core 0 (one at a time); wrk/qgload and the simulator on core 1"
echo "ledger on $fstype ($TMPROOT); A: $ROUNDS interleaved pairs of ${DUR}s each; no failed response ($checked in measured runs)"
echo "F: stores $KEYS_DIR/keys-10.db and keys-$F_KEYS.db, $F_ROUNDS interleaved pairs, $CG_RUNS callgrind runs each"
echo
printf "%-44s %14s %14s %8s\n" "figure" "gateway" "nginx" "ratio"
printf "%-44s %14s %14s %8s\n" "non-stream RPS (wrk -c32, ${DUR}s; median)" "$(median %.0f "${g_rps[@]}")" "$(median %.0f "${n_rps[@]}")" "$(fmt "$rps_med" %.2f)"
printf "%-44s %14s %14s %8s\n" "  pair ratios min–max (ratio: median pair)" "" "" "$(minmax "${rps_ratios[@]}")"
printf "%-44s %14s %14s %8s\n" "CPU µs per request (median)" "$(median %.1f "${g_cpu[@]}")" "$(median %.1f "${n_cpu[@]}")" "$(fmt "$cpu_med" %.2f)"
printf "%-44s %14s %14s %8s\n" "  pair ratios min–max (ratio: median pair)" "" "" "$(minmax "${cpu_ratios[@]}")"
printf "%-44s %14s %14s %8s\n" "instructions per request (callgrind, median)" "${R[gateway.ir]}" "${R[nginx.ir]}" "$(fmt "$(div "${R[gateway.ir]}" "${R[nginx.ir]}")" %.2f)"
printf "%-44s %14s %14s %8s\n" "  $CG_RUNS runs min–max" "$(range "${g_ir[@]}")" "$(range "${n_ir[@]}")" ""
for p in p50 p99; do
  d=$(field "${R[direct.lat]}" ${p}_us)
  printf "%-44s %14s %14s %8s\n" "$p added over direct at 1,000 req/s (µs)" "$(added "$(field "${R[gateway.lat]}" ${p}_us)" "$d")" "$(added "$(field "${R[nginx.lat]}" ${p}_us)" "$d")" ""
done
printf "%-44s %14s %14s %8s\n" "  (direct call p50 / p99 µs)" "$(field "${R[direct.lat]}" p50_us) / $(field "${R[direct.lat]}" p99_us)" "" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: CPU µs per forwarded event" "${R[gateway.cpu_ev]}" "${R[nginx.cpu_ev]}" "$(fmt "$(div "${R[gateway.cpu_ev]}" "${R[nginx.cpu_ev]}")" %.2f)"
printf "%-44s %14s %14s %8s\n" "1,000 streams: RSS KiB per open stream" "$(per_stream "${R[gateway.streams]}")" "$(per_stream "${R[nginx.streams]}")" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: incomplete" "$(field "${R[gateway.streams]}" incomplete)" "$(field "${R[nginx.streams]}" incomplete)" ""
printf "%-44s %14s %14s %8s\n" "E: RPS over 100 models, 2 / 10,000 accounts" "$(median %.0f "${e_small[@]}")" "$(median %.0f "${e_large[@]}")" "$(fmt "$(median %.4f "${e_ratios[@]}")" %.3f)"
printf "%-44s %14s %14s %8s\n" "  pair ratios min–max" "" "" "$(minmax "${e_ratios[@]}")"
printf "%-44s %14s %14s %8s\n" "E: instructions per request, 2 / 10,000" "${R[gw-2.ir]}" "${R[gw-10k.ir]}" "$(fmt "$(div "${R[gw-10k.ir]}" "${R[gw-2.ir]}")" %.3f)"
fk=$(echo "$F_KEYS" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
printf "%-44s %14s %14s %8s\n" "F: RPS, 10 / $fk keys in the store" "$(median %.0f "${f_small[@]}")" "$(median %.0f "${f_large[@]}")" "$(fmt "$(median %.4f "${f_ratios[@]}")" %.3f)"
printf "%-44s %14s %14s %8s\n" "  pair ratios min–max" "" "" "$(minmax "${f_ratios[@]}")"
printf "%-44s %14s %14s %8s\n" "F: CPU µs per request, 10 / $fk (median)" "$(median %.1f "${f_cpu_small[@]}")" "$(median %.1f "${f_cpu_large[@]}")" "$(fmt "$(median %.4f "${f_cpu_ratios[@]}")" %.3f)"
printf "%-44s %14s %14s %8s\n" "  pair ratios min–max" "" "" "$(minmax "${f_cpu_ratios[@]}")"
f_irs=$(median %.0f "${f_ir_small[@]}") f_irl=$(median %.0f "${f_ir_large[@]}")
printf "%-44s %14s %14s %8s\n" "F: instructions per request, 10 / $fk" "$f_irs" "$f_irl" "$(fmt "$(div "$f_irl" "$f_irs")" %.3f)"
printf "%-44s %14s %14s %8s\n" "  $CG_RUNS runs min–max" "$(range "${f_ir_small[@]}")" "$(range "${f_ir_large[@]}")" ""
printf "%-44s %14s %14s %8s\n" "F: start-up ms (launch to listening; median)" "$(median %.0f "${f_st_small[@]}")" "$(median %.0f "${f_st_large[@]}")" ""
f_rs=$(median %.0f "${f_rss_small[@]}") f_rl=$(median %.0f "${f_rss_large[@]}")
printf "%-44s %14s %14s %8s\n" "F: VmRSS MiB after start-up (median)" "$(fmt "$f_rs" %.0f | awk '{printf "%.1f", $1 / 1024}')" "$(fmt "$f_rl" %.0f | awk '{printf "%.1f", $1 / 1024}')" ""
printf "%-44s %14s %14s %8s\n" "F: RSS per added key (bytes)" "" "$(awk -v a="$f_rl" -v b="$f_rs" -v n="$F_KEYS" 'BEGIN{printf "%.0f", (a - b) * 1024 / (n - 10)}')" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: events received" "$(field "${R[gateway.streams]}" events)" "$(field "${R[nginx.streams]}" events)" ""
echo
echo "A, pair by pair (gateway first in each pair):"
printf '%s\n' "${pair_lines[@]}"
echo "F, pair by pair (10 keys first in each pair; start-up and VmRSS: 10 / $F_KEYS keys):"
printf '%s\n' "${f_lines[@]}"
echo
echo "raw:"
for k in gateway.lat nginx.lat direct.lat gateway.streams nginx.streams; do echo "  $k: ${R[$k]}"; done
} | tee "$OUT"
[ "$incomplete_total" = 0 ] || fail "C: $incomplete_total streams were incomplete (see the table above)"
