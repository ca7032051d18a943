"""quota.py — end-to-end tests of the upstream quota engine (SPEC §3 503, §4.1-4.5, §4.7, §6):
the gateway steers away from an account before the provider refuses it, reads and classifies
every quota answer the simulator can give, tells clients when capacity comes back, spends
expiring capacity first, keeps account state across restarts and kill -9, and offers the
operator enable/disable and /api/quotas.

Every test proves "no upstream call" with the simulator's own per-account `requests` counter
(/sim/stats), never with the gateway's word for it.  Each test has its own environment (its
own simulator accounts and a one-worker gateway, so rotation order is predictable); tests
are solo tests in run.py's sense: they take (binary, sanitized)."""

import calendar
import json
import math
import signal
import socket
import threading
import time

from harness import ADMIN, ANTH, AUTH, Env, chat, eq, last_row, messages, request, settled, solo_test

QUOTA_TESTS = []

ADM = {"Authorization": "Bearer " + ADMIN}
MIN = 60000
HOUR = 3600000


quota_test = solo_test(QUOTA_TESTS)


# ---------------------------------------------------------------- helpers

def acct(name, key, extra=""):
    return "{ name: %s, api_key: %s%s }" % (name, key, (", " + extra) if extra else "")


def prov(name, port, models, accounts, dialect="openai"):
    return """
  - name: %s
    dialect: %s
    base_url: http://127.0.0.1:%d
    models: [%s]
    accounts:
%s
""" % (name, dialect, port, models, "\n".join("      - " + a for a in accounts))


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000.0))


def gateway(env, providers, extra="", **kw):
    env.cfg = env.config(providers, extra=extra, workers=1, **kw)
    env.start_gateway(env.cfg)


def sim_req(env, key):
    return env.sim_stats(env.sim).get(key, {}).get("requests", 0)


def sim_acct(env, key):
    return env.sim_stats(env.sim).get(key, {})


def accounts(env):
    """GET /admin/accounts: ({name: account}, the gateway's now in ms)."""
    r = request(env.port, "GET", "/admin/accounts", headers=ADM)
    eq(r.status, 200, "GET /admin/accounts")
    j = json.loads(r.body)
    return {a["name"]: a for a in j["data"]}, j["now_ms"]


def admin_post(env, path, headers=ADM):
    r = request(env.port, "POST", path, b"", headers)
    return r.status, (json.loads(r.body) if r.body else None)


def openai(env, model, **kw):
    return request(env.port, "POST", "/v1/chat/completions", chat(model=model, max_tokens=2, **kw), AUTH)


def anthropic(env, model, **kw):
    return request(env.port, "POST", "/v1/messages", messages(model=model, max_tokens=2, **kw), ANTH)


def near(value, expected, tol, what):
    if value is None or abs(value - expected) > tol:
        raise AssertionError("%s: expected %r ± %r, got %r" % (what, expected, tol, value))


def state_of(a):
    return (a["state"], a["usable"], a["blocked_by"], a["last_error"])


def check_logs(env):
    """A restart truncates gw.log: look for sanitizer reports before it does."""
    text = env.gw_log()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in text:
            raise AssertionError("%s in gw.log:\n%s" % (marker, text[text.index(marker) - 200:][:3000]))


# ---------------------------------------------------------------- 1. steering before the 429

