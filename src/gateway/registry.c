#include "gateway/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/*
 * Name index: chained hash of endpoint names, so that registering the
 * 12,500th model does not compare it with the 12,499 before it.
 */
typedef struct name_node {
    struct name_node *next;
    gpd_endpoint *ep;
} name_node;

typedef struct gpd_name_index {
    name_node **buckets;
    size_t mask, count;
} gpd_name_index;

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int index_grow(gpd_name_index *ix)
{
    size_t nb = ix->buckets ? (ix->mask + 1) * 2 : 1024;
    name_node **b = calloc(nb, sizeof(*b));
    if (!b)
        return -1;
    for (size_t i = 0; ix->buckets && i <= ix->mask; i++) {
        for (name_node *n = ix->buckets[i], *next; n; n = next) {
            next = n->next;
            size_t h = (size_t)name_hash(n->ep->spec.name) & (nb - 1);
            n->next = b[h];
            b[h] = n;
        }
    }
    free(ix->buckets);
    ix->buckets = b;
    ix->mask = nb - 1;
    return 0;
}

static int index_add(gpd_name_index *ix, gpd_endpoint *ep)
{
    if ((!ix->buckets || ix->count >= ix->mask + 1) && index_grow(ix) != 0)
        return -1;
    name_node *n = malloc(sizeof(*n));
    if (!n)
        return -1;
    size_t h = (size_t)name_hash(ep->spec.name) & ix->mask;
    n->ep = ep;
    n->next = ix->buckets[h];
    ix->buckets[h] = n;
    ix->count++;
    return 0;
}

static gpd_endpoint *index_find(const gpd_name_index *ix, const char *name)
{
    if (!ix->buckets)
        return NULL;
    for (name_node *n = ix->buckets[(size_t)name_hash(name) & ix->mask]; n; n = n->next)
        if (!strcmp(n->ep->spec.name, name))
            return n->ep;
    return NULL;
}

static void index_remove(gpd_name_index *ix, const gpd_endpoint *ep)
{
    if (!ix->buckets)
        return;
    for (name_node **pp = &ix->buckets[(size_t)name_hash(ep->spec.name) & ix->mask]; *pp; pp = &(*pp)->next) {
        if ((*pp)->ep == ep) {
            name_node *n = *pp;
            *pp = n->next;
            free(n);
            ix->count--;
            return;
        }
    }
}

