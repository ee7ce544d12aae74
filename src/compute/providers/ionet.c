/*
 * IO.net io.cloud, containers as a service: a deployment is prepaid for
 * whole hours on hardware_id in some locations; its containers ("workers")
 * get a public_url that reaches the container's traffic_port.  Shapes:
 * shared/docs/provider-apis.md.
 *
 * Behaviour worth knowing:
 *   - an offer is a (hardware, location) pair, id "hardware_id:location_id";
 *     its price comes from /caas/price, which answers the TOTAL for
 *     duration_hours: divided back to $/h here;
 *   - search fans out: one hardware list, then one available-replicas call
 *     per matching hardware, then one price call per (hardware, location),
 *     at most GPD__OP_CALLS at once;
 *   - deploy and extend are never repeated after a 5xx or a timeout (a
 *     second deploy is a second prepaid deployment, a second extend pays
 *     twice); after an ambiguous deploy the deployments are listed and one
 *     named with this reservation's label is reported with the error;
 *   - status strings are unverified: "running" with a worker's public_url is
 *     RUNNING (the endpoint is that public_url), "failed" FAILED, "destroyed"
 *     GONE, "completed" and the end-of-life words STOPPED, anything else
 *     PENDING (the broker's provisioning deadline bounds it).
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

#define IONET_MAX_HW 8
#define IONET_MAX_PAIRS GPD__OP_CALLS
#define IONET_MAX_LIST 1024

typedef struct ionet_provider {
    gpd_provider base;
    char auth[512];
    gpd__op *ops;
} ionet_provider;

typedef struct ionet_pair {
    size_t hw;
    gpd__ionet_loc loc;
    double price;        /* $/h, < 0 unknown */
} ionet_pair;

typedef struct ionet_op {
    gpd__op op;
    ionet_provider *p;
    /* search */
    gpd_offer_query q;
    char q_model[48], q_region[48];
    int duration;
    gpd__ionet_hw hw[IONET_MAX_HW];
    size_t nhw;
    ionet_pair pairs[IONET_MAX_PAIRS];
    size_t npairs;
    enum gpd_prov_err fan_err;  /* first error of the fan-out */
    char fan_msg[320];
    /* create / status / destroy / extend */
    char id[128];
    char label[96];
    json_t *deployment, *containers;
    bool deployment_done, containers_done;
    int deployment_status;
} ionet_op;

/* ---- pure parts ---- */

static const json_t *data_of(const json_t *root)
{
    const json_t *d = json_object_get(root, "data");
    return d ? d : root;
}

static bool is_country_code(const char *r)
{
    return r && strlen(r) == 2 && isalpha((unsigned char)r[0]) && isalpha((unsigned char)r[1]);
}

size_t gpd__ionet_parse_hardware(const json_t *root, const gpd_offer_query *q, gpd__ionet_hw *out, size_t max)
{
    const json_t *d = data_of(root);
    const json_t *list = json_is_array(d) ? d : json_object_get(d, "hardware"), *h;
    int want = q->count > 0 ? q->count : 1;
    size_t n = 0, i;
    json_array_foreach(list, i, h)
    {
        if (n >= max)
            break;
        gpd__ionet_hw *w = &out[n];
        memset(w, 0, sizeof(*w));
        const json_t *id = json_object_get(h, "hardware_id");
        if (!json_is_integer(id))
            continue;
        w->id = (long long)json_integer_value(id);
        const char *name = json_string_value(json_object_get(h, "hardware_name"));
        const char *model = gpd_gpu_model_normalise(name);
        if (q->gpu_model && *q->gpu_model && (!model || strcasecmp(model, q->gpu_model) != 0))
            continue;
        snprintf(w->model, sizeof(w->model), "%s", model ? model : name ? name : "unknown");
        w->max_gpus = (int)gpd__json_num(json_object_get(h, "max_gpus_per_container"), 0);
        w->available = (int)gpd__json_num(json_object_get(h, "available"), -1);
        if (w->max_gpus > 0 && w->max_gpus < want)
            continue;
        if (w->available >= 0 && w->available < want)
            continue;
        n++;
    }
    return n;
}

