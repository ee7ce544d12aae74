"""Tests of the provider fakes themselves (vastai.py, ionet.py, gcp_tpu.py), through their HTTP APIs.

Run from the repository root:  /usr/bin/python3 -m unittest tests.fakes.test_fakes
Each fake runs as a subprocess (one per test class, reset before each test), exactly as the
daemon's integration tests will start it.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fakelib  # noqa: E402
import gcp_tpu  # noqa: E402
from fakelib import http_call, spawn_fake  # noqa: E402

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BOOT = 0.3
HAVE_OPENSSL = shutil.which("openssl") is not None


def wait_until(fn, timeout=5.0, interval=0.03, msg="condition"):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s (last: %r)" % (msg, v))
        time.sleep(interval)


def port_refuses(port, within=3.0):
    end = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def read_sse(port, path, body):
    """POST a streaming request; (status, content-type, [data payloads])."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", path, body=json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read().decode()
        datas = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
        return r.status, r.getheader("Content-Type"), datas
    finally:
        c.close()


class RuntimeChecks:
    """Assertions on a runtime endpoint (the OpenAI-compatible server behind an instance)."""

    def assert_runtime_serves(self, port):
        r = http_call(port, "GET", "/health")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})
        r = http_call(port, "GET", "/v1/models")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["object"], "list")
        self.assertTrue(r.json()["data"][0]["id"])
        r = http_call(port, "POST", "/v1/chat/completions",
                      {"model": "m1", "messages": [{"role": "user", "content": "hello there"}]})
        self.assertEqual(r.status, 200)
        j = r.json()
        self.assertEqual(j["object"], "chat.completion")
        self.assertEqual(j["choices"][0]["message"]["content"], "echo: hello there")
        self.assertEqual(j["usage"]["prompt_tokens"], 2)
        self.assertEqual(j["usage"]["completion_tokens"], 3)
        self.assertEqual(j["usage"]["total_tokens"], 5)
        status, ctype, datas = read_sse(port, "/v1/chat/completions", {
            "model": "m1", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a b c"}]})
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/event-stream"))
        self.assertEqual(datas[-1], "[DONE]")
        chunks = [json.loads(d) for d in datas[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
        self.assertEqual(text, "echo: a b c")
        self.assertEqual(chunks[-1]["usage"]["total_tokens"], 7)
        # keep-alive on the runtime too
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            for _ in range(3):
                r = http_call(port, "GET", "/health", conn=c)
                self.assertEqual(r.status, 200)
        finally:
            c.close()


class FakeCase(unittest.TestCase, RuntimeChecks):
    SCRIPT = None
    ARGS = ()
    ENV = None
    fake = None

    @classmethod
    def setUpClass(cls):
        env = None
        if cls.ENV is not None:
            env = dict(os.environ)
            env.update(cls.ENV)
        else:
            env = {k: v for k, v in os.environ.items() if k != fakelib.RUNTIME_CMD_ENV}
        cls.fake = spawn_fake(HERE / cls.SCRIPT, "--boot-seconds", BOOT, *cls.ARGS, env=env)
        cls.port = cls.fake.port

    @classmethod
    def tearDownClass(cls):
        if cls.fake is not None:
            cls.fake.stop()

    def setUp(self):
        r = http_call(self.port, "POST", "/_fake/reset")
        self.assertEqual(r.status, 200)

    def tearDown(self):
        http_call(self.port, "POST", "/_fake/reset")

    # helpers
    def config(self, **kw):
        r = http_call(self.port, "POST", "/_fake/config", kw)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def state(self):
        return http_call(self.port, "GET", "/_fake/state").json()

    def calls(self):
        return http_call(self.port, "GET", "/_fake/calls").json()

    def inst_state(self, iid):
        for i in self.state()["instances"]:
            if str(i["id"]) == str(iid):
                return i
        return None


# ================================================================================================
# Vast.ai


class TestVast(FakeCase):
    SCRIPT = "vastai.py"
    ARGS = ("--api-key", "vkey")
    AUTH = {"Authorization": "Bearer vkey"}
    ENV_P = {"-p 8000:8000": "1", "MODEL": "org/model-7b"}

    def api(self, method, path, body=None, headers=None, **kw):
        h = dict(self.AUTH)
        h.update(headers or {})
        return http_call(self.port, method, "/api/v0" + path, body, h, **kw)

    def search(self, q):
        r = self.api("POST", "/bundles/", q)
        self.assertEqual(r.status, 200, r)
        return r.json()["offers"]

    def create(self, ask_id=None, label="gpd-res-1", env=None, price=None):
        if ask_id is None:
            ask_id = self.search({"order": [["dph_total", "asc"]], "limit": 1})[0]["id"]
        body = {"client_id": "me", "image": "vllm/vllm-openai:latest", "disk": 40,
                "label": label, "env": self.ENV_P if env is None else env,
                "onstart": "echo hi", "runtype": "ssh_direc ssh_proxy", "price": price,
                "cancel_unavail": True, "target_state": "running"}
        return self.api("PUT", "/asks/%d/" % ask_id, body)

    def show(self, iid):
        return self.api("GET", "/instances/%d/" % iid)

    def wait_status(self, iid, status, timeout=5.0):
        return wait_until(lambda: (lambda j: j if j["actual_status"] == status else None)(
            self.show(iid).json()["instances"]), timeout, msg="actual_status %s" % status)

    # ---- auth ----------------------------------------------------------------------------------

    def test_auth(self):
        r = http_call(self.port, "GET", "/api/v0/instances/?owner=me")
        self.assertEqual(r.status, 401)
        self.assertIn("error", r.json())
        self.assertFalse(r.json()["success"])
        r = http_call(self.port, "GET", "/api/v0/instances/?owner=me",
                      headers={"Authorization": "Bearer wrong"})
        self.assertEqual(r.status, 401)
        r = http_call(self.port, "GET", "/api/v0/instances/?owner=me&api_key=vkey")
        self.assertEqual(r.status, 200)
        r = self.api("GET", "/instances/?owner=me")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"instances_found": 0, "instances": []})
        # the /api/v0 prefix is optional
        r = http_call(self.port, "GET", "/instances/?owner=me", headers=self.AUTH)
        self.assertEqual(r.status, 200)

    # ---- search --------------------------------------------------------------------------------

    def test_search_defaults_and_fields(self):
        offers = self.search({})
        self.assertGreaterEqual(len(offers), 6)
        names = {o["gpu_name"] for o in offers}
        self.assertTrue({"H100 SXM", "RTX 4090", "A100 PCIE"} <= names)
        self.assertEqual({o["num_gpus"] for o in offers} & {1, 2, 4, 8}, {1, 2, 4, 8})
        for field in ("id", "machine_id", "gpu_name", "num_gpus", "gpu_ram", "cpu_cores",
                      "cpu_ram", "disk_space", "dph_base", "dph_total", "min_bid",
                      "storage_cost", "reliability", "reliability2", "geolocation",
                      "cuda_max_good", "direct_port_count", "inet_up", "inet_down",
                      "verification", "public_ipaddr"):
            self.assertIn(field, offers[0])
        self.assertRegex(offers[0]["geolocation"], r"^.+, [A-Z]{2}$")

    def test_search_operators(self):
        def ids(q):
            return sorted(o["id"] for o in self.search(q))

        allo = self.search({})
        by = lambda pred: sorted(o["id"] for o in allo if pred(o))  # noqa: E731
        self.assertEqual(ids({"gpu_name": {"in": ["H100 SXM", "H100 PCIE"]}}),
                         by(lambda o: o["gpu_name"].startswith("H100")))
        self.assertEqual(ids({"gpu_name": {"eq": "RTX_4090"}}),
                         by(lambda o: o["gpu_name"] == "RTX 4090"))
        self.assertEqual(ids({"gpu_name": {"notin": ["RTX 4090"]}}),
                         by(lambda o: o["gpu_name"] != "RTX 4090"))
        self.assertEqual(ids({"gpu_name": {"neq": "RTX 4090"}}),
                         by(lambda o: o["gpu_name"] != "RTX 4090"))
        self.assertEqual(ids({"num_gpus": {"gte": 2}}), by(lambda o: o["num_gpus"] >= 2))
        self.assertEqual(ids({"num_gpus": {"gt": 2}}), by(lambda o: o["num_gpus"] > 2))
        self.assertEqual(ids({"num_gpus": {"lt": 2}}), by(lambda o: o["num_gpus"] < 2))
        self.assertEqual(ids({"num_gpus": {"eq": 8}}), by(lambda o: o["num_gpus"] == 8))
        self.assertEqual(ids({"gpu_ram": {"gte": 75000}}), by(lambda o: o["gpu_ram"] >= 75000))
        self.assertEqual(ids({"reliability2": {"gte": 0.98}}),
                         by(lambda o: o["reliability2"] >= 0.98))
        self.assertEqual(ids({"dph_total": {"lte": 1.0}}), by(lambda o: o["dph_total"] <= 1.0))
        self.assertEqual(ids({"geolocation": {"in": ["US"]}}),
                         by(lambda o: o["geolocation"].endswith(", US")))
        self.assertEqual(ids({"geolocation": {"eq": "DE"}}),
                         by(lambda o: o["geolocation"].endswith(", DE")))
        self.assertEqual(ids({"geolocation": {"notin": ["US", "CA"]}}),
                         by(lambda o: o["geolocation"][-2:] not in ("US", "CA")))
        self.assertEqual(ids({"verified": {"eq": True}}),
                         by(lambda o: o["verification"] == "verified"))
        self.assertEqual(ids({"verified": {"eq": False}}),
                         by(lambda o: o["verification"] != "verified"))
        self.assertEqual(ids({"rentable": {"eq": True}, "rented": {"eq": False}}),
                         by(lambda o: True))
        # the doc's full example
        q = {"rentable": {"eq": True}, "rented": {"eq": False}, "verified": {"eq": True},
             "gpu_name": {"in": ["H100 SXM", "H100 PCIE"]}, "num_gpus": {"gte": 1},
             "gpu_ram": {"gte": 75000}, "reliability2": {"gte": 0.98},
             "geolocation": {"in": ["US"]}, "dph_total": {"lte": 3.0},
             "order": [["dph_total", "asc"]], "type": "on-demand", "limit": 100}
        got = self.search(q)
        self.assertEqual([o["gpu_name"] for o in got], ["H100 SXM"])
        self.assertEqual(got[0]["geolocation"], "Washington, US")

    def test_search_order_limit_and_forms(self):
        asc = self.search({"order": [["dph_total", "asc"]]})
        prices = [o["dph_total"] for o in asc]
        self.assertEqual(prices, sorted(prices))
        desc = self.search({"order": [["dph_total", "desc"]], "limit": 3})
        self.assertEqual(len(desc), 3)
        self.assertEqual([o["dph_total"] for o in desc], sorted(prices, reverse=True)[:3])
        two = self.search({"order": [["num_gpus", "desc"], ["dph_total", "asc"]]})
        keys = [(-o["num_gpus"], o["dph_total"]) for o in two]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(self.search({"order": ["-dph_total"]})[0]["dph_total"], max(prices))
        # {"q": {...}} wrapping and GET /bundles?q=
        wrapped = self.api("POST", "/bundles/", {"select_cols": ["*"],
                                                 "q": {"num_gpus": {"eq": 8}}})
        self.assertEqual([o["num_gpus"] for o in wrapped.json()["offers"]], [8])
        r = self.api("GET", "/bundles/?" + urlencode({"q": json.dumps({"gpu_name": {"eq": "L40S"}})}))
        self.assertEqual([o["gpu_name"] for o in r.json()["offers"]], ["L40S"])

    def test_offers_setting_and_offers_empty(self):
        self.config(offers=[{"id": 42, "gpu_name": "B200", "num_gpus": 8, "dph_total": 40.0,
                             "geolocation": "Utah, US"}])
        offers = self.search({})
        self.assertEqual([o["id"] for o in offers], [42])
        self.assertEqual(offers[0]["gpu_name"], "B200")
        self.assertIn("reliability2", offers[0])
        self.config(offers_empty=True)
        self.assertEqual(self.search({}), [])
        self.config(offers_empty=False, offers=None)
        self.assertGreater(len(self.search({})), 1)

    # ---- lifecycle -----------------------------------------------------------------------------

    def test_create_lifecycle_runtime_and_destroy(self):
        offer = self.search({"gpu_name": {"eq": "RTX 4090"}, "order": [["dph_total", "asc"]]})[0]
        r = self.create(offer["id"], label="gpd-res-123")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["success"])
        iid = r.json()["new_contract"]
        self.assertIsInstance(iid, int)
        # the rented ask is gone from search
        self.assertNotIn(offer["id"], [o["id"] for o in self.search({})])
        # pending: actual_status null first, then loading
        j = self.show(iid).json()
        self.assertIsInstance(j["instances"], dict)
        inst = j["instances"]
        self.assertIsNone(inst["actual_status"])
        self.assertEqual(inst["intended_status"], "running")
        self.assertEqual(inst["label"], "gpd-res-123")
        self.assertEqual(inst["ports"], {})
        self.wait_status(iid, "loading")
        inst = self.wait_status(iid, "running")
        self.assertEqual(inst["cur_state"], "running")
        self.assertEqual(inst["next_state"], "running")
        self.assertEqual(inst["public_ipaddr"], "127.0.0.1")
        self.assertEqual(inst["dph_total"], offer["dph_total"])
        self.assertFalse(inst["is_bid"])
        self.assertIn(["-p 8000:8000", "1"], inst["extra_env"])
        for f in ("id", "status_msg", "ssh_host", "ssh_port", "start_date", "end_date"):
            self.assertIn(f, inst)
        mapping = inst["ports"]["8000/tcp"]
        self.assertEqual(mapping[0]["HostIp"], "0.0.0.0")
        port = int(mapping[0]["HostPort"])
        self.assertIsInstance(mapping[0]["HostPort"], str)
        self.assert_runtime_serves(port)
        models = http_call(port, "GET", "/v1/models").json()
        self.assertEqual(models["data"][0]["id"], "org/model-7b")
        # list
        lst = self.api("GET", "/instances/?owner=me").json()
        self.assertEqual(lst["instances_found"], 1)
        self.assertEqual(lst["instances"][0]["id"], iid)
        self.assertEqual(lst["instances"][0]["label"], "gpd-res-123")
        # destroy
        r = self.api("DELETE", "/instances/%d/" % iid, {})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"success": True})
        self.assertTrue(port_refuses(port))
        r = self.show(iid)
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"], "no_such_instance")
        r = self.api("DELETE", "/instances/%d/" % iid, {})
        self.assertEqual(r.json()["error"], "no_such_instance")
        self.assertFalse(r.json()["success"])
        self.assertEqual(self.api("GET", "/instances/?owner=me").json()["instances_found"], 0)
        st = self.inst_state(iid)
        self.assertTrue(st["destroyed"])
        self.assertEqual(st["label"], "gpd-res-123")
        self.assertIsNone(st["view"])
        # the ask is rentable again
        self.assertIn(offer["id"], [o["id"] for o in self.search({})])
        # calls were recorded
        calls = self.calls()
        dels = [c for c in calls if c["method"] == "DELETE"]
        self.assertEqual(dels[0]["path"], "/api/v0/instances/%d/" % iid)
        self.assertEqual(dels[0]["body"], {})
        self.assertEqual(dels[0]["status"], 200)
        puts = [c for c in calls if c["method"] == "PUT"]
        self.assertEqual(puts[0]["body"]["label"], "gpd-res-123")
        self.assertEqual(calls[0]["query"], {})

    def test_no_port_asked_no_endpoint(self):
        iid = self.create(env={"MODEL": "x"}).json()["new_contract"]
        inst = self.wait_status(iid, "running")
        self.assertEqual(inst["ports"], {})

    def test_gone_ask_and_no_capacity(self):
        ask = self.search({"limit": 1})[0]["id"]
        self.assertEqual(self.create(ask).status, 200)
        r = self.create(ask)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"], "no_such_ask")
        self.assertFalse(r.json()["success"])
        r = self.create(999999)
        self.assertEqual(r.json()["error"], "no_such_ask")
        self.config(no_capacity=True)
        ask2 = self.search({"order": [["dph_total", "asc"]]})[0]["id"]
        r = self.create(ask2)
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"], "no_such_ask")
        self.assertNotIn("new_contract", r.json())

    def test_stuck(self):
        self.config(stuck=True)
        iid = self.create().json()["new_contract"]
        time.sleep(BOOT * 3)
        inst = self.show(iid).json()["instances"]
        self.assertEqual(inst["actual_status"], "loading")
        self.assertEqual(inst["ports"], {})
        self.assertEqual(self.inst_state(iid)["phase"], "pending")

    def test_image_fails(self):
        self.config(image_fails=True)
        iid = self.create().json()["new_contract"]
        inst = self.wait_status(iid, "created")
        self.assertIn("OCI runtime create failed", inst["status_msg"])
        self.assertEqual(inst["ports"], {})
        time.sleep(BOOT)
        self.assertEqual(self.show(iid).json()["instances"]["actual_status"], "created")

    def test_stopped_bid_leak(self):
        self.config(stopped_bid_leak=True)
        r = self.create(label="gpd-res-leak")
        self.assertEqual(r.status, 400)
        j = r.json()
        self.assertFalse(j["success"])
        self.assertIn("error", j)
        iid = j["new_contract"]
        inst = self.show(iid).json()["instances"]
        self.assertEqual((inst["cur_state"], inst["intended_status"], inst["next_state"]),
                         ("stopped", "stopped", "stopped"))
        self.assertEqual(inst["label"], "gpd-res-leak")
        listed = self.api("GET", "/instances/?owner=me").json()
        self.assertEqual([i["id"] for i in listed["instances"]], [iid])
        self.assertEqual(self.api("DELETE", "/instances/%d/" % iid, {}).json(), {"success": True})
        self.assertTrue(self.inst_state(iid)["destroyed"])

    def test_low_bid_leaks_and_good_bid_runs(self):
        offer = self.search({"order": [["dph_total", "asc"]], "limit": 2})
        r = self.create(offer[0]["id"], price=offer[0]["min_bid"] / 2)
        self.assertEqual(r.status, 400)
        self.assertIn("new_contract", r.json())
        r = self.create(offer[1]["id"], price=offer[1]["min_bid"] * 1.5)
        self.assertEqual(r.status, 200)
        inst = self.wait_status(r.json()["new_contract"], "running")
        self.assertTrue(inst["is_bid"])
        self.assertAlmostEqual(inst["dph_total"], offer[1]["min_bid"] * 1.5)

    def test_preempt_after_seconds(self):
        self.config(preempt_after_seconds=0.3)
        iid = self.create().json()["new_contract"]
        inst = self.wait_status(iid, "running")
        port = int(inst["ports"]["8000/tcp"][0]["HostPort"])
        inst = self.wait_status(iid, "exited")
        self.assertEqual((inst["cur_state"], inst["intended_status"], inst["next_state"]),
                         ("stopped", "stopped", "stopped"))
        self.assertTrue(port_refuses(port))
        self.assertEqual(self.inst_state(iid)["phase"], "preempted")

    def test_control_preempt_and_stop_start(self):
        iid = self.create().json()["new_contract"]
        self.wait_status(iid, "running")
        r = http_call(self.port, "POST", "/_fake/preempt", {"id": iid})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.show(iid).json()["instances"]["cur_state"], "stopped")
        r = self.api("PUT", "/instances/%d/" % iid, {"state": "running"})
        self.assertEqual(r.json(), {"success": True})
        inst = self.wait_status(iid, "running")
        self.assert_runtime_serves(int(inst["ports"]["8000/tcp"][0]["HostPort"]))
        r = self.api("PUT", "/instances/%d/" % iid, {"state": "stopped"})
        self.assertEqual(r.status, 200)
        inst = self.show(iid).json()["instances"]
        self.assertEqual(inst["actual_status"], "stopped")
        self.assertEqual(inst["intended_status"], "stopped")

    def test_destroy_not_found(self):
        iid = self.create().json()["new_contract"]
        self.wait_status(iid, "running")
        self.config(destroy_not_found=True)
        r = self.api("DELETE", "/instances/%d/" % iid, {})
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"], "no_such_instance")
        self.assertTrue(self.inst_state(iid)["destroyed"])

    def test_missing_style_200(self):
        self.config(missing_style="200")
        r = self.show(123)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"instances": None})
        r = self.api("DELETE", "/instances/123/", {})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["error"], "no_such_instance")

    def test_list_extra(self):
        self.config(list_extra=[{"id": 999, "label": "gpd-res-dead"},
                                {"id": 998, "label": "someone-else"}])
        lst = self.api("GET", "/instances/?owner=me").json()
        self.assertEqual(lst["instances_found"], 2)
        by = {i["id"]: i for i in lst["instances"]}
        self.assertEqual(by[999]["label"], "gpd-res-dead")
        self.assertEqual(by[999]["actual_status"], "running")
        self.assertEqual(self.show(999).json()["instances"]["label"], "gpd-res-dead")
        self.assertEqual(self.api("DELETE", "/instances/999/", {}).json(), {"success": True})
        lst = self.api("GET", "/instances/?owner=me").json()
        self.assertEqual([i["id"] for i in lst["instances"]], [998])
        self.assertTrue(self.inst_state(999)["destroyed"])

    # ---- faults --------------------------------------------------------------------------------

    def test_rate_limit_fail_slow(self):
        self.config(rate_limit_next=2)
        for _ in range(2):
            r = self.api("POST", "/bundles/", {})
            self.assertEqual(r.status, 429)
            self.assertFalse(r.json()["success"])
        self.assertEqual(self.api("POST", "/bundles/", {}).status, 200)
        self.config(fail_next=1)
        r = self.api("GET", "/instances/?owner=me")
        self.assertEqual(r.status, 500)
        self.assertIn("error", r.json())
        self.assertEqual(self.api("GET", "/instances/?owner=me").status, 200)
        self.config(slow_ms=300)
        t = time.monotonic()
        self.api("GET", "/instances/?owner=me")
        self.assertGreaterEqual(time.monotonic() - t, 0.28)
        self.config(slow_ms=0)
        statuses = [c["status"] for c in self.calls()]
        self.assertEqual(statuses[:5], [429, 429, 200, 500, 200])
        # control routes are neither recorded nor faulted
        self.config(fail_next=1)
        self.assertEqual(http_call(self.port, "GET", "/_fake/state").status, 200)
        self.assertEqual(self.config()["settings"]["fail_next"], 1)

    def test_control_api(self):
        r = http_call(self.port, "POST", "/_fake/config", {"no_such_setting": 1})
        self.assertEqual(r.status, 400)
        self.assertIn("no_such_setting", r.json()["error"])
        s = self.config(boot_seconds=2.5)["settings"]
        self.assertEqual(s["boot_seconds"], 2.5)
        self.assertEqual(http_call(self.port, "GET", "/_fake/config").json()["boot_seconds"], 2.5)
        self.create()
        self.assertEqual(len(self.state()["instances"]), 1)
        self.assertEqual(self.state()["instances"][0]["boot_seconds"], 2.5)
        self.assertEqual(http_call(self.port, "POST", "/_fake/reset").status, 200)
        st = self.state()
        self.assertEqual(st["instances"], [])
        self.assertEqual(st["settings"]["boot_seconds"], BOOT)
        self.assertEqual(self.calls(), [])
        self.assertEqual(http_call(self.port, "GET", "/_fake/nope").status, 404)

    def test_keep_alive_and_content_length(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            for _ in range(5):
                c.request("POST", "/api/v0/bundles/", body=json.dumps({"limit": 1}),
                          headers=dict(self.AUTH, **{"Content-Type": "application/json"}))
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200)
                self.assertEqual(int(r.getheader("Content-Length")), len(body))
                self.assertEqual(r.getheader("Content-Type"), "application/json")
                self.assertFalse(r.will_close)
        finally:
            c.close()


