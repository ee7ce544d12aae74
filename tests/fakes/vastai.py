#!/usr/bin/python3
"""A fake Vast.ai REST API (console.vast.ai/api/v0) for gpuproxyd's tests; standard library only.

Usage:
    /usr/bin/python3 tests/fakes/vastai.py --port N [--host 127.0.0.1] [--api-key KEY]
        [--boot-seconds S] [--verbose] [--exit-with-parent]
Prints "READY <port>" once listening.  Point the daemon at VASTAI_BASE_URL=http://127.0.0.1:<port>
(or .../api/v0: the /api/v0 prefix is optional).  Trailing slashes are optional on every route.

Auth: `Authorization: Bearer KEY`, or `?api_key=KEY` (what the CLI sends), KEY from --api-key
(default "test-vast-key").  Wrong or missing: 401 {"success":false,"error":"invalid_user_key",...}.

Routes (shapes from /work/shared/docs/provider-apis.md):
    POST /bundles/            search; the body is the query object (also accepted wrapped as
                              {"q": {...}}, and as GET /bundles/?q=<json>, the older CLI form).
                              Operators eq neq gt gte lt lte in notin on any offer field; the
                              special ones: gpu_name (spaces or underscores), geolocation (a
                              2-letter value matches the country suffix of "Washington, US"),
                              verified (offer.verification == "verified"), rentable, rented.
                              "order": [["dph_total","asc"], ...] (or ["-dph_total"]), "limit": N,
                              "type": on-demand | bid | reserved (accepted, echoed nowhere).
                              Rented asks are left out unless the query names "rented" itself.
                              -> {"offers": [...]}
    PUT  /asks/{ask_id}/      create (rent) -> {"success":true,"new_contract":<instance id>}.
                              The ask becomes rented (gone from search).  A gone/rented/unknown
                              ask, or no_capacity: 400 {"success":false,"error":"no_such_ask",
                              "msg":"Instance type no longer available."}.  A non-null "price"
                              makes a bid (is_bid); a bid below the ask's min_bid, or the
                              stopped_bid_leak setting: 400 {"success":false,"error":
                              "insufficient_bid","msg":...,"new_contract":N} AND instance N exists,
                              STOPPED (cur_state = intended_status = next_state = "stopped"):
                              the leak the daemon must clean up.
    GET  /instances/?owner=me -> {"instances_found": N, "instances": [...]} (live ones, extras too)
    GET  /instances/{id}/     -> {"instances": {...}} (an object).  Missing: see missing_style.
    PUT  /instances/{id}/     {"state": "stopped"|"running"} -> {"success": true}
                              ({"label": "..."} also accepted: relabels)
    DELETE /instances/{id}/   body {} -> {"success": true}; missing or destroy_not_found:
                              {"success":false,"error":"no_such_instance","msg":...}

Instance lifecycle (fields id, machine_id, actual_status, intended_status, cur_state, next_state,
status_msg, label, public_ipaddr, ssh_host, ssh_port, dph_total, start_date, end_date, is_bid,
ports, extra_env (the create's env as [[key, value], ...]), ...):
    actual_status null (first third of boot_seconds) -> "loading" -> "running" at boot_seconds.
    The runtime endpoint appears when running:
        public_ipaddr "127.0.0.1",
        ports {"8000/tcp": [{"HostIp":"0.0.0.0","HostPort":"<port>"},
                            {"HostIp":"::","HostPort":"<port>"}]}
    i.e. the daemon reads http://{public_ipaddr}:{ports["<container port>/tcp"][0].HostPort}.
    Ports are mapped only for what the create asked with env keys "-p HOST:CONTAINER" (as the Vast
    CLI passes them; e.g. {"-p 8000:8000": "1"}) -- ask for none and no endpoint appears -- and
    every mapped container port leads to the runtime.  Before running, ports is {}.
    stuck: stays null/"loading".  image_fails: at boot_seconds actual_status "created", status_msg
    "... OCI runtime create failed ...".  Preemption: cur_state = intended_status = next_state =
    "stopped", actual_status "exited", status_msg "... outbid ...", runtime stopped.

Settings (POST /_fake/config; see fakelib.py for the control API and the common ones):
    boot_seconds, rate_limit_next (429 {"success":false,"error":"too_many_requests",...}),
    fail_next (500), slow_ms, stuck, image_fails, preempt_after_seconds, no_capacity,
    offers_empty, destroy_not_found, list_extra (instance objects, e.g.
    [{"id": 999, "label": "gpd-res-dead"}], filled in with defaults, shown running),
    offers (the catalogue: a list of offer objects, filled in with defaults), and:
    stopped_bid_leak   every create answers the insufficient_bid error with new_contract, and the
                       instance exists stopped
    missing_style      "404" (default): GET/DELETE of a missing instance answer HTTP 404 with
                       {"success":false,"error":"no_such_instance",...}; "200": GET answers 200
                       {"instances": null} and DELETE 200 {"success":false,"error":
                       "no_such_instance"} (unverified which one the real API does; the daemon
                       should handle both)
"""