size_t gpd__ionet_parse_locations(const json_t *root, const char *region, gpd__ionet_loc *out, size_t max)
{
    const json_t *d = data_of(root);
    const json_t *list = json_is_array(d) ? d : json_object_get(d, "locations"), *l;
    size_t n = 0, i;
    json_array_foreach(list, i, l)
    {
        if (n >= max)
            break;
        gpd__ionet_loc *o = &out[n];
        memset(o, 0, sizeof(*o));
        const json_t *id = json_object_get(l, "id");
        if (!json_is_integer(id))
            continue;
        o->id = (long long)json_integer_value(id);
        const char *iso = json_string_value(json_object_get(l, "iso2"));
        snprintf(o->iso2, sizeof(o->iso2), "%s", iso ? iso : "");
        for (char *c = o->iso2; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        o->replicas = (int)gpd__json_num(json_object_get(l, "available_replicas"), 0);
        if (o->replicas <= 0)
            continue;
        if (region && *region && strcasecmp(region, o->iso2) != 0)
            continue;
        n++;
    }
    return n;
}

double gpd__ionet_parse_price(const json_t *root, int duration_hours)
{
    const json_t *d = data_of(root);
    double total = gpd__json_num(json_object_get(d, "total_cost_usdc"), -1);
    if (total < 0)
        total = gpd__json_num(json_object_get(d, "total_cost"), -1);
    if (total < 0 || duration_hours <= 0)
        return -1;
    return total / duration_hours;
}

/* "203:1" -> 203, 1. */
static bool parse_offer_id(const char *id, long long *hw, long long *loc)
{
    char *end;
    if (!id || !isdigit((unsigned char)*id))
        return false;
    *hw = strtoll(id, &end, 10);
    if (*end != ':' || !isdigit((unsigned char)end[1]))
        return false;
    *loc = strtoll(end + 1, &end, 10);
    return *end == '\0';
}

json_t *gpd__ionet_deploy_body(const gpd_instance_spec *spec)
{
    long long hw, loc;
    if (!spec->offer || !parse_offer_id(spec->offer->id, &hw, &loc))
        return NULL;
    const gpd_runtime *rt = spec->runtime;
    int port = rt && rt->port > 0 ? rt->port : 8000;
    int gpus = spec->offer->count > 0 ? spec->offer->count : 1;
    char num[16];
    snprintf(num, sizeof(num), "%d", port);
    json_t *env = json_object();
    if (spec->model)
        json_object_set_new(env, "MODEL", json_string(spec->model));
    json_object_set_new(env, "PORT", json_string(num));
    json_t *cc = json_object();
    json_object_set_new(cc, "replica_count", json_integer(1));
    json_object_set_new(cc, "env_variables", env);
    json_object_set_new(cc, "secret_env_variables", json_object());
    /* No entrypoint of ours: the image's own runs, with the recipe's args. */
    json_object_set_new(cc, "entrypoint", json_array());
    json_object_set_new(cc, "args", gpd__runtime_args(rt, spec->model, gpus));
    json_object_set_new(cc, "traffic_port", json_integer(port));
    json_t *rc = json_object();
    json_object_set_new(rc, "image_url", json_string(rt && rt->image ? rt->image : ""));
    json_object_set_new(rc, "registry_username", json_string(""));
    json_object_set_new(rc, "registry_secret", json_string(""));
    json_t *locs = json_array();
    json_array_append_new(locs, json_integer(loc));
    json_t *b = json_object();
    json_object_set_new(b, "resource_private_name", json_string(spec->label ? spec->label : ""));
    json_object_set_new(b, "duration_hours", json_integer(spec->duration_hours > 0 ? spec->duration_hours : 1));
    json_object_set_new(b, "gpus_per_container", json_integer(gpus));
    json_object_set_new(b, "hardware_id", json_integer(hw));
    json_object_set_new(b, "location_ids", locs);
    json_object_set_new(b, "container_config", cc);
    json_object_set_new(b, "registry_config", rc);
    return b;
}

bool gpd__ionet_deployment_id(const json_t *root, char *out, size_t outlen)
{
    if (gpd__json_id(json_object_get(root, "deployment_id"), out, outlen))
        return true;
    const json_t *d = json_object_get(root, "data");
    return gpd__json_id(json_object_get(d, "deployment_id"), out, outlen) ||
           gpd__json_id(json_object_get(d, "id"), out, outlen);
}

enum gpd_instance_state gpd__ionet_state_name(const char *status, bool have_url)
{
    static const char *const stopped[] = { "completed", "terminated", "stopped", "expired", "cancelled",
                                           "canceled",  "ended",      NULL };
    if (!status)
        return GPD_INSTANCE_PENDING;
    if (!strcasecmp(status, "running"))
        return have_url ? GPD_INSTANCE_RUNNING : GPD_INSTANCE_PENDING;
    if (!strcasecmp(status, "failed") || !strcasecmp(status, "error"))
        return GPD_INSTANCE_FAILED;
    if (!strcasecmp(status, "destroyed"))
        return GPD_INSTANCE_GONE;
    for (size_t i = 0; stopped[i]; i++)
        if (!strcasecmp(status, stopped[i]))
            return GPD_INSTANCE_STOPPED;
    return GPD_INSTANCE_PENDING; /* "deployment requested" and whatever the API adds */
}

static const json_t *workers_of(const json_t *containers)
{
    const json_t *d = data_of(containers);
    if (json_is_array(d))
        return d;
    const json_t *w = json_object_get(d, "workers");
    return json_is_array(w) ? w : json_object_get(d, "containers");
}

void gpd__ionet_status(const json_t *deployment, const json_t *containers, gpd_instance_status *st)
{
    memset(st, 0, sizeof(*st));
    st->cost_per_hr = -1;
    const json_t *d = data_of(deployment);
    gpd__json_id(json_object_get(d, "id"), st->id, sizeof(st->id));
    const char *name = json_string_value(json_object_get(d, "resource_private_name"));
    if (!name)
        name = json_string_value(json_object_get(d, "name"));
    snprintf(st->label, sizeof(st->label), "%s", name ? name : "");
    const char *status = json_string_value(json_object_get(d, "status"));
    double paid = gpd__json_num(json_object_get(d, "amount_paid"), -1);
    double hours = gpd__json_num(json_object_get(d, "duration_hours"), -1);
    if (paid >= 0 && hours > 0)
        st->cost_per_hr = paid / hours;

    const json_t *workers = workers_of(containers), *w;
    const char *url = NULL, *event = NULL;
    size_t i;
    json_array_foreach(workers, i, w)
    {
        const char *u = json_string_value(json_object_get(w, "public_url"));
        const char *ws = json_string_value(json_object_get(w, "status"));
        const json_t *events = json_object_get(w, "container_events");
        size_t ne = json_array_size(events);
        if (!event && ne > 0)
            event = json_string_value(json_object_get(json_array_get(events, ne - 1), "message"));
        if (!url && u && *u && (!ws || !strcasecmp(ws, "running")))
            url = u;
    }
    st->state = gpd__ionet_state_name(status, url != NULL);
    if (st->state == GPD_INSTANCE_RUNNING) {
        size_t n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            n--;
        snprintf(st->endpoint, sizeof(st->endpoint), "%.*s", (int)n, url);
    }
    snprintf(st->message, sizeof(st->message), "%s%s%s", status ? status : "unknown", event ? ": " : "",
             event ? event : "");
}

const json_t *gpd__ionet_deployments(const json_t *root)
{
    if (json_is_array(root))
        return root;
    const json_t *d = json_object_get(root, "data");
    if (json_is_array(d))
        return d;
    if (json_is_array(json_object_get(d, "deployments")))
        return json_object_get(d, "deployments");
    if (json_is_array(json_object_get(root, "deployments")))
        return json_object_get(root, "deployments");
    return NULL;
}

enum gpd_prov_err gpd__ionet_error(int status, const json_t *root, const char *body, size_t len)
{
    enum gpd_prov_err err = gpd_http_classify(status, body, len);
    if (err == GPD_PROV_BAD_REQUEST || err == GPD_PROV_FAILED) {
        char m[256];
        gpd_http_error_message(root, body, len, m, sizeof(m));
        if (gpd__contains_ci(m, "capacity") || gpd__contains_ci(m, "not enough") ||
            gpd__contains_ci(m, "no available") || gpd__contains_ci(m, "unavailable"))
            err = GPD_PROV_NO_CAPACITY;
    }
    return err;
}

/* ---- operations ---- */

static void op_destroy(gpd__op *op)
{
    ionet_op *o = (ionet_op *)op;
    json_decref(o->deployment);
    json_decref(o->containers);
    free(o);
}

static ionet_op *op_new(ionet_provider *p, enum gpd__op_kind kind, void *ctx)
{
    ionet_op *o = (ionet_op *)gpd__op_new(sizeof(*o), &p->base, &p->ops, kind, ctx, op_destroy);
    if (o) {
        o->p = p;
        o->op.auth = p->auth;
    }
    return o;
}

static void url_for(ionet_provider *p, char *out, size_t outlen, const char *fmt, const char *id)
{
    char esc[256], path[1024];
    snprintf(path, sizeof(path), fmt, id ? gpd_http_escape(id, esc, sizeof(esc)) : "");
    snprintf(out, outlen, "%s%s", p->base.base_url, path);
}

static bool have_key(ionet_provider *p)
{
    return p->base.api_key && *p->base.api_key;
}

/* The message of an IO.net error reply, "HTTP 400: no capacity". */
static void reply_msg(const gpd_http_reply *r, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", r->msg);
}

/* search */

static void fan_error(ionet_op *o, const gpd_http_reply *r)
{
    if (o->fan_err == GPD_PROV_OK) {
        o->fan_err = r->err != GPD_PROV_OK ? r->err : GPD_PROV_FAILED;
        reply_msg(r, o->fan_msg, sizeof(o->fan_msg));
        if (!o->fan_msg[0])
            snprintf(o->fan_msg, sizeof(o->fan_msg), "unreadable answer");
    }
}

static int cmp_offer_price(const void *a, const void *b)
{
    const gpd_offer *x = a, *y = b;
    if (x->price_per_hr != y->price_per_hr)
        return x->price_per_hr < y->price_per_hr ? -1 : 1;
    return x->available > y->available ? -1 : x->available < y->available;
}

static void search_finish(ionet_op *o)
{
    gpd_offer offers[IONET_MAX_PAIRS];
    size_t n = 0;
    for (size_t i = 0; i < o->npairs; i++) {
        const ionet_pair *pr = &o->pairs[i];
        const gpd__ionet_hw *hw = &o->hw[pr->hw];
        if (pr->price < 0)
            continue;
        if (o->q.max_cost_per_hr > 0 && pr->price > o->q.max_cost_per_hr)
            continue;
        gpd_offer *f = &offers[n++];
        memset(f, 0, sizeof(*f));
        snprintf(f->provider, sizeof(f->provider), "ionet");
        snprintf(f->id, sizeof(f->id), "%lld:%lld", hw->id, pr->loc.id);
        snprintf(f->gpu_model, sizeof(f->gpu_model), "%s", hw->model);
        snprintf(f->compute_type, sizeof(f->compute_type), "gpu");
        f->count = o->q.count > 0 ? o->q.count : 1;
        f->price_per_hr = pr->price;
        f->spot_price_per_hr = -1;
        snprintf(f->region, sizeof(f->region), "%s", pr->loc.iso2);
        f->reliability = -1;
        f->available = pr->loc.replicas;
    }
    qsort(offers, n, sizeof(offers[0]), cmp_offer_price);
    if (o->q.limit > 0 && n > (size_t)o->q.limit)
        n = (size_t)o->q.limit;
    if (n == 0 && o->fan_err != GPD_PROV_OK)
        gpd__op_report(&o->op, o->fan_err, o->fan_msg);
    else
        gpd__op_report_offers(&o->op, GPD_PROV_OK, "", offers, n);
}

static void price_done(void *ctx, const gpd_http_reply *r)
{
    unsigned idx;
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, &idx);
    if (r->err == GPD_PROV_OK && r->status != 0)
        o->pairs[idx].price = gpd__ionet_parse_price(r->json, o->duration);
    if (r->err != GPD_PROV_OK || r->status == 0 || o->pairs[idx].price < 0)
        fan_error(o, r);
    if (o->op.pending == 0)
        search_finish(o);
}

