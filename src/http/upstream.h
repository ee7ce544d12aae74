/*
 * The lean upstream client for http:// targets: keep-alive connections
 * pooled per worker and per address, requests written from the caller's
 * buffers without copying, responses parsed with the same strict parser as
 * requests and handed to the caller as they arrive.
 *
 * Lifetime: the buffers given to gpd_upstream_send() must stay valid until
 * on_done or on_error is called or the caller aborts.  After on_done or
 * on_error the handle is gone; the caller must not touch it again.
 * Callbacks never run inside gpd_upstream_send() itself.
 */
#ifndef GPD_HTTP_UPSTREAM_H
#define GPD_HTTP_UPSTREAM_H

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

#include "http/parser.h"
#include "metrics/metrics.h"
#include "net/worker.h"

typedef struct gpd_upstream gpd_upstream;

typedef struct gpd_upstream_events {
    /* The response head; res and its headers are valid during the call only.
     * Return 0 to go on, or -1 after calling gpd_upstream_abort(). */
    int (*on_head)(void *ctx, const gpd_http_response *res);
    /* Decoded payload bytes (for observers such as usage accounting). */
    void (*on_payload)(void *ctx, const char *p, size_t n);
    /* Raw body bytes to relay as they came (chunk framing included).  Valid
     * during the call only.  Return 1 to pause reading until
     * gpd_upstream_resume(), 0 to go on, -1 after aborting. */
    int (*on_body)(void *ctx, const char *raw, size_t n);
    void (*on_done)(void *ctx);
    /* received: whether any response byte arrived before the failure.
     * reused: the connection came from the pool, so a failure with nothing
     * received may just be a keep-alive connection the server had closed:
     * the caller may retry the same target once without counting it. */
    void (*on_error)(void *ctx, enum gpd_upstream_error_kind kind, bool received, bool reused);
} gpd_upstream_events;

/* Per-worker pools. */
struct gpd_upstream_pool *gpd_upstream_pool_new(void);
/* Close every idle connection (worker shutdown) and free the pool. */
void gpd_upstream_pool_free(gpd_worker *w);

#define GPD_UPSTREAM_MAX_BUFS 6

/*
 * Send a request to addr on a pooled or new connection.  Returns the
 * handle, or NULL when out of memory (nothing was called back).  A pooled
 * connection that turns out to be closed before any response byte is
 * replaced by a new one transparently.
 */
gpd_upstream *gpd_upstream_send(gpd_worker *w, const struct sockaddr *addr, socklen_t addrlen, bool head_request,
                                const uv_buf_t *bufs, unsigned nbufs, const gpd_upstream_events *ev, void *ctx);
/* Drop the request: the connection is closed, no callback follows. */
void gpd_upstream_abort(gpd_upstream *u);
void gpd_upstream_resume(gpd_upstream *u);

/* Deadline callbacks for the worker's upstream lists. */
void gpd_upstream_connect_expired(gpd_deadline *d);
void gpd_upstream_response_expired(gpd_deadline *d);
void gpd_upstream_idle_expired(gpd_deadline *d);

#endif
