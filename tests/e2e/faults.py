"""faults.py — end-to-end tests of the request path's fault handling (issue #13): each one
reproduces a defect found from outside and fails on the code before its fix.  They share
one environment (group "faults"): a simulator with fault accounts and a one-worker
gateway, so rotation order is predictable."""

import json
import os
import resource
import socket
import time

from harness import ANTH, AUTH, KEY, Client, Env, chat, eq, last_row, one_provider, request, sse_events, wait_until

FAULT_TESTS = []


def fault(fn):
    FAULT_TESTS.append(("faults", fn))
    return fn


def solo(fn):
    FAULT_TESTS.append(("solo", fn))
    return fn


def faults_env(binary, sanitized):
    env = Env(binary, sanitized)
    env.sim = env.start_sim("--chunks", "20", "--chunk-delay", "20ms", "--idle-close", "300ms",
                            "--account", "fx-drop=drop,times=1", "--account", "fx-drop2=drop,times=1",
                            "--account", "fx-c500=500", "--account", "fx-closecut=cut,framing=close",
                            "--account", "fx-closeok=ok,framing=close", "--account", "fx-echo=ok,echo=1,hop=1")
    # a slow reader of large bodies (a 16 KiB window), so an early answer arrives mid-write
    env.slow_sim = env.start_sim("--rcvbuf", "16KiB", "--account", "fx-early=early,status=413")
    s = env.sim

    def prov(name, models, accounts, port=s):
        accts = ", ".join("{ name: %s, api_key: %s }" % a for a in accounts)
        return """
  - name: %s
    dialect: openai
    base_url: http://127.0.0.1:%d
    models: [%s]
    accounts: [%s]
""" % (name, port, models, accts)
    providers = (prov("p-drop", "gpt-drop", [("warm", "fx-warm"), ("drop", "fx-drop")]) +
                 prov("p-drop2", "gpt-drop2", [("warm2", "fx-warm2"), ("drop2", "fx-drop2")]) +
                 prov("p-early", "gpt-early", [("early", "fx-early"), ("after", "fx-after-early")], env.slow_sim) +
                 prov("p-closecut", "gpt-closecut", [("closecut", "fx-closecut")]) +
                 prov("p-closeok", "gpt-closeok", [("closeok", "fx-closeok")]) +
                 prov("p-echo", "gpt-echo", [("echo", "fx-echo")]) +
                 prov("p-cursor", "gpt-cursor", [("bad", "fx-c500"), ("x", "fx-cx"), ("y", "fx-cy")]) +
                 prov("p-idle", "gpt-idle, gpt-test", [("idle", "fx-idle")]) +
                 """
  - name: p-anth
    dialect: anthropic
    base_url: http://127.0.0.1:%d
    models: [claude-fx]
    accounts: [{ name: anth, api_key: fx-anth }]
""" % s)
    env.start_gateway(env.config(providers, workers=1, limits={
        "max_body": "48MiB", "max_header": "8KiB", "client_header_timeout": "1s", "upstream_first_byte_timeout": "3s"}))
    return env


def sim_account(env, key):
    return env.sim_stats(env.sim).get(key, {})


# ---------------------------------------------------------------- upstream: the send-once rule

