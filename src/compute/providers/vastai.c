/*
 * Vast.ai: a marketplace of GPU machines.  Offers ("asks") come from
 * POST /bundles/, an ask is rented with PUT /asks/{id}/ and becomes an
 * instance (GET/DELETE /instances/{id}/).  Shapes and gotchas:
 * shared/docs/provider-apis.md.
 *
 * Behaviour worth knowing:
 *   - the create is never repeated after a 5xx or a timeout (a repeated PUT
 *     can rent a second machine); instead the instances are listed and one
 *     carrying this reservation's label is reported with the error, so the
 *     broker destroys it;
 *   - an error answer that still names new_contract (a bid too low: Vast
 *     made the instance STOPPED) is reported as the error AND the id;
 *   - the runtime's port inside the container is remembered per instance
 *     at create, and also travels in the env (GPD_RUNTIME_PORT) so that a
 *     restarted daemon finds it in the instance's extra_env; the endpoint
 *     is http://public_ipaddr:HostPort of that port's mapping.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "compute/provider.h"
#include "compute/providers/http_call.h"
#include "compute/providers/providers_internal.h"
#include "core/log.h"

#define VAST_DEFAULT_DISK_GB 80
#define VAST_DEFAULT_LIMIT 64
#define VAST_MAX_OFFERS 256
#define VAST_MAX_LIST 1024

typedef struct vast_provider {
    gpd_provider base;
    char auth[512];
    int disk_gb;
    gpd__op *ops;
    gpd__port_memo ports;
} vast_provider;

typedef struct vast_op {
    gpd__op op;
    vast_provider *p;
    /* search: the query, strings copied (the caller's may not outlive the call) */
    gpd_offer_query q;
    char q_model[48], q_region[48], q_type[8];
    /* create / status / destroy */
    char id[128];
    char label[96];
    int port;
    enum gpd_prov_err first_err;
    char first_msg[320];
} vast_op;

/* ---- pure parts ---- */

static const struct {
    const char *model;
    const char *names[5];
} vast_names[] = {
    { "H100", { "H100 SXM", "H100 PCIE", "H100 NVL", NULL } },
    { "H200", { "H200", "H200 NVL", NULL } },
    { "A100", { "A100 SXM4", "A100 PCIE", "A100 SXM", NULL } },
    { "A10", { "A10", NULL } },
    { "A10G", { "A10G", "A10g", NULL } },
    { "L4", { "L4", NULL } },
    { "L40S", { "L40S", NULL } },
    { "RTX4090", { "RTX 4090", NULL } },
    { "RTX3090", { "RTX 3090", NULL } },
    { "A6000", { "RTX A6000", "A6000", NULL } },
    { "V100", { "Tesla V100", "V100", NULL } },
    { "T4", { "Tesla T4", "T4", NULL } },
    { "B200", { "B200", NULL } },
};

const char *const *gpd__vast_gpu_names(const char *model)
{
    const char *m = gpd_gpu_model_normalise(model);
    for (size_t i = 0; m && i < sizeof(vast_names) / sizeof(vast_names[0]); i++)
        if (!strcmp(vast_names[i].model, m))
            return vast_names[i].names;
    return NULL;
}

static bool is_country_code(const char *r)
{
    return r && strlen(r) == 2 && isalpha((unsigned char)r[0]) && isalpha((unsigned char)r[1]);
}

static json_t *op1(const char *op, json_t *v)
{
    json_t *o = json_object();
    json_object_set_new(o, op, v);
    return o;
}

