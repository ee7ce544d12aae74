#!/usr/bin/python3
"""The data plane's throughput while the broker holds many reservations.

gpuproxyd in front of a static nginx upstream (as in bench/proxy.sh), with the
compute broker pointed at the Vast.ai and GCP TPU fakes (tests/fakes/).  Steps:

  1. baseline: wrk -t2 -c32 on the model port, ROUNDS runs (median req/s);
  2. reserve GPUS one-GPU H100s on Vast and TPUS v5litepod-1 TPUs, in batches
     of BATCH (each batch waits until all of it is active or queued), then
     until every reservation is active (polling ?status=active every 1 s),
     at most RESERVE_TIMEOUT seconds;
  3. loaded: the same wrk runs while the broker holds them all;
  4. release everything (DELETE, in batches) and wait for the fakes to report
     no live instance (at most RELEASE_TIMEOUT seconds).

The fakes are Python processes on this machine, and each instance they hold
runs a runtime thread that wakes every 50 ms: 1,200 of them take more than a
core.  So the fakes are stopped (SIGSTOP, SIGCONT after) during each wrk run
of 1 and 3, which then measure the daemon alone; with ALSO_RUNNING=1 (the
default) 3 is repeated with the fakes running, to show what they take.

Prints a Markdown table; exits 1 when instances were left at the fakes or the
daemon died, 2 when a tool or the binary is missing.

  /usr/bin/python3 bench/broker.py                   # from the repo root
  DURATION=3 ROUNDS=1 GPUS=100 TPUS=20 /usr/bin/python3 bench/broker.py

Env: DURATION (per wrk run, 10s), ROUNDS (3), WARMUP (1s), GPUS (1000),
TPUS (200), OFFERS (Vast offers, GPUS + 100), BATCH (25), RESERVE_TIMEOUT
(900 s), RELEASE_TIMEOUT (120 s), BOOT_SECONDS (fake boot time, 0.3),
PORT_BASE (first port of the custom range; default: the first free range
from 20000 up, below the ephemeral ports), GPUPROXYD_BIN (build/gpuproxyd),
ALSO_RUNNING (1; 0 skips the runs with the fakes running), SETTLE (seconds
to keep sampling the daemon's RSS and fds after release, 0), OUT_JSON (raw
results), KEEP_TMP=1 (keep the temp dir with configs and logs).
"""

import atexit
import concurrent.futures
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
FAKES = os.path.join(REPO, "tests", "fakes")
sys.path.insert(0, FAKES)
import fakelib  # noqa: E402

HOST = "127.0.0.1"
CHAT_BODY = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
CHAT_PATH = "/v1/chat/completions"
GPU_REQ = {"provider": "vastai", "gpu_model": "H100", "count": 1, "duration": "2h", "runtime": "vllm"}
TPU_REQ = {"provider": "gcp_tpu", "compute_type": "tpu", "tpu_type": "v5litepod-1", "count": 1,
           "duration": "2h", "runtime": "vllm"}
SETTLED = {"active", "queued", "failed", "expired", "released"}
TERMINAL = {"failed", "expired", "released"}
US_STATES = ["Washington, US", "Texas, US", "Oregon, US", "Virginia, US", "California, US",
             "Ohio, US", "Nevada, US", "Georgia, US"]

TMP = None
STARTED = []         # (name, Popen or fakelib.FakeProcess), stopped in reverse order
CHILD = [None]       # the wrk run in progress
PAUSED = set()       # pids stopped (SIGSTOP) for a wrk run
CLEANED = [False]


def log(msg):
    sys.stderr.write("[broker %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def env_int(name, default, lo=0):
    v = os.environ.get(name, "")
    if v == "":
        return default
    if not re.fullmatch(r"[0-9]+", v) or int(v) < lo:
        sys.exit("%s must be an integer >= %d" % (name, lo))
    return int(v)


def env_secs(name, default):
    v = os.environ.get(name, "") or default
    m = re.fullmatch(r"([1-9][0-9]*)s?", v)
    if not m:
        sys.exit("%s must be seconds, like 10 or 10s" % name)
    return int(m.group(1))


# ---------------------------------------------------------------- processes

def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def stop_popen(proc, grace=5.0):
    """TERM, bounded wait, KILL; then KILL its direct children (nginx workers)."""
    if proc.poll() is not None:
        return
    kids = children(proc.pid)
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass


def cleanup(keep=False):
    if CLEANED[0]:
        return
    CLEANED[0] = True
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)   # a second Ctrl-C must not cut the clean-up short
    if CHILD[0] is not None and CHILD[0].poll() is None:
        stop_popen(CHILD[0], 2)
    resume()
    for name, p in reversed(STARTED):
        try:
            if isinstance(p, fakelib.FakeProcess):
                p.stop()
            else:
                stop_popen(p, 10.0 if name == "gpuproxyd" else 5.0)
        except Exception as e:  # keep stopping the others
            log("stopping %s: %r" % (name, e))
    if TMP and os.path.isdir(TMP):
        if keep or os.environ.get("KEEP_TMP") == "1":
            log("configs and logs kept in %s" % TMP)
        else:
            shutil.rmtree(TMP, ignore_errors=True)


