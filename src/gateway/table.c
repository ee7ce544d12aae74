#include "gateway/table.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "net/worker.h"

/* ---- targets ---- */

gpd_target *gpd_target_new(const char *url, const char **why)
{
    gpd_target *t = calloc(1, sizeof(*t));
    if (!t) {
        *why = "out of memory";
        return NULL;
    }
    atomic_init(&t->refs, 1);
    t->url = strdup(url);
    const char *p;
    if (!strncmp(url, "http://", 7)) {
        p = url + 7;
        t->port = 80;
    } else if (!strncmp(url, "https://", 8)) {
        p = url + 8;
        t->https = true;
        t->port = 443;
    } else {
        *why = "not an http:// or https:// URL";
        goto fail;
    }
    const char *slash = strchr(p, '/');
    const char *auth_end = slash ? slash : p + strlen(p);
    if (memchr(p, '@', (size_t)(auth_end - p))) {
        *why = "credentials in the URL are not supported";
        goto fail;
    }
    const char *host_start = p, *host_end, *port_start = NULL;
    if (*p == '[') {
        host_start = p + 1;
        host_end = memchr(p, ']', (size_t)(auth_end - p));
        if (!host_end) {
            *why = "unterminated IPv6 address";
            goto fail;
        }
        if (host_end + 1 < auth_end && host_end[1] == ':')
            port_start = host_end + 2;
    } else {
        host_end = memchr(p, ':', (size_t)(auth_end - p));
        if (host_end)
            port_start = host_end + 1;
        else
            host_end = auth_end;
    }
    if (host_end == host_start) {
        *why = "missing host";
        goto fail;
    }
    t->host = strndup(host_start, (size_t)(host_end - host_start));
    bool explicit_port = false;
    if (port_start) {
        int port = 0;
        const char *q = port_start;
        for (; q < auth_end && *q >= '0' && *q <= '9' && port <= 65535; q++)
            port = port * 10 + (*q - '0');
        if (q != auth_end || q == port_start || port < 1 || port > 65535) {
            *why = "invalid port";
            goto fail;
        }
        t->port = port;
        explicit_port = true;
    }
    size_t hh = (size_t)(auth_end - p);
    t->host_header = explicit_port ? strndup(p, hh) : strndup(p, hh);
    /* Base path without a trailing slash, and without any query. */
    const char *path = slash ? slash : "";
    size_t plen = strcspn(path, "?#");
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    t->base_path = strndup(path, plen);
    t->base_path_len = plen;

    if (!t->https) {
        struct addrinfo hints = { 0 }, *res = NULL;
        char port_s[8];
        snprintf(port_s, sizeof(port_s), "%d", t->port);
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        /* Addresses first: no resolver files read for the common case. */
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        int rc = getaddrinfo(t->host, port_s, &hints, &res);
        if (rc != 0) {
            hints.ai_flags = AI_NUMERICSERV;
            rc = getaddrinfo(t->host, port_s, &hints, &res);
        }
        if (rc == 0 && res) {
            memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
            t->addrlen = res->ai_addrlen;
            t->resolved = true;
        }
        if (res)
            freeaddrinfo(res);
    }
    return t;
fail:
    gpd_target_unref(t);
    return NULL;
}

void gpd_target_ref(gpd_target *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void gpd_target_unref(gpd_target *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->url);
    free(t->host);
    free(t->host_header);
    free(t->base_path);
    free(t);
}