# ================================================================================================
# IO.net


class TestIonet(FakeCase):
    SCRIPT = "ionet.py"
    ARGS = ("--api-key", "ikey")
    AUTH = {"x-api-key": "ikey"}
    PREFIX = "/enterprise/v1/io-cloud"

    def api(self, method, path, body=None, headers=None):
        h = dict(self.AUTH)
        h.update(headers or {})
        return http_call(self.port, method, self.PREFIX + path, body, h)

    def deploy_body(self, name="gpd-res-7", hardware_id=203, gpus=1, replicas=1, hours=2,
                    locations=(1,), flat=False, image="vllm/vllm-openai:latest"):
        if flat:
            return {"resource_private_name": name, "duration_hours": hours,
                    "gpus_per_container": gpus, "hardware_id": hardware_id,
                    "location_ids": list(locations), "replica_count": replicas,
                    "env_variables": {"MODEL": "org/flat"}, "secret_env_variables": {},
                    "entrypoint": ["vllm"], "args": ["serve"], "traffic_port": 8000,
                    "image_url": image, "registry_username": "", "registry_secret": ""}
        return {"resource_private_name": name, "duration_hours": hours,
                "gpus_per_container": gpus, "hardware_id": hardware_id,
                "location_ids": list(locations),
                "container_config": {"replica_count": replicas,
                                     "env_variables": {"MODEL": "org/nested"},
                                     "secret_env_variables": {}, "entrypoint": ["vllm"],
                                     "args": ["serve"], "traffic_port": 8000},
                "registry_config": {"image_url": image, "registry_username": "",
                                    "registry_secret": ""}}

    def deploy(self, **kw):
        r = self.api("POST", "/caas/deploy", self.deploy_body(**kw))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["deployment_id"])
        self.assertIn("status", r.json())
        return r.json()["deployment_id"]

    def status(self, did):
        return self.api("GET", "/caas/deployment/%s" % did).json()["data"]["status"]

    def workers(self, did):
        r = self.api("GET", "/caas/deployment/%s/containers" % did)
        self.assertEqual(r.status, 200)
        return r.json()["data"]["workers"]

    def wait_status(self, did, status, timeout=5.0):
        return wait_until(lambda: self.status(did) == status, timeout,
                          msg="deployment status %s" % status)

    def test_auth(self):
        r = http_call(self.port, "GET", self.PREFIX + "/caas/hardware/max-gpus-per-container")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json(), {"detail": "Not authenticated"})
        r = http_call(self.port, "GET", self.PREFIX + "/caas/hardware/max-gpus-per-container",
                      headers={"x-api-key": "nope"})
        self.assertEqual(r.status, 401)
        self.assertIsInstance(r.json()["detail"], str)
        r = http_call(self.port, "GET", self.PREFIX + "/caas/hardware/max-gpus-per-container",
                      headers={"Authorization": "Bearer ikey"})
        self.assertEqual(r.status, 401)
        # without the prefix too
        r = http_call(self.port, "GET", "/caas/hardware/max-gpus-per-container",
                      headers=self.AUTH)
        self.assertEqual(r.status, 200)

    def test_hardware_replicas_price(self):
        j = self.api("GET", "/caas/hardware/max-gpus-per-container").json()
        hw = j["data"]["hardware"]
        self.assertEqual(j["data"]["total"], len(hw))
        h100 = next(h for h in hw if h["hardware_id"] == 203)
        self.assertEqual(set(h100), {"hardware_id", "hardware_name", "brand_name",
                                     "max_gpus_per_container", "available"})
        self.assertEqual(h100["hardware_name"], "H100")
        self.assertEqual(h100["available"], 12)
        self.assertEqual(next(h for h in hw if h["hardware_id"] == 312)["available"], 0)
        r = self.api("GET", "/caas/available-replicas?hardware_id=203&hardware_qty=1")
        locs = r.json()["data"]
        self.assertEqual({(l["iso2"], l["available_replicas"]) for l in locs},
                         {("US", 8), ("DE", 4)})
        self.assertEqual(set(locs[0]), {"id", "iso2", "name", "available_replicas"})
        r = self.api("GET", "/caas/available-replicas?hardware_id=203&hardware_qty=4")
        self.assertEqual({(l["iso2"], l["available_replicas"]) for l in r.json()["data"]},
                         {("US", 2), ("DE", 1)})
        r = self.api("GET", "/caas/available-replicas?hardware_id=312&hardware_qty=1")
        self.assertEqual(r.json()["data"], [])
        r = self.api("GET", "/caas/available-replicas?hardware_qty=1")
        self.assertEqual(r.status, 422)
        d = r.json()["detail"]
        self.assertEqual(d[0]["loc"], ["query", "hardware_id"])
        self.assertEqual(d[0]["type"], "missing")
        self.assertIn("msg", d[0])
        # the price is the total for the duration
        for loc in ("[1]", "1", "[1,2]"):
            r = self.api("GET", "/caas/price?" + urlencode({
                "location_ids": loc, "hardware_id": 203, "gpus_per_container": 1,
                "duration_hours": 2, "replica_count": 1, "currency": "usdc"}))
            self.assertEqual(r.status, 200, r)
            p = r.json()["data"]
            self.assertAlmostEqual(p["total_cost_usdc"], 5.2)
            self.assertEqual(p["replica_count"], 1)
            self.assertEqual(p["gpus_per_container"], 1)
        r = self.api("GET", "/caas/price?location_ids=1&location_ids=2&hardware_id=203"
                            "&gpus_per_container=2&duration_hours=3&replica_count=2")
        self.assertAlmostEqual(r.json()["data"]["total_cost_usdc"], 2.6 * 2 * 3 * 2)
        r = self.api("GET", "/caas/price?hardware_id=203")
        self.assertEqual(r.status, 422)
        locs = {tuple(e["loc"]) for e in r.json()["detail"]}
        self.assertIn(("query", "location_ids"), locs)
        self.assertIn(("query", "duration_hours"), locs)

    def test_deploy_lifecycle_runtime_extend_destroy(self):
        did = self.deploy(name="gpd-res-7")
        uuid.UUID(did)
        d = self.api("GET", "/caas/deployment/%s" % did).json()["data"]
        self.assertEqual(d["status"], "deployment requested")
        self.assertEqual(d["id"], did)
        self.assertEqual(d["name"], "gpd-res-7")
        self.assertEqual(d["locations"][0]["iso2"], "US")
        w = self.workers(did)
        self.assertEqual(len(w), 1)
        self.assertEqual(w[0]["public_url"], "")
        self.assertEqual(w[0]["container_events"][0]["message"], "Deployment requested")
        # capacity taken
        locs = self.api("GET", "/caas/available-replicas?hardware_id=203&hardware_qty=1").json()
        self.assertEqual({l["iso2"]: l["available_replicas"] for l in locs["data"]}["US"], 7)
        self.wait_status(did, "running")
        w = self.workers(did)[0]
        self.assertEqual(w["status"], "running")
        self.assertTrue(w["public_url"].startswith("http://127.0.0.1:"))
        port = int(w["public_url"].rsplit(":", 1)[1])
        self.assert_runtime_serves(port)
        self.assertEqual(http_call(port, "GET", "/v1/models").json()["data"][0]["id"],
                         "org/nested")
        msgs = [e["message"] for e in w["container_events"]]
        self.assertIn("Container started", msgs)
        # extend
        r = self.api("POST", "/caas/deployment/%s/extend" % did, {"duration_hours": 3})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["duration_hours"], 5)
        r = self.api("POST", "/caas/deployment/%s/extend" % did, {})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["detail"][0]["loc"], ["body", "duration_hours"])
        d = self.api("GET", "/caas/deployment/%s" % did).json()["data"]
        self.assertEqual(d["duration_hours"], 5)
        self.assertAlmostEqual(d["amount_paid"], 2.6 * 5)
        # list of ours
        lst = self.api("GET", "/caas/deployments").json()["data"]
        self.assertEqual(lst["total"], 1)
        self.assertEqual(lst["deployments"][0]["name"], "gpd-res-7")
        self.assertEqual(lst["deployments"][0]["status"], "running")
        # destroy
        r = self.api("DELETE", "/caas/deployment/%s" % did)
        self.assertEqual(r.status, 200)
        self.assertTrue(port_refuses(port))
        self.assertEqual(self.status(did), "destroyed")
        self.assertEqual(self.workers(did)[0]["public_url"], "")
        self.assertEqual(self.api("DELETE", "/caas/deployment/%s" % did).status, 404)
        r = self.api("POST", "/caas/deployment/%s/extend" % did, {"duration_hours": 1})
        self.assertEqual(r.status, 400)
        locs = self.api("GET", "/caas/available-replicas?hardware_id=203&hardware_qty=1").json()
        self.assertEqual({l["iso2"]: l["available_replicas"] for l in locs["data"]}["US"], 8)
        self.assertEqual(self.api("GET", "/caas/deployments?status=running").json()["data"]
                         ["total"], 0)
        self.assertTrue(self.inst_state(did)["destroyed"])
        self.assertTrue(any(c["method"] == "DELETE" and c["path"].endswith(did)
                            for c in self.calls()))

    def test_flat_fields_and_nested_wins(self):
        did = self.deploy(flat=True)
        self.wait_status(did, "running")
        port = int(self.workers(did)[0]["public_url"].rsplit(":", 1)[1])
        self.assertEqual(http_call(port, "GET", "/v1/models").json()["data"][0]["id"],
                         "org/flat")
        body = self.deploy_body()
        body.update({"image_url": "flat/ignored:1", "replica_count": 3})
        r = self.api("POST", "/caas/deploy", body)
        self.assertEqual(r.status, 200)
        did2 = r.json()["deployment_id"]
        self.assertEqual(len(self.workers(did2)), 1)  # the nested replica_count won

    def test_validation_422(self):
        r = self.api("POST", "/caas/deploy", {"resource_private_name": "x"})
        self.assertEqual(r.status, 422)
        locs = {tuple(e["loc"]) for e in r.json()["detail"]}
        for f in ("duration_hours", "gpus_per_container", "hardware_id", "location_ids"):
            self.assertIn(("body", f), locs)
        for e in r.json()["detail"]:
            self.assertEqual(set(e) >= {"type", "loc", "msg"}, True)
        body = self.deploy_body()
        body["duration_hours"] = "two"
        r = self.api("POST", "/caas/deploy", body)
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["detail"][0]["loc"], ["body", "duration_hours"])
        body = self.deploy_body()
        body["duration_hours"] = "2"  # FastAPI coerces numeric strings
        self.assertEqual(self.api("POST", "/caas/deploy", body).status, 200)
        r = self.api("POST", "/caas/deploy", b"not json", {"Content-Type": "application/json"})
        self.assertEqual(r.status, 422)
        body = self.deploy_body(hardware_id=9999)
        self.assertEqual(self.api("POST", "/caas/deploy", body).status, 400)
        body = self.deploy_body(gpus=16)
        self.assertEqual(self.api("POST", "/caas/deploy", body).status, 400)

    def test_no_capacity(self):
        r = self.api("POST", "/caas/deploy", self.deploy_body(locations=(2,), replicas=5))
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json(), {"detail": "no capacity"})
        r = self.api("POST", "/caas/deploy", self.deploy_body(hardware_id=312))
        self.assertEqual(r.json(), {"detail": "no capacity"})
        self.config(no_capacity=True)
        r = self.api("POST", "/caas/deploy", self.deploy_body())
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json(), {"detail": "no capacity"})
        self.assertEqual(self.state()["instances"], [])

    def test_offers_setting_and_offers_empty(self):
        self.config(offers=[{"hardware_id": 7, "hardware_name": "L4", "price_per_gpu_hour": 0.5,
                             "locations": [{"id": 3, "gpus_free": 2}]}])
        hw = self.api("GET", "/caas/hardware/max-gpus-per-container").json()["data"]["hardware"]
        self.assertEqual([(h["hardware_id"], h["available"]) for h in hw], [(7, 2)])
        r = self.api("GET", "/caas/available-replicas?hardware_id=7&hardware_qty=1")
        self.assertEqual(r.json()["data"], [{"id": 3, "iso2": "SG", "name": "Singapore",
                                             "available_replicas": 2}])
        self.config(offers_empty=True)
        j = self.api("GET", "/caas/hardware/max-gpus-per-container").json()
        self.assertEqual(j["data"], {"hardware": [], "total": 0})
        r = self.api("GET", "/caas/available-replicas?hardware_id=7&hardware_qty=1")
        self.assertEqual(r.json()["data"], [])

    def test_image_fails(self):
        self.config(image_fails=True)
        did = self.deploy()
        self.wait_status(did, "failed")
        w = self.workers(did)[0]
        self.assertEqual(w["status"], "failed")
        self.assertEqual(w["public_url"], "")
        self.assertTrue(any("ImagePullBackOff" in e["message"] for e in w["container_events"]))

    def test_stuck(self):
        self.config(stuck=True)
        did = self.deploy()
        time.sleep(BOOT * 3)
        self.assertEqual(self.status(did), "deployment requested")
        self.assertEqual(self.workers(did)[0]["public_url"], "")

    def test_preempt(self):
        self.config(preempt_after_seconds=0.3)
        did = self.deploy()
        self.wait_status(did, "running")
        port = int(self.workers(did)[0]["public_url"].rsplit(":", 1)[1])
        self.wait_status(did, "terminated")
        self.assertEqual(self.workers(did)[0]["status"], "terminated")
        self.assertTrue(port_refuses(port))
        self.config(preempt_status="failed", preempt_after_seconds=0.1)
        did = self.deploy()
        self.wait_status(did, "failed")

    def test_duration_expiry_completes(self):
        self.config(hour_seconds=0.3)
        did = self.deploy(hours=1)
        self.wait_status(did, "running")
        port = int(self.workers(did)[0]["public_url"].rsplit(":", 1)[1])
        self.wait_status(did, "completed")
        self.assertTrue(port_refuses(port))
        d = self.api("GET", "/caas/deployment/%s" % did).json()["data"]
        self.assertEqual(d["completed_percent"], 100.0)

    def test_destroy_not_found_and_unknown(self):
        self.assertEqual(self.api("GET", "/caas/deployment/nope").status, 404)
        self.assertEqual(self.api("GET", "/caas/deployment/nope").json(),
                         {"detail": "Deployment not found"})
        self.assertEqual(self.api("DELETE", "/caas/deployment/nope").status, 404)
        did = self.deploy()
        self.config(destroy_not_found=True)
        r = self.api("DELETE", "/caas/deployment/%s" % did)
        self.assertEqual(r.status, 404)
        self.assertTrue(self.inst_state(did)["destroyed"])

    def test_replicas_each_have_a_runtime(self):
        did = self.deploy(replicas=2, locations=(2, 1))
        self.wait_status(did, "running")
        ws = self.workers(did)
        self.assertEqual(len(ws), 2)
        urls = {w["public_url"] for w in ws}
        self.assertEqual(len(urls), 2)
        for u in urls:
            self.assertEqual(http_call(int(u.rsplit(":", 1)[1]), "GET", "/health").status, 200)
        d = self.api("GET", "/caas/deployment/%s" % did).json()["data"]
        self.assertEqual(d["total_containers"], 2)
        self.assertEqual([l["iso2"] for l in d["locations"]], ["DE"])

    def test_list_extra_and_filters(self):
        self.config(list_extra=[{"id": "dead-1", "name": "gpd-res-dead"}])
        did = self.deploy(name="gpd-res-live")
        lst = self.api("GET", "/caas/deployments").json()["data"]
        self.assertEqual(lst["total"], 2)
        self.assertEqual({d["name"] for d in lst["deployments"]}, {"gpd-res-dead", "gpd-res-live"})
        lst = self.api("GET", "/caas/deployments?status=running").json()["data"]
        self.assertEqual([d["id"] for d in lst["deployments"]], ["dead-1"])
        lst = self.api("GET", "/caas/deployments?page=2&page_size=1").json()["data"]
        self.assertEqual(lst["total"], 2)
        self.assertEqual([d["id"] for d in lst["deployments"]], [did])
        self.assertEqual(self.api("DELETE", "/caas/deployment/dead-1").status, 200)
        self.assertEqual(self.status("dead-1"), "destroyed")

    def test_faults(self):
        self.config(rate_limit_next=1, fail_next=1)
        r = self.api("GET", "/caas/hardware/max-gpus-per-container")
        self.assertEqual(r.status, 429)
        self.assertIsInstance(r.json()["detail"], str)
        r = self.api("GET", "/caas/hardware/max-gpus-per-container")
        self.assertEqual(r.status, 500)
        self.assertIsInstance(r.json()["detail"], str)
        self.assertEqual(self.api("GET", "/caas/hardware/max-gpus-per-container").status, 200)
        self.config(slow_ms=250)
        t = time.monotonic()
        self.api("GET", "/caas/deployments")
        self.assertGreaterEqual(time.monotonic() - t, 0.23)