@quota_test
def test_quota_steers_before_the_429(env):
    """An account whose rate-limit headers say "0 requests left for 1 h" is not used until
    then: the provider never has to refuse it (no 429 at all), the other account serves, and
    /admin/accounts says why and until when.  OpenAI request headers, and Anthropic unified
    headers (5 h utilization 1.00).  The limited accounts are the preferred tier, and the
    second request is a stream, whose head alone carries the news."""
    env.sim = env.start_sim("--account", "q-lim=ok,limit=2/1h", "--account", "q-alim=ok,unified=1,limit=2/1h")
    gateway(env, prov("po", env.sim, "gpt-lim", [acct("lim", "q-lim", "priority: 0"), acct("plain", "q-plain", "priority: 1")]) +
            prov("pa", env.sim, "claude-lim", [acct("alim", "q-alim", "priority: 0"), acct("aplain", "q-aplain", "priority: 1")],
                 dialect="anthropic"))
    for send, model, lim, plain in ((openai, "gpt-lim", "lim", "plain"), (anthropic, "claude-lim", "alim", "aplain")):
        key_lim, key_plain = "q-" + lim, "q-" + plain
        eq(send(env, model).status, 200, "%s: first request" % model)
        r = send(env, model, stream=True)
        eq((r.status, r.complete), (200, True), "%s: second request (stream)" % model)
        eq((sim_req(env, key_lim), sim_req(env, key_plain)), (2, 0), "%s: the preferred account served both" % model)
        t_spent = time.time() * 1000
        for i in range(6):
            eq(send(env, model, stream=bool(i % 2)).status, 200, "%s: request %d after the window is used up" % (model, i + 3))
        st = sim_acct(env, key_lim)
        eq((st["requests"], st["errors"]), (2, 0), "%s: the spent account got no further request (and never a 429)" % lim)
        eq(sim_req(env, key_plain), 6, "%s: the other account served them" % plain)
        row = last_row(env, model=model)
        eq((row["account"], row["attempts"], row["status"]), (plain, 1, 200), "%s: served at once, no failed attempt" % model)
        a, _ = accounts(env)
        a = a[lim]
        eq((a["usable"], a["blocked_by"]), (False, "header_limit"), "%s: blocked by what its headers said" % lim)
        eq(a["state"], "depleted", "%s: a spent bucket shows as depleted (SPEC §4.2)" % lim)
        near(a["until_ms"], t_spent + HOUR, 15000, "%s: until ≈ the window's end (now + 1 h)" % lim)
        eq(a["usable_at_ms"], a["until_ms"], "%s: usable_at" % lim)
        eq(a["last_error"], None, "%s: no error was ever needed" % lim)


# ---------------------------------------------------------------- 2. 429 with retry-after

@quota_test
def test_quota_429_retry_after_cools_the_account(env):
    """A 429 with retry-after: 3 moves that request to the other account (the client sees
    200, the row says attempts 2), then for the 3 s no request reaches the cooling account
    while the other serves every one; after them it is tried again."""
    env.sim = env.start_sim("--account", "q-r429=429,retry_after=3")
    gateway(env, prov("p2", env.sim, "gpt-429", [acct("a429", "q-r429"), acct("b", "q-b")]))
    r = openai(env, "gpt-429")
    t0 = time.time()
    eq(r.status, 200, "the 429 was retried on the other account")
    row = last_row(env, model="gpt-429")
    eq((row["account"], row["attempts"]), ("b", 2), "row: tried a429, then b")
    st = sim_acct(env, "q-r429")
    eq((st["requests"], st["errors"]), (1, 1), "a429 answered one 429")
    a, _ = accounts(env)
    a = a["a429"]
    eq(state_of(a), ("cooling", False, "cooling", "rate_limited"), "a429 state")
    eq(a["reset_stated"], True, "the end came from retry-after")
    near(a["until_ms"] - a["last_error_at_ms"], 3000, 300, "cooling lasts the retry-after")
    statuses = []
    while time.time() < t0 + 2.5:
        statuses.append(openai(env, "gpt-429").status)
        time.sleep(0.02)
    assert statuses and set(statuses) == {200}, "a client saw %r during the cooldown" % sorted(set(statuses))
    eq(sim_req(env, "q-r429"), 1, "no request reached a429 during its cooldown (%d requests sent)" % len(statuses))
    eq(sim_req(env, "q-b"), len(statuses) + 1, "b served every one")
    time.sleep(max(0, t0 + 3.3 - time.time()))
    eq(openai(env, "gpt-429").status, 200, "after the cooldown")
    eq(sim_req(env, "q-r429"), 2, "a429 is tried again once its retry-after has passed")
    row = last_row(env, model="gpt-429")
    eq((row["account"], row["attempts"]), ("b", 2), "its new 429 went to b again")


# ---------------------------------------------------------------- 3. insufficient_quota