import copy
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402
from fakelib import FakeProvider, Response  # noqa: E402

DEFAULT_OFFERS = [
    # ask id, machine, gpu, n, gpu_ram MB, geolocation, dph_total, reliability2, verified
    (14230511, 31021, "H100 SXM", 1, 81559, "Washington, US", 2.35, 0.995, True),
    (14230587, 31022, "H100 SXM", 8, 81559, "Texas, US", 18.90, 0.991, True),
    (14231002, 28811, "H100 PCIE", 1, 81559, "Quebec, CA", 1.95, 0.985, True),
    (13998120, 25570, "A100 PCIE", 2, 40960, "Oregon, US", 1.60, 0.972, True),
    (13998342, 25602, "A100 SXM4", 4, 81920, "Hesse, DE", 5.20, 0.992, True),
    (14100777, 30001, "RTX 4090", 1, 24564, "California, US", 0.35, 0.981, True),
    (14100790, 30017, "RTX 4090", 2, 24564, "Mazovia, PL", 0.62, 0.950, False),
    (12877001, 19931, "RTX 3090", 4, 24576, "Ohio, US", 0.80, 0.901, False),
    (14150402, 30544, "L40S", 1, 46068, "Stockholm, SE", 0.95, 0.989, True),
]


def make_offer(d):
    """A full offer object from a partial one (defaults for every field the doc names)."""
    n = int(d.get("num_gpus", 1))
    dph = float(d.get("dph_total", 1.0))
    o = {
        "id": d.get("id", 10000000), "ask_contract_id": d.get("id", 10000000),
        "machine_id": d.get("machine_id", 1000), "host_id": d.get("host_id", 5000),
        "gpu_name": d.get("gpu_name", "RTX 4090"), "num_gpus": n,
        "gpu_ram": d.get("gpu_ram", 24564), "gpu_total_ram": d.get("gpu_ram", 24564) * n,
        "cpu_cores": 16 * n, "cpu_cores_effective": 16.0 * n, "cpu_ram": 64000 * n,
        "disk_space": 500.0, "dph_base": round(dph * 0.97, 4), "dph_total": dph,
        "min_bid": round(dph * 0.45, 4), "storage_cost": 0.1,
        "reliability": d.get("reliability2", 0.98), "reliability2": d.get("reliability2", 0.98),
        "geolocation": d.get("geolocation", "Washington, US"),
        "cuda_max_good": 12.4, "driver_version": "550.54.14", "direct_port_count": 100,
        "inet_up": 850.0, "inet_down": 920.0,
        "verification": "verified" if d.get("verified", True) else "unverified",
        "public_ipaddr": "127.0.0.1", "rentable": True, "rented": False, "external": False,
        "total_flops": 80.0 * n, "dlperf": 60.0 * n, "static_ip": True,
    }
    for k, v in d.items():
        if k != "verified":
            o[k] = v
    if "verified" in d and "verification" not in d:
        o["verification"] = "verified" if d["verified"] else "unverified"
    return o


