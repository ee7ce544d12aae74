"""The compute broker with the local provider: a real runtime process (the fake OpenAI server)
spawned by the daemon, health-checked, served on the reservation's own port, released,
expired, queued, and surviving (or rather, not surviving) kill -9 and restarts.

Also: validation of reservation requests, hosted-model reservations, and models registered
at run time coming back after a restart.
"""
import json
import os
import signal
import time
import unittest

from tests.integration.harness import (REPO_ROOT, Daemon, FakeUpstream, chat_body, http_request, port_accepts,
                                       port_refuses)

RUNTIME = "/usr/bin/python3 %s/tests/fakes/openai_upstream.py --port {port}" % REPO_ROOT


def compute_toml(cpu_slots=2, extra=""):
    return """
[compute]
poll_interval = "100ms"
queue_recheck = "300ms"
reconcile_interval = "1s"
local_cpu_slots = %d
%s

[runtimes.echo]
command = "%s"
health_path = "/v1/models"
""" % (cpu_slots, extra, RUNTIME)


def reserve(d, body):
    return http_request(d.port, "POST", "/api/v1/compute/reserve", body=body)


def get_res(d, rid):
    r = http_request(d.port, "GET", "/api/v1/compute/reservations/" + rid)
    assert r.status == 200, r
    return r.json()


def wait_status(d, rid, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = get_res(d, rid)
        if last["status"] == want:
            return last
        if last["status"] in ("failed", "expired", "released") and want not in ("failed", "expired", "released"):
            break
        time.sleep(0.1)
    raise AssertionError("reservation %s not %s in %.0fs: %s\nstderr:\n%s"
                         % (rid, want, timeout, json.dumps(last, indent=1), d.stderr_tail()))


def runtime_pid(res):
    inst = res["instances"][0]
    assert inst["provider"] == "local", inst
    return int(inst["id"].split("-", 1)[1])


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


LOCAL_CPU = {"provider": "local", "compute_type": "cpu", "count": 1, "duration": "1h", "runtime": "echo",
             "labels": {"model_name": "tiny"}}


class Validation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra_toml=compute_toml()).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop_and_check()

    def refused(self, body, field):
        r = reserve(self.d, body)
        self.assertEqual(r.status, 400, r)
        msg = r.json()["error"]["message"]
        self.assertIn(field, msg, msg)

    def test_each_bad_field_is_named(self):
        self.refused({"provider": "aws", "gpu_model": "H100"}, "provider")
        self.refused({"provider": "vastai", "compute_type": "fpga", "gpu_model": "H100"}, "compute_type")
        self.refused({"provider": "vastai", "gpu_model": "Z9000"}, "gpu_model")
        self.refused({"provider": "vastai", "gpu_model": "H100", "count": 0}, "count")
        self.refused({"provider": "vastai", "gpu_model": "H100", "count": 101}, "count")
        self.refused({"provider": "vastai", "gpu_model": "H100", "count": "two"}, "count")
        self.refused({"provider": "vastai", "gpu_model": "H100", "duration": "soon"}, "duration")
        self.refused({"provider": "vastai", "gpu_model": "H100", "runtime": "nope"}, "runtime")
        self.refused({"provider": "vastai", "gpu_model": "H100", "max_cost_per_hr": -1}, "max_cost_per_hr")
        self.refused({"provider": "vastai", "gpu_model": "H100", "fallback_providers": ["mars"]}, "fallback_providers")
        self.refused({"provider": "vastai", "gpu_model": "H100", "colour": "blue"}, "colour")
        self.refused({"provider": "gcp_tpu", "compute_type": "tpu"}, "tpu_type")
        self.refused({"provider": "vastai", "compute_type": "gpu"}, "gpu_model")

    def test_not_json(self):
        r = http_request(self.d.port, "POST", "/api/v1/compute/reserve", body=b"{nope",
                         headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400)

    def test_unknown_reservation(self):
        r = http_request(self.d.port, "GET", "/api/v1/compute/reservations/res-0000")
        self.assertEqual(r.status, 404)
        r = http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/res-0000")
        self.assertEqual(r.status, 404)