@quota_test
def test_quota_credit_exhaustion_depletes_until_enabled(env):
    """A prepaid account that runs out (OpenAI 429 insufficient_quota; Anthropic 400 "credit
    balance is too low", which is NOT a client error): that request moves to the other
    account, the account is depleted (probation: no reset is known) and gets no further
    request; enable makes it usable at once (its next request proves it)."""
    env.sim = env.start_sim("--account", "q-cred=ok,credits=2", "--account", "q-acred=ok,credits=1")
    gateway(env, prov("p3", env.sim, "gpt-cred", [acct("cred", "q-cred", "priority: 0"), acct("spare", "q-spare", "priority: 1")]) +
            prov("p3a", env.sim, "claude-cred", [acct("acred", "q-acred", "priority: 0"),
                                                 acct("aspare", "q-aspare", "priority: 1")], dialect="anthropic"))
    for i in range(3):
        eq(openai(env, "gpt-cred").status, 200, "request %d" % (i + 1))
    st = sim_acct(env, "q-cred")
    eq((st["requests"], st["ok"], st["errors"]), (3, 2, 1), "two successes, then insufficient_quota")
    row = last_row(env, model="gpt-cred")
    eq((row["account"], row["attempts"], row["status"]), ("spare", 2, 200), "moved to the other account transparently")
    for send, model, name, key in ((openai, "gpt-cred", "cred", "q-cred"), (anthropic, "claude-cred", "acred", "q-acred")):
        if send is anthropic:
            eq(send(env, model).status, 200, "anthropic: first request")
            r = send(env, model)
            eq(r.status, 200, "anthropic: the 400 credit refusal is retried, not relayed: %r" % r.body[:200])
            eq(sim_acct(env, key)["errors"], 1, "acred refused once")
            row = last_row(env, model=model)
            eq((row["account"], row["attempts"]), ("aspare", 2), "anthropic row")
        a, _ = accounts(env)
        a = a[name]
        eq(state_of(a), ("depleted", False, "depleted", "credits_exhausted"), "%s after the refusal" % name)
        eq(a["reset_stated"], False, "%s: no reset stated" % name)
        near(a["until_ms"] - a["last_error_at_ms"], 15 * MIN, 2000, "%s: probation (15 min)" % name)
        before = sim_req(env, key)
        for _ in range(4):
            eq(send(env, model).status, 200, "%s: while depleted" % name)
        eq(sim_req(env, key), before, "%s: no request while depleted" % name)
    status, j = admin_post(env, "/admin/accounts/cred/enable")
    eq(status, 200, "enable")
    eq((j["name"], j["state"], j["usable"], j["blocked_by"]), ("cred", "ready", True, None), "enable's answer")
    a, _ = accounts(env)
    eq((a["cred"]["state"], a["cred"]["usable"]), ("ready", True), "ready in /admin/accounts")
    eq(openai(env, "gpt-cred").status, 200, "the next request")
    st = sim_acct(env, "q-cred")
    eq((st["requests"], st["errors"]), (4, 2), "enabled: the next request reached cred (and was refused again)")
    eq(accounts(env)[0]["cred"]["state"], "depleted", "depleted again")


# ---------------------------------------------------------------- 4. every error kind

def next_utc_month(ms):
    t = time.gmtime(ms / 1000.0)
    y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return int(calendar.timegm((y, m, 1, 0, 0, 0))) * 1000


# (sim options, dialect, expected state, last_error, until - error time in ms, tolerance, reset_stated).  Unstated
# depletions last the 15 min probation, never past an end we inferred ("month": the spend period, the 1st 00:00 UTC;
# None: Gemini's next midnight Pacific).
KINDS = [
    ("usage_limit,reset=2h", "openai", "depleted", "window_exhausted", 2 * HOUR, 2000, True),
    ("spend_limit", "anthropic", "depleted", "spend_capped", "month", 1000, False),
    ("billing", "openai", "depleted", "credits_exhausted", 15 * MIN, 1000, False),
    ("or_402", "openai", "depleted", "spend_capped", "month", 1000, False),
    ("or_free_daily,reset=3h", "openai", "depleted", "window_exhausted", 3 * HOUR, 2000, True),
    ("gemini_daily", "openai", "depleted", "window_exhausted", None, 0, False),
    ("auth", "openai", "auth_failed", "auth_failed", 15 * MIN, 1000, False),
    ("forbidden", "anthropic", "auth_failed", "auth_failed", 15 * MIN, 1000, False),
    ("overloaded", "anthropic", "cooling", "overloaded", 2000, 300, False),
    ("unavailable", "openai", "cooling", "overloaded", 2000, 300, False),
    ("rate_limit,reset=2s", "openai", "cooling", "rate_limited", 2000, 1100, True),
    ("500", "openai", "cooling", "server_error", 2000, 300, False),   # not a kind: the 500 mode's backoff
]


