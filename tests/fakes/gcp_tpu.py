#!/usr/bin/python3
"""A fake Google Cloud TPU v2 API (tpu.googleapis.com/v2) and OAuth token endpoint for gpuproxyd.

Standard library only (the `openssl` CLI is used when present: to verify JWT signatures and to
generate test keys; the signature check falls back to pure Python without it).  Usage:
    /usr/bin/python3 tests/fakes/gcp_tpu.py --port N [--host 127.0.0.1] [--token TOKEN]
        [--project P] [--sa-key-file KEY.json]... [--sa-public-key PEM_OR_PATH]
        [--boot-seconds S] [--verbose] [--exit-with-parent]
    /usr/bin/python3 tests/fakes/gcp_tpu.py --make-sa-key KEY.json --token-uri URI
        [--client-email EMAIL] [--project P]        (writes a test service-account key; exits)
Prints "READY <port>" once listening.  Point the daemon at GCP_TPU_BASE_URL=http://127.0.0.1:<port>
(or .../v2: the /v2 prefix is optional), and the key file's token_uri at http://127.0.0.1:<port>/token.

Auth: `Authorization: Bearer TOKEN`, TOKEN from --token (default "test-gcp-token") or one this
fake issued at /token and that has not expired.  Otherwise 401
{"error":{"code":401,"message":"Request had invalid authentication credentials...",
"status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
"reason":"CREDENTIALS_MISSING"|"ACCESS_TOKEN_EXPIRED"|"ACCESS_TOKEN_TYPE_UNSUPPORTED",...}]}}.
With --project P, other projects get 403 PERMISSION_DENIED.

Routes ({p} project, {z} zone; "-" as zone lists every zone's nodes):
    POST   /token                form grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
                                 &assertion=<JWT> -> {"access_token":"ya29.fake-...",
                                 "expires_in":3600,"token_type":"Bearer"}.  Checks: 3 base64url
                                 parts; header alg RS256; claims iss, scope (must include
                                 .../auth/cloud-platform), aud (the URL this endpoint was called
                                 at, http://<Host>/token, or Google's own token URLs), exp, iat
                                 (exp > now, iat not in the future beyond 5 min, exp - iat <=
                                 3600).  The RS256 signature is verified when a public key is
                                 known for iss (--sa-key-file) or generally (--sa-public-key,
                                 setting sa_public_key): with `openssl dgst -sha256 -verify`
                                 when openssl is on PATH, else in pure Python (verify_with).
                                 Errors: 400 {"error":"invalid_grant"|"invalid_request"|
                                 "unsupported_grant_type"|"invalid_scope",
                                 "error_description":"..."}.  No faults except token_fail_next.
    GET    /projects/{p}/locations                       -> {"locations":[{name,locationId}]}
    GET    /projects/{p}/locations/{z}/acceleratorTypes   -> {"acceleratorTypes":[{name,type,
                                                            acceleratorConfigs:[{type,topology}]}]}
    GET    /projects/{p}/locations/{z}/acceleratorTypes/{t}
    POST   /projects/{p}/locations/{z}/nodes?nodeId={id}  body {"acceleratorType" (or
                                 "acceleratorConfig"), "runtimeVersion", "networkConfig",
                                 "schedulingConfig", "labels", "metadata", ...}
                                 -> Operation {"name":"projects/p/locations/z/operations/op-N",
                                 "metadata":{...,"verb":"create"},"done":false}.
                                 400 INVALID_ARGUMENT: nodeId missing/invalid (lowercase letter,
                                 then [-a-z0-9], <= 63, no trailing '-'), no acceleratorType or
                                 runtimeVersion, bad labels (keys ^[a-z][a-z0-9_-]{0,62}$, values
                                 ^[a-z0-9_-]{0,63}$, at most 64), type not offered in the zone.
                                 409 ALREADY_EXISTS: a live node has that id.  quota_exceeded:
                                 quota_http_status (429 RESOURCE_EXHAUSTED, or 403
                                 PERMISSION_DENIED) with details ErrorInfo reason "quotaExceeded"
                                 (and the legacy errors[].reason "quotaExceeded").
    GET    /projects/{p}/locations/{z}/operations/{op}    -> the Operation; "done": true once the
                                 node is READY ("response" = the node, @type ...v2.Node), or
                                 with "error":{"code","message"}: no_capacity -> code 8 "There is
                                 no more capacity in the zone \"z\"; ..." (the node is gone
                                 afterwards); image_fails -> code 13 (the node stays, state
                                 TERMINATED: the daemon must delete it); deleted while
                                 creating -> code 10.  Delete operations are done after
                                 delete_seconds with response {"@type":".../google.protobuf.Empty"}.
    GET    /projects/{p}/locations/{z}/nodes/{id}         -> the node; 404 NOT_FOUND once gone
    GET    /projects/{p}/locations/{z}/nodes[?pageSize=N&pageToken=T] -> {"nodes":[...]}
                                 (with labels; "nextPageToken" when there are more)
    DELETE /projects/{p}/locations/{z}/nodes/{id}         -> Operation (verb "delete"); the node
                                 is DELETING (runtime stopped at once) for delete_seconds, then
                                 gone.  Missing or destroy_not_found: 404 NOT_FOUND.

Node: name, id, acceleratorType, acceleratorConfig{type,topology}, runtimeVersion, state,
health ("HEALTHY" when READY), healthDescription, networkConfig, schedulingConfig, labels,
metadata, serviceAccount, cidrBlock, createTime, apiVersion "V2", networkEndpoints.
States: CREATING -> READY at boot_seconds; PREEMPTED (preempt_after_seconds, spot or not);
DELETING; TERMINATED (image_fails).  stuck: CREATING forever, the operation never done.

THE RUNTIME ENDPOINT: once READY, networkEndpoints = [{"ipAddress":"127.0.0.1","port":<runtime
port>,"accessConfig":{"externalIp":"127.0.0.1"}}]; accessConfig only when the create asked for
networkConfig.enableExternalIps = true (GCP's default is false).  The daemon should use
http://{accessConfig.externalIp or ipAddress}:{port} of networkEndpoints[0].  (A real TPU VM
reports port 8470, the TPU runtime's gRPC port, there; the fake reports the port its runtime
listens on, since every fake runtime needs its own loopback port.  A daemon that normally uses
its runtime recipe's port on the external IP should take networkEndpoints[].port when the base
URL is overridden, or be told the port another way.)

Settings (POST /_fake/config; see fakelib.py for the control API and the common ones):
    boot_seconds, rate_limit_next (429 RESOURCE_EXHAUSTED, reason RATE_LIMIT_EXCEEDED),
    fail_next (500 INTERNAL), slow_ms, stuck, image_fails, preempt_after_seconds, no_capacity,
    offers_empty (no accelerator types anywhere: creates answer 400), destroy_not_found,
    list_extra (node objects: {"nodeId" or "name", "zone", "labels", "acceleratorType", ...},
    shown READY without a runtime), offers (the catalogue: [{"zone","acceleratorType"
    [,"topology"]}]), and:
    quota_exceeded      creates answer the quota error
    quota_http_status   429 (default) or 403
    delete_seconds      how long a node stays DELETING (default 0.2)
    token_fail_next     answer the next N /token calls with 500
    token_expires_in    lifetime of issued tokens in seconds (default 3600)
    require_signature   reject assertions when no public key is known (default false: then the
                        signature is not checked, only the structure)
    sa_public_key       PEM text of a public key accepted for any iss
    verify_with         "auto" (openssl if found, else python), "openssl", "python"
    omit_defaults       answer proto3-style JSON as Google APIs usually do: no "done": false, no
                        empty "nodes" list (unverified for the TPU API; the doc shows
                        "done": false, so it is off by default)
GET /_fake/state also lists "operations" and "tokens" (issued tokens: iss, signature check).
Issued tokens and keys survive POST /_fake/reset.

Helpers for tests (importable): make_sa_key(path, token_uri, ...) -> dict (uses openssl
genpkey), sign_jwt(sa_key_dict, claims) -> str (pure Python RS256), jwt_assertion(sa_key_dict,
aud=None, scope=...), rs256_verify(pub_pem, signing_input, sig, use_openssl=None).
"""

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402
from fakelib import ApiError, FakeProvider, Response, rfc3339  # noqa: E402

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URLS = ("https://oauth2.googleapis.com/token",
                     "https://www.googleapis.com/oauth2/v4/token",
                     "https://accounts.google.com/o/oauth2/token")

