/*
 * Google Cloud TPU v2: TPU VMs ("nodes") in one zone.  Create and delete
 * answer a long-running Operation, polled every second until done.  Auth
 * is an OAuth2 access token: given as is (GCP_ACCESS_TOKEN), or traded for
 * at the service account's token_uri with an RS256-signed JWT assertion
 * (GOOGLE_APPLICATION_CREDENTIALS), cached until a minute before it expires
 * and fetched again once after a 401.  Shapes: shared/docs/provider-apis.md.
 *
 * Behaviour worth knowing:
 *   - the node id is our label (gpd_label_for keeps it within GCP's node id
 *     rules), so a create is idempotent: a repeated POST answers 409
 *     ALREADY_EXISTS instead of making a second node.  That is why the create
 *     POST, unlike Vast's and IO.net's, is retried after a 5xx, and why a 409
 *     counts as created;
 *   - a create whose Operation ends in an error still reports the node id
 *     with the error (an image that fails leaves a TERMINATED node that must
 *     be deleted; a node that never came, code 8, deletes as "not found");
 *   - search makes one offer, the configured zone, for the requested type
 *     (checked against acceleratorTypes/{type}); its price comes from a small
 *     built-in table of list prices per chip-hour (gpd_gcp_tpu_set_price()
 *     overrides it);
 *   - the endpoint is http://<externalIp or ipAddress>:<port>: the port of
 *     networkEndpoints[0] when present, except 8470 (what a real TPU VM
 *     reports there: the TPU runtime's own gRPC port, not ours), else the
 *     runtime recipe's port, which also travels as the node label gpd-port.
 */
#include <ctype.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "compute/provider.h"
#include "compute/providers/http_call.h"
#include "compute/providers/providers_internal.h"
#include "core/log.h"

#define GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GCP_JWT_GRANT "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define GCP_TPU_GRPC_PORT 8470
#define GCP_POLL_MS 1000
#define GCP_CREATE_POLLS 900      /* 15 min: then the node is left to status polling */
#define GCP_DELETE_POLLS 300
#define GCP_POLL_FAILURES 3       /* consecutive failed polls before giving up */
#define GCP_LIST_PAGES 20
#define GCP_MAX_LIST 1024
#define GCP_MAX_PRICES 16
#define GCP_BEARER "Authorization: Bearer "
#define GCP_TOKEN_MAX 4096        /* an access token, its NUL included */

typedef struct gcp_price {
    char type[32];                /* generation ("v5litepod") */
    double chip_hr, spot_chip_hr;
} gcp_price;

typedef struct gcp_provider {
    gpd_provider base;
    char *project, *zone;
    char *runtime_version;        /* NULL: per generation */
    /* service account */
    EVP_PKEY *key;
    char *client_email, *token_uri, *key_id;
    /* The header every call carries; token is its value part, "" while
     * there is none. */
    char auth[sizeof(GCP_BEARER) - 1 + GCP_TOKEN_MAX];
    char *token;
    uint64_t token_expiry;        /* uv_now() ms; 0: none */
    bool static_token;
    gpd_http_call *token_call;
    gpd__op *ops;
    gcp_price prices[GCP_MAX_PRICES];
    size_t nprices;
    gpd__port_memo ports;
} gcp_provider;

typedef struct gcp_op gcp_op;
typedef void (*gcp_step)(gcp_op *o);

struct gcp_op {
    gpd__op op;
    gcp_provider *p;
    gcp_step step;                /* the request to (re)issue once a token is there */
    bool waiting_token;
    bool auth_retried;
    /* search */
    char tpu_type[48], region[48];
    int count;
    double max_cost;
    /* create */
    char *body;
    int port;
    /* create / status / destroy */
    char id[96];
    char op_name[512];
    int polls, poll_failures;
    /* list */
    char page_token[512];
    int pages;
    gpd_instance_status *list;
    size_t nlist;
};

/* ---- TPU types, prices, zones ---- */

/* "v5litepod-8" -> generation "v5litepod", 8. */
static bool split_type(const char *t, char *gen, size_t genlen, int *n)
{
    const char *dash = t ? strrchr(t, '-') : NULL;
    if (!dash || dash == t || !isdigit((unsigned char)dash[1]))
        return false;
    char *end;
    long v = strtol(dash + 1, &end, 10);
    if (*end || v <= 0 || v > 100000 || (size_t)(dash - t) >= genlen)
        return false;
    memcpy(gen, t, (size_t)(dash - t));
    gen[dash - t] = '\0';
    for (char *c = gen; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    *n = (int)v;
    return true;
}

int gpd__tpu_chips(const char *tpu_type)
{
    char gen[32];
    int n;
    if (!split_type(tpu_type, gen, sizeof(gen), &n))
        return 0;
    /* v5e and v6e name chips; the older ones (and v5p) name TensorCores, two per chip. */
    if (!strcmp(gen, "v5litepod") || !strcmp(gen, "v5e") || !strcmp(gen, "v6e"))
        return n;
    if (!strcmp(gen, "v2") || !strcmp(gen, "v3") || !strcmp(gen, "v4") || !strcmp(gen, "v5p"))
        return n >= 2 ? n / 2 : 1;
    return 0;
}

/* Approximate on-demand list prices, $ per chip-hour (us-central1, 2024),
 * and typical spot prices.  Real bills differ by region and over time:
 * gpd_gcp_tpu_set_price() overrides an entry. */
static const gcp_price builtin_prices[] = {
    { "v2", 1.125, 0.34 },      { "v3", 2.00, 0.60 },     { "v4", 3.22, 0.97 },
    { "v5litepod", 1.20, 0.48 }, { "v5e", 1.20, 0.48 },   { "v5p", 4.20, 1.89 },
    { "v6e", 2.70, 1.08 },
};

static bool price_lookup(const gcp_price *table, size_t n, const char *gen, double *od, double *spot)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(table[i].type, gen)) {
            *od = table[i].chip_hr;
            *spot = table[i].spot_chip_hr;
            return true;
        }
    }
    return false;
}

