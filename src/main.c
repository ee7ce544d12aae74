/*
 * gpuproxyd: start-up (flags, config, threads, signals) and shutdown.
 *
 * The main thread becomes the control thread: it owns the model registry,
 * answers admin calls, reads OpenRouter's pricing, drains the workers'
 * log rings, and handles signals.  Worker threads serve requests.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api/admin.h"
#include "compute/broker.h"
#include "store/store.h"
#include "core/config.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/pricing.h"
#include "gateway/registry.h"
#include "http/curl_client.h"
#include "http/server.h"
#include "http/upstream.h"
#include "metrics/metrics.h"

#define LOG_DRAIN_MS 50
#define DRAIN_CHECK_MS 50

static struct daemon {
    gpd_config cfg;
    uv_loop_t *loop;
    gpd_mailbox mailbox;
    gpd_worker **workers;
    int nworkers;
    gpd_gateway gateway;
    gpd_registry registry;
    gpd_listener *main_listener;
    gpd_curl *curl;
    gpd_pricing *pricing;
    gpd_store *store;
    gpd_broker *broker;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t log_timer, drain_timer;
    bool draining;
    uint64_t drain_deadline;
    int exit_code;
} d;

static void usage(FILE *f)
{
    fprintf(f, "usage: gpuproxyd [--config FILE.toml] [--check-config] [--version]\n");
}

/* ---- workers ---- */

static void worker_exit(gpd_worker *w)
{
    /* The loop has ended: every handle is closed, the free lists hold the rest. */
    while (w->free_conns) {
        gpd_conn *c = w->free_conns;
        w->free_conns = c->next;
        free(c);
    }
    while (w->free_exchanges) {
        gpd_exchange *ex = w->free_exchanges;
        w->free_exchanges = ex->next_free;
        free(ex);
    }
    gpd_proxy_free_list(w);
}

static int workers_create(void)
{
    const gpd_config *cfg = &d.cfg;
    uint64_t timeouts[GPD_WAIT_COUNT] = {
        [GPD_WAIT_HEADER] = cfg->header_timeout_ms,
        [GPD_WAIT_IDLE] = cfg->idle_timeout_ms,
        [GPD_WAIT_UPSTREAM_CONNECT] = cfg->upstream_connect_timeout_ms,
        [GPD_WAIT_UPSTREAM_RESPONSE] = cfg->upstream_timeout_ms,
        [GPD_WAIT_UPSTREAM_IDLE] = 4000, /* under uvicorn's 5 s keep-alive (vLLM) */
        [GPD_WAIT_CURL_RESPONSE] = cfg->upstream_timeout_ms,
    };
    void (*expire[GPD_WAIT_COUNT])(gpd_deadline *) = {
        [GPD_WAIT_HEADER] = gpd_server_header_expired,
        [GPD_WAIT_IDLE] = gpd_server_idle_expired,
        [GPD_WAIT_UPSTREAM_CONNECT] = gpd_upstream_connect_expired,
        [GPD_WAIT_UPSTREAM_RESPONSE] = gpd_upstream_response_expired,
        [GPD_WAIT_UPSTREAM_IDLE] = gpd_upstream_idle_expired,
        [GPD_WAIT_CURL_RESPONSE] = gpd_curl_response_expired,
    };
    d.nworkers = cfg->workers > GPD_MAX_WORKERS ? GPD_MAX_WORKERS : cfg->workers;
    d.workers = calloc((size_t)d.nworkers, sizeof(*d.workers));
    if (!d.workers)
        return -1;
    for (int i = 0; i < d.nworkers; i++) {
        gpd_worker *w = aligned_alloc(64, (sizeof(gpd_worker) + 63) / 64 * 64);
        if (!w || gpd_worker_init(w, i, timeouts, expire) != 0)
            return -1;
        d.workers[i] = w;
        w->server = &d.gateway.server;
        w->on_accept = gpd_server_accept;
        w->on_exit = worker_exit;
        w->metrics = aligned_alloc(64, (sizeof(gpd_worker_metrics) + 63) / 64 * 64);
        w->tables = calloc(1, sizeof(*w->tables));
        w->upstreams = gpd_upstream_pool_new();
        w->curl = gpd_curl_new(&w->loop, cfg->ca_file);
        if (!w->metrics || !w->tables || !w->upstreams || !w->curl)
            return -1;
        memset(w->metrics, 0, sizeof(*w->metrics));
    }
    d.gateway.workers = d.workers;
    d.gateway.nworkers = d.nworkers;
    return 0;
}

