#!/usr/bin/python3
"""A fake OpenAI-compatible upstream for gpuproxyd's tests (standard library only).

Usage:
    /usr/bin/python3 tests/fakes/openai_upstream.py --port N [--host 127.0.0.1]
        [--tls-cert CERT --tls-key KEY] [--verbose] [--exit-with-parent]

--port 0 picks a free port.  Once listening it prints "READY <port>" on stdout (flushed).

Routes (matched by path *suffix*, so any base prefix works: /v1/..., /api/v1/..., /x/y/v1/...):
    POST .../chat/completions   echo of the last user message ("echo: " + content)
    POST .../completions        echo of the prompt in choices[0].text
    POST .../embeddings         a fixed embedding [0.1, 0.2, 0.3] per input (as base64 of
                                little-endian float32 when "encoding_format": "base64")
    GET  .../models             OpenRouter-style list with per-token pricing strings, plus
                                every model id this process has seen in a request
"stream": true on chat/completions and completions answers Server-Sent Events, chunked by hand,
one SSE event per HTTP chunk, then (with stream_options.include_usage) a usage chunk, then
"data: [DONE]", then the last (empty) chunk.

Behaviour control (for failure tests): the request header X-Fake-Behavior (a JSON object) is
merged over the process default set by POST /_fake/config (a JSON object that replaces the
default; {} resets it).  Keys:
    status               int: answer this status with {"error":{"message":"fake failure",...}}
    delay_ms             sleep before sending the response headers
    reset                close the socket with SO_LINGER 0 (TCP RST) without answering
    close_after_headers  send the response headers, then close the connection
    chunk_delay_ms       pause between stream events
    stream_chunks        number of content events in a stream (default 5)
    hang                 never answer: wait up to 60 s or until the client goes away

Introspection (these requests are not recorded):
    GET  /_fake/requests   JSON list of {method, path, headers (lower-case names), body, time}
    POST /_fake/clear      clear the recorded requests and the stats
    GET  /_fake/stats      {"requests": n, "stream_aborted": n, "connections": n, "accepted": n}
                           connections: TCP connections that carried at least one recorded
                           request (so keep-alive reuse is visible: connections < requests);
                           accepted: every TCP connection accepted, /_fake/* ones included
    POST /_fake/config     set the default behaviour;  GET /_fake/config reads it
"""

import argparse
import base64
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRICED_MODELS = [
    {
        "id": "anthropic/claude-3-opus",
        "name": "Anthropic: Claude 3 Opus",
        "context_length": 200000,
        "pricing": {"prompt": "0.000015", "completion": "0.000075", "request": "0", "image": "0"},
    },
    {
        "id": "openai/gpt-4o",
        "name": "OpenAI: GPT-4o",
        "context_length": 128000,
        "pricing": {"prompt": "0.0000025", "completion": "0.00001", "request": "0", "image": "0"},
    },
    {
        "id": "mistralai/mistral-7b-instruct",
        "name": "Mistral: Mistral 7B Instruct",
        "context_length": 32768,
        "pricing": {"prompt": "0.00000006", "completion": "0.00000006", "request": "0", "image": "0"},
    },
]

DEFAULT_STREAM_CHUNKS = 5


class FakeState:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.stats = {"requests": 0, "stream_aborted": 0, "connections": 0, "accepted": 0}
        self.default_behavior = {}
        self.seen_models = []
        self.counter = 0
        self.generation = 0  # bumped by /_fake/clear, so a reused connection counts again

    def next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter


STATE = FakeState()
VERBOSE = False