static void replicas_done(void *ctx, const gpd_http_reply *r)
{
    unsigned idx;
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, &idx);
    if (r->err != GPD_PROV_OK || r->status == 0) {
        fan_error(o, r);
    } else {
        gpd__ionet_loc locs[IONET_MAX_PAIRS];
        size_t n = gpd__ionet_parse_locations(r->json, o->q.region, locs, IONET_MAX_PAIRS);
        for (size_t i = 0; i < n && o->npairs < IONET_MAX_PAIRS; i++)
            o->pairs[o->npairs++] = (ionet_pair){ .hw = idx, .loc = locs[i], .price = -1 };
    }
    if (o->op.pending > 0)
        return;
    if (o->npairs == 0) {
        search_finish(o);
        return;
    }
    int count = o->q.count > 0 ? o->q.count : 1;
    for (size_t i = 0; i < o->npairs; i++) {
        char url[1024];
        snprintf(url, sizeof(url),
                 "%s/caas/price?location_ids=%%5B%lld%%5D&hardware_id=%lld&gpus_per_container=%d"
                 "&duration_hours=%d&replica_count=1&currency=usdc",
                 o->p->base.base_url, o->pairs[i].loc.id, o->hw[o->pairs[i].hw].id, count, o->duration);
        if (gpd__op_send(&o->op, (unsigned)i, "GET", url, NULL, true, 0, price_done) != 0)
            o->pairs[i].price = -1;
    }
    if (o->op.pending == 0)
        search_finish(o);
}

