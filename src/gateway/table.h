/*
 * The endpoint table: port -> endpoint -> upstream targets.
 *
 * A table is immutable once published.  The control thread builds a new
 * one on every change and hands it to each worker through its mailbox;
 * workers switch at their next loop iteration.  A worker pins the table a
 * request started on with a plain, worker-local counter (no atomic on the
 * request path) and drops its one atomic reference when the table is
 * superseded and no request of its own still uses it.
 *
 * Endpoints and targets are shared between successive tables and
 * reference-counted, so that a table rebuild copies pointers, not models,
 * and passive health and counters survive a rebuild.
 */
#ifndef GPD_GATEWAY_TABLE_H
#define GPD_GATEWAY_TABLE_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "metrics/metrics.h"
#include "net/listener.h"

struct gpd_worker;

/* An upstream base URL, parsed and resolved once, on the control thread. */
typedef struct gpd_target {
    _Atomic int refs;
    char *url;              /* as configured, e.g. "http://10.0.0.5:8000/v1" */
    bool https;
    char *host;             /* host name or address */
    int port;
    char *host_header;      /* value for Host: "host:port", or "host" on the default port */
    char *base_path;        /* "/v1": no trailing slash, may be "" */
    size_t base_path_len;
    struct sockaddr_storage addr; /* http:// only: resolved at build time (no DNS on workers) */
    socklen_t addrlen;
    bool resolved;
    /* Passive health: shared by all workers; written only on failure and recovery. */
    _Atomic uint32_t failures;      /* consecutive */
    _Atomic uint64_t down_until_ms; /* skipped until then (loop clock) */
} gpd_target;

#define GPD_HEALTH_FAILURES 3       /* consecutive failures that mark a target down */
#define GPD_HEALTH_DOWN_MS 30000    /* ...for this long */

/* Create a target from a URL; resolves http:// hosts (blocking: control thread only).
 * Returns NULL with *why set on a malformed URL. */
gpd_target *gpd_target_new(const char *url, const char **why);
void gpd_target_unref(gpd_target *t);
void gpd_target_ref(gpd_target *t);
void gpd_target_report(gpd_target *t, bool ok, uint64_t now_ms);
bool gpd_target_is_down(const gpd_target *t, uint64_t now_ms);

/* A model endpoint. */
typedef struct gpd_endpoint {
    _Atomic int refs;
    gpd_model_spec spec;    /* as registered (name, tier, port, URLs, prices) */
    size_t name_len;
    size_t upstream_model_len;
    gpd_target *targets[GPD_MAX_UPSTREAMS];
    size_t n_targets;
    gpd_listener *listener; /* this model's port */
    gpd_model_stats *stats;
    /* USD per token; for hosted models the control thread fills these in
     * from OpenRouter's pricing when the spec has none.  Stored as double
     * bits so that an update needs no new endpoint. */
    _Atomic uint64_t prompt_price_bits, completion_price_bits;
    bool priced;
} gpd_endpoint;

void gpd_endpoint_ref(gpd_endpoint *e);
void gpd_endpoint_unref(gpd_endpoint *e);
double gpd_endpoint_price(const gpd_endpoint *e, bool completion); /* < 0: unknown */
void gpd_endpoint_set_price(gpd_endpoint *e, double prompt, double completion);

typedef struct gpd_table {
    _Atomic int refs;
    uint64_t version;
    gpd_endpoint **endpoints;
    size_t n;
    uint16_t *by_port;        /* 65536 slots: endpoint index + 1, 0 = none */
    uint32_t *by_name;        /* open addressing: endpoint index + 1 */
    size_t name_mask;
    gpd_listener *main_listener;
    gpd_listener **listeners; /* main + every endpoint's */
    size_t n_listeners;
    char *openrouter_auth;    /* "Bearer <key>", or NULL when OPENROUTER_API_KEY is unset */
    size_t openrouter_auth_len;
    size_t ports_by_tier[GPD_TIER_COUNT];
} gpd_table;

/*
 * Build a table over endpoints[0..n) (each gains a reference) with the main
 * listener.  openrouter_key may be NULL.  refs starts at nrefs (one per
 * worker that will receive it).  Returns NULL when out of memory.
 */
gpd_table *gpd_table_build(gpd_endpoint *const *endpoints, size_t n, gpd_listener *main_listener,
                           const char *openrouter_key, uint64_t version, int nrefs);
void gpd_table_unref(gpd_table *t);

const gpd_endpoint *gpd_table_by_port(const gpd_table *t, int port);
const gpd_endpoint *gpd_table_by_name(const gpd_table *t, const char *name, size_t len);

/* A worker's pins on tables. */
typedef struct gpd_table_pin {
    gpd_table *table;
    uint32_t inflight;
    struct gpd_table_pin *next;
} gpd_table_pin;

typedef struct gpd_worker_tables {
    gpd_table_pin *current;
    gpd_table_pin *retired;   /* superseded, still used by requests */
} gpd_worker_tables;

/* Worker thread: start using t (takes the worker's reference) and poll its listeners. */
void gpd_worker_install_table(struct gpd_worker *w, gpd_table *t);
/* Worker thread: drop every pin (at shutdown). */
void gpd_worker_drop_tables(struct gpd_worker *w);

static inline gpd_table_pin *gpd_table_pin_acquire(struct gpd_worker_tables *wt)
{
    gpd_table_pin *p = wt->current;
    p->inflight++;
    return p;
}
void gpd_table_pin_release(struct gpd_worker_tables *wt, gpd_table_pin *p);

#endif