@quota_test
def test_quota_every_error_kind_is_classified(env):
    """One account per quota answer the simulator gives, each in front of a healthy
    fallback: the client gets 200 every time, the account's state, until and last_error
    follow the classification, and a second request right after does not reach it."""
    args = []
    for opts, *_ in KINDS:
        kind = opts.split(",")[0]
        args += ["--account", "q-%s=%s" % (kind, opts if kind == "500" else "error,kind=" + opts)]
    env.sim = env.start_sim(*args)
    provs = ""
    for opts, dialect, *_ in KINDS:
        kind = opts.split(",")[0]
        provs += prov("p-" + kind, env.sim, "m-" + kind, [acct("k-" + kind, "q-" + kind, "priority: 0"),
                                                         acct("fb-" + kind, "q-fb-" + kind, "priority: 1")], dialect)
    gateway(env, provs)
    for opts, dialect, state, last_error, dur, tol, stated in KINDS:
        kind = opts.split(",")[0]
        send = anthropic if dialect == "anthropic" else openai
        for i in range(2):
            r = send(env, "m-" + kind)
            eq(r.status, 200, "%s: request %d answered by the fallback: %r" % (kind, i + 1, r.body[:200]))
        row = last_row(env, model="m-" + kind)
        eq((row["account"], row["attempts"]), ("fb-" + kind, 1), "%s: the second request went straight to the fallback" % kind)
        st = sim_acct(env, "q-" + kind)
        eq((st["requests"], st["errors"]), (1, 1), "%s: exactly one upstream call to the failing account" % kind)
        eq(sim_req(env, "q-fb-" + kind), 2, "%s: the fallback served both" % kind)
        a, _ = accounts(env)
        a = a["k-" + kind]
        eq((a["state"], a["usable"], a["last_error"]), (state, False, last_error), "%s: state" % kind)
        eq(a["blocked_by"], {"depleted": "depleted", "auth_failed": "auth_failed", "cooling": "cooling"}[state], "%s: blocked_by" % kind)
        eq(a["reset_stated"], stated, "%s: reset_stated" % kind)
        if dur is None:  # gemini daily: midnight Pacific is inferred, so probation bounds it
            assert 0 < a["until_ms"] - a["last_error_at_ms"] <= 15 * MIN + 1000, "%s: until %r" % (kind, a)
        elif dur == "month":
            err = a["last_error_at_ms"]
            near(a["until_ms"] - err, min(15 * MIN, next_utc_month(err) - err), tol, "%s: until - error time" % kind)
        else:
            near(a["until_ms"] - a["last_error_at_ms"], dur, tol, "%s: until - error time" % kind)
        if state == "cooling":
            eq(a["consecutive_failures"], 0 if last_error == "overloaded" else 1, "%s: consecutive failures" % kind)


# ---------------------------------------------------------------- 5. every account spent: 503

def check_503(r, dialect, what):
    eq(r.status, 503, what + ": status")
    j = json.loads(r.body)
    if dialect == "anthropic":
        eq((j.get("type"), sorted(j["error"])), ("error", ["code", "message", "type"]), what + ": Anthropic error shape")
    else:
        assert "type" not in j and {"message", "type", "code"} <= set(j["error"]), what + ": OpenAI error shape %r" % j
    eq(j["error"]["code"], "no_account_available", what + ": code")
    return j


