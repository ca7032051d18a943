#!/usr/bin/env bash
# bench/run.sh — quotagate against nginx proxy_pass, in one run, on this machine.
#
# Both proxies run pinned to core 0, one after the other, in front of the same simulated
# provider (`quotagate sim`), which shares core 1 with the load generator. The gateway runs
# with auth and the ledger on (workers: 1); nginx with an upstream keepalive pool and
# proxy_buffering off. Figures (see docs/bench.md):
#   A  non-stream RPS (wrk -c32) and CPU µs per request (utime+stime of the proxy / requests)
#   B  p50/p99 at a fixed 1,000 req/s, minus the same for a direct call to the simulator
#   C  1,000 concurrent streams (100 events, 50 ms apart): CPU µs per forwarded event,
#      RSS per open stream, incomplete streams
#   D  instructions per request under valgrind --tool=callgrind (2,000 requests after warm-up)
# Results go to stdout and bench/results/latest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/quotagate LOAD=build/qgload
DUR=${BENCH_SECONDS:-10}
dir=$(mktemp -d /tmp/qg-bench.XXXXXX)
SIM=19401 GW=19402 NGX=19403
KEY=bench-key-000001
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"; }
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
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
    accounts: [{ name: a, api_key: sim-bench }]
keys:
  - { name: bench, key: $KEY }
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

