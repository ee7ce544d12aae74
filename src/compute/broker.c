/*
 * The compute broker: see broker.h for the life of a reservation.
 *
 * Reservations live in memory (this struct res) and in the store (a row
 * whose doc is the API representation plus what is needed to resume).
 * Asynchronous provider calls hold a reference on the reservation, so that
 * a release during a create still sees the create's answer, and destroys
 * what it made.
 */
#include "compute/broker.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "compute/selection.h"
#include "core/log.h"
#include "core/units.h"


#define MAX_PROVIDERS 5
#define MAX_OFFERS 10000
#define MAX_ATTEMPTS_KEPT 50
#define DESTROY_RETRY_MS 5000

enum res_status { ST_QUEUED = 0, ST_PROVISIONING, ST_ACTIVE, ST_RELEASED, ST_EXPIRED, ST_FAILED };
static const char *const status_names[] = { "queued", "provisioning", "active", "released", "expired", "failed" };

enum phase { PH_IDLE = 0, PH_SEARCH, PH_CREATE, PH_WAIT_INSTANCE, PH_WAIT_HEALTH, PH_ACTIVE };

typedef struct res res;

typedef struct cooldown {
    char key[128];           /* provider/offer id */
    uint64_t until_ms;
} cooldown;

struct gpd_broker {
    uv_loop_t *loop;
    gpd_curl *curl;
    const gpd_config *cfg;
    gpd_store *store;
    gpd_registry *registry;
    gpd_provider *providers[MAX_PROVIDERS]; /* indexed like gpd_broker_provider_names; NULL = not configured */
    res *list;               /* every reservation not yet ended, in creation order */
    uv_timer_t queue_timer, reconcile_timer, accrual_timer;
    cooldown *cooldowns;
    size_t n_cooldowns, cap_cooldowns;
    char owner[96];
    bool stopping;
    /* Everything that waits for a provider's callback, so that shutdown frees
     * what the providers cancel without calling back. */
    res *all;
    struct orphan *orphans;
    struct reconcile_ctx *reconciling[MAX_PROVIDERS];
};

struct res {
    gpd_broker *b;
    int refs;
    res *next;
    res *all_prev, *all_next;   /* the broker's list of every allocated reservation */
    bool in_all;
    bool listed;
    char id[40];
    enum res_status status;
    /* the request */
    char req_provider[16], compute_type[8], gpu_model[48], tpu_type[48], runtime[64], region[48];
    int count;
    int64_t duration_s;
    double max_cost;
    char providers[MAX_PROVIDERS][16];
    int n_providers;
    bool auto_select, enable_hybrid;
    json_t *labels;
    char model_name[256];
    /* progress */
    char provider[16];
    gpd_offer offer;
    char instance_id[128], instance_state[16], instance_endpoint[256];
    json_t *attempts;
    char selection[512];
    char message[512];
    double cost_per_hr, accrued;
    int64_t created_at, started_at, active_at, expires_at, ended_at, last_accrual;
    int port;
    char endpoint_name[256];
    int gpus, tpus;
    /* placement */
    gpd_offer *cands;
    size_t n_cands, cand_i;
    int prov_i;
    int tried_per_provider[MAX_PROVIDERS];
    enum phase phase;
    bool cancelled;
    bool destroy_pending;
    uv_timer_t timer;        /* polls and deadlines of this reservation */
    bool timer_open;
    uint64_t deadline_ms;
    gpd_curl_req *health_req;
    int health_status;
};

/* ---- small helpers ---- */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static void rfc3339(int64_t t, char *out, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int provider_index(const char *name)
{
    for (int i = 0; gpd_broker_provider_names[i]; i++)
        if (!strcmp(gpd_broker_provider_names[i], name))
            return i;
    return -1;
}

static json_t *error_json(const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static json_t *error_json(const char *type, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", type, "code", code);
}

static void res_ref(res *r)
{
    r->refs++;
}

static void all_unlink(res *r)
{
    if (!r->in_all)
        return;
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        r->b->all = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    r->in_all = false;
}

static void timer_closed(uv_handle_t *h)
{
    res *r = h->data;
    r->timer_open = false;
    if (r->refs == 0) {
        all_unlink(r);
        json_decref(r->labels);
        json_decref(r->attempts);
        free(r->cands);
        free(r);
    }
}

static void res_unref(res *r)
{
    if (--r->refs > 0)
        return;
    if (r->timer_open)
        uv_close((uv_handle_t *)&r->timer, timer_closed);
    else
        timer_closed((uv_handle_t *)&r->timer);
}

static void list_remove(gpd_broker *b, res *r)
{
    for (res **pp = &b->list; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            r->listed = false;
            res_unref(r);
            return;
        }
    }
}

static res *find(gpd_broker *b, const char *id)
{
    for (res *r = b->list; r; r = r->next)
        if (!strcmp(r->id, id))
            return r;
    return NULL;
}

static bool is_terminal(enum res_status s)
{
    return s == ST_RELEASED || s == ST_EXPIRED || s == ST_FAILED;
}

static void add_attempt(res *r, const char *provider, const char *offer, const char *outcome, const char *reason)
{
    if (json_array_size(r->attempts) >= MAX_ATTEMPTS_KEPT)
        json_array_remove(r->attempts, 0);
    char at[32];
    rfc3339(now_s(), at, sizeof(at));
    json_array_append_new(r->attempts, json_pack("{s:s,s:s,s:s,s:s,s:s}", "provider", provider, "offer",
                                                 offer ? offer : "", "outcome", outcome, "reason",
                                                 reason ? reason : "", "at", at));
}

/* ---- JSON representation (the API answer, and the store's doc) ---- */

static int queue_position(const res *r)
{
    int pos = 1;
    for (const res *o = r->b->list; o && o != r; o = o->next)
        if (o->status == ST_QUEUED)
            pos++;
    return pos;
}

static json_t *res_json(const res *r, bool internal)
{
    char created[32], expires[32] = "", active[32] = "";
    rfc3339(r->created_at, created, sizeof(created));
    if (r->expires_at)
        rfc3339(r->expires_at, expires, sizeof(expires));
    if (r->active_at)
        rfc3339(r->active_at, active, sizeof(active));
    char endpoint[320] = "";
    if (r->port) {
        const char *host = r->b->cfg->model_host;
        if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
            host = "localhost";
        snprintf(endpoint, sizeof(endpoint), "http://%s:%d/v1", host, r->port);
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:f,s:f}", "reservation_id", r->id, "status",
                          status_names[r->status], "provider", r->provider[0] ? r->provider : r->req_provider,
                          "compute_type", r->compute_type, "gpu_model", r->gpu_model, "count", r->count,
                          "cost_per_hr", r->cost_per_hr, "accrued_cost", r->accrued);
    json_object_set_new(o, "created_at", json_string(created));
    json_object_set_new(o, "expires_at", r->expires_at ? json_string(expires) : json_null());
    if (r->active_at)
        json_object_set_new(o, "active_at", json_string(active));
    json_object_set_new(o, "port", r->port ? json_integer(r->port) : json_null());
    json_object_set_new(o, "endpoint", r->port ? json_string(endpoint) : json_null());
    if (r->endpoint_name[0])
        json_object_set_new(o, "model", json_string(r->endpoint_name));
    if (r->tpu_type[0])
        json_object_set_new(o, "tpu_type", json_string(r->tpu_type));
    if (r->runtime[0])
        json_object_set_new(o, "runtime", json_string(r->runtime));
    if (r->region[0])
        json_object_set_new(o, "region", json_string(r->region));
    json_object_set_new(o, "duration_seconds", json_integer(r->duration_s));
    json_object_set(o, "labels", r->labels);
    json_t *insts = json_array();
    if (r->instance_id[0])
        json_array_append_new(insts, json_pack("{s:s,s:s,s:s,s:s}", "provider", r->provider, "id", r->instance_id,
                                               "status", r->instance_state, "endpoint", r->instance_endpoint));
    json_object_set_new(o, "instances", insts);
    json_object_set(o, "attempts", r->attempts);
    json_object_set_new(o, "selection",
                        json_pack("{s:s,s:s}", "provider", r->provider[0] ? r->provider : "", "reason", r->selection));
    if (r->message[0])
        json_object_set_new(o, "message", json_string(r->message));
    if (r->status == ST_QUEUED)
        json_object_set_new(o, "queue_position", json_integer(queue_position(r)));
    if (r->max_cost > 0)
        json_object_set_new(o, "max_cost_per_hr", json_real(r->max_cost));
    if (internal) {
        json_t *in = json_object();
        json_object_set_new(in, "req_provider", json_string(r->req_provider));
        json_object_set_new(in, "tpu_type", json_string(r->tpu_type));
        json_t *provs = json_array();
        for (int i = 0; i < r->n_providers; i++)
            json_array_append_new(provs, json_string(r->providers[i]));
        json_object_set_new(in, "providers", provs);
        json_object_set_new(in, "auto", json_boolean(r->auto_select));
        json_object_set_new(in, "model_name", json_string(r->model_name));
        json_object_set_new(in, "offer_id", json_string(r->offer.id));
        json_object_set_new(in, "offer_region", json_string(r->offer.region));
        json_object_set_new(in, "started_at", json_integer(r->started_at));
        json_object_set_new(in, "last_accrual", json_integer(r->last_accrual));
        json_object_set_new(in, "created_at", json_integer(r->created_at));
        json_object_set_new(in, "active_at", json_integer(r->active_at));
        json_object_set_new(in, "expires_at", json_integer(r->expires_at));
        json_object_set_new(o, "_internal", in);
    }
    return o;
}