bool gpd__tpu_price(const char *tpu_type, double *on_demand, double *spot)
{
    char gen[32];
    int n;
    if (!split_type(tpu_type, gen, sizeof(gen), &n))
        return false;
    return price_lookup(builtin_prices, sizeof(builtin_prices) / sizeof(builtin_prices[0]), gen, on_demand, spot);
}

static bool provider_price(const gcp_provider *p, const char *tpu_type, double *od, double *spot)
{
    char gen[32];
    int n;
    if (!split_type(tpu_type, gen, sizeof(gen), &n))
        return false;
    return price_lookup(p->prices, p->nprices, gen, od, spot) || gpd__tpu_price(tpu_type, od, spot);
}

const char *gpd__tpu_runtime_version(const char *tpu_type)
{
    char gen[32];
    int n;
    if (!split_type(tpu_type, gen, sizeof(gen), &n))
        return "tpu-ubuntu2204-base";
    if (!strcmp(gen, "v5litepod") || !strcmp(gen, "v5e"))
        return "v2-alpha-tpuv5-lite";
    if (!strcmp(gen, "v5p"))
        return "v2-alpha-tpuv5";
    if (!strcmp(gen, "v6e"))
        return "v2-alpha-tpuv6e";
    return "tpu-ubuntu2204-base";
}

bool gpd__tpu_zone_matches(const char *zone, const char *region)
{
    /* As selection.c: "US" matches "us-central1-a", "us-central1" matches it too. */
    if (!region || !*region)
        return true;
    size_t n = strlen(region);
    return zone && strncasecmp(region, zone, n) == 0 && (zone[n] == '\0' || zone[n] == '-');
}

void gpd__tpu_node_id(const char *label, char *out, size_t outlen)
{
    /* Labels from gpd_label_for already fit; anything else is forced to. */
    size_t n = 0, cap = outlen ? (outlen - 1 < 63 ? outlen - 1 : 63) : 0;
    if (!outlen)
        return;
    for (const char *s = label ? label : ""; *s && n < cap; s++) {
        unsigned char c = (unsigned char)*s;
        out[n++] = c < 0x80 && isalnum(c) ? (char)tolower(c) : '-';
    }
    while (n > 0 && out[n - 1] == '-')
        n--;
    out[n] = '\0';
    if (n == 0 || !isalpha((unsigned char)out[0])) {
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "gpd-%s", out);
        snprintf(out, outlen, "%.*s", (int)cap, tmp);
        n = strlen(out);
        while (n > 0 && out[n - 1] == '-')
            out[--n] = '\0';
    }
}

/* A label value GCP accepts: [a-z0-9_-], at most 63. */
static void label_value(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    for (; s && *s && n + 1 < outlen && n < 63; s++) {
        unsigned char c = (unsigned char)*s;
        out[n++] = c < 0x80 && (isalnum(c) || c == '_' || c == '-') ? (char)tolower(c) : '-';
    }
    out[n] = '\0';
}

json_t *gpd__tpu_create_body(const gpd_instance_spec *spec, const char *runtime_version)
{
    const gpd_runtime *rt = spec->runtime;
    const char *type = spec->offer ? spec->offer->gpu_model : "";
    int port = rt && rt->port > 0 ? rt->port : 8000;
    char res[64], portv[16];
    /* The label value: our label without "gpd-", i.e. the reservation id made safe. */
    const char *lab = spec->label && !strncmp(spec->label, "gpd-", 4) ? spec->label + 4 : spec->reservation_id;
    label_value(lab, res, sizeof(res));
    snprintf(portv, sizeof(portv), "%d", port);

    /* The startup script: the TPU VM images carry docker; the runtime gets the
     * TPU devices (--privileged) and the host's network (its port is ours). */
    char script[8192] = "#!/bin/bash\n# gpuproxyd runtime\ndocker rm -f gpd-runtime >/dev/null 2>&1 || true\n"
                        "exec docker run -d --name gpd-runtime --restart unless-stopped --privileged --net=host";
    char envline[1024];
    int bad = 0;
    snprintf(envline, sizeof(envline), " -e PORT=%d", port);
    strncat(script, envline, sizeof(script) - strlen(script) - 1);
    if (spec->model) {
        strncat(script, " -e MODEL=", sizeof(script) - strlen(script) - 1);
        bad |= gpd__shell_quote(spec->model, script, sizeof(script));
    }
    strncat(script, " ", sizeof(script) - strlen(script) - 1);
    bad |= gpd__shell_quote(rt && rt->image ? rt->image : "", script, sizeof(script));
    json_t *args = gpd__runtime_args(rt, spec->model, spec->offer ? spec->offer->count : 1);
    size_t i;
    json_t *a;
    json_array_foreach(args, i, a)
    {
        strncat(script, " ", sizeof(script) - strlen(script) - 1);
        bad |= gpd__shell_quote(json_string_value(a), script, sizeof(script));
    }
    json_decref(args);
    strncat(script, "\n", sizeof(script) - strlen(script) - 1);
    if (bad)
        gpd_log_warn("gcp_tpu: startup script truncated", "\"label\":\"%s\"", spec->label ? spec->label : "");

    json_t *b = json_object();
    json_object_set_new(b, "acceleratorType", json_string(type));
    json_object_set_new(b, "runtimeVersion", json_string(runtime_version ? runtime_version
                                                                         : gpd__tpu_runtime_version(type)));
    json_t *net = json_object();
    json_object_set_new(net, "enableExternalIps", json_true());
    json_object_set_new(b, "networkConfig", net);
    json_t *sched = json_object();
    json_object_set_new(sched, "spot", json_boolean(spec->spot));
    json_object_set_new(b, "schedulingConfig", sched);
    json_t *labels = json_object();
    json_object_set_new(labels, "gpd-res", json_string(res));
    json_object_set_new(labels, "gpd-port", json_string(portv));
    json_object_set_new(b, "labels", labels);
    json_t *md = json_object();
    json_object_set_new(md, "startup-script", json_string(script));
    if (spec->model)
        json_object_set_new(md, "model", json_string(spec->model));
    json_object_set_new(b, "metadata", md);
    return b;
}