def pause(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
            PAUSED.add(pid)
        except OSError:
            pass


def resume():
    for pid in list(PAUSED):
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
        PAUSED.discard(pid)


def on_signal(sig, _frame):
    log("interrupted" if sig == signal.SIGINT else "terminated")
    raise SystemExit(128 + sig)


# ---------------------------------------------------------------- /proc

def proc_stats(pid):
    """RSS (KiB), open fds, threads and CPU seconds (user+sys) of pid, or None."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            st = fh.read()
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = int(re.search(r"^VmRSS:\s+(\d+)", st, re.M).group(1))
    threads = int(re.search(r"^Threads:\s+(\d+)", st, re.M).group(1))
    tck = os.sysconf("SC_CLK_TCK")
    return {"rss_kib": rss, "fds": fds, "threads": threads,
            "cpu_s": (int(f[11]) + int(f[12])) / tck}


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        for p in [pid] + children(pid):
            s = proc_stats(p)
            if s:
                total += s["cpu_s"]
    return total


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def fd_kinds(pid, names=None):
    """What the fds of pid are: {"tcp LISTEN": n, "tcp ESTABLISHED -> vastai": n, "pipe": n, ...}.
    names maps a remote port to a name (the fakes, the upstream); other remote ports are "other"."""
    names = names or {}
    socks = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    rport = int(f[2].rsplit(":", 1)[1], 16)
                    socks[f[9]] = (TCP_STATES.get(f[3], f[3]), rport)
        except OSError:
            pass
    kinds = {}
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            if m.group(1) in socks:
                state, rport = socks[m.group(1)]
                k = "tcp " + state + ("" if state == "LISTEN" else " -> " + names.get(rport, "other"))
            else:
                k = "socket (not tcp)"
        elif target.startswith("pipe:"):
            k = "pipe"
        elif target.startswith("anon_inode:"):
            k = target
        else:
            k = "file"
        kinds[k] = kinds.get(k, 0) + 1
    return dict(sorted(kinds.items()))


def listening_ports(lo, hi):
    """Ports in lo..hi with a TCP socket in LISTEN state (from /proc/net/tcp)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if f[3] == "0A":
                        port = int(f[1].rsplit(":", 1)[1], 16)
                        if lo <= port <= hi:
                            ports.add(port)
        except OSError:
            pass
    return len(ports)


# ---------------------------------------------------------------- ports

def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def range_free(lo, hi):
    for p in range(lo, hi + 1):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_ranges(size, extra):
    """(custom_min, custom_max, openrouter_min, openrouter_max): free ports below the
    ephemeral range (connections there would take ports from under the daemon)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            eph_lo, eph_hi = (int(x) for x in fh.read().split())
    except OSError:
        eph_lo, eph_hi = 32768, 60999
    want = os.environ.get("PORT_BASE")
    bases = [int(want)] if want else list(range(20000, 65535 - size - extra, 1000))
    for base in bases:
        hi = base + size + extra - 1
        if not want and not (hi < eph_lo or base > eph_hi):
            continue
        if hi > 65535:
            continue
        if range_free(base, hi):
            return base, base + size - 1, base + size, hi
        if want:
            sys.exit("PORT_BASE: ports %d-%d are not all free" % (base, hi))
    sys.exit("no free range of %d ports found below the ephemeral range" % (size + extra))


# ---------------------------------------------------------------- HTTP

def call(port, method, path, body=None, timeout=30.0, conn=None):
    """(status, parsed JSON or raw text); (0, error) on a connection failure."""
    try:
        r = fakelib.http_call(port, method, path, body, timeout=timeout, conn=conn)
    except (OSError, http.client.HTTPException) as e:
        return 0, repr(e)
    try:
        return r.status, r.json()
    except ValueError:
        return r.status, r.body.decode("utf-8", "replace")


class Api:
    """The daemon's main port over one keep-alive connection (reopened on failure)."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.last_bytes = 0

    def __call__(self, method, path, body=None, timeout=30.0):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
            try:
                r = fakelib.http_call(self.port, method, path, body, timeout=timeout, conn=self.conn)
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    return 0, repr(e)
                continue
            self.last_bytes = len(r.body)
            try:
                return r.status, r.json()
            except ValueError:
                return r.status, r.body.decode("utf-8", "replace")
        return 0, "unreachable"

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def metric(text, name):
    m = re.search(r"^%s(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------- wrk

UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    return round(float(m.group(1)) * UNIT[m.group(2)], 2) if m else None


def parse_wrk(text, rc):
    r = {"rps": None, "lat_mean_us": None, "lat_p99_us": None, "requests": None,
         "non2xx": 0, "socket_errors": 0, "errors": []}
    if m := re.search(r"Requests/sec:\s*([0-9.]+)", text):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s*Latency\s+(\S+)", text, re.M):
        r["lat_mean_us"] = to_us(m.group(1))
    if m := re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", text, re.M):
        r["lat_p99_us"] = to_us(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        r["non2xx"] = int(m.group(1))
        r["errors"].append("%d non-2xx responses" % r["non2xx"])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r["socket_errors"] = sum(int(x) for x in m.groups())
        if r["socket_errors"]:
            r["errors"].append(m.group(0))
    if not r["requests"]:
        r["errors"].append("no requests completed")
    if r["rps"] is None:
        r["errors"].append("could not parse wrk output")
    if rc != 0:
        r["errors"].append("wrk exit status %d" % rc)
    r["valid"] = not r["errors"]
    return r


def run_wrk(port, secs, tag, watch, paused):
    """One wrk -t2 -c32 run, with the processes `paused` stopped meanwhile; also the CPU share
    each watched process group used."""
    out = os.path.join(TMP, "res", "%s.txt" % tag)
    cmd = ["wrk", "-t2", "-c32", "-d%ds" % secs, "--latency", "-s",
           os.path.join(BENCH_DIR, "conf", "chat.lua"), "http://%s:%d%s" % (HOST, port, CHAT_PATH)]
    before = {k: cpu_seconds(v) for k, v in watch.items()}
    pause(paused)
    t0 = time.monotonic()
    try:
        with open(out, "w") as fh:
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            CHILD[0] = p
            try:
                rc = p.wait(secs + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            CHILD[0] = None
        wall = time.monotonic() - t0
    finally:
        resume()
    with open(out) as fh:
        r = parse_wrk(fh.read(), rc)
    r["cpu_pct"] = {k: round(100 * (cpu_seconds(v) - before[k]) / wall, 1) for k, v in watch.items()}
    r["file"] = os.path.basename(out)
    return r


def measure(label, port, rounds, secs, warmup, watch, paused):
    run_wrk(port, warmup, "%s_warmup" % label, watch, paused)
    runs = []
    for i in range(1, rounds + 1):
        time.sleep(0.5)   # let what the pause held up go through
        r = run_wrk(port, secs, "%s_r%d" % (label, i), watch, paused)
        log("%s round %d/%d: %s req/s%s; CPU %% %s" % (
            label, i, rounds, "n/a" if r["rps"] is None else "%.0f" % r["rps"],
            "" if r["valid"] else " INVALID (%s)" % "; ".join(r["errors"]),
            ", ".join("%s %.0f" % kv for kv in r["cpu_pct"].items())))
        runs.append(r)
    rps = [r["rps"] for r in runs if r["rps"] is not None]
    p99 = [r["lat_p99_us"] for r in runs if r["lat_p99_us"] is not None]
    return {"runs": runs, "rps": statistics.median(rps) if rps else None,
            "p99_us": statistics.median(p99) if p99 else None,
            "valid": all(r["valid"] for r in runs),
            "cpu_pct": {k: statistics.median([r["cpu_pct"][k] for r in runs]) for k in watch}}


# ---------------------------------------------------------------- starting things

def start_upstream():
    port = free_ports(1)[0]
    with open(os.path.join(BENCH_DIR, "conf", "nginx-upstream.conf.in")) as fh:
        conf = fh.read()
    user_line = "user root;" if os.getuid() == 0 else ""
    for k, v in (("DIR", TMP), ("PORT", str(port)), ("USER_LINE", user_line)):
        conf = conf.replace("@%s@" % k, v)
    path = os.path.join(TMP, "upstream.conf")
    with open(path, "w") as fh:
        fh.write(conf)
    logf = open(os.path.join(TMP, "upstream.log"), "w")
    p = subprocess.Popen(["nginx", "-p", TMP + "/", "-e", os.path.join(TMP, "upstream.error.log"),
                          "-c", path], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()
    STARTED.append(("upstream", p))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        st, _ = call(port, "POST", CHAT_PATH, CHAT_BODY, timeout=1)
        if st == 200:
            log("upstream nginx pid %d on %s:%d" % (p.pid, HOST, port))
            return p, port
        time.sleep(0.05)
    raise RuntimeError("static upstream (nginx) did not start; see %s/upstream.error.log" % TMP)


def spawn_fake(name, boot):
    errf = open(os.path.join(TMP, "fake-%s.log" % name), "w")
    try:
        fake = fakelib.spawn_fake(os.path.join(FAKES, name + ".py"), "--boot-seconds", boot, stderr=errf)
    finally:
        errf.close()
    STARTED.append(("fake-" + name, fake))
    return fake


def start_fakes(n_offers, boot):
    vast = spawn_fake("vastai", boot)
    tpu = spawn_fake("gcp_tpu", boot)
    offers = []
    for i in range(n_offers):
        offers.append({"id": 30000000 + i, "machine_id": 60000 + i, "host_id": 90000 + i,
                       "gpu_name": "H100 SXM", "num_gpus": 1, "gpu_ram": 81559,
                       "geolocation": US_STATES[i % len(US_STATES)], "verified": True,
                       "reliability2": 0.99,
                       "dph_total": round(1.5 + 1.5 * i / max(1, n_offers - 1), 4)})
    st, body = call(vast.port, "POST", "/_fake/config", {"offers": offers, "boot_seconds": boot})
    if st != 200:
        raise RuntimeError("vast fake config: %s %s" % (st, str(body)[:300]))
    st, body = call(tpu.port, "POST", "/_fake/config",
                    {"offers": [{"zone": "us-west4-a", "acceleratorType": "v5litepod-1", "topology": "1x1"}],
                     "boot_seconds": boot})
    if st != 200:
        raise RuntimeError("tpu fake config: %s %s" % (st, str(body)[:300]))
    log("fakes: vastai pid %d on :%d (%d H100 offers), gcp_tpu pid %d on :%d; boot %.2fs"
        % (vast.proc.pid, vast.port, n_offers, tpu.proc.pid, tpu.port, boot))
    return vast, tpu


def start_gpuproxyd(binpath, up_port, vast, tpu, ranges, gpus, tpus):
    cmin, cmax, omin, omax = ranges
    main_port = free_ports(1)[0]
    model_port = cmin
    conf = os.path.join(TMP, "gpuproxyd.toml")
    with open(conf, "w") as fh:
        fh.write("""# generated by bench/broker.py
[server]
listen = "127.0.0.1:%d"
workers = 2
access_log = false

[[models]]
name = "bench-model"
upstream_url = "http://127.0.0.1:%d/v1"
port = %d

[compute]
poll_interval = "1s"
queue_recheck = "3s"
reconcile_interval = "30s"
max_offers_per_provider = 25
capacity_cooldown = "2s"
local_cpu_slots = 0

[runtimes.vllm]
image = "vllm/vllm-openai:latest"
port = 8000
health_path = "/health"
""" % (main_port, up_port, model_port))
    env = dict(os.environ)
    env.update({
        "GPUPROXYD_STORE": "sqlite:%s" % os.path.join(TMP, "store.db"),
        "VASTAI_BASE_URL": vast.base + "/api/v0", "VASTAI_API_KEY": "test-vast-key",
        "GCP_TPU_BASE_URL": tpu.base + "/v2", "GCP_ACCESS_TOKEN": "test-gcp-token",
        "GCP_PROJECT": "p", "GCP_ZONE": "us-west4-a",
        "MAX_GPUS": str(gpus), "MAX_TPUS": str(tpus),
        "PORT_CUSTOM_MIN": str(cmin), "PORT_CUSTOM_MAX": str(cmax),
        "PORT_OPENROUTER_MIN": str(omin), "PORT_OPENROUTER_MAX": str(omax),
    })
    for k in ("IONET_API_KEY", "IONET_BASE_URL", "OPENROUTER_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(k, None)
    out = open(os.path.join(TMP, "gpuproxyd.stdout.log"), "w")
    err = open(os.path.join(TMP, "gpuproxyd.stderr.log"), "w")
    p = subprocess.Popen([binpath, "--config", conf], cwd=TMP, env=env, stdout=out, stderr=err,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    err.close()
    STARTED.append(("gpuproxyd", p))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError("gpuproxyd exited during start-up (status %s); see %s/gpuproxyd.stderr.log"
                               % (p.returncode, TMP))
        st, _ = call(main_port, "GET", "/readyz", timeout=1)
        if st == 200:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("gpuproxyd not ready after 30 s")
    st, body = call(model_port, "POST", CHAT_PATH, CHAT_BODY, timeout=5)
    if st != 200 or not isinstance(body, dict) or body.get("object") != "chat.completion":
        raise RuntimeError("model port %d answered %s %s" % (model_port, st, str(body)[:200]))
    log("gpuproxyd pid %d, main %s:%d, model port %d, custom ports %d-%d, openrouter %d-%d"
        % (p.pid, HOST, main_port, model_port, cmin, cmax, omin, omax))
    return p, main_port, model_port


# ---------------------------------------------------------------- reservations

def reserve_phase(port, gpus, tpus, batch, timeout, daemon):
    """Submit the reservations in batches; wait until all are active (or the deadline)."""
    api = Api(port)
    todo = [("gpu", GPU_REQ)] * gpus + [("tpu", TPU_REQ)] * tpus
    ids = {}             # id -> "gpu" | "tpu"
    status = {}          # id -> last seen status
    rejected = []        # (kind, http status, body)
    timeline = []        # (t, active count)
    t0 = time.monotonic()
    deadline = t0 + timeout
    t_all = None
    active_now = {"gpu": 0, "tpu": 0}
    list_ms = []
    list_bytes = [0]

    def post(item):
        kind, body = item
        st, out = call(port, "POST", "/api/v1/compute/reserve", body, timeout=60)
        return kind, st, out

    def poll_active():
        t = time.monotonic()
        st, out = api("GET", "/api/v1/compute/reservations?status=active", timeout=60)
        list_ms.append(round((time.monotonic() - t) * 1000, 1))
        list_bytes[0] = api.last_bytes
        if st != 200 or not isinstance(out, dict):
            return None
        act = set()
        for r in out.get("reservations", []):
            if r.get("status") == "active":
                act.add(r["reservation_id"])
        active_now["gpu"] = sum(1 for i in act if ids.get(i) == "gpu")
        active_now["tpu"] = sum(1 for i in act if ids.get(i) == "tpu")
        timeline.append((round(time.monotonic() - t0, 1), len(act)))
        for i in act:
            status[i] = "active"
        return act

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=batch)
    try:
        nb = (len(todo) + batch - 1) // batch
        for b in range(nb):
            if time.monotonic() > deadline or daemon.poll() is not None:
                break
            chunk = todo[b * batch:(b + 1) * batch]
            new = []
            for kind, st, out in pool.map(post, chunk):
                if st == 201 and isinstance(out, dict) and out.get("reservation_id"):
                    rid = out["reservation_id"]
                    ids[rid] = kind
                    status[rid] = out.get("status", "?")
                    new.append(rid)
                else:
                    rejected.append((kind, st, str(out)[:300]))
            pending = {i for i in new if status[i] not in SETTLED}
            while pending and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(1.0)
                act = poll_active() or set()
                pending -= act
                for rid in list(pending):
                    st, out = api("GET", "/api/v1/compute/reservations/" + rid)
                    if st == 200 and isinstance(out, dict):
                        status[rid] = out.get("status", "?")
                        if status[rid] in SETTLED:
                            pending.discard(rid)
            counts = {}
            for i in new:
                counts[status[i]] = counts.get(status[i], 0) + 1
            log("batch %d/%d (%s): %s; active %d GPU + %d TPU, %.0f s"
                % (b + 1, nb, "/".join(sorted({k for k, _ in chunk})),
                   ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items())),
                   active_now["gpu"], active_now["tpu"], time.monotonic() - t0))
        # Everything submitted: wait for the queued ones to be placed.
        n = len(ids)
        tick = 0
        while time.monotonic() < deadline and daemon.poll() is None:
            act = poll_active()
            if act is not None and len(act & ids.keys()) >= n:
                t_all = time.monotonic() - t0
                break
            tick += 1
            if tick % 10 == 0:
                failed = 0
                for s in ("failed", "queued"):
                    st, out = api("GET", "/api/v1/compute/reservations?status=" + s, timeout=60)
                    if st == 200 and isinstance(out, dict):
                        for r in out.get("reservations", []):
                            if r["reservation_id"] in ids:
                                status[r["reservation_id"]] = r["status"]
                                failed += r["status"] == "failed"
                log("waiting: %d/%d active, %d queued, %d failed, %.0f s" % (
                    len(act or ()), n, sum(1 for s in status.values() if s == "queued"), failed,
                    time.monotonic() - t0))
                if act is not None and len(act & ids.keys()) + failed >= n:
                    break   # the rest failed: nothing more will become active
            time.sleep(1.0)
        if t_all is None and daemon.poll() is None:
            poll_active()
    finally:
        pool.shutdown(wait=True)
    # Final statuses of everything not active, and why.
    not_active = {}
    for rid, kind in ids.items():
        if status.get(rid) == "active":
            continue
        st, out = api("GET", "/api/v1/compute/reservations/" + rid)
        if st == 200 and isinstance(out, dict):
            status[rid] = out.get("status", "?")
            if status[rid] != "active":
                not_active[rid] = {"kind": kind, "status": status[rid], "message": out.get("message"),
                                   "attempts": (out.get("attempts") or [])[-5:]}
    api.close()
    return {"ids": ids, "status": status, "rejected": rejected, "timeline": timeline,
            "time_to_all_active_s": round(t_all, 1) if t_all is not None else None,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "active_gpu": active_now["gpu"], "active_tpu": active_now["tpu"],
            "not_active": not_active, "list_active_ms": list_ms,
            "list_active_bytes": list_bytes[0]}


def release_phase(port, ids, batch):
    codes = {}
    t0 = time.monotonic()

    def delete(rid):
        st, _ = call(port, "DELETE", "/api/v1/compute/reservations/" + rid, timeout=60)
        return st

    order = list(ids)
    with concurrent.futures.ThreadPoolExecutor(max_workers=batch) as pool:
        for b in range(0, len(order), batch):
            for st in pool.map(delete, order[b:b + batch]):
                codes[str(st)] = codes.get(str(st), 0) + 1
    return codes, round(time.monotonic() - t0, 1)


def fake_instances(fake):
    st, out = call(fake.port, "GET", "/_fake/state", timeout=60)
    if st != 200 or not isinstance(out, dict):
        return None
    insts = out.get("instances", [])
    return {"total": len(insts), "live": [i.get("id") for i in insts if not i.get("destroyed")],
            "runtime_ports": [p for i in insts for p in (i.get("runtime_ports") or [])]}


def create_calls(fake, method, marker):
    """(API calls of method whose path contains marker, how many answered non-2xx)."""
    st, out = call(fake.port, "GET", "/_fake/calls", timeout=60)
    if st != 200 or not isinstance(out, list):
        return None, None
    c = [x for x in out if x.get("method") == method and marker in x.get("path", "")]
    return len(c), sum(1 for x in c if not 200 <= int(x.get("status", 0)) < 300)


def stderr_summary(path):
    lines = []
    try:
        with open(path, errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        pass
    errs = [ln for ln in lines if "error" in ln.lower()]
    levels = {}
    for ln in lines:
        if m := re.search(r'"level"\s*:\s*"(\w+)"', ln):
            levels[m.group(1)] = levels.get(m.group(1), 0) + 1
    msgs = {}
    for ln in errs:
        m = re.search(r'"msg"\s*:\s*"([^"]*)"', ln)
        key = m.group(1) if m else ln[:120]
        msgs[key] = msgs.get(key, 0) + 1
    return {"lines": len(lines), "levels": levels, "error_lines": len(errs),
            "error_msgs": msgs, "error_samples": errs[:5]}


# ---------------------------------------------------------------- report

def fmt(x, nd=0):
    return "n/a" if x is None else "{:,.{}f}".format(x, nd)


def mib(s):
    return None if not s else s["rss_kib"] / 1024.0


def report(d):
    b, lo = d["baseline"], d["loaded"]
    res = d["reserve"]
    s0, s1, s2 = d["daemon_before"], d["daemon_held"], d["daemon_after_release"]
    print()
    print("## Broker benchmark (%d GPU + %d TPU reservations against the fakes; wrk -t2 -c32, %d x %ds, "
          "median req/s, fakes paused during the runs; %d CPUs)" % (
              d["gpus"], d["tpus"], d["rounds"], d["duration_s"], os.cpu_count()))
    print()
    print("| measure | value |")
    print("|---|---|")
    print("| reservations active (GPU, TPU) | %d / %d GPU, %d / %d TPU%s |" % (
        res["active_gpu"], d["gpus"], res["active_tpu"], d["tpus"],
        "" if res["active_gpu"] == d["gpus"] and res["active_tpu"] == d["tpus"] else " (INCOMPLETE)"))
    print("| gauges active_gpus / active_tpus | %s / %s |" % (fmt(d["gauge_gpus"]), fmt(d["gauge_tpus"])))
    t = res["time_to_all_active_s"]
    print("| time to all active | %s |" % ("%.1f s" % t if t is not None else
                                           "not reached (stopped after %.0f s)" % res["elapsed_s"]))
    print("| baseline req/s | %s%s |" % (fmt(b["rps"]), "" if b["valid"] else " (INVALID runs)"))
    print("| loaded req/s | %s%s |" % (fmt(lo["rps"]), "" if lo["valid"] else " (INVALID runs)"))
    print("| ratio loaded / baseline | %s |" % (fmt(d["ratio"], 3)))
    print("| p99 latency baseline / loaded | %s / %s us |" % (fmt(b["p99_us"]), fmt(lo["p99_us"])))
    print("| daemon RSS before / held / after release | %s / %s / %s MiB |" % (
        fmt(mib(s0), 1), fmt(mib(s1), 1), fmt(mib(s2), 1)))
    print("| daemon fds before / held / after release | %s / %s / %s |" % (
        fmt(s0 and s0["fds"]), fmt(s1 and s1["fds"]), fmt(s2 and s2["fds"])))
    print("| listening ports in the custom range, held / after release | %d / %d |" % (
        d["ports_held"], d["ports_after"]))
    print("| gpuproxyd CPU %% during wrk, baseline / loaded | %s / %s |" % (
        fmt(b["cpu_pct"].get("gpuproxyd")), fmt(lo["cpu_pct"].get("gpuproxyd"))))
    lr = d.get("loaded_running")
    if lr:
        print("| loaded req/s with the fakes running (not paused) | %s, ratio %s; fakes %s %% CPU%s |" % (
            fmt(lr["rps"]), fmt(lr["rps"] / b["rps"] if lr["rps"] and b["rps"] else None, 3),
            fmt(lr["cpu_pct"].get("fakes")), "" if lr["valid"] else " (INVALID runs)"))
    print("| instances left after release | %s |" % (
        "n/a (fake unreachable)" if d["left"] is None else d["left"]))
    print("| daemon alive at the end | %s |" % ("yes" if d["daemon_alive"] else "NO"))
    print()
    na = res["not_active"]
    if na:
        kinds = {}
        for v in na.values():
            k = "%s %s: %s" % (v["kind"], v["status"], (v["message"] or "")[:120])
            kinds[k] = kinds.get(k, 0) + 1
        print("- not active at the end of the reserve phase: %d" % len(na))
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]:
            print("  - %d x %s" % (v, k))
    if res["rejected"]:
        print("- reserve requests refused: %d (first: %s)" % (len(res["rejected"]), res["rejected"][0]))
    rc = d.get("reserve_cpu_s") or {}
    print("- CPU seconds during the reserve phase: gpuproxyd %s, fakes %s" % (
        fmt(rc.get("gpuproxyd"), 1), fmt(rc.get("fakes"), 1)))
    print("- Vast creates: %s calls, %s refused (offer already rented); instances created: Vast %s, TPU %s"
          % (fmt(d["vast_creates"]), fmt(d["vast_create_fails"]), fmt(d["vast_instances"]),
             fmt(d["tpu_instances"])))
    if res["list_active_ms"]:
        print("- GET ?status=active at the end: %s ms, %s bytes (max over the phase %s ms)" % (
            fmt(res["list_active_ms"][-1], 1), fmt(res["list_active_bytes"]), fmt(max(res["list_active_ms"]), 1)))
    print("- release: DELETE answers %s in %.1f s; fakes clean after %s" % (
        ", ".join("%s x %d" % kv for kv in sorted(d["release_codes"].items())), d["release_s"],
        "%.1f s" % d["clean_after_s"] if d["clean_after_s"] is not None else "NOT clean"))
    for key in ("before", "held", "after_release"):
        k = d.get("daemon_fds_" + key)
        if k:
            print("- daemon fds %s: %s" % (key.replace("_", " "), ", ".join("%s %d" % kv for kv in k.items())))
    e = d["stderr"]
    print("- daemon stderr: %d lines, levels %s, %d lines mention \"error\"%s" % (
        e["lines"], json.dumps(e["levels"], sort_keys=True), e["error_lines"],
        "" if not e["error_msgs"] else ": " + "; ".join(
            "%d x %s" % (v, k) for k, v in sorted(e["error_msgs"].items(), key=lambda kv: -kv[1])[:6])))
    print()


# ---------------------------------------------------------------- main

def run():
    global TMP
    secs = env_secs("DURATION", "10")
    warmup = env_secs("WARMUP", "1")
    rounds = env_int("ROUNDS", 3, 1)
    gpus = env_int("GPUS", 1000, 0)
    tpus = env_int("TPUS", 200, 0)
    n_offers = env_int("OFFERS", gpus + 100, 1)
    batch = env_int("BATCH", 25, 1)
    r_timeout = env_int("RESERVE_TIMEOUT", 900, 1)
    rel_timeout = env_int("RELEASE_TIMEOUT", 120, 1)
    boot = float(os.environ.get("BOOT_SECONDS") or 0.3)
    also_running = os.environ.get("ALSO_RUNNING", "1") != "0"
    out_json = os.environ.get("OUT_JSON") or ""
    if out_json and not os.path.isabs(out_json):
        out_json = os.path.abspath(out_json)
    binpath = os.environ.get("GPUPROXYD_BIN") or "build/gpuproxyd"
    binpath = os.path.abspath(binpath)
    if not os.access(binpath, os.X_OK):
        log("%s not found: build it first (make)" % binpath)
        return 2
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            log("%s not found (apt-get install nginx-light wrk)" % tool)
            return 2
    # The daemon holds a port per reservation, the fakes a runtime socket per instance.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20000 if hard == resource.RLIM_INFINITY else min(20000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * (gpus + tpus) + 1000:
        log("WARNING: fd limit %d is low for %d reservations" % (
            resource.getrlimit(resource.RLIMIT_NOFILE)[0], gpus + tpus))

    TMP = tempfile.mkdtemp(prefix="gpuproxyd-broker.")
    os.makedirs(os.path.join(TMP, "tmp"))
    os.makedirs(os.path.join(TMP, "res"))
    log("temp dir %s; %d GPU + %d TPU reservations, batch %d; DURATION=%ds ROUNDS=%d; %d CPUs"
        % (TMP, gpus, tpus, batch, secs, rounds, os.cpu_count()))

    size = max(1400, gpus + tpus + 200)
    ranges = pick_ranges(size, 10)
    up, up_port = start_upstream()
    vast, tpu = start_fakes(n_offers, boot)
    daemon, main_port, model_port = start_gpuproxyd(binpath, up_port, vast, tpu, ranges, gpus, tpus)
    watch = {"gpuproxyd": [daemon.pid], "fakes": [vast.proc.pid, tpu.proc.pid], "upstream": [up.pid]}
    fakes = [vast.proc.pid, tpu.proc.pid]

    d = {"gpus": gpus, "tpus": tpus, "batch": batch, "rounds": rounds, "duration_s": secs,
         "offers": n_offers, "boot_seconds": boot, "port_ranges": ranges, "cpus": os.cpu_count()}
    log("baseline: %d x %ds" % (rounds, secs))
    d["baseline"] = measure("baseline", model_port, rounds, secs, warmup, watch, fakes)
    d["daemon_before"] = proc_stats(daemon.pid)
    names = {vast.port: "vastai", tpu.port: "gcp_tpu", up_port: "upstream"}
    d["daemon_fds_before"] = fd_kinds(daemon.pid, names)

    log("reserving %d GPUs + %d TPUs (at most %d s)" % (gpus, tpus, r_timeout))
    cpu0 = {k: cpu_seconds(v) for k, v in watch.items()}
    res = reserve_phase(main_port, gpus, tpus, batch, r_timeout, daemon)
    d["reserve_cpu_s"] = {k: round(cpu_seconds(v) - cpu0[k], 1) for k, v in watch.items()}
    d["reserve"] = {k: v for k, v in res.items() if k not in ("ids", "status")}
    d["reserve"]["final_status"] = {}
    for s in res["status"].values():
        d["reserve"]["final_status"][s] = d["reserve"]["final_status"].get(s, 0) + 1
    log("reserve phase: %d GPU + %d TPU active after %.1f s (%s)" % (
        res["active_gpu"], res["active_tpu"], res["elapsed_s"], d["reserve"]["final_status"]))
    st, m = call(main_port, "GET", "/metrics")
    d["gauge_gpus"] = metric(m, "gpuproxyd_active_gpus") if st == 200 else None
    d["gauge_tpus"] = metric(m, "gpuproxyd_active_tpus") if st == 200 else None
    d["gauge_queue"] = metric(m, "gpuproxyd_reservation_queue_depth") if st == 200 else None
    d["daemon_held"] = proc_stats(daemon.pid)
    d["ports_held"] = listening_ports(ranges[0], ranges[1])
    d["vast_creates"], d["vast_create_fails"] = create_calls(vast, "PUT", "/asks/")
    vi, ti = fake_instances(vast), fake_instances(tpu)
    d["vast_instances"] = vi and vi["total"]
    d["tpu_instances"] = ti and ti["total"]
    d["fakes_live_held"] = (vi and len(vi["live"]), ti and len(ti["live"]))
    for f in (vi, ti):
        for p in (f or {}).get("runtime_ports", []):
            names.setdefault(p, "runtime")
    d["daemon_fds_held"] = fd_kinds(daemon.pid, names)

    if daemon.poll() is None:
        log("loaded: %d x %ds" % (rounds, secs))
        d["loaded"] = measure("loaded", model_port, rounds, secs, warmup, watch, fakes)
        d["daemon_loaded_end"] = proc_stats(daemon.pid)
    else:
        d["loaded"] = {"runs": [], "rps": None, "p99_us": None, "valid": False, "cpu_pct": {}}
    d["loaded_running"] = None
    if also_running and daemon.poll() is None:
        log("loaded, fakes running: %d x %ds" % (rounds, secs))
        d["loaded_running"] = measure("loaded_running", model_port, rounds, secs, warmup, watch, [])
    b, lo = d["baseline"]["rps"], d["loaded"]["rps"]
    d["ratio"] = lo / b if b and lo else None

    log("releasing %d reservations" % len(res["ids"]))
    d["release_codes"], d["release_s"] = release_phase(main_port, res["ids"], batch)
    t0 = time.monotonic()
    d["clean_after_s"] = None
    left = None
    while True:
        vi, ti = fake_instances(vast), fake_instances(tpu)
        left = None if vi is None or ti is None else len(vi["live"]) + len(ti["live"])
        if left == 0:
            d["clean_after_s"] = round(time.monotonic() - t0, 1)
            break
        if time.monotonic() - t0 > rel_timeout:
            break
        time.sleep(1.0)
    d["left"] = left
    d["left_ids"] = None if vi is None or ti is None else {"vastai": vi["live"][:50], "gcp_tpu": ti["live"][:50]}
    st, m = call(main_port, "GET", "/metrics")
    d["gauges_after_release"] = {"gpus": metric(m, "gpuproxyd_active_gpus"),
                                 "tpus": metric(m, "gpuproxyd_active_tpus")} if st == 200 else None
    time.sleep(1.0)
    d["daemon_after_release"] = proc_stats(daemon.pid)
    d["ports_after"] = listening_ports(ranges[0], ranges[1])
    d["daemon_fds_after_release"] = fd_kinds(daemon.pid, names)
    settle = env_int("SETTLE", 0, 0)
    d["settle"] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < settle and daemon.poll() is None:
        time.sleep(min(10.0, settle - (time.monotonic() - t0)) if settle > 0 else 0)
        d["settle"].append({"t_s": round(time.monotonic() - t0), "stats": proc_stats(daemon.pid),
                            "fds": fd_kinds(daemon.pid, names)})
        log("settle %ds: %s" % (d["settle"][-1]["t_s"], d["settle"][-1]["stats"]))
    if d["settle"]:
        d["daemon_settled"] = d["settle"][-1]["stats"]
    d["daemon_alive"] = daemon.poll() is None
    d["daemon_exit_status"] = daemon.returncode
    d["stderr"] = stderr_summary(os.path.join(TMP, "gpuproxyd.stderr.log"))
    report(d)
    if out_json:
        with open(out_json, "w") as fh:
            json.dump(d, fh, indent=2)
        log("raw results written to %s" % out_json)
    ok = d["daemon_alive"] and left == 0
    if not ok:
        log("FAILED: %s" % ("the daemon died (status %s)" % daemon.returncode if not d["daemon_alive"]
                            else "%s instance(s) left at the fakes" % left))
    return 0 if ok else 1


def main():
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cleanup, True)
    rc = 1
    try:
        rc = run()
    except RuntimeError as e:
        log("ERROR: %s" % e)
        rc = 1
    finally:
        cleanup(keep=rc != 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