# ------------------------------------------------------------------------------------------------
# base64url, DER, RSA (just enough for RS256)


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    if isinstance(s, str):
        s = s.encode()
    if not re.fullmatch(rb"[A-Za-z0-9_-]*={0,2}", s):
        raise ValueError("not base64url")
    s = s.rstrip(b"=")
    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))


def _der_item(data, i):
    """(tag, start, end, next) of the DER item at i."""
    tag = data[i]
    length = data[i + 1]
    i += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[i:i + n], "big")
        i += n
    return tag, i, i + length, i + length


def _der_children(data, start, end):
    out = []
    i = start
    while i < end:
        tag, s, e, i = _der_item(data, i)
        out.append((tag, s, e))
    return out


def _der_int(data, s, e):
    return int.from_bytes(data[s:e], "big")


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _der(tag, content):
    return bytes([tag]) + _der_len(len(content)) + content


def _der_encode_int(v):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return _der(0x02, b)


RSA_OID = bytes.fromhex("06092a864886f70d010101")


def _pem_blocks(pem):
    """[(label, der bytes)] of the PEM blocks in pem."""
    out = []
    for m in re.finditer(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", pem, re.S):
        out.append((m.group(1), base64.b64decode("".join(m.group(2).split()))))
    return out


def _spki_to_ne(der, s, e):
    alg, bits = _der_children(der, s, e)[:2]
    # bit string: one byte of unused bits, then RSAPublicKey
    tag, ks, ke, _ = _der_item(der, bits[1] + 1)
    n, ee = _der_children(der, ks, ke)[:2]
    return _der_int(der, n[1], n[2]), _der_int(der, ee[1], ee[2])


def load_rsa_key(pem):
    """{"n", "e"[, "d"]} from a PEM public key (PUBLIC KEY, RSA PUBLIC KEY), private key (PRIVATE
    KEY, RSA PRIVATE KEY) or CERTIFICATE.  ValueError if none is found."""
    for label, der in _pem_blocks(pem):
        tag, s, e, _ = _der_item(der, 0)
        top = _der_children(der, s, e)
        if label == "PUBLIC KEY":
            n, ee = _spki_to_ne(der, s, e)
            return {"n": n, "e": ee}
        if label == "RSA PUBLIC KEY":
            return {"n": _der_int(der, top[0][1], top[0][2]),
                    "e": _der_int(der, top[1][1], top[1][2])}
        if label in ("PRIVATE KEY", "RSA PRIVATE KEY"):
            if label == "PRIVATE KEY":  # PKCS#8: version, algorithm, octet string(RSAPrivateKey)
                octet = top[2]
                tag, s2, e2, _ = _der_item(der, octet[1])
                top = _der_children(der, s2, e2)
            ints = [_der_int(der, a, b) for _, a, b in top[:4]]
            return {"n": ints[1], "e": ints[2], "d": ints[3]}
        if label == "CERTIFICATE":
            tbs = top[0]
            fields = _der_children(der, tbs[1], tbs[2])
            if fields and fields[0][0] == 0xA0:  # explicit version
                fields = fields[1:]
            spki = fields[5]
            n, ee = _spki_to_ne(der, spki[1], spki[2])
            return {"n": n, "e": ee}
    raise ValueError("no RSA key in the PEM text")


def public_pem(key):
    """SubjectPublicKeyInfo PEM of {"n", "e"}."""
    rsa_pub = _der(0x30, _der_encode_int(key["n"]) + _der_encode_int(key["e"]))
    spki = _der(0x30, _der(0x30, RSA_OID + b"\x05\x00") + _der(0x03, b"\x00" + rsa_pub))
    b = base64.b64encode(spki).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _emsa_pkcs1_v15(msg, k):
    t = SHA256_DIGEST_INFO + hashlib.sha256(msg).digest()
    if k < len(t) + 11:
        raise ValueError("RSA key too short")
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def rs256_sign_python(key, msg):
    k = (key["n"].bit_length() + 7) // 8
    m = int.from_bytes(_emsa_pkcs1_v15(msg, k), "big")
    return pow(m, key["d"], key["n"]).to_bytes(k, "big")


def rs256_verify_python(key, msg, sig):
    k = (key["n"].bit_length() + 7) // 8
    if len(sig) != k:
        return False
    s = int.from_bytes(sig, "big")
    if s >= key["n"]:
        return False
    em = pow(s, key["e"], key["n"]).to_bytes(k, "big")
    return secrets.compare_digest(em, _emsa_pkcs1_v15(msg, k))


def rs256_verify_openssl(pub_pem, msg, sig):
    with tempfile.TemporaryDirectory(prefix="fake-gcp-") as d:
        kp = os.path.join(d, "pub.pem")
        sp = os.path.join(d, "sig.bin")
        with open(kp, "w") as f:
            f.write(pub_pem)
        with open(sp, "wb") as f:
            f.write(sig)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", kp, "-signature", sp],
                           input=msg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        return r.returncode == 0


def rs256_verify(pub_pem, msg, sig, use_openssl=None):
    """(ok, method).  use_openssl None: openssl when on PATH, else pure Python."""
    if use_openssl is None:
        use_openssl = shutil.which("openssl") is not None
    if use_openssl:
        return rs256_verify_openssl(pub_pem, msg, sig), "openssl"
    return rs256_verify_python(load_rsa_key(pub_pem), msg, sig), "python"


# ------------------------------------------------------------------------------------------------
# service-account keys and JWT assertions (helpers for tests)


def make_sa_key(path, token_uri, client_email="gpd-test@fake-project.iam.gserviceaccount.com",
                project_id="fake-project", bits=2048):
    """Write a service-account JSON key file (private key from `openssl genpkey`); return it."""
    r = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:%d" % bits], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=True, timeout=60)
    pem = r.stdout.decode()
    key = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(100000000000000000000 + secrets.randbelow(10 ** 20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                + client_email.replace("@", "%40"),
        "universe_domain": "googleapis.com",
    }
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(key, f, indent=2)
    return key


def sign_jwt(sa_key, claims, header=None):
    """An RS256 JWT of claims signed with sa_key["private_key"] (pure Python)."""
    h = {"alg": "RS256", "typ": "JWT"}
    if sa_key.get("private_key_id"):
        h["kid"] = sa_key["private_key_id"]
    h.update(header or {})
    signing_input = (b64url_encode(json.dumps(h, separators=(",", ":")).encode()) + "."
                     + b64url_encode(json.dumps(claims, separators=(",", ":")).encode()))
    sig = rs256_sign_python(load_rsa_key(sa_key["private_key"]), signing_input.encode())
    return signing_input + "." + b64url_encode(sig)


def jwt_assertion(sa_key, aud=None, scope=CLOUD_PLATFORM, now=None, lifetime=3600, **extra):
    """The assertion a client sends to token_uri for sa_key."""
    now = int(time.time() if now is None else now)
    claims = {"iss": sa_key["client_email"], "scope": scope,
              "aud": aud or sa_key["token_uri"], "iat": now, "exp": now + lifetime}
    claims.update(extra)
    return sign_jwt(sa_key, claims)


# ------------------------------------------------------------------------------------------------
# the catalogue

TOPOLOGY = {
    "v2-8": "2x2", "v3-8": "2x2", "v4-8": "2x2x1", "v4-16": "2x2x2", "v4-32": "2x2x4",
    "v5litepod-1": "1x1", "v5litepod-4": "2x2", "v5litepod-8": "2x4", "v5litepod-16": "4x4",
    "v5p-8": "2x2x1", "v5p-16": "2x2x2", "v6e-1": "1x1", "v6e-4": "2x2", "v6e-8": "2x4",
}
CONFIG_TYPE = {"v2": "V2", "v3": "V3", "v4": "V4", "v5litepod": "V5LITE_POD", "v5p": "V5P",
               "v6e": "V6E"}

DEFAULT_CATALOGUE = [
    ("us-central1-a", ["v2-8", "v3-8"]),
    ("us-central2-b", ["v4-8", "v4-16", "v4-32"]),
    ("us-west4-a", ["v5litepod-1", "v5litepod-4", "v5litepod-8", "v5litepod-16"]),
    ("us-east5-a", ["v5p-8", "v5p-16"]),
    ("europe-west4-a", ["v2-8", "v3-8", "v5litepod-8"]),
    ("us-east1-d", ["v6e-1", "v6e-4", "v6e-8"]),
]


def default_catalogue():
    return [{"zone": z, "acceleratorType": t, "topology": TOPOLOGY.get(t, "")}
            for z, types in DEFAULT_CATALOGUE for t in types]


def config_type(acc_type):
    return CONFIG_TYPE.get(acc_type.rsplit("-", 1)[0], acc_type.rsplit("-", 1)[0].upper())


NODE_ID_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")

UNAUTH_MSG = ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
              "login cookie or other valid authentication credential. See "
              "https://developers.google.com/identity/sign-in/web/devconsole-project.")


def gerror(code, status, message, details=None, errors=None):
    e = {"code": code, "message": message, "status": status}
    if details:
        e["details"] = details
    if errors:
        e["errors"] = errors
    return {"error": e}


def error_info(reason, metadata=None):
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
            "domain": "googleapis.com", "metadata": metadata or {"service": "tpu.googleapis.com"}}


