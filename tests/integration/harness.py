"""Black-box harness for gpuproxyd's integration tests (standard library only).

It starts the fake OpenAI upstream (tests/fakes/openai_upstream.py) and the real daemon with a
temporary config, on free ports, and gives the tests small HTTP, raw-socket, SSE and Prometheus
helpers.

The daemon binary is $GPUPROXYD_BIN, default build/gpuproxyd (relative to the repository root);
when it is missing every test that needs it is skipped with a message saying so.  The same tests
run under the ASan+UBSan build with GPUPROXYD_BIN=build-asan/gpuproxyd: every daemon the harness
stops must exit 0 and leave no sanitizer report on its stderr.
"""

import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_SCRIPT = REPO_ROOT / "tests" / "fakes" / "openai_upstream.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HOST = "127.0.0.1"

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "MemorySanitizer")

# Environment variables the daemon reads; scrubbed from the inherited environment so that the
# developer's shell never leaks into a test.
DAEMON_ENV_VARS = (
    "GPUPROXYD_LISTEN", "GPUPROXYD_STORE", "GPUPROXYD_CA_FILE", "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL", "PORT_OPENROUTER_MIN", "PORT_OPENROUTER_MAX", "PORT_CUSTOM_MIN",
    "PORT_CUSTOM_MAX", "JWT_ENABLED", "JWT_SECRET", "VASTAI_API_KEY", "IONET_API_KEY",
    "VASTAI_BASE_URL", "IONET_BASE_URL", "GCP_TPU_BASE_URL", "MAX_GPUS", "MAX_TPUS",
    "MAX_VASTAI_GPUS", "MAX_IONET_GPUS", "DISTILLATION_ENABLED", "DISTILLATION_MODE",
    "CONFIDENCE_THRESHOLD", "MAX_TRAINING_EXAMPLES",
)


# ------------------------------------------------------------------------------------------------
# the binary


def scrubbed_env():
    """os.environ without the variables gpuproxyd reads."""
    return {k: v for k, v in os.environ.items() if k not in DAEMON_ENV_VARS}


def daemon_bin():
    b = Path(os.environ.get("GPUPROXYD_BIN") or "build/gpuproxyd")
    return b if b.is_absolute() else REPO_ROOT / b


def daemon_missing_reason():
    b = daemon_bin()
    if not b.is_file() or not os.access(str(b), os.X_OK):
        return ("gpuproxyd binary not found at %s: build it with `make` (or `make SAN=1 "
                "BUILD=build-asan`), or point GPUPROXYD_BIN at it" % b)
    return None


def require_daemon():
    reason = daemon_missing_reason()
    if reason:
        raise unittest.SkipTest(reason)


# ------------------------------------------------------------------------------------------------
# ports


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port():
    """A port that refuses connections (nothing listens on it)."""
    return free_port()


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def port_refuses(port, within=1.0):
    """True once a connection to port is refused, polling for up to `within` seconds."""
    end = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def port_accepts(port, within=2.0):
    end = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


_used_ranges = []
_range_lock = threading.Lock()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pick_port_range(size):
    """[lo, hi] of `size` free ports in 20000..(ephemeral low - 1), not overlapping any range
    picked before by this process, so ports the daemon allocates never collide with the fakes
    (which take ephemeral ports) or with other daemons."""
    top = min(40000, _ephemeral_low()) - size - 1
    rnd = random.Random(os.getpid() ^ int(time.time() * 1000))
    with _range_lock:
        for _ in range(200):
            lo = rnd.randrange(20000, top)
            hi = lo + size - 1
            if any(not (hi < a or lo > b) for a, b in _used_ranges):
                continue
            if all(port_is_free(p) for p in range(lo, hi + 1)):
                _used_ranges.append((lo, hi))
                return lo, hi
    raise RuntimeError("could not find %d free ports in a row" % size)


def pick_ranges():
    """(custom_range, hosted_range) for one daemon: PORT_CUSTOM_* and PORT_OPENROUTER_*."""
    return pick_port_range(60), pick_port_range(30)


# ------------------------------------------------------------------------------------------------
# HTTP helpers


