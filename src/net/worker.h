/*
 * Worker threads: each runs its own libuv loop, polls every listener, and
 * owns everything a request touches (connections, buffers, upstream
 * pools, counters), so that the request path shares nothing and takes no
 * lock.  Other threads reach a worker only through its mailbox.
 */
#ifndef GPD_NET_WORKER_H
#define GPD_NET_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/log.h"
#include "net/deadline.h"
#include "net/listener.h"
#include "net/mailbox.h"

#define GPD_BUF_SIZE 16384        /* the standard I/O buffer */
#define GPD_BUF_FREE_MAX 512      /* free buffers a worker keeps */

struct gpd_worker;
struct gpd_worker_poll;
struct gpd_upstream_pool;
struct gpd_curl;
struct gpd_worker_metrics;
struct gpd_worker_tables;
struct gpd_conn;
struct gpd_exchange;

/* Deadline lists, one per waiting state; their timeouts come from the config. */
enum gpd_wait {
    GPD_WAIT_HEADER = 0,      /* client sending a request (head and body) */
    GPD_WAIT_IDLE,            /* client keep-alive between requests */
    GPD_WAIT_UPSTREAM_CONNECT,
    GPD_WAIT_UPSTREAM_RESPONSE, /* first byte, and then between reads */
    GPD_WAIT_UPSTREAM_IDLE,   /* pooled keep-alive upstream connection */
    GPD_WAIT_CURL_RESPONSE,   /* https upstream: first byte, and then between reads */
    GPD_WAIT_COUNT
};

typedef struct gpd_worker {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    gpd_mailbox mailbox;
    uv_timer_t tick;

    /* Listeners this worker polls, indexed by port, and as a list. */
    struct gpd_worker_poll **poll_by_port;
    struct gpd_worker_poll *polls;
    uint32_t poll_mark;
    bool accepting;
    void (*on_accept)(struct gpd_worker *w, int fd, gpd_listener *l);
    void (*on_exit)(struct gpd_worker *w);   /* on the worker's thread, after its loop ended */

    gpd_deadline_list waits[GPD_WAIT_COUNT];

    /* Free standard-size buffers. */
    void **free_bufs;
    size_t n_free_bufs;

    /* Owned by the layers above (http/, gateway/, metrics/). */
    struct gpd_conn *conns;           /* every open client connection */
    struct gpd_conn *free_conns;
    struct gpd_exchange *free_exchanges;
    void *free_proxies;               /* gateway/proxy.c's per-request state */
    size_t n_conns;
    struct gpd_upstream_pool *upstreams;
    struct gpd_curl *curl;
    struct gpd_worker_metrics *metrics;
    struct gpd_worker_tables *tables;
    void *server;                     /* struct gpd_server shared, read-only config */
    gpd_log_ring log;
    bool draining;
    bool stopping;
} gpd_worker;

/* Set up w (loop, mailbox, tick) on the calling thread; run it with gpd_worker_start. */
int gpd_worker_init(gpd_worker *w, int id, const uint64_t timeouts_ms[GPD_WAIT_COUNT],
                    void (*on_expire[GPD_WAIT_COUNT])(gpd_deadline *));
int gpd_worker_start(gpd_worker *w);
/* Wait for the thread to end (after gpd_worker_stop was posted), then free. */
void gpd_worker_join(gpd_worker *w);

/*
 * On the worker's thread: poll exactly these listeners from now on.
 * Listeners already polled stay untouched (no connection is dropped);
 * ones missing from the set stop being polled.
 */
void gpd_worker_set_listeners(gpd_worker *w, gpd_listener *const *ls, size_t n);
/* On the worker's thread: stop accepting (drain). */
void gpd_worker_stop_accepting(gpd_worker *w);
/* On the worker's thread: close every handle so that the loop ends. */
void gpd_worker_close_loop(gpd_worker *w);

/* Worker buffers: standard GPD_BUF_SIZE blocks, recycled per worker. */
void *gpd_worker_buf_get(gpd_worker *w);
void gpd_worker_buf_put(gpd_worker *w, void *buf);

/* The loop's cached clock in milliseconds. */
static inline uint64_t gpd_worker_now(gpd_worker *w)
{
    return uv_now(&w->loop);
}

#endif