class GcpTpuFake(FakeProvider):
    name = "gcp_tpu"
    PATH_PREFIXES = ("/v2",)
    DEFAULT_SETTINGS = {
        "quota_exceeded": False, "quota_http_status": 429, "delete_seconds": 0.2,
        "token_fail_next": 0, "token_expires_in": 3600, "require_signature": False,
        "sa_public_key": None, "verify_with": "auto", "omit_defaults": False,
    }

    @classmethod
    def add_args(cls, ap):
        ap.add_argument("--token", default="test-gcp-token",
                        help="a Bearer token always accepted (besides those issued at /token)")
        ap.add_argument("--project", default=None, help="only this project exists (else any)")
        ap.add_argument("--sa-key-file", action="append", default=[],
                        help="service-account key JSON whose client_email's assertions are "
                             "verified with its key (repeatable)")
        ap.add_argument("--sa-public-key", default=None,
                        help="PEM (text or a file path) accepted for any iss")
        ap.add_argument("--make-sa-key", metavar="PATH", default=None,
                        help="write a test service-account key file and exit")
        ap.add_argument("--token-uri", default=None, help="token_uri for --make-sa-key")
        ap.add_argument("--client-email", default="gpd-test@fake-project.iam.gserviceaccount.com")

    @staticmethod
    def early_exit(args):
        if args.make_sa_key:
            token_uri = args.token_uri or "http://127.0.0.1:%d/token" % (args.port or 0)
            make_sa_key(args.make_sa_key, token_uri, client_email=args.client_email,
                        project_id=args.project or "fake-project")
            return 0
        return None

    def __init__(self, opts):
        self.tokens = {}           # token -> {"expires": monotonic, "iss", "signature"}
        self.keys = {}             # iss -> public PEM
        self.default_key = None
        for path in getattr(opts, "sa_key_file", None) or []:
            with open(path) as f:
                k = json.load(f)
            self.keys[k["client_email"]] = public_pem(load_rsa_key(k["private_key"]))
        spk = getattr(opts, "sa_public_key", None)
        if spk:
            if "-----BEGIN" not in spk:
                with open(spk) as f:
                    spk = f.read()
            self.default_key = public_pem(load_rsa_key(spk))
        super().__init__(opts)

    def on_reset(self):
        self.catalogue = default_catalogue()
        self.ops = {}
        self.op_counter = 0
        self.extra_ids = []

    def extra_state(self):
        return {"operations": [self.op_view(o) for o in self.ops.values()],
                "tokens": [{"token": t[:16] + "...", "iss": v["iss"], "signature": v["signature"],
                            "expired": v["expires"] <= time.monotonic()}
                           for t, v in self.tokens.items()]}

    def on_config(self, cfg):
        if "offers" in cfg:
            offers = cfg["offers"]
            if offers is None:
                self.catalogue = default_catalogue()
            elif not isinstance(offers, list):
                raise ValueError("offers must be a list of {zone, acceleratorType}")
            else:
                cat = []
                for o in offers:
                    if not isinstance(o, dict) or not o.get("zone") or not o.get("acceleratorType"):
                        raise ValueError("each offer needs zone and acceleratorType")
                    o = dict(o)
                    o.setdefault("topology", TOPOLOGY.get(o["acceleratorType"], ""))
                    cat.append(o)
                self.catalogue = cat
        if cfg.get("sa_public_key"):
            load_rsa_key(cfg["sa_public_key"])  # ValueError -> 400
        if "quota_http_status" in cfg and int(cfg["quota_http_status"]) not in (403, 429):
            raise ValueError("quota_http_status must be 403 or 429")
        if "list_extra" in cfg:
            extras = cfg["list_extra"] or []
            if not isinstance(extras, list):
                raise ValueError("list_extra must be a list of node objects")
            for iid in self.extra_ids:
                inst = self.instances.get(iid)
                if inst is not None and not inst.destroyed:
                    del self.instances[iid]
            self.extra_ids = []
            for e in extras:
                e = dict(e)
                if e.get("name"):
                    name = e.pop("name")
                    m = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/nodes/([^/]+)", name)
                    if not m:
                        raise ValueError("bad node name %r" % name)
                    project, zone, node_id = m.groups()
                else:
                    project = e.pop("project", self.opts.project or "fake-project")
                    zone = e.pop("zone", "us-west4-a")
                    node_id = e.pop("nodeId", "orphan-%d" % (len(self.extra_ids) + 1))
                name = "projects/%s/locations/%s/nodes/%s" % (project, zone, node_id)
                body = {"acceleratorType": e.pop("acceleratorType", "v5litepod-8"),
                        "runtimeVersion": e.pop("runtimeVersion", "v2-alpha-tpuv5-lite"),
                        "labels": e.pop("labels", {}),
                        "networkConfig": {"enableExternalIps": True}}
                inst = self.new_instance(name, None, request=body)
                inst.extra = True
                inst.phase = "running"
                inst.running_since = inst.created
                inst.running_since_wall = inst.created_wall
                inst.data = {"project": project, "zone": zone, "node_id": node_id,
                             "numeric_id": str(secrets.randbelow(10 ** 18)), "overrides": e}
                self.extra_ids.append(name)

    # ---- errors and auth ---------------------------------------------------------------------

    def error(self, status, message, kind=None):
        if kind == "rate_limit":
            return Response(429, gerror(
                429, "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of "
                "service 'tpu.googleapis.com' (fake rate_limit_next).",
                [error_info("RATE_LIMIT_EXCEEDED", {"service": "tpu.googleapis.com",
                                                    "quota_metric": "tpu.googleapis.com/requests"})]))
        if kind == "server":
            return Response(500, gerror(500, "INTERNAL", "Internal error encountered."))
        if kind == "not_found":
            return Response(404, gerror(404, "NOT_FOUND", message))
        if kind == "auth":
            return Response(401, gerror(401, "UNAUTHENTICATED", UNAUTH_MSG),
                            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        status_name = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                       409: "ALREADY_EXISTS"}.get(status, "UNKNOWN")
        return Response(status, gerror(status, status_name, message))

    def auth_error(self, req):
        auth = req.header("Authorization") or ""
        reason = "CREDENTIALS_MISSING"
        if auth.startswith("Bearer "):
            tok = auth[7:].strip()
            if self.opts.token and tok == self.opts.token:
                return None
            with self.lock:
                info = self.tokens.get(tok)
            if info is not None:
                if info["expires"] > time.monotonic():
                    return None
                reason = "ACCESS_TOKEN_EXPIRED"
            else:
                reason = "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        elif auth:
            reason = "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        return Response(401, gerror(401, "UNAUTHENTICATED", UNAUTH_MSG,
                                    [error_info(reason, {"service": "tpu.googleapis.com",
                                                         "method": "google.cloud.tpu.v2.Tpu"})]),
                        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                                     'error="invalid_token"'})

    # ---- the token endpoint --------------------------------------------------------------------

    def pre_route(self, req):
        if req.path.rstrip("/") != "/token":
            return None
        if req.method != "POST":
            return Response(405, {"error": "invalid_request",
                                  "error_description": "The token endpoint takes POST"})
        if self.take_counter("token_fail_next"):
            return Response(500, {"error": "internal_failure",
                                  "error_description": "fake token_fail_next"})

        def bad(err, desc):
            return Response(400, {"error": err, "error_description": desc})

        form = req.form()
        grant = form.get("grant_type")
        if not grant:
            return bad("invalid_request", "Missing required parameter: grant_type")
        if grant != JWT_GRANT:
            return bad("unsupported_grant_type", "Invalid grant_type: %s" % grant)
        assertion = form.get("assertion")
        if not assertion:
            return bad("invalid_request", "Missing required parameter: assertion")
        parts = assertion.split(".")
        if len(parts) != 3:
            return bad("invalid_grant", "Invalid JWT: the assertion must have 3 parts")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            return bad("invalid_grant", "Invalid JWT: the parts are not base64url JSON")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return bad("invalid_grant", "Invalid JWT: header and claims must be JSON objects")
        if header.get("alg") != "RS256":
            return bad("invalid_grant", "Invalid JWT: alg must be RS256, got %r"
                       % header.get("alg"))
        for c in ("iss", "scope", "aud", "exp", "iat"):
            if c not in claims:
                return bad("invalid_grant", "Invalid JWT: missing claim %s" % c)
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (exp, iat)):
            return bad("invalid_grant", "Invalid JWT: exp and iat must be numbers")
        now = time.time()
        if exp <= now or iat > now + 300 or exp - iat > 3600 or exp <= iat:
            return bad("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 "
                       "minutes) and in a reasonable timeframe. Check your iat and exp values "
                       "in the JWT claim.")
        host = req.header("Host") or ""
        own = {"http://%s%s" % (host, req.raw_path), "https://%s%s" % (host, req.raw_path)}
        if claims["aud"] not in own and claims["aud"] not in GOOGLE_TOKEN_URLS:
            return bad("invalid_grant", "Invalid JWT: aud %r is not this token endpoint (%s)"
                       % (claims["aud"], sorted(own)[0]))
        scopes = str(claims["scope"]).split()
        if CLOUD_PLATFORM not in scopes:
            return bad("invalid_scope", "Invalid OAuth scope or ID token audience provided: "
                       "cloud-platform is required")
        with self.lock:
            pem = self.keys.get(claims["iss"]) or self.default_key
            if pem is None and self.settings.get("sa_public_key"):
                pem = public_pem(load_rsa_key(self.settings["sa_public_key"]))
            require = bool(self.settings.get("require_signature"))
            verify_with = str(self.settings.get("verify_with") or "auto")
            lifetime = float(self.settings.get("token_expires_in") or 3600)
        if pem is None:
            if require:
                return bad("invalid_grant", "Invalid grant: account not found")
            signature = "unchecked"
        else:
            use = {"auto": None, "openssl": True, "python": False}.get(verify_with)
            signing_input = (parts[0] + "." + parts[1]).encode()
            try:
                ok, method = rs256_verify(pem, signing_input, sig, use)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                return Response(500, {"error": "internal_failure",
                                      "error_description": "signature check failed: %s" % e})
            if not ok:
                return bad("invalid_grant", "Invalid JWT Signature.")
            signature = "verified (%s)" % method
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = {"expires": time.monotonic() + lifetime, "iss": claims["iss"],
                                  "signature": signature}
        return Response(200, {"access_token": token, "expires_in": int(lifetime),
                              "token_type": "Bearer"})

    # ---- routes --------------------------------------------------------------------------------

    def route(self, req):
        p = req.path.rstrip("/")
        m = req.method
        mt = re.fullmatch(r"/projects/([^/]+)/locations(?:/([^/]+)(?:/(\w+)(?:/([^/]+))?)?)?", p)
        if not mt:
            return self.error(404, "The requested URL %s was not found." % req.path, "not_found")
        project, zone, coll, item = mt.groups()
        if self.opts.project and project != self.opts.project:
            return self.error(403, "Permission denied on resource project %s." % project)
        if zone is None:
            if m == "GET":
                return self.locations(project)
        elif coll is None:
            if m == "GET":
                return Response(200, {"name": "projects/%s/locations/%s" % (project, zone),
                                      "locationId": zone})
        elif coll == "acceleratorTypes" and m == "GET":
            return self.accelerator_types(project, zone, item)
        elif coll == "nodes":
            if item is None and m == "POST":
                return self.create(req, project, zone)
            if item is None and m == "GET":
                return self.list(req, project, zone)
            if item is not None and m == "GET":
                return self.show(project, zone, item)
            if item is not None and m == "DELETE":
                return self.delete(project, zone, item)
        elif coll == "operations" and item is not None and m == "GET":
            return self.get_op("projects/%s/locations/%s/operations/%s" % (project, zone, item))
        return self.error(404, "The requested URL %s was not found." % req.path, "not_found")

    def _zones(self):
        zones = []
        for o in self.catalogue:
            if o["zone"] not in zones:
                zones.append(o["zone"])
        return zones

    def locations(self, project):
        with self.lock:
            zones = self._zones()
        return Response(200, {"locations": [
            {"name": "projects/%s/locations/%s" % (project, z), "locationId": z} for z in zones]})

    def _acc_type(self, project, zone, o):
        return {"name": "projects/%s/locations/%s/acceleratorTypes/%s"
                        % (project, zone, o["acceleratorType"]),
                "type": o["acceleratorType"],
                "acceleratorConfigs": [{"type": config_type(o["acceleratorType"]),
                                        "topology": o.get("topology", "")}]}

    def accelerator_types(self, project, zone, item):
        with self.lock:
            offered = [] if self.settings.get("offers_empty") else [
                o for o in self.catalogue if o["zone"] == zone]
            omit = self.settings.get("omit_defaults")
        if item is not None:
            for o in offered:
                if o["acceleratorType"] == item:
                    return Response(200, self._acc_type(project, zone, o))
            return self.error(404, "Resource 'projects/%s/locations/%s/acceleratorTypes/%s' was "
                              "not found" % (project, zone, item), "not_found")
        types = [self._acc_type(project, zone, o) for o in offered]
        return Response(200, {} if omit and not types else {"acceleratorTypes": types})

    # ---- create ----------------------------------------------------------------------------------

    def create(self, req, project, zone):
        node_id = req.query.get("nodeId")
        parent = "projects/%s/locations/%s" % (project, zone)
        if not node_id:
            return self.error(400, "Invalid value for field 'nodeId': ''. nodeId is required.")
        if not NODE_ID_RE.fullmatch(node_id):
            return self.error(400, "Invalid value for field 'nodeId': '%s'. Must start with a "
                              "lowercase letter, contain only lowercase letters, digits and "
                              "hyphens, end with a letter or digit, and be at most 63 characters."
                              % node_id)
        body = req.json()
        if not isinstance(body, dict):
            return self.error(400, "Invalid JSON payload received: the body must be a Node "
                              "object.")
        acc = body.get("acceleratorType")
        cfg = body.get("acceleratorConfig")
        if not acc and not (isinstance(cfg, dict) and cfg.get("type")):
            return self.error(400, "Invalid value for field 'node.acceleratorType': ''. "
                              "acceleratorType or acceleratorConfig is required.")
        if not body.get("runtimeVersion"):
            return self.error(400, "Invalid value for field 'node.runtimeVersion': ''. "
                              "runtimeVersion is required.")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or len(labels) > 64:
            return self.error(400, "Invalid value for field 'node.labels': at most 64 labels.")
        for k, v in labels.items():
            if not LABEL_KEY_RE.fullmatch(str(k)) or not isinstance(v, str) \
                    or not LABEL_VALUE_RE.fullmatch(v):
                return self.error(400, "Invalid value for field 'node.labels': label %r=%r: keys "
                                  "must match [a-z][a-z0-9_-]{0,62}, values [a-z0-9_-]{0,63}."
                                  % (k, v))
        name = "%s/nodes/%s" % (parent, node_id)
        with self.lock:
            offered = [] if self.settings.get("offers_empty") else [
                o for o in self.catalogue if o["zone"] == zone]
            if acc:
                offer = next((o for o in offered if o["acceleratorType"] == acc), None)
            else:
                offer = next((o for o in offered
                              if config_type(o["acceleratorType"]) == cfg.get("type")
                              and o.get("topology") == cfg.get("topology")), None)
            if offer is None:
                return self.error(400, "Accelerator type %s is not available in zone %s."
                                  % (acc or "%s %s" % (cfg.get("type"), cfg.get("topology")),
                                     zone))
            if self.settings.get("quota_exceeded"):
                return self.quota_error(project, zone, offer["acceleratorType"])
            old = self.instances.get(name)
            if old is not None and not old.destroyed:
                return self.error(409, "Resource '%s' already exists" % name)
            if old is not None:
                del self.instances[name]  # the id is free again once the old node is gone
            md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            model = md.get("model") or labels.get("model_name") or labels.get("model")
            inst = self.new_instance(name, labels.get("gpd-res") or labels.get("gpd"),
                                     model=model, request=body)
            inst.data = {"project": project, "zone": zone, "node_id": node_id,
                         "numeric_id": str(secrets.randbelow(10 ** 18)),
                         "acceleratorType": offer["acceleratorType"],
                         "topology": offer.get("topology", ""),
                         "no_capacity": bool(self.settings.get("no_capacity")),
                         "overrides": {}}
            op = self.new_op(project, zone, "create", name)
            inst.data["create_op"] = op["name"]
            return Response(200, self.op_view(op))

    def quota_error(self, project, zone, acc):
        status = int(self.settings.get("quota_http_status") or 429)
        family = config_type(acc).replace("_", "").title().replace("Pod", "pod")
        metric = "TPU%sPerProjectPerZoneForTPUAPI" % family
        msg = ("Quota limit '%s' has been exceeded. Limit: 8 in zone %s." % (metric, zone))
        details = [error_info("quotaExceeded", {"service": "tpu.googleapis.com",
                                                "quota_metric": "tpu.googleapis.com/" + metric,
                                                "quota_location": zone,
                                                "consumer": "projects/" + project})]
        legacy = [{"message": msg, "domain": "usageLimits", "reason": "quotaExceeded"}]
        return Response(status, gerror(status, "RESOURCE_EXHAUSTED" if status == 429
                                       else "PERMISSION_DENIED", msg, details, legacy))

    # ---- operations --------------------------------------------------------------------------

    def new_op(self, project, zone, verb, target):
        self.op_counter += 1
        name = "projects/%s/locations/%s/operations/op-%d" % (project, zone, self.op_counter)
        op = {"name": name, "verb": verb, "target": target, "created": time.time(),
              "start": time.monotonic(), "done": False, "error": None, "response": None}
        self.ops[name] = op
        return op

    def finish_op(self, op, error=None, response=None):
        if op is None or op["done"]:
            return
        op["done"] = True
        op["error"] = error
        op["response"] = response
        op["end"] = time.time()

    def op_view(self, op):
        v = {"name": op["name"],
             "metadata": {"@type": "type.googleapis.com/google.cloud.common.OperationMetadata",
                          "createTime": rfc3339(op["created"]), "target": op["target"],
                          "verb": op["verb"], "cancelRequested": False, "apiVersion": "v2"}}
        if op["done"]:
            v["metadata"]["endTime"] = rfc3339(op.get("end"))
            v["done"] = True
            if op["error"] is not None:
                v["error"] = op["error"]
            else:
                v["response"] = op["response"]
        elif not self.settings.get("omit_defaults"):
            v["done"] = False
        return v

    def get_op(self, name):
        with self.lock:
            op = self.ops.get(name)
            if op is None:
                return self.error(404, "Operation '%s' not found." % name, "not_found")
            return Response(200, self.op_view(op))

    # ---- lifecycle ---------------------------------------------------------------------------

    def advance(self, inst, now, stops):
        # no capacity: the create operation fails half-way through the boot, the node goes away
        if inst.phase == "pending" and inst.data.get("no_capacity") and not inst.destroyed \
                and now - inst.created >= inst.boot_seconds / 2.0:
            self.finish_op(self.ops.get(inst.data.get("create_op")), error={
                "code": 8, "message": "There is no more capacity in the zone \"%s\"; you can try "
                                      "in another zone where Cloud TPU Nodes are offered (see "
                                      "https://cloud.google.com/tpu/docs/regions) [EID: 0x%s]"
                                      % (inst.data["zone"], secrets.token_hex(8))})
            inst.message = "no capacity"
            inst.phase = "failed"
            self.destroy_instance(inst, stops)
            return
        if inst.data.get("no_capacity") and inst.phase == "pending":
            return  # (stuck or not yet): never READY
        super().advance(inst, now, stops)

    def on_running(self, inst):
        self.finish_op(self.ops.get(inst.data.get("create_op")), response=dict(
            {"@type": "type.googleapis.com/google.cloud.tpu.v2.Node"}, **self.view(inst)))

    def on_failed(self, inst):
        if not inst.message:
            inst.message = ("The TPU runtime failed to start on the node: runtime version %s "
                            "could not be booted." % (inst.request or {}).get("runtimeVersion"))
        self.finish_op(self.ops.get(inst.data.get("create_op")), error={
            "code": 13, "message": "Internal error: %s" % inst.message})

    def on_preempted(self, inst):
        inst.message = "The node was preempted."

    def provider_advance(self, inst, now, stops):
        if inst.phase == "deleting" and not inst.destroyed \
                and now - inst.data["delete_start"] >= float(
                    self.settings.get("delete_seconds") or 0):
            self.destroy_instance(inst, stops)
            for opname in inst.data.get("delete_ops", []):
                self.finish_op(self.ops.get(opname),
                               response={"@type": "type.googleapis.com/google.protobuf.Empty"})

    def view(self, inst):
        d = inst.data
        req = inst.request or {}
        state = {"pending": "CREATING", "running": "READY", "failed": "TERMINATED",
                 "preempted": "PREEMPTED", "deleting": "DELETING", "stopped": "STOPPED",
                 "destroyed": "DELETING"}.get(inst.phase, "UNKNOWN")
        acc = d.get("acceleratorType") or req.get("acceleratorType")
        v = {"name": inst.id, "id": d.get("numeric_id"),
             "acceleratorType": acc,
             "acceleratorConfig": {"type": config_type(acc or "v5litepod-8"),
                                   "topology": d.get("topology") or TOPOLOGY.get(acc, "")},
             "runtimeVersion": req.get("runtimeVersion"), "state": state,
             "networkConfig": dict({"network": "projects/%s/global/networks/default"
                                    % d.get("project"),
                                    "subnetwork": "projects/%s/regions/%s/subnetworks/default"
                                    % (d.get("project"), (d.get("zone") or "")[:-2])},
                                   **(req.get("networkConfig") or {})),
             "cidrBlock": "10.128.0.0/20",
             "serviceAccount": {"email": "default", "scope": [CLOUD_PLATFORM]},
             "schedulingConfig": req.get("schedulingConfig") or {},
             "labels": req.get("labels") or {}, "metadata": req.get("metadata") or {},
             "createTime": rfc3339(inst.created_wall), "apiVersion": "V2"}
        for k in ("description", "tags", "dataDisks", "shieldedInstanceConfig"):
            if k in req:
                v[k] = req[k]
        if inst.phase == "running":
            v["health"] = "HEALTHY"
        if inst.message and inst.phase in ("failed", "preempted"):
            v["healthDescription"] = inst.message
        if inst.phase in ("running", "preempted", "deleting") and (inst.runtimes or inst.extra):
            port = inst.runtimes[0].port if inst.runtimes else 8470
            ep = {"ipAddress": "127.0.0.1", "port": port}
            if (req.get("networkConfig") or {}).get("enableExternalIps"):
                ep["accessConfig"] = {"externalIp": "127.0.0.1"}
            v["networkEndpoints"] = [ep]
        if self.settings.get("omit_defaults"):
            v = {k: val for k, val in v.items() if val not in ({}, [], None, "")}
        for k, val in (d.get("overrides") or {}).items():
            v[k] = val
        return v

    # ---- read, list, delete ------------------------------------------------------------------

    def _node(self, project, zone, node_id):
        name = "projects/%s/locations/%s/nodes/%s" % (project, zone, node_id)
        inst = self.instances.get(name)
        if inst is None or inst.destroyed:
            raise ApiError(self.error(404, "Resource '%s' was not found" % name, "not_found"))
        return inst

    def show(self, project, zone, node_id):
        with self.lock:
            return Response(200, self.view(self._node(project, zone, node_id)))

    def list(self, req, project, zone):
        errors = []
        try:
            size = int(req.query.get("pageSize") or 0)
            start = int(req.query.get("pageToken") or 0)
        except ValueError:
            errors.append("bad pageSize/pageToken")
        if errors or size < 0 or start < 0:
            return self.error(400, "Invalid pageSize or pageToken.")
        with self.lock:
            nodes = [self.view(i) for i in self.instances.values()
                     if not i.destroyed and i.data.get("project") == project
                     and (zone == "-" or i.data.get("zone") == zone)]
            omit = self.settings.get("omit_defaults")
        out = {}
        page = nodes[start:start + size] if size else nodes[start:]
        if page or not omit:
            out["nodes"] = page
        if size and start + size < len(nodes):
            out["nextPageToken"] = str(start + size)
        return Response(200, out)

    def find_instance(self, iid):
        inst = super().find_instance(iid)
        if inst is None and iid is not None:
            for k, v in self.instances.items():
                if k.endswith("/nodes/%s" % iid):
                    return v
        return inst

    def delete(self, project, zone, node_id):
        stops = []
        name = "projects/%s/locations/%s/nodes/%s" % (project, zone, node_id)
        with self.lock:
            inst = self.instances.get(name)
            if inst is None or inst.destroyed:
                return self.error(404, "Resource '%s' was not found" % name, "not_found")
            if self.settings.get("destroy_not_found"):
                self.destroy_instance(inst, stops)
                resp = self.error(404, "Resource '%s' was not found" % name, "not_found")
            else:
                if inst.phase == "pending":
                    self.finish_op(self.ops.get(inst.data.get("create_op")), error={
                        "code": 10, "message": "The node was deleted during creation."})
                if inst.phase != "deleting":
                    inst.phase = "deleting"
                    inst.data["delete_start"] = time.monotonic()
                    stops.extend(inst.runtimes)
                op = self.new_op(project, zone, "delete", name)
                inst.data.setdefault("delete_ops", []).append(op["name"])
                resp = Response(200, self.op_view(op))
        for rt in stops:
            rt.stop()
        return resp


def main():
    return fakelib.run_main(GcpTpuFake)


if __name__ == "__main__":
    sys.exit(main())
