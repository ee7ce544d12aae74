"""Black-box integration tests of gpuproxyd's gateway.

Run from the repository root:
    /usr/bin/python3 -m unittest discover -s tests/integration -t . -v
The daemon is $GPUPROXYD_BIN (default build/gpuproxyd); without it every test is skipped.
Under the ASan+UBSan build: GPUPROXYD_BIN=build-asan/gpuproxyd (same tests; every daemon must
exit 0 with no sanitizer report on stderr).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

try:  # run as tests.integration.test_gateway (discover -t .) or from this directory
    from tests.integration.harness import (
        HOST, REPO_ROOT, Daemon, FakeUpstream, GatewayTestCase, Raw, RawConn, chat_body,
        assemble_stream, closed_port, daemon_bin, free_port, http_request, line_of,
        make_self_signed_cert, metric_samples, metric_sum, parse_metrics, pick_ranges, port_accepts,
        port_refuses, raw_request, render_config, require_daemon, run_in_thread, scrubbed_env)
except ImportError:  # pragma: no cover
    from harness import (  # type: ignore
        HOST, REPO_ROOT, Daemon, FakeUpstream, GatewayTestCase, Raw, RawConn, chat_body,
        assemble_stream, closed_port, daemon_bin, free_port, http_request, line_of,
        make_self_signed_cert, metric_samples, metric_sum, parse_metrics, pick_ranges, port_accepts,
        port_refuses, raw_request, render_config, require_daemon, run_in_thread, scrubbed_env)

OPENROUTER_KEY = "sk-or-v1-test-KEY-5f3b9c1d2e"
CLIENT_TOKEN = "client-secret-token-77aa"


class Ranges:
    """Port ranges for a daemon picked before its config is written (so static models can be
    given ports inside them)."""

    def __init__(self):
        self.custom_range, self.hosted_range = pick_ranges()


def chat_bytes(content, model=None):
    return json.dumps(chat_body(content, model)).encode()


def body_json(fake_request):
    return json.loads(fake_request["body"])


# ================================================================================================
# Data plane


class DataPlane(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        d = Ranges()
        cls.d = cls.start_daemon(
            custom_range=d.custom_range, hosted_range=d.hosted_range,
            models=[
                {"name": "echo", "upstream_url": cls.fake.url("/v1"), "port": d.custom_range[0]},
                {"name": "renamed", "upstream_urls": [cls.fake.url("/v1")],
                 "upstream_model": "org/real-model-7b", "port": d.custom_range[0] + 1},
                {"name": "prefixed", "upstream_url": cls.fake.url("/custom/prefix/v1"),
                 "port": d.custom_range[0] + 2},
            ])
        cls.p_echo, cls.p_renamed, cls.p_prefixed = (d.custom_range[0] + i for i in range(3))

    def setUp(self):
        self.fake.reset()

    def test_chat_on_main_port(self):
        r = self.d.chat("hello there world", model="echo")
        obj = self.assertChatEcho(r, "hello there world")
        self.assertIn("application/json", r.header("content-type", ""))
        self.assertEqual(obj["object"], "chat.completion")
        self.assertEqual(obj["usage"], {"prompt_tokens": 3, "completion_tokens": 4,
                                        "total_tokens": 7})
        reqs = self.fake.api_requests()
        self.assertEqual(len(reqs), 1, reqs)
        self.assertEqual(reqs[0]["method"], "POST")
        self.assertEqual(reqs[0]["path"], "/v1/chat/completions")
        self.assertEqual(body_json(reqs[0])["model"], "echo")

    def test_chat_on_model_port_ignores_model_field(self):
        r = self.d.chat("via the model port", model="no-such-model", port=self.p_echo)
        self.assertChatEcho(r, "via the model port")
        r = self.d.post("/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "no model field"}]},
                        port=self.p_echo)
        self.assertChatEcho(r, "no model field")
        self.assertEqual(len(self.fake.api_requests()), 2)

    def test_upstream_model_substitution_and_body_relay(self):
        extra = {"temperature": 0.25, "user": "u-1", "max_tokens": 17}
        r = self.d.chat("swap the model", model="renamed", **extra)
        self.assertChatEcho(r, "swap the model")
        r = self.d.chat("swap it on the port too", model="whatever", port=self.p_renamed)
        self.assertChatEcho(r, "swap it on the port too")
        reqs = self.fake.api_requests()
        self.assertEqual(len(reqs), 2)
        for q in reqs:
            self.assertEqual(body_json(q)["model"], "org/real-model-7b", q)
        first = body_json(reqs[0])
        for k, v in extra.items():
            self.assertEqual(first.get(k), v, "field %s not relayed: %r" % (k, first))
        self.assertEqual(first["messages"], [{"role": "user", "content": "swap the model"}])

    def test_completions(self):
        for port in (None, self.p_echo):
            r = self.d.post("/v1/completions", {"model": "echo", "prompt": "say this"}, port=port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["choices"][0]["text"], "echo: say this")
        paths = [q["path"] for q in self.fake.api_requests()]
        self.assertEqual(paths, ["/v1/completions", "/v1/completions"])

    def test_embeddings(self):
        for port in (None, self.p_echo):
            r = self.d.post("/v1/embeddings", {"model": "echo", "input": "embed me"}, port=port)
            self.assertEqual(r.status, 200, r)
            obj = r.json()
            self.assertEqual(obj["data"][0]["embedding"], [0.1, 0.2, 0.3])
            self.assertEqual(obj["usage"]["prompt_tokens"], 2)
        paths = [q["path"] for q in self.fake.api_requests()]
        self.assertEqual(paths, ["/v1/embeddings", "/v1/embeddings"])

    def test_upstream_url_path_mapping(self):
        r = self.d.post("/v1/embeddings", {"model": "prefixed", "input": "x"})
        self.assertEqual(r.status, 200, r)
        r = self.d.chat("mapped", port=self.p_prefixed)
        self.assertChatEcho(r, "mapped")
        paths = [q["path"] for q in self.fake.api_requests()]
        self.assertEqual(paths, ["/custom/prefix/v1/embeddings",
                                 "/custom/prefix/v1/chat/completions"])

    def test_models_on_main_port_lists_all(self):
        r = self.d.get("/v1/models")
        self.assertEqual(r.status, 200, r)
        obj = r.json()
        self.assertEqual(obj["object"], "list")
        ids = {m["id"] for m in obj["data"]}
        self.assertTrue({"echo", "renamed", "prefixed"} <= ids, ids)
        for m in obj["data"]:
            self.assertEqual(m["object"], "model", m)
            self.assertIn("owned_by", m)

    def test_models_on_model_port_lists_only_that_model(self):
        r = self.d.get("/v1/models", port=self.p_renamed)
        self.assertEqual(r.status, 200, r)
        obj = r.json()
        self.assertEqual(obj["object"], "list")
        self.assertEqual([m["id"] for m in obj["data"]], ["renamed"])

    def test_healthz_and_readyz(self):
        self.assertEqual(self.d.get("/healthz").status, 200)
        self.assertEqual(self.d.get("/readyz").status, 200)

    def test_client_keep_alive(self):
        import http.client
        for port in (self.d.port, self.p_echo):
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            try:
                socks = []
                for i in range(3):
                    r = self.d.request("POST", "/v1/chat/completions",
                                       chat_body("ka %d" % i, "echo"), conn=conn,
                                       headers={"Content-Type": "application/json"})
                    self.assertChatEcho(r, "ka %d" % i)
                    self.assertNotEqual((r.header("connection") or "").lower(), "close")
                    socks.append(conn.sock)
                self.assertIsNotNone(socks[0])
                self.assertTrue(all(s is socks[0] for s in socks),
                                "the daemon closed a keep-alive connection")
            finally:
                conn.close()

    def test_upstream_connections_are_reused(self):
        import http.client
        conn = http.client.HTTPConnection(HOST, self.p_echo, timeout=5)
        try:
            for i in range(10):
                r = self.d.request("POST", "/v1/chat/completions", chat_body("reuse %d" % i),
                                   conn=conn, headers={"Content-Type": "application/json"})
                self.assertChatEcho(r, "reuse %d" % i)
        finally:
            conn.close()
        st = self.fake.stats()
        self.assertEqual(st["requests"], 10)
        self.assertLessEqual(st["connections"], 3,
                             "10 sequential requests used %d upstream connections (no "
                             "keep-alive pool?)" % st["connections"])

    def test_large_body_relayed_intact(self):
        content = " ".join("w%05d" % i for i in range(6000))  # ~42 KB
        r = self.d.chat(content, model="echo")
        self.assertChatEcho(r, content)
        reqs = self.fake.api_requests()
        self.assertEqual(body_json(reqs[0])["messages"][0]["content"], content)

    def test_unicode_round_trip(self):
        content = "héllo wörld 世界 🚀 \"quoted\" back\\slash"
        r = self.d.chat(content, model="echo")
        self.assertChatEcho(r, content)

    def test_concurrent_requests_do_not_mix(self):
        results = {}
        lock = threading.Lock()

        def worker(k):
            for j in range(4):
                content = "thread %d request %d" % (k, j)
                port = self.p_echo if (k + j) % 2 else None
                r = self.d.chat(content, model="echo", port=port)
                with lock:
                    results[content] = r

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), 48)
        for content, r in results.items():
            self.assertChatEcho(r, content)


# ================================================================================================
# Streaming


class Streaming(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        probe = Ranges()
        cls.d = cls.start_daemon(
            custom_range=probe.custom_range, hosted_range=probe.hosted_range,
            models=[{"name": "stream", "upstream_url": cls.fake.url("/v1"),
                     "port": probe.custom_range[0]}])
        cls.p_stream = probe.custom_range[0]

    def setUp(self):
        self.fake.reset()

    def check_stream(self, port, path="/v1/chat/completions", kind="chat"):
        s = self.d.stream("one two three", model="stream", port=port, path=path)
        try:
            self.assertEqual(s.status, 200)
            self.assertTrue(s.headers.get("content-type", "").startswith("text/event-stream"),
                            s.headers)
            events = s.read_all()
        finally:
            s.close()
        text, usage, done, chunks = assemble_stream(events, kind)
        self.assertEqual(text, "echo: one two three")
        self.assertTrue(done, "no [DONE] event")
        self.assertEqual(events[-1][1], "[DONE]")
        self.assertIsNotNone(usage, "no usage chunk although include_usage was sent")
        self.assertEqual(usage["prompt_tokens"], 3)
        self.assertEqual(usage["completion_tokens"], 4)
        return events

    def test_chat_stream_on_main_port(self):
        events = self.check_stream(None)
        # 5 content chunks + usage + [DONE], each relayed as its own event
        self.assertEqual(len(events), 7, [e[1][:60] for e in events])

    def test_chat_stream_on_model_port(self):
        self.check_stream(self.p_stream)

    def test_completions_stream(self):
        self.check_stream(None, path="/v1/completions", kind="completions")

    def test_stream_is_relayed_chunk_by_chunk(self):
        self.fake.configure(chunk_delay_ms=500, stream_chunks=5)
        s = self.d.stream("tick tock", model="stream", include_usage=False)
        try:
            self.assertEqual(s.status, 200)
            events = s.read_all()
        finally:
            s.close()
        self.assertEqual(events[-1][1], "[DONE]")
        first = events[0][0] - s.t_headers
        total = events[-1][0] - s.t_sent
        self.assertLess(first, 0.4, "first event %.3fs after the headers: buffered?" % first)
        self.assertGreaterEqual(total, 4 * 0.5 - 0.05)
        early = [t for t, _ in events if t - s.t_headers < 1.0]
        self.assertLessEqual(len(early), 3, "events arrived together, not as sent")
        text, _, _, _ = assemble_stream(events)
        self.assertEqual(text, "echo: tick tock")

    def test_client_disconnect_closes_upstream(self):
        self.fake.configure(chunk_delay_ms=300, stream_chunks=20)
        body = json.dumps({"model": "stream", "stream": True,
                           "messages": [{"role": "user", "content": "abandon me"}]}).encode()
        c = RawConn(self.d.port)
        c.send(raw_request("POST", "/v1/chat/completions", body))
        deadline = time.monotonic() + 5
        while b"data:" not in c.buf and time.monotonic() < deadline:
            c._fill(deadline)
        self.assertIn(b"data:", c.buf)
        c.close()
        st = self.fake.wait_stats("stream_aborted", 1, timeout=2.0)
        self.assertEqual(st["stream_aborted"], 1,
                         "upstream stream not closed within 2s of the client leaving: %r" % st)

    def test_connection_reusable_after_stream(self):
        c = RawConn(self.d.port)
        try:
            body = json.dumps({"model": "stream", "stream": True,
                               "messages": [{"role": "user", "content": "first"}]}).encode()
            c.send(raw_request("POST", "/v1/chat/completions", body))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertIn(b"data: [DONE]", r.body)
            if (r.header("connection") or "").lower() == "close":
                self.assertIsNotNone(c.wait_closed(2))
                return
            self.assertIsNotNone(r.header("transfer-encoding"),
                                 "a kept-alive stream needs chunked framing")
            c.send(raw_request("POST", "/v1/chat/completions", chat_bytes("second", "stream")))
            r2 = c.read_response()
            self.assertEqual(r2.status, 200)
            self.assertEqual(r2.json()["choices"][0]["message"]["content"], "echo: second")
        finally:
            c.close()

    def test_upstream_error_before_stream_is_openai_error(self):
        self.fake.configure(status=500)
        s = self.d.stream("x", model="stream")
        try:
            self.assertEqual(s.status, 500)
            obj = json.loads(s.resp.read())
            self.assertEqual(obj["error"]["message"], "fake failure")
        finally:
            s.close()


# ================================================================================================
# Errors


class Errors(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        probe = Ranges()
        cls.p_echo = probe.custom_range[0]
        cls.d = cls.start_daemon(
            custom_range=probe.custom_range, hosted_range=probe.hosted_range,
            server={"max_body": "64KB", "max_header_bytes": "8KB"},
            openrouter_base_url=cls.fake.url("/api/v1"),  # reachable, but no key is set
            models=[
                {"name": "echo", "upstream_url": cls.fake.url("/v1"), "port": cls.p_echo},
                {"name": "dead", "upstream_url": "http://127.0.0.1:%d/v1" % closed_port(),
                 "port": probe.custom_range[0] + 1},
                {"name": "hosted", "provider": "openrouter", "upstream_model": "openai/gpt-4o",
                 "port": probe.hosted_range[0]},
            ])

    def setUp(self):
        self.fake.reset()

    def test_bad_json_400(self):
        for port in (None, self.p_echo):
            r = self.d.post("/v1/chat/completions", b'{"model": "echo", "messages": [',
                            port=port, headers={"Content-Type": "application/json"})
            self.assertOpenAIError(r, 400, etype="invalid_request_error")
        self.assertEqual(self.fake.api_requests(), [])

    def test_empty_body_400(self):
        r = self.d.post("/v1/chat/completions", b"", headers={"Content-Type": "application/json"})
        self.assertOpenAIError(r, 400, etype="invalid_request_error")

    def test_non_object_json_400(self):
        r = self.d.post("/v1/chat/completions", b"[1, 2, 3]",
                        headers={"Content-Type": "application/json"})
        self.assertOpenAIError(r, 400)

    def test_unknown_model_404(self):
        r = self.d.chat("hi", model="no-such-model")
        self.assertOpenAIError(r, 404, code="model_not_found")
        r = self.d.post("/v1/embeddings", {"model": "no-such-model", "input": "x"})
        self.assertOpenAIError(r, 404, code="model_not_found")
        self.assertEqual(self.fake.api_requests(), [])

    def test_missing_model_on_main_port(self):
        r = self.d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        self.assertIn(r.status, (400, 404), r)
        self.assertOpenAIError(r, r.status)

    def test_wrong_method_405(self):
        for method, path in (("GET", "/v1/chat/completions"), ("PUT", "/v1/completions"),
                             ("DELETE", "/v1/embeddings"), ("POST", "/v1/models")):
            for port in (None, self.p_echo):
                r = self.d.request(method, path, body=b"{}" if method in ("PUT", "POST") else None,
                                   port=port)
                self.assertOpenAIError(r, 405)

    def test_unknown_path_404(self):
        r = self.d.get("/v1/no/such/route")
        self.assertOpenAIError(r, 404)

    def _oversized(self, port, chunked=False):
        c = RawConn(port)
        try:
            body = b'{"model":"echo","messages":[{"role":"user","content":"' + b"a" * 100000 + b'"}]}'
            if chunked:
                head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                payload = b""
                for i in range(0, len(body), 8192):
                    part = body[i:i + 8192]
                    payload += b"%x\r\n%s\r\n" % (len(part), part)
                payload += b"0\r\n\r\n"
                c.try_send(head + payload)
            else:
                c.try_send(raw_request("POST", "/v1/chat/completions", body))
            r = c.read_response()
            return r
        finally:
            c.close()

    def test_body_too_large_413(self):
        for port in (self.d.port, self.p_echo):
            r = self._oversized(port)
            self.assertOpenAIError(r, 413)
        self.assertEqual(self.fake.api_requests(), [])

    def test_chunked_body_too_large_413(self):
        r = self._oversized(self.d.port, chunked=True)
        self.assertOpenAIError(r, 413)
        self.assertEqual(self.fake.api_requests(), [])

    def test_body_under_limit_passes(self):
        content = "b" * 50000
        r = self.d.chat(content, model="echo")
        self.assertChatEcho(r, content)

    def test_header_too_large_431(self):
        c = RawConn(self.d.port)
        try:
            c.try_send(raw_request("GET", "/v1/models", headers={"X-Big": "h" * 16000}))
            r = c.read_response()
            self.assertOpenAIError(r, 431)
        finally:
            c.close()
        # a normal request still works
        self.assertEqual(self.d.get("/v1/models").status, 200)

    def test_upstream_connection_refused_502(self):
        r = self.d.chat("x", model="dead")
        self.assertOpenAIError(r, 502)
        r = self.d.chat("x", port=self.p_echo + 1)
        self.assertOpenAIError(r, 502)

    def test_upstream_reset_502(self):
        self.fake.configure(reset=True)
        r = self.d.chat("x", model="echo")
        self.assertOpenAIError(r, 502)

    def test_hosted_model_without_key_503(self):
        r = self.d.chat("x", model="hosted")
        self.assertOpenAIError(r, 503, msg_contains="OPENROUTER_API_KEY")
        self.assertEqual(self.fake.api_requests(), [])

    def test_upstream_4xx_relayed(self):
        self.fake.configure(status=400)
        r = self.d.chat("x", model="echo")
        err = self.assertOpenAIError(r, 400)
        self.assertEqual(err["message"], "fake failure")

    def test_daemon_still_serves_after_errors(self):
        self.d.post("/v1/chat/completions", b"{{{{")
        self.d.chat("x", model="nope")
        self.assertChatEcho(self.d.chat("still fine", model="echo"), "still fine")


# ================================================================================================
# Framing (raw sockets)


class Framing(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        cls.d = cls.start_daemon(models=[{"name": "echo", "upstream_url": cls.fake.url("/v1")}])

    def setUp(self):
        self.fake.reset()

    def expect_400_and_close(self, data):
        c = RawConn(self.d.port)
        try:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, 400, "for %r got %r" % (data[:120], r))
            self.assertClosed(c, 2.0, "after a 400 for malformed framing %r" % data[:80])
        finally:
            c.close()
        self.assertEqual(self.fake.api_requests(), [], "a malformed request reached the upstream")

    def test_content_length_and_transfer_encoding(self):
        body = chat_bytes("smuggle", "echo")
        self.expect_400_and_close(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(body) + 10, len(body), body))

    def test_two_content_lengths(self):
        body = chat_bytes("smuggle", "echo")
        self.expect_400_and_close(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), len(body) + 1, body))

    def test_obs_fold(self):
        self.expect_400_and_close(
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n  second\r\n\r\n")

    def test_bad_chunk_size(self):
        self.expect_400_and_close(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")

    def test_bare_lf(self):
        self.expect_400_and_close(b"GET /v1/models HTTP/1.1\nHost: x\n\n")

    def test_space_before_colon(self):
        self.expect_400_and_close(b"GET /v1/models HTTP/1.1\r\nHost : x\r\n\r\n")

    def test_garbage_request_line(self):
        self.expect_400_and_close(b"THIS IS NOT HTTP\r\n\r\n")

    def test_pipelining_in_order(self):
        c = RawConn(self.d.port)
        try:
            c.send(raw_request("POST", "/v1/chat/completions", chat_bytes("first", "echo"))
                   + raw_request("POST", "/v1/chat/completions", chat_bytes("second", "echo"))
                   + raw_request("GET", "/v1/models"))
            r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
            self.assertEqual([r1.status, r2.status, r3.status], [200, 200, 200])
            self.assertEqual(r1.json()["choices"][0]["message"]["content"], "echo: first")
            self.assertEqual(r2.json()["choices"][0]["message"]["content"], "echo: second")
            self.assertEqual(r3.json()["object"], "list")
        finally:
            c.close()

    def test_expect_100_continue(self):
        body = chat_bytes("after continue", "echo")
        c = RawConn(self.d.port)
        try:
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                   b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
            interim = c.read_response(timeout=3)
            self.assertEqual(interim.status, 100)
            self.assertTrue(interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n"),
                            interim.raw_head)
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["choices"][0]["message"]["content"], "echo: after continue")
        finally:
            c.close()

    def test_chunked_request_body(self):
        body = chat_bytes("chunked upload", "echo")
        parts = [body[:7], body[7:30], body[30:]]
        data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in parts:
            data += b"%x\r\n%s\r\n" % (len(p), p)
        data += b"0\r\n\r\n"
        c = RawConn(self.d.port)
        try:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["choices"][0]["message"]["content"], "echo: chunked upload")
        finally:
            c.close()
        reqs = self.fake.api_requests()
        self.assertEqual(body_json(reqs[0])["messages"][0]["content"], "chunked upload")

    def test_request_split_across_writes(self):
        data = raw_request("POST", "/v1/chat/completions", chat_bytes("slowly", "echo"))
        c = RawConn(self.d.port)
        try:
            for i in range(0, len(data), 17):
                c.send(data[i:i + 17])
                time.sleep(0.005)
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["choices"][0]["message"]["content"], "echo: slowly")
        finally:
            c.close()

    def test_connection_close_honoured(self):
        c = RawConn(self.d.port)
        try:
            c.send(raw_request("GET", "/healthz", headers={"Connection": "close"}))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertClosed(c, 2.0)
        finally:
            c.close()

    def test_http_1_0_closes(self):
        c = RawConn(self.d.port)
        try:
            c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertTrue(r.raw_head.startswith(b"HTTP/1."))
            self.assertClosed(c, 2.0)
        finally:
            c.close()

    def test_keep_alive_many_requests_one_socket(self):
        c = RawConn(self.d.port)
        try:
            for i in range(20):
                c.send(raw_request("GET", "/healthz"))
                self.assertEqual(c.read_response().status, 200)
        finally:
            c.close()


# ================================================================================================
# Timeouts


class Timeouts(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        cls.d = cls.start_daemon(
            server={"header_timeout": "1s", "idle_timeout": "2s", "upstream_timeout": "2s"},
            models=[{"name": "slow", "upstream_url": cls.fake.url("/v1")}])

    def setUp(self):
        self.fake.reset()

    def test_partial_head_disconnected(self):
        c = RawConn(self.d.port)
        try:
            c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            t = self.assertClosed(c, 3.5, "after a partial head (header_timeout = 1s)")
            self.assertGreater(t, 0.5, "closed before header_timeout")
            if c.buf:
                self.assertTrue(c.buf.startswith(b"HTTP/1.1 408"), c.buf[:100])
        finally:
            c.close()

    def test_slow_drip_head_disconnected(self):
        c = RawConn(self.d.port)
        start = time.monotonic()
        try:
            c.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            closed = False
            i = 0
            while time.monotonic() - start < 5.0:
                if not c.try_send(b"X-Drip-%d: y\r\n" % i):
                    closed = True
                    break
                i += 1
                if c.wait_closed(0.2) is not None:
                    closed = True
                    break
            elapsed = time.monotonic() - start
            self.assertTrue(closed, "a drip-fed head was never cut off")
            self.assertLess(elapsed, 3.5, "header_timeout must bound the whole head")
        finally:
            c.close()

    def test_upstream_hang_504(self):
        self.fake.configure(hang=True)
        t0 = time.monotonic()
        r = self.d.chat("x", model="slow", timeout=10)
        elapsed = time.monotonic() - t0
        self.assertOpenAIError(r, 504)
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 5.0)

    def test_upstream_slow_first_byte_504(self):
        self.fake.configure(delay_ms=3500)
        r = self.d.chat("x", model="slow", timeout=10)
        self.assertOpenAIError(r, 504)

    def test_upstream_slow_but_in_time(self):
        self.fake.configure(delay_ms=800)
        self.assertChatEcho(self.d.chat("patience", model="slow"), "patience")

    def test_long_stream_not_cut_by_upstream_timeout(self):
        # 5 events 700 ms apart = 2.8 s > upstream_timeout (2 s), which bounds the first byte only
        self.fake.configure(chunk_delay_ms=700, stream_chunks=5)
        s = self.d.stream("long stream", model="slow", include_usage=False)
        try:
            self.assertEqual(s.status, 200)
            events = s.read_all()
        finally:
            s.close()
        text, _, done, _ = assemble_stream(events)
        self.assertTrue(done)
        self.assertEqual(text, "echo: long stream")

    def test_idle_keep_alive_closed(self):
        c = RawConn(self.d.port)
        try:
            c.send(raw_request("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)
            t = self.assertClosed(c, 5.0, "idle keep-alive connection (idle_timeout = 2s)")
            self.assertGreater(t, 1.0)
        finally:
            c.close()


# ================================================================================================
# Admin API


class Admin(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        cls.slow = cls.start_fake()
        cls.slow.configure(delay_ms=1500)
        probe = Ranges()
        cls.crange, cls.hrange = probe.custom_range, probe.hosted_range
        cls.p_static, cls.p_slow = cls.crange[0], cls.crange[0] + 1
        cls.d = cls.start_daemon(
            custom_range=cls.crange, hosted_range=cls.hrange,
            env={"OPENROUTER_API_KEY": OPENROUTER_KEY,
                 "OPENROUTER_BASE_URL": cls.fake.url("/api/v1")},
            models=[
                {"name": "static-one", "upstream_url": cls.fake.url("/v1"), "port": cls.p_static},
                {"name": "slow", "upstream_url": cls.slow.url("/v1"), "port": cls.p_slow},
            ])
        cls.counter = 0

    def setUp(self):
        self.fake.reset()

    def unique(self, stem):
        type(self).counter += 1
        return "%s-%d" % (stem, self.counter)

    def create(self, spec):
        return self.d.post("/api/v1/models", spec)

    def delete(self, name):
        return self.d.request("DELETE", "/api/v1/models/" + name)

    def listing(self):
        r = self.d.get("/api/v1/models")
        self.assertEqual(r.status, 200, r)
        return {m["name"]: m for m in r.json()["models"]}

    def test_create_custom_allocates_port(self):
        name = self.unique("adm-auto")
        r = self.create({"name": name, "upstream_url": self.fake.url("/v1")})
        self.assertEqual(r.status, 201, r)
        obj = r.json()
        self.assertEqual(obj["name"], name)
        port = obj["port"]
        self.assertTrue(self.crange[0] <= port <= self.crange[1],
                        "port %d not in the custom range %r" % (port, self.crange))
        self.assertNotIn(port, (self.p_static, self.p_slow))
        self.assertEqual(obj["endpoint"], "http://127.0.0.1:%d/v1" % port)
        # traffic right after the answer, on its port and on the main port
        self.assertChatEcho(self.d.chat("fresh port", port=port), "fresh port")
        self.assertChatEcho(self.d.chat("fresh name", model=name), "fresh name")
        ids = [m["id"] for m in self.d.get("/v1/models", port=port).json()["data"]]
        self.assertEqual(ids, [name])
        ids = {m["id"] for m in self.d.get("/v1/models").json()["data"]}
        self.assertIn(name, ids)
        self.assertIn(name, self.listing())

    def test_create_with_explicit_port(self):
        name = self.unique("adm-port")
        port = self.crange[1] - 1
        r = self.create({"name": name, "upstream_url": self.fake.url("/v1"), "port": port,
                         "prompt_usd_per_mtok": 0.5, "completion_usd_per_mtok": 1.0})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["port"], port)
        self.assertChatEcho(self.d.chat("explicit", port=port), "explicit")
        self.assertEqual(self.listing()[name]["port"], port)

    def test_create_hosted(self):
        name = self.unique("adm-hosted")
        r = self.create({"name": name, "provider": "openrouter",
                         "upstream_model": "openai/gpt-4o"})
        self.assertEqual(r.status, 201, r)
        port = r.json()["port"]
        self.assertTrue(self.hrange[0] <= port <= self.hrange[1],
                        "port %d not in the hosted range %r" % (port, self.hrange))
        self.assertChatEcho(self.d.chat("to openrouter", port=port,
                                        headers={"Authorization": "Bearer " + CLIENT_TOKEN}),
                            "to openrouter")
        reqs = self.fake.requests("/chat/completions")
        self.assertEqual(reqs[-1]["path"], "/api/v1/chat/completions")
        self.assertEqual(body_json(reqs[-1])["model"], "openai/gpt-4o")
        self.assertEqual(reqs[-1]["headers"].get("authorization"), "Bearer " + OPENROUTER_KEY)
        entry = self.listing()[name]
        self.assertEqual(entry["provider"], "openrouter")
        self.assertEqual(entry["upstream_model"], "openai/gpt-4o")

    def test_create_with_upstream_urls_fails_over(self):
        name = self.unique("adm-urls")
        urls = ["http://127.0.0.1:%d/v1" % closed_port(), self.fake.url("/v1")]
        r = self.create({"name": name, "upstream_urls": urls})
        self.assertEqual(r.status, 201, r)
        self.assertChatEcho(self.d.chat("failover", port=r.json()["port"]), "failover")
        self.assertEqual(self.listing()[name]["upstream_urls"], urls)

    def test_duplicate_name_409(self):
        name = self.unique("adm-dup")
        self.assertEqual(self.create({"name": name, "upstream_url": self.fake.url()}).status, 201)
        r = self.create({"name": name, "upstream_url": self.fake.url()})
        self.assertOpenAIError(r, 409)
        r = self.create({"name": "static-one", "upstream_url": self.fake.url()})
        self.assertOpenAIError(r, 409)

    def test_port_already_taken(self):
        port = self.crange[1] - 3
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((HOST, port))
        blocker.listen(1)
        try:
            r = self.create({"name": self.unique("adm-taken"), "upstream_url": self.fake.url(),
                             "port": port})
            self.assertIn(r.status, (400, 409), r)
            err = self.assertOpenAIError(r, r.status)
            self.assertIn(str(port), err["message"])
        finally:
            blocker.close()
        # the port of another model is taken too
        r = self.create({"name": self.unique("adm-taken"), "upstream_url": self.fake.url(),
                         "port": self.p_static})
        self.assertIn(r.status, (400, 409), r)
        self.assertIn(str(self.p_static), self.assertOpenAIError(r, r.status)["message"])

    def test_port_out_of_range(self):
        outside = free_port()  # ephemeral, never inside the test ranges
        r = self.create({"name": self.unique("adm-out"), "upstream_url": self.fake.url(),
                         "port": outside})
        self.assertIn(r.status, (400, 409), r)
        self.assertIn(str(outside), self.assertOpenAIError(r, r.status)["message"])
        # a hosted model on a custom-tier port
        inside_custom = self.crange[1] - 5
        r = self.create({"name": self.unique("adm-out"), "provider": "openrouter",
                         "upstream_model": "openai/gpt-4o", "port": inside_custom})
        self.assertIn(r.status, (400, 409), r)
        self.assertIn(str(inside_custom), self.assertOpenAIError(r, r.status)["message"])
        self.assertTrue(port_refuses(inside_custom, 0.2))

    def test_missing_fields_400(self):
        r = self.create({"upstream_url": self.fake.url()})
        self.assertIn("name", self.assertOpenAIError(r, 400)["message"])
        r = self.create({"name": self.unique("adm-noup")})
        self.assertIn("upstream", self.assertOpenAIError(r, 400)["message"])
        r = self.d.post("/api/v1/models", b"{not json",
                        headers={"Content-Type": "application/json"})
        self.assertOpenAIError(r, 400)

    def test_list_models(self):
        models = self.listing()
        self.assertIn("static-one", models)
        m = models["static-one"]
        self.assertEqual(m["port"], self.p_static)
        self.assertIn("provider", m)
        self.assertEqual(m["upstream_urls"], [self.fake.url("/v1")])

    def test_delete(self):
        name = self.unique("adm-del")
        r = self.create({"name": name, "upstream_url": self.fake.url()})
        self.assertEqual(r.status, 201, r)
        port = r.json()["port"]
        self.assertChatEcho(self.d.chat("before delete", port=port), "before delete")
        r = self.delete(name)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(port_refuses(port, 1.0), "port %d still accepts after DELETE" % port)
        self.assertNotIn(name, self.listing())
        self.assertOpenAIError(self.d.chat("gone", model=name), 404, code="model_not_found")
        self.assertOpenAIError(self.delete(name), 404)

    def test_delete_unknown_404(self):
        self.assertOpenAIError(self.delete("never-existed"), 404)

    def test_port_reusable_after_delete(self):
        port = self.crange[1] - 7
        name = self.unique("adm-reuse")
        self.assertEqual(self.create({"name": name, "upstream_url": self.fake.url(),
                                      "port": port}).status, 201)
        self.assertEqual(self.delete(name).status, 200)
        r = self.create({"name": self.unique("adm-reuse"), "upstream_url": self.fake.url(),
                         "port": port})
        self.assertEqual(r.status, 201, r)
        self.assertChatEcho(self.d.chat("reused", port=port), "reused")

    def test_delete_does_not_break_inflight_elsewhere(self):
        on_port = run_in_thread(self.d.chat, "slow on port", port=self.p_slow)
        on_main = run_in_thread(self.d.chat, "slow on main", model="slow")
        time.sleep(0.3)
        for _ in range(3):
            name = self.unique("adm-churn")
            r = self.create({"name": name, "upstream_url": self.fake.url()})
            self.assertEqual(r.status, 201, r)
            self.assertEqual(self.delete(name).status, 200)
        self.assertChatEcho(on_port(), "slow on port")
        self.assertChatEcho(on_main(), "slow on main")

    def test_wrong_method(self):
        r = self.d.request("PUT", "/api/v1/models", body=b"{}")
        self.assertOpenAIError(r, 405)


# ================================================================================================
# Retries and failover


class Retries(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        fk = cls.start_fakes(15)
        cls.b_refused, cls.a_500, cls.b_500, cls.a_429, cls.b_429, cls.a_reset, cls.b_reset, \
            cls.a_last, cls.b_last, cls.a_health, cls.b_health, cls.a_stream, cls.b_stream, \
            cls.a_single, cls.b_single = fk
        for f in (cls.a_500, cls.a_last, cls.a_health, cls.a_stream, cls.a_single):
            f.configure(status=500)
        cls.a_429.configure(status=429)
        cls.a_reset.configure(reset=True)
        cls.b_last.configure(status=503)
        dead0, dead1, dead2 = closed_port(), closed_port(), closed_port()
        u = lambda f: f.url("/v1")  # noqa: E731
        models = [
            ("r-refused", ["http://127.0.0.1:%d/v1" % dead0, u(cls.b_refused)]),
            ("r-500", [u(cls.a_500), u(cls.b_500)]),
            ("r-429", [u(cls.a_429), u(cls.b_429)]),
            ("r-reset", [u(cls.a_reset), u(cls.b_reset)]),
            ("r-alldead", ["http://127.0.0.1:%d/v1" % dead1, "http://127.0.0.1:%d/v1" % dead2]),
            ("r-last5xx", [u(cls.a_last), u(cls.b_last)]),
            ("r-health", [u(cls.a_health), u(cls.b_health)]),
            ("r-stream", [u(cls.a_stream), u(cls.b_stream)]),
            ("r-single", [u(cls.a_single)]),
        ]
        probe = Ranges()
        cls.ports = {}
        specs = []
        for i, (name, urls) in enumerate(models):
            cls.ports[name] = probe.custom_range[0] + i
            specs.append({"name": name, "upstream_urls": urls, "port": cls.ports[name]})
        cls.d = cls.start_daemon(custom_range=probe.custom_range,
                                 hosted_range=probe.hosted_range, models=specs)

    def test_connect_refused_then_next(self):
        self.assertChatEcho(self.d.chat("refused first", model="r-refused"), "refused first")
        self.assertEqual(len(self.b_refused.api_requests()), 1)

    def test_500_then_next(self):
        self.assertChatEcho(self.d.chat("after 500", port=self.ports["r-500"]), "after 500")
        a, b = self.a_500.api_requests(), self.b_500.api_requests()
        self.assertEqual((len(a), len(b)), (1, 1))
        self.assertEqual(body_json(a[0]), body_json(b[0]), "the retried body differs")

    def test_429_then_next(self):
        self.assertChatEcho(self.d.chat("after 429", model="r-429"), "after 429")
        self.assertEqual(len(self.a_429.api_requests()), 1)
        self.assertEqual(len(self.b_429.api_requests()), 1)

    def test_reset_then_next(self):
        self.assertChatEcho(self.d.chat("after reset", model="r-reset"), "after reset")
        self.assertEqual(len(self.b_reset.api_requests()), 1)

    def test_all_refused_502(self):
        self.assertOpenAIError(self.d.chat("x", model="r-alldead"), 502)
        self.assertOpenAIError(self.d.chat("x", port=self.ports["r-alldead"]), 502)

    def test_last_answer_relayed_when_all_fail(self):
        r = self.d.chat("x", model="r-last5xx")
        err = self.assertOpenAIError(r, 503)
        self.assertEqual(err["message"], "fake failure")
        self.assertEqual(len(self.a_last.api_requests()), 1)
        self.assertEqual(len(self.b_last.api_requests()), 1)

    def test_single_upstream_500_relayed(self):
        err = self.assertOpenAIError(self.d.chat("x", model="r-single"), 500)
        self.assertEqual(err["message"], "fake failure")

    def test_passive_health_skips_failing_upstream(self):
        import http.client
        conn = http.client.HTTPConnection(HOST, self.ports["r-health"], timeout=10)
        try:
            for i in range(8):
                r = self.d.request("POST", "/v1/chat/completions", chat_body("health %d" % i),
                                   conn=conn, headers={"Content-Type": "application/json"})
                self.assertChatEcho(r, "health %d" % i)
                if i == 4:
                    seen = len(self.a_health.api_requests())
        finally:
            conn.close()
        a = len(self.a_health.api_requests())
        self.assertEqual(a, seen, "the failing upstream kept receiving requests")
        self.assertEqual(a, 3, "expected exactly 3 failures before the upstream is skipped")
        self.assertEqual(len(self.b_health.api_requests()), 8)

    def test_stream_retried_before_first_byte(self):
        s = self.d.stream("stream retry", model="r-stream")
        try:
            self.assertEqual(s.status, 200)
            text, usage, done, _ = assemble_stream(s.read_all())
        finally:
            s.close()
        self.assertEqual(text, "echo: stream retry")
        self.assertTrue(done)
        self.assertEqual(len(self.b_stream.api_requests()), 1)


# ================================================================================================
# OpenRouter tier


class OpenRouter(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        probe = Ranges()
        cls.hrange = probe.hosted_range
        cls.p_opus = cls.hrange[0] + 3
        cls.d = cls.start_daemon(
            custom_range=probe.custom_range, hosted_range=cls.hrange,
            # the file names an unreachable base URL: OPENROUTER_BASE_URL must win
            openrouter_base_url="http://127.0.0.1:%d/wrong/api/v1" % closed_port(),
            env={"OPENROUTER_API_KEY": OPENROUTER_KEY,
                 "OPENROUTER_BASE_URL": cls.fake.url("/api/v1")},
            models=[
                {"name": "opus", "provider": "openrouter",
                 "upstream_model": "anthropic/claude-3-opus", "port": cls.p_opus},
                {"name": "gpt4o", "provider": "openrouter", "upstream_model": "openai/gpt-4o"},
            ])

    def setUp(self):
        self.fake.reset()

    def check_upstream_request(self, req, model):
        self.assertEqual(req["path"], "/api/v1/chat/completions")
        self.assertEqual(body_json(req)["model"], model)
        self.assertEqual(req["headers"].get("authorization"), "Bearer " + OPENROUTER_KEY)
        for k, v in req["headers"].items():
            self.assertNotIn(CLIENT_TOKEN, v, "the client's credential leaked upstream in %s" % k)

    def test_chat_on_main_port(self):
        r = self.d.chat("hosted hello", model="opus",
                        headers={"Authorization": "Bearer " + CLIENT_TOKEN})
        self.assertChatEcho(r, "hosted hello")
        reqs = self.fake.requests("/chat/completions")
        self.assertEqual(len(reqs), 1)
        self.check_upstream_request(reqs[0], "anthropic/claude-3-opus")

    def test_chat_on_model_port(self):
        r = self.d.chat("hosted port", model="ignored", port=self.p_opus,
                        headers={"Authorization": "Bearer " + CLIENT_TOKEN})
        self.assertChatEcho(r, "hosted port")
        self.check_upstream_request(self.fake.requests("/chat/completions")[0],
                                    "anthropic/claude-3-opus")

    def test_stream(self):
        s = self.d.stream("hosted stream", model="opus")
        try:
            self.assertEqual(s.status, 200)
            text, usage, done, _ = assemble_stream(s.read_all())
        finally:
            s.close()
        self.assertEqual(text, "echo: hosted stream")
        self.assertTrue(done)
        self.assertEqual(usage["completion_tokens"], 3)

    def test_allocated_port_in_hosted_range(self):
        r = self.d.get("/api/v1/models")
        self.assertEqual(r.status, 200, r)
        models = {m["name"]: m for m in r.json()["models"]}
        port = models["gpt4o"]["port"]
        self.assertTrue(self.hrange[0] <= port <= self.hrange[1], (port, self.hrange))
        self.assertEqual(models["gpt4o"]["provider"], "openrouter")
        self.assertEqual(models["gpt4o"]["upstream_model"], "openai/gpt-4o")
        self.assertEqual(models["opus"]["port"], self.p_opus)
        self.assertChatEcho(self.d.chat("allocated", port=port), "allocated")
        self.check_upstream_request(self.fake.requests("/chat/completions")[0], "openai/gpt-4o")

    def test_embeddings_and_completions(self):
        r = self.d.post("/v1/embeddings", {"model": "gpt4o", "input": "vector"})
        self.assertEqual(r.status, 200, r)
        r = self.d.post("/v1/completions", {"model": "gpt4o", "prompt": "complete"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["choices"][0]["text"], "echo: complete")
        paths = [q["path"] for q in self.fake.api_requests()]
        self.assertEqual(paths, ["/api/v1/embeddings", "/api/v1/completions"])

    def test_models_listed_on_main_port(self):
        ids = {m["id"] for m in self.d.get("/v1/models").json()["data"]}
        self.assertTrue({"opus", "gpt4o"} <= ids, ids)

    def test_key_never_logged(self):
        self.d.chat("log me", model="opus", headers={"Authorization": "Bearer " + CLIENT_TOKEN})
        time.sleep(0.2)
        err = self.d.stderr_text()
        self.assertNotIn(OPENROUTER_KEY, err)
        self.assertNotIn(CLIENT_TOKEN, err)


# ================================================================================================
# HTTPS upstreams


class Https(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="gpuproxyd-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cert, key = make_self_signed_cert(cls.tmp)
        other_cert, other_key = make_self_signed_cert(cls.tmp)
        cls.fake = cls.start_fake(tls_cert=cert, tls_key=key)
        cls.untrusted = cls.start_fake(tls_cert=other_cert, tls_key=other_key)
        probe = Ranges()
        cls.p_opus = probe.hosted_range[0]
        cls.p_custom = probe.custom_range[0]
        cls.d = cls.start_daemon(
            custom_range=probe.custom_range, hosted_range=probe.hosted_range,
            env={"OPENROUTER_API_KEY": OPENROUTER_KEY,
                 "OPENROUTER_BASE_URL": cls.fake.url("/api/v1"),
                 "GPUPROXYD_CA_FILE": cert},
            models=[
                {"name": "opus", "provider": "openrouter",
                 "upstream_model": "anthropic/claude-3-opus", "port": cls.p_opus},
                {"name": "custom-tls", "upstream_url": cls.fake.url("/v1"),
                 "port": cls.p_custom},
                {"name": "untrusted", "upstream_url": cls.untrusted.url("/v1"),
                 "port": cls.p_custom + 1},
            ])

    def setUp(self):
        self.fake.reset()

    def test_hosted_chat_over_tls(self):
        self.assertChatEcho(self.d.chat("secure hello", model="opus"), "secure hello")
        self.assertChatEcho(self.d.chat("secure port", port=self.p_opus), "secure port")
        reqs = self.fake.requests("/chat/completions")
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[0]["path"], "/api/v1/chat/completions")
        self.assertEqual(reqs[0]["headers"].get("authorization"), "Bearer " + OPENROUTER_KEY)

    def test_hosted_stream_over_tls(self):
        s = self.d.stream("secure stream", model="opus")
        try:
            self.assertEqual(s.status, 200)
            text, usage, done, _ = assemble_stream(s.read_all())
        finally:
            s.close()
        self.assertEqual(text, "echo: secure stream")
        self.assertTrue(done)

    def test_custom_https_upstream(self):
        self.assertChatEcho(self.d.chat("custom tls", model="custom-tls"), "custom tls")
        r = self.d.post("/v1/embeddings", {"input": "x"}, port=self.p_custom)
        self.assertEqual(r.status, 200, r)

    def test_untrusted_certificate_refused(self):
        r = self.d.chat("should not pass", model="untrusted")
        self.assertOpenAIError(r, 502)
        self.assertEqual(self.untrusted.api_requests(), [],
                         "the daemon sent a request over an unverified TLS connection")


# ================================================================================================
# Metrics, usage, cost and the access log


class Metrics(GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.start_fake()
        probe = Ranges()
        cls.p_priced = probe.custom_range[0]
        cls.d = cls.start_daemon(
            custom_range=probe.custom_range, hosted_range=probe.hosted_range,
            env={"OPENROUTER_API_KEY": OPENROUTER_KEY,
                 "OPENROUTER_BASE_URL": cls.fake.url("/api/v1")},
            models=[
                {"name": "priced", "upstream_url": cls.fake.url("/v1"), "port": cls.p_priced,
                 "prompt_usd_per_mtok": 1.5, "completion_usd_per_mtok": 3.0},
                {"name": "dead", "upstream_url": "http://127.0.0.1:%d/v1" % closed_port(),
                 "port": cls.p_priced + 1},
                {"name": "opus", "provider": "openrouter",
                 "upstream_model": "anthropic/claude-3-opus", "port": probe.hosted_range[0]},
            ])

    def setUp(self):
        self.fake.reset()

    def wait_metric(self, name, expected, tol=1e-9, timeout=2.0, **labels):
        """Poll /metrics until sum(name{labels}) == expected (within tol)."""
        end = time.monotonic() + timeout
        while True:
            v = metric_sum(self.d.metrics(), name, **labels)
            if abs(v - expected) <= tol or time.monotonic() >= end:
                self.assertAlmostEqual(v, expected, delta=tol,
                                       msg="%s%r = %r, expected %r" % (name, labels, v, expected))
                return v
            time.sleep(0.05)

    def test_exposition_format(self):
        r = self.d.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("content-type", "").startswith("text/plain"), r.headers)
        samples = parse_metrics(r.text)
        names = {n for n, _, _ in samples}
        for n in ("gpuproxyd_open_connections", "gpuproxyd_ports_allocated"):
            self.assertIn(n, names)
        self.assertIn("# TYPE gpuproxyd_requests_total counter", r.text)

    def test_promtool_check(self):
        promtool = shutil.which("promtool") or ("/usr/bin/promtool"
                                                if os.path.exists("/usr/bin/promtool") else None)
        if not promtool:
            self.skipTest("promtool not installed")
        self.d.chat("fill some series", model="priced")
        self.d.chat("x", model="dead")
        text = self.d.metrics()
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool: %s%s" % (p.stdout.decode(), p.stderr.decode()))

    def test_request_counter(self):
        before = metric_sum(self.d.metrics(), "gpuproxyd_requests_total", model="priced",
                            code="200")
        self.assertChatEcho(self.d.chat("count me", model="priced"), "count me")
        self.assertChatEcho(self.d.chat("count me too", port=self.p_priced), "count me too")
        self.wait_metric("gpuproxyd_requests_total", before + 2, model="priced", code="200")

    def test_tokens_and_cost_custom(self):
        m = self.d.metrics()
        p0 = metric_sum(m, "gpuproxyd_tokens_total", model="priced", kind="prompt")
        c0 = metric_sum(m, "gpuproxyd_tokens_total", model="priced", kind="completion")
        d0 = metric_sum(m, "gpuproxyd_cost_dollars_total", model="priced")
        r = self.d.chat("alpha beta gamma delta", model="priced")
        usage = self.assertChatEcho(r, "alpha beta gamma delta")["usage"]
        self.assertEqual((usage["prompt_tokens"], usage["completion_tokens"]), (4, 5))
        self.wait_metric("gpuproxyd_tokens_total", p0 + 4, model="priced", kind="prompt")
        self.wait_metric("gpuproxyd_tokens_total", c0 + 5, model="priced", kind="completion")
        self.wait_metric("gpuproxyd_cost_dollars_total", d0 + (4 * 1.5 + 5 * 3.0) / 1e6,
                         tol=1e-10, model="priced")

    def test_stream_usage_counted(self):
        m = self.d.metrics()
        p0 = metric_sum(m, "gpuproxyd_tokens_total", model="priced", kind="prompt")
        c0 = metric_sum(m, "gpuproxyd_tokens_total", model="priced", kind="completion")
        s = self.d.stream("one two three four five six", model="priced")
        try:
            text, usage, done, _ = assemble_stream(s.read_all())
        finally:
            s.close()
        self.assertEqual(usage, {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13})
        self.wait_metric("gpuproxyd_tokens_total", p0 + 6, model="priced", kind="prompt")
        self.wait_metric("gpuproxyd_tokens_total", c0 + 7, model="priced", kind="completion")

    def test_hosted_cost_from_openrouter_pricing(self):
        # the daemon reads GET {base}/models at start; give it ~2 s
        wait = self.d.started_at + 2.5 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        m = self.d.metrics()
        d0 = metric_sum(m, "gpuproxyd_cost_dollars_total", model="opus")
        self.assertChatEcho(self.d.chat("price this reply", model="opus"), "price this reply")
        # prompt 3 tokens at 0.000015, completion 4 at 0.000075 (per token)
        self.wait_metric("gpuproxyd_cost_dollars_total", d0 + 3 * 0.000015 + 4 * 0.000075,
                         tol=1e-10, model="opus")

    def test_duration_histogram_per_tier(self):
        self.assertChatEcho(self.d.chat("custom tier", model="priced"), "custom tier")
        self.assertChatEcho(self.d.chat("hosted tier", model="opus"), "hosted tier")
        time.sleep(0.1)
        samples = parse_metrics(self.d.metrics())
        for tier in ("custom", "hosted"):
            buckets = metric_samples(samples, "gpuproxyd_request_duration_seconds_bucket",
                                     tier=tier)
            self.assertTrue(buckets, "no duration buckets for tier %s" % tier)
            inf = [v for _, l, v in buckets if l.get("le") == "+Inf"]
            self.assertTrue(inf and inf[0] >= 1, buckets)
            les = sorted(float(l["le"]) for _, l, _ in buckets)
            counts = [v for _, l, v in sorted(buckets, key=lambda s: float(s[1]["le"]))]
            self.assertEqual(counts, sorted(counts), "buckets are not cumulative")
            self.assertEqual(les[-1], float("inf"))
            self.assertTrue(metric_samples(samples, "gpuproxyd_request_duration_seconds_count",
                                           tier=tier))

    def test_upstream_errors_counted(self):
        m = self.d.metrics()
        e0 = metric_sum(m, "gpuproxyd_upstream_errors_total")
        r0 = metric_sum(m, "gpuproxyd_requests_total", model="dead", code="502")
        self.assertOpenAIError(self.d.chat("x", model="dead"), 502)
        time.sleep(0.1)
        m = self.d.metrics()
        self.assertGreaterEqual(metric_sum(m, "gpuproxyd_upstream_errors_total"), e0 + 1)
        kinds = {l.get("kind") for _, l, _ in metric_samples(m, "gpuproxyd_upstream_errors_total")}
        self.assertNotIn(None, kinds, "gpuproxyd_upstream_errors_total without a kind label")
        self.assertEqual(metric_sum(m, "gpuproxyd_requests_total", model="dead", code="502"),
                         r0 + 1)

    def test_gauges(self):
        conns = []
        try:
            for _ in range(3):
                c = RawConn(self.d.port)
                c.send(raw_request("GET", "/healthz"))
                self.assertEqual(c.read_response().status, 200)
                conns.append(c)
            m = self.d.metrics()
            self.assertGreaterEqual(metric_sum(m, "gpuproxyd_open_connections"), 3)
            self.assertGreaterEqual(metric_sum(m, "gpuproxyd_ports_allocated", tier="custom"), 2)
            self.assertGreaterEqual(metric_sum(m, "gpuproxyd_ports_allocated", tier="hosted"), 1)
        finally:
            for c in conns:
                c.close()

    def test_access_log(self):
        marker = "/v1/chat/completions"
        r = self.d.chat("log line", model="priced",
                        headers={"Authorization": "Bearer " + CLIENT_TOKEN})
        self.assertEqual(r.status, 200)
        self.d.chat("x", model="nope-not-here")

        def find():
            lines = [l for l in self.d.access_log() if l.get("path") == marker]
            ok = [l for l in lines if l.get("model") == "priced" and l.get("status") == 200]
            nf = [l for l in lines if l.get("status") == 404]
            return (ok, nf) if ok and nf else None

        ok, nf = self.eventually(find, 2.0, msg="access log lines for the requests")
        line = ok[-1]
        for k in ("method", "path", "status", "latency_ms", "model"):
            self.assertIn(k, line)
        self.assertEqual(line["method"], "POST")
        self.assertIsInstance(line["latency_ms"], (int, float))
        self.assertGreaterEqual(line["latency_ms"], 0)
        err = self.d.stderr_text()
        self.assertNotIn(CLIENT_TOKEN, err)
        self.assertNotIn(OPENROUTER_KEY, err)


# ================================================================================================
# Signals


class Signals(GatewayTestCase):
    """Each test has its own daemon (they stop it)."""

    def setUp(self):
        self.fk = self.fake()

    def start(self, models_fn, **kw):
        d = Daemon(models=models_fn, **kw)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def test_sigterm_drains_inflight_request(self):
        self.fk.configure(delay_ms=1500)
        d = self.start(lambda d: [{"name": "slow", "upstream_url": self.fk.url(),
                                   "port": d.custom_port(0)}])
        res = run_in_thread(d.chat, "finish me", model="slow")
        time.sleep(0.4)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertChatEcho(res(), "finish me")
        rc = d.wait_exit(10)
        self.assertEqual(rc, 0, d.stderr_tail())
        self.assertGreater(time.monotonic() - t0, 0.8, "exited before the request finished?")
        self.assertEqual(d.sanitizer_problems(), [])

    def test_sigterm_with_idle_keepalive_exits_promptly(self):
        d = self.start(lambda d: [{"name": "m", "upstream_url": self.fk.url(),
                                   "port": d.custom_port(0)}], server={"drain_timeout": "8s"})
        c = RawConn(d.port)
        c.send(raw_request("GET", "/healthz"))
        self.assertEqual(c.read_response().status, 200)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit(10)
        c.close()
        self.assertEqual(rc, 0, d.stderr_tail())
        self.assertLess(time.monotonic() - t0, 4.0, "an idle keep-alive connection held the drain")
        self.assertEqual(d.sanitizer_problems(), [])

    def test_sigint_stops(self):
        d = self.start(lambda d: [])
        d.stop_and_check(sig=signal.SIGINT)

    def test_sighup_adds_model_keeps_connections(self):
        def models(d, extra=False):
            ms = [{"name": "a", "upstream_url": self.fk.url(), "port": d.custom_port(0)}]
            if extra:
                ms.append({"name": "b", "upstream_url": self.fk.url(), "port": d.custom_port(1)})
            return ms
        d = self.start(models)
        pa, pb = d.custom_port(0), d.custom_port(1)
        c = RawConn(pa)
        try:
            c.send(raw_request("POST", "/v1/chat/completions", chat_bytes("before hup")))
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(port_refuses(pb, 0.1))
            d.reload(models=models(d, extra=True))
            self.assertTrue(port_accepts(pb, 2.0), "the new model's port did not open in 2 s")
            self.assertChatEcho(d.chat("new model", port=pb), "new model")
            self.assertChatEcho(d.chat("new by name", model="b"), "new by name")
            c.send(raw_request("POST", "/v1/chat/completions", chat_bytes("after hup")))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["choices"][0]["message"]["content"], "echo: after hup")
        finally:
            c.close()
        d.stop_and_check()

    def test_sighup_removes_model(self):
        def models(d, both=True):
            ms = [{"name": "keep", "upstream_url": self.fk.url(), "port": d.custom_port(0)}]
            if both:
                ms.append({"name": "drop", "upstream_url": self.fk.url(),
                           "port": d.custom_port(1)})
            return ms
        d = self.start(models)
        self.assertChatEcho(d.chat("x", port=d.custom_port(1)), "x")
        d.reload(models=models(d, both=False))
        self.assertTrue(port_refuses(d.custom_port(1), 2.0), "removed model's port still open")
        self.assertOpenAIError(d.chat("x", model="drop"), 404, code="model_not_found")
        self.assertChatEcho(d.chat("kept", port=d.custom_port(0)), "kept")
        d.stop_and_check()

    def test_sighup_with_bad_config_keeps_serving(self):
        d = self.start(lambda d: [{"name": "m", "upstream_url": self.fk.url(),
                                   "port": d.custom_port(0)}])
        good = d.config_text()
        d.reload(text=good.replace("port = %d" % d.custom_port(0), 'port = "abc"'))
        time.sleep(1.0)
        self.assertTrue(d.alive(), "a bad config on SIGHUP killed the daemon:\n" + d.stderr_tail())
        self.assertChatEcho(d.chat("still here", port=d.custom_port(0)), "still here")
        self.assertIn("port", d.stderr_text())
        d.stop_and_check()


# ================================================================================================
# Config


class Config(GatewayTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gpuproxyd-cfg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_bin(self, *args, env_extra=None, timeout=15):
        env = scrubbed_env()  # no GPUPROXYD_*, PORT_*, OPENROUTER_*: the file alone decides
        env.update(env_extra or {})
        return subprocess.run([str(daemon_bin())] + list(args), env=env, cwd=self.tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def write(self, text, name="gpuproxyd.toml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def config(self, models, server=None):
        srv = {"listen": "127.0.0.1:%d" % free_port(), "workers": 2}
        srv.update(server or {})
        return render_config(srv, {"openrouter_min": 21000, "openrouter_max": 21100,
                                   "custom_min": 23000, "custom_max": 24000},
                             "http://127.0.0.1:9/api/v1", models)

    def check(self, text, env_extra=None):
        path = self.write(text)
        p = self.run_bin("--config", path, "--check-config", env_extra=env_extra)
        return path, p.returncode, p.stderr.decode("utf-8", "replace")

    def assertRefused(self, text, key, needle):
        path, rc, err = self.check(text)
        self.assertNotEqual(rc, 0, "--check-config accepted a bad %s" % key)
        line = line_of(text, needle)
        self.assertIn(os.path.basename(path), err)
        self.assertRegex(err, r"%s:%d\b" % (re.escape(os.path.basename(path)), line),
                         "stderr should name FILE:LINE (%d): %r" % (line, err))
        self.assertIn(key, err)
        return err

    def test_check_config_valid(self):
        text = self.config([{"name": "m", "upstream_url": "http://127.0.0.1:9/v1", "port": 23001},
                            {"name": "h", "provider": "openrouter",
                             "upstream_model": "openai/gpt-4o"}])
        path, rc, err = self.check(text)
        self.assertEqual(rc, 0, err)

    def test_check_config_example(self):
        p = self.run_bin("--config", str(REPO_ROOT / "examples" / "gpuproxyd.toml"),
                         "--check-config")
        self.assertEqual(p.returncode, 0, p.stderr.decode())

    def test_bad_port_type(self):
        text = self.config([{"name": "m", "upstream_url": "http://127.0.0.1:9/v1",
                             "port": Raw('"abc"')}])
        self.assertRefused(text, "port", 'port = "abc"')

    def test_bad_port_number(self):
        text = self.config([{"name": "m", "upstream_url": "http://127.0.0.1:9/v1",
                             "port": 70000}])
        self.assertRefused(text, "port", "port = 70000")

    def test_bad_duration(self):
        text = self.config([], server={"header_timeout": "soon"})
        self.assertRefused(text, "header_timeout", 'header_timeout = "soon"')

    def test_bad_size(self):
        text = self.config([], server={"max_body": "lots"})
        self.assertRefused(text, "max_body", 'max_body = "lots"')

    def test_syntax_error(self):
        text = self.config([]) + '\n[[models]]\nname = "unterminated\n'
        path, rc, err = self.check(text)
        self.assertNotEqual(rc, 0)
        self.assertIn(os.path.basename(path), err)
        self.assertRegex(err, r"%s:%d\b" % (re.escape(os.path.basename(path)),
                                           line_of(text, '"unterminated')))

    def test_unknown_provider(self):
        text = self.config([{"name": "m", "provider": "nowhere", "upstream_model": "x/y"}])
        self.assertRefused(text, "provider", 'provider = "nowhere"')

    def test_model_without_upstream(self):
        text = self.config([{"name": "lonely", "port": 23002}])
        path, rc, err = self.check(text)
        self.assertNotEqual(rc, 0, "a model without an upstream was accepted")
        self.assertIn("upstream", err)

    def test_duplicate_model_name(self):
        text = self.config([{"name": "twice", "upstream_url": "http://127.0.0.1:9/v1"},
                            {"name": "twice", "upstream_url": "http://127.0.0.1:9/v1"}])
        path, rc, err = self.check(text)
        self.assertNotEqual(rc, 0, "duplicate model names were accepted")
        self.assertIn("twice", err)

    def test_missing_file(self):
        p = self.run_bin("--config", os.path.join(self.tmp, "nope.toml"), "--check-config")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nope.toml", p.stderr.decode())

    def test_version(self):
        p = self.run_bin("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex((p.stdout + p.stderr).decode(), r"\d+\.\d+")

    def test_bad_env_value_refused(self):
        d = Daemon()
        self.addCleanup(d.cleanup)
        d.extra_env["PORT_CUSTOM_MIN"] = "abc"
        d.start(wait=False)
        rc = d.wait_exit(5)
        if rc is None:
            d.kill()
            self.fail("the daemon started with PORT_CUSTOM_MIN=abc")
        self.assertNotEqual(rc, 0)
        self.assertIn("PORT_CUSTOM_MIN", d.stderr_text())

    def test_listen_env_overrides_file(self):
        file_port = free_port()
        d = Daemon(listen_in_file="127.0.0.1:%d" % file_port)
        self.addCleanup(d.cleanup)
        d.start()  # waits for /readyz on the GPUPROXYD_LISTEN port
        self.assertEqual(d.get("/healthz").status, 200)
        self.assertTrue(port_refuses(file_port, 0.1), "the file's listen address is open too")
        d.stop_and_check()


if __name__ == "__main__":
    unittest.main()
