"""Shared plumbing for gpuproxyd's cloud-provider fakes (vastai.py, ionet.py, gcp_tpu.py).

Standard library only.  Each fake is one FakeProvider subclass plus a `main()` that calls
`run_main(TheClass)`.  What lives here:

  * the HTTP/1.1 server (ThreadingHTTPServer, keep-alive, Content-Length on every answer, chunked
    request bodies accepted, Expect: 100-continue handled by http.server);
  * the request pipeline every provider API call goes through, in this order:
        record the call -> slow_ms -> advance lifecycles -> rate_limit_next (429)
        -> fail_next (500) -> auth (401) -> the provider's route
    (the provider supplies the error *shapes*; see FakeProvider.error);
  * the control API, on the same port, never recorded and never faulted:
        POST   /_fake/config   JSON object merged (shallowly) into the settings; an unknown key is a
                               400, so that a typo in a test fails loudly.  Answers the settings.
        GET    /_fake/config   the settings
        GET    /_fake/state    {"provider", "settings", "instances": [...]}: every instance ever
                               created (destroyed ones too) with its internal phase, label,
                               "destroyed", runtime ports/pids, the create request, and "view" (what
                               the provider API shows for it now, null once gone)
        POST   /_fake/reset    stop every runtime, forget instances and calls, settings to defaults
        GET    /_fake/calls    [{method, path, query, body, status, time}] of every API call
                               (path without the query string; query as {name: last value};
                               body parsed as JSON or as a form when it parses, else a string)
        DELETE /_fake/calls    forget the recorded calls
        POST   /_fake/preempt  {"id": ...}: preempt a running instance now (as preempt_after_seconds)
  * the instance lifecycle, driven by time (a 50 ms ticker thread, and again before every API
    call): pending -> running after boot_seconds (or failed, with image_fails; or never, with
    stuck) -> preempted preempt_after_seconds after it started running.  Lifecycle settings are
    read when the instance is created, so changing them later affects only new instances;
  * the runtime endpoint: when an instance becomes running, one runtime is started per worker:
    either an in-process OpenAI-compatible server on a free loopback port (RuntimeServer: GET
    /health, GET /v1/models, POST /v1/chat/completions and /v1/completions with "stream": true as
    SSE ending with "data: [DONE]"), or, when the environment variable GPD_FAKE_RUNTIME_CMD is set,
    that command (run with /bin/sh -c in its own process group; "{port}" and "{model}" replaced)
    on a free port.  Destroy or preemption stops it (open keep-alive connections are cut; the
    command's process group gets SIGTERM, then SIGKILL after 2 s);
  * helpers for tests: spawn_fake() starts a fake script and waits for "READY <port>";
    http_call() makes one request.

Common command line: --port N (0 = a free port), --host 127.0.0.1, --boot-seconds S (default
1.0), --verbose, --exit-with-parent (exit, stopping the runtimes, when the parent process dies).
Once listening the fake prints "READY <port>" on stdout (flushed).  SIGTERM/SIGINT stop the
runtimes and exit.

Settings common to every fake (POST /_fake/config):
    boot_seconds           seconds from create to running (default 1.0, or --boot-seconds)
    rate_limit_next        answer the next N API calls with 429 (provider-shaped body)
    fail_next              answer the next N API calls with 500
    slow_ms                sleep this long before answering each API call
    stuck                  instances created from now on never leave the pending state
    image_fails            instances created from now on fail instead of running
    preempt_after_seconds  instances created from now on are preempted this long after running
                           (null: never)
    no_capacity            create fails the provider's way
    offers_empty           the catalogue/search answers nothing
    destroy_not_found      destroy answers "not found" (the instance is still removed, as if it had
                           already gone; the daemon must count this as destroyed)
    list_extra             list of extra instances reported by list calls (orphans for
                           reconciliation tests); they are materialised as running instances
                           without a runtime and can be fetched and destroyed like any other
    offers                 the catalogue (provider-specific shape; replaces the default)
"""

import argparse
import copy
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
RUNTIME_CMD_ENV = "GPD_FAKE_RUNTIME_CMD"

COMMON_DEFAULTS = {
    "boot_seconds": 1.0,
    "rate_limit_next": 0,
    "fail_next": 0,
    "slow_ms": 0,
    "stuck": False,
    "image_fails": False,
    "preempt_after_seconds": None,
    "no_capacity": False,
    "offers_empty": False,
    "destroy_not_found": False,
    "list_extra": [],
    "offers": None,  # None: the provider's default catalogue
}