json_t *gpd__vast_search_body(const gpd_offer_query *q)
{
    if (q->compute_type && strcmp(q->compute_type, "gpu") != 0)
        return NULL;
    json_t *b = json_object();
    json_object_set_new(b, "rentable", op1("eq", json_true()));
    json_object_set_new(b, "rented", op1("eq", json_false()));
    json_object_set_new(b, "verified", op1("eq", json_true()));
    if (q->gpu_model && *q->gpu_model) {
        const char *const *names = gpd__vast_gpu_names(q->gpu_model);
        if (!names) {
            json_decref(b);
            return NULL;
        }
        json_t *in = json_array();
        for (size_t i = 0; names[i]; i++)
            json_array_append_new(in, json_string(names[i]));
        json_object_set_new(b, "gpu_name", op1("in", in));
    }
    json_object_set_new(b, "num_gpus", op1("eq", json_integer(q->count > 0 ? q->count : 1)));
    if (is_country_code(q->region)) {
        char cc[3] = { (char)toupper((unsigned char)q->region[0]), (char)toupper((unsigned char)q->region[1]), 0 };
        json_t *in = json_array();
        json_array_append_new(in, json_string(cc));
        json_object_set_new(b, "geolocation", op1("in", in));
    }
    if (q->max_cost_per_hr > 0)
        json_object_set_new(b, "dph_total", op1("lte", json_real(q->max_cost_per_hr)));
    json_t *order = json_array(), *by = json_array();
    json_array_append_new(by, json_string("dph_total"));
    json_array_append_new(by, json_string("asc"));
    json_array_append_new(order, by);
    json_object_set_new(b, "order", order);
    json_object_set_new(b, "type", json_string("on-demand"));
    json_object_set_new(b, "limit", json_integer(q->limit > 0 ? q->limit : VAST_DEFAULT_LIMIT));
    return b;
}

/* "Washington, US" -> "US"; "US" -> "US"; anything else -> "". */
static void country_of(const char *geo, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!geo || outlen < 3)
        return;
    size_t n = strlen(geo);
    while (n > 0 && isspace((unsigned char)geo[n - 1]))
        n--;
    if (n >= 2 && isalpha((unsigned char)geo[n - 1]) && isalpha((unsigned char)geo[n - 2]) &&
        (n == 2 || geo[n - 3] == ' ' || geo[n - 3] == ',')) {
        out[0] = (char)toupper((unsigned char)geo[n - 2]);
        out[1] = (char)toupper((unsigned char)geo[n - 1]);
        out[2] = '\0';
    }
}

static int cmp_offer_price(const void *a, const void *b)
{
    const gpd_offer *x = a, *y = b;
    if (x->price_per_hr != y->price_per_hr)
        return x->price_per_hr < y->price_per_hr ? -1 : 1;
    if (x->reliability != y->reliability)
        return x->reliability > y->reliability ? -1 : 1;
    return strcmp(x->id, y->id);
}

size_t gpd__vast_parse_offers(const json_t *root, const gpd_offer_query *q, gpd_offer *out, size_t max)
{
    const json_t *offers = json_is_array(root) ? root : json_object_get(root, "offers");
    size_t n = 0, i;
    const json_t *o;
    char want_cc[3] = "";
    if (is_country_code(q->region))
        country_of(q->region, want_cc, sizeof(want_cc));
    json_array_foreach(offers, i, o)
    {
        if (n >= max)
            break;
        gpd_offer *f = &out[n];
        memset(f, 0, sizeof(*f));
        if (!gpd__json_id(json_object_get(o, "id"), f->id, sizeof(f->id)))
            continue;
        const char *gpu_name = json_string_value(json_object_get(o, "gpu_name"));
        const char *model = gpd_gpu_model_normalise(gpu_name);
        if (q->gpu_model && *q->gpu_model && (!model || strcasecmp(model, q->gpu_model) != 0))
            continue;
        if (model) {
            snprintf(f->gpu_model, sizeof(f->gpu_model), "%s", model);
        } else {
            size_t k = 0; /* unknown to us: keep Vast's name, spaces dropped */
            for (const char *s = gpu_name ? gpu_name : "unknown"; *s && k + 1 < sizeof(f->gpu_model); s++)
                if (*s != ' ')
                    f->gpu_model[k++] = *s;
            f->gpu_model[k] = '\0';
        }
        f->count = (int)gpd__json_num(json_object_get(o, "num_gpus"), 0);
        if (f->count <= 0 || (q->count > 0 && f->count < q->count))
            continue;
        f->price_per_hr = gpd__json_num(json_object_get(o, "dph_total"), -1);
        if (f->price_per_hr < 0)
            continue;
        if (q->max_cost_per_hr > 0 && f->price_per_hr > q->max_cost_per_hr)
            continue;
        f->spot_price_per_hr = gpd__json_num(json_object_get(o, "min_bid"), -1);
        country_of(json_string_value(json_object_get(o, "geolocation")), f->region, sizeof(f->region));
        if (want_cc[0] && strcmp(want_cc, f->region) != 0)
            continue;
        f->reliability = gpd__json_num(json_object_get(o, "reliability2"), -1);
        if (f->reliability < 0)
            f->reliability = gpd__json_num(json_object_get(o, "reliability"), -1);
        f->available = f->count;
        snprintf(f->provider, sizeof(f->provider), "vastai");
        snprintf(f->compute_type, sizeof(f->compute_type), "gpu");
        n++;
    }
    qsort(out, n, sizeof(*out), cmp_offer_price);
    if (q->limit > 0 && n > (size_t)q->limit)
        n = (size_t)q->limit;
    return n;
}