static void hardware_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    o->nhw = gpd__ionet_parse_hardware(r->json, &o->q, o->hw, IONET_MAX_HW);
    int count = o->q.count > 0 ? o->q.count : 1;
    for (size_t i = 0; i < o->nhw; i++) {
        char url[1024];
        snprintf(url, sizeof(url), "%s/caas/available-replicas?hardware_id=%lld&hardware_qty=%d",
                 o->p->base.base_url, o->hw[i].id, count);
        gpd__op_send(&o->op, (unsigned)i, "GET", url, NULL, true, 0, replicas_done);
    }
    if (o->op.pending == 0)
        search_finish(o);
}

static void ionet_search(gpd_provider *gp, const gpd_offer_query *q, gpd_offers_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_SEARCH, ctx);
    if (!o)
        return;
    o->op.cb.offers = cb;
    o->q = *q;
    snprintf(o->q_model, sizeof(o->q_model), "%s", q->gpu_model ? q->gpu_model : "");
    snprintf(o->q_region, sizeof(o->q_region), "%s", q->region ? q->region : "");
    o->q.gpu_model = o->q_model[0] ? o->q_model : NULL;
    o->q.region = o->q_region[0] ? o->q_region : NULL;
    o->q.compute_type = "gpu";
    o->q.tpu_type = NULL;
    o->duration = q->duration_hours > 0 ? q->duration_hours : 1;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "ionet: no API key configured", hardware_done);
        return;
    }
    if (q->compute_type && strcmp(q->compute_type, "gpu") != 0) {
        gpd__op_fail(&o->op, GPD_PROV_UNSUPPORTED, "ionet deploys GPU containers only", hardware_done);
        return;
    }
    if (o->q.gpu_model && !gpd_gpu_model_normalise(o->q.gpu_model)) {
        gpd__op_fail(&o->op, GPD_PROV_UNSUPPORTED, "ionet: GPU model not known", hardware_done);
        return;
    }
    if (o->q.region && !is_country_code(o->q.region)) {
        /* Locations are countries: no offer can be in a zone like "us-central1". */
        o->nhw = 0;
        gpd__op_fail(&o->op, GPD_PROV_OK, "", hardware_done);
        return;
    }
    char url[1024];
    url_for(p, url, sizeof(url), "/caas/hardware/max-gpus-per-container", NULL);
    gpd__op_send_or_fail(&o->op, "GET", url, NULL, true, hardware_done);
}