VERBOSE = False


def log(msg):
    if VERBOSE:
        sys.stderr.write("[fake %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()


def rfc3339(t=None, frac=True):
    """UTC time as RFC 3339 ("2024-05-01T12:00:00.123456Z")."""
    t = time.time() if t is None else t
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    if frac:
        base += ".%06d" % int((t % 1) * 1e6)
    return base + "Z"


def free_port(host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# requests and responses


class Request:
    """One parsed HTTP request.  `path` has the provider's base prefix stripped (see
    FakeProvider.PATH_PREFIXES); `raw_path` is the path as received (without the query)."""

    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.target = target
        self.raw_path = parts.path or "/"
        self.path = self.raw_path
        self.query_string = parts.query
        self.query_multi = parse_qs(parts.query, keep_blank_values=True)
        self.query = {k: v[-1] for k, v in self.query_multi.items()}
        self.headers = headers  # an http.client.HTTPMessage (case-insensitive get)
        self.body = body
        self._json = None
        self._json_done = False

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(self.body.decode("utf-8")) if self.body else None
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json

    def form(self):
        try:
            return {k: v[-1] for k, v in
                    parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return {}

    def body_for_log(self):
        if not self.body:
            return None
        j = self.json()
        if j is not None:
            return j
        ctype = (self.header("Content-Type") or "").lower()
        if "x-www-form-urlencoded" in ctype:
            return self.form()
        return self.body.decode("utf-8", "replace")


class Response:
    def __init__(self, status, obj=None, headers=None, raw=None, content_type="application/json"):
        self.status = status
        self.obj = obj
        self.headers = dict(headers or {})
        self.content_type = content_type
        self.raw = raw

    def payload(self):
        if self.raw is not None:
            return self.raw
        return json.dumps(self.obj).encode()


class ApiError(Exception):
    """Raised inside a route to answer a (provider-shaped) error."""

    def __init__(self, response):
        super().__init__("HTTP %d" % response.status)
        self.response = response


# ------------------------------------------------------------------------------------------------
# the runtime endpoint (what runs "on" an instance)


def _words(text):
    return len(text.split()) if isinstance(text, str) else 0


def _content_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content
                        if isinstance(p, (dict, str)))
    return ""


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-runtime/1.0"

    def log_message(self, fmt, *args):
        log("runtime %s: %s" % (self.server.instance_id, fmt % args))

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conn_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.conns.discard(self.connection)

    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Fake-Runtime-Instance", str(self.server.instance_id))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            return _read_chunked(self.rfile)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        self._body()
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": self.server.model, "object": "model", "created": 1700000000,
                 "owned_by": "fake-runtime", "max_model_len": 4096}]})
        else:
            self._send(404, {"error": {"message": "no route", "type": "not_found"}})

    def do_POST(self):
        body = self._body()
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, {"error": {"message": "no route", "type": "not_found"}})
            return
        try:
            req = json.loads(body.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            self._send(400, {"error": {"message": "invalid JSON body: %s" % e,
                                       "type": "invalid_request_error"}})
            return
        chat = path.endswith("/chat/completions")
        model = req.get("model") or self.server.model
        if chat:
            msgs = [m for m in (req.get("messages") or []) if isinstance(m, dict)]
            prompt_tokens = sum(_words(_content_text(m.get("content"))) for m in msgs)
            users = [m for m in msgs if m.get("role") == "user"]
            last = _content_text((users or msgs or [{}])[-1].get("content"))
        else:
            last = req.get("prompt") if isinstance(req.get("prompt"), str) else ""
            prompt_tokens = _words(last)
        reply = "echo: " + last
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _words(reply),
                 "total_tokens": prompt_tokens + _words(reply)}
        with self.server.conn_lock:
            self.server.counter += 1
            rid = "%s-%s-%d" % ("chatcmpl" if chat else "cmpl", self.server.instance_id,
                                self.server.counter)
        created = int(time.time())
        if not req.get("stream"):
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": reply},
                          "finish_reason": "stop"}
            else:
                choice = {"index": 0, "text": reply, "finish_reason": "stop"}
            self._send(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": model, "choices": [choice],
                             "usage": usage})
            return
        so = req.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        obj = "chat.completion.chunk" if chat else "text_completion"
        words = reply.split(" ")
        events = []
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            last_piece = i == len(words) - 1
            if chat:
                delta = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta,
                          "finish_reason": "stop" if last_piece else None}
            else:
                choice = {"index": 0, "text": piece,
                          "finish_reason": "stop" if last_piece else None}
            events.append({"id": rid, "object": obj, "created": created, "model": model,
                           "choices": [choice]})
        if include_usage:
            events.append({"id": rid, "object": obj, "created": created, "model": model,
                           "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Fake-Runtime-Instance", str(self.server.instance_id))
        self.end_headers()
        try:
            for ev in events:
                data = b"data: " + json.dumps(ev).encode() + b"\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            data = b"data: [DONE]\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class _RuntimeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


class RuntimeServer:
    """The model runtime of one worker of one instance: in-process, or GPD_FAKE_RUNTIME_CMD."""

    def __init__(self, instance_id, model):
        self.instance_id = instance_id
        self.model = model or "fake-model"
        self.port = None
        self.pid = None
        self.kind = None
        self._srv = None
        self._proc = None

    def start(self):
        cmd = os.environ.get(RUNTIME_CMD_ENV)
        if cmd:
            self.port = free_port()
            line = cmd.replace("{port}", str(self.port)).replace("{model}", self.model)
            out = None if VERBOSE else subprocess.DEVNULL
            self._proc = subprocess.Popen(["/bin/sh", "-c", line], stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=out, start_new_session=True)
            self.pid = self._proc.pid
            self.kind = "command"
            log("runtime %s: started %r pid %d port %d" % (self.instance_id, line, self.pid,
                                                          self.port))
            return self
        srv = _RuntimeHTTPServer((HOST, 0), _RuntimeHandler)
        srv.instance_id = self.instance_id
        srv.model = self.model
        srv.conns = set()
        srv.conn_lock = threading.Lock()
        srv.counter = 0
        self._srv = srv
        self.port = srv.server_address[1]
        self.kind = "thread"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="runtime-%s" % self.instance_id).start()
        log("runtime %s: listening on %d" % (self.instance_id, self.port))
        return self

    def stop(self):
        if self._srv is not None:
            srv, self._srv = self._srv, None
            srv.shutdown()
            srv.server_close()
            with srv.conn_lock:
                conns = list(srv.conns)
            for c in conns:  # cut keep-alive connections: the machine is gone
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._proc is not None:
            proc, self._proc = self._proc, None
            for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass

    def describe(self):
        return {"port": self.port, "pid": self.pid, "kind": self.kind,
                "running": self._srv is not None or self._proc is not None}