json_t *gpd__vast_create_body(const gpd_instance_spec *spec, int disk_gb)
{
    const gpd_runtime *rt = spec->runtime;
    int port = rt && rt->port > 0 ? rt->port : 8000;
    char map[48], num[16];
    json_t *b = json_object();
    json_t *env = json_object();
    snprintf(map, sizeof(map), "-p %d:%d", port, port);
    snprintf(num, sizeof(num), "%d", port);
    json_object_set_new(env, map, json_string("1"));
    json_object_set_new(env, "GPD_RUNTIME_PORT", json_string(num));
    json_object_set_new(env, "PORT", json_string(num));
    if (spec->model)
        json_object_set_new(env, "MODEL", json_string(spec->model));
    json_object_set_new(b, "client_id", json_string("me"));
    json_object_set_new(b, "image", json_string(rt && rt->image ? rt->image : ""));
    json_object_set_new(b, "disk", json_integer(disk_gb));
    json_object_set_new(b, "label", json_string(spec->label ? spec->label : ""));
    json_object_set_new(b, "env", env);
    /* "args": the image's own entrypoint runs with these arguments. */
    json_object_set_new(b, "runtype", json_string("args"));
    json_object_set_new(b, "args", gpd__runtime_args(rt, spec->model, spec->offer ? spec->offer->count : 1));
    json_object_set_new(b, "onstart", json_null());
    /* A non-null price makes it an interruptible bid: the offer's minimum bid. */
    if (spec->spot && spec->offer && spec->offer->spot_price_per_hr > 0)
        json_object_set_new(b, "price", json_real(spec->offer->spot_price_per_hr));
    else
        json_object_set_new(b, "price", json_null());
    json_object_set_new(b, "cancel_unavail", json_true());
    json_object_set_new(b, "target_state", json_string("running"));
    return b;
}

/* Words in Vast's answers that mean this ask cannot be had now. */
static bool says_no_capacity(const char *body, size_t len)
{
    /* insufficient_bid too: the price moved under this offer, another may do. */
    static const char *const words[] = { "no_such_ask", "not available", "unavailable", "no longer available",
                                         "already rented", "is rented", "insufficient_bid", NULL };
    char buf[2048];
    size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
    memcpy(buf, body ? body : "", body ? n : 0);
    buf[body ? n : 0] = '\0';
    for (size_t i = 0; words[i]; i++)
        if (gpd__contains_ci(buf, words[i]))
            return true;
    return false;
}

enum gpd_prov_err gpd__vast_create_result(int status, const json_t *root, const char *body, size_t len,
                                          char *id, size_t idlen, char *msg, size_t msglen)
{
    id[0] = '\0';
    msg[0] = '\0';
    if (json_is_object(root)) {
        const json_t *nc = json_object_get(root, "new_contract");
        if (!json_is_null(nc) && nc)
            gpd__json_id(nc, id, idlen);
    }
    bool ok2xx = status >= 200 && status < 300;
    const json_t *success = json_object_get(root, "success");
    if (ok2xx && !json_is_false(success) && id[0])
        return GPD_PROV_OK;
    char m[256];
    gpd_http_error_message(root, body, len, m, sizeof(m));
    enum gpd_prov_err err = ok2xx ? GPD_PROV_FAILED : gpd_http_classify(status, body, len);
    if (ok2xx && !json_is_false(success) && !id[0])
        snprintf(m, sizeof(m), "answer without new_contract");
    if ((err == GPD_PROV_FAILED || err == GPD_PROV_BAD_REQUEST || err == GPD_PROV_NOT_FOUND) &&
        (says_no_capacity(body, len) || err == GPD_PROV_NOT_FOUND))
        err = GPD_PROV_NO_CAPACITY;
    snprintf(msg, msglen, "HTTP %d: %s", status, m[0] ? m : "create refused");
    return err;
}