class Resp:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # dict, lower-case names (last value wins)
        self.body = body
        self._json = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is None:
            self._json = json.loads(self.body.decode("utf-8"))
        return self._json

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Resp %s %r>" % (self.status, self.body[:300])


def _encode_body(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def http_request(port, method, path, body=None, headers=None, timeout=10.0, host=HOST,
                 tls_context=None, conn=None):
    """One request; returns Resp.  `body` may be bytes, str or a JSON-able object.  With `conn`
    (an http.client connection) the request goes over that (keep-alive) connection."""
    data = _encode_body(body)
    hdrs = {}
    if data is not None and not isinstance(body, (bytes, bytearray, str)):
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    own = conn is None
    if own:
        if tls_context is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        return Resp(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, payload)
    finally:
        if own:
            conn.close()


def chat_body(content, model=None, **extra):
    b = {"messages": [{"role": "user", "content": content}]}
    if model is not None:
        b["model"] = model
    b.update(extra)
    return b


class SSEStream:
    """A streaming request read event by event, with arrival times."""

    def __init__(self, port, path, body, headers=None, timeout=10.0):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        self.t_sent = time.monotonic()
        self.conn.request("POST", path, body=_encode_body(body), headers=hdrs)
        self.resp = self.conn.getresponse()
        self.t_headers = time.monotonic()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}

    def events(self):
        """Yield (arrival_time, data_string) for each SSE event; stops after [DONE] or EOF."""
        data_lines = []
        while True:
            line = self.resp.readline()
            if not line:
                if data_lines:
                    yield time.monotonic(), "\n".join(data_lines)
                return
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data_lines:
                    data = "\n".join(data_lines)
                    data_lines = []
                    yield time.monotonic(), data
                    if data == "[DONE]":
                        return
                continue
            if line.startswith(":"):
                continue
            if line.startswith("data:"):
                v = line[5:]
                data_lines.append(v[1:] if v.startswith(" ") else v)

    def read_all(self):
        return list(self.events())

    def close(self):
        self.conn.close()


def assemble_stream(events, kind="chat"):
    """(text, usage, saw_done, chunks) from the events of a chat or completions stream."""
    text = []
    usage = None
    done = False
    chunks = []
    for _, data in events:
        if data == "[DONE]":
            done = True
            continue
        obj = json.loads(data)
        chunks.append(obj)
        if obj.get("usage"):
            usage = obj["usage"]
        for ch in obj.get("choices") or []:
            if kind == "chat":
                piece = (ch.get("delta") or {}).get("content")
            else:
                piece = ch.get("text")
            if piece:
                text.append(piece)
    return "".join(text), usage, done, chunks


# ------------------------------------------------------------------------------------------------
# raw sockets


class RawResponse:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<RawResponse %s %r>" % (self.status, self.body[:200])


class RawConn:
    """A plain TCP connection to the daemon: send exact bytes, parse responses by hand."""

    def __init__(self, port, timeout=5.0, host=HOST):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """sendall that reports a peer reset/close as False instead of raising."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for the response")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            if self.eof or not self._fill(deadline):
                raise ConnectionError("connection closed before %r (have %r)"
                                      % (marker, self.buf[:200]))
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_n(self, n, deadline):
        while len(self.buf) < n:
            if self.eof or not self._fill(deadline):
                raise ConnectionError("connection closed with %d of %d body bytes"
                                      % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None, head_only=False):
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("bad status line %r" % lines[0])
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            if not ln:
                continue
            k, _, v = ln.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = RawResponse(status, reason, headers, b"", head)
        if head_only or 100 <= status < 200 or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding", "")
        cl = resp.header("content-length")
        if "chunked" in te.lower():
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline) != b"\r\n":
                        pass
                    break
                body += self._read_n(size, deadline)
                self._read_n(2, deadline)
            resp.body = body
        elif cl is not None:
            resp.body = self._read_n(int(cl), deadline)
        else:
            while not self.eof and self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def wait_closed(self, timeout):
        """Wait for EOF or reset; returns the seconds it took, or None if still open. Bytes that
        arrive meanwhile are kept in self.buf."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if self.eof:
                return time.monotonic() - start
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._fill(deadline)
            except socket.timeout:
                return None
            except OSError:
                self.eof = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def raw_request(method, path, body=b"", headers=None, http_version="HTTP/1.1"):
    """Bytes of a well-formed request with Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    lines = ["%s %s %s" % (method, path, http_version), "Host: 127.0.0.1"]
    h = dict(headers or {})
    if body or method in ("POST", "PUT"):
        h.setdefault("Content-Type", "application/json")
        h.setdefault("Content-Length", str(len(body)))
    for k, v in h.items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + bytes(body)


# ------------------------------------------------------------------------------------------------
# Prometheus text


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """[(name, {label: value}, float)] for every sample line."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise ValueError("unparsable metrics line: %r" % line)
        labels = {}
        if m.group(3):
            pos = 0
            s = m.group(3)
            while pos < len(s):
                lm = _LABEL_RE.match(s, pos)
                if not lm:
                    raise ValueError("bad labels in %r" % line)
                labels[lm.group(1)] = (lm.group(2).replace('\\"', '"').replace("\\n", "\n")
                                       .replace("\\\\", "\\"))
                pos = lm.end()
        v = m.group(4)
        value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
        out.append((m.group(1), labels, value))
    return out