# ------------------------------------------------------------------------------------------------
# instances


class Instance:
    """An instance/deployment/node.  `phase` is the fake's own state, one of:
    pending, running, failed, preempted, stopped, completed, deleting, destroyed."""

    def __init__(self, iid, label, settings, now, model=None, request=None, workers=1):
        self.id = iid
        self.label = label
        self.model = model
        self.request = request
        self.workers = workers
        self.created = now
        self.created_wall = time.time()
        self.phase = "pending"
        self.boot_seconds = float(settings.get("boot_seconds") or 0)
        self.stuck = bool(settings.get("stuck"))
        self.image_fails = bool(settings.get("image_fails"))
        pa = settings.get("preempt_after_seconds")
        self.preempt_after = None if pa is None else float(pa)
        self.running_since = None
        self.running_since_wall = None
        self.ended_wall = None
        self.destroyed = False
        self.destroyed_wall = None
        self.extra = False
        self.runtimes = []
        self.message = ""
        self.data = {}  # provider-specific

    def runtime_ports(self):
        return [rt.port for rt in self.runtimes]

    def describe(self):
        return {"id": self.id, "label": self.label, "phase": self.phase,
                "destroyed": self.destroyed, "extra": self.extra, "model": self.model,
                "created_at": rfc3339(self.created_wall),
                "running_since": rfc3339(self.running_since_wall) if self.running_since_wall else None,
                "destroyed_at": rfc3339(self.destroyed_wall) if self.destroyed_wall else None,
                "boot_seconds": self.boot_seconds, "stuck": self.stuck,
                "image_fails": self.image_fails, "preempt_after_seconds": self.preempt_after,
                "message": self.message,
                "runtimes": [rt.describe() for rt in self.runtimes],
                "runtime_ports": self.runtime_ports(), "request": self.request}