const json_t *gpd__vast_one_instance(const json_t *root)
{
    const json_t *inst = json_object_get(root, "instances");
    if (json_is_object(inst))
        return inst;
    if (json_is_array(inst) && json_array_size(inst) > 0 && json_is_object(json_array_get(inst, 0)))
        return json_array_get(inst, 0);
    /* Some answers carry the instance bare. */
    if (json_is_object(root) && json_object_get(root, "actual_status"))
        return root;
    return NULL;
}

static bool str_is(const char *s, const char *v)
{
    return s && !strcasecmp(s, v);
}

/* The container port from "-p 8000:8000" (host:container, the container's). */
static int port_of_mapping(const char *k)
{
    if (!k || strncmp(k, "-p ", 3) != 0)
        return 0;
    const char *colon = strrchr(k, ':');
    int port = atoi(colon ? colon + 1 : k + 3);
    return port > 0 && port < 65536 ? port : 0;
}

/* The runtime port out of the instance's env: [["K","V"],...] or {"K":"V"}. */
static int port_from_env(const json_t *env)
{
    int mapped = 0;
    const char *k;
    const json_t *v;
    size_t i;
    if (json_is_object(env)) {
        json_object_foreach((json_t *)env, k, v)
        {
            if (!strcmp(k, "GPD_RUNTIME_PORT"))
                return atoi(json_string_value(v) ? json_string_value(v) : "0");
            if (!mapped)
                mapped = port_of_mapping(k);
        }
    } else if (json_is_array(env)) {
        json_array_foreach(env, i, v)
        {
            const char *key = json_string_value(json_array_get(v, 0));
            const char *val = json_string_value(json_array_get(v, 1));
            if (key && !strcmp(key, "GPD_RUNTIME_PORT") && val)
                return atoi(val);
            if (!mapped)
                mapped = port_of_mapping(key);
        }
    }
    return mapped;
}

/* The single mapped container port that is not ssh (22), else 0. */
static int guess_port(const json_t *ports)
{
    int found = 0, n = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)ports, k, v)
    {
        int port = atoi(k);
        if (port <= 0 || port == 22 || !strstr(k, "/tcp"))
            continue;
        found = port;
        n++;
    }
    return n == 1 ? found : 0;
}

/* The host port mapped to container port `port`, as text; false when none. */
static bool host_port(const json_t *ports, int port, char *out, size_t outlen)
{
    char key[24];
    snprintf(key, sizeof(key), "%d/tcp", port);
    const json_t *list = json_object_get(ports, key), *m;
    size_t i;
    if (json_is_object(list) && json_object_get(list, "HostPort"))
        return gpd__json_id(json_object_get(list, "HostPort"), out, outlen);
    json_array_foreach(list, i, m)
    {
        if (gpd__json_id(json_object_get(m, "HostPort"), out, outlen))
            return true;
    }
    return false;
}

static void copy_trimmed(char *out, size_t outlen, const char *s)
{
    if (!s)
        s = "";
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    snprintf(out, outlen, "%.*s", (int)n, s);
}

