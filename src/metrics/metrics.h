/*
 * Counters and histograms, one set per worker, summed at scrape time: the
 * request path writes only its own worker's cache lines, with relaxed
 * atomic stores that compile to plain moves.
 */
#ifndef GPD_METRICS_METRICS_H
#define GPD_METRICS_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/config.h"
#include "core/sbuf.h"

#define GPD_MAX_WORKERS 64

typedef _Atomic uint64_t gpd_counter;

/* Single writer (the owning worker): load and store, no locked instruction. */
static inline void gpd_counter_add(gpd_counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline uint64_t gpd_counter_get(const gpd_counter *c)
{
    return atomic_load_explicit((gpd_counter *)c, memory_order_relaxed);
}

/* Status codes counted exactly; others are counted as their class ("4xx"). */
enum { GPD_CODE_SLOTS = 25 };
int gpd_code_slot(int status);
const char *gpd_code_slot_label(int slot);

/* A model's counters on one worker. */
typedef struct gpd_model_counters {
    gpd_counter requests[GPD_CODE_SLOTS];
    gpd_counter prompt_tokens;
    gpd_counter completion_tokens;
    gpd_counter cost_nanousd;
} __attribute__((aligned(64))) gpd_model_counters;

/* A model's counters, shared by successive endpoint versions of the model. */
typedef struct gpd_model_stats {
    _Atomic int refs;
    char *name;
    int nworkers;
    gpd_model_counters per_worker[];
} gpd_model_stats;

gpd_model_stats *gpd_model_stats_new(const char *name, int nworkers);
void gpd_model_stats_ref(gpd_model_stats *s);
void gpd_model_stats_unref(gpd_model_stats *s);

enum gpd_upstream_error_kind {
    GPD_UPERR_CONNECT = 0, /* refused, unreachable, connect timeout */
    GPD_UPERR_TIMEOUT,     /* no response in upstream_timeout */
    GPD_UPERR_RESET,       /* connection reset or closed mid-response */
    GPD_UPERR_STATUS_5XX,
    GPD_UPERR_STATUS_429,
    GPD_UPERR_PROTOCOL,    /* malformed response */
    GPD_UPERR_TLS,
    GPD_UPERR_COUNT
};
const char *gpd_upstream_error_name(enum gpd_upstream_error_kind k);

#define GPD_HIST_BUCKETS 15
extern const double gpd_hist_bounds[GPD_HIST_BUCKETS];

typedef struct gpd_histogram {
    gpd_counter buckets[GPD_HIST_BUCKETS + 1]; /* last: +Inf */
    gpd_counter sum_us;
    gpd_counter count;
} gpd_histogram;

/* Everything else a worker counts. */
typedef struct gpd_worker_metrics {
    gpd_histogram duration[GPD_TIER_COUNT];
    gpd_counter upstream_errors[GPD_UPERR_COUNT];
    gpd_counter open_connections_opened;
    gpd_counter open_connections_closed;
    gpd_counter unrouted_requests[GPD_CODE_SLOTS]; /* requests that matched no model */
    gpd_counter retries;
} __attribute__((aligned(64))) gpd_worker_metrics;

void gpd_histogram_observe(gpd_histogram *h, uint64_t us);

/* The compute broker's gauges: written by the control thread, read at scrape. */
#define GPD_COMPUTE_PROVIDERS 5
extern const char *const gpd_compute_provider_names[]; /* vastai ionet gcp_tpu openrouter local, NULL */
typedef struct gpd_compute_gauges {
    _Atomic int64_t active_gpus;
    _Atomic int64_t active_tpus;
    _Atomic int64_t queue_depth;
    _Atomic uint64_t cost_per_hour_micro[8]; /* micro-dollars per hour, by provider index */
    _Atomic uint64_t accrued_cost_micro;
} gpd_compute_gauges;
extern gpd_compute_gauges gpd_compute_metrics;

struct gpd_table;
struct gpd_worker;
/*
 * Render the Prometheus text exposition (version 0.0.4) into out, from
 * every worker's counters and the models of table.
 */
int gpd_metrics_render(gpd_sbuf *out, const struct gpd_table *table, struct gpd_worker *const *workers,
                       int nworkers);

#endif
