#include "metrics/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "gateway/table.h"
#include "net/worker.h"

/* Codes counted exactly; the rest fall into their class. */
static const int tracked_codes[] = { 200, 201, 204, 400, 401, 402, 403, 404, 405, 408, 409,
                                     413, 422, 429, 431, 499, 500, 502, 503, 504 };
#define N_TRACKED (sizeof(tracked_codes) / sizeof(tracked_codes[0]))
/* Slots N_TRACKED.. are the classes 1xx..5xx (index by class - 1). */

int gpd_code_slot(int status)
{
    for (size_t i = 0; i < N_TRACKED; i++)
        if (tracked_codes[i] == status)
            return (int)i;
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    return (int)N_TRACKED + cls - 1;
}

const char *gpd_code_slot_label(int slot)
{
    static char labels[GPD_CODE_SLOTS][8];
    static const char *const classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    if (slot < (int)N_TRACKED) {
        if (!labels[slot][0])
            snprintf(labels[slot], sizeof(labels[slot]), "%d", tracked_codes[slot]);
        return labels[slot];
    }
    int c = slot - (int)N_TRACKED;
    return c >= 0 && c < 5 ? classes[c] : "5xx";
}

_Static_assert(N_TRACKED + 5 <= GPD_CODE_SLOTS, "code slots");

gpd_model_stats *gpd_model_stats_new(const char *name, int nworkers)
{
    gpd_model_stats *s = aligned_alloc(64, (sizeof(*s) + (size_t)nworkers * sizeof(gpd_model_counters) + 63) / 64 * 64);
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s) + (size_t)nworkers * sizeof(gpd_model_counters));
    s->name = strdup(name);
    if (!s->name) {
        free(s);
        return NULL;
    }
    s->nworkers = nworkers;
    atomic_init(&s->refs, 1);
    return s;
}

void gpd_model_stats_ref(gpd_model_stats *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void gpd_model_stats_unref(gpd_model_stats *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(s->name);
    free(s);
}

const char *gpd_upstream_error_name(enum gpd_upstream_error_kind k)
{
    static const char *const names[] = { "connect", "timeout", "reset", "status_5xx", "status_429", "protocol", "tls" };
    return k < GPD_UPERR_COUNT ? names[k] : "unknown";
}

const char *const gpd_compute_provider_names[] = { "vastai", "ionet", "gcp_tpu", "openrouter", "local", NULL };
gpd_compute_gauges gpd_compute_metrics;

const double gpd_hist_bounds[GPD_HIST_BUCKETS] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                   1,     2.5,   5,    10,    30,   60,  300 };

void gpd_histogram_observe(gpd_histogram *h, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < GPD_HIST_BUCKETS && s > gpd_hist_bounds[i])
        i++;
    gpd_counter_add(&h->buckets[i], 1);
    gpd_counter_add(&h->sum_us, us);
    gpd_counter_add(&h->count, 1);
}

/* Label values are model names: escape backslash, quote and newline. */
static void label_value(gpd_sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            gpd_sbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            gpd_sbuf_puts(b, "\\n");
        else
            gpd_sbuf_append(b, s, 1);
    }
}