@fault
def test_dropped_request_is_an_attempt_not_a_resend(env):
    """A pooled connection that dies after the request was written (the provider read it,
    then the connection closed without an answer) must not be re-sent to the same account:
    the provider may have done, and billed, the work. It is an attempt; the next account
    answers, and the row says attempts=2."""
    eq(request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-drop"), AUTH).status, 200, "warm-up")
    eq(last_row(env, model="gpt-drop")["account"], "warm", "the warm-up pooled a connection via account warm")
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-drop"), AUTH)
    eq(r.status, 200, "answered by the other account")
    row = last_row(env, model="gpt-drop")
    eq((row["account"], row["attempts"]), ("warm", 2), "the drop was an attempt, then the next account")
    st = sim_account(env, "fx-drop")
    eq((st["requests"], st["dropped"]), (1, 1), "the dropping account got the request exactly once")


@fault
def test_stream_after_dropped_attempt_survives_hangup(env):
    """The crash the outside review found: after a pooled connection died and the request
    went out again, the exchange kept a pointer to the freed connection; a client hang-up
    (or backpressure) on the stream that followed touched freed memory (ASan)."""
    eq(request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-drop2"), AUTH).status, 200, "warm-up")
    c = Client(env.port)
    seen = []
    c.send("POST", "/v1/chat/completions", chat(model="gpt-drop2", stream=True), AUTH)
    head = c.read_response(on_chunk=lambda p: seen.append(p) or len(seen) < 3)
    eq(head.status, 200, "the stream started on the next account")
    c.close()
    wait_until(lambda: last_row(env, model="gpt-drop2")["status"] == 499, what="the 499 row")
    row = last_row(env, model="gpt-drop2")
    eq((row["attempts"], row["account"], row["error"]), (2, "warm2", "client_closed"), "row")
    eq(request(env.port, "GET", "/healthz").status, 200, "gateway alive")


@fault
def test_provider_closing_idle_connections(env):
    """The simulator closes keep-alive connections idle for 300 ms (providers do, e.g.
    uvicorn after 5 s). Requests spaced past that must each be sent once and succeed."""
    before = sim_account(env, "fx-idle").get("requests", 0)
    for i in range(4):
        r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-idle", max_tokens=1), AUTH)
        eq(r.status, 200, "request %d" % i)
        eq(last_row(env, model="gpt-idle")["attempts"], 1, "no attempt lost to a closed pooled connection")
        time.sleep(0.45)
    eq(sim_account(env, "fx-idle")["requests"], before + 4, "each request reached the provider once")


@fault
def test_early_answer_is_never_pooled(env):
    """A provider answering 413 from the head while the body is still being written, and
    keeping the connection (reading the rest as body): the gateway must stop writing and
    not pool that connection, or the next request becomes the tail of the previous body."""
    big = chat(model="gpt-early", padding="x" * (40 << 20))
    r = request(env.port, "POST", "/v1/chat/completions", big, AUTH)
    eq(r.status, 413, "the early answer is relayed")
    eq(env.sim_stats(env.slow_sim)["fx-early"]["early"], 1, "answered from the head")
    t = time.time()
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-early", max_tokens=2), AUTH)
    eq(r.status, 200, "the next request on that provider")
    row = last_row(env, model="gpt-early")
    eq((row["account"], row["attempts"]), ("after", 1), "served at once, on a fresh connection")
    assert time.time() - t < 2.5, "took %.1fs: the request went down the desynchronised connection" % (time.time() - t)


@fault
def test_close_delimited_stream_cut_is_broken(env):
    """A provider that ends its stream by closing the connection (no length, no chunked):
    a close before the stream's terminal event is a cut, not a clean end."""
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-closeok", stream=True), AUTH)
    eq((r.status, r.complete, sse_events(r.body)[-1][1]), (200, True, "[DONE]"), "a whole close-delimited stream")
    eq(last_row(env, model="gpt-closeok")["usage_source"], "upstream", "its usage")
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-closecut", stream=True), AUTH)
    eq(r.status, 200, "the stream had started")
    assert not r.complete, "no fabricated clean end for a cut close-delimited stream"
    assert "error" in json.loads(sse_events(r.body)[-1][1]), "an error event shows the break"
    row = last_row(env, model="gpt-closecut")
    eq((row["error"], row["usage_source"]), ("upstream_broken", "estimated"), "row")


@fault
def test_connection_named_headers_are_dropped(env):
    """RFC 9110 §7.6.1: headers the Connection header names are for the next hop only, in
    both directions."""
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-echo", max_tokens=1),
                dict(AUTH, **{"Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "secret", "X-Keep": "1"}))
    eq(r.status, 200, "status")
    saw = r.headers["x-sim-saw"].split(",")
    assert "x-keep" in saw, saw
    assert "x-client-hop" not in saw and "connection" not in saw, "forwarded to the provider: %s" % saw
    assert "x-sim-hop" not in r.headers, "the provider's hop header reached the client"


@fault
def test_retry_moves_the_rotation_once(env):
    """Accounts bad (500), x, y share a tier. The first request tries bad, then the next in
    rotation (x), not the one after it; the second request starts after x."""
    r = request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-cursor", max_tokens=1), AUTH)
    eq(r.status, 200, "status")
    row = last_row(env, model="gpt-cursor")
    eq((row["account"], row["attempts"]), ("x", 2), "retry went to the next account")
    request(env.port, "POST", "/v1/chat/completions", chat(model="gpt-cursor", max_tokens=1), AUTH)
    eq(last_row(env, model="gpt-cursor")["account"], "y", "rotation continued after x")


# ---------------------------------------------------------------- the client side

@fault
def test_unknown_key_refused_from_the_head(env):
    """A request with a bad key and a large declared body gets its 401 at once, without the
    body being read and without 100 Continue."""
    for extra in ("", "Expect: 100-continue\r\n"):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=3)
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-key\r\n"
                   "Content-Type: application/json\r\nContent-Length: 20000000\r\n%s\r\n" % extra).encode())
        data = s.recv(4096)
        s.close()
        assert data.startswith(b"HTTP/1.1 401"), data[:80]
        assert b"100 Continue" not in data, "100 Continue sent to an unknown key"
        assert b"Connection: close" in data, "a large unread body: the connection closes"
    # a small body after an early 401 is discarded and the connection stays usable
    c = Client(env.port)
    r = c.request("POST", "/v1/chat/completions", chat(), {"Authorization": "Bearer not-a-key"})
    eq(r.status, 401, "small body, bad key")
    eq(c.request("POST", "/v1/chat/completions", chat(max_tokens=1), AUTH).status, 200, "same connection, next request")
    c.close()


@fault
def test_declared_bodies_reserve_no_memory(env):
    """Authenticated clients that declare a large body and send nothing: the gateway must
    not reserve the declared length up front (it once did, per connection)."""
    pid = env.gw.p.pid

    def vm_kb():
        with open("/proc/%d/status" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    base = vm_kb()
    socks = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                   "Content-Length: 40000000\r\n\r\n{\"model\":" % AUTH["Authorization"]).encode())
        socks.append(s)
    time.sleep(0.3)
    grown = vm_kb() - base
    for s in socks:
        s.close()
    assert grown < 200 * 1024, "address space grew %d MiB for 40 declared 40 MB bodies" % (grown // 1024)


@fault
def test_header_deadline(env):
    """A client trickling its head one byte at a time is cut off at client_header_timeout
    (1 s here), whatever the pace."""
    s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    t0 = time.time()
    answer, answered_at = b"", None
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while time.time() - t0 < 5 and answered_at is None:
            s.sendall(b"a")
            time.sleep(0.1)
            try:
                answer = s.recv(4096, socket.MSG_DONTWAIT)
                answered_at = time.time()  # the answer, or the close (b"")
            except BlockingIOError:
                pass
    except (BrokenPipeError, ConnectionResetError):
        answered_at = time.time()
    s.close()
    assert answered_at and answered_at - t0 < 2, "the trickling client held its connection for 5 s"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]