void gpd__vast_instance_status(const json_t *inst, int port_hint, gpd_instance_status *st)
{
    memset(st, 0, sizeof(*st));
    st->cost_per_hr = -1;
    st->state = GPD_INSTANCE_PENDING;
    if (!json_is_object(inst)) {
        st->state = GPD_INSTANCE_GONE;
        return;
    }
    gpd__json_id(json_object_get(inst, "id"), st->id, sizeof(st->id));
    copy_trimmed(st->label, sizeof(st->label), json_string_value(json_object_get(inst, "label")));
    const char *status_msg = json_string_value(json_object_get(inst, "status_msg"));
    copy_trimmed(st->message, sizeof(st->message), status_msg);
    st->cost_per_hr = gpd__json_num(json_object_get(inst, "dph_total"), -1);
    const char *actual = json_string_value(json_object_get(inst, "actual_status"));
    const char *cur = json_string_value(json_object_get(inst, "cur_state"));
    const char *next = json_string_value(json_object_get(inst, "next_state"));
    const char *intended = json_string_value(json_object_get(inst, "intended_status"));
    bool is_bid = json_is_true(json_object_get(inst, "is_bid"));

    /* All three "stopped": on a bid it was outbid; otherwise someone stopped it. */
    if (str_is(cur, "stopped") && str_is(next, "stopped") && str_is(intended, "stopped")) {
        st->state = GPD_INSTANCE_STOPPED;
        if (is_bid) {
            char m[sizeof(st->message)];
            snprintf(m, sizeof(m), "outbid%s%.240s", st->message[0] ? ": " : "", st->message);
            memcpy(st->message, m, sizeof(m));
        }
        return;
    }
    if (gpd__contains_ci(status_msg, "OCI runtime create failed") && !str_is(actual, "running")) {
        st->state = GPD_INSTANCE_FAILED;
        return;
    }
    if (!actual || !*actual || str_is(actual, "created") || str_is(actual, "loading") ||
        str_is(actual, "restarting") || str_is(actual, "scheduling")) {
        st->state = GPD_INSTANCE_PENDING;
        return;
    }
    if (str_is(actual, "exited") || str_is(actual, "unknown") || str_is(actual, "offline")) {
        st->state = GPD_INSTANCE_FAILED;
        if (!st->message[0])
            snprintf(st->message, sizeof(st->message), "instance %s", actual);
        return;
    }
    if (str_is(actual, "stopped") || str_is(actual, "frozen")) {
        st->state = GPD_INSTANCE_STOPPED;
        if (!st->message[0])
            snprintf(st->message, sizeof(st->message), "instance %s", actual);
        return;
    }
    if (!str_is(actual, "running"))
        return; /* a state we do not know: pending until the broker's deadline */

    const json_t *ports = json_object_get(inst, "ports");
    int port = port_hint;
    if (port <= 0)
        port = port_from_env(json_object_get(inst, "extra_env"));
    if (port <= 0)
        port = port_from_env(json_object_get(inst, "env"));
    if (port <= 0)
        port = guess_port(ports);
    char ip[64], hp[16];
    copy_trimmed(ip, sizeof(ip), json_string_value(json_object_get(inst, "public_ipaddr")));
    if (port > 0 && ip[0] && host_port(ports, port, hp, sizeof(hp))) {
        st->state = GPD_INSTANCE_RUNNING;
        snprintf(st->endpoint, sizeof(st->endpoint), "http://%s:%s", ip, hp);
    } else if (!st->message[0]) {
        snprintf(st->message, sizeof(st->message), "running; port mapping not published yet");
    }
}

enum gpd_prov_err gpd__vast_destroy_result(int status, const char *body, size_t len)
{
    bool gone = body && len && memmem(body, len, "no_such_instance", 16) != NULL;
    if (status == 404 || gone)
        return GPD_PROV_OK;
    if (status >= 200 && status < 300) {
        json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
        bool refused = json_is_false(json_object_get(j, "success"));
        json_decref(j);
        return refused ? GPD_PROV_FAILED : GPD_PROV_OK;
    }
    return gpd_http_classify(status, body, len);
}

/* ---- operations ---- */

static void op_destroy(gpd__op *op)
{
    free(op);
}

static vast_op *op_new(vast_provider *p, enum gpd__op_kind kind, void *ctx)
{
    vast_op *o = (vast_op *)gpd__op_new(sizeof(*o), &p->base, &p->ops, kind, ctx, op_destroy);
    if (o) {
        o->p = p;
        o->op.auth = p->auth;
    }
    return o;
}

static void build_url(vast_provider *p, char *out, size_t outlen, const char *fmt, const char *id)
{
    char esc[256], path[512];
    snprintf(path, sizeof(path), fmt, id ? gpd_http_escape(id, esc, sizeof(esc)) : "");
    snprintf(out, outlen, "%s%s", p->base.base_url, path);
}

static bool have_key(vast_provider *p)
{
    return p->base.api_key && *p->base.api_key;
}

/* search */

