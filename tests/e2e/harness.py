"""harness.py — start `quotagate sim` and `quotagate serve` on free loopback ports and talk
HTTP/1.1 to them with raw sockets, so tests see exactly what went over the wire (chunk
framing, unterminated bodies, SSE events as they arrive).  Standard library only."""

import functools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

ADMIN = "e2e-admin-token"
KEY = "e2e-key-0000000001"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(pred, timeout=10.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Proc:
    def __init__(self, args, env=None, log=None, preexec_fn=None):
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Response:
    def __init__(self):
        self.status = 0
        self.headers = {}
        self.body = b""
        self.complete = False      # the body's framing ended cleanly
        self.chunks = []           # (time, bytes) for chunked bodies, as decoded


class Client:
    """A keep-alive HTTP/1.1 client over one socket."""

    def __init__(self, port, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = b""
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
            headers["Content-Length"] = str(len(data))
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: test"]
        lines += ["%s: %s" % kv for kv in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, on_chunk=None, head_only=False):
        r = Response()
        while True:
            status = self._line().split(b" ", 2)
            r.status = int(status[1])
            r.headers = {}
            while True:
                line = self._line()
                if not line:
                    break
                k, v = line.split(b":", 1)
                r.headers[k.decode().lower()] = v.strip().decode()
            if r.status != 100:
                break
        if head_only:
            return r
        return self.read_body(r, on_chunk)

    def read_body(self, r, on_chunk=None):
        try:
            if r.headers.get("transfer-encoding") == "chunked":
                while True:
                    size = int(self._line().split(b";")[0], 16)
                    if size == 0:
                        while self._line():
                            pass
                        r.complete = True
                        break
                    while len(self.buf) < size + 2:
                        self._fill()
                    piece, self.buf = self.buf[:size], self.buf[size + 2:]
                    r.body += piece
                    r.chunks.append((time.time(), piece))
                    if on_chunk and on_chunk(piece) is False:
                        return r
            elif "content-length" in r.headers:
                n = int(r.headers["content-length"])
                while len(self.buf) < n:
                    self._fill()
                r.body, self.buf = self.buf[:n], self.buf[n:]
                r.complete = True
            else:
                while True:
                    try:
                        self._fill()
                    except EOFError:
                        break
                r.body, self.buf = self.buf, b""
                r.complete = True
        except (EOFError, ConnectionResetError):
            r.complete = False
        return r

    def request(self, method, path, body=None, headers=None, **kw):
        self.send(method, path, body, headers)
        return self.read_response(**kw)


def request(port, method, path, body=None, headers=None, **kw):
    c = Client(port)
    try:
        return c.request(method, path, body, headers, **kw)
    finally:
        c.close()


def sse_events(body):
    """Splits an SSE body into (event, data) pairs."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((ev, "\n".join(data)))
    return out


class Env:
    """One simulator (optionally several) and one gateway, in a temporary directory."""

    def __init__(self, binary, sanitized=False):
        self.bin = binary
        self.sanitized = sanitized
        self.dir = tempfile.mkdtemp(prefix="qg-e2e-")
        self.procs = []
        self.gw = None

    def start_sim(self, *args, tls=None):
        port = free_port()
        # QG_SIM_BIN: run an older gateway against today's simulator (to show a test fails without its fix)
        argv = [os.environ.get("QG_SIM_BIN", self.bin), "sim", "--listen", "127.0.0.1:%d" % port] + list(args)
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        p = Proc(argv, log=os.path.join(self.dir, "sim-%d.log" % port))
        self.procs.append(p)
        wait_until(lambda: port_open(port), what="sim to listen")
        return port

    def write_config(self, text, name="gw.yaml"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config(self, providers, extra="", port=None, workers=1, limits=None):
        self.port = port or free_port()
        self.db = os.path.join(self.dir, "ledger.db")
        text = """listen: 127.0.0.1:%d
workers: %d
admin_token: %s
store: { sqlite: %s }
limits:
%s
providers:
%s
keys:
  - { name: e2e, key: %s }
  - { name: other, key: e2e-key-0000000002, models: [gpt-test] }
%s
""" % (self.port, workers, ADMIN, self.db, self.limits(limits), providers, KEY, extra)
        return self.write_config(text)

    @staticmethod
    def limits(overrides):
        """The test defaults, with `overrides` ({"name": "value"}) replacing or adding keys."""
        lim = {"client_idle_timeout": "5s", "upstream_connect_timeout": "2s", "upstream_first_byte_timeout": "5s",
               "stream_idle_timeout": "5s", "drain_timeout": "10s"}
        lim.update(overrides or {})
        return "\n".join("  %s: %s" % kv for kv in lim.items())

    def start_gateway(self, cfg_path, wait=True, prefix=(), preexec_fn=None):
        """prefix: a command to run the gateway under (e.g. taskset); preexec_fn: runs in the child."""
        env = dict(os.environ)
        self.gw = Proc(list(prefix) + [self.bin, "serve", "-c", cfg_path], env=env, log=os.path.join(self.dir, "gw.log"),
                       preexec_fn=preexec_fn)
        if wait:
            wait_until(lambda: port_open(self.port) or self.gw.p.poll() is not None, what="gateway to listen")
            if self.gw.p.poll() is not None:
                raise AssertionError("gateway exited: " + self.gw_log())
        return self.gw

    def gw_log(self):
        try:
            with open(os.path.join(self.dir, "gw.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def usage(self, query=""):
        r = request(self.port, "GET", "/admin/usage" + query, headers={"Authorization": "Bearer " + ADMIN})
        assert r.status == 200, (r.status, r.body)
        return json.loads(r.body)

    def sim_stats(self, port):
        return json.loads(request(port, "GET", "/sim/stats").body)["accounts"]

    def ledger_rows(self):
        con = sqlite3.connect(self.db)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("select * from ledger order by id")]
        finally:
            con.close()

    def close(self):
        """Stops everything; raises if a sanitizer reported anything in any log."""
        rc = None
        if self.gw:
            rc = self.gw.stop()
        for p in self.procs:
            p.stop()
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text = f.read()
                for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                    if marker in text:
                        raise AssertionError("%s in %s:\n%s" % (marker, name, text[text.index(marker) - 200:][:3000]))
        shutil.rmtree(self.dir, ignore_errors=True)  # kept when something failed, for the logs
        return rc


AUTH = {"Authorization": "Bearer " + KEY}
ANTH = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def chat(model="gpt-test", stream=False, **extra):
    b = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        b["stream"] = True
    b.update(extra)
    return b


def messages(model="claude-test", stream=False, **extra):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        b["stream"] = True
    b.update(extra)
    return b


def one_provider(sim_port, models="[gpt-test]", api_key="k"):
    """The providers: block for one OpenAI-dialect provider on a simulator."""
    return """
  - name: p
    dialect: openai
    base_url: http://127.0.0.1:%d
    models: %s
    accounts: [{ name: a, api_key: %s }]
""" % (sim_port, models, api_key)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: expected %r, got %r" % (what, b, a))


def settled(env, timeout=10.0):
    """Waits until every request the gateway made has its ledger row committed. A row is
    submitted just after the response's last byte, so a client that has read a response
    can still be a moment ahead of its row (on a loaded machine, a few ms)."""
    def done():
        h = json.loads(request(env.port, "GET", "/healthz").body)
        return h["requests"] == h["ledger_rows"]
    wait_until(done, timeout=timeout, what="the ledger to hold a row for every request made")


def last_row(env, **filters):
    settled(env)
    q = "?limit=1" + "".join("&%s=%s" % kv for kv in filters.items())
    rows = env.usage(q)["rows"]
    assert rows, "no ledger row for %r" % filters
    return rows[0]


def wait_row(env, pred, what):
    def find():
        for r in env.usage("?limit=50")["rows"]:
            if pred(r):
                return r
        return None
    return wait_until(find, what=what)


def solo_test(registry):
    """A decorator that registers fn in `registry` as a solo test: a fresh Env for it alone,
    closed (and checked for sanitizer reports and a clean SIGTERM exit) after it."""
    def deco(fn):
        @functools.wraps(fn)
        def run(binary, sanitized):
            env = Env(binary, sanitized)
            ok = False
            try:
                fn(env)
                ok = True
            finally:
                try:
                    rc = env.close()
                except AssertionError:
                    if ok:
                        raise
                    rc = None  # the test's own failure is the one to show
                if ok and rc not in (0, None):
                    raise AssertionError("gateway exit code %r on SIGTERM\n%s" % (rc, env.gw_log()[-3000:]))
        registry.append(("solo", run))
        return run
    return deco