/* Write the reservation to the store.  A failure is logged; the in-memory
 * state goes on (the next write retries the whole row). */
static void persist(res *r)
{
    gpd_broker *b = r->b;
    json_t *doc = res_json(r, true);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    bool holds = r->status == ST_PROVISIONING || r->status == ST_ACTIVE;
    gpd_store_res_row row = {
        .id = r->id,
        .status = (char *)status_names[r->status],
        .provider = r->provider,
        .compute_type = r->compute_type,
        .gpus = holds ? r->gpus : 0,
        .tpus = holds ? r->tpus : 0,
        .cost_per_hr = r->cost_per_hr,
        .created_at = r->created_at,
        .expires_at = r->expires_at,
        .updated_at = now_s(),
        .owner = b->owner,
        .doc = text ? text : "{}",
    };
    char err[256];
    if (gpd_store_res_update(b->store, &row, err, sizeof(err)) != 0)
        gpd_log_error("store: reservation not saved", "\"reservation\":\"%s\",\"error\":\"%s\"", r->id, err);
    if (r->instance_id[0]) {
        gpd_store_instance_row ir = {
            .provider = r->provider,
            .instance_id = r->instance_id,
            .reservation_id = r->id,
            .status = r->instance_state,
            .endpoint = r->instance_endpoint,
            .created_at = r->started_at,
            .updated_at = now_s(),
            .doc = "{}",
        };
        if (gpd_store_instance_put(b->store, &ir, err, sizeof(err)) != 0)
            gpd_log_error("store: instance not saved", "\"reservation\":\"%s\",\"error\":\"%s\"", r->id, err);
    }
    free(text);
}

static void update_gauges(gpd_broker *b)
{
    int64_t gpus = 0, tpus = 0, queued = 0;
    uint64_t cost[8] = { 0 };
    for (res *r = b->list; r; r = r->next) {
        if (r->status == ST_QUEUED)
            queued++;
        if (r->status == ST_ACTIVE || r->status == ST_PROVISIONING) {
            gpus += r->gpus;
            tpus += r->tpus;
        }
        if (r->status == ST_ACTIVE) {
            int pi = provider_index(r->provider);
            if (pi >= 0)
                cost[pi] += (uint64_t)llround(r->cost_per_hr * 1e6);
        }
    }
    atomic_store(&gpd_broker_metrics.active_gpus, gpus);
    atomic_store(&gpd_broker_metrics.active_tpus, tpus);
    atomic_store(&gpd_broker_metrics.queue_depth, queued);
    for (int i = 0; i < 8; i++)
        atomic_store(&gpd_broker_metrics.cost_per_hour_micro[i], cost[i]);
}

/* ---- state transitions ---- */

static void place(res *r);
static void try_next_offer(res *r);
static void destroy_instance(res *r);

static void stop_timer(res *r)
{
    if (r->timer_open)
        uv_timer_stop(&r->timer);
}

static void close_port(res *r)
{
    if (r->port && r->endpoint_name[0]) {
        gpd_registry_remove(r->b->registry, r->endpoint_name);
        gpd_log_info("reservation port closed", "\"reservation\":\"%s\",\"port\":%d", r->id, r->port);
    }
    r->port = 0;
}

/* End a reservation: released, expired or failed.  Destroys what it holds. */
static void finish(res *r, enum res_status st, const char *why)
{
    if (is_terminal(r->status))
        return;
    gpd_log_info("reservation ended", "\"reservation\":\"%s\",\"status\":\"%s\",\"reason\":\"%s\"", r->id,
                 status_names[st], why ? why : "");
    stop_timer(r);
    if (r->health_req) {
        gpd_curl_abort(r->health_req);
        r->health_req = NULL;
        res_unref(r);
    }
    close_port(r);
    r->status = st;
    r->ended_at = now_s();
    if (why)
        snprintf(r->message, sizeof(r->message), "%s", why);
    if (r->phase == PH_CREATE)
        r->cancelled = true; /* the create's answer destroys what it made */
    r->phase = PH_IDLE;
    if (r->instance_id[0])
        destroy_instance(r);
    persist(r);
    update_gauges(r->b);
    if (!r->destroy_pending && !r->cancelled)
        list_remove(r->b, r);
}

static void to_queue(res *r, const char *why)
{
    r->status = ST_QUEUED;
    r->phase = PH_IDLE;
    r->provider[0] = '\0';
    snprintf(r->message, sizeof(r->message), "%s", why);
    stop_timer(r);
    persist(r);
    update_gauges(r->b);
    gpd_log_info("reservation queued", "\"reservation\":\"%s\",\"reason\":\"%s\"", r->id, why);
}

/* ---- destroy ---- */

static void destroy_done(void *ctx, enum gpd_prov_err err, const char *msg);

static void destroy_retry(uv_timer_t *t)
{
    res *r = t->data;
    destroy_instance(r);
}

static void destroy_instance(res *r)
{
    gpd_broker *b = r->b;
    int pi = provider_index(r->provider);
    gpd_provider *p = pi >= 0 ? b->providers[pi] : NULL;
    if (!r->instance_id[0] || !p) {
        r->destroy_pending = false;
        return;
    }
    r->destroy_pending = true;
    snprintf(r->instance_state, sizeof(r->instance_state), "destroying");
    res_ref(r);
    p->ops->destroy(p, r->instance_id, destroy_done, r);
}

static void destroy_done(void *ctx, enum gpd_prov_err err, const char *msg)
{
    res *r = ctx;
    gpd_broker *b = r->b;
    if (err != GPD_PROV_OK && err != GPD_PROV_NOT_FOUND) {
        gpd_log_warn("destroy failed; retrying", "\"reservation\":\"%s\",\"instance\":\"%s\",\"error\":\"%s\"", r->id,
                     r->instance_id, msg ? msg : gpd_prov_err_name(err));
        if (!b->stopping && r->timer_open) {
            uv_timer_start(&r->timer, destroy_retry, DESTROY_RETRY_MS, 0);
        }
        res_unref(r);
        return;
    }
    gpd_log_info("instance destroyed", "\"reservation\":\"%s\",\"provider\":\"%s\",\"instance\":\"%s\"", r->id,
                 r->provider, r->instance_id);
    snprintf(r->instance_state, sizeof(r->instance_state), "destroyed");
    persist(r);
    char err2[256];
    gpd_store_instance_delete(b->store, r->provider, r->instance_id, err2, sizeof(err2));
    r->destroy_pending = false;
    if (is_terminal(r->status)) {
        if (r->listed)
            list_remove(b, r);
    } else {
        r->instance_id[0] = '\0';
        r->instance_endpoint[0] = '\0';
    }
    res_unref(r);
}

/* Destroy an instance that belongs to no reservation we keep (a leaked
 * create, an orphan found by reconciliation). */
typedef struct orphan {
    gpd_broker *b;
    struct orphan *prev, *next;
    char provider[16];
    char id[128];
} orphan;

static void orphan_done(void *ctx, enum gpd_prov_err err, const char *msg)
{
    orphan *o = ctx;
    if (o->prev)
        o->prev->next = o->next;
    else
        o->b->orphans = o->next;
    if (o->next)
        o->next->prev = o->prev;
    if (err == GPD_PROV_OK || err == GPD_PROV_NOT_FOUND) {
        char serr[128];
        gpd_store_instance_delete(o->b->store, o->provider, o->id, serr, sizeof(serr));
        gpd_log_info("instance destroyed", "\"provider\":\"%s\",\"instance\":\"%s\"", o->provider, o->id);
    } else
        gpd_log_warn("orphan instance not destroyed (next reconciliation retries)",
                     "\"provider\":\"%s\",\"instance\":\"%s\",\"error\":\"%s\"", o->provider, o->id,
                     msg ? msg : gpd_prov_err_name(err));
    free(o);
}

static void destroy_orphan(gpd_broker *b, gpd_provider *p, const char *id)
{
    orphan *o = calloc(1, sizeof(*o));
    if (!o)
        return;
    o->b = b;
    o->next = b->orphans;
    if (b->orphans)
        b->orphans->prev = o;
    b->orphans = o;
    snprintf(o->provider, sizeof(o->provider), "%s", p->ops->name);
    snprintf(o->id, sizeof(o->id), "%s", id);
    gpd_log_info("destroying instance", "\"provider\":\"%s\",\"instance\":\"%s\"", o->provider, id);
    p->ops->destroy(p, id, orphan_done, o);
}

/* ---- provisioning: search, create, wait ---- */

static bool cooling_down(gpd_broker *b, const gpd_offer *o)
{
    char key[128];
    snprintf(key, sizeof(key), "%s/%s", o->provider, o->id);
    uint64_t now = uv_now(b->loop);
    for (size_t i = 0; i < b->n_cooldowns; i++)
        if (b->cooldowns[i].until_ms > now && !strcmp(b->cooldowns[i].key, key))
            return true;
    return false;
}