start_sim() { taskset -c 1 "$BIN" sim --listen 127.0.0.1:$SIM "$@" >"$dir/sim.log" 2>&1 & sim_pid=$!; pids+=("$sim_pid"); wait_port $SIM; }
stop_sim() { kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; }
start_proxy() { # start_proxy gateway|nginx [wrapper...] ; sets proxy_pid and port
  local which=$1; shift
  if [ "$which" = gateway ]; then port=$GW; taskset -c 0 "$@" "$BIN" serve -c "$dir/gw.yaml" >"$dir/gw.log" 2>&1 &
  else port=$NGX; taskset -c 0 "$@" nginx -c "$dir/nginx.conf" >"$dir/nginx.log" 2>&1 &
  fi
  proxy_pid=$!; pids+=("$proxy_pid"); wait_port $port
}
stop_proxy() { kill -TERM "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }

declare -A R
# ---- A: closed-loop RPS and CPU per request
start_sim --chunks 8 --workers 1
for which in gateway nginx; do
  start_proxy $which
  taskset -c 1 wrk -t1 -c32 -d2s -s "$dir/post.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  c0=$(cpu_ticks "$proxy_pid")
  out=$(taskset -c 1 wrk -t1 -c32 -d"${DUR}"s -s "$dir/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
  c1=$(cpu_ticks "$proxy_pid")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  R[$which.rps]=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  R[$which.non2xx]=$(echo "$out" | awk '/Non-2xx/{print $NF}'); R[$which.non2xx]=${R[$which.non2xx]:-0}
  R[$which.cpu_us]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
  # ---- B: latency at a fixed rate through this proxy
  R[$which.lat]=$(taskset -c 1 "$LOAD" rate -p $port -r 1000 -d "$DUR" -c 64 -k $KEY -m bench-model || true)
  stop_proxy
done
R[direct.lat]=$(taskset -c 1 "$LOAD" rate -p $SIM -r 1000 -d "$DUR" -c 64 -k sim-bench -m bench-model || true)
stop_sim

# ---- C: 1,000 concurrent streams
start_sim --chunks 100 --chunk-delay 50ms --workers 1
for which in gateway nginx; do
  start_proxy $which
  sleep 0.5
  c0=$(cpu_ticks "$proxy_pid")
  R[$which.streams]=$(taskset -c 1 "$LOAD" streams -p $port -n 1000 -k $KEY -m bench-model -s 3 -P "$proxy_pid" || true)
  c1=$(cpu_ticks "$proxy_pid")
  ev=$(echo "${R[$which.streams]}" | sed 's/.*events=\([0-9]*\).*/\1/')
  R[$which.cpu_ev]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$ev" 'BEGIN{printf "%.2f", (n ? t / hz * 1e6 / n : 0)}')
  stop_proxy
done
stop_sim

# ---- D: instructions per request (callgrind), same requests for both
start_sim --chunks 8 --workers 1
for which in gateway nginx; do
  start_proxy $which valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$which.%p" -q
  taskset -c 1 "$LOAD" rate -p $port -r 100 -d 2 -c 1 -k $KEY -m bench-model >/dev/null   # warm-up: 200
  callgrind_control -z "$proxy_pid" >/dev/null
  taskset -c 1 "$LOAD" rate -p $port -r 400 -d 5 -c 1 -k $KEY -m bench-model >/dev/null   # measured: 2,000
  callgrind_control -d "$proxy_pid" >/dev/null
  sleep 0.5
  f=$(ls -t "$dir"/cg.$which.* | head -1)
  ir=$(awk '/^summary:|^totals:/{print $2; exit}' "$f")
  R[$which.ir]=$(awk -v i="$ir" 'BEGIN{printf "%.0f", i / 2000}')
  stop_proxy
done
stop_sim

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%d", a - b}'; }
per_stream() { awk -v a="$(field "$1" rss_during_kib)" -v b="$(field "$1" rss_before_kib)" 'BEGIN{printf "%.1f", (a - b) / 1000}'; }

{
echo "quotagate bench — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(nproc) cores, $(uname -r)"
echo "proxies pinned to core 0 (one at a time); wrk/qgload and the simulator on core 1"
echo
printf "%-44s %14s %14s %8s\n" "figure" "gateway" "nginx" "ratio"
printf "%-44s %14s %14s %8s\n" "non-stream RPS (wrk -c32, ${DUR}s)" "${R[gateway.rps]}" "${R[nginx.rps]}" "$(ratio "${R[gateway.rps]}" "${R[nginx.rps]}")"
printf "%-44s %14s %14s %8s\n" "non-2xx responses" "${R[gateway.non2xx]}" "${R[nginx.non2xx]}" ""
printf "%-44s %14s %14s %8s\n" "CPU µs per request" "${R[gateway.cpu_us]}" "${R[nginx.cpu_us]}" "$(ratio "${R[gateway.cpu_us]}" "${R[nginx.cpu_us]}")"
printf "%-44s %14s %14s %8s\n" "instructions per request (callgrind)" "${R[gateway.ir]}" "${R[nginx.ir]}" "$(ratio "${R[gateway.ir]}" "${R[nginx.ir]}")"
for p in p50 p99; do
  d=$(field "${R[direct.lat]}" ${p}_us)
  printf "%-44s %14s %14s %8s\n" "$p added over direct at 1,000 req/s (µs)" "$(added "$(field "${R[gateway.lat]}" ${p}_us)" "$d")" "$(added "$(field "${R[nginx.lat]}" ${p}_us)" "$d")" ""
done
printf "%-44s %14s %14s %8s\n" "  (direct call p50 / p99 µs)" "$(field "${R[direct.lat]}" p50_us) / $(field "${R[direct.lat]}" p99_us)" "" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: CPU µs per forwarded event" "${R[gateway.cpu_ev]}" "${R[nginx.cpu_ev]}" "$(ratio "${R[gateway.cpu_ev]}" "${R[nginx.cpu_ev]}")"
printf "%-44s %14s %14s %8s\n" "1,000 streams: RSS KiB per open stream" "$(per_stream "${R[gateway.streams]}")" "$(per_stream "${R[nginx.streams]}")" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: incomplete" "$(field "${R[gateway.streams]}" incomplete)" "$(field "${R[nginx.streams]}" incomplete)" ""
printf "%-44s %14s %14s %8s\n" "1,000 streams: events received" "$(field "${R[gateway.streams]}" events)" "$(field "${R[nginx.streams]}" events)" ""
echo
echo "raw:"
for k in gateway.lat nginx.lat direct.lat gateway.streams nginx.streams; do echo "  $k: ${R[$k]}"; done
} | tee bench/results/latest.txt