static void search_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    if (!json_is_object(r->json) && !json_is_array(r->json)) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "offers answer is not JSON");
        return;
    }
    size_t max = o->q.limit > 0 && o->q.limit < VAST_MAX_OFFERS ? (size_t)o->q.limit : VAST_MAX_OFFERS;
    const json_t *arr = json_is_array(r->json) ? r->json : json_object_get(r->json, "offers");
    size_t cap = json_array_size(arr) > max ? json_array_size(arr) : max;
    gpd_offer *offers = calloc(cap ? cap : 1, sizeof(*offers));
    if (!offers) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "out of memory");
        return;
    }
    size_t n = gpd__vast_parse_offers(r->json, &o->q, offers, cap);
    if (n > max)
        n = max;
    gpd__op_report_offers(&o->op, GPD_PROV_OK, "", offers, n);
    free(offers);
}

static void vast_search(gpd_provider *gp, const gpd_offer_query *q, gpd_offers_cb cb, void *ctx)
{
    vast_provider *p = (vast_provider *)gp;
    vast_op *o = op_new(p, GPD__OP_SEARCH, ctx);
    if (!o)
        return;
    o->op.cb.offers = cb;
    o->q = *q;
    snprintf(o->q_model, sizeof(o->q_model), "%s", q->gpu_model ? q->gpu_model : "");
    snprintf(o->q_region, sizeof(o->q_region), "%s", q->region ? q->region : "");
    snprintf(o->q_type, sizeof(o->q_type), "%s", q->compute_type ? q->compute_type : "gpu");
    o->q.gpu_model = o->q_model[0] ? o->q_model : NULL;
    o->q.region = o->q_region[0] ? o->q_region : NULL;
    o->q.compute_type = o->q_type;
    o->q.tpu_type = NULL;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "vastai: no API key configured", search_done);
        return;
    }
    if (strcmp(o->q_type, "gpu") != 0) {
        gpd__op_fail(&o->op, GPD_PROV_UNSUPPORTED, "vastai rents GPU machines only", search_done);
        return;
    }
    if (o->q.region && !is_country_code(o->q.region)) {
        /* Vast knows countries, not zones: nothing here can be in "us-central1". */
        gpd__op_fail(&o->op, GPD_PROV_OK, "", search_done);
        return;
    }
    json_t *body = gpd__vast_search_body(&o->q);
    if (!body) {
        gpd__op_fail(&o->op, GPD_PROV_UNSUPPORTED, "vastai: GPU model not offered", search_done);
        return;
    }
    char *text = gpd__json_compact(body);
    json_decref(body);
    char url[1024];
    build_url(p, url, sizeof(url), "/bundles/", NULL);
    /* A search changes nothing: safe to repeat. */
    gpd__op_send_or_fail(&o->op, "POST", url, text, true, search_done);
    free(text);
}

/* create */

static void create_lookup_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    const json_t *list = json_object_get(r->json, "instances"), *inst;
    size_t i;
    char id[128] = "";
    if (r->err == GPD_PROV_OK) {
        json_array_foreach(list, i, inst)
        {
            const char *label = json_string_value(json_object_get(inst, "label"));
            if (label && !strcmp(label, o->label) && gpd__json_id(json_object_get(inst, "id"), id, sizeof(id)))
                break;
            id[0] = '\0';
        }
    }
    if (id[0])
        gpd_log_warn("vastai: create failed but made an instance", "\"instance\":\"%s\",\"label\":\"%s\"", id,
                     o->label);
    gpd__op_report_id(&o->op, o->first_err, o->first_msg, id);
}