/* create */

static void create_lookup_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    const json_t *list = r->err == GPD_PROV_OK ? gpd__ionet_deployments(r->json) : NULL, *d;
    char id[128] = "";
    size_t i;
    json_array_foreach(list, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "resource_private_name"));
        if (!name)
            name = json_string_value(json_object_get(d, "name"));
        const char *status = json_string_value(json_object_get(d, "status"));
        if (name && !strcmp(name, o->label) && !(status && !strcasecmp(status, "destroyed")) &&
            gpd__json_id(json_object_get(d, "id"), id, sizeof(id)))
            break;
        id[0] = '\0';
    }
    if (id[0])
        gpd_log_warn("ionet: deploy failed but made a deployment", "\"deployment\":\"%s\",\"label\":\"%s\"", id,
                     o->label);
    gpd__op_report_id(&o->op, o->fan_err, o->fan_msg, id);
}

static void create_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    char id[128] = "";
    if (r->status >= 200 && r->status < 300) {
        if (gpd__ionet_deployment_id(r->json, id, sizeof(id)))
            gpd__op_report_id(&o->op, GPD_PROV_OK, "", id);
        else
            gpd__op_report(&o->op, GPD_PROV_FAILED, "deploy answer without deployment_id");
        return;
    }
    enum gpd_prov_err err = r->status ? gpd__ionet_error(r->status, r->json, r->body, r->body_len) : r->err;
    if (err == GPD_PROV_TRANSIENT && (r->status != 0 || r->tries > 0)) {
        /* A 5xx or a timeout: the deployment may exist.  Look for our name. */
        o->fan_err = err;
        snprintf(o->fan_msg, sizeof(o->fan_msg), "%s", r->msg);
        char url[1024];
        url_for(o->p, url, sizeof(url), "/caas/deployments", NULL);
        if (gpd__op_send(&o->op, 0, "GET", url, NULL, true, 0, create_lookup_done) == 0)
            return;
    }
    gpd__op_report(&o->op, err, r->msg);
}