static void worker_stop_task(void *arg)
{
    gpd_worker *w = arg;
    w->stopping = true;
    for (gpd_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        gpd_conn_close(c);
    }
    gpd_upstream_pool_free(w);
    gpd_curl_free(w->curl);
    w->curl = NULL;
    gpd_worker_drop_tables(w);
    gpd_worker_close_loop(w);
}

static void worker_drain_task(void *arg)
{
    gpd_worker *w = arg;
    w->draining = true;
    gpd_worker_stop_accepting(w);
    gpd_server_drain(w);
}

static uint64_t open_connections(void)
{
    uint64_t n = 0;
    for (int i = 0; i < d.nworkers; i++) {
        gpd_worker_metrics *m = d.workers[i]->metrics;
        n += gpd_counter_get(&m->open_connections_opened) - gpd_counter_get(&m->open_connections_closed);
    }
    return n;
}

/* ---- logs ---- */

static void drain_logs(uv_timer_t *t)
{
    for (int i = 0; i < d.nworkers; i++)
        gpd_log_ring_drain(&d.workers[i]->log, STDERR_FILENO);
}

/* ---- shutdown ---- */

static void control_close_handles(void)
{
    uv_timer_stop(&d.log_timer);
    uv_timer_stop(&d.drain_timer);
    uv_close((uv_handle_t *)&d.log_timer, NULL);
    uv_close((uv_handle_t *)&d.drain_timer, NULL);
    uv_close((uv_handle_t *)&d.sig_term, NULL);
    uv_close((uv_handle_t *)&d.sig_int, NULL);
    uv_close((uv_handle_t *)&d.sig_hup, NULL);
    gpd_pricing_stop(d.pricing);
    d.pricing = NULL;
    gpd_broker_free(d.broker);
    d.broker = NULL;
    gpd_curl_free(d.curl);
    d.curl = NULL;
    gpd_mailbox_close(&d.mailbox);
}

static void finish_shutdown(void)
{
    if (d.broker)
        gpd_broker_shutdown(d.broker);
    for (int i = 0; i < d.nworkers; i++)
        gpd_mailbox_post(&d.workers[i]->mailbox, worker_stop_task, d.workers[i]);
    for (int i = 0; i < d.nworkers; i++)
        gpd_worker_join(d.workers[i]);
    drain_logs(NULL);
    gpd_log_info("stopped", "\"open_connections\":%llu", (unsigned long long)open_connections());
    control_close_handles();
}

static void drain_check(uv_timer_t *t)
{
    uint64_t open = open_connections();
    if (open == 0 || uv_now(d.loop) >= d.drain_deadline) {
        if (open)
            gpd_log_warn("drain timeout: closing connections", "\"open_connections\":%llu", (unsigned long long)open);
        finish_shutdown();
    }
}