static void cool_down(gpd_broker *b, const gpd_offer *o)
{
    uint64_t now = uv_now(b->loop);
    size_t slot = b->n_cooldowns;
    for (size_t i = 0; i < b->n_cooldowns; i++)
        if (b->cooldowns[i].until_ms <= now) {
            slot = i;
            break;
        }
    if (slot == b->n_cooldowns) {
        if (b->n_cooldowns == b->cap_cooldowns) {
            size_t cap = b->cap_cooldowns ? b->cap_cooldowns * 2 : 64;
            cooldown *c = realloc(b->cooldowns, cap * sizeof(*c));
            if (!c)
                return;
            b->cooldowns = c;
            b->cap_cooldowns = cap;
        }
        b->n_cooldowns++;
    }
    snprintf(b->cooldowns[slot].key, sizeof(b->cooldowns[slot].key), "%s/%s", o->provider, o->id);
    b->cooldowns[slot].until_ms = now + b->cfg->capacity_cooldown_ms;
}

static gpd_offer_query make_query(const res *r)
{
    return (gpd_offer_query){
        .compute_type = r->compute_type,
        .gpu_model = r->gpu_model[0] ? r->gpu_model : NULL,
        .tpu_type = r->tpu_type[0] ? r->tpu_type : NULL,
        .count = r->count,
        .region = r->region[0] ? r->region : NULL,
        .max_cost_per_hr = r->max_cost,
        .duration_hours = (int)((r->duration_s + 3599) / 3600),
        .limit = (int)r->b->cfg->max_offers_per_provider,
    };
}

static void provider_loads(gpd_broker *b, gpd_provider_load *loads, size_t *n)
{
    *n = 0;
    for (int i = 0; gpd_broker_provider_names[i]; i++) {
        int64_t held = 0, tpus = 0;
        char err[128];
        const char *name = gpd_broker_provider_names[i];
        if (gpd_store_res_held(b->store, name, &held, &tpus, err, sizeof(err)) != 0)
            held = 0;
        int64_t limit = !strcmp(name, "vastai") ? b->cfg->max_vastai_gpus
                        : !strcmp(name, "ionet") ? b->cfg->max_ionet_gpus
                        : !strcmp(name, "gcp_tpu") ? b->cfg->max_tpus
                                                   : b->cfg->max_gpus;
        if (!strcmp(name, "gcp_tpu"))
            held = tpus;
        loads[*n].provider = name;
        loads[*n].load = limit > 0 ? (double)held / (double)limit : 1.0;
        (*n)++;
    }
}

static void search_next(res *r);

static void on_offers(void *ctx, enum gpd_prov_err err, const char *msg, gpd_offer *offers, size_t n)
{
    res *r = ctx;
    gpd_broker *b = r->b;
    const char *prov = r->providers[r->prov_i];
    if (r->status != ST_PROVISIONING || r->phase != PH_SEARCH || b->stopping) {
        res_unref(r);
        return;
    }
    if (err != GPD_PROV_OK) {
        add_attempt(r, prov, NULL, "search_failed", msg ? msg : gpd_prov_err_name(err));
    } else {
        /* Keep what fits the request. */
        gpd_offer_query q = make_query(r);
        size_t room = MAX_OFFERS - r->n_cands;
        gpd_offer *grown = realloc(r->cands, (r->n_cands + (n < room ? n : room) + 1) * sizeof(*grown));
        if (grown) {
            r->cands = grown;
            for (size_t i = 0; i < n && r->n_cands < MAX_OFFERS; i++) {
                snprintf(offers[i].provider, sizeof(offers[i].provider), "%s", prov);
                if (gpd_offer_eligible(&offers[i], &q))
                    r->cands[r->n_cands++] = offers[i];
            }
        }
        if (n == 0)
            add_attempt(r, prov, NULL, "no_offers", "the provider offers nothing that matches");
    }
    r->prov_i++;
    bool more = r->prov_i < r->n_providers;
    if (r->auto_select && more) {
        search_next(r); /* auto: gather every provider's offers, then choose */
        res_unref(r);
        return;
    }
    /* Rank what we have. */
    gpd_offer_query q = make_query(r);
    gpd_provider_load loads[MAX_PROVIDERS];
    size_t nloads = 0;
    provider_loads(b, loads, &nloads);
    size_t *order = malloc((r->n_cands + 1) * sizeof(*order));
    gpd_selection sel;
    if (order && r->n_cands) {
        gpd_select(r->cands, r->n_cands, &q, loads, nloads, order, &sel);
        gpd_offer *ranked = malloc(sel.n * sizeof(*ranked) + 1);
        if (ranked) {
            for (size_t i = 0; i < sel.n; i++)
                ranked[i] = r->cands[order[i]];
            free(r->cands);
            r->cands = ranked;
            r->n_cands = sel.n;
        }
        snprintf(r->selection, sizeof(r->selection), "%s", sel.why);
    }
    free(order);
    r->cand_i = 0;
    if (r->n_cands == 0 && !more) {
        char why[600];
        snprintf(why, sizeof(why), "no capacity: no offer for %s %s x%d from %s%s", r->compute_type,
                 r->tpu_type[0] ? r->tpu_type : r->gpu_model, r->count, r->auto_select ? "any provider" : "the providers tried",
                 r->max_cost > 0 ? " within max_cost_per_hr" : "");
        to_queue(r, why);
        res_unref(r);
        return;
    }
    if (r->n_cands == 0) {
        search_next(r);
        res_unref(r);
        return;
    }
    try_next_offer(r);
    res_unref(r);
}

static void search_next(res *r)
{
    gpd_broker *b = r->b;
    while (r->prov_i < r->n_providers) {
        int pi = provider_index(r->providers[r->prov_i]);
        gpd_provider *p = pi >= 0 ? b->providers[pi] : NULL;
        if (p) {
            gpd_offer_query q = make_query(r);
            r->phase = PH_SEARCH;
            res_ref(r);
            p->ops->search(p, &q, on_offers, r);
            return;
        }
        add_attempt(r, r->providers[r->prov_i], NULL, "skipped", "provider not configured (no credentials)");
        r->prov_i++;
    }
    to_queue(r, "no capacity: every provider tried had no matching offer");
}

/* Start (or restart) placement from the first provider. */
static void place(res *r)
{
    r->status = ST_PROVISIONING;
    r->started_at = r->started_at ? r->started_at : now_s();
    r->deadline_ms = uv_now(r->b->loop) + r->b->cfg->provisioning_timeout_ms;
    r->prov_i = 0;
    r->n_cands = r->cand_i = 0;
    memset(r->tried_per_provider, 0, sizeof(r->tried_per_provider));
    r->message[0] = '\0';
    persist(r);
    search_next(r);
}

static void poll_instance(uv_timer_t *t);

static void on_created(void *ctx, enum gpd_prov_err err, const char *msg, const char *instance_id)
{
    res *r = ctx;
    gpd_broker *b = r->b;
    int pi = provider_index(r->offer.provider);
    gpd_provider *p = pi >= 0 ? b->providers[pi] : NULL;
    if (r->cancelled || r->status != ST_PROVISIONING || b->stopping) {
        /* Released while the create was in flight: what it made goes at once. */
        if (instance_id && *instance_id && p)
            destroy_orphan(b, p, instance_id);
        r->cancelled = false;
        if (is_terminal(r->status) && r->listed && !r->destroy_pending)
            list_remove(b, r);
        res_unref(r);
        return;
    }
    if (err != GPD_PROV_OK) {
        if (instance_id && *instance_id && p) {
            /* The create failed but left an instance behind (Vast's stopped bid): destroy it. */
            add_attempt(r, r->offer.provider, r->offer.id, "failed_leftover_destroyed", msg);
            destroy_orphan(b, p, instance_id);
        } else {
            add_attempt(r, r->offer.provider, r->offer.id,
                        err == GPD_PROV_NO_CAPACITY ? "no_capacity" : gpd_prov_err_name(err), msg);
        }
        if (err == GPD_PROV_NO_CAPACITY)
            cool_down(b, &r->offer);
        if (err == GPD_PROV_AUTH || err == GPD_PROV_QUOTA)
            r->tried_per_provider[pi] = 1 << 20; /* skip this provider's other offers */
        try_next_offer(r);
        res_unref(r);
        return;
    }
    snprintf(r->instance_id, sizeof(r->instance_id), "%s", instance_id);
    snprintf(r->instance_state, sizeof(r->instance_state), "creating");
    r->phase = PH_WAIT_INSTANCE;
    add_attempt(r, r->offer.provider, r->offer.id, "created", instance_id);
    persist(r); /* the instance id reaches the store before anything else happens */
    gpd_log_info("instance created", "\"reservation\":\"%s\",\"provider\":\"%s\",\"instance\":\"%s\"", r->id,
                 r->provider, instance_id);
    uv_timer_start(&r->timer, poll_instance, b->cfg->poll_interval_ms, 0);
    res_unref(r);
}