# ------------------------------------------------------------------------------------------------
# the provider base


class FakeProvider:
    name = "fake"
    DEFAULT_SETTINGS = {}        # provider-specific settings, merged over COMMON_DEFAULTS
    PATH_PREFIXES = ()           # base-URL paths stripped from the request path when present

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.RLock()
        self.settings = {}
        self.calls = []
        self.instances = {}      # id -> Instance, in creation order
        self._stop = threading.Event()
        self._ticker = None
        with self.lock:
            self._reset_locked()

    # ---- settings and state ------------------------------------------------------------------

    def default_settings(self):
        d = copy.deepcopy(COMMON_DEFAULTS)
        d.update(copy.deepcopy(self.DEFAULT_SETTINGS))
        bs = getattr(self.opts, "boot_seconds", None)
        if bs is not None:
            d["boot_seconds"] = bs
        return d

    def _reset_locked(self):
        self.settings = self.default_settings()
        self.calls = []
        self.instances = {}
        self.on_reset()

    def on_reset(self):
        """Hook: provider state (catalogue, counters) back to its defaults.  Lock held."""

    def on_config(self, cfg):
        """Hook: after a config merge (e.g. materialise list_extra).  Lock held."""

    def apply_config(self, cfg):
        unknown = sorted(k for k in cfg if k not in self.settings)
        if unknown:
            raise ValueError("unknown setting(s) %s; known: %s"
                             % (", ".join(unknown), ", ".join(sorted(self.settings))))
        self.settings.update(cfg)
        self.on_config(cfg)

    def take_counter(self, key):
        """Decrement settings[key] if positive; True when it was."""
        with self.lock:
            n = int(self.settings.get(key) or 0)
            if n > 0:
                self.settings[key] = n - 1
                return True
            return False

    def new_instance(self, iid, label, model=None, request=None, workers=1):
        """Create and register an instance with the current lifecycle settings.  Lock held."""
        inst = Instance(iid, label, self.settings, time.monotonic(), model=model,
                        request=request, workers=workers)
        self.instances[iid] = inst
        return inst

    # ---- lifecycle ---------------------------------------------------------------------------

    def start_ticker(self):
        def loop():
            while not self._stop.wait(0.05):
                try:
                    self.tick()
                except Exception as e:  # never let the ticker die
                    log("tick failed: %r" % e)
        self._ticker = threading.Thread(target=loop, daemon=True, name="ticker")
        self._ticker.start()

    def tick(self):
        """Advance every instance's lifecycle; stop the runtimes of those that went down."""
        stops = []
        with self.lock:
            now = time.monotonic()
            for inst in list(self.instances.values()):
                self.advance(inst, now, stops)
        for rt in stops:
            rt.stop()

    def advance(self, inst, now, stops):
        """Move one instance along pending -> running/failed -> preempted.  Lock held; runtimes
        to stop go to `stops` (stopped after the lock is released)."""
        if inst.destroyed:
            return
        if inst.phase == "pending" and not inst.stuck and now - inst.created >= inst.boot_seconds:
            if inst.image_fails:
                inst.phase = "failed"
                inst.ended_wall = time.time()
                self.on_failed(inst)
            else:
                inst.phase = "running"
                inst.running_since = now
                inst.running_since_wall = time.time()
                self.start_runtimes(inst)
                if inst.phase == "running":
                    self.on_running(inst)
        if (inst.phase == "running" and inst.preempt_after is not None
                and now - inst.running_since >= inst.preempt_after):
            self.preempt(inst, stops)
        self.provider_advance(inst, now, stops)

    def preempt(self, inst, stops):
        inst.phase = "preempted"
        inst.ended_wall = time.time()
        stops.extend(inst.runtimes)
        self.on_preempted(inst)

    def start_runtimes(self, inst):
        if inst.extra:
            return
        try:
            for _ in range(max(1, inst.workers)):
                rt = RuntimeServer(inst.id, inst.model)
                inst.runtimes.append(rt)
                rt.start()
        except (OSError, ValueError) as e:
            inst.phase = "failed"
            inst.message = "runtime failed to start: %s" % e
            inst.ended_wall = time.time()
            for rt in inst.runtimes:
                rt.stop()
            self.on_failed(inst)

    def destroy_instance(self, inst, stops):
        """Mark destroyed; its runtimes go to `stops`.  Lock held."""
        if not inst.destroyed:
            inst.destroyed = True
            inst.destroyed_wall = time.time()
            if inst.phase not in ("failed", "preempted", "completed", "stopped"):
                inst.ended_wall = inst.destroyed_wall
            inst.phase = "destroyed"
        stops.extend(inst.runtimes)

    # hooks (lock held)
    def on_running(self, inst):
        pass

    def on_failed(self, inst):
        pass

    def on_preempted(self, inst):
        pass

    def provider_advance(self, inst, now, stops):
        pass

    # ---- provider interface ------------------------------------------------------------------

    def error(self, status, message, kind=None):
        """A provider-shaped error Response.  kind: 'auth', 'rate_limit', 'server',
        'not_found', 'bad_request', 'no_capacity' or None."""
        return Response(status, {"error": message})

    def auth_error(self, req):
        """None when the request carries the right credentials, else the 401 Response."""
        return None

    def pre_route(self, req):
        """Hook for routes that bypass faults and auth (GCP's /token).  Response or None."""
        return None

    def route(self, req):
        raise ApiError(self.error(404, "no route for %s %s" % (req.method, req.path),
                                  "not_found"))

    def view(self, inst):
        """What the provider API shows for inst (for /_fake/state)."""
        return None

    def extra_state(self):
        """Hook: more keys for GET /_fake/state.  Lock held."""
        return {}

    # ---- request pipeline --------------------------------------------------------------------

    def strip_prefix(self, path):
        for p in self.PATH_PREFIXES:
            if path == p or path.startswith(p + "/"):
                return path[len(p):] or "/"
        return path

    def handle_api(self, req):
        req.path = self.strip_prefix(req.raw_path)
        entry = {"method": req.method, "path": req.raw_path, "query": req.query,
                 "body": req.body_for_log(), "status": None, "time": time.time()}
        with self.lock:
            self.calls.append(entry)
            slow = float(self.settings.get("slow_ms") or 0) / 1000.0
        if slow > 0:
            time.sleep(slow)
        self.tick()
        resp = self.pre_route(req)
        if resp is None:
            if self.take_counter("rate_limit_next"):
                resp = self.error(429, "rate limited (fake rate_limit_next)", "rate_limit")
            elif self.take_counter("fail_next"):
                resp = self.error(500, "internal error (fake fail_next)", "server")
            else:
                resp = self.auth_error(req)
            if resp is None:
                try:
                    resp = self.route(req)
                except ApiError as e:
                    resp = e.response
        entry["status"] = resp.status
        return resp

    def handle_control(self, req):
        path = req.raw_path.rstrip("/")
        m = req.method
        if path == "/_fake/config" and m == "POST":
            cfg = req.json()
            if not isinstance(cfg, dict):
                return Response(400, {"error": "the body must be a JSON object"})
            with self.lock:
                try:
                    self.apply_config(cfg)
                except (ValueError, TypeError) as e:
                    return Response(400, {"error": str(e)})
                return Response(200, {"ok": True, "settings": copy.deepcopy(self.settings)})
        if path == "/_fake/config" and m == "GET":
            with self.lock:
                return Response(200, copy.deepcopy(self.settings))
        if path == "/_fake/state" and m == "GET":
            self.tick()
            with self.lock:
                out = []
                for inst in self.instances.values():
                    d = inst.describe()
                    d["view"] = None if inst.destroyed else self.view(inst)
                    out.append(d)
                state = {"provider": self.name, "settings": copy.deepcopy(self.settings),
                         "instances": out}
                state.update(self.extra_state())
                return Response(200, state)
        if path == "/_fake/reset" and m == "POST":
            self.stop_all()
            with self.lock:
                self._reset_locked()
            return Response(200, {"ok": True})
        if path == "/_fake/calls" and m == "GET":
            with self.lock:
                return Response(200, copy.deepcopy(self.calls))
        if path == "/_fake/calls" and m == "DELETE":
            with self.lock:
                self.calls = []
            return Response(200, {"ok": True})
        if path == "/_fake/preempt" and m == "POST":
            body = req.json() or {}
            stops = []
            with self.lock:
                inst = self.find_instance(body.get("id"))
                if inst is None or inst.destroyed:
                    return Response(404, {"error": "no such instance"})
                if inst.phase != "running":
                    return Response(409, {"error": "instance is %s, not running" % inst.phase})
                self.preempt(inst, stops)
            for rt in stops:
                rt.stop()
            return Response(200, {"ok": True})
        return Response(404, {"error": "unknown fake control route %s %s" % (m, path)})

    def find_instance(self, iid):
        if iid is None:
            return None
        inst = self.instances.get(iid)
        if inst is None:
            inst = self.instances.get(str(iid))
        if inst is None:
            for k, v in self.instances.items():
                if str(k) == str(iid):
                    return v
        return inst

    def stop_all(self):
        with self.lock:
            rts = [rt for inst in self.instances.values() for rt in inst.runtimes]
        for rt in rts:
            rt.stop()

    def shutdown(self):
        self._stop.set()
        self.stop_all()

    # ---- command line ------------------------------------------------------------------------

    @classmethod
    def add_args(cls, ap):
        """Hook: provider-specific command-line options."""