/* gRPC canonical codes an Operation error carries. */
static enum gpd_prov_err grpc_code_err(long long code, const char *msg)
{
    switch (code) {
    case 0:
        return GPD_PROV_OK;
    case 3:  /* INVALID_ARGUMENT */
    case 11: /* OUT_OF_RANGE */
        return GPD_PROV_BAD_REQUEST;
    case 5: /* NOT_FOUND */
        return GPD_PROV_NOT_FOUND;
    case 7:  /* PERMISSION_DENIED */
    case 16: /* UNAUTHENTICATED */
        return gpd__contains_ci(msg, "quota") ? GPD_PROV_QUOTA : GPD_PROV_AUTH;
    case 8: /* RESOURCE_EXHAUSTED: "no more capacity in the zone", or a quota */
        return gpd__contains_ci(msg, "quota") ? GPD_PROV_QUOTA : GPD_PROV_NO_CAPACITY;
    case 4:  /* DEADLINE_EXCEEDED */
    case 14: /* UNAVAILABLE */
        return gpd__contains_ci(msg, "capacity") ? GPD_PROV_NO_CAPACITY : GPD_PROV_TRANSIENT;
    default:
        return gpd__contains_ci(msg, "no more capacity") ? GPD_PROV_NO_CAPACITY : GPD_PROV_FAILED;
    }
}

void gpd__gcp_parse_operation(const json_t *root, gpd__gcp_op_result *out)
{
    memset(out, 0, sizeof(*out));
    const char *name = json_string_value(json_object_get(root, "name"));
    snprintf(out->name, sizeof(out->name), "%s", name ? name : "");
    const json_t *error = json_object_get(root, "error");
    const json_t *response = json_object_get(root, "response");
    /* proto3 JSON may leave "done": false out; an error or a response means done. */
    out->done = json_is_true(json_object_get(root, "done")) || json_is_object(error) || json_is_object(response);
    out->err = GPD_PROV_OK;
    if (out->done && json_is_object(error)) {
        const char *m = json_string_value(json_object_get(error, "message"));
        long long code = json_integer_value(json_object_get(error, "code"));
        snprintf(out->msg, sizeof(out->msg), "operation error %lld: %s", code, m ? m : "");
        out->err = grpc_code_err(code, m);
        if (out->err == GPD_PROV_OK)
            out->err = GPD_PROV_FAILED;
    }
}

static bool state_is(const char *s, const char *v)
{
    return s && !strcmp(s, v);
}

void gpd__tpu_node_status(const json_t *node, int runtime_port, gpd_instance_status *st)
{
    memset(st, 0, sizeof(*st));
    st->cost_per_hr = -1;
    const char *name = json_string_value(json_object_get(node, "name"));
    const char *slash = name ? strrchr(name, '/') : NULL;
    snprintf(st->id, sizeof(st->id), "%s", slash ? slash + 1 : name ? name : "");
    const json_t *labels = json_object_get(node, "labels");
    const char *res = json_string_value(json_object_get(labels, "gpd-res"));
    if (gpd_label_is_ours(st->id))
        snprintf(st->label, sizeof(st->label), "%.95s", st->id);
    else if (res)
        gpd_label_for(res, st->label, sizeof(st->label));
    const char *port_label = json_string_value(json_object_get(labels, "gpd-port"));
    if (port_label && atoi(port_label) > 0)
        runtime_port = atoi(port_label);

    const char *type = json_string_value(json_object_get(node, "acceleratorType"));
    double od, spot;
    if (type && gpd__tpu_price(type, &od, &spot)) {
        bool is_spot = json_is_true(json_object_get(json_object_get(node, "schedulingConfig"), "spot")) ||
                       json_is_true(json_object_get(json_object_get(node, "schedulingConfig"), "preemptible"));
        st->cost_per_hr = gpd__tpu_chips(type) * (is_spot && spot >= 0 ? spot : od);
    }

    const char *state = json_string_value(json_object_get(node, "state"));
    const char *health = json_string_value(json_object_get(node, "healthDescription"));
    snprintf(st->message, sizeof(st->message), "%s%s%s", state ? state : "STATE_UNSPECIFIED",
             health ? ": " : "", health ? health : "");
    if (state_is(state, "READY")) {
        const json_t *ep = json_array_get(json_object_get(node, "networkEndpoints"), 0);
        const char *ip = json_string_value(json_object_get(json_object_get(ep, "accessConfig"), "externalIp"));
        if (!ip || !*ip)
            ip = json_string_value(json_object_get(ep, "ipAddress"));
        int port = (int)json_integer_value(json_object_get(ep, "port"));
        if (port <= 0 || port > 65535 || port == GCP_TPU_GRPC_PORT)
            port = runtime_port;
        if (ip && *ip && port > 0) {
            st->state = GPD_INSTANCE_RUNNING;
            snprintf(st->endpoint, sizeof(st->endpoint), "http://%s:%d", ip, port);
        } else {
            st->state = GPD_INSTANCE_PENDING;
        }
    } else if (state_is(state, "PREEMPTED") || state_is(state, "TERMINATED") || state_is(state, "STOPPED") ||
               state_is(state, "STOPPING") || state_is(state, "DELETING") || state_is(state, "SUSPENDED") ||
               state_is(state, "SUSPENDING")) {
        st->state = GPD_INSTANCE_STOPPED;
    } else if (state && !strncmp(state, "FAILED", 6)) {
        st->state = GPD_INSTANCE_FAILED;
    } else {
        st->state = GPD_INSTANCE_PENDING; /* CREATING, STARTING, RESTARTING, REIMAGING, REPAIRING, UNKNOWN */
    }
}