static void create_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    if (r->status == 0 && r->err != GPD_PROV_TRANSIENT) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    char id[128], msg[320];
    enum gpd_prov_err err;
    if (r->status == 0) {
        err = GPD_PROV_TRANSIENT;
        id[0] = '\0';
        snprintf(msg, sizeof(msg), "%s", r->msg);
    } else {
        err = gpd__vast_create_result(r->status, r->json, r->body, r->body_len, id, sizeof(id), msg, sizeof(msg));
    }
    if (err == GPD_PROV_OK) {
        gpd__port_memo_put(&o->p->ports, id, o->port);
        gpd__op_report_id(&o->op, GPD_PROV_OK, "", id);
        return;
    }
    if (id[0]) {
        gpd_log_warn("vastai: create failed but made an instance", "\"instance\":\"%s\",\"status\":%d", id,
                     r->status);
        gpd__port_memo_put(&o->p->ports, id, o->port);
        gpd__op_report_id(&o->op, err, msg, id);
        return;
    }
    if (err == GPD_PROV_TRANSIENT) {
        /* A 5xx or a timeout: the rent may have happened.  Look for our label. */
        o->first_err = err;
        snprintf(o->first_msg, sizeof(o->first_msg), "%s", msg);
        char url[1024];
        build_url(o->p, url, sizeof(url), "/instances/?owner=me", NULL);
        gpd__op_send_or_fail(&o->op, "GET", url, NULL, true, create_lookup_done);
        return;
    }
    gpd__op_report(&o->op, err, msg);
}

static void vast_create(gpd_provider *gp, const gpd_instance_spec *spec, gpd_create_cb cb, void *ctx)
{
    vast_provider *p = (vast_provider *)gp;
    vast_op *o = op_new(p, GPD__OP_CREATE, ctx);
    if (!o)
        return;
    o->op.cb.create = cb;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "vastai: no API key configured", create_done);
        return;
    }
    if (!spec->offer || !spec->runtime || !spec->runtime->image || !spec->label) {
        gpd__op_fail(&o->op, GPD_PROV_BAD_REQUEST, "vastai: create needs an offer, a runtime image and a label",
                     create_done);
        return;
    }
    snprintf(o->label, sizeof(o->label), "%s", spec->label);
    o->port = spec->runtime->port > 0 ? spec->runtime->port : 8000;
    json_t *body = gpd__vast_create_body(spec, p->disk_gb);
    char *text = gpd__json_compact(body);
    json_decref(body);
    char url[1024];
    build_url(p, url, sizeof(url), "/asks/%s/", spec->offer->id);
    /* Never repeated after a 5xx or a timeout: a second PUT can rent a second machine. */
    gpd__op_send_or_fail(&o->op, "PUT", url, text, false, create_done);
    free(text);
}

/* status */

static void status_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    gpd_instance_status st;
    memset(&st, 0, sizeof(st));
    snprintf(st.id, sizeof(st.id), "%s", o->id);
    st.cost_per_hr = -1;
    if (r->status == 404 || (r->status == 0 && r->err == GPD_PROV_NOT_FOUND)) {
        st.state = GPD_INSTANCE_GONE;
        gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
        return;
    }
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    const json_t *inst = gpd__vast_one_instance(r->json);
    if (!inst) {
        st.state = GPD_INSTANCE_GONE;
        snprintf(st.message, sizeof(st.message), "no such instance");
    } else {
        gpd__vast_instance_status(inst, gpd__port_memo_get(&o->p->ports, o->id), &st);
        snprintf(st.id, sizeof(st.id), "%s", o->id);
    }
    gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
}

static void vast_status(gpd_provider *gp, const char *instance_id, gpd_status_cb cb, void *ctx)
{
    vast_provider *p = (vast_provider *)gp;
    vast_op *o = op_new(p, GPD__OP_STATUS, ctx);
    if (!o)
        return;
    o->op.cb.status = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "vastai: no API key configured", status_done);
        return;
    }
    if (!o->id[0]) {
        gpd__op_fail(&o->op, GPD_PROV_BAD_REQUEST, "vastai: no instance id", status_done);
        return;
    }
    char url[1024];
    build_url(p, url, sizeof(url), "/instances/%s/", o->id);
    gpd__op_send_or_fail(&o->op, "GET", url, NULL, true, status_done);
}

/* destroy */

static void destroy_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    if (r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    enum gpd_prov_err err = gpd__vast_destroy_result(r->status, r->body, r->body_len);
    if (err != GPD_PROV_OK) {
        char m[256], msg[320];
        gpd_http_error_message(r->json, r->body, r->body_len, m, sizeof(m));
        snprintf(msg, sizeof(msg), "HTTP %d: %s", r->status, m);
        gpd__op_report(&o->op, err, msg);
        return;
    }
    gpd__op_report(&o->op, GPD_PROV_OK, "");
}