# ================================================================================================
# GCP TPU


class TestGcpTpu(FakeCase):
    SCRIPT = "gcp_tpu.py"
    ARGS = ("--token", "gtok")
    AUTH = {"Authorization": "Bearer gtok"}
    P = "/v2/projects/proj1/locations/us-west4-a"

    def api(self, method, path, body=None, headers=None):
        h = dict(self.AUTH)
        h.update(headers or {})
        return http_call(self.port, method, path, body, h)

    def node_body(self, acc="v5litepod-8", labels=None, external=True, spot=True, **kw):
        b = {"acceleratorType": acc, "runtimeVersion": "v2-alpha-tpuv5-lite",
             "networkConfig": {"enableExternalIps": external},
             "schedulingConfig": {"spot": spot},
             "labels": {"gpd-res": "123"} if labels is None else labels,
             "metadata": {"startup-script": "echo hi", "model": "google/gemma-2b"}}
        b.update(kw)
        return b

    def create(self, node_id="n1", base=None, **kw):
        r = self.api("POST", (base or self.P) + "/nodes?nodeId=" + node_id, self.node_body(**kw))
        return r

    def op(self, name):
        r = self.api("GET", "/v2/" + name)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_op(self, name, timeout=5.0):
        return wait_until(lambda: (lambda o: o if o.get("done") else None)(self.op(name)),
                          timeout, msg="operation done")

    def node(self, node_id="n1"):
        return self.api("GET", self.P + "/nodes/" + node_id)

    def inst_state(self, node_id):
        for i in self.state()["instances"]:
            if i["id"].endswith("/nodes/" + node_id):
                return i
        return None

    def test_auth(self):
        r = http_call(self.port, "GET", self.P + "/nodes")
        self.assertEqual(r.status, 401)
        e = r.json()["error"]
        self.assertEqual(e["code"], 401)
        self.assertEqual(e["status"], "UNAUTHENTICATED")
        self.assertIn("message", e)
        r = http_call(self.port, "GET", self.P + "/nodes",
                      headers={"Authorization": "Bearer wrong"})
        self.assertEqual(r.status, 401)
        self.assertEqual(self.api("GET", self.P + "/nodes").status, 200)
        # prefix optional
        self.assertEqual(self.api("GET", self.P[3:] + "/nodes").status, 200)

    def test_catalogue(self):
        j = self.api("GET", self.P + "/acceleratorTypes").json()
        types = [t["type"] for t in j["acceleratorTypes"]]
        self.assertIn("v5litepod-8", types)
        t = next(t for t in j["acceleratorTypes"] if t["type"] == "v5litepod-8")
        self.assertEqual(t["name"], "projects/proj1/locations/us-west4-a/acceleratorTypes/"
                                    "v5litepod-8")
        self.assertEqual(t["acceleratorConfigs"], [{"type": "V5LITE_POD", "topology": "2x4"}])
        r = self.api("GET", self.P + "/acceleratorTypes/v5litepod-8")
        self.assertEqual(r.json()["type"], "v5litepod-8")
        self.assertEqual(self.api("GET", self.P + "/acceleratorTypes/v4-8").status, 404)
        locs = self.api("GET", "/v2/projects/proj1/locations").json()["locations"]
        self.assertIn("us-west4-a", [l["locationId"] for l in locs])
        self.config(offers=[{"zone": "us-west4-a", "acceleratorType": "v5litepod-4"}])
        j = self.api("GET", self.P + "/acceleratorTypes").json()
        self.assertEqual([t["type"] for t in j["acceleratorTypes"]], ["v5litepod-4"])
        self.config(offers_empty=True)
        self.assertEqual(self.api("GET", self.P + "/acceleratorTypes").json(),
                         {"acceleratorTypes": []})
        self.assertEqual(self.create().status, 400)

    def test_create_lifecycle_runtime_delete(self):
        r = self.create("n1")
        self.assertEqual(r.status, 200, r)
        op = r.json()
        self.assertRegex(op["name"], r"^projects/proj1/locations/us-west4-a/operations/op-\d+$")
        self.assertIs(op["done"], False)
        self.assertEqual(op["metadata"]["verb"], "create")
        n = self.node().json()
        self.assertEqual(n["state"], "CREATING")
        self.assertEqual(n["name"], "projects/proj1/locations/us-west4-a/nodes/n1")
        self.assertNotIn("networkEndpoints", n)
        self.assertEqual(self.op(op["name"])["done"], False)
        done = self.wait_op(op["name"])
        self.assertNotIn("error", done)
        self.assertEqual(done["response"]["state"], "READY")
        self.assertEqual(done["response"]["@type"], "type.googleapis.com/google.cloud.tpu.v2.Node")
        n = self.node().json()
        self.assertEqual(n["state"], "READY")
        self.assertEqual(n["health"], "HEALTHY")
        self.assertEqual(n["acceleratorType"], "v5litepod-8")
        self.assertEqual(n["labels"], {"gpd-res": "123"})
        self.assertIn("createTime", n)
        ep = n["networkEndpoints"][0]
        self.assertEqual(ep["ipAddress"], "127.0.0.1")
        self.assertEqual(ep["accessConfig"]["externalIp"], "127.0.0.1")
        port = ep["port"]
        self.assertIsInstance(port, int)
        self.assert_runtime_serves(port)
        self.assertEqual(http_call(port, "GET", "/v1/models").json()["data"][0]["id"],
                         "google/gemma-2b")
        lst = self.api("GET", self.P + "/nodes").json()
        self.assertEqual([x["labels"] for x in lst["nodes"]], [{"gpd-res": "123"}])
        # same id again: 409
        r = self.create("n1")
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json()["error"]["status"], "ALREADY_EXISTS")
        # delete
        r = self.api("DELETE", self.P + "/nodes/n1")
        self.assertEqual(r.status, 200)
        dop = r.json()
        self.assertEqual(dop["metadata"]["verb"], "delete")
        self.assertTrue(port_refuses(port))
        self.assertEqual(self.node().json()["state"], "DELETING")
        d = self.wait_op(dop["name"])
        self.assertEqual(d["response"]["@type"], "type.googleapis.com/google.protobuf.Empty")
        r = self.node()
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["status"], "NOT_FOUND")
        self.assertEqual(self.api("GET", self.P + "/nodes").json(), {"nodes": []})
        self.assertEqual(self.api("DELETE", self.P + "/nodes/n1").status, 404)
        self.assertTrue(self.inst_state("n1")["destroyed"])
        # the id can be reused
        self.assertEqual(self.create("n1").status, 200)

    def test_internal_ip_only(self):
        op = self.create("n2", external=False).json()
        self.wait_op(op["name"])
        ep = self.node("n2").json()["networkEndpoints"][0]
        self.assertNotIn("accessConfig", ep)
        self.assertEqual(http_call(ep["port"], "GET", "/health").status, 200)

    def test_validation(self):
        for nid in ("", "1abc", "Upper", "ends-", "a" * 64, "under_score"):
            r = self.api("POST", self.P + "/nodes?nodeId=" + nid, self.node_body())
            self.assertEqual(r.status, 400, nid)
            self.assertEqual(r.json()["error"]["status"], "INVALID_ARGUMENT")
        r = self.api("POST", self.P + "/nodes?nodeId=ok", {"acceleratorType": "v5litepod-8"})
        self.assertEqual(r.status, 400)
        self.assertIn("runtimeVersion", r.json()["error"]["message"])
        for labels in ({"Gpd": "x"}, {"gpd-res": "UPPER"}, {"gpd": "a.b"}):
            r = self.create("ok", labels=labels)
            self.assertEqual(r.status, 400, labels)
        r = self.create("ok", acc="v4-8")
        self.assertEqual(r.status, 400)
        self.assertIn("not available", r.json()["error"]["message"])
        r = self.api("POST", self.P + "/nodes?nodeId=cfg", dict(
            self.node_body(), acceleratorType=None,
            acceleratorConfig={"type": "V5LITE_POD", "topology": "2x2"}))
        self.assertEqual(r.status, 200, r)

    def test_no_capacity(self):
        self.config(no_capacity=True)
        r = self.create("nc")
        self.assertEqual(r.status, 200)
        done = self.wait_op(r.json()["name"])
        self.assertEqual(done["error"]["code"], 8)
        self.assertIn("There is no more capacity in the zone", done["error"]["message"])
        self.assertNotIn("response", done)
        self.assertEqual(self.node("nc").status, 404)

    def test_quota(self):
        self.config(quota_exceeded=True)
        r = self.create("q1")
        self.assertEqual(r.status, 429)
        e = r.json()["error"]
        self.assertEqual(e["code"], 429)
        self.assertEqual(e["status"], "RESOURCE_EXHAUSTED")
        self.assertEqual(e["details"][0]["reason"], "quotaExceeded")
        self.config(quota_http_status=403)
        r = self.create("q1")
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json()["error"]["details"][0]["reason"], "quotaExceeded")
        self.assertEqual(self.state()["instances"], [])

    def test_image_fails(self):
        self.config(image_fails=True)
        op = self.create("bad").json()
        done = self.wait_op(op["name"])
        self.assertEqual(done["error"]["code"], 13)
        n = self.node("bad").json()
        self.assertEqual(n["state"], "TERMINATED")
        self.assertNotIn("networkEndpoints", n)
        self.assertEqual(self.api("DELETE", self.P + "/nodes/bad").status, 200)

    def test_stuck(self):
        self.config(stuck=True)
        op = self.create("st").json()
        time.sleep(BOOT * 3)
        self.assertEqual(self.node("st").json()["state"], "CREATING")
        self.assertFalse(self.op(op["name"])["done"])
        # deleting a node that is still creating aborts its create operation
        self.api("DELETE", self.P + "/nodes/st")
        self.assertEqual(self.op(op["name"])["error"]["code"], 10)

    def test_preempt(self):
        self.config(preempt_after_seconds=0.3)
        op = self.create("pe").json()
        self.wait_op(op["name"])
        port = self.node("pe").json()["networkEndpoints"][0]["port"]
        wait_until(lambda: self.node("pe").json()["state"] == "PREEMPTED", msg="PREEMPTED")
        self.assertTrue(port_refuses(port))

    def test_destroy_not_found(self):
        op = self.create("dn").json()
        self.wait_op(op["name"])
        self.config(destroy_not_found=True)
        r = self.api("DELETE", self.P + "/nodes/dn")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["code"], 404)
        self.assertTrue(self.inst_state("dn")["destroyed"])

    def test_list_extra_pagination_wildcard(self):
        self.config(list_extra=[{"nodeId": "orphan", "zone": "us-west4-a", "project": "proj1",
                                 "labels": {"gpd-res": "dead"}},
                                {"name": "projects/proj1/locations/us-east1-d/nodes/other",
                                 "acceleratorType": "v6e-8"}])
        self.create("mine")
        lst = self.api("GET", self.P + "/nodes").json()["nodes"]
        self.assertEqual({n["name"].rsplit("/", 1)[1] for n in lst}, {"orphan", "mine"})
        orphan = next(n for n in lst if n["name"].endswith("/orphan"))
        self.assertEqual(orphan["labels"], {"gpd-res": "dead"})
        self.assertEqual(orphan["state"], "READY")
        allz = self.api("GET", "/v2/projects/proj1/locations/-/nodes").json()["nodes"]
        self.assertEqual(len(allz), 3)
        p1 = self.api("GET", "/v2/projects/proj1/locations/-/nodes?pageSize=2").json()
        self.assertEqual(len(p1["nodes"]), 2)
        p2 = self.api("GET", "/v2/projects/proj1/locations/-/nodes?pageSize=2&pageToken="
                      + p1["nextPageToken"]).json()
        self.assertEqual(len(p2["nodes"]), 1)
        self.assertNotIn("nextPageToken", p2)
        self.assertEqual(self.api("DELETE", self.P + "/nodes/orphan").status, 200)

    def test_omit_defaults(self):
        self.config(omit_defaults=True)
        self.assertEqual(self.api("GET", self.P + "/nodes").json(), {})
        op = self.create("od").json()
        self.assertNotIn("done", op)
        self.assertTrue(self.wait_op(op["name"])["done"])

    def test_faults(self):
        self.config(rate_limit_next=1, fail_next=1)
        r = self.api("GET", self.P + "/nodes")
        self.assertEqual(r.status, 429)
        self.assertEqual(r.json()["error"]["status"], "RESOURCE_EXHAUSTED")
        r = self.api("GET", self.P + "/nodes")
        self.assertEqual(r.status, 500)
        self.assertEqual(r.json()["error"]["code"], 500)
        self.assertEqual(self.api("GET", self.P + "/nodes").status, 200)

    def test_token_structure_checks_without_key(self):
        """No key known: structure and claims are checked, the signature is not."""
        fake_key = {"client_email": "x@y", "token_uri": "http://127.0.0.1:%d/token" % self.port,
                    "private_key": None}
        hdr = gcp_tpu.b64url_encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        now = int(time.time())

        def assertion(claims, header=hdr):
            return header + "." + gcp_tpu.b64url_encode(json.dumps(claims).encode()) + ".c2ln"

        good = {"iss": "x@y", "scope": gcp_tpu.CLOUD_PLATFORM, "aud": fake_key["token_uri"],
                "iat": now, "exp": now + 3600}

        def token(a, grant=gcp_tpu.JWT_GRANT):
            return http_call(self.port, "POST", "/token",
                             urlencode({"grant_type": grant, "assertion": a}),
                             {"Content-Type": "application/x-www-form-urlencoded"})

        r = token(assertion(good))
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["token_type"], "Bearer")
        self.assertEqual(j["expires_in"], 3600)
        r = http_call(self.port, "GET", self.P + "/nodes",
                      headers={"Authorization": "Bearer " + j["access_token"]})
        self.assertEqual(r.status, 200)
        bad_cases = [
            ("a.b", "invalid_grant"),
            (assertion(good, gcp_tpu.b64url_encode(b'{"alg":"HS256"}')), "invalid_grant"),
            (assertion(dict(good, exp=now - 10, iat=now - 100)), "invalid_grant"),
            (assertion(dict(good, exp=now + 7200)), "invalid_grant"),
            (assertion({k: v for k, v in good.items() if k != "scope"}), "invalid_grant"),
            (assertion(dict(good, aud="http://elsewhere/token")), "invalid_grant"),
            (assertion(dict(good, scope="https://www.googleapis.com/auth/drive")),
             "invalid_scope"),
        ]
        for a, err in bad_cases:
            r = token(a)
            self.assertEqual(r.status, 400, a)
            self.assertEqual(r.json()["error"], err, a)
            self.assertIn("error_description", r.json())
        r = token(assertion(good), grant="client_credentials")
        self.assertEqual(r.json()["error"], "unsupported_grant_type")
        # Google's own token URL is an accepted aud too
        self.assertEqual(token(assertion(dict(good, aud=gcp_tpu.GOOGLE_TOKEN_URLS[0]))).status,
                         200)
        self.config(require_signature=True)
        r = token(assertion(good))
        self.assertEqual(r.status, 400)
        self.config(require_signature=False, token_fail_next=1)
        self.assertEqual(token(assertion(good)).status, 500)
        self.assertEqual(token(assertion(good)).status, 200)
        # short-lived tokens expire
        self.config(token_expires_in=0.3)
        tok = token(assertion(good)).json()["access_token"]
        hdrs = {"Authorization": "Bearer " + tok}
        self.assertEqual(http_call(self.port, "GET", self.P + "/nodes", headers=hdrs).status, 200)
        time.sleep(0.4)
        r = http_call(self.port, "GET", self.P + "/nodes", headers=hdrs)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json()["error"]["details"][0]["reason"], "ACCESS_TOKEN_EXPIRED")
        toks = self.state()["tokens"]
        self.assertTrue(all(t["signature"] == "unchecked" for t in toks))