static void try_next_offer(res *r)
{
    gpd_broker *b = r->b;
    while (r->cand_i < r->n_cands) {
        gpd_offer *o = &r->cands[r->cand_i++];
        int pi = provider_index(o->provider);
        if (pi < 0 || !b->providers[pi])
            continue;
        if (r->tried_per_provider[pi] >= b->cfg->max_offers_per_provider)
            continue;
        if (cooling_down(b, o)) {
            add_attempt(r, o->provider, o->id, "skipped", "had no capacity moments ago");
            continue;
        }
        r->tried_per_provider[pi]++;
        /* Capacity first: counted in the store, so limits hold across instances. */
        bool tpu = !strcmp(r->compute_type, "tpu");
        r->gpus = tpu ? 0 : (!strcmp(r->compute_type, "cpu") ? 0 : r->count);
        r->tpus = tpu ? r->count : 0;
        r->offer = *o;
        snprintf(r->provider, sizeof(r->provider), "%s", o->provider);
        r->cost_per_hr = o->price_per_hr;
        /* The claim replaces whatever an earlier attempt held (the store
         * leaves the row itself out of the sums). */
        r->status = ST_PROVISIONING;
        json_t *doc = res_json(r, true);
        char *text = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        gpd_store_res_row row = { .id = r->id, .status = "provisioning", .provider = r->provider,
                                  .compute_type = r->compute_type, .gpus = r->gpus, .tpus = r->tpus,
                                  .cost_per_hr = r->cost_per_hr, .created_at = r->created_at,
                                  .expires_at = r->expires_at, .updated_at = now_s(), .owner = b->owner,
                                  .doc = text ? text : "{}" };
        int64_t plim = !strcmp(o->provider, "vastai") ? b->cfg->max_vastai_gpus
                       : !strcmp(o->provider, "ionet") ? b->cfg->max_ionet_gpus
                                                       : -1;
        gpd_store_limits lim = { .max_gpus = b->cfg->max_gpus, .max_tpus = b->cfg->max_tpus,
                                 .max_provider_gpus = plim };
        bool granted = false;
        char why[256] = "", err[256] = "";
        int rc = gpd_store_res_claim(b->store, &row, &lim, &granted, why, sizeof(why), err, sizeof(err));
        free(text);
        if (rc != 0) {
            add_attempt(r, o->provider, o->id, "store_error", err);
            to_queue(r, "the store could not count capacity; will retry");
            return;
        }
        if (!granted) {
            add_attempt(r, o->provider, o->id, "over_limit", why);
            if (strstr(why, "MAX_VASTAI") || strstr(why, "MAX_IONET")) {
                r->tried_per_provider[pi] = 1 << 20;
                continue; /* this provider is full; others may not be */
            }
            char msg[300];
            snprintf(msg, sizeof(msg), "waiting for capacity: %s", why);
            to_queue(r, msg);
            return;
        }
        update_gauges(b);
        const gpd_runtime *rt = r->runtime[0] ? gpd_config_runtime(b->cfg, r->runtime) : NULL;
        char label[96];
        gpd_label_for(r->id, label, sizeof(label));
        gpd_instance_spec spec = {
            .reservation_id = r->id,
            .label = label,
            .offer = &r->offer,
            .runtime = rt,
            .model = r->model_name[0] ? r->model_name : NULL,
            .duration_hours = (int)((r->duration_s + 3599) / 3600),
        };
        r->phase = PH_CREATE;
        /* A Vast.ai offer is one machine: while we create on it, other
         * reservations skip it rather than collide (it is gone afterwards anyway). */
        if (!strcmp(o->provider, "vastai"))
            cool_down(b, &r->offer);
        res_ref(r);
        b->providers[pi]->ops->create(b->providers[pi], &spec, on_created, r);
        return;
    }
    /* This provider's offers are exhausted: the next provider, or the queue. */
    if (!r->auto_select && r->prov_i < r->n_providers) {
        r->n_cands = r->cand_i = 0;
        search_next(r);
        return;
    }
    to_queue(r, "no capacity: every offer tried failed (see attempts); re-checked on a timer");
}

/* ---- waiting for the instance and its runtime ---- */


/* This offer's instance will not do: destroy it (independently of the
 * reservation, which moves on to its next offer at once). */
static void fail_attempt_and_continue(res *r, const char *outcome, const char *why)
{
    add_attempt(r, r->provider, r->offer.id, outcome, why);
    stop_timer(r);
    int pi = provider_index(r->provider);
    if (r->instance_id[0] && pi >= 0 && r->b->providers[pi])
        destroy_orphan(r->b, r->b->providers[pi], r->instance_id);
    r->instance_id[0] = r->instance_endpoint[0] = r->instance_state[0] = '\0';
    r->phase = PH_IDLE;
    try_next_offer(r);
}

static void provisioning_deadline(res *r)
{
    char why[128];
    char d[32];
    gpd_format_duration(d, sizeof(d), r->b->cfg->provisioning_timeout_ms);
    snprintf(why, sizeof(why), "not active within the provisioning deadline (%s)", d);
    add_attempt(r, r->provider, r->offer.id, "deadline", why);
    finish(r, ST_FAILED, why);
}

static void on_status(void *ctx, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st);
static void check_health(res *r);

static void poll_instance(uv_timer_t *t)
{
    res *r = t->data;
    gpd_broker *b = r->b;
    if (r->status != ST_PROVISIONING)
        return;
    if (uv_now(b->loop) >= r->deadline_ms) {
        provisioning_deadline(r);
        return;
    }
    int pi = provider_index(r->provider);
    if (r->phase == PH_WAIT_HEALTH) {
        check_health(r);
        return;
    }
    res_ref(r);
    b->providers[pi]->ops->status(b->providers[pi], r->instance_id, on_status, r);
}

static void on_status(void *ctx, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st)
{
    res *r = ctx;
    gpd_broker *b = r->b;
    if (r->status != ST_PROVISIONING || r->phase != PH_WAIT_INSTANCE || b->stopping) {
        res_unref(r);
        return;
    }
    if (err != GPD_PROV_OK && err != GPD_PROV_NOT_FOUND) {
        /* Transient: poll again. */
        uv_timer_start(&r->timer, poll_instance, b->cfg->poll_interval_ms, 0);
        res_unref(r);
        return;
    }
    enum gpd_instance_state s = err == GPD_PROV_NOT_FOUND ? GPD_INSTANCE_GONE : st->state;
    snprintf(r->instance_state, sizeof(r->instance_state), "%s", gpd_instance_state_name(s));
    if (s == GPD_INSTANCE_RUNNING && st->endpoint[0]) {
        snprintf(r->instance_endpoint, sizeof(r->instance_endpoint), "%s", st->endpoint);
        r->phase = PH_WAIT_HEALTH;
        persist(r);
        check_health(r);
    } else if (s == GPD_INSTANCE_FAILED || s == GPD_INSTANCE_STOPPED || s == GPD_INSTANCE_GONE) {
        /* Fail fast on the provider's terminal states, and fail over. */
        char why[400];
        snprintf(why, sizeof(why), "instance %s: %s", gpd_instance_state_name(s),
                 st && st->message[0] ? st->message : (msg ? msg : ""));
        if (s == GPD_INSTANCE_GONE)
            r->instance_id[0] = '\0';
        fail_attempt_and_continue(r, "instance_failed", why);
    } else {
        uv_timer_start(&r->timer, poll_instance, b->cfg->poll_interval_ms, 0);
    }
    res_unref(r);
}

static void activate(res *r);

static int health_head(void *ctx, const gpd_http_response *res_)
{
    res *r = ctx;
    r->health_status = res_->status;
    return 0;
}
static void health_payload(void *ctx, const char *p, size_t n)
{
}
static int health_body(void *ctx, const char *raw, size_t n)
{
    return 0;
}
static void health_done(void *ctx)
{
    res *r = ctx;
    r->health_req = NULL;
    if (r->status == ST_PROVISIONING && r->phase == PH_WAIT_HEALTH && !r->b->stopping) {
        if (r->health_status >= 200 && r->health_status < 300) {
            activate(r);
        } else {
            /* Not healthy yet: ask the provider again first (the instance may have died). */
            r->phase = PH_WAIT_INSTANCE;
            uv_timer_start(&r->timer, poll_instance, r->b->cfg->poll_interval_ms, 0);
        }
    }
    res_unref(r);
}
static void health_error(void *ctx, enum gpd_upstream_error_kind kind, bool received, bool reused)
{
    res *r = ctx;
    r->health_req = NULL;
    if (r->status == ST_PROVISIONING && r->phase == PH_WAIT_HEALTH && !r->b->stopping) {
        r->phase = PH_WAIT_INSTANCE;
        uv_timer_start(&r->timer, poll_instance, r->b->cfg->poll_interval_ms, 0);
    }
    res_unref(r);
}
static const gpd_upstream_events health_events = { health_head, health_payload, health_body, health_done,
                                                   health_error };

static void check_health(res *r)
{
    gpd_broker *b = r->b;
    const gpd_runtime *rt = r->runtime[0] ? gpd_config_runtime(b->cfg, r->runtime) : NULL;
    char url[512];
    snprintf(url, sizeof(url), "%s%s", r->instance_endpoint, rt && rt->health_path ? rt->health_path : "/health");
    r->health_status = 0;
    gpd_curl_opts o = { .method = "GET", .url = url, .connect_timeout_ms = 3000, .total_timeout_ms = 5000 };
    res_ref(r);
    r->health_req = gpd_curl_send(b->curl, &o, &health_events, r);
    if (!r->health_req) {
        res_unref(r);
        uv_timer_start(&r->timer, poll_instance, b->cfg->poll_interval_ms, 0);
    }
}

