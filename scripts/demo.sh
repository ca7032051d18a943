#!/bin/sh
# demo.sh — `make run`: start the simulated provider and the gateway with examples/demo.yaml,
# print requests to paste, and stop both on Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
: "${QG_DEMO_PORT:=8080}" "${QG_SIM_PORT:=9100}" "${QG_DEMO_KEY:=qg-demo-key-0001}"
export QG_DEMO_PORT QG_SIM_PORT QG_DEMO_KEY
build/quotagate sim --listen "127.0.0.1:$QG_SIM_PORT" --chunk-delay 30ms &
sim=$!
build/quotagate serve -c examples/demo.yaml &
gw=$!
trap 'kill -TERM $gw $sim 2>/dev/null; wait $gw $sim 2>/dev/null; exit 0' INT TERM
for i in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$QG_DEMO_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

quotagate demo is running: gateway http://127.0.0.1:$QG_DEMO_PORT, simulated provider :$QG_SIM_PORT
Paste one of these into another terminal:

  curl -s http://127.0.0.1:$QG_DEMO_PORT/v1/chat/completions -H "Authorization: Bearer $QG_DEMO_KEY" \\
       -H 'Content-Type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

  curl -sN http://127.0.0.1:$QG_DEMO_PORT/v1/messages -H "x-api-key: $QG_DEMO_KEY" -H 'anthropic-version: 2023-06-01' \\
       -H 'Content-Type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}'

  curl -s "http://127.0.0.1:$QG_DEMO_PORT/admin/usage?limit=5" -H "Authorization: Bearer \${QUOTAGATE_ADMIN_TOKEN:-demo-admin-token}"

Ctrl-C stops both.
MSG
wait $gw