static void ionet_create(gpd_provider *gp, const gpd_instance_spec *spec, gpd_create_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_CREATE, ctx);
    if (!o)
        return;
    o->op.cb.create = cb;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "ionet: no API key configured", create_done);
        return;
    }
    if (!spec->runtime || !spec->runtime->image || !spec->label) {
        gpd__op_fail(&o->op, GPD_PROV_BAD_REQUEST, "ionet: create needs a runtime image and a label", create_done);
        return;
    }
    json_t *body = gpd__ionet_deploy_body(spec);
    if (!body) {
        gpd__op_fail(&o->op, GPD_PROV_BAD_REQUEST, "ionet: offer id is not hardware_id:location_id", create_done);
        return;
    }
    snprintf(o->label, sizeof(o->label), "%s", spec->label);
    char *text = gpd__json_compact(body);
    json_decref(body);
    char url[1024];
    url_for(p, url, sizeof(url), "/caas/deploy", NULL);
    /* Never repeated after a 5xx or a timeout: a second deploy is a second prepaid deployment. */
    if (!text || gpd__op_send(&o->op, 0, "POST", url, text, false, 0, create_done) != 0)
        gpd__op_fail(&o->op, GPD_PROV_FAILED, "out of memory", create_done);
    free(text);
}

/* status */