static void expire_timer(uv_timer_t *t);

static void arm_expiry(res *r)
{
    int64_t left = r->expires_at - now_s();
    uv_timer_start(&r->timer, expire_timer, left > 0 ? (uint64_t)left * 1000 : 0, 0);
}

/* The endpoint a reservation serves: hosted (OpenRouter) or its instance's runtime. */
static void reservation_spec(const res *r, const char *name, int port, gpd_model_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->name = strdup(name);
    spec->prompt_usd_per_mtok = -1;
    spec->completion_usd_per_mtok = -1;
    spec->source = GPD_MODEL_FROM_RESERVATION;
    spec->port = port;
    if (!strcmp(r->provider, "openrouter")) {
        spec->tier = GPD_TIER_HOSTED;
        spec->upstream_model = strdup(r->model_name[0] ? r->model_name : r->id);
        return;
    }
    spec->tier = GPD_TIER_CUSTOM;
    char url[300];
    snprintf(url, sizeof(url), "%s/v1", r->instance_endpoint);
    spec->upstream_urls[spec->n_upstreams++] = strdup(url);
    if (r->model_name[0])
        spec->upstream_model = strdup(r->model_name);
}

/* Open the reservation's port and route its model: the port it had (after a
 * restart), or, when that one is gone, any free one of the tier. */
static int open_port(res *r, char *err, size_t errlen)
{
    gpd_broker *b = r->b;
    char name[256];
    snprintf(name, sizeof(name), "%s",
             r->model_name[0] && !gpd_registry_find(b->registry, r->model_name) ? r->model_name : r->id);
    gpd_model_spec spec;
    reservation_spec(r, name, r->port, &spec);
    int st = gpd_registry_add(b->registry, &spec, err, errlen);
    if (st != 201 && r->port) {
        reservation_spec(r, name, 0, &spec);
        st = gpd_registry_add(b->registry, &spec, err, errlen);
    }
    if (st != 201)
        return -1;
    const gpd_endpoint *e = gpd_registry_find(b->registry, name);
    r->port = e->spec.port;
    snprintf(r->endpoint_name, sizeof(r->endpoint_name), "%s", name);
    return 0;
}

static void activate(res *r)
{
    char err[512];
    if (open_port(r, err, sizeof(err)) != 0) {
        fail_attempt_and_continue(r, "port_failed", err);
        return;
    }
    r->status = ST_ACTIVE;
    r->phase = PH_ACTIVE;
    r->active_at = now_s();
    r->last_accrual = r->active_at;
    r->expires_at = r->active_at + r->duration_s;
    r->message[0] = '\0';
    if (strcmp(r->instance_state, "destroying") != 0 && r->instance_id[0])
        snprintf(r->instance_state, sizeof(r->instance_state), "running");
    persist(r);
    update_gauges(r->b);
    arm_expiry(r);
    gpd_log_info("reservation active", "\"reservation\":\"%s\",\"provider\":\"%s\",\"port\":%d,\"model\":\"%s\"",
                 r->id, r->provider, r->port, r->endpoint_name);
}

static void expire_timer(uv_timer_t *t)
{
    res *r = t->data;
    if (r->status == ST_ACTIVE)
        finish(r, ST_EXPIRED, "reached expires_at");
}

/* Provisioning deadline and health polls share the reservation's timer;
 * this checks the deadline on every poll. */

/* ---- validation and the API ---- */

static const char *json_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static res *res_new(gpd_broker *b)
{
    res *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->b = b;
    r->refs = 1; /* the broker's list */
    r->all_next = b->all;
    if (b->all)
        b->all->all_prev = r;
    b->all = r;
    r->in_all = true;
    r->attempts = json_array();
    r->labels = json_object();
    uv_timer_init(b->loop, &r->timer);
    r->timer.data = r;
    r->timer_open = true;
    return r;
}

static void list_append(gpd_broker *b, res *r)
{
    res **pp = &b->list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    r->next = NULL;
    r->listed = true;
}

static void new_id(char *out, size_t len)
{
    unsigned char rnd[8];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd)) {
        uint64_t x = (uint64_t)uv_hrtime() ^ ((uint64_t)getpid() << 32);
        memcpy(rnd, &x, sizeof(rnd));
    }
    if (f)
        fclose(f);
    snprintf(out, len, "res-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
             rnd[7]);
}

static bool valid_provider(const char *p)
{
    return provider_index(p) >= 0;
}

