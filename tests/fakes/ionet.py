#!/usr/bin/python3
"""A fake IO.net io.cloud CaaS API (api.io.solutions/enterprise/v1/io-cloud) for gpuproxyd's tests.

Standard library only.  Usage:
    /usr/bin/python3 tests/fakes/ionet.py --port N [--host 127.0.0.1] [--api-key KEY]
        [--boot-seconds S] [--verbose] [--exit-with-parent]
Prints "READY <port>" once listening.  Point the daemon at IONET_BASE_URL=http://127.0.0.1:<port>
(or .../enterprise/v1/io-cloud: that prefix is optional).  Trailing slashes are optional.

Auth: header `x-api-key: KEY`, KEY from --api-key (default "test-ionet-key").  Missing:
401 {"detail":"Not authenticated"}; wrong: 401 {"detail":"Invalid API key"}.
Errors are FastAPI-shaped: {"detail": "msg"}; 422 {"detail": [{"type","loc","msg","input"}]}
(pydantic v2 style: loc ["body", field] or ["query", name], type "missing"/"int_parsing"/...).

Routes (shapes from /work/shared/docs/provider-apis.md):
    GET    /caas/hardware/max-gpus-per-container
           -> {"data":{"hardware":[{"hardware_id","hardware_name","brand_name",
                                    "max_gpus_per_container","available"}],"total":N}}
              (available = free GPUs of that type over all locations)
    GET    /caas/available-replicas?hardware_id=203&hardware_qty=1
           -> {"data":[{"id","iso2","name","available_replicas"}]} (locations with any; a
              replica is one container of hardware_qty GPUs).  hardware_id missing: 422.
    GET    /caas/price?location_ids=[1]&hardware_id=203&gpus_per_container=1&duration_hours=2
                      &replica_count=1&currency=usdc
           -> {"data":{"replica_count","gpus_per_container","duration_hours","currency",
                       "total_cost_usdc"}} -- the TOTAL for the whole duration, not per hour.
              location_ids accepted as "[1,2]", "1,2" or repeated.
    POST   /caas/deploy  -> {"status":"success","deployment_id":"<uuid>"}.  Body as in the doc,
              nested (container_config{replica_count, env_variables, secret_env_variables,
              entrypoint, args, traffic_port}, registry_config{image_url, registry_username,
              registry_secret}) or the same fields flat (unverified which the API wants: both
              accepted; when both are present the nested value wins).  Required:
              resource_private_name, duration_hours, gpus_per_container, hardware_id,
              location_ids, image_url; replica_count defaults to 1.  Missing/ill-typed: 422.
              Unknown hardware or too many GPUs per container: 400.  Not enough free GPUs in
              the listed locations, or no_capacity: 400 {"detail":"no capacity"}.
    GET    /caas/deployment/{id}
           -> {"data":{"id","status","name","resource_private_name","hardware_id",
                       "hardware_name","brand_name","gpus_per_container","total_gpus",
                       "total_containers","duration_hours","amount_paid","locations":[...],
                       "created_at","started_at","finished_at","completed_percent",
                       "compute_minutes_served","compute_minutes_remaining"}}
              Destroyed deployments stay readable (status "destroyed").  Unknown id: 404.
    GET    /caas/deployment/{id}/containers
           -> {"data":{"total":N,"workers":[{"container_id","device_id","status","public_url",
                       "container_events":[{"time","message"}],"uptime_percent",
                       "gpus_per_container","hardware","brand_name","created_at",
                       "started_at"}]}}   (one worker per replica)
    POST   /caas/deployment/{id}/extend {"duration_hours": N}
           -> {"status":"success","deployment_id","duration_hours": <new total>}; not running:
              400; missing field: 422; unknown: 404.
    DELETE /caas/deployment/{id} -> {"status":"success","deployment_id": id}; unknown, already
              destroyed, or destroy_not_found: 404 {"detail":"Deployment not found"}.
    GET    /caas/deployments[?status=running&page=1&page_size=50]
           -> {"data":{"deployments":[{"id","status","name","resource_private_name",...}],
                       "total":N}}
              UNVERIFIED: provider-apis.md names no list endpoint; this is the fake's choice for
              "list ours" (name = resource_private_name).  It includes finished and destroyed
              deployments (history), so the daemon must filter on status.

Statuses (by name, as the doc says): deployment "deployment requested" while pending ->
"running" at boot_seconds; image_fails -> "failed" (workers "failed" with a container event
"Error: ImagePullBackOff ..."); destroyed -> "destroyed"; the prepaid duration over
(duration_hours * hour_seconds after it started) -> "completed"; preemption -> preempt_status
(default "terminated", a status the doc does not name: the daemon should treat it as not
running; the runtime stops).  Worker status: "pending" -> "running" (-> "failed" /
"terminated" / "completed" / "destroyed").

THE RUNTIME ENDPOINT: workers[].public_url = "http://127.0.0.1:<port>" once the worker is
running ("" before), one runtime per worker.

Settings (POST /_fake/config; see fakelib.py for the control API and the common ones):
    boot_seconds, rate_limit_next (429 {"detail":"Too Many Requests"}), fail_next (500
    {"detail":"Internal Server Error"}), slow_ms, stuck, image_fails, preempt_after_seconds,
    no_capacity, offers_empty (no hardware, no replicas anywhere), destroy_not_found, list_extra
    (deployment objects for the list endpoint, e.g. [{"id":"...","name":"gpd-res-dead"}], shown
    running), offers (the catalogue, replaces the default: a list of
        {"hardware_id","hardware_name","brand_name","max_gpus_per_container",
         "price_per_gpu_hour","locations":[{"id","iso2","name","gpus_free"}]}), and:
    hour_seconds     real seconds in one billed hour (default 3600), to test expiry
    preempt_status   the deployment status after preemption (default "terminated")
"""