void gpd_target_report(gpd_target *t, bool ok, uint64_t now_ms)
{
    if (ok) {
        /* Read first: a healthy target must not write a shared line per request. */
        if (atomic_load_explicit(&t->failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&t->failures, 0, memory_order_relaxed);
        return;
    }
    uint32_t f = atomic_fetch_add_explicit(&t->failures, 1, memory_order_relaxed) + 1;
    if (f >= GPD_HEALTH_FAILURES)
        atomic_store_explicit(&t->down_until_ms, now_ms + GPD_HEALTH_DOWN_MS, memory_order_relaxed);
}

bool gpd_target_is_down(const gpd_target *t, uint64_t now_ms)
{
    return atomic_load_explicit(&((gpd_target *)t)->down_until_ms, memory_order_relaxed) > now_ms;
}

/* ---- endpoints ---- */

void gpd_endpoint_ref(gpd_endpoint *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void gpd_endpoint_unref(gpd_endpoint *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < e->n_targets; i++)
        gpd_target_unref(e->targets[i]);
    gpd_listener_unref(e->listener);
    gpd_model_stats_unref(e->stats);
    gpd_model_spec_free(&e->spec);
    free(e);
}

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

double gpd_endpoint_price(const gpd_endpoint *e, bool completion)
{
    gpd_endpoint *m = (gpd_endpoint *)e;
    return bits_to_double(atomic_load_explicit(completion ? &m->completion_price_bits : &m->prompt_price_bits,
                                               memory_order_relaxed));
}

void gpd_endpoint_set_price(gpd_endpoint *e, double prompt, double completion)
{
    atomic_store_explicit(&e->prompt_price_bits, double_to_bits(prompt), memory_order_relaxed);
    atomic_store_explicit(&e->completion_price_bits, double_to_bits(completion), memory_order_relaxed);
}

/* ---- tables ---- */

static uint64_t hash_name(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

gpd_table *gpd_table_build(gpd_endpoint *const *endpoints, size_t n, gpd_listener *main_listener,
                           const char *openrouter_key, uint64_t version, int nrefs)
{
    gpd_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    atomic_init(&t->refs, nrefs);
    t->version = version;
    size_t slots = 16;
    while (slots < n * 2)
        slots <<= 1;
    t->name_mask = slots - 1;
    t->endpoints = calloc(n ? n : 1, sizeof(*t->endpoints));
    t->by_port = calloc(65536, sizeof(*t->by_port));
    t->by_name = calloc(slots, sizeof(*t->by_name));
    t->listeners = calloc(n + 1, sizeof(*t->listeners));
    if (!t->endpoints || !t->by_port || !t->by_name || !t->listeners)
        goto fail;
    t->main_listener = main_listener;
    gpd_listener_ref(main_listener);
    t->listeners[t->n_listeners++] = main_listener;
    for (size_t i = 0; i < n; i++) {
        gpd_endpoint *e = endpoints[i];
        gpd_endpoint_ref(e);
        t->endpoints[t->n++] = e;
        t->by_port[e->listener->port] = (uint16_t)(i + 1);
        t->listeners[t->n_listeners++] = e->listener;
        t->ports_by_tier[e->spec.tier]++;
        size_t h = (size_t)hash_name(e->spec.name, e->name_len) & t->name_mask;
        while (t->by_name[h])
            h = (h + 1) & t->name_mask;
        t->by_name[h] = (uint32_t)(i + 1);
    }
    if (openrouter_key && *openrouter_key) {
        size_t kl = strlen(openrouter_key);
        t->openrouter_auth = malloc(kl + 8);
        if (!t->openrouter_auth)
            goto fail;
        memcpy(t->openrouter_auth, "Bearer ", 7);
        memcpy(t->openrouter_auth + 7, openrouter_key, kl + 1);
        t->openrouter_auth_len = kl + 7;
    }
    return t;
fail:
    atomic_store(&t->refs, 1);
    gpd_table_unref(t);
    return NULL;
}

void gpd_table_unref(gpd_table *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->n; i++)
        gpd_endpoint_unref(t->endpoints[i]);
    if (t->main_listener)
        gpd_listener_unref(t->main_listener);
    if (t->openrouter_auth) {
        /* The key must not linger in freed memory. */
        memset(t->openrouter_auth, 0, t->openrouter_auth_len);
        free(t->openrouter_auth);
    }
    free(t->endpoints);
    free(t->by_port);
    free(t->by_name);
    free(t->listeners);
    free(t);
}

const gpd_endpoint *gpd_table_by_port(const gpd_table *t, int port)
{
    if (port < 0 || port > 65535)
        return NULL;
    uint16_t i = t->by_port[port];
    return i ? t->endpoints[i - 1] : NULL;
}

const gpd_endpoint *gpd_table_by_name(const gpd_table *t, const char *name, size_t len)
{
    size_t h = (size_t)hash_name(name, len) & t->name_mask;
    for (;;) {
        uint32_t i = t->by_name[h];
        if (!i)
            return NULL;
        const gpd_endpoint *e = t->endpoints[i - 1];
        if (e->name_len == len && memcmp(e->spec.name, name, len) == 0)
            return e;
        h = (h + 1) & t->name_mask;
    }
}

/* ---- worker pins ---- */

static void pin_drop(gpd_table_pin *p)
{
    gpd_table_unref(p->table);
    free(p);
}

void gpd_worker_install_table(struct gpd_worker *w, gpd_table *t)
{
    gpd_worker_tables *wt = w->tables;
    gpd_table_pin *p = calloc(1, sizeof(*p));
    if (!p) {
        gpd_table_unref(t);
        return;
    }
    p->table = t;
    gpd_table_pin *old = wt->current;
    wt->current = p;
    if (!w->stopping)
        gpd_worker_set_listeners(w, (gpd_listener *const *)t->listeners, t->n_listeners);
    if (old) {
        if (old->inflight == 0) {
            pin_drop(old);
        } else {
            old->next = wt->retired;
            wt->retired = old;
        }
    }
}

void gpd_table_pin_release(struct gpd_worker_tables *wt, gpd_table_pin *p)
{
    if (--p->inflight > 0 || p == wt->current)
        return;
    for (gpd_table_pin **pp = &wt->retired; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            pin_drop(p);
            return;
        }
    }
}

void gpd_worker_drop_tables(struct gpd_worker *w)
{
    gpd_worker_tables *wt = w->tables;
    while (wt->retired) {
        gpd_table_pin *p = wt->retired;
        wt->retired = p->next;
        pin_drop(p);
    }
    if (wt->current) {
        pin_drop(wt->current);
        wt->current = NULL;
    }
}