static void start_drain(const char *why)
{
    if (d.draining)
        return;
    d.draining = true;
    atomic_store(&d.gateway.ready, 0);
    gpd_log_info("draining", "\"signal\":\"%s\",\"open_connections\":%llu,\"drain_timeout_ms\":%llu", why,
                 (unsigned long long)open_connections(), (unsigned long long)d.cfg.drain_timeout_ms);
    for (int i = 0; i < d.nworkers; i++)
        gpd_mailbox_post(&d.workers[i]->mailbox, worker_drain_task, d.workers[i]);
    d.drain_deadline = uv_now(d.loop) + d.cfg.drain_timeout_ms;
    uv_timer_start(&d.drain_timer, drain_check, DRAIN_CHECK_MS, DRAIN_CHECK_MS);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        if (d.draining)
            return;
        gpd_config next;
        char err[1024];
        if (gpd_config_load(d.cfg.path, &next, err, sizeof(err)) != 0) {
            gpd_log_error("reload refused: the config has an error; keeping the running one", "\"error\":\"%s\"",
                          err);
            return;
        }
        int rc = gpd_registry_reload(&d.registry, &next, err, sizeof(err));
        gpd_log_info("reloaded", "\"models\":%zu,\"ok\":%s", d.registry.n, rc == 0 ? "true" : "false");
        gpd_config_free(&next);
        return;
    }
    start_drain(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    bool check_only = false;
    char err[1024];

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config_path = argv[i] + 9;
        } else if (!strcmp(argv[i], "--check-config")) {
            check_only = true;
        } else if (!strcmp(argv[i], "--version")) {
            printf("gpuproxyd %s\n", GPD_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "gpuproxyd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (gpd_config_load(config_path, &d.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuproxyd: %s\n", err);
        return 1;
    }
    if (check_only) {
        printf("%s: configuration OK (%zu models, %d workers)\n", config_path ? config_path : "(defaults)",
               d.cfg.n_models, d.cfg.workers);
        gpd_config_free(&d.cfg);
        return 0;
    }
    enum gpd_log_level level = GPD_LOG_INFO;
    gpd_log_parse_level(d.cfg.log_level, &level);
    gpd_log_set_level(level);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    curl_global_init(CURL_GLOBAL_DEFAULT);

    d.loop = uv_default_loop();
    gpd_mailbox_init(&d.mailbox, d.loop);
    gpd_gateway_init(&d.gateway, &d.cfg);
    d.gateway.control = &d.mailbox;
    d.gateway.admin = gpd_admin_handle;
    if (workers_create() != 0) {
        fprintf(stderr, "gpuproxyd: cannot create worker threads\n");
        return 1;
    }

    int e = 0;
    d.main_listener = gpd_listener_open(d.cfg.listen_host, d.cfg.listen_port, true, &e);
    if (!d.main_listener) {
        fprintf(stderr, "gpuproxyd: cannot listen on %s:%d: %s\n", d.cfg.listen_host, d.cfg.listen_port,
                strerror(-e));
        return 1;
    }
    if (gpd_registry_init(&d.registry, &d.cfg, d.main_listener, d.workers, d.nworkers, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuproxyd: %s\n", err);
        return 1;
    }
    if (gpd_store_open(d.cfg.store_url, &d.store, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpuproxyd: store %s: %s\n", d.cfg.store_url, err);
        return 1;
    }

    gpd_admin_init(&d.registry, d.store, NULL);

    uint64_t t0 = uv_hrtime();
    gpd_registry_hold(&d.registry);
    for (size_t i = 0; i < d.cfg.n_models; i++) {
        gpd_model_spec spec;
        gpd_model_spec_copy(&spec, &d.cfg.models[i]);
        int st = gpd_registry_add(&d.registry, &spec, err, sizeof(err));
        if (st != 201) {
            fprintf(stderr, "gpuproxyd: %s: model '%s': %s\n", d.cfg.path, d.cfg.models[i].name, err);
            return 1;
        }
    }
    /* Models registered at run time by earlier runs come back on their ports. */
    if (gpd_api_models_restore(err, sizeof(err)) != 0)
        gpd_log_error("stored models not restored", "\"error\":\"%s\"", err);
    d.registry.dirty = true;
    gpd_registry_release(&d.registry);
    double open_ms = (double)(uv_hrtime() - t0) / 1e6;

    for (int i = 0; i < d.nworkers; i++) {
        if (gpd_worker_start(d.workers[i]) != 0) {
            fprintf(stderr, "gpuproxyd: cannot start worker %d\n", i);
            return 1;
        }
    }
    d.curl = gpd_curl_new(d.loop, d.cfg.ca_file);
    if (d.curl)
        gpd_curl_set_limits(d.curl, 16, 64); /* the control thread's provider APIs */
    d.pricing = gpd_pricing_start(d.loop, d.curl, &d.registry, &d.cfg);
    d.broker = gpd_broker_new(d.loop, d.curl, &d.cfg, d.store, &d.registry, err, sizeof(err));
    if (!d.broker)
        gpd_log_error("compute broker not started", "\"error\":\"%s\"", err);
    gpd_api_compute_init(d.broker);

    uv_signal_init(d.loop, &d.sig_term);
    uv_signal_init(d.loop, &d.sig_int);
    uv_signal_init(d.loop, &d.sig_hup);
    uv_signal_start(&d.sig_term, on_signal, SIGTERM);
    uv_signal_start(&d.sig_int, on_signal, SIGINT);
    uv_signal_start(&d.sig_hup, on_signal, SIGHUP);
    uv_timer_init(d.loop, &d.log_timer);
    uv_timer_init(d.loop, &d.drain_timer);
    uv_timer_start(&d.log_timer, drain_logs, LOG_DRAIN_MS, LOG_DRAIN_MS);

    atomic_store(&d.gateway.ready, 1);
    gpd_log_info("listening", "\"listen\":\"%s:%d\",\"workers\":%d,\"models\":%zu,\"listeners\":%zu,\"open_ms\":%.1f,"
                 "\"version\":\"%s\"",
                 d.cfg.listen_host, d.cfg.listen_port, d.nworkers, d.registry.n, d.registry.n + 1, open_ms,
                 GPD_VERSION);

    uv_run(d.loop, UV_RUN_DEFAULT);

    gpd_registry_free(&d.registry);
    gpd_listener_unref(d.main_listener);
    gpd_store_close(d.store);
    for (int i = 0; i < d.nworkers; i++) {
        free(d.workers[i]->metrics);
        free(d.workers[i]->tables);
        free(d.workers[i]);
    }
    free(d.workers);
    uv_loop_close(d.loop);
    curl_global_cleanup();
    gpd_config_free(&d.cfg);
    return d.exit_code;
}