/* Parse and check the request into r; on failure the error names the field. */
static int parse_request(gpd_broker *b, res *r, json_t *j, json_t **err)
{
    const char *provider = json_str(j, "provider");
    const char *ct = json_str(j, "compute_type");
    json_t *v;
    const char *key;
    static const char *const known[] = { "provider", "compute_type", "gpu_model", "count", "duration", "runtime",
                                         "region", "labels", "tpu_type", "primary_provider", "fallback_providers",
                                         "enable_hybrid", "max_cost_per_hr", NULL };
    json_object_foreach(j, key, v)
    {
        bool ok = false;
        for (int i = 0; known[i]; i++)
            ok |= !strcmp(known[i], key);
        if (!ok) {
            *err = error_json("invalid_request_error", "unknown_field", "unknown field '%s'", key);
            return -1;
        }
    }
    if (!provider)
        provider = "auto";
    if (strcmp(provider, "auto") != 0 && !valid_provider(provider)) {
        *err = error_json("invalid_request_error", "invalid_provider",
                          "field 'provider' must be one of vastai, ionet, gcp_tpu, openrouter, local, auto; got '%s'",
                          provider);
        return -1;
    }
    snprintf(r->req_provider, sizeof(r->req_provider), "%s", provider);
    if (!ct)
        ct = !strcmp(provider, "gcp_tpu") ? "tpu" : "gpu";
    if (strcmp(ct, "gpu") && strcmp(ct, "tpu") && strcmp(ct, "cpu")) {
        *err = error_json("invalid_request_error", "invalid_compute_type",
                          "field 'compute_type' must be gpu, tpu or cpu; got '%s'", ct);
        return -1;
    }
    snprintf(r->compute_type, sizeof(r->compute_type), "%s", ct);
    const char *gm = json_str(j, "gpu_model");
    if (json_object_get(j, "gpu_model") && !gm) {
        *err = error_json("invalid_request_error", "invalid_gpu_model", "field 'gpu_model' must be a string");
        return -1;
    }
    if (gm) {
        const char *norm = gpd_gpu_model_normalise(gm);
        if (!norm) {
            char known_list[300] = "";
            for (int i = 0; gpd_gpu_models[i]; i++) {
                strncat(known_list, i ? ", " : "", sizeof(known_list) - strlen(known_list) - 1);
                strncat(known_list, gpd_gpu_models[i], sizeof(known_list) - strlen(known_list) - 1);
            }
            *err = error_json("invalid_request_error", "invalid_gpu_model",
                              "field 'gpu_model': unknown GPU '%s'; known: %s", gm, known_list);
            return -1;
        }
        snprintf(r->gpu_model, sizeof(r->gpu_model), "%s", norm);
    } else if (!strcmp(ct, "gpu") && strcmp(provider, "openrouter") != 0) {
        *err = error_json("invalid_request_error", "missing_gpu_model", "field 'gpu_model' is required for compute_type gpu");
        return -1;
    }
    const char *tt = json_str(j, "tpu_type");
    if (tt)
        snprintf(r->tpu_type, sizeof(r->tpu_type), "%s", tt);
    if (!strcmp(ct, "tpu") && !tt) {
        *err = error_json("invalid_request_error", "missing_tpu_type", "field 'tpu_type' is required for compute_type tpu (e.g. \"v5litepod-8\")");
        return -1;
    }
    json_t *cnt = json_object_get(j, "count");
    if (cnt && (!json_is_integer(cnt) || json_integer_value(cnt) < 1 || json_integer_value(cnt) > 100)) {
        *err = error_json("invalid_request_error", "invalid_count", "field 'count' must be an integer 1-100");
        return -1;
    }
    r->count = cnt ? (int)json_integer_value(cnt) : 1;
    json_t *dur = json_object_get(j, "duration");
    uint64_t ms = 3600 * 1000;
    if (dur) {
        const char *why = "expected a duration such as \"2h\"";
        if (json_is_string(dur)) {
            const char *s = json_string_value(dur);
            if (gpd_parse_duration_ms(s, strlen(s), &ms, &why) != 0 || ms < 1000)
                dur = NULL;
        } else if (json_is_integer(dur) && json_integer_value(dur) > 0) {
            ms = (uint64_t)json_integer_value(dur) * 1000;
        } else {
            dur = NULL;
        }
        if (!dur) {
            *err = error_json("invalid_request_error", "invalid_duration",
                              "field 'duration' must be a duration such as \"30m\", \"2h\", \"1d\" (at least 1s)");
            return -1;
        }
    }
    r->duration_s = (int64_t)((ms + 999) / 1000);
    const char *rt = json_str(j, "runtime");
    if (rt) {
        if (!gpd_config_runtime(b->cfg, rt)) {
            *err = error_json("invalid_request_error", "invalid_runtime",
                              "field 'runtime': '%s' is not a configured [runtimes.NAME]", rt);
            return -1;
        }
        snprintf(r->runtime, sizeof(r->runtime), "%s", rt);
    } else if (b->cfg->n_runtimes > 0 && strcmp(provider, "openrouter") != 0) {
        snprintf(r->runtime, sizeof(r->runtime), "%s", b->cfg->runtimes[0].name);
    }
    const char *region = json_str(j, "region");
    if (region)
        snprintf(r->region, sizeof(r->region), "%s", region);
    json_t *labels = json_object_get(j, "labels");
    if (labels) {
        if (!json_is_object(labels)) {
            *err = error_json("invalid_request_error", "invalid_labels", "field 'labels' must be an object");
            return -1;
        }
        json_decref(r->labels);
        r->labels = json_deep_copy(labels);
        const char *mn = json_str(labels, "model_name");
        if (mn)
            snprintf(r->model_name, sizeof(r->model_name), "%s", mn);
    }
    json_t *mc = json_object_get(j, "max_cost_per_hr");
    if (mc && (!json_is_number(mc) || json_number_value(mc) <= 0)) {
        *err = error_json("invalid_request_error", "invalid_max_cost_per_hr", "field 'max_cost_per_hr' must be a positive number");
        return -1;
    }
    r->max_cost = mc ? json_number_value(mc) : 0;
    json_t *hy = json_object_get(j, "enable_hybrid");
    if (hy && !json_is_boolean(hy)) {
        *err = error_json("invalid_request_error", "invalid_enable_hybrid", "field 'enable_hybrid' must be true or false");
        return -1;
    }
    r->enable_hybrid = hy && json_is_true(hy);

    /* The providers to try, in order. */
    r->n_providers = 0;
    if (!strcmp(provider, "auto")) {
        r->auto_select = true;
        for (int i = 0; gpd_broker_provider_names[i]; i++) {
            const char *n = gpd_broker_provider_names[i];
            if (!strcmp(n, "openrouter"))
                continue;
            if (!strcmp(ct, "tpu") != !strcmp(n, "gcp_tpu"))
                continue;
            snprintf(r->providers[r->n_providers++], 16, "%s", n);
        }
    } else {
        const char *primary = json_str(j, "primary_provider");
        if (primary && !valid_provider(primary)) {
            *err = error_json("invalid_request_error", "invalid_primary_provider",
                              "field 'primary_provider': unknown provider '%s'", primary);
            return -1;
        }
        snprintf(r->providers[r->n_providers++], 16, "%s", primary ? primary : provider);
        json_t *fb = json_object_get(j, "fallback_providers");
        if (fb && !json_is_array(fb)) {
            *err = error_json("invalid_request_error", "invalid_fallback_providers",
                              "field 'fallback_providers' must be an array of provider names");
            return -1;
        }
        size_t i;
        json_t *f;
        json_array_foreach(fb, i, f)
        {
            if (!json_is_string(f) || !valid_provider(json_string_value(f)) || !strcmp(json_string_value(f), "openrouter")) {
                *err = error_json("invalid_request_error", "invalid_fallback_providers",
                                  "field 'fallback_providers'[%zu]: not a compute provider", i);
                return -1;
            }
            if (r->n_providers < MAX_PROVIDERS)
                snprintf(r->providers[r->n_providers++], 16, "%s", json_string_value(f));
        }
        if (r->enable_hybrid && !fb) {
            for (int k = 0; gpd_broker_provider_names[k] && r->n_providers < MAX_PROVIDERS; k++) {
                const char *n = gpd_broker_provider_names[k];
                bool have = false;
                for (int m = 0; m < r->n_providers; m++)
                    have |= !strcmp(r->providers[m], n);
                if (!have && strcmp(n, "openrouter") && (!strcmp(ct, "tpu") == !strcmp(n, "gcp_tpu")))
                    snprintf(r->providers[r->n_providers++], 16, "%s", n);
            }
        }
        if (!strcmp(provider, "gcp_tpu") && strcmp(ct, "tpu") != 0) {
            *err = error_json("invalid_request_error", "invalid_compute_type",
                              "field 'compute_type': provider gcp_tpu serves only compute_type tpu");
            return -1;
        }
        if (!strcmp(ct, "tpu") && strcmp(r->providers[0], "gcp_tpu") != 0) {
            *err = error_json("invalid_request_error", "invalid_provider",
                              "field 'provider': TPUs come from gcp_tpu (or auto), not %s", r->providers[0]);
            return -1;
        }
    }
    if (!strcmp(provider, "openrouter") && !r->model_name[0]) {
        *err = error_json("invalid_request_error", "missing_model_name",
                          "field 'labels.model_name' names the hosted model to serve (e.g. \"anthropic/claude-3-opus\")");
        return -1;
    }
    return 0;
}

int gpd_broker_reserve(gpd_broker *b, json_t *request, json_t **out)
{
    if (!json_is_object(request)) {
        *out = error_json("invalid_request_error", "invalid_json", "request body must be a JSON object");
        return 400;
    }
    res *r = res_new(b);
    if (!r) {
        *out = error_json("server_error", "internal_error", "out of memory");
        return 500;
    }
    json_t *err = NULL;
    if (parse_request(b, r, request, &err) != 0) {
        *out = err;
        res_unref(r);
        return 400;
    }
    new_id(r->id, sizeof(r->id));
    r->created_at = now_s();
    r->status = ST_QUEUED;
    json_t *doc = res_json(r, true);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    gpd_store_res_row row = { .id = r->id, .status = "queued", .provider = "", .compute_type = r->compute_type,
                              .created_at = r->created_at, .updated_at = r->created_at, .owner = b->owner,
                              .doc = text ? text : "{}" };
    char serr[256];
    int rc = gpd_store_res_insert(b->store, &row, serr, sizeof(serr));
    free(text);
    if (rc != 0) {
        *out = error_json("server_error", "store_error", "the reservation could not be stored: %s", serr);
        res_unref(r);
        return 500;
    }
    list_append(b, r);
    gpd_log_info("reservation requested", "\"reservation\":\"%s\",\"provider\":\"%s\",\"compute_type\":\"%s\","
                 "\"gpu_model\":\"%s\",\"count\":%d",
                 r->id, r->req_provider, r->compute_type, r->gpu_model, r->count);
    if (!strcmp(r->req_provider, "openrouter")) {
        /* A hosted model needs no machine: its port is the reservation. */
        snprintf(r->provider, sizeof(r->provider), "openrouter");
        snprintf(r->selection, sizeof(r->selection), "openrouter: hosted model, no compute to reserve");
        r->status = ST_PROVISIONING;
        r->started_at = now_s();
        activate(r);
        if (r->status != ST_ACTIVE) {
            finish(r, ST_FAILED, "could not open a port for the hosted model");
        }
    } else {
        place(r);
    }
    *out = res_json(r, false);
    return 201;
}

int gpd_broker_get(gpd_broker *b, const char *id, json_t **out)
{
    res *r = find(b, id);
    if (r) {
        *out = res_json(r, false);
        return 200;
    }
    gpd_store_res_row row;
    char err[256];
    int rc = gpd_store_res_get(b->store, id, &row, err, sizeof(err));
    if (rc == GPD_STORE_NOT_FOUND) {
        *out = error_json("invalid_request_error", "reservation_not_found", "no reservation '%s'", id);
        return 404;
    }
    if (rc != 0) {
        *out = error_json("server_error", "store_error", "%s", err);
        return 500;
    }
    json_t *doc = json_loads(row.doc, 0, NULL);
    gpd_store_res_row_free(&row);
    if (!doc) {
        *out = error_json("server_error", "store_error", "reservation '%s' has an unreadable record", id);
        return 500;
    }
    json_object_del(doc, "_internal");
    *out = doc;
    return 200;
}

int gpd_broker_list(gpd_broker *b, const char *status_filter, json_t **out)
{
    gpd_store_res_row *rows = NULL;
    size_t n = 0;
    char err[256];
    const char *statuses[2] = { status_filter, NULL };
    if (gpd_store_res_list(b->store, status_filter && *status_filter ? statuses : NULL, &rows, &n, err, sizeof(err)) != 0) {
        *out = error_json("server_error", "store_error", "%s", err);
        return 500;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        res *r = find(b, rows[i].id);
        json_t *doc = r ? res_json(r, false) : json_loads(rows[i].doc, 0, NULL);
        if (!doc)
            continue;
        json_object_del(doc, "_internal");
        json_array_append_new(arr, doc);
    }
    gpd_store_res_rows_free(rows, n);
    *out = json_pack("{s:o}", "reservations", arr);
    return 200;
}

int gpd_broker_release(gpd_broker *b, const char *id, json_t **out)
{
    res *r = find(b, id);
    if (r && is_terminal(r->status)) {
        /* Ended, still listed while its instance is being destroyed. */
        *out = error_json("invalid_request_error", "reservation_ended", "the reservation has already ended (%s)",
                          status_names[r->status]);
        return 409;
    }
    if (!r) {
        int st = gpd_broker_get(b, id, out);
        if (st == 200) {
            json_t *o = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", "the reservation has already ended", "type",
                                  "invalid_request_error", "code", "reservation_ended");
            json_decref(*out);
            *out = o;
            return 409;
        }
        return st;
    }
    res_ref(r);
    finish(r, ST_RELEASED, "released by request");
    *out = res_json(r, false);
    res_unref(r);
    return 200;
}