import copy
import json
import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402
from fakelib import ApiError, FakeProvider, Response, rfc3339  # noqa: E402

LOCATIONS = {1: ("US", "United States"), 2: ("DE", "Germany"), 3: ("SG", "Singapore")}


def _loc(lid, gpus):
    return {"id": lid, "iso2": LOCATIONS[lid][0], "name": LOCATIONS[lid][1], "gpus_free": gpus}


def default_catalogue():
    return [
        {"hardware_id": 203, "hardware_name": "H100", "brand_name": "NVIDIA",
         "max_gpus_per_container": 8, "price_per_gpu_hour": 2.60,
         "locations": [_loc(1, 8), _loc(2, 4)]},
        {"hardware_id": 187, "hardware_name": "A100 SXM4 80GB", "brand_name": "NVIDIA",
         "max_gpus_per_container": 8, "price_per_gpu_hour": 1.30,
         "locations": [_loc(1, 16), _loc(3, 8)]},
        {"hardware_id": 38, "hardware_name": "RTX 4090", "brand_name": "NVIDIA",
         "max_gpus_per_container": 8, "price_per_gpu_hour": 0.40,
         "locations": [_loc(1, 24), _loc(2, 8), _loc(3, 4)]},
        {"hardware_id": 312, "hardware_name": "H200", "brand_name": "NVIDIA",
         "max_gpus_per_container": 8, "price_per_gpu_hour": 3.10, "locations": []},
    ]


def _validation(errors):
    return ApiError(Response(422, {"detail": errors}))


def _missing(where, name, inp):
    return {"type": "missing", "loc": [where, name], "msg": "Field required", "input": inp}


def _as_int(value, where, name, errors, minimum=None):
    if isinstance(value, int) and not isinstance(value, bool):
        v = value
    elif isinstance(value, float) and value.is_integer():
        v = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        v = int(value)
    else:
        errors.append({"type": "int_parsing", "loc": [where, name],
                       "msg": "Input should be a valid integer, unable to parse string as an "
                              "integer" if isinstance(value, str) else
                              "Input should be a valid integer", "input": value})
        return None
    if minimum is not None and v < minimum:
        errors.append({"type": "greater_than_equal", "loc": [where, name],
                       "msg": "Input should be greater than or equal to %d" % minimum,
                       "input": value, "ctx": {"ge": minimum}})
        return None
    return v


