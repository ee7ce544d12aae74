"""Two gpuproxyd instances sharing one PostgreSQL store: capacity limits hold across both, each
drives its own reservations, and neither's reconciliation destroys the other's instances.

Needs GPD_TEST_POSTGRES_URL (scripts/test.sh starts a throwaway server with scripts/pg_temp.sh).
"""
import os
import subprocess
import time
import unittest
import uuid
from urllib.parse import urlsplit, urlunsplit

from tests.fakes.fakelib import spawn_fake
from tests.integration.harness import Daemon, http_request
from tests.integration.test_compute_local import get_res, reserve, wait_status
from tests.integration.test_compute_providers import FAKES, compute_toml

PG_URL = os.environ.get("GPD_TEST_POSTGRES_URL")


def make_database(url):
    """A fresh database on the test server; returns its URL."""
    name = "gpd_shared_" + uuid.uuid4().hex[:10]
    subprocess.run(["psql", url, "-qc", "CREATE DATABASE %s" % name], check=True, capture_output=True)
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)), name


@unittest.skipUnless(PG_URL, "GPD_TEST_POSTGRES_URL not set (scripts/test.sh sets it)")
class SharedStore(unittest.TestCase):
    def setUp(self):
        self.url, self.dbname = make_database(PG_URL)
        self.vast = spawn_fake(FAKES / "vastai.py", "--boot-seconds", "0.3")
        env = {"VASTAI_BASE_URL": self.vast.base + "/api/v0", "VASTAI_API_KEY": "test-vast-key",
               "GPUPROXYD_STORE": self.url, "MAX_GPUS": "1"}
        self.a = Daemon(extra_toml=compute_toml(), env=env).start()
        # Each instance has its own port ranges: SO_REUSEPORT would let a second process share a
        # port the first one serves, which is right for replicas of one endpoint table and wrong
        # for two different tables (serving one table from several instances comes later).
        self.b = Daemon(extra_toml=compute_toml(), env=env).start()

    def tearDown(self):
        problems = self.a.stop() + self.b.stop()
        st = self.vast.call("GET", "/_fake/state").json()
        live = [i["id"] for i in st["instances"] if not i.get("destroyed")]
        self.vast.stop()
        subprocess.run(["psql", PG_URL, "-qc", "DROP DATABASE IF EXISTS %s" % self.dbname], capture_output=True)
        self.assertEqual(problems, [])
        self.assertEqual(live, [], "instances left running")

    def test_limits_hold_across_instances_and_nobody_destroys_the_other(self):
        body = {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "1h", "runtime": "vllm"}
        ra = reserve(self.a, body).json()["reservation_id"]
        res_a = wait_status(self.a, ra, "active")
        rb = reserve(self.b, body).json()["reservation_id"]
        res_b = wait_status(self.b, rb, "queued")
        self.assertIn("MAX_GPUS", res_b["message"])
        # Several reconciliations pass on both: A's instance must survive B's.
        time.sleep(2.0)
        self.assertEqual(get_res(self.a, ra)["status"], "active")
        st = self.vast.call("GET", "/_fake/state").json()
        self.assertEqual([i["destroyed"] for i in st["instances"]], [False], st)
        # Either instance sees both reservations (the store is shared).
        ids = [x["reservation_id"] for x in http_request(self.b.port, "GET", "/api/v1/compute/reservations").json()["reservations"]]
        self.assertIn(ra, ids)
        self.assertIn(rb, ids)
        # Capacity freed on A reaches B's queue.
        http_request(self.a.port, "DELETE", "/api/v1/compute/reservations/" + ra)
        wait_status(self.b, rb, "active", timeout=15)
        self.assertEqual(http_request(self.a.port, "GET", "/metrics").status, 200)
        http_request(self.b.port, "DELETE", "/api/v1/compute/reservations/" + rb)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = self.vast.call("GET", "/_fake/state").json()
            if all(i.get("destroyed") for i in st["instances"]):
                break
            time.sleep(0.1)


if __name__ == "__main__":
    unittest.main()