def default_offers():
    return [make_offer({"id": a, "machine_id": m, "gpu_name": g, "num_gpus": n, "gpu_ram": r,
                        "geolocation": geo, "dph_total": p, "reliability2": rel,
                        "verified": ver})
            for (a, m, g, n, r, geo, p, rel, ver) in DEFAULT_OFFERS]


# ---- the search query language ----------------------------------------------------------------


def _norm_name(v):
    return str(v).replace("_", " ").strip().lower() if isinstance(v, str) else v


def _field_value(offer, field):
    if field == "verified":
        return offer.get("verification") == "verified"
    return offer.get(field)


def _cmp_values(field, have, want):
    """Normalise a pair for comparison: names case/underscore-insensitive, geolocation by country
    when the wanted value is a 2-letter code."""
    if field == "gpu_name":
        return _norm_name(have), _norm_name(want)
    if field == "geolocation" and isinstance(have, str) and isinstance(want, str):
        if len(want.strip()) == 2:
            return have.strip()[-2:].upper(), want.strip().upper()
        return have.strip().lower(), want.strip().lower()
    if isinstance(want, str) and isinstance(have, (int, float)) and not isinstance(have, bool):
        try:
            return have, float(want)
        except ValueError:
            pass
    if isinstance(want, str) and isinstance(have, bool):
        return have, want.lower() == "true"
    return have, want


def _match_op(field, have, op, want):
    if op in ("in", "notin"):
        if not isinstance(want, list):
            want = [want]
        hit = False
        for w in want:
            h, w2 = _cmp_values(field, have, w)
            if h == w2:
                hit = True
                break
        return hit if op == "in" else not hit
    h, w = _cmp_values(field, have, want)
    if op == "eq":
        return h == w
    if op == "neq":
        return h != w
    if h is None or w is None:
        return False
    try:
        if op == "gt":
            return h > w
        if op == "gte":
            return h >= w
        if op == "lt":
            return h < w
        if op == "lte":
            return h <= w
    except TypeError:
        return False
    raise ValueError("unknown operator %r on %s" % (op, field))


QUERY_META = ("order", "type", "limit", "disable_bundling", "allocated_storage", "select_cols",
              "external_ok")


def search_offers(offers, query):
    """Filter, sort and cut `offers` (full offer objects) by a Vast query object."""
    out = []
    for o in offers:
        if o.get("rented") and "rented" not in query:
            continue
        ok = True
        for field, cond in query.items():
            if field in QUERY_META:
                continue
            if not isinstance(cond, dict):
                cond = {"eq": cond}
            have = _field_value(o, field)
            for op, want in cond.items():
                if not _match_op(field, have, op, want):
                    ok = False
                    break
            if not ok:
                break
        if ok:
            out.append(o)
    order = query.get("order")
    if isinstance(order, str):
        order = [order]
    keys = []
    for item in order or []:
        if isinstance(item, list) and item:
            field = item[0]
            desc = len(item) > 1 and str(item[1]).lower().startswith("desc")
        elif isinstance(item, str):
            desc = item.startswith("-") or item.endswith("-")
            field = item.strip("-+")
        else:
            continue
        keys.append((field, desc))
    for field, desc in reversed(keys):  # stable sorts, last key first
        present = [o for o in out if o.get(field) is not None]
        absent = [o for o in out if o.get(field) is None]
        present.sort(key=lambda o: o.get(field), reverse=desc)
        out = present + absent
    limit = query.get("limit")
    if isinstance(limit, (int, float)) and limit >= 0:
        out = out[: int(limit)]
    return out


# ---- the fake ---------------------------------------------------------------------------------


PORT_ARG = re.compile(r"-p\s+(?:[\d.]+:)?(\d+):(\d+)(?:/(tcp|udp))?")


def requested_ports(env):
    """Container ports asked for through the env keys "-p HOST:CONTAINER" (the Vast CLI way)."""
    ports = []
    if isinstance(env, dict):
        for k in env:
            for m in PORT_ARG.finditer(str(k)):
                key = "%s/%s" % (m.group(2), m.group(3) or "tcp")
                if key not in ports:
                    ports.append(key)
    elif isinstance(env, str):
        for m in PORT_ARG.finditer(env):
            key = "%s/%s" % (m.group(2), m.group(3) or "tcp")
            if key not in ports:
                ports.append(key)
    return ports