/* ---- JWT (RS256) ---- */

size_t gpd__base64url(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t k = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[k++] = tbl[v >> 18 & 63];
        out[k++] = tbl[v >> 12 & 63];
        out[k++] = tbl[v >> 6 & 63];
        out[k++] = tbl[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[k++] = tbl[v >> 18 & 63];
        out[k++] = tbl[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[k++] = tbl[v >> 18 & 63];
        out[k++] = tbl[v >> 12 & 63];
        out[k++] = tbl[v >> 6 & 63];
    }
    out[k] = '\0';
    return k;
}

/* base64url of a JSON object, appended; returns -1 on failure. */
static int append_b64_json(json_t *j, char *out, size_t outlen, size_t *len)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return -1;
    size_t n = strlen(text);
    if (*len + 4 * ((n + 2) / 3) + 1 > outlen) {
        free(text);
        return -1;
    }
    *len += gpd__base64url((const unsigned char *)text, n, out + *len);
    free(text);
    return 0;
}

char *gpd__gcp_jwt_assertion(EVP_PKEY *key, const char *key_id, const char *client_email, const char *scope,
                             const char *audience, long long now)
{
    size_t cap = 16384, len = 0;
    char *jwt = malloc(cap);
    unsigned char *sig = NULL;
    EVP_MD_CTX *md = NULL;
    size_t siglen = 0;
    if (!jwt || !key || !client_email || !audience)
        goto fail;
    json_t *header = json_object();
    json_object_set_new(header, "alg", json_string("RS256"));
    json_object_set_new(header, "typ", json_string("JWT"));
    if (key_id && *key_id)
        json_object_set_new(header, "kid", json_string(key_id));
    json_t *claims = json_object();
    json_object_set_new(claims, "iss", json_string(client_email));
    json_object_set_new(claims, "scope", json_string(scope ? scope : GCP_SCOPE));
    json_object_set_new(claims, "aud", json_string(audience));
    json_object_set_new(claims, "iat", json_integer(now));
    json_object_set_new(claims, "exp", json_integer(now + 3600));
    if (append_b64_json(header, jwt, cap, &len) != 0) {
        json_decref(claims);
        goto fail;
    }
    jwt[len++] = '.';
    if (append_b64_json(claims, jwt, cap, &len) != 0)
        goto fail;
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)jwt, len) != 1)
        goto fail;
    sig = malloc(siglen);
    if (!sig || EVP_DigestSign(md, sig, &siglen, (const unsigned char *)jwt, len) != 1)
        goto fail;
    if (len + 1 + 4 * ((siglen + 2) / 3) + 1 > cap)
        goto fail;
    jwt[len++] = '.';
    len += gpd__base64url(sig, siglen, jwt + len);
    free(sig);
    EVP_MD_CTX_free(md);
    return jwt;
fail:
    free(sig);
    EVP_MD_CTX_free(md);
    free(jwt);
    return NULL;
}

bool gpd__gcp_parse_token(const json_t *root, char *token, size_t toklen, long long *expires_in)
{
    const char *t = json_string_value(json_object_get(root, "access_token"));
    if (!t || !*t || strlen(t) >= toklen)
        return false;
    snprintf(token, toklen, "%s", t);
    double e = gpd__json_num(json_object_get(root, "expires_in"), 3600);
    *expires_in = e > 0 ? (long long)e : 3600;
    return true;
}

/* ---- the token ---- */

static bool token_valid(gcp_provider *p)
{
    if (p->static_token)
        return true;
    return p->token[0] && p->token_expiry > uv_now(p->base.loop);
}

static void op_fail(gcp_op *o, enum gpd_prov_err err, const char *msg);

static void token_done(void *ctx, const gpd_http_reply *r)
{
    gcp_provider *p = ctx;
    p->token_call = NULL;
    long long expires_in = 0;
    enum gpd_prov_err err = GPD_PROV_OK;
    char msg[400] = "";
    if (r->err == GPD_PROV_OK && r->status != 0 &&
        gpd__gcp_parse_token(r->json, p->token, GCP_TOKEN_MAX, &expires_in)) {
        /* Fetch again a minute before it ends (or halfway, for short tokens). */
        long long margin = expires_in > 120 ? 60 : expires_in / 2;
        p->token_expiry = uv_now(p->base.loop) + (uint64_t)(expires_in - margin) * 1000;
    } else {
        p->token[0] = '\0';
        p->token_expiry = 0;
        err = r->status == 0 ? r->err
              : r->status >= 500 || r->status == 429 ? GPD_PROV_TRANSIENT
                                                     : GPD_PROV_AUTH; /* invalid_grant and the like */
        if (err == GPD_PROV_OK)
            err = GPD_PROV_AUTH;
        snprintf(msg, sizeof(msg), "gcp token exchange failed: %s", r->msg[0] ? r->msg : "no access_token");
        gpd_log_warn("gcp_tpu: token exchange failed", "\"status\":%d", r->status);
    }
    /* Resume (or fail) every op that waited.  Resuming only starts calls, so
     * the list does not change under the walk except through op_fail, which
     * also only starts a call. */
    for (gpd__op *it = p->ops; it; it = it->next) {
        gcp_op *o = (gcp_op *)it;
        if (!o->waiting_token)
            continue;
        o->waiting_token = false;
        if (err == GPD_PROV_OK)
            o->step(o);
        else
            op_fail(o, err, msg);
    }
}