@unittest.skipUnless(HAVE_OPENSSL, "openssl CLI not found: cannot generate a test RSA key")
class TestGcpServiceAccount(unittest.TestCase):
    """The service-account exchange with real RS256 signatures."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fake-sa-")
        cls.key_path = os.path.join(cls.tmp, "sa.json")
        cls.other_path = os.path.join(cls.tmp, "other.json")
        # the token_uri's port is known only once the fake runs: write it with a placeholder and
        # rewrite it below (the fake reads only the key, not token_uri)
        cls.key = gcp_tpu.make_sa_key(cls.key_path, "http://placeholder/token")
        cls.other = gcp_tpu.make_sa_key(cls.other_path, "http://placeholder/token",
                                        client_email="other@fake-project.iam.gserviceaccount.com")
        cls.fake = spawn_fake(HERE / "gcp_tpu.py", "--boot-seconds", BOOT, "--sa-key-file",
                              cls.key_path, "--token", "")
        cls.token_uri = "http://127.0.0.1:%d/token" % cls.fake.port
        cls.key["token_uri"] = cls.token_uri
        cls.other["token_uri"] = cls.token_uri

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def exchange(self, assertion):
        return http_call(self.fake.port, "POST", "/token",
                         urlencode({"grant_type": gcp_tpu.JWT_GRANT, "assertion": assertion}),
                         {"Content-Type": "application/x-www-form-urlencoded"})

    def test_key_file_shape(self):
        with open(self.key_path) as f:
            k = json.load(f)
        self.assertEqual(k["type"], "service_account")
        self.assertIn("-----BEGIN PRIVATE KEY-----", k["private_key"])
        for f in ("project_id", "private_key_id", "client_email", "client_id", "token_uri"):
            self.assertTrue(k[f])
        self.assertEqual(oct(os.stat(self.key_path).st_mode & 0o777), "0o600")

    def test_signed_exchange_both_verifiers(self):
        for verifier in ("openssl", "python", "auto"):
            http_call(self.fake.port, "POST", "/_fake/config", {"verify_with": verifier})
            r = self.exchange(gcp_tpu.jwt_assertion(self.key))
            self.assertEqual(r.status, 200, r)
            tok = r.json()["access_token"]
            r = http_call(self.fake.port, "GET", "/v2/projects/p/locations/us-west4-a/nodes",
                          headers={"Authorization": "Bearer " + tok})
            self.assertEqual(r.status, 200)
            # signed by another key while claiming to be our account
            forged = gcp_tpu.jwt_assertion(dict(self.other, client_email=self.key["client_email"]))
            r = self.exchange(forged)
            self.assertEqual(r.status, 400)
            self.assertEqual(r.json(), {"error": "invalid_grant",
                                        "error_description": "Invalid JWT Signature."})
            # a tampered payload
            a = gcp_tpu.jwt_assertion(self.key).split(".")
            claims = json.loads(gcp_tpu.b64url_decode(a[1]))
            claims["scope"] += " https://www.googleapis.com/auth/drive"
            a[1] = gcp_tpu.b64url_encode(json.dumps(claims).encode())
            self.assertEqual(self.exchange(".".join(a)).status, 400)
        st = http_call(self.fake.port, "GET", "/_fake/state").json()
        methods = {t["signature"] for t in st["tokens"]}
        self.assertEqual(methods, {"verified (openssl)", "verified (python)"})
        # the static token is off (--token ""): no bearer, no access
        r = http_call(self.fake.port, "GET", "/v2/projects/p/locations/us-west4-a/nodes",
                      headers={"Authorization": "Bearer "})
        self.assertEqual(r.status, 401)

    def test_sa_public_key_setting(self):
        """An unknown iss is verified against sa_public_key when set."""
        pub = gcp_tpu.public_pem(gcp_tpu.load_rsa_key(self.other["private_key"]))
        http_call(self.fake.port, "POST", "/_fake/config", {"sa_public_key": pub,
                                                            "require_signature": True})
        try:
            self.assertEqual(self.exchange(gcp_tpu.jwt_assertion(self.other)).status, 200)
            stranger = dict(self.key, client_email="stranger@x.iam.gserviceaccount.com")
            self.assertEqual(self.exchange(gcp_tpu.jwt_assertion(stranger)).status, 400)
        finally:
            http_call(self.fake.port, "POST", "/_fake/reset")

    def test_python_rsa_matches_openssl(self):
        msg = b"header.payload"
        priv = os.path.join(self.tmp, "k.pem")
        with open(priv, "w") as f:
            f.write(self.key["private_key"])
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", priv], input=msg,
                             stdout=subprocess.PIPE, check=True).stdout
        key = gcp_tpu.load_rsa_key(self.key["private_key"])
        self.assertEqual(gcp_tpu.rs256_sign_python(key, msg), sig)
        pub = gcp_tpu.public_pem(key)
        self.assertTrue(gcp_tpu.rs256_verify(pub, msg, sig, use_openssl=False)[0])
        self.assertTrue(gcp_tpu.rs256_verify(pub, msg, sig, use_openssl=True)[0])
        self.assertFalse(gcp_tpu.rs256_verify(pub, msg + b"x", sig, use_openssl=False)[0])
        self.assertFalse(gcp_tpu.rs256_verify(pub, msg + b"x", sig, use_openssl=True)[0])
        # openssl's own public key PEM parses to the same key
        out = subprocess.run(["openssl", "pkey", "-in", priv, "-pubout"], stdout=subprocess.PIPE,
                             check=True).stdout.decode()
        self.assertEqual(gcp_tpu.load_rsa_key(out)["n"], key["n"])
        self.assertEqual(out, pub)

    def test_make_sa_key_cli(self):
        path = os.path.join(self.tmp, "cli.json")
        r = subprocess.run([PY, str(HERE / "gcp_tpu.py"), "--make-sa-key", path, "--token-uri",
                            "http://127.0.0.1:1/token"], stdout=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0)
        with open(path) as f:
            self.assertEqual(json.load(f)["token_uri"], "http://127.0.0.1:1/token")


# ================================================================================================
# the command runtime and process plumbing


class TestRuntimeCommand(FakeCase):
    """GPD_FAKE_RUNTIME_CMD: the fake spawns that command as the instance's runtime."""
    SCRIPT = "vastai.py"
    ARGS = ("--api-key", "k")
    ENV = {fakelib.RUNTIME_CMD_ENV: "%s %s --port {port}" % (PY, HERE / "openai_upstream.py")}

    def test_command_runtime_started_and_killed(self):
        h = {"Authorization": "Bearer k"}
        ask = http_call(self.port, "POST", "/bundles/", {"limit": 1}, h).json()["offers"][0]["id"]
        r = http_call(self.port, "PUT", "/asks/%d/" % ask,
                      {"image": "img", "label": "gpd-res-c", "env": {"-p 8000:8000": "1"}}, h)
        iid = r.json()["new_contract"]
        inst = wait_until(lambda: (lambda i: i if i["actual_status"] == "running" else None)(
            http_call(self.port, "GET", "/instances/%d/" % iid, headers=h).json()["instances"]))
        port = int(inst["ports"]["8000/tcp"][0]["HostPort"])
        rt = self.inst_state(iid)["runtimes"][0]
        self.assertEqual(rt["kind"], "command")
        self.assertEqual(rt["port"], port)
        pid = rt["pid"]
        wait_until(lambda: self._accepts(port), msg="command runtime listening")
        r = http_call(port, "POST", "/v1/chat/completions",
                      {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.json()["choices"][0]["message"]["content"], "echo: hi")
        http_call(self.port, "DELETE", "/instances/%d/" % iid, {}, h)
        self.assertTrue(port_refuses(port))
        wait_until(lambda: not self._alive(pid), msg="runtime process gone")

    @staticmethod
    def _accepts(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return True
        except OSError:
            return False

    @staticmethod
    def _alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False


class TestProcess(unittest.TestCase):
    def test_exit_with_parent_and_ready_line(self):
        for script in ("vastai.py", "ionet.py", "gcp_tpu.py"):
            code = ("import subprocess,sys\n"
                    "p=subprocess.Popen([%r,%r,'--port','0','--exit-with-parent'],"
                    "stdout=subprocess.PIPE)\n"
                    "line=p.stdout.readline().decode()\n"
                    "print(p.pid, line.strip(), flush=True)\n" % (PY, str(HERE / script)))
            out = subprocess.run([PY, "-c", code], stdout=subprocess.PIPE, timeout=20).stdout
            pid, ready, port = out.decode().split()
            self.assertEqual(ready, "READY")
            self.assertGreater(int(port), 0)
            wait_until(lambda: not TestRuntimeCommand._alive(int(pid)), timeout=5,
                       msg="%s exits with its parent" % script)

    def test_sigterm_stops_runtimes(self):
        env = {k: v for k, v in os.environ.items() if k != fakelib.RUNTIME_CMD_ENV}
        fake = spawn_fake(HERE / "ionet.py", "--boot-seconds", "0.1", env=env)
        try:
            h = {"x-api-key": "test-ionet-key"}
            body = {"resource_private_name": "r", "duration_hours": 1, "gpus_per_container": 1,
                    "hardware_id": 38, "location_ids": [1], "image_url": "i"}
            did = http_call(fake.port, "POST", "/caas/deploy", body, h).json()["deployment_id"]
            url = wait_until(lambda: http_call(fake.port, "GET", "/caas/deployment/%s/containers"
                                               % did, headers=h).json()["data"]["workers"][0]
                             ["public_url"])
            port = int(url.rsplit(":", 1)[1])
            self.assertEqual(http_call(port, "GET", "/health").status, 200)
        finally:
            fake.stop()
        self.assertEqual(fake.proc.returncode, 0)
        self.assertTrue(port_refuses(port))


if __name__ == "__main__":
    unittest.main()