def metric_samples(text_or_samples, name, **labels):
    samples = parse_metrics(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return [(n, l, v) for n, l, v in samples
            if n == name and all(l.get(k) == str(val) for k, val in labels.items())]


def metric_sum(text_or_samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0.0 when none)."""
    return sum(v for _, _, v in metric_samples(text_or_samples, name, **labels))


# ------------------------------------------------------------------------------------------------
# TOML


class Raw:
    """A value written into the TOML file verbatim (to write invalid values on purpose)."""

    def __init__(self, text):
        self.text = text


def toml_value(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError("no TOML form for %r" % (v,))


def render_config(server, ports, openrouter_base_url, models, extra=""):
    out = ["# written by tests/integration/harness.py", "[server]"]
    for k, v in server.items():
        if v is not None:
            out.append("%s = %s" % (k, toml_value(v)))
    out += ["", "[ports]"]
    for k, v in ports.items():
        out.append("%s = %s" % (k, toml_value(v)))
    out += ["", "[providers.openrouter]", "base_url = %s" % toml_value(openrouter_base_url), ""]
    if extra:
        out += [extra, ""]
    for m in models:
        out.append("[[models]]")
        for k, v in m.items():
            if v is not None:
                out.append("%s = %s" % (k, toml_value(v)))
        out.append("")
    return "\n".join(out) + "\n"


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise ValueError("%r not in config" % needle)


# ------------------------------------------------------------------------------------------------
# the fake upstream


class FakeUpstream:
    """tests/fakes/openai_upstream.py in a subprocess."""

    def __init__(self, tls_cert=None, tls_key=None, verbose=False, _start=True):
        self.tls = bool(tls_cert)
        self.port = None
        self.log_path = tempfile.mktemp(prefix="fake-upstream-", suffix=".log")
        cmd = [PYTHON, str(FAKE_SCRIPT), "--port", "0", "--host", HOST, "--exit-with-parent"]
        if tls_cert:
            cmd += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        if verbose or os.environ.get("FAKE_VERBOSE"):
            cmd.append("--verbose")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL)
        if _start:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        if self.port is not None:
            return self
        deadline = time.monotonic() + timeout
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError("fake upstream did not start: %r %s" % (line, self.log_tail()))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                ch = os.read(fd, 1)
                if not ch:
                    raise RuntimeError("fake upstream exited: %s" % self.log_tail())
                line += ch
        m = re.match(rb"READY (\d+)", line)
        if not m:
            raise RuntimeError("unexpected fake output %r" % line)
        self.port = int(m.group(1))
        return self

    @classmethod
    def start_many(cls, n, **kw):
        fakes = [cls(_start=False, **kw) for _ in range(n)]
        for f in fakes:
            f.wait_ready()
        return fakes

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def url(self, prefix="/v1"):
        return "%s://%s:%d%s" % ("https" if self.tls else "http", HOST, self.port, prefix)

    def _call(self, method, path, body=None):
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        r = http_request(self.port, method, path, body=body, timeout=5, tls_context=ctx)
        if r.status != 200:
            raise RuntimeError("fake control %s %s => %s" % (method, path, r))
        return r.json()

    def configure(self, **behavior):
        """Set the default behaviour (replaces the previous one; no arguments resets)."""
        return self._call("POST", "/_fake/config", behavior)

    def clear(self):
        return self._call("POST", "/_fake/clear", {})

    def reset(self):
        self.configure()
        self.clear()

    def stats(self):
        return self._call("GET", "/_fake/stats")

    def requests(self, suffix=None, method=None):
        reqs = self._call("GET", "/_fake/requests")
        if suffix is not None:
            reqs = [r for r in reqs if r["path"].split("?")[0].endswith(suffix)]
        if method is not None:
            reqs = [r for r in reqs if r["method"] == method]
        return reqs

    def api_requests(self):
        """Requests for the data-plane routes (not the pricing GET .../models)."""
        return [r for r in self.requests()
                if r["path"].split("?")[0].endswith(("/chat/completions", "/completions",
                                                     "/embeddings"))]

    def wait_stats(self, key, value, timeout=2.0):
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st.get(key) == value or time.monotonic() >= end:
                return st
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self._log):
            try:
                f.close()
            except OSError:
                pass
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def make_self_signed_cert(directory, cn="127.0.0.1"):
    """(cert_path, key_path) of a fresh self-signed cert for IP 127.0.0.1, or raise SkipTest."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise unittest.SkipTest("the openssl CLI is needed to make a test certificate")
    cert = os.path.join(directory, "cert-%d.pem" % random.randrange(1 << 30))
    key = cert.replace("cert-", "key-")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=%s" % cn,
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise unittest.SkipTest("openssl could not make a certificate: %s" % r.stderr[-500:])
    return cert, key


# ------------------------------------------------------------------------------------------------
# the daemon


DEFAULT_SERVER = {
    "workers": 2,
    "max_header_bytes": "16KB",
    "max_body": "1MB",
    "header_timeout": "2s",
    "idle_timeout": "10s",
    "upstream_connect_timeout": "2s",
    "upstream_timeout": "5s",
    "drain_timeout": "5s",
    "access_log": True,
    "log_level": "info",
}


class Daemon:
    """gpuproxyd with a temporary config on free ports.

    models: list of dicts, written as [[models]] tables in order, or a callable that gets the
        Daemon (its port ranges already picked) and returns that list.
    server: [server] keys merged over DEFAULT_SERVER.
    openrouter_base_url: written to [providers.openrouter] base_url (the env var
        OPENROUTER_BASE_URL is only set when given in env).
    env: extra environment (e.g. OPENROUTER_API_KEY, OPENROUTER_BASE_URL, GPUPROXYD_CA_FILE).
    listen_in_file: the [server] listen written to the file (default: the main address too;
        GPUPROXYD_LISTEN always names the main address).
    """

    def __init__(self, models=(), server=None, env=None, openrouter_base_url=None,
                 custom_range=None, hosted_range=None, listen_in_file=None, extra_toml=""):
        require_daemon()
        self.bin = str(daemon_bin())
        self.dir = tempfile.mkdtemp(prefix="gpuproxyd-test-")
        self.config_path = os.path.join(self.dir, "gpuproxyd.toml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.port = free_port()
        self.listen = "%s:%d" % (HOST, self.port)
        cr, hr = (custom_range, hosted_range) if custom_range and hosted_range else pick_ranges()
        self.custom_range = custom_range or cr
        self.hosted_range = hosted_range or hr
        self.server = dict(DEFAULT_SERVER)
        self.server.update(server or {})
        self.listen_in_file = listen_in_file or self.listen
        self.openrouter_base_url = openrouter_base_url or "http://127.0.0.1:%d/api/v1" % closed_port()
        self.models = [dict(m) for m in (models(self) if callable(models) else models)]
        self.extra_toml = extra_toml
        self.extra_env = dict(env or {})
        self.proc = None
        self.killed = False
        self.started_at = None
        self.exit_code = None
        self.write_config()

    # -- ports ------------------------------------------------------------------------------------

    def custom_port(self, i):
        """The i-th port of the custom range (tests give static models ports from the bottom)."""
        lo, hi = self.custom_range
        assert lo + i <= hi
        return lo + i

    def hosted_port(self, i):
        lo, hi = self.hosted_range
        assert lo + i <= hi
        return lo + i

    # -- config -----------------------------------------------------------------------------------

    def config_text(self, models=None, server=None, extra_toml=None):
        srv = {"listen": self.listen_in_file}
        srv.update(self.server)
        srv.update(server or {})
        ports = {"openrouter_min": self.hosted_range[0], "openrouter_max": self.hosted_range[1],
                 "custom_min": self.custom_range[0], "custom_max": self.custom_range[1]}
        return render_config(srv, ports, self.openrouter_base_url,
                             self.models if models is None else models,
                             self.extra_toml if extra_toml is None else extra_toml)

    def write_config(self, models=None, text=None):
        if models is not None:
            self.models = [dict(m) for m in models]
        if text is None:
            text = self.config_text()
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)
        return text

    def env(self):
        e = scrubbed_env()
        e.update({
            "GPUPROXYD_LISTEN": self.listen,
            "GPUPROXYD_STORE": "sqlite:" + os.path.join(self.dir, "store.db"),
            "PORT_OPENROUTER_MIN": str(self.hosted_range[0]),
            "PORT_OPENROUTER_MAX": str(self.hosted_range[1]),
            "PORT_CUSTOM_MIN": str(self.custom_range[0]),
            "PORT_CUSTOM_MAX": str(self.custom_range[1]),
        })
        e.update(self.extra_env)
        return e

    # -- process ----------------------------------------------------------------------------------

    def start(self, wait=True, timeout=10.0):
        self._err = open(self.stderr_path, "ab")
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen([self.bin, "--config", self.config_path], cwd=self.dir,
                                     env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err)
        self.started_at = time.monotonic()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.killed = True  # reported here; stop() has nothing to add
                self._close_files()
                raise AssertionError("gpuproxyd exited with %s during start-up; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr_tail()))
            try:
                r = http_request(self.port, "GET", "/readyz", timeout=1.0)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.kill()
        raise AssertionError("gpuproxyd not ready within %.0fs (last: %r); stderr:\n%s"
                             % (timeout, last, self.stderr_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, models=None, text=None):
        """Rewrite the config (models, or the whole text) and send SIGHUP."""
        self.write_config(models=models, text=text)
        self.proc.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stop the daemon; returns a list of problems (empty when it exited 0, in time, with
        no sanitizer report)."""
        if self.proc is None or self.killed:
            return []
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.wait_exit(timeout) is None:
                problems.append("gpuproxyd did not exit within %.0fs of %s"
                                % (timeout, signal.Signals(sig).name))
                self.kill()
        self.exit_code = self.proc.returncode
        if self.exit_code != 0 and not problems:
            problems.append("gpuproxyd exited with code %s" % self.exit_code)
        problems += self.sanitizer_problems()
        self._close_files()
        return problems

    def stop_and_check(self, sig=signal.SIGTERM, timeout=10.0):
        problems = self.stop(sig, timeout)
        if problems:
            raise AssertionError("; ".join(problems) + "\nstderr tail:\n" + self.stderr_tail())

    def sanitizer_problems(self):
        err = self.stderr_text()
        return ["sanitizer report on stderr: %r" % m for m in SANITIZER_MARKERS if m in err]

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
            self.proc.wait(5)
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def cleanup(self):
        self.kill()
        if not os.environ.get("GPUPROXYD_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- logs -------------------------------------------------------------------------------------

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=4000):
        return self.stderr_text()[-n:]

    def access_log(self):
        """Every stderr line that is a JSON object (the access log and any JSON logs)."""
        out = []
        for ln in self.stderr_text().splitlines():
            ln = ln.strip()
            if ln.startswith("{"):
                try:
                    obj = json.loads(ln)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    # -- requests ---------------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, port=None, timeout=10.0, conn=None):
        return http_request(port or self.port, method, path, body=body, headers=headers,
                            timeout=timeout, conn=conn)

    def get(self, path, port=None, **kw):
        return self.request("GET", path, port=port, **kw)

    def post(self, path, body=None, port=None, **kw):
        return self.request("POST", path, body=body, port=port, **kw)

    def chat(self, content, model=None, port=None, headers=None, timeout=10.0, **extra):
        return self.post("/v1/chat/completions", chat_body(content, model, **extra), port=port,
                         headers=headers, timeout=timeout)

    def metrics(self):
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError("/metrics answered %r" % r)
        return r.text

    def stream(self, content, model=None, port=None, path="/v1/chat/completions",
               include_usage=True, headers=None, timeout=10.0):
        body = {"stream": True}
        if path.endswith("/chat/completions"):
            body["messages"] = [{"role": "user", "content": content}]
        else:
            body["prompt"] = content
        if model is not None:
            body["model"] = model
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        return SSEStream(port or self.port, path, body, headers=headers, timeout=timeout)


# ------------------------------------------------------------------------------------------------
# base test case


class GatewayTestCase(unittest.TestCase):
    """Base class: helpers for class-scoped fakes and daemons that are stopped and checked
    (exit code 0, no sanitizer report) when the class is done."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        require_daemon()

    @classmethod
    def start_fake(cls, **kw):
        f = FakeUpstream(**kw)
        cls.addClassCleanup(f.stop)
        return f

    @classmethod
    def start_fakes(cls, n, **kw):
        fakes = FakeUpstream.start_many(n, **kw)
        for f in fakes:
            cls.addClassCleanup(f.stop)
        return fakes

    @classmethod
    def start_daemon(cls, **kw):
        d = Daemon(**kw)
        cls.addClassCleanup(d.cleanup)
        cls.addClassCleanup(d.stop_and_check)  # runs first (cleanups are LIFO)
        d.start()
        return d

    # per-test variants (for tests that stop their daemon themselves)
    def fake(self, **kw):
        f = FakeUpstream(**kw)
        self.addCleanup(f.stop)
        return f

    def daemon(self, start=True, **kw):
        d = Daemon(**kw)
        self.addCleanup(d.cleanup)
        if start:
            d.start()
        return d

    # -- assertions -------------------------------------------------------------------------------

    def assertOpenAIError(self, resp, status, etype=None, code=None, msg_contains=None):
        body = resp.body if hasattr(resp, "body") else b""
        self.assertEqual(resp.status, status, "expected %d, got %r" % (status, resp))
        ctype = resp.header("content-type", "") or ""
        self.assertIn("application/json", ctype, "error without a JSON content type: %r" % resp)
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError:
            self.fail("error body is not JSON: %r" % body[:300])
        self.assertIsInstance(obj, dict)
        self.assertIn("error", obj, obj)
        err = obj["error"]
        self.assertIsInstance(err, dict, obj)
        for k in ("message", "type", "code"):
            self.assertIn(k, err, "error object lacks %r: %r" % (k, obj))
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"], "empty error message")
        if etype is not None:
            self.assertEqual(err["type"], etype, obj)
        if code is not None:
            self.assertEqual(err["code"], code, obj)
        if msg_contains is not None:
            self.assertIn(msg_contains, err["message"], obj)
        return err

    def assertChatEcho(self, resp, content):
        self.assertEqual(resp.status, 200, resp)
        obj = resp.json()
        self.assertEqual(obj["choices"][0]["message"]["content"], "echo: " + content, obj)
        return obj

    def assertClosed(self, conn, within=2.0, msg=""):
        t = conn.wait_closed(within)
        self.assertIsNotNone(t, "connection still open %.1fs later %s" % (within, msg))
        return t

    def eventually(self, fn, timeout=2.0, interval=0.05, msg="condition not met"):
        """Poll fn() until it returns a truthy value; fail after timeout."""
        end = time.monotonic() + timeout
        last = None
        while True:
            last = fn()
            if last:
                return last
            if time.monotonic() >= end:
                self.fail("%s within %.1fs (last: %r)" % (msg, timeout, last))
            time.sleep(interval)


def run_in_thread(fn, *args, **kw):
    """Start fn in a thread; returns a callable that joins it and returns (or raises) its result."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def result(timeout=15.0):
        t.join(timeout)
        if t.is_alive():
            raise AssertionError("background request still running after %.0fs" % timeout)
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result