static void token_fetch(gcp_provider *p)
{
    if (p->token_call)
        return;
    char *jwt = gpd__gcp_jwt_assertion(p->key, p->key_id, p->client_email, GCP_SCOPE, p->token_uri,
                                       (long long)time(NULL));
    size_t blen = jwt ? strlen(jwt) + 128 : 0;
    char *body = jwt ? malloc(blen) : NULL;
    if (body)
        snprintf(body, blen, "grant_type=%s&assertion=%s", "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                 jwt);
    free(jwt);
    if (!body) {
        p->token_call = gpd_http_call_fail_later(p->base.loop, GPD_PROV_AUTH, "could not sign the JWT assertion",
                                                 token_done, p);
        return;
    }
    gpd_http_call_opts o = {
        .method = "POST",
        .url = p->token_uri,
        .body = body,
        .body_len = strlen(body),
        .content_type = "application/x-www-form-urlencoded",
        .idempotent = true, /* a token exchange changes nothing */
    };
    p->token_call = gpd_http_call_start(p->base.loop, p->base.curl, &o, token_done, p);
    free(body);
}

/* Run step now when a token is at hand, else once one is. */
static void run_step(gcp_op *o, gcp_step step)
{
    gcp_provider *p = o->p;
    o->step = step;
    if (token_valid(p)) {
        step(o);
        return;
    }
    if (!p->key) {
        op_fail(o, GPD_PROV_AUTH, "gcp_tpu: no access token or service-account key configured");
        return;
    }
    o->waiting_token = true;
    token_fetch(p);
    if (!p->token_call) {
        o->waiting_token = false;
        op_fail(o, GPD_PROV_FAILED, "out of memory");
    }
}

/* A 401 with a service-account token: fetch a new token and repeat once. */
static bool auth_retry(gcp_op *o, const gpd_http_reply *r)
{
    if (r->status != 401 || !o->p->key || o->auth_retried)
        return false;
    o->auth_retried = true;
    o->p->token_expiry = 0;
    o->p->token[0] = '\0';
    run_step(o, o->step);
    return true;
}

/* Run the next request of an op that makes several (a poll, a page): it
 * gets its own retry after a 401. */
static void run_next(gcp_op *o, gcp_step step)
{
    o->auth_retried = false;
    run_step(o, step);
}

/* ---- operations ---- */

static void op_destroy(gpd__op *op)
{
    gcp_op *o = (gcp_op *)op;
    free(o->body);
    free(o->list);
    free(o);
}

static gcp_op *op_new(gcp_provider *p, enum gpd__op_kind kind, void *ctx)
{
    gcp_op *o = (gcp_op *)gpd__op_new(sizeof(*o), &p->base, &p->ops, kind, ctx, op_destroy);
    if (o) {
        o->p = p;
        o->op.auth = p->auth;
    }
    return o;
}

/* Early failures report through a deferred call whose callback reports: a
 * create whose Operation was started reports the node with the error. */
static void failed_later(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    gpd__op_report_id(&o->op, r->err, r->msg, o->op_name[0] ? o->id : NULL);
}

static void op_fail(gcp_op *o, enum gpd_prov_err err, const char *msg)
{
    gpd__op_fail(&o->op, err, msg, failed_later);
}

static void op_send(gcp_op *o, const char *method, const char *url, const char *body, bool idempotent,
                    uint64_t delay_ms, gpd_http_call_cb cb)
{
    if (gpd__op_send(&o->op, 0, method, url, body, idempotent, delay_ms, cb) != 0)
        op_fail(o, GPD_PROV_FAILED, "out of memory");
}

static void node_url(gcp_provider *p, const char *node, char *out, size_t outlen)
{
    char esc[192];
    if (node)
        snprintf(out, outlen, "%s/projects/%s/locations/%s/nodes/%s", p->base.base_url, p->project, p->zone,
                 gpd_http_escape(node, esc, sizeof(esc)));
    else
        snprintf(out, outlen, "%s/projects/%s/locations/%s/nodes", p->base.base_url, p->project, p->zone);
}

/* search */

static void search_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    if (auth_retry(o, r))
        return;
    if (r->status == 404) {
        gpd__op_report(&o->op, GPD_PROV_OK, ""); /* the type is not offered in this zone */
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    gpd_offer offer;
    memset(&offer, 0, sizeof(offer));
    double od = 0, spot = -1;
    int chips = gpd__tpu_chips(o->tpu_type);
    if (!provider_price(o->p, o->tpu_type, &od, &spot)) {
        gpd__op_report(&o->op, GPD_PROV_UNSUPPORTED, "gcp_tpu: no price known for this TPU type");
        return;
    }
    snprintf(offer.provider, sizeof(offer.provider), "gcp_tpu");
    snprintf(offer.id, sizeof(offer.id), "%s", o->p->zone);
    snprintf(offer.gpu_model, sizeof(offer.gpu_model), "%s", o->tpu_type);
    snprintf(offer.compute_type, sizeof(offer.compute_type), "tpu");
    offer.count = chips;
    offer.price_per_hr = chips * od;
    offer.spot_price_per_hr = spot >= 0 ? chips * spot : -1;
    snprintf(offer.region, sizeof(offer.region), "%s", o->p->zone);
    offer.reliability = -1;
    offer.available = -1;
    size_t n = o->max_cost > 0 && offer.price_per_hr > o->max_cost ? 0 : 1;
    if (o->count > 0 && chips < o->count)
        n = 0;
    gpd__op_report_offers(&o->op, GPD_PROV_OK, "", &offer, n);
}

static void search_step(gcp_op *o)
{
    char url[1024], esc[96];
    snprintf(url, sizeof(url), "%s/projects/%s/locations/%s/acceleratorTypes/%s", o->p->base.base_url,
             o->p->project, o->p->zone, gpd_http_escape(o->tpu_type, esc, sizeof(esc)));
    op_send(o, "GET", url, NULL, true, 0, search_done);
}

static void gcp_search(gpd_provider *gp, const gpd_offer_query *q, gpd_offers_cb cb, void *ctx)
{
    gcp_provider *p = (gcp_provider *)gp;
    gcp_op *o = op_new(p, GPD__OP_SEARCH, ctx);
    if (!o)
        return;
    o->op.cb.offers = cb;
    snprintf(o->tpu_type, sizeof(o->tpu_type), "%s", q->tpu_type ? q->tpu_type : "");
    for (char *c = o->tpu_type; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    o->count = q->count;
    o->max_cost = q->max_cost_per_hr;
    if (q->compute_type && strcmp(q->compute_type, "tpu") != 0) {
        op_fail(o, GPD_PROV_UNSUPPORTED, "gcp_tpu offers TPUs only");
        return;
    }
    if (!o->tpu_type[0] || gpd__tpu_chips(o->tpu_type) == 0) {
        op_fail(o, GPD_PROV_BAD_REQUEST, "gcp_tpu: tpu_type like \"v5litepod-8\" required");
        return;
    }
    if (!gpd__tpu_zone_matches(p->zone, q->region)) {
        op_fail(o, GPD_PROV_OK, "");
        return;
    }
    run_step(o, search_step);
}

/* create and destroy: the long-running Operation they answer */

static void poll_step(gcp_op *o);

/* Poll the Operation `name` until it is done. */
static void poll_operation(gcp_op *o, const char *name)
{
    snprintf(o->op_name, sizeof(o->op_name), "%s", name);
    run_next(o, poll_step);
}

/* The Operation of a create or a destroy is done, with res's outcome. */
static void operation_done(gcp_op *o, const gpd__gcp_op_result *res)
{
    if (o->op.kind == GPD__OP_DESTROY) {
        bool gone = res->err == GPD_PROV_OK || res->err == GPD_PROV_NOT_FOUND;
        gpd__op_report(&o->op, gone ? GPD_PROV_OK : res->err, gone ? "" : res->msg);
        return;
    }
    if (res->err == GPD_PROV_OK) {
        gpd__op_report_id(&o->op, GPD_PROV_OK, "", o->id);
        return;
    }
    /* A failed create may leave a node behind (TERMINATED): the broker deletes it. */
    gpd_log_info("gcp_tpu: create failed", "\"node\":\"%s\",\"error\":\"%s\"", o->id, gpd_prov_err_name(res->err));
    gpd__op_report_id(&o->op, res->err, res->msg, o->id);
}

/* A poll of a create's or a destroy's Operation.  The reports pass the
 * node id on, which only a create's callback takes. */
static void poll_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    bool create = o->op.kind == GPD__OP_CREATE;
    if (auth_retry(o, r))
        return;
    if (!create && r->status == 404) {
        gpd__op_report(&o->op, GPD_PROV_OK, ""); /* the operation is gone: so is the node */
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0) {
        if (r->err == GPD_PROV_AUTH || ++o->poll_failures >= GCP_POLL_FAILURES) {
            gpd__op_report_id(&o->op, r->err, r->msg, o->id);
            return;
        }
    } else {
        o->poll_failures = 0;
        gpd__gcp_op_result res;
        gpd__gcp_parse_operation(r->json, &res);
        if (res.done) {
            operation_done(o, &res);
            return;
        }
    }
    if (++o->polls >= (create ? GCP_CREATE_POLLS : GCP_DELETE_POLLS)) {
        /* Still running.  A create: the node exists; status polling and the
         * broker's deadline take over.  A delete: it was accepted and is
         * under way; the node no longer runs. */
        gpd__op_report_id(&o->op, GPD_PROV_OK,
                          create ? "create operation still running" : "delete operation still running", o->id);
        return;
    }
    run_next(o, poll_step);
}

static void poll_step(gcp_op *o)
{
    char url[1200];
    snprintf(url, sizeof(url), "%s/%s", o->p->base.base_url, o->op_name);
    op_send(o, "GET", url, NULL, true, GCP_POLL_MS, poll_done);
}

/* create */

static void create_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    if (auth_retry(o, r))
        return;
    if (r->status == 409) {
        /* The node id is this reservation's label: it exists already (an
         * earlier try of this create went through). */
        gpd_log_info("gcp_tpu: node exists already", "\"node\":\"%s\"", o->id);
        gpd__op_report_id(&o->op, GPD_PROV_OK, "", o->id);
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    gpd__gcp_op_result res;
    gpd__gcp_parse_operation(r->json, &res);
    gpd__port_memo_put(&o->p->ports, o->id, o->port);
    if (res.done) {
        operation_done(o, &res);
        return;
    }
    if (!res.name[0]) {
        gpd__op_report_id(&o->op, GPD_PROV_FAILED, "create answer is not an Operation", o->id);
        return;
    }
    poll_operation(o, res.name);
}

static void create_step(gcp_op *o)
{
    char url[1024], esc[96];
    node_url(o->p, NULL, url, sizeof(url));
    size_t n = strlen(url);
    snprintf(url + n, sizeof(url) - n, "?nodeId=%s", gpd_http_escape(o->id, esc, sizeof(esc)));
    /* Repeated after a 5xx: the node id makes a second create a 409, not a second node. */
    op_send(o, "POST", url, o->body, true, 0, create_done);
}

static void gcp_create(gpd_provider *gp, const gpd_instance_spec *spec, gpd_create_cb cb, void *ctx)
{
    gcp_provider *p = (gcp_provider *)gp;
    gcp_op *o = op_new(p, GPD__OP_CREATE, ctx);
    if (!o)
        return;
    o->op.cb.create = cb;
    if (!spec->offer || !spec->runtime || !spec->label || gpd__tpu_chips(spec->offer->gpu_model) == 0) {
        op_fail(o, GPD_PROV_BAD_REQUEST, "gcp_tpu: create needs a TPU offer, a runtime and a label");
        return;
    }
    if (spec->offer->id[0] && strcmp(spec->offer->id, p->zone) != 0) {
        op_fail(o, GPD_PROV_BAD_REQUEST, "gcp_tpu: the offer is for another zone");
        return;
    }
    gpd__tpu_node_id(spec->label, o->id, sizeof(o->id));
    o->port = spec->runtime->port > 0 ? spec->runtime->port : 8000;
    json_t *body = gpd__tpu_create_body(spec, p->runtime_version);
    o->body = gpd__json_compact(body);
    json_decref(body);
    if (!o->body) {
        op_fail(o, GPD_PROV_FAILED, "out of memory");
        return;
    }
    run_step(o, create_step);
}

/* status */

static void status_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    if (auth_retry(o, r))
        return;
    gpd_instance_status st;
    if (r->status == 404) {
        memset(&st, 0, sizeof(st));
        snprintf(st.id, sizeof(st.id), "%s", o->id);
        st.state = GPD_INSTANCE_GONE;
        st.cost_per_hr = -1;
        snprintf(st.message, sizeof(st.message), "node not found");
        gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0 || !json_is_object(r->json)) {
        gpd__op_report(&o->op, r->err != GPD_PROV_OK ? r->err : GPD_PROV_FAILED,
                       r->msg[0] ? r->msg : "node answer is not JSON");
        return;
    }
    int port = gpd__port_memo_get(&o->p->ports, o->id);
    gpd__tpu_node_status(r->json, port > 0 ? port : 8000, &st);
    snprintf(st.id, sizeof(st.id), "%s", o->id);
    gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
}

