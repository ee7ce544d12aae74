/*
 * The client side of HTTP/1.1: a connection reads, frames and parses
 * requests (heads with the strict parser, bodies with Content-Length or
 * chunked decoded in place, 100-continue), enforces the size caps and the
 * header/idle timeouts, and hands each complete request to the gateway.
 * The gateway answers through gpd_conn_send() and gpd_conn_end().
 *
 * Memory: an idle keep-alive connection holds no buffer (buffers come from
 * the worker's free list when bytes arrive and go back when a response
 * completes), so that 100k idle clients cost well under 1 KiB each.
 */
#ifndef GPD_HTTP_SERVER_H
#define GPD_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http/parser.h"
#include "net/worker.h"

#define GPD_MAX_HEADERS 100
#define GPD_OUT_HIGH_WATER (256 * 1024) /* pending output above which producers pause */

typedef struct gpd_server_limits {
    uint64_t max_header_bytes;
    uint64_t max_body;
} gpd_server_limits;

struct gpd_conn;

/* The request being served: lives from a complete request to gpd_conn_end(). */
typedef struct gpd_exchange {
    gpd_http_request req;
    gpd_http_header headers[GPD_MAX_HEADERS];
    char *body;                 /* decoded body inside the connection's buffer */
    size_t body_len;
    uint64_t start_ns;          /* uv_hrtime() when the request was complete */
    int status;                 /* status sent, for logs and metrics */
    uint64_t bytes_out;
    void *handler;              /* the gateway's state for this request */
    /* Called if the client goes away before gpd_conn_end(): the handler
     * must drop everything that refers to the connection. */
    void (*on_abort)(struct gpd_conn *c);
    /* Called when pending output falls back under the high-water mark. */
    void (*on_drain)(struct gpd_conn *c);
    struct gpd_exchange *next_free;
} gpd_exchange;

typedef struct gpd_conn {
    uv_tcp_t tcp;
    gpd_worker *w;
    gpd_deadline wait;
    struct gpd_conn *next, *prev;   /* the worker's list of open connections */
    uint64_t serial;                /* changes with every request and reuse (admin replies check it) */
    char *in;                       /* request bytes; NULL while idle */
    uint32_t in_len, in_cap;
    uint32_t head_len;              /* parsed head of the current request */
    uint32_t raw_end;               /* chunked: raw bytes consumed so far */
    uint32_t request_end;           /* end of the current request's bytes (pipelining) */
    gpd_http_chunked chunked;
    char *out;                      /* output waiting for the socket */
    size_t out_len, out_cap;
    char *out_busy;                 /* output handed to uv_write */
    size_t out_busy_len;
    uv_write_t wreq;
    gpd_exchange *ex;               /* non-NULL while a request is being served */
    gpd_exchange *ex_pending;       /* head parsed, body still arriving */
    uint16_t port;
    uint8_t phase;
    bool is_main;
    bool writing;
    bool closing;
    bool keep_alive;
    bool close_after_write;
    bool reading;
    bool head_moved;                /* buffer reallocated after the head was parsed */
    bool sent_continue;
} gpd_conn;

/* Worker-wide server state. */
typedef struct gpd_server {
    gpd_server_limits limits;
    void (*on_request)(gpd_conn *c);            /* the gateway */
    void (*on_request_done)(gpd_conn *c);       /* logs and metrics, before reset */
} gpd_server;

/* Accept hook for gpd_worker.on_accept. */
void gpd_server_accept(gpd_worker *w, int fd, gpd_listener *l);
/* Deadline callbacks for the worker's header and idle lists. */
void gpd_server_header_expired(gpd_deadline *d);
void gpd_server_idle_expired(gpd_deadline *d);

/*
 * Queue bytes for the client.  Writes at once when the socket takes them;
 * what it does not take is copied, so the caller's buffers are free on
 * return.  Returns 0, or -1 when the connection is closing.
 */
int gpd_conn_send(gpd_conn *c, const uv_buf_t *bufs, unsigned n);
static inline size_t gpd_conn_pending(const gpd_conn *c)
{
    return c->out_len + c->out_busy_len;
}

/* Whether the response may keep the connection open ("Connection: close" otherwise). */
static inline bool gpd_conn_keep_alive(const gpd_conn *c)
{
    return c->keep_alive && !c->w->draining;
}

/* The response is complete: log it, then serve the next pipelined request or wait. */
void gpd_conn_end(gpd_conn *c);

/* A complete response with a body (Content-Length); then gpd_conn_end(). */
void gpd_conn_respond(gpd_conn *c, int status, const char *content_type, const char *extra_headers,
                      const char *body, size_t len);

/* An OpenAI-shaped error: {"error":{"message","type","code"}}; then gpd_conn_end(). */
void gpd_conn_respond_error(gpd_conn *c, int status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Close now (errors, drain).  Safe to call more than once. */
void gpd_conn_close(gpd_conn *c);

/* Worker shutdown: close idle connections, mark the rest to close after their response. */
void gpd_server_drain(gpd_worker *w);
size_t gpd_server_open_connections(const gpd_worker *w);

#endif