@quota_test
def test_quota_all_accounts_spent_503(env):
    """A model whose every account is depleted or cooling: 503 no_account_available in the
    endpoint's dialect, Retry-After = when the first one becomes usable (±1 s, whichever
    state it is in), and no upstream call at all.  Disabled-only: 503 without Retry-After."""
    env.sim = env.start_sim("--account", "q-x=error,kind=usage_limit,reset=20s", "--account", "q-y=429,retry_after=50",
                            "--account", "q-ax=error,kind=spend_limit", "--account", "q-ay=429,retry_after=30")
    gateway(env, prov("p5", env.sim, "gpt-spent", [acct("x", "q-x"), acct("y", "q-y")]) +
            prov("p5a", env.sim, "claude-spent", [acct("ax", "q-ax"), acct("ay", "q-ay")], dialect="anthropic") +
            prov("p5d", env.sim, "gpt-off", [acct("off", "q-off")]))
    keys = {"gpt-spent": ("x", "y"), "claude-spent": ("ax", "ay")}
    for send, model, dialect, first in ((openai, "gpt-spent", "openai", 20), (anthropic, "claude-spent", "anthropic", 30)):
        names = keys[model]
        r = send(env, model)
        check_503(r, dialect, "%s: both accounts refused" % model)
        eq(last_row(env, model=model)["attempts"], 2, "%s: both tried once" % model)
        near(int(r.headers.get("retry-after", "-99")), first, 1, "%s: Retry-After of the first request" % model)
        calls = [sim_req(env, "q-" + n) for n in names]
        eq(calls, [1, 1], "%s: one call each" % model)
        for stream in (False, True):
            r = send(env, model, stream=stream)
            a, now = accounts(env)
            earliest = min(a[n]["until_ms"] for n in names)
            check_503(r, dialect, "%s: spent (stream=%s)" % (model, stream))
            near(int(r.headers.get("retry-after", "-99")), math.ceil((earliest - now) / 1000), 1,
                 "%s: Retry-After = the first account's until (%s)" % (model, {n: (a[n]["state"], a[n]["until"]) for n in names}))
            eq(last_row(env, model=model)["attempts"], 0, "%s: no account tried" % model)
        eq([sim_req(env, "q-" + n) for n in names], calls, "%s: the simulator saw no request while all are spent" % model)
    eq(admin_post(env, "/admin/accounts/off/disable")[0], 200, "disable")
    r = openai(env, "gpt-off")
    check_503(r, "openai", "disabled only")
    eq(r.headers.get("retry-after"), None, "no Retry-After: a disabled account has no known end")
    eq(sim_req(env, "q-off"), 0, "no request to the disabled account")


# ---------------------------------------------------------------- 6. capacity that would be lost first

@quota_test
def test_quota_expiring_capacity_first(env):
    """Same tier, three accounts: the one with 1000 prepaid requests that expire in 2 days
    takes (nearly) every request; the plain ones only fill in.  Likewise a window that
    resets in 3 minutes with room left beats a plain account."""
    now = int(time.time() * 1000)
    env.sim = env.start_sim()
    exp = "buckets: [{ name: promo, kind: credits, unit: requests, limit: 1000, expires_at: '%s' }]" % rfc3339(now + 2 * 86400000)
    win = ("buckets: [{ name: hourly, kind: window, unit: requests, limit: 100, period: 1h, reset: anchored, anchor: '%s' }]"
           % rfc3339(now - HOUR + 3 * MIN))
    gateway(env, prov("p6", env.sim, "gpt-exp", [acct("plain1", "q-plain1"), acct("expiring", "q-exp", exp),
                                                acct("plain2", "q-plain2")]) +
            prov("p6w", env.sim, "gpt-win", [acct("plain3", "q-plain3"), acct("window", "q-win", win)]))
    for i in range(20):
        eq(openai(env, "gpt-exp").status, 200, "request %d" % i)
    got = {k: sim_req(env, k) for k in ("q-exp", "q-plain1", "q-plain2")}
    eq(sum(got.values()), 20, "20 upstream calls")
    assert got["q-exp"] >= 18, "the expiring credits did not go first: %r" % got
    for i in range(10):
        eq(openai(env, "gpt-win").status, 200, "window request %d" % i)
    got = {k: sim_req(env, k) for k in ("q-win", "q-plain3")}
    assert got["q-win"] >= 9, "the window about to reset with room left did not go first: %r" % got
    settled(env)
    a, _ = accounts(env)
    b = a["expiring"]["buckets"][0]
    eq((b["name"], b["kind"], b["limit"], b["used"]), ("promo", "credits", 1000, sim_req(env, "q-exp")), "the credit bucket counted")


