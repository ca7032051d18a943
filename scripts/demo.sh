#!/bin/sh
# demo.sh — `make run`: start the simulated provider and the gateway with examples/demo.yaml,
# print requests to paste, and stop both on Ctrl-C.  Each run starts with a fresh store
# (./data/demo.db), so the accounts' windows and credits start full.
set -eu
cd "$(dirname "$0")/.."
: "${QG_DEMO_PORT:=8080}" "${QG_SIM_PORT:=9100}" "${QG_DEMO_KEY:=qg-demo-key-0001}"
QG_DEMO_PROMO_EXPIRES=$(date -u -d '+3 days' +%Y-%m-%dT%H:%M:%SZ)
export QG_DEMO_PORT QG_SIM_PORT QG_DEMO_KEY QG_DEMO_PROMO_EXPIRES
rm -f data/demo.db data/demo.db-wal data/demo.db-shm
build/quotagate sim --listen "127.0.0.1:$QG_SIM_PORT" --chunk-delay 30ms \
  --account sim-flaky=429,retry_after=30 --account sim-backup=ok,limit=5/1h --account sim-promo=ok,credits=12 &
sim=$!
build/quotagate serve -c examples/demo.yaml &
gw=$!
trap 'kill -TERM $gw $sim 2>/dev/null; wait $gw $sim 2>/dev/null; exit 0' INT TERM
for i in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$QG_DEMO_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
G=http://127.0.0.1:$QG_DEMO_PORT
cat <<MSG

quotagate demo is running: gateway $G, simulated provider :$QG_SIM_PORT
Paste one of these into another terminal (from this directory):

  curl -s $G/v1/chat/completions -H "Authorization: Bearer $QG_DEMO_KEY" \\
       -H 'Content-Type: application/json' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'

  curl -sN $G/v1/messages -H "x-api-key: $QG_DEMO_KEY" -H 'anthropic-version: 2023-06-01' \\
       -H 'Content-Type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}'

Quota routing: gpt-4o-mini has four accounts (examples/demo.yaml): promo (12 requests of
credit expiring in 3 days: spent first), main (8 per 5 h), flaky (always 429: cooled 30 s),
backup (lower tier, 5 an hour by its headers).  This loop sends 30 requests and prints, per
request, the status and the account that served it; the last ones find every account spent
and get 503 with Retry-After, without any upstream call:

  for i in \$(seq 1 30); do curl -s -o /dev/null -w '%{http_code} ' $G/v1/chat/completions \\
    -H "Authorization: Bearer $QG_DEMO_KEY" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'; done; echo
  curl -s "$G/admin/usage?model=gpt-4o-mini&limit=30" -H "Authorization: Bearer \${QUOTAGATE_ADMIN_TOKEN:-demo-admin-token}" \\
    | python3 -c 'import json,sys; print(" ".join(r["account"] or "-" for r in reversed(json.load(sys.stdin)["rows"])))'
  curl -si $G/v1/chat/completions -H "Authorization: Bearer $QG_DEMO_KEY" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' | grep -iE '^HTTP|retry-after|"message"'
  build/quotagate status -c examples/demo.yaml

Key budgets: the key qg-demo-limited-0001 may send 5 requests per 2 minutes (and 20,000
tokens a day). Each answer says what is left (x-quota-* headers); the 6th gets 429
key_policy_exhausted with Retry-After and the reset time:

  for i in \$(seq 1 6); do curl -si $G/v1/chat/completions -H "Authorization: Bearer qg-demo-limited-0001" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' | grep -iE '^HTTP|^x-quota-(2m|daily)|retry-after|"message"'; echo; done
  build/quotagate keys show demo-limited -c examples/demo.yaml

Keys made at run time (stored hashed; the secret is printed once): a key with 3 requests
per 5 minutes; use it until the 429, see its window, then disable it (403 key_disabled):

  build/quotagate keys create team-a --policy period=5m,limit=3,unit=requests -c examples/demo.yaml
  K=qg-...   # the secret printed above
  for i in \$(seq 1 4); do curl -si $G/v1/chat/completions -H "Authorization: Bearer \$K" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' | grep -iE '^HTTP|^x-quota-5m|retry-after|"message"'; echo; done
  build/quotagate keys list -c examples/demo.yaml
  build/quotagate keys disable key_... -c examples/demo.yaml   # its id, from the list

Ctrl-C stops both.
MSG
wait $gw