static void index_free(gpd_name_index *ix)
{
    for (size_t i = 0; ix->buckets && i <= ix->mask; i++) {
        for (name_node *n = ix->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    free(ix->buckets);
    free(ix);
}

int gpd_registry_init(gpd_registry *r, const gpd_config *cfg, gpd_listener *main_listener, gpd_worker **workers,
                      int nworkers, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->main_listener = main_listener;
    r->workers = workers;
    r->nworkers = nworkers;
    gpd_ports_init(&r->ports, cfg);
    r->by_port = calloc(65536, sizeof(*r->by_port));
    r->by_name = calloc(1, sizeof(*r->by_name));
    if (!r->by_port || !r->by_name) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char url[2048];
    snprintf(url, sizeof(url), "%s", cfg->openrouter_base_url);
    const char *why = NULL;
    r->openrouter = gpd_target_new(url, &why);
    if (!r->openrouter) {
        snprintf(err, errlen, "OPENROUTER_BASE_URL '%s': %s", url, why);
        return -1;
    }
    return 0;
}

static void apply_price(gpd_registry *r, gpd_endpoint *e)
{
    const gpd_model_spec *s = &e->spec;
    if (s->prompt_usd_per_mtok >= 0 || s->completion_usd_per_mtok >= 0) {
        gpd_endpoint_set_price(e, s->prompt_usd_per_mtok >= 0 ? s->prompt_usd_per_mtok / 1e6 : 0,
                               s->completion_usd_per_mtok >= 0 ? s->completion_usd_per_mtok / 1e6 : 0);
        e->priced = true;
        return;
    }
    if (s->tier != GPD_TIER_HOSTED)
        return;
    const char *id = s->upstream_model ? s->upstream_model : s->name;
    for (size_t i = 0; i < r->n_prices; i++) {
        if (!strcmp(r->prices[i].id, id)) {
            gpd_endpoint_set_price(e, r->prices[i].prompt, r->prices[i].completion);
            e->priced = true;
            return;
        }
    }
}

const gpd_endpoint *gpd_registry_find(const gpd_registry *r, const char *name)
{
    return index_find(r->by_name, name);
}

static const gpd_endpoint *find_by_port(const gpd_registry *r, int port)
{
    return port > 0 && port < 65536 ? r->by_port[port] : NULL;
}

/* Open the model's port: the one asked for, or the tier's next free one. */
static gpd_listener *open_port(gpd_registry *r, gpd_model_spec *spec, char *err, size_t errlen, int *status)
{
    int e = 0;
    if (spec->port) {
        const gpd_endpoint *other = find_by_port(r, spec->port);
        if (other) {
            snprintf(err, errlen, "port %d is already used by model '%s'", spec->port, other->spec.name);
            *status = 409;
            return NULL;
        }
        gpd_listener *l = gpd_listener_open(r->cfg->model_host, spec->port, false, &e);
        if (!l) {
            snprintf(err, errlen, "port %d cannot be opened on %s: %s", spec->port, r->cfg->model_host,
                     e == -EADDRINUSE ? "it is taken by another process" : strerror(-e));
            *status = e == -EADDRINUSE ? 409 : 500;
        }
        return l;
    }
    int port = 0;
    for (;;) {
        port = gpd_ports_next_free(&r->ports, spec->tier, port);
        if (port < 0) {
            snprintf(err, errlen, "no free port left in the %s range %d-%d", gpd_tier_name(spec->tier),
                     r->cfg->port_min[spec->tier], r->cfg->port_max[spec->tier]);
            *status = 409;
            return NULL;
        }
        gpd_listener *l = gpd_listener_open(r->cfg->model_host, port, false, &e);
        if (l) {
            spec->port = port;
            return l;
        }
        if (e != -EADDRINUSE && e != -EACCES) {
            snprintf(err, errlen, "port %d cannot be opened on %s: %s", port, r->cfg->model_host, strerror(-e));
            *status = 500;
            return NULL;
        }
        /* Taken by someone else: try the next one. */
    }
}

static gpd_endpoint *endpoint_new(gpd_registry *r, gpd_model_spec *spec, gpd_listener *l, gpd_model_stats *stats,
                                  char *err, size_t errlen)
{
    gpd_endpoint *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&e->refs, 1);
    e->spec = *spec;
    memset(spec, 0, sizeof(*spec));
    e->name_len = strlen(e->spec.name);
    e->upstream_model_len = e->spec.upstream_model ? strlen(e->spec.upstream_model) : 0;
    e->listener = l;
    e->stats = stats;
    gpd_endpoint_set_price(e, -1, -1);
    if (e->spec.tier == GPD_TIER_HOSTED) {
        gpd_target_ref(r->openrouter);
        e->targets[e->n_targets++] = r->openrouter;
    } else {
        for (size_t i = 0; i < e->spec.n_upstreams; i++) {
            const char *why = NULL;
            gpd_target *t = gpd_target_new(e->spec.upstream_urls[i], &why);
            if (!t) {
                snprintf(err, errlen, "field 'upstream_url': '%s': %s", e->spec.upstream_urls[i], why);
                gpd_endpoint_unref(e);
                return NULL;
            }
            e->targets[e->n_targets++] = t;
        }
    }
    apply_price(r, e);
    return e;
}

static int append(gpd_registry *r, gpd_endpoint *e)
{
    if (index_add(r->by_name, e) != 0)
        return -1;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        gpd_endpoint **p = realloc(r->eps, cap * sizeof(*p));
        if (!p)
            return -1;
        r->eps = p;
        r->cap = cap;
    }
    r->eps[r->n++] = e;
    r->by_port[e->spec.port] = e;
    return 0;
}

int gpd_registry_add(gpd_registry *r, gpd_model_spec *spec, char *err, size_t errlen)
{
    int status = 400;
    gpd_listener *l = NULL;
    gpd_model_stats *stats = NULL;
    if (gpd_model_spec_validate(spec, r->cfg, err, errlen) != 0)
        goto fail;
    if (gpd_registry_find(r, spec->name)) {
        snprintf(err, errlen, "model '%s' already exists", spec->name);
        status = 409;
        goto fail;
    }
    l = open_port(r, spec, err, errlen, &status);
    if (!l)
        goto fail;
    stats = gpd_model_stats_new(spec->name, r->nworkers);
    if (!stats) {
        snprintf(err, errlen, "out of memory");
        status = 500;
        goto fail;
    }
    int port = spec->port;
    gpd_endpoint *e = endpoint_new(r, spec, l, stats, err, errlen);
    l = NULL;
    stats = NULL;
    if (!e) {
        status = 400;
        goto fail;
    }
    if (append(r, e) != 0) {
        index_remove(r->by_name, e);
        gpd_endpoint_unref(e);
        snprintf(err, errlen, "out of memory");
        status = 500;
        goto fail;
    }
    gpd_ports_take(&r->ports, port);
    r->dirty = true;
    if (!r->hold)
        gpd_registry_publish(r);
    return 201;
fail:
    gpd_listener_unref(l);
    gpd_model_stats_unref(stats);
    gpd_model_spec_free(spec);
    return status;
}