# ------------------------------------------------------------------------------------------------
# the HTTP server


def _read_chunked(rfile):
    out = bytearray()
    while True:
        line = rfile.readline(65537)
        if not line:
            break
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:
                t = rfile.readline(65537)
                if t in (b"\r\n", b"\n", b""):
                    break
            break
        out += rfile.read(size)
        rfile.readline(3)
    return bytes(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _dispatch(self):
        app = self.server.app
        try:
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                body = _read_chunked(self.rfile)
            else:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n > 0 else b""
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Response(400, {"error": "bad request framing"}))
            return
        req = Request(self.command, self.path, self.headers, body)
        try:
            if req.raw_path.startswith("/_fake/"):
                resp = app.handle_control(req)
            else:
                resp = app.handle_api(req)
        except Exception as e:  # a bug in a fake must not hang the daemon under test
            import traceback
            traceback.print_exc()
            resp = Response(500, {"error": "fake crashed: %r" % e})
        self._send(resp)

    def _send(self, resp):
        body = resp.payload()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


def run_main(cls, argv=None):
    """Parse the common options (and cls.add_args), serve until killed."""
    global VERBOSE
    ap = argparse.ArgumentParser(description=(sys.modules[cls.__module__].__doc__ or "")
                                 .split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--boot-seconds", type=float, default=None,
                    help="default for the boot_seconds setting (1.0)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="exit when the process that started this one goes away")
    cls.add_args(ap)
    args = ap.parse_args(argv)
    VERBOSE = args.verbose
    early = getattr(cls, "early_exit", None)
    if early is not None:
        rc = early(args)
        if rc is not None:
            return rc
    app = cls(args)

    def die(*_):
        try:
            app.shutdown()
        finally:
            os._exit(0)

    if args.exit_with_parent:
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(0.25)
            die()

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    signal.signal(signal.SIGTERM, die)
    signal.signal(signal.SIGINT, die)
    srv = _Server((args.host, args.port), _Handler)
    srv.app = app
    app.start_ticker()
    sys.stdout.write("READY %d\n" % srv.server_address[1])
    sys.stdout.flush()
    srv.serve_forever(poll_interval=0.2)
    return 0


# ------------------------------------------------------------------------------------------------
# helpers for tests


class FakeProcess:
    """A fake started by spawn_fake(): .port, .base (http://127.0.0.1:port), .stop()."""

    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.base = "http://%s:%d" % (HOST, port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def call(self, method, path, body=None, headers=None, timeout=10.0):
        return http_call(self.port, method, path, body, headers, timeout)


def spawn_fake(script, *args, env=None, timeout=10.0, stderr=None):
    """Start `python3 script --port 0 --exit-with-parent *args`; wait for READY.  FakeProcess."""
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    cmd = [py, str(script), "--port", "0", "--exit-with-parent"] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env)
    end = time.monotonic() + timeout
    line = b""
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        line = proc.stdout.readline()
        if not line or line.startswith(b"READY "):
            break
    if not line.startswith(b"READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError("%s did not print READY (got %r)" % (script, line))
    return FakeProcess(proc, int(line.split()[1]))


class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<HttpResult %d %r>" % (self.status, self.body[:300])


def http_call(port, method, path, body=None, headers=None, timeout=10.0, conn=None,
              host=HOST):
    """One request to 127.0.0.1:port.  body: bytes/str sent as is, else JSON-encoded."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        return HttpResult(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
    finally:
        if own:
            conn.close()