def log(msg):
    if VERBOSE:
        sys.stderr.write("[fake %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()


def words(text):
    return len(text.split()) if isinstance(text, str) else 0


def content_text(content):
    """Text of a chat message content: a string, a list of parts, or null."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, str):
                parts.append(p)
        return " ".join(parts)
    return ""


def prompt_text(prompt):
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return ""


def split_stream(text, n):
    """Split text into exactly n pieces whose concatenation is text: one word per piece while
    there are words, the remainder in the last piece, empty pieces when there are fewer words."""
    toks = text.split(" ")
    pieces = [(t if i == 0 else " " + t) for i, t in enumerate(toks)]
    if n <= 0:
        return []
    if len(pieces) > n:
        pieces = pieces[: n - 1] + ["".join(pieces[n - 1:])]
    while len(pieces) < n:
        pieces.append("")
    return pieces


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1.0"

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    counted_gen = -1  # the STATE.generation in which this connection was last counted

    # ---- plumbing -------------------------------------------------------------------------

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(3)
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status, body, content_type="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # head and body in one write, so that Nagle + delayed ACK never add 40 ms
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(body)
        self.flush_headers()

    def send_json(self, status, obj):
        self.send_bytes(status, json.dumps(obj).encode())

    def send_error_json(self, status, message, etype="server_error", code=None):
        self.send_json(status, {"error": {"message": message, "type": etype,
                                          "code": status if code is None else code}})

    def peer_gone(self, timeout):
        """Wait up to timeout seconds; True if the peer closed (EOF or reset) meanwhile."""
        sock = self.connection
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            try:
                r, _, _ = select.select([sock], [], [], left)
            except (OSError, ValueError):
                return True
            if not r:
                return False
            try:
                if isinstance(sock, ssl.SSLSocket):
                    data = sock.recv(1)
                else:
                    data = sock.recv(1, socket.MSG_PEEK)
            except ssl.SSLWantReadError:
                continue
            except (OSError, ValueError):
                return True
            if not data:
                return True
            # The client sent more bytes (a pipelined request): not gone; just wait out the rest.
            rest = end - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            return False

    def rst_close(self):
        """Close the connection with a TCP RST (SO_LINGER 0), without answering."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            fd = sock.detach()
            os.close(fd)
        except OSError:
            pass

    # ---- dispatch ---------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def dispatch(self, method):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_error_json(400, "bad request framing", "invalid_request_error")
            return
        path = self.path.split("?", 1)[0]
        if path.startswith("/_fake/"):
            self.fake_control(method, path, body)
            return
        hdrs = {}
        for k, v in self.headers.items():
            k = k.lower()
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        with STATE.lock:
            STATE.requests.append({"method": method, "path": self.path, "headers": hdrs,
                                   "body": body.decode("utf-8", "replace"), "time": time.time()})
            STATE.stats["requests"] += 1
            if self.counted_gen != STATE.generation:
                self.counted_gen = STATE.generation
                STATE.stats["connections"] += 1
            behavior = dict(STATE.default_behavior)
        hb = self.headers.get("X-Fake-Behavior")
        if hb:
            try:
                extra = json.loads(hb)
                if isinstance(extra, dict):
                    behavior.update(extra)
            except ValueError:
                pass
        log("%s %s behavior=%s" % (method, self.path, behavior))
        self.serve_api(method, path, body, behavior)

    def fake_control(self, method, path, body):
        if path == "/_fake/requests" and method == "GET":
            with STATE.lock:
                data = list(STATE.requests)
            self.send_json(200, data)
        elif path == "/_fake/stats" and method == "GET":
            with STATE.lock:
                data = dict(STATE.stats)
            self.send_json(200, data)
        elif path == "/_fake/clear" and method == "POST":
            with STATE.lock:
                STATE.requests = []
                STATE.generation += 1
                STATE.stats = {"requests": 0, "stream_aborted": 0, "connections": 0,
                               "accepted": 0}
            self.send_json(200, {"ok": True})
        elif path == "/_fake/config" and method == "POST":
            try:
                cfg = json.loads(body.decode() or "{}")
            except ValueError:
                cfg = None
            if not isinstance(cfg, dict):
                self.send_error_json(400, "config must be a JSON object", "invalid_request_error")
                return
            with STATE.lock:
                STATE.default_behavior = cfg
            self.send_json(200, {"ok": True, "config": cfg})
        elif path == "/_fake/config" and method == "GET":
            with STATE.lock:
                cfg = dict(STATE.default_behavior)
            self.send_json(200, cfg)
        else:
            self.send_error_json(404, "unknown fake control route", "invalid_request_error")

    # ---- the OpenAI-compatible API ------------------------------------------------------------

    def serve_api(self, method, path, body, behavior):
        if behavior.get("reset"):
            self.rst_close()
            return
        if behavior.get("hang"):
            self.close_connection = True
            self.peer_gone(60.0)
            return
        delay = float(behavior.get("delay_ms") or 0) / 1000.0
        if delay > 0:
            time.sleep(delay)
        status = behavior.get("status")
        if status:
            status = int(status)
            if behavior.get("close_after_headers"):
                self.headers_then_close(status)
                return
            self.send_error_json(status, "fake failure", "server_error", status)
            return

        route = None
        if path.endswith("/chat/completions"):
            route = "chat"
        elif path.endswith("/completions"):
            route = "completions"
        elif path.endswith("/embeddings"):
            route = "embeddings"
        elif path.endswith("/models"):
            route = "models"
        if route is None:
            self.send_error_json(404, "no route for %s %s" % (method, path),
                                 "invalid_request_error", "not_found")
            return
        want = "GET" if route == "models" else "POST"
        if method != want:
            self.send_error_json(405, "method %s not allowed" % method,
                                 "invalid_request_error", "method_not_allowed")
            return
        if route == "models":
            if behavior.get("close_after_headers"):
                self.headers_then_close(200)
                return
            self.send_json(200, self.models_list())
            return

        try:
            req = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            self.send_error_json(400, "invalid JSON body: %s" % e, "invalid_request_error",
                                 "invalid_json")
            return
        if not isinstance(req, dict):
            self.send_error_json(400, "the body must be a JSON object", "invalid_request_error",
                                 "invalid_json")
            return
        model = req.get("model")
        if isinstance(model, str):
            with STATE.lock:
                if model not in STATE.seen_models:
                    STATE.seen_models.append(model)

        if route == "chat":
            msgs = req.get("messages") if isinstance(req.get("messages"), list) else []
            prompt_tokens = sum(words(content_text(m.get("content")))
                                for m in msgs if isinstance(m, dict))
            last = ""
            users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
            pick = users[-1] if users else (msgs[-1] if msgs and isinstance(msgs[-1], dict) else None)
            if pick is not None:
                last = content_text(pick.get("content"))
            reply = "echo: " + last
        elif route == "completions":
            text = prompt_text(req.get("prompt"))
            prompt_tokens = words(text)
            reply = "echo: " + text
        else:
            inp = req.get("input")
            inputs = inp if isinstance(inp, list) else [inp]
            prompt_tokens = sum(words(x) for x in inputs if isinstance(x, str))
            reply = ""
        completion_tokens = words(reply)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}

        if behavior.get("close_after_headers"):
            self.headers_then_close(200, stream=bool(req.get("stream")))
            return

        if route == "embeddings":
            vec = [0.1, 0.2, 0.3]
            if req.get("encoding_format") == "base64":  # what the openai SDKs ask for by default
                vec = base64.b64encode(struct.pack("<3f", *vec)).decode()
            data = [{"object": "embedding", "index": i, "embedding": vec}
                    for i in range(max(1, len(inputs)))]
            self.send_json(200, {"object": "list", "data": data, "model": model,
                                 "usage": {"prompt_tokens": prompt_tokens,
                                           "total_tokens": prompt_tokens}})
            return

        if req.get("stream"):
            so = req.get("stream_options")
            include_usage = isinstance(so, dict) and so.get("include_usage") is True
            self.stream(route, model, reply, usage, include_usage, behavior)
            return

        rid = STATE.next_id()
        created = int(time.time())
        if route == "chat":
            resp = {"id": "chatcmpl-fake-%d" % rid, "object": "chat.completion",
                    "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage}
        else:
            resp = {"id": "cmpl-fake-%d" % rid, "object": "text_completion",
                    "created": created, "model": model,
                    "choices": [{"index": 0, "text": reply, "logprobs": None,
                                 "finish_reason": "stop"}],
                    "usage": usage}
        self.send_json(200, resp)

    def models_list(self):
        data = []
        for m in PRICED_MODELS:
            d = dict(m)
            d["object"] = "model"
            d["created"] = 1700000000
            d["owned_by"] = m["id"].split("/")[0]
            data.append(d)
        known = {m["id"] for m in PRICED_MODELS}
        with STATE.lock:
            seen = list(STATE.seen_models)
        for mid in seen:
            if mid in known:
                continue
            data.append({"id": mid, "object": "model", "created": 1700000000,
                         "owned_by": "fake", "name": mid, "context_length": 4096,
                         "pricing": {"prompt": "0", "completion": "0"}})
        return {"object": "list", "data": data}

    def headers_then_close(self, status, stream=False):
        self.close_connection = True
        self.send_response(status)
        if stream:
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            self.wfile.flush()
        except OSError:
            pass

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self, route, model, reply, usage, include_usage, behavior):
        n = int(behavior.get("stream_chunks") or DEFAULT_STREAM_CHUNKS)
        delay = float(behavior.get("chunk_delay_ms") or 0) / 1000.0
        rid = STATE.next_id()
        created = int(time.time())
        pieces = split_stream(reply, n)
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if route == "chat":
                delta = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                ev = {"id": "chatcmpl-fake-%d" % rid, "object": "chat.completion.chunk",
                      "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                   "finish_reason": "stop" if last else None}]}
            else:
                ev = {"id": "cmpl-fake-%d" % rid, "object": "text_completion",
                      "created": created, "model": model,
                      "choices": [{"index": 0, "text": piece, "logprobs": None,
                                   "finish_reason": "stop" if last else None}]}
            if include_usage:
                ev["usage"] = None
            events.append(b"data: " + json.dumps(ev).encode() + b"\n\n")
        if include_usage:
            ev = {"id": ("chatcmpl-fake-%d" if route == "chat" else "cmpl-fake-%d") % rid,
                  "object": "chat.completion.chunk" if route == "chat" else "text_completion",
                  "created": created, "model": model, "choices": [], "usage": usage}
            events.append(b"data: " + json.dumps(ev).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
            for i, ev in enumerate(events):
                if i > 0 and delay > 0 and self.peer_gone(delay):
                    raise ConnectionResetError("peer went away mid-stream")
                self.write_chunk(ev)
            self.write_chunk(b"")
        except (OSError, ValueError) as e:
            log("stream aborted: %s" % e)
            with STATE.lock:
                STATE.stats["stream_aborted"] += 1
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        with STATE.lock:
            STATE.stats["accepted"] += 1
        return sock, addr

    def finish_request(self, request, client_address):
        if self.ssl_context is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        try:
            request.settimeout(10)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            log("TLS handshake failed: %s" % e)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="exit when the process that started this one goes away (no orphans "
                         "when a test run is killed)")
    args = ap.parse_args()
    VERBOSE = args.verbose
    if args.exit_with_parent:
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    srv = Server((args.host, args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key or args.tls_cert)
        srv.ssl_context = ctx
    sys.stdout.write("READY %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