class VastFake(FakeProvider):
    name = "vastai"
    PATH_PREFIXES = ("/api/v0",)
    DEFAULT_SETTINGS = {"stopped_bid_leak": False, "missing_style": "404"}

    @classmethod
    def add_args(cls, ap):
        ap.add_argument("--api-key", default="test-vast-key", help="the accepted API key")

    def on_reset(self):
        self.catalogue = default_offers()
        self.next_contract = 7835610
        self.extra_ids = []

    def on_config(self, cfg):
        if "offers" in cfg:
            offers = cfg["offers"]
            if offers is None:
                self.catalogue = default_offers()
            else:
                if not isinstance(offers, list):
                    raise ValueError("offers must be a list of offer objects")
                self.catalogue = [make_offer(o) for o in offers]
        if "list_extra" in cfg:
            self._materialise_extras(cfg["list_extra"] or [])

    def _materialise_extras(self, extras):
        if not isinstance(extras, list):
            raise ValueError("list_extra must be a list of instance objects")
        for iid in self.extra_ids:
            inst = self.instances.get(iid)
            if inst is not None and not inst.destroyed:
                del self.instances[iid]
        self.extra_ids = []
        for e in extras:
            e = dict(e)
            iid = int(e.get("id") or self._contract())
            inst = self.new_instance(iid, e.get("label"))
            inst.extra = True
            inst.phase = "running"
            inst.running_since = inst.created
            inst.running_since_wall = inst.created_wall
            inst.data = {"offer": make_offer({}), "is_bid": False, "ports": [],
                         "image": e.get("image_uuid", "vllm/vllm-openai:latest"),
                         "overrides": e, "state": "running"}
            self.extra_ids.append(iid)

    def _contract(self):
        self.next_contract += 1
        return self.next_contract

    # ---- errors and auth ---------------------------------------------------------------------

    def error(self, status, message, kind=None):
        code = {"auth": "invalid_user_key", "rate_limit": "too_many_requests",
                "server": "server_error", "not_found": "not_found",
                "bad_request": "invalid_args"}.get(kind, "error")
        if kind == "auth":
            message = "Invalid user key"
        elif kind == "rate_limit":
            message = "API requests too frequent (fake)"
        return Response(status, {"success": False, "error": code, "msg": message})

    def auth_error(self, req):
        key = self.opts.api_key
        auth = req.header("Authorization") or ""
        if auth == "Bearer " + key or req.query.get("api_key") == key:
            return None
        return self.error(401, "Invalid user key", "auth")

    # ---- routes ------------------------------------------------------------------------------

    def route(self, req):
        p = req.path.rstrip("/") or "/"
        m = req.method
        if p == "/bundles" and m in ("POST", "PUT", "GET"):
            return self.search(req)
        mt = re.fullmatch(r"/asks/(\d+)", p)
        if mt and m == "PUT":
            return self.create(req, int(mt.group(1)))
        if p == "/instances" and m == "GET":
            return self.list(req)
        mt = re.fullmatch(r"/instances/(\d+)", p)
        if mt:
            iid = int(mt.group(1))
            if m == "GET":
                return self.show(iid)
            if m == "DELETE":
                return self.destroy(iid)
            if m == "PUT":
                return self.manage(req, iid)
        return self.error(404, "no route for %s %s" % (m, req.path), "not_found")

    def search(self, req):
        if req.method == "GET":
            try:
                query = json.loads(req.query.get("q") or "{}")
            except ValueError:
                return self.error(400, "q is not JSON", "bad_request")
        else:
            query = req.json()
            if query is None and not req.body:
                query = {}
        if isinstance(query, dict) and isinstance(query.get("q"), dict):
            query = query["q"]
        if not isinstance(query, dict):
            return self.error(400, "the search body must be a JSON object", "bad_request")
        with self.lock:
            if self.settings.get("offers_empty"):
                return Response(200, {"offers": []})
            try:
                found = search_offers(self.catalogue, query)
            except ValueError as e:
                return self.error(400, str(e), "bad_request")
            return Response(200, {"offers": copy.deepcopy(found)})

    def create(self, req, ask_id):
        body = req.json()
        if not isinstance(body, dict):
            return self.error(400, "the body must be a JSON object", "bad_request")
        if not body.get("image"):
            return self.error(400, "image is required", "bad_request")
        gone = {"success": False, "error": "no_such_ask",
                "msg": "Instance type no longer available."}
        with self.lock:
            offer = next((o for o in self.catalogue if o.get("id") == ask_id), None)
            if offer is None or offer.get("rented") or self.settings.get("no_capacity"):
                return Response(400, gone)
            price = body.get("price")
            is_bid = price is not None
            leak = bool(self.settings.get("stopped_bid_leak"))
            if is_bid:
                try:
                    price = float(price)
                except (TypeError, ValueError):
                    return self.error(400, "price must be a number", "bad_request")
                if price < float(offer.get("min_bid") or 0):
                    leak = True
            env = body.get("env") or {}
            iid = self._contract()
            model = None
            if isinstance(env, dict):
                model = env.get("MODEL") or env.get("MODEL_NAME")
            inst = self.new_instance(iid, body.get("label"), model=model, request=body)
            inst.data = {"offer": copy.deepcopy(offer), "is_bid": is_bid,
                         "bid_price": price if is_bid else None,
                         "ports": requested_ports(env), "image": body.get("image"),
                         "disk": body.get("disk"), "overrides": {}, "state": "running"}
            offer["rented"] = True
            offer["rentable"] = False
            if leak:
                inst.phase = "stopped"
                inst.ended_wall = time.time()
                inst.data["state"] = "stopped"
                inst.message = "bid below the current price: created stopped"
                return Response(400, {"success": False, "error": "insufficient_bid",
                                      "msg": "Your bid is below the current minimum price for "
                                             "this machine; the instance was created stopped.",
                                      "new_contract": iid})
            return Response(200, {"success": True, "new_contract": iid})

    def list(self, req):
        with self.lock:
            rows = [self.view(i) for i in self.instances.values() if not i.destroyed]
        return Response(200, {"instances_found": len(rows), "instances": rows})

    def _missing(self, iid, for_delete):
        style = str(self.settings.get("missing_style") or "404")
        body = {"success": False, "error": "no_such_instance",
                "msg": "Instance %s not found." % iid}
        if style == "200":
            return Response(200, body if for_delete else {"instances": None})
        return Response(404, body)

    def show(self, iid):
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None or inst.destroyed:
                return self._missing(iid, False)
            return Response(200, {"instances": self.view(inst)})

    def destroy(self, iid):
        stops = []
        with self.lock:
            inst = self.instances.get(iid)
            not_found = inst is None or inst.destroyed
            if inst is not None and not inst.destroyed:
                self.destroy_instance(inst, stops)
                self._release_offer(inst)
            if not_found or self.settings.get("destroy_not_found"):
                resp = self._missing(iid, True)
            else:
                resp = Response(200, {"success": True})
        for rt in stops:
            rt.stop()
        return resp

    def _release_offer(self, inst):
        offer_id = inst.data.get("offer", {}).get("id")
        for o in self.catalogue:
            if o.get("id") == offer_id and not inst.extra:
                o["rented"] = False
                o["rentable"] = True

    def manage(self, req, iid):
        body = req.json()
        if not isinstance(body, dict):
            return self.error(400, "the body must be a JSON object", "bad_request")
        stops = []
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None or inst.destroyed:
                return self._missing(iid, True)
            if "label" in body:
                inst.label = body["label"]
            state = body.get("state")
            if state == "stopped" and inst.phase in ("running", "pending"):
                stops.extend(inst.runtimes)
                inst.runtimes = []
                inst.phase = "stopped"
                inst.data["state"] = "stopped"
                inst.message = "stopped by the user"
            elif state == "running" and inst.phase in ("stopped", "preempted"):
                # restarts like a new boot
                inst.phase = "pending"
                inst.runtimes = []  # already stopped when it went down
                inst.created = time.monotonic()
                inst.data["state"] = "running"
                inst.message = ""
                inst.preempt_after = None
            elif state not in (None, "stopped", "running"):
                return self.error(400, "state must be stopped or running", "bad_request")
        for rt in stops:
            rt.stop()
        return Response(200, {"success": True})

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_preempted(self, inst):
        inst.message = "Instance stopped: outbid (fake preemption)"

    def on_failed(self, inst):
        if not inst.message:
            inst.message = ("Error response from daemon: failed to create task for container: "
                            "failed to create shim task: OCI runtime create failed: runc create "
                            "failed: unable to start container process: exec: \"vllm\": "
                            "executable file not found in $PATH: unknown")

    def view(self, inst):
        o = inst.data.get("offer") or make_offer({})
        now = time.monotonic()
        phase = inst.phase
        ipaddr = "127.0.0.1"
        ports = {}
        intended = cur = nxt = "running"
        msg = inst.message
        if phase == "pending":
            el = now - inst.created
            actual = None if el < inst.boot_seconds / 3.0 else "loading"
            if actual == "loading" and not msg:
                msg = "Pulling image %s ..." % inst.data.get("image")
        elif phase == "running":
            actual = "running"
            if not msg:
                msg = "success, running %s" % inst.data.get("image")
            if inst.runtimes:
                hp = str(inst.runtimes[0].port)
                for key in inst.data.get("ports") or []:
                    ports[key] = [{"HostIp": "0.0.0.0", "HostPort": hp},
                                  {"HostIp": "::", "HostPort": hp}]
        elif phase == "failed":
            actual = "created"
        elif phase == "preempted":
            actual = "exited"
            intended = cur = nxt = "stopped"
        else:  # stopped
            actual = "stopped" if inst.data.get("state") == "stopped" else "exited"
            intended = cur = nxt = "stopped"
        env = (inst.request or {}).get("env") or {}
        dph = o.get("dph_total")
        if inst.data.get("is_bid") and inst.data.get("bid_price") is not None:
            dph = inst.data["bid_price"]
        v = {
            "id": inst.id, "machine_id": o.get("machine_id"), "host_id": o.get("host_id"),
            "actual_status": actual, "intended_status": intended, "cur_state": cur,
            "next_state": nxt, "status_msg": msg, "label": inst.label,
            "public_ipaddr": ipaddr, "ssh_host": "ssh%d.vast.ai" % (inst.id % 9 + 1),
            "ssh_port": 20000 + inst.id % 10000, "ssh_idx": str(inst.id % 9 + 1),
            "dph_total": dph, "dph_base": o.get("dph_base"), "storage_cost": o.get("storage_cost"),
            "min_bid": o.get("min_bid"), "is_bid": bool(inst.data.get("is_bid")),
            "start_date": inst.created_wall,
            "end_date": inst.created_wall + 30 * 86400,
            "duration": None, "gpu_name": o.get("gpu_name"), "num_gpus": o.get("num_gpus"),
            "gpu_ram": o.get("gpu_ram"), "gpu_util": 0.0 if actual == "running" else None,
            "cpu_cores": o.get("cpu_cores"), "cpu_ram": o.get("cpu_ram"),
            "disk_space": inst.data.get("disk") or 40, "geolocation": o.get("geolocation"),
            "reliability2": o.get("reliability2"), "image_uuid": inst.data.get("image"),
            "image_runtype": (inst.request or {}).get("runtype", "ssh"),
            "ports": ports, "direct_port_count": o.get("direct_port_count"),
            "direct_port_start": 40000, "direct_port_end": 40099,
            "inet_up": o.get("inet_up"), "inet_down": o.get("inet_down"),
            "verification": o.get("verification"), "template_id": None,
            # the create's env as [[key, value], ...], as Vast reports it
            "extra_env": [[str(k), str(val)] for k, val in (env.items()
                                                           if isinstance(env, dict) else [])],
            "onstart": (inst.request or {}).get("onstart"),
        }
        for k, val in (inst.data.get("overrides") or {}).items():
            v[k] = val
        return v


def main():
    return fakelib.run_main(VastFake)

if __name__ == "__main__":
    sys.exit(main())