int gpd_metrics_render(gpd_sbuf *out, const struct gpd_table *table, struct gpd_worker *const *workers, int nworkers)
{
    gpd_sbuf *b = out;

    /* Requests per model and status code. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_requests_total Requests served, by model and status code.\n"
                     "# TYPE gpuproxyd_requests_total counter\n");
    for (size_t i = 0; i < table->n; i++) {
        const gpd_model_stats *st = table->endpoints[i]->stats;
        for (int slot = 0; slot < GPD_CODE_SLOTS; slot++) {
            uint64_t v = 0;
            for (int wi = 0; wi < st->nworkers; wi++)
                v += gpd_counter_get(&st->per_worker[wi].requests[slot]);
            if (!v)
                continue;
            gpd_sbuf_puts(b, "gpuproxyd_requests_total{model=\"");
            label_value(b, st->name);
            gpd_sbuf_printf(b, "\",code=\"%s\"} %llu\n", gpd_code_slot_label(slot), (unsigned long long)v);
        }
    }
    for (int slot = 0; slot < GPD_CODE_SLOTS; slot++) {
        uint64_t v = 0;
        for (int wi = 0; wi < nworkers; wi++)
            v += gpd_counter_get(&workers[wi]->metrics->unrouted_requests[slot]);
        if (v)
            gpd_sbuf_printf(b, "gpuproxyd_requests_total{model=\"\",code=\"%s\"} %llu\n", gpd_code_slot_label(slot),
                            (unsigned long long)v);
    }

    /* Duration by tier. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_request_duration_seconds Time from a complete request to the end of its "
                     "response, by model tier.\n# TYPE gpuproxyd_request_duration_seconds histogram\n");
    for (int t = 0; t < GPD_TIER_COUNT; t++) {
        uint64_t cum = 0, sum_us = 0, count = 0;
        for (int wi = 0; wi < nworkers; wi++) {
            sum_us += gpd_counter_get(&workers[wi]->metrics->duration[t].sum_us);
            count += gpd_counter_get(&workers[wi]->metrics->duration[t].count);
        }
        for (int k = 0; k <= GPD_HIST_BUCKETS; k++) {
            for (int wi = 0; wi < nworkers; wi++)
                cum += gpd_counter_get(&workers[wi]->metrics->duration[t].buckets[k]);
            if (k < GPD_HIST_BUCKETS)
                gpd_sbuf_printf(b, "gpuproxyd_request_duration_seconds_bucket{tier=\"%s\",le=\"%g\"} %llu\n",
                                gpd_tier_name((enum gpd_tier)t), gpd_hist_bounds[k], (unsigned long long)cum);
            else
                gpd_sbuf_printf(b, "gpuproxyd_request_duration_seconds_bucket{tier=\"%s\",le=\"+Inf\"} %llu\n",
                                gpd_tier_name((enum gpd_tier)t), (unsigned long long)cum);
        }
        gpd_sbuf_printf(b, "gpuproxyd_request_duration_seconds_sum{tier=\"%s\"} %.6f\n",
                        gpd_tier_name((enum gpd_tier)t), (double)sum_us / 1e6);
        gpd_sbuf_printf(b, "gpuproxyd_request_duration_seconds_count{tier=\"%s\"} %llu\n",
                        gpd_tier_name((enum gpd_tier)t), (unsigned long long)count);
    }

    /* Upstream errors. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_upstream_errors_total Failed upstream attempts, by kind.\n"
                     "# TYPE gpuproxyd_upstream_errors_total counter\n");
    for (int k = 0; k < GPD_UPERR_COUNT; k++) {
        uint64_t v = 0;
        for (int wi = 0; wi < nworkers; wi++)
            v += gpd_counter_get(&workers[wi]->metrics->upstream_errors[k]);
        gpd_sbuf_printf(b, "gpuproxyd_upstream_errors_total{kind=\"%s\"} %llu\n",
                        gpd_upstream_error_name((enum gpd_upstream_error_kind)k), (unsigned long long)v);
    }
    uint64_t retries = 0, opened = 0, closed = 0;
    for (int wi = 0; wi < nworkers; wi++) {
        retries += gpd_counter_get(&workers[wi]->metrics->retries);
        opened += gpd_counter_get(&workers[wi]->metrics->open_connections_opened);
        closed += gpd_counter_get(&workers[wi]->metrics->open_connections_closed);
    }
    gpd_sbuf_printf(b, "# HELP gpuproxyd_upstream_retries_total Requests sent again to another upstream.\n"
                       "# TYPE gpuproxyd_upstream_retries_total counter\ngpuproxyd_upstream_retries_total %llu\n",
                    (unsigned long long)retries);
    gpd_sbuf_printf(b, "# HELP gpuproxyd_open_connections Client connections open now.\n"
                       "# TYPE gpuproxyd_open_connections gauge\ngpuproxyd_open_connections %lld\n",
                    (long long)(opened - closed));

    /* Ports by tier. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_ports_allocated Model ports open, by tier.\n"
                     "# TYPE gpuproxyd_ports_allocated gauge\n");
    for (int t = 0; t < GPD_TIER_COUNT; t++)
        gpd_sbuf_printf(b, "gpuproxyd_ports_allocated{tier=\"%s\"} %zu\n", gpd_tier_name((enum gpd_tier)t),
                        table->ports_by_tier[t]);

    /* Tokens and cost. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_tokens_total Tokens reported by upstream responses, by model and kind.\n"
                     "# TYPE gpuproxyd_tokens_total counter\n");
    for (size_t i = 0; i < table->n; i++) {
        const gpd_model_stats *st = table->endpoints[i]->stats;
        uint64_t pt = 0, ct = 0;
        for (int wi = 0; wi < st->nworkers; wi++) {
            pt += gpd_counter_get(&st->per_worker[wi].prompt_tokens);
            ct += gpd_counter_get(&st->per_worker[wi].completion_tokens);
        }
        gpd_sbuf_puts(b, "gpuproxyd_tokens_total{model=\"");
        label_value(b, st->name);
        gpd_sbuf_printf(b, "\",kind=\"prompt\"} %llu\n", (unsigned long long)pt);
        gpd_sbuf_puts(b, "gpuproxyd_tokens_total{model=\"");
        label_value(b, st->name);
        gpd_sbuf_printf(b, "\",kind=\"completion\"} %llu\n", (unsigned long long)ct);
    }
    gpd_sbuf_puts(b, "# HELP gpuproxyd_cost_dollars_total Cost of the tokens served, in US dollars, by model.\n"
                     "# TYPE gpuproxyd_cost_dollars_total counter\n");
    for (size_t i = 0; i < table->n; i++) {
        const gpd_model_stats *st = table->endpoints[i]->stats;
        uint64_t nano = 0;
        for (int wi = 0; wi < st->nworkers; wi++)
            nano += gpd_counter_get(&st->per_worker[wi].cost_nanousd);
        gpd_sbuf_puts(b, "gpuproxyd_cost_dollars_total{model=\"");
        label_value(b, st->name);
        gpd_sbuf_printf(b, "\"} %.9f\n", (double)nano / 1e9);
    }

    /* The compute broker. */
    gpd_sbuf_puts(b, "# HELP gpuproxyd_cost_per_hour_dollars What active reservations cost per hour, by provider.\n"
                     "# TYPE gpuproxyd_cost_per_hour_dollars gauge\n");
    for (int i = 0; gpd_compute_provider_names[i]; i++)
        gpd_sbuf_printf(b, "gpuproxyd_cost_per_hour_dollars{provider=\"%s\"} %.6f\n", gpd_compute_provider_names[i],
                        (double)atomic_load(&gpd_compute_metrics.cost_per_hour_micro[i]) / 1e6);
    gpd_sbuf_printf(b, "# HELP gpuproxyd_active_gpus GPUs held by provisioning and active reservations.\n"
                       "# TYPE gpuproxyd_active_gpus gauge\ngpuproxyd_active_gpus %lld\n",
                    (long long)atomic_load(&gpd_compute_metrics.active_gpus));
    gpd_sbuf_printf(b, "# HELP gpuproxyd_active_tpus TPU chips held by provisioning and active reservations.\n"
                       "# TYPE gpuproxyd_active_tpus gauge\ngpuproxyd_active_tpus %lld\n",
                    (long long)atomic_load(&gpd_compute_metrics.active_tpus));
    gpd_sbuf_printf(b, "# HELP gpuproxyd_reservation_queue_depth Reservations waiting for capacity.\n"
                       "# TYPE gpuproxyd_reservation_queue_depth gauge\ngpuproxyd_reservation_queue_depth %lld\n",
                    (long long)atomic_load(&gpd_compute_metrics.queue_depth));
    gpd_sbuf_printf(b, "# HELP gpuproxyd_reservation_accrued_cost_dollars Cost accrued so far by live reservations.\n"
                       "# TYPE gpuproxyd_reservation_accrued_cost_dollars gauge\n"
                       "gpuproxyd_reservation_accrued_cost_dollars %.6f\n",
                    (double)atomic_load(&gpd_compute_metrics.accrued_cost_micro) / 1e6);

    /* Access log lines dropped because a worker's ring was full. */
    uint64_t dropped = 0;
    for (int wi = 0; wi < nworkers; wi++)
        dropped += atomic_load_explicit(&workers[wi]->log.dropped, memory_order_relaxed);
    gpd_sbuf_printf(b, "# HELP gpuproxyd_log_lines_dropped_total Access log lines dropped (log ring full).\n"
                       "# TYPE gpuproxyd_log_lines_dropped_total counter\ngpuproxyd_log_lines_dropped_total %llu\n",
                    (unsigned long long)dropped);
    return b->failed ? -1 : 0;
}
