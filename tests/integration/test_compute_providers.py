"""The compute broker against fakes of the Vast.ai, IO.net and GCP TPU APIs (tests/fakes/), which
follow the real APIs' shapes and awkward parts: every failure mode ends in a clear state, and
nothing the daemon created is left running.
"""
import os
import time
import unittest

from tests.fakes.fakelib import spawn_fake
from tests.integration.harness import REPO_ROOT, Daemon, chat_body, http_request, port_refuses
from tests.integration.test_compute_local import get_res, reserve, wait_status

FAKES = REPO_ROOT / "tests" / "fakes"


def compute_toml(extra=""):
    return """
[compute]
poll_interval = "100ms"
queue_recheck = "300ms"
reconcile_interval = "500ms"
capacity_cooldown = "1s"
provisioning_timeout = "30s"
local_cpu_slots = 0
%s

[runtimes.vllm]
image = "vllm/vllm-openai:latest"
port = 8000
health_path = "/health"
args = "--model {model}"
""" % extra


class Providers(unittest.TestCase):
    """One set of fakes per test class; a fresh daemon per test."""

    @classmethod
    def setUpClass(cls):
        cls.vast = spawn_fake(FAKES / "vastai.py", "--boot-seconds", "0.3")
        cls.ionet = spawn_fake(FAKES / "ionet.py", "--boot-seconds", "0.3")
        cls.tpu = spawn_fake(FAKES / "gcp_tpu.py", "--boot-seconds", "0.3")

    @classmethod
    def tearDownClass(cls):
        for f in (cls.vast, cls.ionet, cls.tpu):
            f.stop()

    def setUp(self):
        for f in (self.vast, self.ionet, self.tpu):
            self.assertEqual(f.call("POST", "/_fake/reset").status, 200)
        self.d = None

    def tearDown(self):
        if self.d:
            self.d.stop_and_check()
        # Nothing the daemon created may still run at the providers.
        for name, f in (("vastai", self.vast), ("ionet", self.ionet), ("gcp_tpu", self.tpu)):
            live = self.live_instances(f)
            self.assertEqual(live, [], "%s instances left running: %s" % (name, live))

    def daemon(self, extra_toml="", env=None, start=True):
        e = {
            "VASTAI_BASE_URL": self.vast.base + "/api/v0", "VASTAI_API_KEY": "test-vast-key",
            "IONET_BASE_URL": self.ionet.base + "/enterprise/v1/io-cloud", "IONET_API_KEY": "test-ionet-key",
            "GCP_TPU_BASE_URL": self.tpu.base + "/v2", "GCP_ACCESS_TOKEN": "test-gcp-token",
            "GCP_PROJECT": "test-project", "GCP_ZONE": "us-west4-a",
        }
        e.update(env or {})
        self.d = Daemon(extra_toml=compute_toml(extra_toml), env=e)
        if start:
            self.d.start()
        return self.d

    def live_instances(self, fake, wait=3.0):
        """Instances of the fake not destroyed (given the daemon a moment to finish destroying)."""
        deadline = time.monotonic() + wait
        while True:
            st = fake.call("GET", "/_fake/state").json()
            live = [i.get("id") for i in st["instances"] if not i.get("destroyed")]
            if not live or time.monotonic() > deadline:
                return live
            time.sleep(0.1)

    def set(self, fake, **settings):
        r = fake.call("POST", "/_fake/config", settings)
        self.assertEqual(r.status, 200, r)

    def calls(self, fake, method=None):
        return [c for c in fake.call("GET", "/_fake/calls").json() if method is None or c["method"] == method]

    def release(self, rid):
        r = http_request(self.d.port, "DELETE", "/api/v1/compute/reservations/" + rid)
        self.assertIn(r.status, (200, 409), r)

    # ---- happy paths ----

    def test_vastai_reserve_serve_release(self):
        d = self.daemon()
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "2h", "runtime": "vllm",
                        "labels": {"model_name": "llama"}})
        self.assertEqual(r.status, 201, r)
        rid = r.json()["reservation_id"]
        res = wait_status(d, rid, "active")
        self.assertEqual(res["provider"], "vastai")
        self.assertGreater(res["cost_per_hr"], 0)
        inst = res["instances"][0]
        self.assertTrue(inst["endpoint"].startswith("http://127.0.0.1:"), inst)
        c = http_request(res["port"], "POST", "/v1/chat/completions", body=chat_body("on vast"))
        self.assertEqual(c.status, 200, c)
        # The instance carries the reservation's label.
        puts = self.calls(self.vast, "PUT")
        self.assertTrue(any(rid.lower() in str(p["body"]).lower() for p in puts), puts)
        m = http_request(d.port, "GET", "/metrics").text
        self.assertIn("gpuproxyd_active_gpus 1", m)
        self.release(rid)
        self.assertTrue(port_refuses(res["port"], within=2.0))
        self.assertEqual(self.live_instances(self.vast), [])

    def test_ionet_reserve(self):
        d = self.daemon()
        r = reserve(d, {"provider": "ionet", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        rid = r.json()["reservation_id"]
        res = wait_status(d, rid, "active")
        self.assertEqual(res["provider"], "ionet")
        c = http_request(res["port"], "POST", "/v1/chat/completions", body=chat_body("on ionet"))
        self.assertEqual(c.status, 200, c)
        ext = http_request(d.port, "POST", "/api/v1/compute/reservations/%s/extend" % rid, body={"duration": "1h"})
        self.assertEqual(ext.status, 200, ext)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not [c for c in self.calls(self.ionet, "POST") if c["path"].endswith("/extend")]:
            time.sleep(0.1)
        self.assertTrue([c for c in self.calls(self.ionet, "POST") if c["path"].endswith("/extend")],
                        "IO.net is prepaid: an extension must reach it")
        self.release(rid)

    def test_gcp_tpu_reserve(self):
        d = self.daemon()
        r = reserve(d, {"provider": "gcp_tpu", "compute_type": "tpu", "tpu_type": "v5litepod-8", "count": 8,
                        "duration": "1h", "runtime": "vllm"})
        self.assertEqual(r.status, 201, r)
        rid = r.json()["reservation_id"]
        res = wait_status(d, rid, "active")
        self.assertEqual(res["provider"], "gcp_tpu")
        m = http_request(d.port, "GET", "/metrics").text
        self.assertIn("gpuproxyd_active_tpus 8", m)
        c = http_request(res["port"], "POST", "/v1/chat/completions", body=chat_body("on a tpu"))
        self.assertEqual(c.status, 200, c)
        self.release(rid)

    def test_gcp_service_account_key_is_exchanged_for_a_token(self):
        import json as _json
        import subprocess
        import sys
        sys.path.insert(0, str(FAKES))
        import gcp_tpu  # the fake's helpers: a service-account key file
        d = self.daemon(start=False)
        key_path = os.path.join(d.dir, "sa.json")
        key = gcp_tpu.make_sa_key(key_path, self.tpu.base + "/token")
        pub = subprocess.run(["openssl", "pkey", "-pubout"], input=key["private_key"].encode(),
                             capture_output=True, check=True).stdout.decode()
        self.set(self.tpu, sa_public_key=pub, require_signature=True)
        d.extra_env.pop("GCP_ACCESS_TOKEN", None)
        d.extra_env["GOOGLE_APPLICATION_CREDENTIALS"] = key_path
        d.start()
        r = reserve(d, {"provider": "gcp_tpu", "compute_type": "tpu", "tpu_type": "v5litepod-8", "count": 8,
                        "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active")
        token_calls = [c for c in self.calls(self.tpu, "POST") if c["path"].endswith("/token")]
        self.assertTrue(token_calls, "no token exchange happened")
        self.assertEqual(_json.dumps(key).count("PRIVATE KEY") > 0, True)
        self.assertNotIn(key["private_key"].splitlines()[1], d.stderr_text(), "key material in the log")
        self.release(res["reservation_id"])

    def test_seed_example_two_h100s_for_two_hours(self):
        d = self.daemon()
        r = reserve(d, {"provider": "auto", "compute_type": "gpu", "gpu_model": "H100", "count": 2,
                        "duration": "2h"})
        self.assertEqual(r.status, 201, r)
        res = wait_status(d, r.json()["reservation_id"], "active")
        self.assertEqual(res["count"], 2)
        self.assertEqual(res["runtime"], "vllm")  # the first configured runtime when none is named
        self.assertTrue(res["endpoint"].startswith("http://127.0.0.1:"), res)
        m = http_request(d.port, "GET", "/metrics").text
        self.assertIn("gpuproxyd_active_gpus 2", m)
        self.release(res["reservation_id"])

    def test_provider_5xx_are_retried(self):
        d = self.daemon()
        self.set(self.ionet, fail_next=2)
        r = reserve(d, {"provider": "ionet", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active", timeout=20)
        self.release(res["reservation_id"])

    def test_auto_picks_by_price_and_says_why(self):
        d = self.daemon()
        r = reserve(d, {"provider": "auto", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active")
        self.assertEqual(res["provider"], "vastai", res)  # $1.95 on Vast vs $2.60 on IO.net
        self.assertIn("vastai", res["selection"]["reason"])
        self.release(res["reservation_id"])

    def test_max_cost_is_respected(self):
        d = self.daemon()
        r = reserve(d, {"provider": "auto", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm",
                        "max_cost_per_hr": 1.0})
        res = wait_status(d, r.json()["reservation_id"], "queued")
        self.assertIn("max_cost_per_hr", res["message"])
        self.release(res["reservation_id"])

    # ---- failures ----

    def test_no_capacity_fails_over_to_the_fallback(self):
        d = self.daemon()
        self.set(self.vast, no_capacity=True)
        r = reserve(d, {"provider": "vastai", "fallback_providers": ["ionet"], "gpu_model": "H100", "count": 1,
                        "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active")
        self.assertEqual(res["provider"], "ionet")
        outcomes = [(a["provider"], a["outcome"]) for a in res["attempts"]]
        self.assertIn(("vastai", "no_capacity"), outcomes)
        self.release(res["reservation_id"])

    def test_everything_full_queues_then_places_when_capacity_appears(self):
        d = self.daemon()
        self.set(self.vast, no_capacity=True)
        self.set(self.ionet, no_capacity=True)
        r = reserve(d, {"provider": "vastai", "enable_hybrid": True, "gpu_model": "H100", "count": 1,
                        "duration": "1h", "runtime": "vllm"})
        rid = r.json()["reservation_id"]
        res = wait_status(d, rid, "queued")
        self.assertEqual(res["queue_position"], 1)
        self.assertIn("capacity", res["message"])
        self.set(self.ionet, no_capacity=False)
        res = wait_status(d, rid, "active", timeout=15)
        self.assertEqual(res["provider"], "ionet")
        self.release(rid)

    def test_stopped_bid_leak_is_destroyed(self):
        d = self.daemon()
        self.set(self.vast, stopped_bid_leak=True)
        r = reserve(d, {"provider": "vastai", "fallback_providers": ["ionet"], "gpu_model": "H100", "count": 1,
                        "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active")
        self.assertEqual(res["provider"], "ionet")
        self.assertIn("failed_leftover_destroyed", [a["outcome"] for a in res["attempts"]])
        self.assertEqual(self.live_instances(self.vast), [], "the stopped bid instance leaked")
        self.release(res["reservation_id"])

    def test_image_failure_fails_fast_and_over(self):
        d = self.daemon()
        self.set(self.vast, image_fails=True)
        r = reserve(d, {"provider": "vastai", "fallback_providers": ["ionet"], "gpu_model": "H100", "count": 1,
                        "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active", timeout=20)
        self.assertEqual(res["provider"], "ionet")
        self.assertIn("instance_failed", [a["outcome"] for a in res["attempts"]])
        self.release(res["reservation_id"])

    def test_provisioning_that_never_finishes_hits_the_deadline(self):
        d = self.daemon(start=False)
        d.extra_toml = compute_toml().replace('provisioning_timeout = "30s"', 'provisioning_timeout = "2s"')
        d.write_config()
        d.start()
        self.set(self.vast, stuck=True)
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "failed", timeout=15)
        self.assertIn("deadline", res["message"])

    def test_preempted_instance_fails_the_reservation(self):
        d = self.daemon()
        self.set(self.vast, preempt_after_seconds=1.0)
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        rid = r.json()["reservation_id"]
        port = wait_status(d, rid, "active")["port"]
        res = wait_status(d, rid, "failed", timeout=15)
        self.assertIn("preempt", res["message"])
        self.assertIsNone(res["port"])
        self.assertTrue(port_refuses(port, within=2.0), "the failed reservation's port still accepts")

    def test_rate_limits_are_ridden_out(self):
        d = self.daemon()
        self.set(self.vast, rate_limit_next=3)
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        res = wait_status(d, r.json()["reservation_id"], "active", timeout=20)
        self.release(res["reservation_id"])

    def test_destroy_not_found_counts_as_destroyed(self):
        d = self.daemon()
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        rid = r.json()["reservation_id"]
        wait_status(d, rid, "active")
        self.set(self.vast, destroy_not_found=True)
        self.release(rid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            insts = get_res(d, rid)["instances"]
            if not insts or insts[0]["status"] == "destroyed":
                break
            time.sleep(0.1)
        self.assertEqual(get_res(d, rid)["status"], "released")

    # ---- limits ----

    def test_max_gpus_queues_what_does_not_fit(self):
        d = self.daemon(env={"MAX_GPUS": "1"})
        a = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"}).json()
        wait_status(d, a["reservation_id"], "active")
        b = reserve(d, {"provider": "ionet", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"}).json()
        res = wait_status(d, b["reservation_id"], "queued")
        self.assertIn("MAX_GPUS", res["message"])
        self.release(a["reservation_id"])
        wait_status(d, b["reservation_id"], "active", timeout=15)
        self.release(b["reservation_id"])

    def test_per_provider_limit(self):
        d = self.daemon(env={"MAX_VASTAI_GPUS": "0"})
        r = reserve(d, {"provider": "vastai", "fallback_providers": ["ionet"], "gpu_model": "H100", "count": 1,
                        "duration": "1h", "runtime": "vllm"}).json()
        res = wait_status(d, r["reservation_id"], "active")
        self.assertEqual(res["provider"], "ionet")
        self.assertIn("over_limit", [a["outcome"] for a in res["attempts"]])
        self.release(r["reservation_id"])

    # ---- crashes and reconciliation ----

    def test_orphans_with_our_label_are_destroyed(self):
        self.set(self.vast, list_extra=[{"label": "gpd-res-deadbeefdeadbeef", "gpu_name": "H100 SXM"},
                                        {"label": "someone-elses", "gpu_name": "H100 SXM"}])
        d = self.daemon()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            deletes = self.calls(self.vast, "DELETE")
            if deletes:
                break
            time.sleep(0.1)
        st = self.vast.call("GET", "/_fake/state").json()["instances"]
        ours = [i for i in st if i.get("label") == "gpd-res-deadbeefdeadbeef"]
        theirs = [i for i in st if i.get("label") == "someone-elses"]
        self.assertTrue(ours and ours[0]["destroyed"], st)
        self.assertTrue(theirs and not theirs[0]["destroyed"], "an instance that is not ours was touched")
        d.stop_and_check()
        self.d = None
        # Clean up the foreign one ourselves, so that tearDown's leak check holds.
        self.vast.call("DELETE", "/api/v0/instances/%s/" % theirs[0]["id"], body={},
                       headers={"Authorization": "Bearer test-vast-key"})

    def test_kill_9_then_restart_keeps_active_and_loses_nothing(self):
        d = self.daemon()
        r = reserve(d, {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        rid = r.json()["reservation_id"]
        res = wait_status(d, rid, "active")
        port = res["port"]
        # And one still provisioning at the moment of the crash (its instance boots slowly).
        self.set(self.ionet, boot_seconds=4)
        r2 = reserve(d, {"provider": "ionet", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"})
        rid2 = r2.json()["reservation_id"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not get_res(d, rid2)["instances"]:
            time.sleep(0.05)
        d.kill()
        d.killed = False
        d.start()
        again = wait_status(d, rid, "active", timeout=10)
        self.assertEqual(again["port"], port)
        c = http_request(port, "POST", "/v1/chat/completions", body=chat_body("after a crash"))
        self.assertEqual(c.status, 200, c)
        # The provisioning one is either resumed or re-placed; either way it ends active and
        # no second instance is left behind.
        wait_status(d, rid2, "active", timeout=20)
        self.release(rid)
        self.release(rid2)


if __name__ == "__main__":
    unittest.main()