static void status_step(gcp_op *o)
{
    char url[1024];
    node_url(o->p, o->id, url, sizeof(url));
    op_send(o, "GET", url, NULL, true, 0, status_done);
}

static void gcp_status(gpd_provider *gp, const char *instance_id, gpd_status_cb cb, void *ctx)
{
    gcp_provider *p = (gcp_provider *)gp;
    gcp_op *o = op_new(p, GPD__OP_STATUS, ctx);
    if (!o)
        return;
    o->op.cb.status = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!o->id[0]) {
        op_fail(o, GPD_PROV_BAD_REQUEST, "gcp_tpu: no node id");
        return;
    }
    run_step(o, status_step);
}

/* destroy */

static void destroy_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    if (auth_retry(o, r))
        return;
    if (r->status == 404) {
        gpd__op_report(&o->op, GPD_PROV_OK, "");
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    gpd__gcp_op_result res;
    gpd__gcp_parse_operation(r->json, &res);
    if (res.done || !res.name[0]) {
        operation_done(o, &res);
        return;
    }
    poll_operation(o, res.name);
}

static void destroy_step(gcp_op *o)
{
    char url[1024];
    node_url(o->p, o->id, url, sizeof(url));
    /* Deleting twice is harmless: the second is a 404 or another delete Operation. */
    op_send(o, "DELETE", url, NULL, true, 0, destroy_done);
}

