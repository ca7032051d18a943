"""adminkeys.py — end-to-end tests of the admin key API (issue 15, /work/notes/keys-api-contract.md;
SPEC §5): keys made, changed and deleted at run time with POST/GET/PATCH/DELETE /admin/keys,
POST /admin/keys/{id}/disable|enable|reset and GET /admin/drift, against the real gateway and
simulator.

- create / use / show once: the secret (qg- + 48 hex) is answered once, works as Bearer and
  as x-api-key, is never in a view, the list, the SQLite file (db, -wal, -shm) or the log; the
  store holds its SHA-256; ledger rows carry key_id and key_name
- disable / enable / expiry: 403 key_disabled in both dialects and on /v1/models, no upstream
  call; the view's status follows (disabled, expired, active)
- PATCH policies and name: a policy with the same period, anchor and unit keeps its counters
  (only the limit changed), one with another signature starts at 0; a rename changes no
  counter; the ledger agrees, drift 0
- delete: 401 after, 404 on every operation, 409 key_from_config for static keys (whose reset
  still works)
- validation: 400 invalid_request naming the field, nothing created
- restarts (SIGTERM and kill -9) keep keys, their status and counters
- keys changed while streams run (the version taken at the head stays valid: keydir.h);
  run under ASan in the suite
- pagination in creation order, config keys first, deleted keys absent
- drift 0 under a mixed load (success, upstream error, client cancel, cut stream)
- 50 concurrent creates
- three found defects, one test each (they fail until the server is fixed): a policy PATCHed
  away and back keeps its stored count but not its live one (drift); names of 64+ characters
  are accepted (the contract says 1..63; ledger rows cut them to 63); a page's `next` can be
  a deleted key's id, which 404s after a restart

Solo tests in run.py's sense: each has its own simulator and gateway (harness.solo_test),
closed after it, which fails the test on any AddressSanitizer / UBSan report in the logs
(restarts check the log first: keys.restart)."""

import hashlib
import json
import os
import re
import signal
import sqlite3
import threading
import time

from harness import ADMIN, Client, eq, request, settled, solo_test, sse_events
from keys import body, check_logs, gateway, hdrs, jbody, key_entry, policy, post, prov, restart, sim_req, whole_s

ADMINKEYS_TESTS = []

adminkeys_test = solo_test(ADMINKEYS_TESTS)

ADMIN_HDRS = {"Authorization": "Bearer " + ADMIN}
SECRET_RE = re.compile(r"^qg-[0-9a-f]{48}$")
ID_RE = re.compile(r"^key_[0-9a-f]{16}$")
CHAT, MSGS = "/v1/chat/completions", "/v1/messages"


# ---------------------------------------------------------------- helpers

def now_ms():
    return int(time.time() * 1000)


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000.0))


def api(env, method, path, data=None):
    """An admin call; a POST without a body sends Content-Length: 0."""
    if data is None and method == "POST":
        data = b""
    return request(env.port, method, path, data, ADMIN_HDRS)


def pol(period, limit, unit="tokens", **kw):
    return dict(kw, period=period, limit=limit, unit=unit)


def create(env, name, policies=(), **fields):
    r = api(env, "POST", "/admin/keys", dict(fields, name=name, policies=list(policies)))
    eq(r.status, 201, "POST /admin/keys %s (%r)" % (name, r.body[:300]))
    k = jbody(r)
    assert SECRET_RE.match(k.get("key") or ""), "the secret: %r" % k.get("key")
    assert ID_RE.match(k["id"]), "the id: %r" % k["id"]
    return k


def view(env, kid):
    r = api(env, "GET", "/admin/keys/" + kid)
    eq(r.status, 200, "GET /admin/keys/%s (%r)" % (kid, r.body[:300]))
    k = jbody(r)
    assert "key" not in k, "a view carries the secret: %r" % k
    return k


def patch(env, kid, fields, what):
    r = api(env, "PATCH", "/admin/keys/" + kid, fields)
    eq(r.status, 200, "%s: PATCH (%r)" % (what, r.body[:300]))
    k = jbody(r)
    assert "key" not in k, "%s: the PATCH answer carries the secret" % what
    return k


def listing(env, query=""):
    r = api(env, "GET", "/admin/keys" + query)
    eq(r.status, 200, "GET /admin/keys%s (%r)" % (query, r.body[:300]))
    return jbody(r)


def drift(env):
    r = api(env, "GET", "/admin/drift")
    eq(r.status, 200, "GET /admin/drift (%r)" % r.body[:300])
    return jbody(r)


def check_drift(env, windows, what):
    d = drift(env)
    eq((d["quota_counter_drift"], d["windows_checked"], d["keys_in_flight"]), (0, windows, 0),
       what + ": drift, windows checked, keys in flight (%r)" % d)


def check_error(r, status, code, what, dialect="openai"):
    eq(r.status, status, what + ": status (%r)" % r.body[:300])
    j = jbody(r)
    if dialect == "anthropic":
        eq(j.get("type"), "error", what + ": Anthropic shape {type: error, error: {...}}")
        assert isinstance(j.get("error"), dict) and j["error"].get("type"), what + ": Anthropic error %r" % j
    else:
        assert "type" not in j and {"message", "type", "code", "param"} <= set(j.get("error", {})), \
            what + ": OpenAI shape %r" % j
    eq(j["error"].get("code"), code, what + ": code")
    return j["error"].get("message") or ""


def rows_of(env, kid):
    """The ledger rows of a key id, oldest first, once every request made has its row."""
    settled(env)
    return [r for r in env.ledger_rows() if r["key_id"] == kid]


def tokens(rows):
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)


def window_rows(env, kid):
    con = sqlite3.connect(env.db)
    try:
        return sorted(x[0] for x in con.execute("select used from key_window where key_id = ?", (kid,)))
    finally:
        con.close()


def api_key_count(env):
    con = sqlite3.connect(env.db)
    try:
        return con.execute("select count(*) from api_key").fetchone()[0]
    finally:
        con.close()


def words(n):
    return "".join("w%d " % i for i in range(1, n + 1))


def stream_content(r):
    """(content of an OpenAI stream, whether it ended with [DONE])."""
    evs = sse_events(r.body)
    text = ""
    for _, d in evs:
        if d.startswith("{"):
            for ch in json.loads(d).get("choices") or []:
                text += (ch.get("delta") or {}).get("content") or ""
    return text, bool(evs) and evs[-1][1] == "[DONE]"