# ---------------------------------------------------------------- 7. restarts keep state

@quota_test
def test_quota_state_survives_restart_and_kill9(env):
    """A depleted account (Codex usage_limit, 2 h) and a used-up first_use window (2 per 5 h)
    stay so across a SIGTERM restart (same until, at once); so do a fresh depletion, a window
    used up by two quick requests and a provider's "0 left for 1 h" across kill -9 300 ms
    after the change (SPEC §6: only the last flush interval, 100 ms, may be lost): no
    request reaches any of them after either restart."""
    env.sim = env.start_sim("--account", "q-x=error,kind=usage_limit,reset=2h", "--account", "q-z=error,kind=usage_limit,reset=3h",
                            "--account", "q-h=ok,limit=2/1h")
    window = "buckets: [{ name: sub, kind: window, unit: requests, limit: 2, period: 5h, reset: first_use }]"
    gateway(env, prov("p7x", env.sim, "m-x", [acct("x", "q-x", "priority: 0"), acct("fx", "q-fx", "priority: 1")]) +
            prov("p7w", env.sim, "m-w", [acct("w", "q-w", "priority: 0 , " + window), acct("fw", "q-fw", "priority: 1")]) +
            prov("p7z", env.sim, "m-z", [acct("z", "q-z", "priority: 0"), acct("fz", "q-fz", "priority: 1")]) +
            prov("p7v", env.sim, "m-v", [acct("v", "q-v", "priority: 0 , " + window), acct("fv", "q-fv", "priority: 1")]) +
            prov("p7h", env.sim, "m-h", [acct("h", "q-h", "priority: 0"), acct("fh", "q-fh", "priority: 1")]))

    def spent(names):
        a, _ = accounts(env)
        return {n: (a[n]["state"], a[n]["usable"], a[n]["blocked_by"], a[n]["until_ms"], a[n]["reset_stated"]) for n in names}

    def no_calls(models_keys, what):
        before = {k: sim_req(env, k) for _, k in models_keys}
        for m, _ in models_keys:
            for _ in range(2):
                eq(openai(env, m).status, 200, "%s: %s served by its fallback" % (what, m))
        eq({k: sim_req(env, k) for _, k in models_keys}, before, "%s: no request reached a spent account" % what)

    eq(openai(env, "m-x").status, 200, "x refused, fallback served")
    for _ in range(2):
        eq(openai(env, "m-w").status, 200, "w serves its window")
    eq(openai(env, "m-w").status, 200, "w's window is used up: fallback")
    eq((sim_req(env, "q-x"), sim_req(env, "q-w")), (1, 2), "calls before the restart")
    settled(env)
    before = spent(("x", "w"))
    eq(before["x"][:3], ("depleted", False, "depleted"), "x depleted")
    eq(before["w"][:3], ("depleted", False, "bucket"), "w's window spent")

    rc = env.gw.stop()
    eq(rc, 0, "SIGTERM exit code")
    check_logs(env)
    env.start_gateway(env.cfg)
    eq(spent(("x", "w")), before, "state and until right after the SIGTERM restart")
    no_calls([("m-x", "q-x"), ("m-w", "q-w")], "after SIGTERM")

    # kill -9: a fresh depletion and a window used up by two quick requests, 300 ms before it
    eq(openai(env, "m-z").status, 200, "z refused, fallback served")
    eq(openai(env, "m-v").status, 200, "v: first of its window")
    eq(openai(env, "m-v").status, 200, "v: second of its window")
    for i in range(2):
        eq(openai(env, "m-h").status, 200, "h: %d of the 2 its provider allows per hour" % (i + 1))
    settled(env)
    names = ("x", "w", "z", "v", "h")
    before9 = spent(names)
    eq(before9["z"][:3], ("depleted", False, "depleted"), "z depleted")
    eq(before9["v"][:3], ("depleted", False, "bucket"), "v's window spent")
    eq(before9["h"][:3], ("depleted", False, "header_limit"), "h's provider said 0 left")
    time.sleep(0.3)
    env.gw.p.send_signal(signal.SIGKILL)
    env.gw.p.wait()
    env.start_gateway(env.cfg)
    after9 = spent(names)
    lost = {n: (before9[n], after9[n]) for n in names if after9[n] != before9[n]}
    assert not lost, "state lost by kill -9 300 ms after the change (before, after): %r" % lost
    no_calls([("m-x", "q-x"), ("m-w", "q-w"), ("m-z", "q-z"), ("m-v", "q-v"), ("m-h", "q-h")], "after kill -9")