static void gcp_destroy(gpd_provider *gp, const char *instance_id, gpd_done_cb cb, void *ctx)
{
    gcp_provider *p = (gcp_provider *)gp;
    gcp_op *o = op_new(p, GPD__OP_DESTROY, ctx);
    if (!o)
        return;
    o->op.cb.done = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!o->id[0]) {
        op_fail(o, GPD_PROV_BAD_REQUEST, "gcp_tpu: no node id");
        return;
    }
    run_step(o, destroy_step);
}

/* list */

static void list_step(gcp_op *o);

static void list_done(void *ctx, const gpd_http_reply *r)
{
    gcp_op *o = (gcp_op *)gpd__op_of(ctx, NULL);
    if (auth_retry(o, r))
        return;
    if (r->err != GPD_PROV_OK || r->status == 0 || !json_is_object(r->json)) {
        gpd__op_report(&o->op, r->err != GPD_PROV_OK ? r->err : GPD_PROV_FAILED,
                       r->msg[0] ? r->msg : "nodes answer is not JSON");
        return;
    }
    const json_t *nodes = json_object_get(r->json, "nodes"), *node;
    size_t i;
    json_array_foreach(nodes, i, node)
    {
        if (!json_object_get(json_object_get(node, "labels"), "gpd-res") || o->nlist >= GCP_MAX_LIST)
            continue;
        if (!o->list) {
            o->list = calloc(GCP_MAX_LIST, sizeof(*o->list));
            if (!o->list) {
                gpd__op_report(&o->op, GPD_PROV_FAILED, "out of memory");
                return;
            }
        }
        gpd_instance_status *st = &o->list[o->nlist];
        const char *name = json_string_value(json_object_get(node, "name"));
        const char *slash = name ? strrchr(name, '/') : NULL;
        int port = gpd__port_memo_get(&o->p->ports, slash ? slash + 1 : "");
        gpd__tpu_node_status(node, port > 0 ? port : 8000, st);
        if (st->id[0] && gpd_label_is_ours(st->label))
            o->nlist++;
    }
    const char *next = json_string_value(json_object_get(r->json, "nextPageToken"));
    if (next && *next && ++o->pages < GCP_LIST_PAGES && strlen(next) < sizeof(o->page_token)) {
        snprintf(o->page_token, sizeof(o->page_token), "%s", next);
        run_next(o, list_step);
        return;
    }
    gpd__op_report_list(&o->op, GPD_PROV_OK, "", o->list, o->nlist);
}

static void list_step(gcp_op *o)
{
    char url[2048], esc[1024];
    node_url(o->p, NULL, url, sizeof(url));
    size_t n = strlen(url);
    snprintf(url + n, sizeof(url) - n, "?pageSize=100%s%s", o->page_token[0] ? "&pageToken=" : "",
             o->page_token[0] ? gpd_http_escape(o->page_token, esc, sizeof(esc)) : "");
    op_send(o, "GET", url, NULL, true, 0, list_done);
}