static void vast_destroy(gpd_provider *gp, const char *instance_id, gpd_done_cb cb, void *ctx)
{
    vast_provider *p = (vast_provider *)gp;
    vast_op *o = op_new(p, GPD__OP_DESTROY, ctx);
    if (!o)
        return;
    o->op.cb.done = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "vastai: no API key configured", destroy_done);
        return;
    }
    if (!o->id[0]) {
        gpd__op_fail(&o->op, GPD_PROV_BAD_REQUEST, "vastai: no instance id", destroy_done);
        return;
    }
    char url[1024];
    build_url(p, url, sizeof(url), "/instances/%s/", o->id);
    /* Deleting twice is harmless: the second says no_such_instance. */
    gpd__op_send_or_fail(&o->op, "DELETE", url, "{}", true, destroy_done);
}

/* list */

static void list_done(void *ctx, const gpd_http_reply *r)
{
    vast_op *o = (vast_op *)gpd__op_of(ctx, NULL);
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    const json_t *arr = json_object_get(r->json, "instances"), *inst;
    if (!json_is_array(arr) && json_is_array(r->json))
        arr = r->json;
    if (!json_is_array(arr)) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "instances answer has no list");
        return;
    }
    size_t cap = json_array_size(arr), n = 0, i;
    if (cap > VAST_MAX_LIST)
        cap = VAST_MAX_LIST;
    gpd_instance_status *list = calloc(cap ? cap : 1, sizeof(*list));
    if (!list) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "out of memory");
        return;
    }
    json_array_foreach(arr, i, inst)
    {
        if (n >= cap)
            break;
        if (!gpd_label_is_ours(json_string_value(json_object_get(inst, "label"))))
            continue;
        char id[128] = "";
        gpd__json_id(json_object_get(inst, "id"), id, sizeof(id));
        gpd__vast_instance_status(inst, gpd__port_memo_get(&o->p->ports, id), &list[n]);
        if (list[n].id[0])
            n++;
    }
    gpd__op_report_list(&o->op, GPD_PROV_OK, "", list, n);
    free(list);
}

static void vast_list_ours(gpd_provider *gp, gpd_list_cb cb, void *ctx)
{
    vast_provider *p = (vast_provider *)gp;
    vast_op *o = op_new(p, GPD__OP_LIST, ctx);
    if (!o)
        return;
    o->op.cb.list = cb;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "vastai: no API key configured", list_done);
        return;
    }
    char url[1024];
    build_url(p, url, sizeof(url), "/instances/?owner=me", NULL);
    gpd__op_send_or_fail(&o->op, "GET", url, NULL, true, list_done);
}

static void vast_free(gpd_provider *gp)
{
    vast_provider *p = (vast_provider *)gp;
    if (!p)
        return;
    gpd__op_cancel_all(&p->ops);
    free(p->base.base_url);
    free(p->base.api_key);
    free(p);
}

static const gpd_provider_ops vast_ops = {
    .name = "vastai",
    .search = vast_search,
    .create = vast_create,
    .status = vast_status,
    .destroy = vast_destroy,
    .list_ours = vast_list_ours,
    .extend = NULL,
    .free = vast_free,
};

static char *strip_slash_dup(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    return strndup(s, n);
}

gpd_provider *gpd_vastai_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *api_key)
{
    vast_provider *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->base.ops = &vast_ops;
    p->base.loop = loop;
    p->base.curl = curl;
    p->base.base_url = strip_slash_dup(base_url ? base_url : "https://console.vast.ai/api/v0");
    p->base.api_key = api_key && *api_key ? strdup(api_key) : NULL;
    p->disk_gb = VAST_DEFAULT_DISK_GB;
    if (!p->base.base_url || (api_key && *api_key && !p->base.api_key)) {
        vast_free(&p->base);
        return NULL;
    }
    snprintf(p->auth, sizeof(p->auth), "Authorization: Bearer %s", p->base.api_key ? p->base.api_key : "");
    return &p->base;
}

void gpd_vastai_set_disk_gb(gpd_provider *gp, int disk_gb)
{
    if (gp && gp->ops == &vast_ops && disk_gb > 0)
        ((vast_provider *)gp)->disk_gb = disk_gb;
}