# ---------------------------------------------------------------- 8. disable / enable

@quota_test
def test_quota_disable_enable(env):
    """POST disable: the account gets nothing, the other serves; enable: it serves again.
    Account names resolve as name or provider/name (409 when ambiguous), 404 when unknown,
    401 without (or with a wrong) admin token."""
    env.sim = env.start_sim()
    gateway(env, prov("p8", env.sim, "gpt-d", [acct("main", "q-main", "priority: 0"), acct("backup", "q-backup", "priority: 1")]) +
            prov("p8b", env.sim, "gpt-d2", [acct("main2", "q-main2")]) +
            prov("p8c", env.sim, "gpt-d3", [acct("dup", "q-dup1")]) + prov("p8d", env.sim, "gpt-d4", [acct("dup", "q-dup2")]))
    eq(openai(env, "gpt-d").status, 200, "first")
    eq((sim_req(env, "q-main"), sim_req(env, "q-backup")), (1, 0), "main is preferred")
    status, j = admin_post(env, "/admin/accounts/main/disable")
    eq(status, 200, "disable")
    eq((j["name"], j["state"], j["usable"], j["blocked_by"]), ("main", "disabled", False, "disabled"), "disable's answer")
    for i in range(3):
        eq(openai(env, "gpt-d").status, 200, "while disabled %d" % i)
    eq((sim_req(env, "q-main"), sim_req(env, "q-backup")), (1, 3), "disabled: backup served")
    eq(accounts(env)[0]["main"]["state"], "disabled", "listed as disabled")
    status, j = admin_post(env, "/admin/accounts/p8/main/enable")
    eq((status, j["state"], j["usable"]), (200, "ready", True), "enable by provider/name")
    for i in range(2):
        eq(openai(env, "gpt-d").status, 200, "enabled %d" % i)
    eq((sim_req(env, "q-main"), sim_req(env, "q-backup")), (3, 3), "enabled: main serves again")
    status, j = admin_post(env, "/admin/accounts/nosuch/disable")
    eq((status, j["error"]["code"]), (404, "account_not_found"), "unknown account")
    status, j = admin_post(env, "/admin/accounts/p8/main2/disable")
    eq(status, 404, "main2 is not p8's account")
    status, j = admin_post(env, "/admin/accounts/dup/disable")
    eq((status, j["error"]["code"]), (409, "ambiguous_account"), "ambiguous name")
    eq(admin_post(env, "/admin/accounts/p8d/dup/disable")[0], 200, "provider/name resolves it")
    eq(accounts(env)[0]["main"]["state"], "ready", "the 404/409 changed nothing")
    for hdr in ({}, AUTH, {"Authorization": "Bearer wrong"}):
        for path in ("/admin/accounts/main/disable", "/admin/accounts/nosuch/enable"):
            eq(admin_post(env, path, hdr)[0], 401, "%s without the admin token (%r)" % (path, hdr))
        eq(request(env.port, "GET", "/admin/accounts", headers=hdr).status, 401, "GET /admin/accounts without the admin token")
    eq(accounts(env)[0]["main"]["state"], "ready", "the 401s changed nothing")
    eq(openai(env, "gpt-d").status, 200, "still served")
    eq(sim_req(env, "q-main"), 4, "by main")


# ---------------------------------------------------------------- 9. GET /api/quotas