def _int_list(value):
    """location_ids from "[1,2]", "1,2", [1, 2], or ["1", "2"]; None when unparsable."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                items = json.loads(s)
            except ValueError:
                return None
            if not isinstance(items, list):
                return None
        else:
            items = [x for x in s.split(",") if x.strip()]
    else:
        return None
    out = []
    for x in items:
        try:
            out.append(int(x))
        except (TypeError, ValueError):
            return None
    return out


class IonetFake(FakeProvider):
    name = "ionet"
    PATH_PREFIXES = ("/enterprise/v1/io-cloud",)
    DEFAULT_SETTINGS = {"hour_seconds": 3600.0, "preempt_status": "terminated"}

    @classmethod
    def add_args(cls, ap):
        ap.add_argument("--api-key", default="test-ionet-key", help="the accepted x-api-key")

    def on_reset(self):
        self.catalogue = default_catalogue()
        self.extra_ids = []

    def on_config(self, cfg):
        if "offers" in cfg:
            offers = cfg["offers"]
            if offers is None:
                self.catalogue = default_catalogue()
            elif not isinstance(offers, list):
                raise ValueError("offers must be a list of hardware objects")
            else:
                cat = []
                for h in offers:
                    h = copy.deepcopy(h)
                    h.setdefault("brand_name", "NVIDIA")
                    h.setdefault("max_gpus_per_container", 8)
                    h.setdefault("price_per_gpu_hour", 1.0)
                    h.setdefault("locations", [])
                    for loc in h["locations"]:
                        lid = loc.get("id")
                        if lid in LOCATIONS:
                            loc.setdefault("iso2", LOCATIONS[lid][0])
                            loc.setdefault("name", LOCATIONS[lid][1])
                        loc.setdefault("gpus_free", 8)
                    cat.append(h)
                self.catalogue = cat
        if "list_extra" in cfg:
            extras = cfg["list_extra"] or []
            if not isinstance(extras, list):
                raise ValueError("list_extra must be a list of deployment objects")
            for iid in self.extra_ids:
                inst = self.instances.get(iid)
                if inst is not None and not inst.destroyed:
                    del self.instances[iid]
            self.extra_ids = []
            for e in extras:
                iid = str(e.get("id") or uuid.uuid4())
                name = e.get("name") or e.get("resource_private_name")
                inst = self.new_instance(iid, name)
                inst.extra = True
                inst.phase = "running"
                inst.running_since = inst.created
                inst.running_since_wall = inst.created_wall
                inst.data = {"hardware": {"hardware_id": 0, "hardware_name": "H100",
                                          "brand_name": "NVIDIA", "price_per_gpu_hour": 0},
                             "gpus": 1, "replicas": 1, "hours": 1, "allocation": [],
                             "events": [], "overrides": e, "workers": []}
                self.extra_ids.append(iid)

    # ---- errors and auth ---------------------------------------------------------------------

    def error(self, status, message, kind=None):
        if kind == "rate_limit":
            message = "Too Many Requests"
        elif kind == "server":
            message = "Internal Server Error"
        return Response(status, {"detail": message})

    def auth_error(self, req):
        key = req.header("x-api-key")
        if key == self.opts.api_key:
            return None
        return Response(401, {"detail": "Not authenticated" if not key else "Invalid API key"})

    # ---- catalogue ---------------------------------------------------------------------------

    def _hardware(self, hid):
        for h in self.catalogue:
            if h.get("hardware_id") == hid:
                return h
        return None

    def _available(self, h):
        return sum(int(loc.get("gpus_free") or 0) for loc in h.get("locations") or [])

    def route(self, req):
        p = req.path.rstrip("/") or "/"
        m = req.method
        if p == "/caas/hardware/max-gpus-per-container" and m == "GET":
            return self.hardware(req)
        if p == "/caas/available-replicas" and m == "GET":
            return self.replicas(req)
        if p == "/caas/price" and m == "GET":
            return self.price(req)
        if p == "/caas/deploy" and m == "POST":
            return self.deploy(req)
        if p == "/caas/deployments" and m == "GET":
            return self.list(req)
        mt = re.fullmatch(r"/caas/deployment/([^/]+)(/containers|/extend)?", p)
        if mt:
            did, sub = mt.group(1), mt.group(2)
            if sub is None and m == "GET":
                return self.show(did)
            if sub is None and m == "DELETE":
                return self.destroy(did)
            if sub == "/containers" and m == "GET":
                return self.containers(did)
            if sub == "/extend" and m == "POST":
                return self.extend(req, did)
            return Response(405, {"detail": "Method Not Allowed"})
        return Response(404, {"detail": "Not Found"})

    def hardware(self, req):
        with self.lock:
            hw = [] if self.settings.get("offers_empty") else [
                {"hardware_id": h["hardware_id"], "hardware_name": h["hardware_name"],
                 "brand_name": h.get("brand_name"),
                 "max_gpus_per_container": h.get("max_gpus_per_container"),
                 "available": self._available(h)} for h in self.catalogue]
        return Response(200, {"data": {"hardware": hw, "total": len(hw)}})

    def replicas(self, req):
        errors = []
        q = req.query
        if "hardware_id" not in q:
            errors.append(_missing("query", "hardware_id", None))
            hid = None
        else:
            hid = _as_int(q["hardware_id"], "query", "hardware_id", errors)
        qty = _as_int(q.get("hardware_qty", "1"), "query", "hardware_qty", errors, minimum=1)
        if errors:
            raise _validation(errors)
        with self.lock:
            h = self._hardware(hid)
            out = []
            if h is not None and not self.settings.get("offers_empty") \
                    and qty <= int(h.get("max_gpus_per_container") or 0):
                for loc in h.get("locations") or []:
                    n = int(loc.get("gpus_free") or 0) // qty
                    if n > 0:
                        out.append({"id": loc["id"], "iso2": loc.get("iso2"),
                                    "name": loc.get("name"), "available_replicas": n})
        return Response(200, {"data": out})

    def price(self, req):
        q = req.query
        errors = []
        vals = {}
        for name in ("hardware_id", "gpus_per_container", "duration_hours"):
            if name not in q:
                errors.append(_missing("query", name, None))
            else:
                vals[name] = _as_int(q[name], "query", name, errors, minimum=0 if name ==
                                     "hardware_id" else 1)
        vals["replica_count"] = _as_int(q.get("replica_count", "1"), "query", "replica_count",
                                        errors, minimum=1)
        if "location_ids" not in req.query_multi:
            errors.append(_missing("query", "location_ids", None))
        else:
            raw = req.query_multi["location_ids"]
            locs = _int_list(raw[0] if len(raw) == 1 else raw)
            if locs is None:
                errors.append({"type": "list_type", "loc": ["query", "location_ids"],
                               "msg": "Input should be a valid list", "input": raw})
        if errors:
            raise _validation(errors)
        currency = q.get("currency", "usdc")
        with self.lock:
            h = self._hardware(vals["hardware_id"])
            if h is None:
                return Response(400, {"detail": "Hardware not found"})
            total = (float(h.get("price_per_gpu_hour") or 0) * vals["gpus_per_container"]
                     * vals["duration_hours"] * vals["replica_count"])
        return Response(200, {"data": {"replica_count": vals["replica_count"],
                                       "gpus_per_container": vals["gpus_per_container"],
                                       "duration_hours": vals["duration_hours"],
                                       "currency": currency,
                                       "total_cost_usdc": round(total, 6)}})

    # ---- deploy ------------------------------------------------------------------------------

    def deploy(self, req):
        body = req.json()
        if not isinstance(body, dict):
            raise _validation([{"type": "model_attributes_type", "loc": ["body"],
                                "msg": "Input should be a valid dictionary or object to extract "
                                       "fields from", "input": req.body.decode("utf-8", "replace")}])
        cc = body.get("container_config") if isinstance(body.get("container_config"), dict) else {}
        rc = body.get("registry_config") if isinstance(body.get("registry_config"), dict) else {}
        forms = set()

        def pick(name, nested, default=None):
            if name in nested:
                forms.add("nested")
                return nested[name], True
            if name in body:
                forms.add("flat")
                return body[name], True
            return default, False

        errors = []
        name = body.get("resource_private_name")
        if not isinstance(name, str) or not name:
            errors.append(_missing("body", "resource_private_name", body) if name is None else
                          {"type": "string_type", "loc": ["body", "resource_private_name"],
                           "msg": "Input should be a valid string", "input": name})
        ints = {}
        for field in ("duration_hours", "gpus_per_container", "hardware_id"):
            if field not in body:
                errors.append(_missing("body", field, body))
            else:
                ints[field] = _as_int(body[field], "body", field, errors,
                                      minimum=0 if field == "hardware_id" else 1)
        locs = None
        if "location_ids" not in body:
            errors.append(_missing("body", "location_ids", body))
        else:
            locs = _int_list(body["location_ids"])
            if not locs:
                errors.append({"type": "list_type", "loc": ["body", "location_ids"],
                               "msg": "Input should be a valid non-empty list",
                               "input": body["location_ids"]})
        image, has_image = pick("image_url", rc)
        if not has_image:
            errors.append(_missing("body", "registry_config.image_url", body))
        elif not isinstance(image, str) or not image:
            errors.append({"type": "string_type", "loc": ["body", "registry_config", "image_url"],
                           "msg": "Input should be a valid string", "input": image})
        replicas_raw, _ = pick("replica_count", cc, 1)
        replicas = _as_int(replicas_raw, "body", "replica_count", errors, minimum=1)
        env, _ = pick("env_variables", cc, {})
        secret_env, _ = pick("secret_env_variables", cc, {})
        entrypoint, _ = pick("entrypoint", cc, None)
        args, _ = pick("args", cc, None)
        traffic_port, _ = pick("traffic_port", cc, None)
        pick("registry_username", rc)
        pick("registry_secret", rc)
        if errors:
            raise _validation(errors)
        gpus = ints["gpus_per_container"]
        hours = ints["duration_hours"]
        with self.lock:
            h = self._hardware(ints["hardware_id"])
            if h is None:
                return Response(400, {"detail": "Hardware %d not found" % ints["hardware_id"]})
            if gpus > int(h.get("max_gpus_per_container") or 0):
                return Response(400, {"detail": "gpus_per_container exceeds the maximum of %s "
                                                "for %s" % (h.get("max_gpus_per_container"),
                                                            h.get("hardware_name"))})
            if self.settings.get("no_capacity") or self.settings.get("offers_empty"):
                return Response(400, {"detail": "no capacity"})
            # place the replicas on the listed locations, in order
            need = replicas
            alloc = []
            by_id = {loc["id"]: loc for loc in h.get("locations") or []}
            for lid in locs:
                loc = by_id.get(lid)
                if loc is None or need == 0:
                    continue
                n = min(need, int(loc.get("gpus_free") or 0) // gpus)
                if n > 0:
                    alloc.append((lid, n))
                    need -= n
            if need > 0:
                return Response(400, {"detail": "no capacity"})
            for lid, n in alloc:
                by_id[lid]["gpus_free"] = int(by_id[lid]["gpus_free"]) - n * gpus
            did = str(uuid.uuid4())
            model = None
            if isinstance(env, dict):
                model = env.get("MODEL") or env.get("MODEL_NAME")
            inst = self.new_instance(did, name, model=model, request=body, workers=replicas)
            inst.data = {"hardware": copy.deepcopy({k: v for k, v in h.items()
                                                    if k != "locations"}),
                         "gpus": gpus, "replicas": replicas, "hours": hours,
                         "allocation": alloc, "image": image, "form": "+".join(sorted(forms)),
                         "env": env, "secret_env": secret_env, "entrypoint": entrypoint,
                         "args": args, "traffic_port": traffic_port,
                         "amount_paid": round(float(h.get("price_per_gpu_hour") or 0) * gpus
                                              * replicas * hours, 6),
                         "workers": [{"container_id": "%s-%d" % (uuid.uuid4().hex[:12], i),
                                      "device_id": str(uuid.uuid4())}
                                     for i in range(replicas)],
                         "events": [(time.time(), "Deployment requested")],
                         "loc_names": {lid: (by_id[lid].get("iso2"), by_id[lid].get("name"))
                                       for lid, _ in alloc},
                         "status_override": None}
        return Response(200, {"status": "success", "deployment_id": did})

    def _release(self, inst):
        """Give the GPUs of a finished deployment back to the catalogue.  Lock held."""
        if inst.data.get("released") or inst.extra:
            return
        inst.data["released"] = True
        h = self._hardware(inst.data["hardware"].get("hardware_id"))
        if h is None:
            return
        by_id = {loc["id"]: loc for loc in h.get("locations") or []}
        for lid, n in inst.data.get("allocation") or []:
            if lid in by_id:
                by_id[lid]["gpus_free"] = int(by_id[lid]["gpus_free"]) + n * inst.data["gpus"]

    # ---- lifecycle ---------------------------------------------------------------------------

    def _event(self, inst, msg):
        inst.data.setdefault("events", []).append((time.time(), msg))

    def on_running(self, inst):
        self._event(inst, "Pulled image %s" % inst.data.get("image"))
        self._event(inst, "Container started")

    def on_failed(self, inst):
        self._event(inst, "Error: ImagePullBackOff: failed to pull image \"%s\": manifest "
                          "unknown" % inst.data.get("image"))
        self._release(inst)

    def on_preempted(self, inst):
        self._event(inst, "Container terminated: the worker node went offline")
        self._release(inst)

    def provider_advance(self, inst, now, stops):
        if inst.phase == "pending" and not inst.data.get("pulling") \
                and now - inst.created >= inst.boot_seconds / 3.0:
            inst.data["pulling"] = True
            self._event(inst, "Pulling image %s" % inst.data.get("image"))
        if inst.phase == "running" and not inst.extra:
            hs = float(self.settings.get("hour_seconds") or 3600.0)
            if now - inst.running_since >= inst.data["hours"] * hs:
                inst.phase = "completed"
                inst.ended_wall = time.time()
                stops.extend(inst.runtimes)
                self._event(inst, "Deployment completed: duration elapsed")
                self._release(inst)

    def _status(self, inst):
        ov = (inst.data.get("overrides") or {}).get("status")
        if ov:
            return ov
        return {"pending": "deployment requested", "running": "running", "failed": "failed",
                "completed": "completed", "destroyed": "destroyed",
                "preempted": inst.data.get("preempt_status")
                or str(self.settings.get("preempt_status") or "terminated")}.get(inst.phase,
                                                                                inst.phase)

    def preempt(self, inst, stops):
        inst.data["preempt_status"] = str(self.settings.get("preempt_status") or "terminated")
        super().preempt(inst, stops)

    def view(self, inst):
        d = inst.data
        h = d.get("hardware") or {}
        hs = float(self.settings.get("hour_seconds") or 3600.0)
        served = 0.0
        if inst.running_since is not None:
            end = time.monotonic()
            if inst.phase != "running" and inst.ended_wall is not None:
                end = inst.running_since + (inst.ended_wall - inst.running_since_wall)
            served = max(0.0, end - inst.running_since) / hs * 60.0
        total_min = d.get("hours", 1) * 60.0
        v = {"id": inst.id, "status": self._status(inst), "name": inst.label,
             "resource_private_name": inst.label,
             "hardware_id": h.get("hardware_id"), "hardware_name": h.get("hardware_name"),
             "brand_name": h.get("brand_name"), "gpus_per_container": d.get("gpus"),
             "total_gpus": (d.get("gpus") or 0) * (d.get("replicas") or 0),
             "total_containers": d.get("replicas"), "duration_hours": d.get("hours"),
             "amount_paid": d.get("amount_paid", 0),
             "locations": [{"id": lid, "iso2": (d.get("loc_names") or {}).get(lid, ("", ""))[0],
                            "name": (d.get("loc_names") or {}).get(lid, ("", ""))[1]}
                           for lid, _ in d.get("allocation") or []],
             "created_at": rfc3339(inst.created_wall),
             "started_at": rfc3339(inst.running_since_wall) if inst.running_since_wall else None,
             "finished_at": rfc3339(inst.ended_wall) if inst.ended_wall else None,
             "completed_percent": round(min(100.0, served / total_min * 100.0), 2),
             "compute_minutes_served": round(served, 2),
             "compute_minutes_remaining": round(max(0.0, total_min - served), 2)}
        for k, val in (d.get("overrides") or {}).items():
            v[k] = val
        return v

    def workers(self, inst):
        d = inst.data
        wstatus = {"pending": "pending", "running": "running", "failed": "failed",
                   "preempted": "terminated", "completed": "completed",
                   "destroyed": "destroyed"}.get(inst.phase, inst.phase)
        out = []
        for i, w in enumerate(d.get("workers") or []):
            url = ""
            if inst.phase == "running" and i < len(inst.runtimes):
                url = "http://127.0.0.1:%d" % inst.runtimes[i].port
            out.append({"container_id": w["container_id"], "device_id": w["device_id"],
                        "status": wstatus, "public_url": url,
                        "container_events": [{"time": rfc3339(t), "message": m}
                                             for t, m in d.get("events") or []],
                        "uptime_percent": 100 if inst.phase == "running" else 0,
                        "gpus_per_container": d.get("gpus"),
                        "hardware": (d.get("hardware") or {}).get("hardware_name"),
                        "brand_name": (d.get("hardware") or {}).get("brand_name"),
                        "created_at": rfc3339(inst.created_wall),
                        "started_at": rfc3339(inst.running_since_wall)
                        if inst.running_since_wall else None})
        return out

    # ---- read, extend, destroy, list -----------------------------------------------------------

    def _get(self, did):
        inst = self.instances.get(did)
        if inst is None:
            raise ApiError(Response(404, {"detail": "Deployment not found"}))
        return inst

    def show(self, did):
        with self.lock:
            return Response(200, {"data": self.view(self._get(did))})

    def containers(self, did):
        with self.lock:
            ws = self.workers(self._get(did))
        return Response(200, {"data": {"total": len(ws), "workers": ws}})

    def extend(self, req, did):
        body = req.json()
        errors = []
        if not isinstance(body, dict) or "duration_hours" not in body:
            errors.append(_missing("body", "duration_hours", body))
            raise _validation(errors)
        n = _as_int(body["duration_hours"], "body", "duration_hours", errors, minimum=1)
        if errors:
            raise _validation(errors)
        with self.lock:
            inst = self._get(did)
            if inst.phase not in ("pending", "running"):
                return Response(400, {"detail": "Deployment is %s and cannot be extended"
                                                % self._status(inst)})
            h = inst.data.get("hardware") or {}
            inst.data["hours"] = inst.data.get("hours", 0) + n
            inst.data["amount_paid"] = round(inst.data.get("amount_paid", 0) + float(
                h.get("price_per_gpu_hour") or 0) * inst.data["gpus"] * inst.data["replicas"] * n,
                6)
            self._event(inst, "Deployment extended by %d hour(s)" % n)
            return Response(200, {"status": "success", "deployment_id": did,
                                  "duration_hours": inst.data["hours"]})

    def destroy(self, did):
        stops = []
        with self.lock:
            inst = self.instances.get(did)
            missing = inst is None or inst.destroyed
            if not missing:
                self.destroy_instance(inst, stops)
                self._event(inst, "Deployment destroyed")
                self._release(inst)
            if missing or self.settings.get("destroy_not_found"):
                resp = Response(404, {"detail": "Deployment not found"})
            else:
                resp = Response(200, {"status": "success", "deployment_id": did})
        for rt in stops:
            rt.stop()
        return resp

    def list(self, req):
        q = req.query
        errors = []
        page = _as_int(q.get("page", "1"), "query", "page", errors, minimum=1)
        size = _as_int(q.get("page_size", "1000"), "query", "page_size", errors, minimum=1)
        if errors:
            raise _validation(errors)
        want = q.get("status")
        with self.lock:
            rows = [self.view(i) for i in self.instances.values()]
        if want:
            rows = [r for r in rows if r["status"] == want]
        total = len(rows)
        rows = rows[(page - 1) * size: page * size]
        rows = [{k: v for k, v in r.items() if k != "locations"} for r in rows]
        return Response(200, {"data": {"deployments": rows, "total": total}})


def main():
    return fakelib.run_main(IonetFake)


if __name__ == "__main__":
    sys.exit(main())