def run_threads(fns, timeout=60):
    """Runs every fn in its own thread at once; returns their results in order, raising the
    first exception."""
    out, errs = [None] * len(fns), []

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))

    ts = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not errs, "thread errors: %r" % errs[:5]
    assert not any(t.is_alive() for t in ts), "threads still running after %ss" % timeout
    return out


def one_provider(env, models="m1", *extra_sim):
    env.sim = env.start_sim(*extra_sim)
    return prov("p1", env.sim, models, "up-ok")


# ---------------------------------------------------------------- 1. create, use, shown once

@adminkeys_test
def test_adminkeys_create_use_secret_shown_once(env):
    """POST /admin/keys answers 201 with the key and its secret (qg- + 48 hex, 51 chars; id
    key_ + 16 hex; prefix = the secret's first 10); the secret works as Bearer and as
    x-api-key; the views (GET, the list, PATCH / disable / enable answers) never carry it;
    the store holds its SHA-256 (a 32-byte blob) and the secret is nowhere in the SQLite
    files nor in the log; the key's ledger rows carry key_id and key_name; the view's used
    is the rows' sum."""
    providers = one_provider(env, "m1, m1b")
    gateway(env, providers, "")
    t0 = now_ms()
    k = create(env, "alpha", [pol("daily", 1000000)], models=["m1"])
    secret, kid = k["key"], k["id"]
    t1 = now_ms()
    eq(len(secret), 51, "secret length")
    eq((k["name"], k["source"], k["prefix"], k["status"], k["disabled"], k["paused"], k["models"], k["total_quota"],
        k["expires_at"]), ("alpha", "store", secret[:10], "active", False, None, ["m1"], None, None), "the new key")
    assert t0 // 1000 * 1000 <= k["created_at_ms"] <= t1 and k["created_at"] == rfc3339(k["created_at_ms"]), k["created_at"]
    eq(len(k["policies"]), 1, "one policy")
    p = k["policies"][0]
    eq((p["period"], p["unit"], p["limit"], p["boundary"], p["on_exhausted"], p["auto_resume"], p["used"], p["remaining"],
        p["exhausted"]), ("daily", "tokens", 1000000, "strict", "reject", True, 0, 1000000, False), "its policy")

    data = body("m1", max_tokens=3)
    r = post(env, secret, CHAT, data)
    eq(r.status, 200, "Bearer secret (%r)" % r.body[:200])
    eq(int(r.headers["x-quota-daily-remaining"]), 1000000 - (len(data) // 4 + 3), "x-quota-daily-remaining")
    r = request(env.port, "POST", CHAT, data, {"x-api-key": secret})
    eq(r.status, 200, "x-api-key secret (%r)" % r.body[:200])
    eq(jbody(r)["choices"][0]["message"]["content"], "w1 w2 w3 ", "the provider's answer came through")
    eq(sim_req(env, "up-ok"), 2, "both reached the provider")
    check_error(post(env, secret, CHAT, body("m1b", max_tokens=3)), 403, "model_not_allowed", "a model the key may not use")

    rows = rows_of(env, kid)
    eq([(x["key_id"], x["key_name"], x["status"]) for x in rows],
       [(kid, "alpha", 200), (kid, "alpha", 200), (kid, "alpha", 403)], "the key's ledger rows")
    v = view(env, kid)
    eq(v["policies"][0]["used"], tokens(rows), "the view's used = the rows' tokens")
    eq(window_rows(env, kid), [tokens(rows)], "key_window holds the rows' tokens under the key's id")

    shown = [api(env, "GET", "/admin/keys/" + kid).body, api(env, "GET", "/admin/keys").body,
             api(env, "GET", "/admin/keys?limit=1&after=other").body]
    for method, path, data in (("PATCH", "/admin/keys/" + kid, {"name": "alpha"}), ("POST", "/admin/keys/%s/disable" % kid, None),
                               ("POST", "/admin/keys/%s/enable" % kid, None), ("POST", "/admin/keys/%s/reset" % kid, None)):
        r = api(env, method, path, data)
        eq(r.status, 200, "%s %s" % (method, path))
        shown.append(r.body)
    for i, b in enumerate(shown):
        assert secret.encode() not in b and secret[10:].encode() not in b, "answer %d carries the secret: %r" % (i, b[:300])
        assert b'"key":' not in b, "answer %d has a key field: %r" % (i, b[:300])
    eq([x["id"] for x in listing(env, "?limit=1&after=other")["data"]], [kid], "the list after the config keys")

    con = sqlite3.connect(env.db)
    try:
        h, prefix, name = con.execute("select hash, prefix, name from api_key where id = ?", (kid,)).fetchone()
    finally:
        con.close()
    assert isinstance(h, bytes) and len(h) == 32, "the stored hash is a 32-byte blob: %r" % (h,)
    eq(h, hashlib.sha256(secret.encode()).digest(), "the stored hash = SHA-256 of the secret")
    eq((prefix, name), (secret[:10], "alpha"), "stored prefix and name")
    files = [env.db + s for s in ("", "-wal", "-shm") if os.path.exists(env.db + s)]
    assert env.db + "-wal" in files, "the store runs in WAL mode: %r" % files
    for f in files:
        with open(f, "rb") as fh:
            raw = fh.read()
        assert secret.encode() not in raw and secret[3:].encode() not in raw and secret[10:].encode() not in raw, \
            "the secret is in %s" % f
        assert secret[3:].encode("utf-16-le") not in raw and bytes.fromhex(secret[3:]) not in raw, \
            "the secret's bytes are in %s" % f
    assert secret[10:] not in env.gw_log(), "the secret is in the gateway's log"


# ---------------------------------------------------------------- 2. disable, enable, expiry

@adminkeys_test
def test_adminkeys_disable_enable_expiry(env):
    """disable → 403 key_disabled ("disabled") on chat (OpenAI shape), messages with x-api-key
    (Anthropic shape) and /v1/models, with no upstream call; the view says disabled; enable →
    served again; PATCH expires_at 1-2 s ahead → served until then, then 403 key_disabled
    "expired" in both dialects, the view says expired (disabled false); expires_at null →
    active again."""
    env.sim = env.start_sim()
    gateway(env, prov("p1", env.sim, "m2", "up-o") + prov("pa", env.sim, "c2", "up-a", dialect="anthropic"), "", workers=2)
    k = create(env, "gate", [pol("daily", 1000000)])
    secret, kid = k["key"], k["id"]
    anth = {"x-api-key": secret, "anthropic-version": "2023-06-01"}

    def calls():
        return (post(env, secret, CHAT, body("m2", max_tokens=2)),
                request(env.port, "POST", MSGS, body("c2", max_tokens=2), anth),
                request(env.port, "GET", "/v1/models", None, hdrs(secret)),
                request(env.port, "GET", "/v1/models", None, anth))

    def served(what):
        rs = calls()
        eq([r.status for r in rs], [200] * 4, what + ": chat, messages, models (OpenAI and Anthropic)")
        eq(jbody(rs[2])["object"], "list", what + ": models list")
        eq({m["id"] for m in jbody(rs[2])["data"]}, {"m2", "c2"}, what + ": the models")

    def refused(word, what):
        before = (sim_req(env, "up-o"), sim_req(env, "up-a"))
        rc, ra, rm, rma = calls()
        for r, dialect, w in ((rc, "openai", "chat"), (ra, "anthropic", "messages"), (rm, "openai", "models"),
                              (rma, "anthropic", "models (Anthropic)")):
            msg = check_error(r, 403, "key_disabled", "%s: %s" % (what, w), dialect)
            assert word in msg, "%s: %s: the message says %s: %r" % (what, w, word, msg)
        eq((sim_req(env, "up-o"), sim_req(env, "up-a")), before, what + ": no upstream call")

    served("new key")
    r = api(env, "POST", "/admin/keys/%s/disable" % kid)
    eq(r.status, 200, "disable (%r)" % r.body[:200])
    eq((jbody(r)["status"], jbody(r)["disabled"]), ("disabled", True), "the disable answer")
    refused("disabled", "disabled")
    v = view(env, kid)
    eq((v["status"], v["disabled"], v["expires_at"]), ("disabled", True, None), "view when disabled")
    r = api(env, "POST", "/admin/keys/%s/enable" % kid)
    eq(r.status, 200, "enable")
    eq((jbody(r)["status"], jbody(r)["disabled"]), ("active", False), "the enable answer")
    served("enabled again")
    eq(view(env, kid)["status"], "active", "view when enabled")

    exp = whole_s(now_ms() + 1000)  # RFC 3339 in whole seconds: 1-2 s from now
    v = patch(env, kid, {"expires_at": rfc3339(exp)}, "expires_at")
    eq((v["status"], v["expires_at"], v["expires_at_ms"]), ("active", rfc3339(exp), exp), "the PATCH answer")
    assert now_ms() < exp - 300, "too slow to test before the expiry"
    served("before the expiry")
    time.sleep(max(0, exp - now_ms()) / 1000.0 + 0.05)
    refused("expired", "expired")
    v = view(env, kid)
    eq((v["status"], v["disabled"], v["expires_at"]), ("expired", False, rfc3339(exp)), "view when expired")
    v = patch(env, kid, {"expires_at": None}, "expires_at null")
    eq((v["status"], v["expires_at"]), ("active", None), "no expiry any more")
    served("expiry removed")
    rows = rows_of(env, kid)
    eq(sorted({x["status"] for x in rows}), [200, 403], "ledger rows of the key: served and refused")
    eq(sum(1 for x in rows if x["status"] == 403), 4, "the two refused chat/messages pairs each left a row")


# ---------------------------------------------------------------- 3. PATCH policies and name

@adminkeys_test
def test_adminkeys_patch_policies_keeps_counters(env):
    """A key {90m, 100 requests} + {daily, tokens}: 3 requests; PATCH the policies to
    {90m, 50 requests} alone → used 3 carried (same period, anchor, unit: the same counters),
    remaining 47 and the next request's header says 46; a rename changes no counter, the
    rows after it carry the new name and the same key_id; used = the key's row count;
    key_window holds the 90m count and the tokens of the 3 rows the daily policy saw; drift
    0.  A policy whose signature changes (unit tokens) starts from 0, and a return to the
    first signature finds its words again."""
    gateway(env, one_provider(env, "m3"), "")
    k = create(env, "pat", [pol("90m", 100, "requests"), pol("daily", 1000000)])
    secret, kid = k["key"], k["id"]
    for i in range(3):
        eq(post(env, secret, CHAT, body("m3", max_tokens=2)).status, 200, "request %d" % (i + 1))
    rows = rows_of(env, kid)
    v = view(env, kid)
    eq([(p["period"], p["used"]) for p in v["policies"]], [("90m", 3), ("daily", tokens(rows))], "used before the PATCH")

    v = patch(env, kid, {"policies": [pol("90m", 50, "requests")]}, "limit changed, daily removed")
    eq([(p["period"], p["unit"], p["limit"], p["used"], p["remaining"]) for p in v["policies"]],
       [("90m", "requests", 50, 3, 47)], "the PATCH answer: the counter carried")
    eq(view(env, kid)["policies"], v["policies"], "GET = the PATCH answer")
    r = post(env, secret, CHAT, body("m3", max_tokens=2))
    eq(r.status, 200, "after the PATCH")
    eq(int(r.headers["x-quota-90m-remaining"]), 46, "x-quota-90m-remaining: 50 - 3 - this one")
    assert "x-quota-daily-remaining" not in r.headers, "the removed policy is gone from the headers"

    v = patch(env, kid, {"name": "pat-renamed"}, "rename")
    eq((v["id"], v["name"], v["policies"][0]["used"], v["policies"][0]["limit"]), (kid, "pat-renamed", 4, 50),
       "the rename changed no counter")
    eq(post(env, secret, CHAT, body("m3", max_tokens=2)).status, 200, "after the rename")
    rows = rows_of(env, kid)
    eq([x["key_name"] for x in rows], ["pat"] * 4 + ["pat-renamed"], "rows carry the name at their request")
    v = view(env, kid)
    eq(v["policies"][0]["used"], len(rows), "used = the key's rows (by key_id)")
    eq(v["policies"][0]["used"], 5, "used")
    eq(window_rows(env, kid), sorted([5, tokens(rows[:3])]), "key_window: 90m count and the daily tokens of the 3 rows")
    check_drift(env, 1, "after the PATCHes")

    v = patch(env, kid, {"policies": [pol("90m", 50, "tokens")]}, "unit changed")
    eq((v["policies"][0]["unit"], v["policies"][0]["used"]), ("tokens", 0), "another signature: fresh counters")
    check_drift(env, 1, "after a signature change")


@adminkeys_test
def test_adminkeys_policy_back_after_two_patches_keeps_its_counter(env):
    """Counters are keyed by (key id, policy signature) in the store (docs/keys.md).  A
    {90m, requests} policy used 5 times, PATCHed to {90m, tokens} (another signature: 0),
    then PATCHed back to {90m, requests}: the store still holds 5 for that signature and
    window, so the live counter must show 5 too — otherwise drift is 5 and a restart
    changes what the key may still do (qg_keyq_new_from looks only at the version it
    replaces)."""
    gateway(env, one_provider(env, "m3"), "")
    k = create(env, "back", [pol("90m", 100, "requests")])
    for i in range(5):
        eq(post(env, k["key"], CHAT, body("m3", max_tokens=2)).status, 200, "request %d" % (i + 1))
    settled(env)
    eq(view(env, k["id"])["policies"][0]["used"], 5, "used")
    v = patch(env, k["id"], {"policies": [pol("90m", 50, "tokens")]}, "to tokens")
    eq(v["policies"][0]["used"], 0, "another signature: fresh counters")
    live = patch(env, k["id"], {"policies": [pol("90m", 60, "requests")]}, "back to requests")["policies"][0]
    d = drift(env)
    restart(env)
    stored = view(env, k["id"])["policies"][0]
    eq((stored["used"], stored["remaining"]), (5, 55), "after a restart: the store's count for the signature")
    eq((live["used"], live["remaining"], d["quota_counter_drift"]), (stored["used"], stored["remaining"], 0),
       "live (before the restart) = stored: used, remaining, drift")
    # away, a restart (no version in memory has it any more), and back: the store's count again
    eq(patch(env, k["id"], {"policies": [pol("90m", 50, "tokens")]}, "to tokens again")["policies"][0]["used"], 0,
       "another signature")
    restart(env)
    back = patch(env, k["id"], {"policies": [pol("90m", 60, "requests")]}, "back after a restart")["policies"][0]
    eq((back["used"], back["remaining"]), (5, 55), "back after a restart: the store's count (keystore restore_fresh)")
    eq(drift(env)["quota_counter_drift"], 0, "drift after coming back across a restart")


# ---------------------------------------------------------------- 4. delete, and static keys

@adminkeys_test
def test_adminkeys_delete_and_static_keys(env):
    """DELETE → 200 {"id", "deleted": true}; the secret then gets 401 invalid_api_key (chat,
    messages, models); GET, PATCH, disable, enable, reset and DELETE again → 404
    key_not_found; absent from the list; its rows stay in the ledger; the store forgets it.
    A static key: PATCH, DELETE, disable, enable → 409 key_from_config (and it keeps
    working), reset → 200 with its window zeroed."""
    gateway(env, one_provider(env, "m4"), key_entry("st", "static-key-000001", [policy("daily", 1000, "requests")]))
    k = create(env, "doomed", [pol("daily", 1000, "requests")])
    secret, kid = k["key"], k["id"]
    eq(post(env, secret, CHAT, body("m4", max_tokens=2)).status, 200, "before the delete")
    r = api(env, "DELETE", "/admin/keys/" + kid)
    eq(r.status, 200, "DELETE (%r)" % r.body[:200])
    eq(jbody(r), {"id": kid, "deleted": True}, "the DELETE answer")
    check_error(post(env, secret, CHAT, body("m4", max_tokens=2)), 401, "invalid_api_key", "chat after the delete")
    anth = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    check_error(request(env.port, "POST", MSGS, body("m4", max_tokens=2), anth), 401, "invalid_api_key",
                "messages after the delete", "anthropic")
    check_error(request(env.port, "GET", "/v1/models", None, hdrs(secret)), 401, "invalid_api_key", "models after the delete")
    for method, path, data in (("GET", "", None), ("PATCH", "", {"name": "x"}), ("POST", "/disable", None),
                               ("POST", "/enable", None), ("POST", "/reset", None), ("DELETE", "", None)):
        check_error(api(env, method, "/admin/keys/" + kid + path, data), 404, "key_not_found",
                    "%s %s on the deleted key" % (method, path or "/"))
    eq([x["id"] for x in listing(env)["data"]], ["e2e", "other", "st"], "the list without the deleted key")
    eq(sim_req(env, "up-ok"), 1, "only the request before the delete reached the provider")
    eq(api_key_count(env), 0, "api_key: the key is gone from the store")
    eq(window_rows(env, kid), [], "key_window: its counters are gone")
    eq([x["status"] for x in rows_of(env, kid)], [200], "its ledger row stays")

    eq(post(env, "static-key-000001", CHAT, body("m4", max_tokens=2)).status, 200, "the static key")
    eq(view(env, "st")["policies"][0]["used"], 1, "the static key's used")
    for method, path, data in (("PATCH", "", {"name": "st2"}), ("DELETE", "", None), ("POST", "/disable", None),
                               ("POST", "/enable", None)):
        msg = check_error(api(env, method, "/admin/keys/st" + path, data), 409, "key_from_config",
                          "%s %s on a static key" % (method, path or "/"))
        assert "config" in msg, msg
    v = view(env, "st")
    eq((v["name"], v["source"], v["status"], v["policies"][0]["used"]), ("st", "config", "active", 1), "the static key unchanged")
    eq(post(env, "static-key-000001", CHAT, body("m4", max_tokens=2)).status, 200, "the static key still works")
    r = api(env, "POST", "/admin/keys/st/reset")
    eq(r.status, 200, "reset of a static key (%r)" % r.body[:200])
    eq((jbody(r)["id"], jbody(r)["policies"][0]["used"], jbody(r)["policies"][0]["remaining"]), ("st", 0, 1000),
       "the reset zeroed its window")
    r = post(env, "static-key-000001", CHAT, body("m4", max_tokens=2))
    eq((r.status, int(r.headers["x-quota-daily-remaining"])), (200, 999), "after the reset")


# ---------------------------------------------------------------- 5. validation

@adminkeys_test
def test_adminkeys_create_validation(env):
    """POST /admin/keys with a bad body → 400 invalid_request (OpenAI shape) whose message
    names the field: no name, a null name, a bad period, a missing limit, a zero limit, a
    bad unit, a bad status, a "key" field (secrets are made by the gateway), non-JSON, a
    JSON array, truncated JSON; a bad PATCH too; nothing is created or changed."""
    gateway(env, one_provider(env, "m5"), "")
    before = listing(env)["data"]
    ok = [pol("daily", 10)]
    cases = [
        ({"policies": ok}, "name"),
        ({"name": None}, "name"),
        ({"name": "v", "policies": [{"period": "fortnight", "limit": 10}]}, "policies[0].period"),
        ({"name": "v", "policies": ok + [{"period": "5x", "limit": 10}]}, "policies[1].period"),
        ({"name": "v", "policies": [{"period": "daily"}]}, "policies[0].limit"),
        ({"name": "v", "policies": [{"period": "daily", "limit": 0}]}, "policies[0].limit"),
        ({"name": "v", "policies": [{"period": "daily", "limit": 5, "unit": "bogus"}]}, "policies[0].unit"),
        ({"name": "v", "status": "weird"}, "status"),
        ({"name": "v", "key": "qg-" + "0" * 48}, "key"),
        ({"name": "v", "policies": [pol("daily", 1)] * 17}, "policies"),
        (b"this is not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"name": "v", ', None),
        (b"", "body"),
    ]
    for data, field in cases:
        r = api(env, "POST", "/admin/keys", data)
        what = "POST %r" % (data if isinstance(data, bytes) else json.dumps(data)[:80])
        msg = check_error(r, 400, "invalid_request", what)
        if field:
            assert re.search(r"(^|[ :;])%s[:\s]" % re.escape(field), msg), "%s: the message names %s: %r" % (what, field, msg)
    eq(listing(env)["data"], before, "nothing was created")
    eq(api_key_count(env), 0, "api_key is empty")
    k = create(env, "valid", ok)
    msg = check_error(api(env, "PATCH", "/admin/keys/" + k["id"], {"policies": [{"period": "daily", "limit": -3}]}), 400,
                      "invalid_request", "PATCH a negative limit")
    assert "policies[0].limit" in msg, msg
    check_error(api(env, "PATCH", "/admin/keys/" + k["id"], {"name": None}), 400, "invalid_request", "PATCH a null name")
    check_error(api(env, "PATCH", "/admin/keys/" + k["id"], {"key": "qg-" + "1" * 48}), 400, "invalid_request", "PATCH a secret")
    v = view(env, k["id"])
    eq((v["name"], v["policies"][0]["limit"], v["updated_at_ms"]), ("valid", 10, k["updated_at_ms"]),
       "the bad PATCHes changed nothing")
    eq(len(listing(env)["data"]), len(before) + 1, "one key made")


@adminkeys_test
def test_adminkeys_name_longer_than_63_refused(env):
    """The contract: a name has 1..63 characters.  A 63-character name is accepted and is
    what its ledger rows carry in full; a 64- (or 100-) character one must be a 400 naming
    "name" — ledger rows hold 63 characters (ledger.h key_name[64]), so a longer name
    would be cut there."""
    gateway(env, one_provider(env, "m5"), "")
    name63 = "n" * 63
    k = create(env, name63, [pol("daily", 10, "requests")])
    eq(post(env, k["key"], CHAT, body("m5", max_tokens=2)).status, 200, "the 63-character key")
    eq([x["key_name"] for x in rows_of(env, k["id"])], [name63], "its row carries the whole name")
    for n in (64, 100):
        r = api(env, "POST", "/admin/keys", {"name": "m" * n})
        if r.status == 201:  # show what the accepted name does to its rows before failing
            s = jbody(r)
            post(env, s["key"], CHAT, body("m5", max_tokens=2))
            got = [x["key_name"] for x in rows_of(env, s["id"])]
            raise AssertionError("a %d-character name was accepted (201); its ledger row's key_name has %d characters"
                                 % (n, len(got[0]) if got else -1))
        msg = check_error(r, 400, "invalid_request", "a %d-character name" % n)
        assert "name" in msg, msg


# ---------------------------------------------------------------- 6. restarts

@adminkeys_test
def test_adminkeys_restart_keeps_keys_and_counters(env):
    """Two keys with policies (and a disabled third) are used, then the gateway restarts
    (SIGTERM): the views are the same (used, status, prefix, created_at), the secrets still
    work and their headers count on from the restored counters, the disabled key is still
    refused, drift 0.  A key created (and PATCHed) right before a kill -9 is there after it:
    a change is committed before it is answered."""
    gateway(env, one_provider(env, "m6"), "", workers=2)
    a = create(env, "ra", [pol("90m", 100, "requests"), pol("daily", 1000000)])
    b = create(env, "rb", [pol("daily", 500000, boundary="graceful")], total_quota=None)
    c = create(env, "rc", [pol("daily", 10, "requests")], status="disabled")
    eq(c["status"], "disabled", "created disabled")
    for _ in range(3):
        eq(post(env, a["key"], CHAT, body("m6", max_tokens=2)).status, 200, "ra")
    for _ in range(2):
        eq(post(env, b["key"], CHAT, body("m6", max_tokens=4, stream=True)).status, 200, "rb")
    eq(post(env, c["key"], CHAT, body("m6", max_tokens=2)).status, 403, "rc is disabled")
    settled(env)
    before = {k["id"]: view(env, k["id"]) for k in (a, b, c)}
    eq(before[a["id"]]["policies"][0]["used"], 3, "ra used")
    eq(before[b["id"]]["policies"][0]["used"], tokens(rows_of(env, b["id"])), "rb used = its rows' tokens")
    check_drift(env, 4, "before the restart")
    restart(env)
    for kid, v in before.items():
        eq(view(env, kid), v, "%s after the SIGTERM restart" % v["name"])
    eq([x["id"] for x in listing(env)["data"]], ["e2e", "other", a["id"], b["id"], c["id"]], "the list after the restart")
    check_drift(env, 4, "after the restart")
    r = post(env, a["key"], CHAT, body("m6", max_tokens=2))
    eq((r.status, int(r.headers["x-quota-90m-remaining"])), (200, 96), "ra after the restart: 100 - 3 - itself")
    data = body("m6", max_tokens=4)
    r = post(env, b["key"], CHAT, data)
    eq(r.status, 200, "rb after the restart")
    eq(int(r.headers["x-quota-daily-remaining"]), 500000 - before[b["id"]]["policies"][0]["used"] - (len(data) // 4 + 4),
       "rb: remaining counts the restored use")
    check_error(post(env, c["key"], CHAT, body("m6", max_tokens=2)), 403, "key_disabled", "rc after the restart")
    settled(env)

    d = create(env, "rd", [pol("daily", 10, "requests")])
    patch(env, d["id"], {"name": "rd2", "policies": [pol("daily", 20, "requests")]}, "rd just before kill -9")
    restart(env, signal.SIGKILL)
    v = view(env, d["id"])
    eq((v["name"], v["policies"][0]["limit"], v["status"]), ("rd2", 20, "active"), "rd after kill -9")
    r = post(env, d["key"], CHAT, body("m6", max_tokens=2))
    eq((r.status, int(r.headers["x-quota-daily-remaining"])), (200, 19), "rd's secret after kill -9")
    settled(env)
    eq(view(env, a["id"])["policies"][0]["used"], 4, "ra after kill -9 (its 4th row was committed)")
    check_drift(env, 5, "after kill -9")


# ---------------------------------------------------------------- 7. keys changed while streams run

@adminkeys_test
def test_adminkeys_changes_while_streams_run(env):
    """8 streams (30 chunks, 100 ms apart: ~3 s) on key K1 and 4 on key K2, two workers.
    While all are mid-stream: K1's policies are PATCHed (same signature: used shows the 8 in
    flight; then another signature), it is renamed, another key is created and used, K1 is
    disabled (a new request: 403) and deleted (a new request: 401); K2's policies and name
    change.  No stream had ended by then; every stream ends with its whole content and
    [DONE]; ledger rows = requests made; the stream rows carry the name at their head; K2's
    counter holds its 4 streams (settled into the words its new version reads); drift 0; the
    gateway stays up and, after a restart, K1 is still gone and K2 keeps its count.  Under
    ASan: no report (the versions taken at the heads stay valid)."""
    env.sim = env.start_sim("--chunks", "30", "--chunk-delay", "100ms")
    gateway(env, prov("p1", env.sim, "m7", "up-s"), "", workers=2)
    k1 = create(env, "streamer", [pol("90m", 1000, "requests"), pol("daily", 10 ** 7)])
    k2 = create(env, "steady", [pol("90m", 1000, "requests"), pol("daily", 10 ** 7)])
    n1, n2 = 8, 4
    started = [threading.Event() for _ in range(n1 + n2)]
    ended = [None] * (n1 + n2)

    def stream(i, secret):
        def run():
            c = Client(env.port, timeout=30)
            try:
                c.send("POST", CHAT, body("m7", stream=True), dict(hdrs(secret), **{"Content-Type": "application/json"}))
                r = c.read_response(on_chunk=lambda p: started[i].set())
                ended[i] = time.time()
                return r
            finally:
                started[i].set()
                c.close()
        return run

    results, failures = [], []

    def run_all():
        try:
            results.append(run_threads([stream(i, k1["key"]) for i in range(n1)] +
                                       [stream(n1 + i, k2["key"]) for i in range(n2)]))
        except AssertionError as e:
            failures.append(str(e))

    runner = threading.Thread(target=run_all)
    runner.start()
    for ev in started:
        assert ev.wait(15), "a stream did not start"
    assert not any(ended), "a stream ended before the changes"

    v = patch(env, k1["id"], {"policies": [pol("90m", 500, "requests")]}, "K1: same signature, new limit")
    eq((v["policies"][0]["used"], v["policies"][0]["limit"]), (n1, 500), "K1: the 8 reservations in flight are in used")
    v = patch(env, k1["id"], {"policies": [pol("60m", 500, "requests")]}, "K1: another signature")
    eq(v["policies"][0]["used"], 0, "K1: a new policy starts empty")
    eq(patch(env, k1["id"], {"name": "streamer-renamed"}, "K1: rename")["name"], "streamer-renamed", "K1 renamed")
    v = patch(env, k2["id"], {"policies": [pol("90m", 900, "requests")], "name": "steady-2"}, "K2: limit, daily gone, rename")
    eq((v["name"], v["policies"][0]["used"], len(v["policies"])), ("steady-2", n2, 1), "K2 while its streams run")
    k3 = create(env, "bystander", [pol("daily", 100, "requests")])
    eq(post(env, k3["key"], CHAT, body("m7", max_tokens=2)).status, 200, "the key created meanwhile")
    r = api(env, "POST", "/admin/keys/%s/disable" % k1["id"])
    eq((r.status, jbody(r)["status"]), (200, "disabled"), "K1 disabled")
    check_error(post(env, k1["key"], CHAT, body("m7", max_tokens=2)), 403, "key_disabled", "K1 after disable")
    r = api(env, "DELETE", "/admin/keys/" + k1["id"])
    eq((r.status, jbody(r)), (200, {"id": k1["id"], "deleted": True}), "K1 deleted")
    check_error(post(env, k1["key"], CHAT, body("m7", max_tokens=2)), 401, "invalid_api_key", "K1 after delete")
    check_error(api(env, "GET", "/admin/keys/" + k1["id"]), 404, "key_not_found", "K1's view after delete")
    eq(sum(1 for e in ended if e), 0, "streams ended before the changes were done (the test needs them in flight)")
    eq(json.loads(request(env.port, "GET", "/healthz").body)["status"], "ok", "the gateway during the streams")

    runner.join(60)
    assert not failures, "the streams: %s" % failures
    assert results, "the streams did not finish"
    for i, r in enumerate(results[0]):
        what = "stream %d (%s)" % (i, "K1" if i < n1 else "K2")
        eq((r.status, r.complete), (200, True), what + ": status and clean end")
        text, done = stream_content(r)
        eq(text, words(30), what + ": the whole content")
        assert done, what + ": ends with [DONE]"

    settled(env)
    h = json.loads(request(env.port, "GET", "/healthz").body)
    rows = env.ledger_rows()
    eq((h["requests"], h["ledger_rows"], len(rows)), (n1 + n2 + 3,) * 3, "healthz requests = ledger rows = requests made")
    r1 = [x for x in rows if x["key_id"] == k1["id"]]
    eq(sorted((x["status"], x["key_name"], x["completion_tokens"]) for x in r1 if x["stream"]),
       [(200, "streamer", 30)] * n1, "K1's stream rows: the name at their head, the whole output")
    eq([(x["status"], x["key_name"]) for x in r1 if not x["stream"]], [(403, "streamer-renamed")], "K1's 403 row")
    r2 = [x for x in rows if x["key_id"] == k2["id"]]
    eq(sorted((x["status"], x["key_name"], x["completion_tokens"]) for x in r2), [(200, "steady", 30)] * n2, "K2's rows")
    eq([(x["status"], x["key_id"] or "", x["key_name"] or "") for x in rows if x["status"] == 401], [(401, "", "")],
       "the 401 row names no key")
    eq(sim_req(env, "up-s"), n1 + n2 + 1, "the provider saw the streams and the bystander's request")
    v = view(env, k2["id"])
    eq((v["policies"][0]["used"], v["policies"][0]["remaining"]), (n2, 900 - n2), "K2: its streams settled in the new version")
    check_drift(env, 2, "after the streams")
    check_logs(env)

    restart(env)
    check_error(post(env, k1["key"], CHAT, body("m7", max_tokens=2)), 401, "invalid_api_key", "K1 after the restart")
    eq(view(env, k2["id"])["policies"][0]["used"], n2, "K2 after the restart")
    eq([x["id"] for x in listing(env)["data"]], ["e2e", "other", k2["id"], k3["id"]], "the list after the restart")
    check_drift(env, 2, "after the restart")


# ---------------------------------------------------------------- 8. pagination

@adminkeys_test
def test_adminkeys_list_pagination(env):
    """25 keys created one after another, the 8th deleted (the entry right after the first
    page): GET /admin/keys?limit=10 and its `next` cursors yield pages of 10, 10 and 7 (next
    null on the last), every key exactly once, in creation order after the three config
    keys, the deleted one absent.  limit=0 and
    limit=x → 400, after=an unknown id → 404, limit above 1000 is capped (one page)."""
    gateway(env, one_provider(env, "m8"), key_entry("st", "static-key-000008"))
    ids = [create(env, "page-%02d" % i, [pol("daily", 5, "requests")])["id"] for i in range(25)]
    gone = ids[7]  # the 11th entry (3 config keys first): right after the first page's last key
    eq(api(env, "DELETE", "/admin/keys/" + gone).status, 200, "delete one")
    expect = ["e2e", "other", "st"] + [x for x in ids if x != gone]
    eq(len(expect), 27, "keys expected")
    seen, sizes, query = [], [], "?limit=10"
    for _ in range(10):
        j = listing(env, query)
        eq(j["object"], "list", "object")
        page = [x["id"] for x in j["data"]]
        sizes.append(len(page))
        seen += page
        if j["next"] is None:
            break
        assert j["next"] not in seen[:-len(page)], "next %r goes back" % j["next"]
        query = "?limit=10&after=" + j["next"]
    eq(sizes, [10, 10, 7], "page sizes")
    eq(seen, expect, "every key once, in creation order, config keys first, the deleted one absent")
    assert gone not in seen, "the deleted key is listed"
    j = listing(env, "?limit=2000")
    eq(([x["id"] for x in j["data"]], j["next"]), (expect, None), "limit 2000: capped at 1000, one page")
    eq(listing(env, "?limit=27")["next"], None, "exactly the last key on the page: no next")
    eq(listing(env, "?limit=26")["next"], expect[25], "limit 26: next is the 26th key")
    for q in ("?limit=0", "?limit=x", "?limit=-1"):
        check_error(api(env, "GET", "/admin/keys" + q), 400, "invalid_request", "GET /admin/keys" + q)
    check_error(api(env, "GET", "/admin/keys?after=key_0000000000000000"), 404, "key_not_found", "after an unknown id")


@adminkeys_test
def test_adminkeys_list_cursor_is_the_last_key_shown(env):
    """keyadmin.c list_keys: "the last key shown is the cursor, even if keys between it and
    s were deleted".  When the key right after a full page is deleted, `next` must be the
    page's last key, not the deleted one: a deleted key's id is no cursor after a restart
    (deleted keys are not loaded), so a client paging across a restart gets 404."""
    gateway(env, one_provider(env, "m8"), "")
    ids = [create(env, "cur-%d" % i)["id"] for i in range(4)]
    eq(api(env, "DELETE", "/admin/keys/" + ids[1]).status, 200, "delete the key after the first page")
    j = listing(env, "?limit=3")  # e2e, other, ids[0]; then ids[1] (deleted), ids[2] ...
    eq([x["id"] for x in j["data"]], ["e2e", "other", ids[0]], "first page")
    nxt = j["next"]
    restart(env)
    r = api(env, "GET", "/admin/keys?limit=3&after=%s" % nxt)
    eq(r.status, 200, "the cursor %s after a restart (%r)" % ("= the deleted key" if nxt == ids[1] else nxt, r.body[:200]))
    eq([x["id"] for x in jbody(r)["data"]], ids[2:], "the second page")
    eq(nxt, ids[0], "next = the last key shown (got the deleted key's id: %s)" % (nxt == ids[1]))


# ---------------------------------------------------------------- 9. drift under a mixed load

@adminkeys_test
def test_adminkeys_drift_zero_under_mixed_load(env):
    """A graceful key and a strict key, each with a tokens and a requests policy, through a
    concurrent mix: plain and streamed successes, upstream errors (502, released), streams
    the client cancels after the first chunk (499) and streams the provider cuts (charged
    the estimate).  Once /healthz shows requests == ledger_rows: quota_counter_drift 0,
    windows_checked 4, keys_in_flight 0; each key's requests used = its rows that consumed
    (not the 502s), tokens used = its rows' sum, key_window holds the same."""
    env.sim = env.start_sim("--chunks", "8", "--chunk-delay", "30ms", "--account", "up-bad=500", "--account", "up-cut=cut")
    gateway(env, prov("p1", env.sim, "m9", "up-ok") + prov("pb", env.sim, "m9-bad", "up-bad") +
            prov("pc", env.sim, "m9-cut", "up-cut"), "", workers=2)
    g = create(env, "graceful", [pol("daily", 10 ** 7, boundary="graceful"), pol("90m", 1000, "requests", boundary="graceful")])
    s = create(env, "strict", [pol("daily", 10 ** 7), pol("90m", 1000, "requests")])

    def plain(secret):
        r = post(env, secret, CHAT, body("m9", max_tokens=3))
        eq(r.status, 200, "plain")

    def streamed(secret):
        r = post(env, secret, CHAT, body("m9", stream=True))
        eq((r.status, r.complete, stream_content(r)), (200, True, (words(8), True)), "stream")

    def failing(secret):
        # the first 500 cools the account down: later ones are refused without a call (503)
        r = post(env, secret, CHAT, body("m9-bad", max_tokens=3))
        assert (r.status, jbody(r)["error"]["code"]) in ((502, "upstream_error"), (503, "no_account_available")), \
            "upstream error: %d %r" % (r.status, r.body[:200])

    def cut(secret):
        r = post(env, secret, CHAT, body("m9-cut", stream=True))
        eq((r.status, r.complete), (200, False), "cut stream")

    def cancelled(secret):
        c = Client(env.port, timeout=15)
        seen = []
        c.send("POST", CHAT, body("m9", stream=True), dict(hdrs(secret), **{"Content-Type": "application/json"}))
        r = c.read_response(on_chunk=lambda p: seen.append(p) or False)
        c.close()
        eq((r.status, len(seen)), (200, 1), "cancelled after the first chunk")

    mix = [plain] * 3 + [streamed] * 2 + [failing] * 2 + [cut] * 2 + [cancelled] * 2
    jobs = [(lambda f=f, k=k: f(k["key"])) for k in (g, s) for f in mix]
    run_threads(jobs)
    run_threads(jobs[::-1])
    settled(env)
    for k in (g, s):
        rows = rows_of(env, k["id"])
        eq(len(rows), 2 * len(mix), "%s: one row per request" % k["name"])
        failed = [x for x in rows if x["status"] >= 500]
        eq(sorted((x["status"], x["error"] or "") for x in rows if x["status"] < 500),
           sorted([(200, "")] * 10 + [(200, "upstream_broken")] * 4 + [(499, "client_closed")] * 4),
           "%s: the mix's rows" % k["name"])
        eq(len(failed), 4, "%s: the failed requests' rows" % k["name"])
        eq(tokens(failed), 0, "%s: a failed request consumed nothing" % k["name"])
        v = view(env, k["id"])
        eq([p["used"] for p in v["policies"]], [tokens(rows), len(rows) - len(failed)],
           "%s: used (tokens, requests) = the rows'" % k["name"])
        eq(window_rows(env, k["id"]), sorted([tokens(rows), 18]), "%s: key_window" % k["name"])
    assert sim_req(env, "up-bad") >= 1, "the failing account was called"
    check_drift(env, 4, "after the mixed load")


# ---------------------------------------------------------------- 10. concurrent creates

@adminkeys_test
def test_adminkeys_concurrent_creates(env):
    """50 POST /admin/keys at once (50 connections, two workers): 50 × 201 with distinct ids
    and secrets, each the name it was given; every secret works (x-quota-daily-remaining
    999) and its row carries its id; the list and the store hold exactly the 50."""
    gateway(env, one_provider(env, "m10"), "", workers=2)
    barrier = threading.Barrier(50)

    def make(i):
        def run():
            c = Client(env.port, timeout=30)
            try:
                data = json.dumps({"name": "par-%02d" % i, "policies": [pol("daily", 1000, "requests")]}).encode()
                c.send("POST", "/admin/keys", None, dict(ADMIN_HDRS, **{"Content-Type": "application/json",
                                                                        "Content-Length": str(len(data))}))
                barrier.wait(15)
                c.sock.sendall(data)
                return i, c.read_response()
            finally:
                c.close()
        return run

    made = {}
    for i, r in run_threads([make(i) for i in range(50)]):
        eq(r.status, 201, "create %d (%r)" % (i, r.body[:200]))
        k = jbody(r)
        eq(k["name"], "par-%02d" % i, "create %d: its name" % i)
        made[k["id"]] = k
    eq(len(made), 50, "distinct ids")
    eq(len({k["key"] for k in made.values()}), 50, "distinct secrets")
    eq(len({k["prefix"] for k in made.values()}), 50, "distinct prefixes")

    def use(k):
        def run():
            r = post(env, k["key"], CHAT, body("m10", max_tokens=1))
            eq((r.status, r.headers.get("x-quota-daily-remaining")), (200, "999"), "%s usable" % k["name"])
        return run

    run_threads([use(k) for k in made.values()])
    settled(env)
    by_key = {}
    for x in env.ledger_rows():
        by_key.setdefault(x["key_id"], []).append(x["key_name"])
    eq(by_key, {kid: [k["name"]] for kid, k in made.items()}, "one row per key, with its id and name")
    listed = [x["id"] for x in listing(env)["data"]]
    eq(listed[:2], ["e2e", "other"], "config keys first")
    eq(sorted(listed[2:]), sorted(made), "the list holds the 50 once each")
    eq(api_key_count(env), 50, "api_key rows")
    check_drift(env, 50, "after the creates")


@adminkeys_test
def test_adminkeys_keepalive_connection_sees_changes_at_once(env):
    """A keep-alive connection remembers the secret it presented last (no SHA-256 per
    request, proxy.c key_of) but reads the key's version afresh on every request: on one
    connection, key A is served; A disabled → 403 on the next request of that connection;
    enabled → 200; another key B on the same connection → 200 (its own policy's header);
    A deleted → 401 on that connection, B still 200; a wrong secret of A's length → 401."""
    gateway(env, one_provider(env, "m9"), "")
    a = create(env, "ka", [pol("90m", 100, "requests")])
    b = create(env, "kb", [pol("60m", 50, "requests")])
    c = Client(env.port, timeout=10)

    def on_conn(secret):
        r = c.request("POST", CHAT, body("m9", max_tokens=2), hdrs(secret))
        assert r.headers.get("connection", "").lower() != "close", "the connection stays open"
        return r

    eq(on_conn(a["key"]).status, 200, "A")
    eq(api(env, "POST", "/admin/keys/%s/disable" % a["id"]).status, 200, "disable A")
    check_error(on_conn(a["key"]), 403, "key_disabled", "A disabled, same connection")
    eq(api(env, "POST", "/admin/keys/%s/enable" % a["id"]).status, 200, "enable A")
    r = on_conn(a["key"])
    eq((r.status, r.headers.get("x-quota-90m-remaining")), (200, "98"), "A enabled again, its own counter")
    r = on_conn(b["key"])
    eq((r.status, r.headers.get("x-quota-60m-remaining"), r.headers.get("x-quota-90m-remaining")), (200, "49", None),
       "B on the same connection: B's policy, not A's")
    eq(api(env, "DELETE", "/admin/keys/" + a["id"]).status, 200, "delete A")
    check_error(on_conn(a["key"]), 401, "invalid_api_key", "A deleted, same connection")
    eq(on_conn(b["key"]).status, 200, "B still served")
    wrong = a["key"][:-1] + ("0" if a["key"][-1] != "0" else "1")
    check_error(on_conn(wrong), 401, "invalid_api_key", "a secret of the same length, one character off")
    c.close()