static void extend_done(void *ctx, enum gpd_prov_err err, const char *msg)
{
    if (err != GPD_PROV_OK)
        gpd_log_warn("provider extend failed", "\"error\":\"%s\"", msg ? msg : gpd_prov_err_name(err));
}

int gpd_broker_extend(gpd_broker *b, const char *id, json_t *request, json_t **out)
{
    res *r = find(b, id);
    if (r && is_terminal(r->status)) {
        *out = error_json("invalid_request_error", "reservation_ended", "reservation '%s' has ended (%s)", id,
                          status_names[r->status]);
        return 409;
    }
    if (!r) {
        int st = gpd_broker_get(b, id, out);
        if (st != 200)
            return st;
        json_decref(*out);
        *out = error_json("invalid_request_error", "reservation_ended", "reservation '%s' has ended", id);
        return 409;
    }
    json_t *dur = json_is_object(request) ? json_object_get(request, "duration") : NULL;
    uint64_t ms = 0;
    const char *why = NULL;
    if (!json_is_string(dur) ||
        gpd_parse_duration_ms(json_string_value(dur), strlen(json_string_value(dur)), &ms, &why) != 0 || ms < 1000) {
        *out = error_json("invalid_request_error", "invalid_duration",
                          "field 'duration' must be a duration such as \"1h\" (how much to add)");
        return 400;
    }
    int64_t add = (int64_t)((ms + 999) / 1000);
    r->duration_s += add;
    if (r->expires_at) {
        r->expires_at += add;
        if (r->status == ST_ACTIVE)
            arm_expiry(r);
    }
    int pi = provider_index(r->provider);
    gpd_provider *p = pi >= 0 ? b->providers[pi] : NULL;
    if (p && p->ops->extend && r->instance_id[0]) {
        /* Prepaid providers (IO.net) are told too; failures show in the log. */
        p->ops->extend(p, r->instance_id, (int)((add + 3599) / 3600), extend_done, NULL);
    }
    persist(r);
    *out = res_json(r, false);
    return 200;
}

/* ---- timers: queue, accrual, reconciliation ---- */

static void queue_tick(uv_timer_t *t)
{
    gpd_broker *b = t->data;
    /* FIFO: the oldest queued reservation gets the first look at new capacity. */
    for (res *r = b->list; r; r = r->next)
        if (r->status == ST_QUEUED && r->phase == PH_IDLE)
            place(r);
}

static void accrual_tick(uv_timer_t *t)
{
    gpd_broker *b = t->data;
    int64_t now = now_s();
    uint64_t total = 0;
    for (res *r = b->list; r; r = r->next) {
        if (r->status == ST_ACTIVE && r->last_accrual && now > r->last_accrual) {
            r->accrued += r->cost_per_hr * (double)(now - r->last_accrual) / 3600.0;
            r->last_accrual = now;
        }
        total += (uint64_t)llround(r->accrued * 1e6);
    }
    atomic_store(&gpd_broker_metrics.accrued_cost_micro, total);
}

typedef struct reconcile_ctx {
    gpd_broker *b;
    int provider;
} reconcile_ctx;

static void reconcile_end(reconcile_ctx *rc)
{
    rc->b->reconciling[rc->provider] = NULL;
    free(rc);
}

/* Whether a reservation of ours (in this process) carries this label. */
static bool is_ours_in_memory(gpd_broker *b, gpd_provider *p, const char *label)
{
    for (res *r = b->list; r; r = r->next) {
        char l[96];
        gpd_label_for(r->id, l, sizeof(l));
        if (!strcmp(l, label))
            return true;
    }
    return false;
}

/* With several instances sharing one store, an instance whose reservation
 * another gpuproxyd drives is not an orphan: the store, not this process's
 * memory, says which reservations are live. */
static bool owned_elsewhere(gpd_broker *b, const char *label, const char *instance_id)
{
    if (strncmp(label, "gpd-", 4) != 0)
        return false;
    gpd_store_res_row row;
    char err[256];
    if (gpd_store_res_get(b->store, label + 4, &row, err, sizeof(err)) != 0)
        return false;
    bool live = (!strcmp(row.status, "queued") || !strcmp(row.status, "provisioning") || !strcmp(row.status, "active")) &&
                strcmp(row.owner, b->owner) != 0;
    gpd_store_res_row_free(&row);
    (void)instance_id;
    return live;
}

static void on_list_ours(void *ctx, enum gpd_prov_err err, const char *msg, gpd_instance_status *list, size_t n)
{
    reconcile_ctx *rc = ctx;
    gpd_broker *b = rc->b;
    gpd_provider *p = b->providers[rc->provider];
    if (err != GPD_PROV_OK || b->stopping || !p) {
        if (err != GPD_PROV_OK)
            gpd_log_warn("reconciliation: listing failed", "\"provider\":\"%s\",\"error\":\"%s\"",
                         gpd_broker_provider_names[rc->provider], msg ? msg : gpd_prov_err_name(err));
        reconcile_end(rc);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        gpd_instance_status *st = &list[i];
        if (!gpd_label_is_ours(st->label))
            continue;
        /* The instance is kept only when a live reservation records it, or
         * is creating right now (its id is not known yet). */
        bool keep = false;
        for (res *r = b->list; r && !keep; r = r->next) {
            char label[96];
            gpd_label_for(r->id, label, sizeof(label));
            if (strcmp(r->provider, p->ops->name) != 0 || strcmp(label, st->label) != 0)
                continue;
            if (is_terminal(r->status)) {
                /* Its own destroy is under way: do not send a second one. */
                keep = r->destroy_pending && !strcmp(r->instance_id, st->id);
                break;
            }
            keep = !strcmp(r->instance_id, st->id) || r->phase == PH_CREATE;
        }
        if (!keep && !is_ours_in_memory(b, p, st->label) && owned_elsewhere(b, st->label, st->id))
            keep = true; /* another gpuproxyd sharing the store drives it */
        if (!keep && st->state != GPD_INSTANCE_GONE)
            destroy_orphan(b, p, st->id);
    }
    /* Active reservations whose instance vanished or stopped: failed. */
    for (res *r = b->list, *next; r; r = next) {
        next = r->next;
        if (r->status != ST_ACTIVE || strcmp(r->provider, p->ops->name) != 0 || !r->instance_id[0])
            continue;
        bool found = false, dead = false;
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(list[i].id, r->instance_id)) {
                found = true;
                dead = list[i].state == GPD_INSTANCE_FAILED || list[i].state == GPD_INSTANCE_STOPPED ||
                       list[i].state == GPD_INSTANCE_GONE;
            }
        }
        if (!found || dead) {
            char why[200];
            snprintf(why, sizeof(why), "instance %s %s at %s", r->instance_id,
                     found ? "stopped or was preempted" : "vanished", r->provider);
            if (!found)
                r->instance_id[0] = '\0';
            finish(r, ST_FAILED, why);
        }
    }
    reconcile_end(rc);
}

void gpd_broker_reconcile(gpd_broker *b)
{
    for (int i = 0; gpd_broker_provider_names[i]; i++) {
        gpd_provider *p = b->providers[i];
        if (!p || !p->ops->list_ours || b->reconciling[i])
            continue; /* one listing per provider at a time */
        reconcile_ctx *rc = malloc(sizeof(*rc));
        if (!rc)
            continue;
        rc->b = b;
        rc->provider = i;
        b->reconciling[i] = rc;
        p->ops->list_ours(p, on_list_ours, rc);
    }
}

static void reconcile_tick(uv_timer_t *t)
{
    gpd_broker_reconcile(t->data);
}

/* ---- start: back to where the store says we were ---- */