static void status_finish(ionet_op *o)
{
    gpd_instance_status st;
    if (o->deployment_status == 404) {
        memset(&st, 0, sizeof(st));
        snprintf(st.id, sizeof(st.id), "%s", o->id);
        st.state = GPD_INSTANCE_GONE;
        st.cost_per_hr = -1;
        snprintf(st.message, sizeof(st.message), "deployment not found");
        gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
        return;
    }
    if (o->fan_err != GPD_PROV_OK) {
        gpd__op_report(&o->op, o->fan_err, o->fan_msg);
        return;
    }
    gpd__ionet_status(o->deployment, o->containers, &st);
    snprintf(st.id, sizeof(st.id), "%s", o->id);
    gpd__op_report_status(&o->op, GPD_PROV_OK, "", &st);
}

static void deployment_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    o->deployment_status = r->status;
    if (r->status == 404) {
        /* gone: the containers answer does not matter */
    } else if (r->err != GPD_PROV_OK || r->status == 0 || !json_is_object(r->json)) {
        fan_error(o, r);
    } else {
        o->deployment = json_incref(r->json);
    }
    if (o->op.pending == 0)
        status_finish(o);
}

static void containers_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    /* Containers may be missing while the deployment starts: not an error. */
    if (r->err == GPD_PROV_OK && json_is_object(r->json))
        o->containers = json_incref(r->json);
    if (o->op.pending == 0)
        status_finish(o);
}

static void ionet_status(gpd_provider *gp, const char *instance_id, gpd_status_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_STATUS, ctx);
    if (!o)
        return;
    o->op.cb.status = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!have_key(p) || !o->id[0]) {
        gpd__op_fail(&o->op, have_key(p) ? GPD_PROV_BAD_REQUEST : GPD_PROV_AUTH,
                     have_key(p) ? "ionet: no deployment id" : "ionet: no API key configured", deployment_done);
        return;
    }
    char url[1024];
    url_for(p, url, sizeof(url), "/caas/deployment/%s", o->id);
    int rc = gpd__op_send(&o->op, 0, "GET", url, NULL, true, 0, deployment_done);
    url_for(p, url, sizeof(url), "/caas/deployment/%s/containers", o->id);
    if (rc == 0)
        rc = gpd__op_send(&o->op, 1, "GET", url, NULL, true, 0, containers_done);
    if (rc != 0)
        gpd__op_fail(&o->op, GPD_PROV_FAILED, "out of memory", deployment_done); /* cancels slot 0 too */
}

/* destroy, extend */

static void done_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    if (o->op.kind == GPD__OP_DESTROY && (r->status == 404 || r->err == GPD_PROV_NOT_FOUND)) {
        gpd__op_report(&o->op, GPD_PROV_OK, "");
        return;
    }
    if (r->status == 0 || r->err != GPD_PROV_OK) {
        enum gpd_prov_err err = r->status ? gpd__ionet_error(r->status, r->json, r->body, r->body_len) : r->err;
        gpd__op_report(&o->op, err, r->msg);
        return;
    }
    gpd__op_report(&o->op, GPD_PROV_OK, "");
}

static void ionet_destroy(gpd_provider *gp, const char *instance_id, gpd_done_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_DESTROY, ctx);
    if (!o)
        return;
    o->op.cb.done = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!have_key(p) || !o->id[0]) {
        gpd__op_fail(&o->op, have_key(p) ? GPD_PROV_BAD_REQUEST : GPD_PROV_AUTH,
                     have_key(p) ? "ionet: no deployment id" : "ionet: no API key configured", done_done);
        return;
    }
    char url[1024];
    url_for(p, url, sizeof(url), "/caas/deployment/%s", o->id);
    /* Destroying twice is harmless: the second is a 404, which counts as done. */
    gpd__op_send_or_fail(&o->op, "DELETE", url, NULL, true, done_done);
}

static void ionet_extend(gpd_provider *gp, const char *instance_id, int hours, gpd_done_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_EXTEND, ctx);
    if (!o)
        return;
    o->op.cb.done = cb;
    snprintf(o->id, sizeof(o->id), "%s", instance_id ? instance_id : "");
    if (!have_key(p) || !o->id[0] || hours <= 0) {
        gpd__op_fail(&o->op, have_key(p) ? GPD_PROV_BAD_REQUEST : GPD_PROV_AUTH,
                     have_key(p) ? "ionet: extend needs a deployment id and hours > 0"
                                 : "ionet: no API key configured",
                     done_done);
        return;
    }
    char url[1024], body[64];
    url_for(p, url, sizeof(url), "/caas/deployment/%s/extend", o->id);
    snprintf(body, sizeof(body), "{\"duration_hours\":%d}", hours);
    /* Not repeated after a 5xx or a timeout: a second extend pays twice. */
    gpd__op_send_or_fail(&o->op, "POST", url, body, false, done_done);
}