class LocalLifecycle(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(extra_toml=compute_toml(cpu_slots=2)).start()

    def tearDown(self):
        self.d.stop_and_check()

    def test_reserve_serve_release(self):
        r = reserve(self.d, LOCAL_CPU)
        self.assertEqual(r.status, 201, r)
        body = r.json()
        rid = body["reservation_id"]
        self.assertTrue(rid.startswith("res-"))
        self.assertIn(body["status"], ("provisioning", "active"))
        res = wait_status(self.d, rid, "active")
        lo, hi = self.d.custom_range
        self.assertTrue(lo <= res["port"] <= hi, res)
        self.assertEqual(res["endpoint"], "http://127.0.0.1:%d/v1" % res["port"])
        self.assertEqual(res["provider"], "local")
        self.assertTrue(res["expires_at"].endswith("Z"))
        self.assertTrue(res["selection"]["reason"])
        pid = runtime_pid(res)
        self.assertTrue(pid_alive(pid))

        # Traffic through the reservation's port, and by name on the main port.
        c = http_request(res["port"], "POST", "/v1/chat/completions", body=chat_body("hi there"))
        self.assertEqual(c.status, 200, c)
        self.assertEqual(c.json()["choices"][0]["message"]["content"], "echo: hi there")
        c = http_request(self.d.port, "POST", "/v1/chat/completions", body=chat_body("by name", model="tiny"))
        self.assertEqual(c.status, 200, c)

        lst = http_request(self.d.port, "GET", "/api/v1/compute/reservations").json()
        self.assertIn(rid, [x["reservation_id"] for x in lst["reservations"]])
        active = http_request(self.d.port, "GET", "/api/v1/compute/reservations?status=active").json()
        self.assertEqual([x["reservation_id"] for x in active["reservations"]], [rid])

        m = http_request(self.d.port, "GET", "/metrics").text
        self.assertIn('gpuproxyd_cost_per_hour_dollars{provider="local"}', m)
        self.assertIn("gpuproxyd_reservation_queue_depth 0", m)

        r = http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + rid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "released")
        self.assertTrue(port_refuses(res["port"], within=3.0),
                        "port %d still accepts after release\n%s" % (res["port"], self.d.stderr_tail()))
        self.assertTrue(wait_dead(pid), "the runtime outlived its reservation\n" + self.d.stderr_tail())
        self.assertEqual(get_res(self.d, rid)["status"], "released")
        r = http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + rid)
        self.assertEqual(r.status, 409)

    def test_queue_when_full_then_placed(self):
        a = reserve(self.d, dict(LOCAL_CPU, count=2, labels={})).json()
        wait_status(self.d, a["reservation_id"], "active")
        b = reserve(self.d, dict(LOCAL_CPU, labels={})).json()
        res = wait_status(self.d, b["reservation_id"], "queued")
        self.assertEqual(res["queue_position"], 1)
        self.assertTrue(res["attempts"], res)
        self.assertIn("capacity", res["message"])
        m = http_request(self.d.port, "GET", "/metrics").text
        self.assertIn("gpuproxyd_reservation_queue_depth 1", m)
        http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + a["reservation_id"])
        wait_status(self.d, b["reservation_id"], "active")
        http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + b["reservation_id"])

    def test_delete_cancels_queued(self):
        a = reserve(self.d, dict(LOCAL_CPU, count=2, labels={})).json()
        wait_status(self.d, a["reservation_id"], "active")
        b = reserve(self.d, dict(LOCAL_CPU, labels={})).json()
        wait_status(self.d, b["reservation_id"], "queued")
        r = http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + b["reservation_id"])
        self.assertEqual(r.json()["status"], "released")
        http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + a["reservation_id"])

    def test_expiry_and_extend(self):
        res = reserve(self.d, dict(LOCAL_CPU, duration="3s", labels={})).json()
        rid = res["reservation_id"]
        res = wait_status(self.d, rid, "active")
        pid, port = runtime_pid(res), res["port"]
        ext = http_request(self.d.port, "POST", "/api/v1/compute/reservations/%s/extend" % rid,
                           body={"duration": "2s"})
        self.assertEqual(ext.status, 200, ext)
        self.assertEqual(ext.json()["duration_seconds"], 5)
        bad = http_request(self.d.port, "POST", "/api/v1/compute/reservations/%s/extend" % rid,
                           body={"duration": "later"})
        self.assertEqual(bad.status, 400)
        self.assertIn("duration", bad.json()["error"]["message"])
        res = wait_status(self.d, rid, "expired", timeout=10)
        self.assertIsNone(res["port"])
        self.assertTrue(port_refuses(port, within=2.0), "the expired reservation's port still accepts")
        self.assertTrue(wait_dead(pid), "the runtime outlived its expired reservation")

    def test_runtime_that_dies_fails_over_then_queues(self):
        d2 = None
        try:
            d2 = Daemon(extra_toml=compute_toml(extra="").replace(RUNTIME, "/bin/false {port}")).start()
            res = reserve(d2, dict(LOCAL_CPU, labels={})).json()
            res = wait_status(d2, res["reservation_id"], "queued", timeout=15)
            outcomes = [a["outcome"] for a in res["attempts"]]
            self.assertIn("instance_failed", outcomes, res)
        finally:
            if d2:
                d2.stop_and_check()