@fault
def test_dialect_of_server_made_errors(env):
    """413, 431 and 400 decided by the HTTP layer use the Anthropic shape on /v1/messages."""
    def raw(req):
        s = socket.create_connection(("127.0.0.1", env.port), timeout=5)
        s.sendall(req)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        finally:
            s.close()
        head, body = data.split(b"\r\n\r\n", 1)
        return int(head.split(b" ")[1]), json.loads(body)
    st, body = raw(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY.encode() +
                   b"\r\nContent-Length: 60000000\r\n\r\n")
    eq((st, body.get("type"), body["error"]["type"]), (413, "error", "request_too_large"), "413 anthropic")
    st, body = raw(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    eq((st, body.get("type")), (431, "error"), "431 anthropic")
    st, body = raw(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY.encode() +
                   b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    eq((st, body.get("type")), (400, "error"), "400 anthropic")
    st, body = raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
    eq((st, "type" in body, body["error"]["code"]), (413, False, "request_too_large"), "413 openai")


@fault
def test_method_not_allowed(env):
    r = request(env.port, "GET", "/v1/chat/completions", headers=AUTH)
    eq((r.status, json.loads(r.body)["error"]["code"]), (405, "method_not_allowed"), "openai 405")
    r = request(env.port, "GET", "/v1/messages", headers=ANTH)
    j = json.loads(r.body)
    eq((r.status, j["type"], j["error"]["code"]), (405, "error", "method_not_allowed"), "anthropic 405")


@fault
def test_http10_client_gets_no_chunked_stream(env):
    """RFC 9112 §6.1: no chunked transfer coding to an HTTP/1.0 client; the stream is
    delimited by the connection's close."""
    body = json.dumps(chat(stream=True, max_tokens=4)).encode()
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, payload = data.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower(), head
    eq(sse_events(payload)[-1][1], "[DONE]", "the stream arrives whole, ended by the close")


@fault
def test_chunked_body_near_max_body(env):
    """A chunked body a few KiB under max_body is accepted (it was refused with 413 when it
    came within ~12 KiB of the limit); one over it is refused."""
    def send(total):
        body = json.dumps(chat(max_tokens=1, pad="p" * (total - 200))).encode()
        c = Client(env.port, timeout=30)
        step = 60000
        chunks = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n" for i in range(0, len(body), step))
        c.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + KEY.encode() +
                       b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        r = c.read_response()
        c.close()
        return r.status
    limit = 48 << 20
    eq(send(limit - 4096), 200, "4 KiB under max_body")
    eq(send(limit + 4096), 413, "4 KiB over max_body")


# ---------------------------------------------------------------- process-level

@solo
def test_out_of_descriptors_does_not_spin(binary, sanitized):
    """With the fd limit reached, the listener must pause (not spin a core logging a line
    per turn) and serve again once descriptors free up."""
    env = Env(binary, sanitized)
    try:
        sim = env.start_sim()
        cfg = env.config(one_provider(sim), limits={"max_connections": "100000"})

        def low_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
        env.start_gateway(cfg, preexec_fn=low_fds)
        socks = []
        for _ in range(80):
            try:
                socks.append(socket.create_connection(("127.0.0.1", env.port), timeout=2))
            except OSError:
                break
        time.sleep(0.3)

        def cpu_s():
            with open("/proc/%d/stat" % env.gw.p.pid) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        c0 = cpu_s()
        time.sleep(1.0)
        used = cpu_s() - c0
        assert used < 0.3, "the gateway used %.2f s of CPU in 1 s while out of descriptors" % used
        warnings = env.gw_log().count("pausing new connections")
        assert 1 <= warnings <= 2, "%d out-of-descriptor warnings" % warnings
        for s in socks:
            s.close()
        time.sleep(0.4)
        eq(request(env.port, "POST", "/v1/chat/completions", chat(), AUTH).status, 200, "served after fds freed")
    finally:
        env.close()


@solo
def test_workers_auto_counts_usable_cpus(binary, sanitized):
    """workers: auto under `taskset -c 0` starts one worker, not one per machine core."""
    env = Env(binary, sanitized)
    try:
        sim = env.start_sim()
        with open(env.config(one_provider(sim))) as f:
            cfg_path = env.write_config(f.read().replace("workers: 1", "workers: auto"))
        env.start_gateway(cfg_path, prefix=("taskset", "-c", "0"))
        eq(json.loads(request(env.port, "GET", "/healthz").body)["workers"], 1, "workers on one usable CPU")
        assert "workers: auto = 1" in env.gw_log(), env.gw_log()[-500:]
    finally:
        env.close()