/* list */

static void list_done(void *ctx, const gpd_http_reply *r)
{
    ionet_op *o = (ionet_op *)gpd__op_of(ctx, NULL);
    if (r->err != GPD_PROV_OK || r->status == 0) {
        gpd__op_report(&o->op, r->err, r->msg);
        return;
    }
    const json_t *arr = gpd__ionet_deployments(r->json), *d;
    if (!arr) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "deployments answer has no list");
        return;
    }
    size_t cap = json_array_size(arr), n = 0, i;
    if (cap > IONET_MAX_LIST)
        cap = IONET_MAX_LIST;
    gpd_instance_status *list = calloc(cap ? cap : 1, sizeof(*list));
    if (!list) {
        gpd__op_report(&o->op, GPD_PROV_FAILED, "out of memory");
        return;
    }
    json_array_foreach(arr, i, d)
    {
        if (n >= cap)
            break;
        gpd_instance_status *st = &list[n];
        gpd__ionet_status(d, NULL, st);
        if (!st->id[0] || !gpd_label_is_ours(st->label))
            continue;
        /* The list is history too: destroyed deployments are not ours any more. */
        const char *status = json_string_value(json_object_get(d, "status"));
        st->state = gpd__ionet_state_name(status, true); /* no containers here: running is running */
        if (st->state == GPD_INSTANCE_GONE)
            continue;
        n++;
    }
    gpd__op_report_list(&o->op, GPD_PROV_OK, "", list, n);
    free(list);
}

static void ionet_list_ours(gpd_provider *gp, gpd_list_cb cb, void *ctx)
{
    ionet_provider *p = (ionet_provider *)gp;
    ionet_op *o = op_new(p, GPD__OP_LIST, ctx);
    if (!o)
        return;
    o->op.cb.list = cb;
    if (!have_key(p)) {
        gpd__op_fail(&o->op, GPD_PROV_AUTH, "ionet: no API key configured", list_done);
        return;
    }
    char url[1024];
    url_for(p, url, sizeof(url), "/caas/deployments", NULL);
    gpd__op_send_or_fail(&o->op, "GET", url, NULL, true, list_done);
}

static void ionet_free(gpd_provider *gp)
{
    ionet_provider *p = (ionet_provider *)gp;
    if (!p)
        return;
    gpd__op_cancel_all(&p->ops);
    free(p->base.base_url);
    free(p->base.api_key);
    free(p);
}

static const gpd_provider_ops ionet_ops = {
    .name = "ionet",
    .search = ionet_search,
    .create = ionet_create,
    .status = ionet_status,
    .destroy = ionet_destroy,
    .list_ours = ionet_list_ours,
    .extend = ionet_extend,
    .free = ionet_free,
};

gpd_provider *gpd_ionet_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *api_key)
{
    ionet_provider *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    const char *b = base_url ? base_url : "https://api.io.solutions/enterprise/v1/io-cloud";
    size_t bl = strlen(b);
    while (bl > 0 && b[bl - 1] == '/')
        bl--;
    p->base.ops = &ionet_ops;
    p->base.loop = loop;
    p->base.curl = curl;
    p->base.base_url = strndup(b, bl);
    p->base.api_key = api_key && *api_key ? strdup(api_key) : NULL;
    if (!p->base.base_url || (api_key && *api_key && !p->base.api_key)) {
        ionet_free(&p->base);
        return NULL;
    }
    snprintf(p->auth, sizeof(p->auth), "x-api-key: %s", p->base.api_key ? p->base.api_key : "");
    return &p->base;
}