static void gcp_list_ours(gpd_provider *gp, gpd_list_cb cb, void *ctx)
{
    gcp_provider *p = (gcp_provider *)gp;
    gcp_op *o = op_new(p, GPD__OP_LIST, ctx);
    if (!o)
        return;
    o->op.cb.list = cb;
    run_step(o, list_step);
}

/* ---- the provider ---- */

static void gcp_free(gpd_provider *gp)
{
    gcp_provider *p = (gcp_provider *)gp;
    if (!p)
        return;
    gpd__op_cancel_all(&p->ops);
    gpd_http_call_cancel(p->token_call);
    EVP_PKEY_free(p->key);
    free(p->client_email);
    free(p->token_uri);
    free(p->key_id);
    free(p->project);
    free(p->zone);
    free(p->runtime_version);
    free(p->base.base_url);
    free(p->base.api_key);
    OPENSSL_cleanse(p->auth, sizeof(p->auth));
    free(p);
}

static const gpd_provider_ops gcp_ops = {
    .name = "gcp_tpu",
    .search = gcp_search,
    .create = gcp_create,
    .status = gcp_status,
    .destroy = gcp_destroy,
    .list_ours = gcp_list_ours,
    .extend = NULL,
    .free = gcp_free,
};

/* Read a service-account key file: client_email, private_key (PEM),
 * private_key_id, token_uri.  Logs why when it cannot. */
static bool load_credentials(gcp_provider *p, const char *path)
{
    json_error_t jerr;
    bool ok = false;
    json_t *root = json_load_file(path, 0, &jerr);
    BIO *bio = NULL;
    const char *email = json_string_value(json_object_get(root, "client_email"));
    const char *pem = json_string_value(json_object_get(root, "private_key"));
    const char *kid = json_string_value(json_object_get(root, "private_key_id"));
    const char *uri = json_string_value(json_object_get(root, "token_uri"));
    if (!root || !email || !pem) {
        gpd_log_error("gcp_tpu: service-account key unreadable", "\"error\":\"%s\"",
                      !root ? "not JSON or not readable" : "client_email or private_key missing");
        goto out;
    }
    bio = BIO_new_mem_buf(pem, -1);
    p->key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (!p->key) {
        gpd_log_error("gcp_tpu: service-account private_key unreadable", "\"error\":\"%s\"", "bad PEM");
        ERR_clear_error();
        goto out;
    }
    p->client_email = strdup(email);
    p->key_id = kid ? strdup(kid) : NULL;
    p->token_uri = strdup(uri && *uri ? uri : "https://oauth2.googleapis.com/token");
    ok = p->client_email && p->token_uri;
out:
    BIO_free(bio);
    json_decref(root);
    return ok;
}

gpd_provider *gpd_gcp_tpu_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *project,
                              const char *zone, const char *access_token, const char *credentials_file)
{
    gcp_provider *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    memcpy(p->auth, GCP_BEARER, sizeof(GCP_BEARER) - 1);
    p->token = p->auth + sizeof(GCP_BEARER) - 1;
    const char *b = base_url && *base_url ? base_url : "https://tpu.googleapis.com/v2";
    size_t bl = strlen(b);
    while (bl > 0 && b[bl - 1] == '/')
        bl--;
    p->base.ops = &gcp_ops;
    p->base.loop = loop;
    p->base.curl = curl;
    p->base.base_url = strndup(b, bl);
    p->project = strdup(project ? project : "");
    p->zone = strdup(zone ? zone : "");
    if (!p->base.base_url || !p->project || !p->zone) {
        gcp_free(&p->base);
        return NULL;
    }
    if (access_token && *access_token) {
        if (strlen(access_token) >= GCP_TOKEN_MAX) {
            gpd_log_error("gcp_tpu: access token too long", "\"max\":%zu", (size_t)GCP_TOKEN_MAX - 1);
        } else {
            snprintf(p->token, GCP_TOKEN_MAX, "%s", access_token);
            p->static_token = true;
            p->base.api_key = strdup(access_token);
        }
    } else if (credentials_file && *credentials_file) {
        if (load_credentials(p, credentials_file))
            p->base.api_key = strdup(p->client_email); /* "configured": the token comes later */
    }
    return &p->base;
}

void gpd_gcp_tpu_set_runtime_version(gpd_provider *gp, const char *runtime_version)
{
    if (!gp || gp->ops != &gcp_ops)
        return;
    gcp_provider *p = (gcp_provider *)gp;
    free(p->runtime_version);
    p->runtime_version = runtime_version && *runtime_version ? strdup(runtime_version) : NULL;
}

void gpd_gcp_tpu_set_price(gpd_provider *gp, const char *tpu_type, double per_chip_hr, double spot_per_chip_hr)
{
    if (!gp || gp->ops != &gcp_ops || !tpu_type)
        return;
    gcp_provider *p = (gcp_provider *)gp;
    char gen[32];
    int n;
    if (!split_type(tpu_type, gen, sizeof(gen), &n))
        snprintf(gen, sizeof(gen), "%s", tpu_type); /* a generation alone: "v5litepod" */
    for (size_t i = 0; i < p->nprices; i++) {
        if (!strcmp(p->prices[i].type, gen)) {
            p->prices[i].chip_hr = per_chip_hr;
            p->prices[i].spot_chip_hr = spot_per_chip_hr;
            return;
        }
    }
    if (p->nprices < GCP_MAX_PRICES) {
        gcp_price *e = &p->prices[p->nprices++];
        snprintf(e->type, sizeof(e->type), "%s", gen);
        e->chip_hr = per_chip_hr;
        e->spot_chip_hr = spot_per_chip_hr;
    }
}