static void load_one(gpd_broker *b, const gpd_store_res_row *row)
{
    json_t *doc = json_loads(row->doc, 0, NULL);
    json_t *in = doc ? json_object_get(doc, "_internal") : NULL;
    if (!in) {
        gpd_log_error("store: unreadable reservation skipped", "\"reservation\":\"%s\"", row->id);
        json_decref(doc);
        return;
    }
    res *r = res_new(b);
    if (!r) {
        json_decref(doc);
        return;
    }
    snprintf(r->id, sizeof(r->id), "%s", row->id);
    for (int s = 0; s <= ST_FAILED; s++)
        if (!strcmp(row->status, status_names[s]))
            r->status = (enum res_status)s;
    snprintf(r->provider, sizeof(r->provider), "%s", row->provider);
    snprintf(r->compute_type, sizeof(r->compute_type), "%s", row->compute_type);
#define STR(field, key) snprintf(r->field, sizeof(r->field), "%s", json_str(doc, key) ? json_str(doc, key) : "")
#define ISTR(field, key) snprintf(r->field, sizeof(r->field), "%s", json_str(in, key) ? json_str(in, key) : "")
    STR(gpu_model, "gpu_model");
    STR(runtime, "runtime");
    STR(region, "region");
    ISTR(req_provider, "req_provider");
    ISTR(tpu_type, "tpu_type");
    ISTR(model_name, "model_name");
    ISTR(offer.id, "offer_id");
    STR(selection, "selection");
    STR(message, "message");
    STR(endpoint_name, "model");
#undef STR
#undef ISTR
    json_t *sel = json_object_get(doc, "selection");
    if (json_is_object(sel) && json_str(sel, "reason"))
        snprintf(r->selection, sizeof(r->selection), "%s", json_str(sel, "reason"));
    snprintf(r->offer.provider, sizeof(r->offer.provider), "%s", r->provider);
    r->count = (int)json_integer_value(json_object_get(doc, "count"));
    r->duration_s = json_integer_value(json_object_get(doc, "duration_seconds"));
    r->cost_per_hr = json_number_value(json_object_get(doc, "cost_per_hr"));
    r->accrued = json_number_value(json_object_get(doc, "accrued_cost"));
    r->max_cost = json_number_value(json_object_get(doc, "max_cost_per_hr"));
    r->port = (int)json_integer_value(json_object_get(doc, "port"));
    r->created_at = json_integer_value(json_object_get(in, "created_at"));
    r->active_at = json_integer_value(json_object_get(in, "active_at"));
    r->expires_at = json_integer_value(json_object_get(in, "expires_at"));
    r->started_at = json_integer_value(json_object_get(in, "started_at"));
    r->last_accrual = json_integer_value(json_object_get(in, "last_accrual"));
    r->auto_select = json_is_true(json_object_get(in, "auto"));
    json_t *provs = json_object_get(in, "providers");
    size_t i;
    json_t *pv;
    json_array_foreach(provs, i, pv)
    {
        if (r->n_providers < MAX_PROVIDERS && json_is_string(pv))
            snprintf(r->providers[r->n_providers++], 16, "%s", json_string_value(pv));
    }
    json_t *labels = json_object_get(doc, "labels");
    if (json_is_object(labels)) {
        json_decref(r->labels);
        r->labels = json_deep_copy(labels);
    }
    json_t *attempts = json_object_get(doc, "attempts");
    if (json_is_array(attempts)) {
        json_decref(r->attempts);
        r->attempts = json_deep_copy(attempts);
    }
    json_t *insts = json_object_get(doc, "instances");
    json_t *inst = json_array_get(insts, 0);
    if (inst && json_str(inst, "id") && strcmp(json_str(inst, "status") ? json_str(inst, "status") : "", "destroyed")) {
        snprintf(r->instance_id, sizeof(r->instance_id), "%s", json_str(inst, "id"));
        snprintf(r->instance_state, sizeof(r->instance_state), "%s", json_str(inst, "status") ? json_str(inst, "status") : "");
        snprintf(r->instance_endpoint, sizeof(r->instance_endpoint), "%s",
                 json_str(inst, "endpoint") ? json_str(inst, "endpoint") : "");
    }
    bool tpu = !strcmp(r->compute_type, "tpu");
    r->gpus = tpu || !strcmp(r->compute_type, "cpu") ? 0 : r->count;
    r->tpus = tpu ? r->count : 0;
    json_decref(doc);
    list_append(b, r);

    switch (r->status) {
    case ST_ACTIVE:
        if (r->expires_at && r->expires_at <= now_s()) {
            finish(r, ST_EXPIRED, "expired while gpuproxyd was down");
        } else if (!strcmp(r->provider, "local")) {
            /* A local runtime ended with the daemon that spawned it: start it again. */
            r->instance_id[0] = '\0';
            place(r); /* r->port is kept: open_port asks for it again */
        } else {
            char err[512];
            r->phase = PH_ACTIVE;
            if (open_port(r, err, sizeof(err)) != 0)
                finish(r, ST_FAILED, err);
            else {
                arm_expiry(r);
                persist(r);
            }
        }
        break;
    case ST_PROVISIONING:
        if (r->instance_id[0] && strcmp(r->provider, "local") != 0) {
            r->phase = PH_WAIT_INSTANCE;
            r->deadline_ms = uv_now(b->loop) + b->cfg->provisioning_timeout_ms;
            uv_timer_start(&r->timer, poll_instance, 0, 0);
        } else {
            /* The create was in flight at the crash: whatever it made carries our
             * label and no recorded id, so reconciliation destroys it. */
            r->instance_id[0] = '\0';
            place(r);
        }
        break;
    case ST_QUEUED:
        break; /* the queue timer picks it up */
    default:
        break;
    }
}

static void noop_done(void *ctx, enum gpd_prov_err err, const char *msg)
{
}


gpd_broker *gpd_broker_new(uv_loop_t *loop, gpd_curl *curl, const gpd_config *cfg, gpd_store *store,
                           gpd_registry *registry, char *err, size_t errlen)
{
    gpd_broker *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->loop = loop;
    b->curl = curl;
    b->cfg = cfg;
    b->store = store;
    b->registry = registry;
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    snprintf(b->owner, sizeof(b->owner), "%s:%d", host, cfg->listen_port);
    /* Providers with credentials; the others are skipped with a reason. */
    if (cfg->vastai_api_key && *cfg->vastai_api_key)
        b->providers[0] = gpd_vastai_new(loop, curl, cfg->vastai_base_url, cfg->vastai_api_key);
    if (cfg->ionet_api_key && *cfg->ionet_api_key)
        b->providers[1] = gpd_ionet_new(loop, curl, cfg->ionet_base_url, cfg->ionet_api_key);
    if (cfg->gcp_project && *cfg->gcp_project && ((cfg->gcp_access_token && *cfg->gcp_access_token) ||
                                                   (cfg->gcp_credentials_file && *cfg->gcp_credentials_file)))
        b->providers[2] = gpd_gcp_tpu_new(loop, curl, cfg->gcp_tpu_base_url, cfg->gcp_project,
                                          cfg->gcp_zone ? cfg->gcp_zone : "us-central1-a", cfg->gcp_access_token,
                                          cfg->gcp_credentials_file);
    b->providers[4] = gpd_local_new(loop, cfg);

    uv_timer_init(loop, &b->queue_timer);
    uv_timer_init(loop, &b->reconcile_timer);
    uv_timer_init(loop, &b->accrual_timer);
    b->queue_timer.data = b->reconcile_timer.data = b->accrual_timer.data = b;

    /* Where were we? */
    static const char *const live[] = { "queued", "provisioning", "active", NULL };
    gpd_store_res_row *rows = NULL;
    size_t n = 0;
    if (gpd_store_res_list(store, live, &rows, &n, err, errlen) != 0) {
        gpd_broker_free(b);
        return NULL;
    }
    gpd_registry_hold(registry);
    for (size_t i = 0; i < n; i++) {
        /* Reservations another gpuproxyd drives (shared PostgreSQL) stay theirs. */
        if (rows[i].owner[0] && strcmp(rows[i].owner, b->owner) != 0)
            continue;
        load_one(b, &rows[i]);
    }
    gpd_registry_release(registry);
    gpd_store_res_rows_free(rows, n);
    update_gauges(b);

    uv_timer_start(&b->queue_timer, queue_tick, cfg->queue_recheck_ms, cfg->queue_recheck_ms);
    uv_timer_start(&b->accrual_timer, accrual_tick, 1000, 1000);
    uv_timer_start(&b->reconcile_timer, reconcile_tick, 0, cfg->reconcile_interval_ms);
    return b;
}

void gpd_broker_shutdown(gpd_broker *b)
{
    b->stopping = true;
    gpd_provider *local = b->providers[4];
    if (local) {
        /* Local runtimes end with the daemon; their reservations resume at the next start. */
        for (res *r = b->list; r; r = r->next)
            if (!strcmp(r->provider, "local") && r->instance_id[0])
                local->ops->destroy(local, r->instance_id, noop_done, NULL);
    }
}

void gpd_broker_free(gpd_broker *b)
{
    if (!b)
        return;
    b->stopping = true;
    uv_close((uv_handle_t *)&b->queue_timer, NULL);
    uv_close((uv_handle_t *)&b->reconcile_timer, NULL);
    uv_close((uv_handle_t *)&b->accrual_timer, NULL);
    while (b->list) {
        res *r = b->list;
        b->list = r->next;
        r->listed = false;
        stop_timer(r);
        if (r->health_req) {
            gpd_curl_abort(r->health_req);
            r->health_req = NULL;
            res_unref(r);
        }
        res_unref(r);
    }
    /* Providers cancel their calls without calling back: what waited for them goes now. */
    for (int i = 0; i < MAX_PROVIDERS; i++)
        if (b->providers[i] && b->providers[i]->ops->free)
            b->providers[i]->ops->free(b->providers[i]);
    for (int i = 0; i < MAX_PROVIDERS; i++)
        free(b->reconciling[i]);
    while (b->orphans) {
        orphan *o = b->orphans;
        b->orphans = o->next;
        free(o);
    }
    while (b->all) {
        res *r = b->all;
        all_unlink(r);
        r->refs = 0;
        if (r->timer_open) {
            /* Its close may already be under way (the last reference went above). */
            if (!uv_is_closing((uv_handle_t *)&r->timer))
                uv_close((uv_handle_t *)&r->timer, timer_closed); /* frees it */
        } else {
            json_decref(r->labels);
            json_decref(r->attempts);
            free(r->cands);
            free(r);
        }
    }
    free(b->cooldowns);
    free(b);
}