@quota_test
def test_quota_api_quotas(env):
    """GET /api/quotas: every account with its buckets, alert counts matching the buckets,
    has_use_or_lose from the expiring credits, has_exhausted once a bucket is spent (and
    that account then gets no request)."""
    now = int(time.time() * 1000)
    env.sim = env.start_sim()
    exp = "buckets: [{ name: promo, kind: credits, unit: requests, limit: 1000, expires_at: '%s' }]" % rfc3339(now + 2 * 86400000)
    small = "buckets: [{ name: pack, kind: credits, unit: requests, limit: 2 }]"
    gateway(env, prov("p9", env.sim, "gpt-e", [acct("expiring", "q-exp", exp)]) +
            prov("p9k", env.sim, "gpt-k", [acct("small", "q-small", "priority: 0, " + small), acct("spare", "q-spare", "priority: 1")]))
    eq(request(env.port, "GET", "/api/quotas").status, 401, "admin token required")

    def quotas():
        settled(env)
        r = request(env.port, "GET", "/api/quotas", headers=ADM)
        eq(r.status, 200, "GET /api/quotas")
        j = json.loads(r.body)
        counts = {}
        for a in j["accounts"]:
            for b in a["buckets"]:
                counts[b["alert"]] = counts.get(b["alert"], 0) + 1
        eq({k: v for k, v in j["alerts"].items() if v}, counts, "alerts count every bucket shown")
        return j, {a["name"]: a for a in j["accounts"]}
    j, a = quotas()
    eq(sorted(a), ["expiring", "small", "spare"], "every account")
    promo = a["expiring"]["buckets"][0]
    eq((promo["name"], promo["kind"], promo["unit"], promo["limit"], promo["remaining"]), ("promo", "credits", "requests", 1000, 1000),
       "the credit bucket")
    eq(promo["alert"], "use_or_lose", "1000 requests expiring in 2 days with no burn")
    near(promo["days_until_expiry"], 2.0, 0.01, "days_until_expiry")
    eq(promo["expires_at_ms"] // 1000, (now + 2 * 86400000) // 1000, "expires_at")
    eq((j["has_use_or_lose"], j["has_exhausted"]), (True, False), "flags before use")
    for i in range(2):
        eq(openai(env, "gpt-k").status, 200, "small %d" % i)
    eq(sim_req(env, "q-small"), 2, "small served its two")
    j, a = quotas()
    pack = a["small"]["buckets"][0]
    eq((pack["name"], pack["used"], pack["remaining"], pack["alert"]), ("pack", 2, 0, "exhausted"), "the spent bucket")
    eq((j["has_use_or_lose"], j["has_exhausted"]), (True, True), "flags once a bucket is spent")
    assert j["alerts"]["exhausted"] >= 1 and j["alerts"]["use_or_lose"] >= 1, j["alerts"]
    for i in range(2):
        eq(openai(env, "gpt-k").status, 200, "after the pack %d" % i)
    eq((sim_req(env, "q-small"), sim_req(env, "q-spare")), (2, 2), "the spent pack gets no request")


# ---------------------------------------------------------------- 10. error bodies leave the connection pooled

class CountingProxy:
    """A TCP relay in front of the simulator that counts the connections it accepts: the
    one thing the simulator cannot tell us."""

    def __init__(self, target):
        self.target = target
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            u = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.ls.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


@quota_test
def test_quota_error_body_read_connection_pooled(env):
    """A 429 with a complete (Content-Length) body is read to its end before deciding, so
    its connection goes back to the pool: the retry on the next account of the same
    provider, and the requests after it, reuse that one connection."""
    env.sim = env.start_sim("--account", "q-e429=429,retry_after=30", "--account", "q-eiq=insufficient_quota")
    px = CountingProxy(env.sim)
    try:
        gateway(env, prov("p10", px.port, "gpt-pool", [acct("e429", "q-e429", "priority: 0"), acct("eiq", "q-eiq", "priority: 1"),
                                                        acct("eok", "q-eok", "priority: 2")]),
                limits={"retry_attempts": 3})
        r = openai(env, "gpt-pool")
        eq(r.status, 200, "429, then insufficient_quota, then served")
        row = last_row(env, model="gpt-pool")
        eq((row["account"], row["attempts"]), ("eok", 3), "three attempts")
        eq([sim_req(env, k) for k in ("q-e429", "q-eiq", "q-eok")], [1, 1, 1], "one call each")
        eq(px.accepted, 1, "the three attempts shared one upstream connection (error bodies read, connection kept)")
        for i in range(3):
            eq(openai(env, "gpt-pool").status, 200, "request %d" % i)
        eq(px.accepted, 1, "later requests reuse it too")
    finally:
        px.close()