int gpd_registry_remove(gpd_registry *r, const char *name)
{
    gpd_endpoint *found = index_find(r->by_name, name);
    for (size_t i = 0; found && i < r->n; i++) {
        gpd_endpoint *e = r->eps[i];
        if (e != found)
            continue;
        index_remove(r->by_name, e);
        r->by_port[e->spec.port] = NULL;
        gpd_ports_release(&r->ports, e->spec.port);
        memmove(&r->eps[i], &r->eps[i + 1], (r->n - i - 1) * sizeof(*r->eps));
        r->n--;
        r->dirty = true;
        if (!r->hold)
            gpd_registry_publish(r);
        /* Workers still hold it through their tables; the last one closes the port. */
        gpd_endpoint_unref(e);
        return 200;
    }
    return 404;
}

static bool same_spec(const gpd_model_spec *a, const gpd_model_spec *b)
{
    if (strcmp(a->name, b->name) || a->tier != b->tier || a->n_upstreams != b->n_upstreams ||
        (b->port && a->port != b->port) || a->prompt_usd_per_mtok != b->prompt_usd_per_mtok ||
        a->completion_usd_per_mtok != b->completion_usd_per_mtok)
        return false;
    if ((a->upstream_model == NULL) != (b->upstream_model == NULL) ||
        (a->upstream_model && strcmp(a->upstream_model, b->upstream_model)))
        return false;
    for (size_t i = 0; i < a->n_upstreams; i++)
        if (strcmp(a->upstream_urls[i], b->upstream_urls[i]))
            return false;
    return true;
}

int gpd_registry_reload(gpd_registry *r, const gpd_config *cfg, char *err, size_t errlen)
{
    int failures = 0;
    gpd_registry_hold(r);
    /* Drop static models that are gone or changed. */
    for (size_t i = 0; i < r->n;) {
        gpd_endpoint *e = r->eps[i];
        bool keep = e->spec.source != GPD_MODEL_FROM_CONFIG;
        for (size_t j = 0; !keep && j < cfg->n_models; j++)
            keep = same_spec(&e->spec, &cfg->models[j]);
        if (keep) {
            i++;
            continue;
        }
        gpd_registry_remove(r, e->spec.name);
    }
    /* Add what is new. */
    for (size_t j = 0; j < cfg->n_models; j++) {
        if (gpd_registry_find(r, cfg->models[j].name))
            continue;
        gpd_model_spec copy;
        gpd_model_spec_copy(&copy, &cfg->models[j]);
        char why[256];
        int st = gpd_registry_add(r, &copy, why, sizeof(why));
        if (st != 201) {
            failures++;
            snprintf(err, errlen, "model '%s': %s", cfg->models[j].name, why);
            gpd_log_error("reload: model not added", "\"model\":\"%s\",\"reason\":\"%s\"", cfg->models[j].name, why);
        }
    }
    gpd_registry_release(r);
    return failures ? -1 : 0;
}

void gpd_registry_set_prices(gpd_registry *r, gpd_price *prices, size_t n)
{
    for (size_t i = 0; i < r->n_prices; i++)
        free(r->prices[i].id);
    free(r->prices);
    r->prices = prices;
    r->n_prices = n;
    for (size_t i = 0; i < r->n; i++)
        apply_price(r, r->eps[i]);
}

void gpd_registry_hold(gpd_registry *r)
{
    r->hold++;
}

void gpd_registry_release(gpd_registry *r)
{
    if (--r->hold == 0 && r->dirty)
        gpd_registry_publish(r);
}

typedef struct install_msg {
    gpd_worker *w;
    gpd_table *t;
} install_msg;

static void install_on_worker(void *arg)
{
    install_msg *m = arg;
    gpd_worker_install_table(m->w, m->t);
    free(m);
}

void gpd_registry_publish(gpd_registry *r)
{
    gpd_table *t = gpd_table_build(r->eps, r->n, r->main_listener, r->cfg->openrouter_api_key, ++r->version,
                                   r->nworkers);
    if (!t) {
        gpd_log_error("cannot build the endpoint table", "\"reason\":\"out of memory\"");
        return;
    }
    r->dirty = false;
    for (int i = 0; i < r->nworkers; i++) {
        install_msg *m = malloc(sizeof(*m));
        if (m) {
            m->w = r->workers[i];
            m->t = t;
        }
        if (!m || gpd_mailbox_post(&r->workers[i]->mailbox, install_on_worker, m) != 0) {
            free(m);
            gpd_table_unref(t);
        }
    }
}

void gpd_registry_free(gpd_registry *r)
{
    for (size_t i = 0; i < r->n; i++)
        gpd_endpoint_unref(r->eps[i]);
    free(r->eps);
    free(r->by_port);
    if (r->by_name)
        index_free(r->by_name);
    gpd_target_unref(r->openrouter);
    for (size_t i = 0; i < r->n_prices; i++)
        free(r->prices[i].id);
    free(r->prices);
    memset(r, 0, sizeof(*r));
}