class HostedReservation(unittest.TestCase):
    def test_openrouter_reservation_gets_a_hosted_port(self):
        up = FakeUpstream()
        d = Daemon(extra_toml=compute_toml(), env={"OPENROUTER_API_KEY": "sk-or-test",
                                                   "OPENROUTER_BASE_URL": up.url("/api/v1")}).start()
        try:
            r = reserve(d, {"provider": "openrouter", "labels": {"model_name": "anthropic/claude-3-opus"}})
            self.assertEqual(r.status, 201, r)
            res = r.json()
            self.assertEqual(res["status"], "active", res)
            lo, hi = d.hosted_range
            self.assertTrue(lo <= res["port"] <= hi, res)
            c = http_request(res["port"], "POST", "/v1/chat/completions", body=chat_body("hosted"))
            self.assertEqual(c.status, 200, c)
            self.assertEqual(c.json()["model"], "anthropic/claude-3-opus")
            http_request(d.port, "DELETE", "/api/v1/compute/reservations/" + res["reservation_id"])
            self.assertTrue(port_refuses(res["port"], within=2.0))
        finally:
            d.stop_and_check()
            up.stop()


class Restarts(unittest.TestCase):
    def test_kill_9_takes_the_runtime_along_and_restart_restores(self):
        d = Daemon(extra_toml=compute_toml()).start()
        res = reserve(d, LOCAL_CPU).json()
        res = wait_status(d, res["reservation_id"], "active")
        pid, port = runtime_pid(res), res["port"]
        d.kill()  # SIGKILL
        self.assertTrue(wait_dead(pid, 5), "the runtime outlived a kill -9 of the daemon")
        d.killed = False
        d.start()
        try:
            again = wait_status(d, res["reservation_id"], "active", timeout=20)
            self.assertEqual(again["port"], port, "the reservation came back on another port")
            c = http_request(port, "POST", "/v1/chat/completions", body=chat_body("after restart"))
            self.assertEqual(c.status, 200, c)
            http_request(d.port, "DELETE", "/api/v1/compute/reservations/" + res["reservation_id"])
        finally:
            d.stop_and_check()

    def test_registered_models_come_back_on_their_ports(self):
        up = FakeUpstream()
        d = Daemon(extra_toml=compute_toml()).start()
        try:
            r = http_request(d.port, "POST", "/api/v1/models", body={"name": "kept", "upstream_url": up.url()})
            self.assertEqual(r.status, 201, r)
            port = r.json()["port"]
            d.stop_and_check()
            d.start()
            models = http_request(d.port, "GET", "/api/v1/models").json()["models"]
            kept = [m for m in models if m["name"] == "kept"]
            self.assertEqual(len(kept), 1, models)
            self.assertEqual(kept[0]["port"], port)
            self.assertTrue(port_accepts(port))
            c = http_request(port, "POST", "/v1/chat/completions", body=chat_body("persisted"))
            self.assertEqual(c.status, 200, c)
            http_request(d.port, "DELETE", "/api/v1/models/kept")
            d.stop_and_check()
            d.start()
            models = http_request(d.port, "GET", "/api/v1/models").json()["models"]
            self.assertNotIn("kept", [m["name"] for m in models])
        finally:
            d.stop_and_check()
            up.stop()


if __name__ == "__main__":
    unittest.main()


class CLI(unittest.TestCase):
    """gpuproxyctl reserve|list|show|extend|release against the real daemon."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra_toml=compute_toml()).start()
        cls.ctl = str(REPO_ROOT / os.path.dirname(os.environ.get("GPUPROXYD_BIN", "build/gpuproxyd")) / "gpuproxyctl")

    @classmethod
    def tearDownClass(cls):
        cls.d.stop_and_check()

    def run_ctl(self, *args, check=True):
        import subprocess
        p = subprocess.run([self.ctl, "--url", "http://127.0.0.1:%d" % self.d.port] + list(args),
                           capture_output=True, text=True, timeout=60)
        if check:
            self.assertEqual(p.returncode, 0, "gpuproxyctl %s: %s %s" % (args, p.stdout, p.stderr))
        return p

    def test_reserve_list_show_extend_release(self):
        p = self.run_ctl("reserve", "--provider", "local", "--compute", "cpu", "--duration", "1h",
                         "--runtime", "echo", "--model", "cli-model")
        self.assertIn("status       active", p.stdout)
        rid = [l.split()[1] for l in p.stdout.splitlines() if l.startswith("reservation")][0]
        self.assertIn(rid, self.run_ctl("list").stdout)
        js = json.loads(self.run_ctl("--json", "show", rid).stdout)
        self.assertEqual(js["status"], "active")
        self.assertIn("endpoint", self.run_ctl("show", rid).stdout)
        ext = json.loads(self.run_ctl("--json", "extend", rid, "30m").stdout)
        self.assertEqual(ext["duration_seconds"], 3600 + 1800)
        rel = json.loads(self.run_ctl("--json", "release", rid).stdout)
        self.assertEqual(rel["status"], "released")

    def test_refusals_name_the_field_and_fail(self):
        p = self.run_ctl("reserve", "--provider", "local", "--compute", "cpu", "--duration", "whenever", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("duration", p.stderr)
        p = self.run_ctl("show", "res-nope", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("404", p.stderr)
