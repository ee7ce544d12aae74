#include "http/upstream.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define POOL_BUCKETS 1024
#define POOL_MAX_IDLE 256
#define MAX_RESPONSE_HEAD (64 * 1024)
#define MAX_RESPONSE_HEADERS 100

enum up_state { UP_CONNECTING, UP_SENDING, UP_HEAD, UP_BODY, UP_IDLE, UP_CLOSED };

typedef struct pool_bucket {
    struct sockaddr_storage key;
    socklen_t keylen;
    bool used;
    gpd_upstream *idle;   /* LIFO: the most recently used connection is the warmest */
    unsigned n_idle;
} pool_bucket;

typedef struct gpd_upstream_pool {
    pool_bucket buckets[POOL_BUCKETS];
} gpd_upstream_pool;

struct gpd_upstream {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    gpd_worker *w;
    gpd_deadline wait;
    pool_bucket *bucket;
    gpd_upstream *next_idle;
    enum up_state state;
    const gpd_upstream_events *ev;
    void *ctx;
    uv_buf_t bufs[GPD_UPSTREAM_MAX_BUFS];
    unsigned nbufs;
    char *in;
    size_t in_len;
    gpd_http_chunked chunked;
    enum gpd_http_body_kind body_kind;
    uint64_t remaining;
    bool head_request;
    bool keep_alive;
    bool reused;          /* came from the pool: a failure before any byte may be a stale connection */
    bool received;        /* any response byte arrived */
    bool paused;
    bool reading;
    bool writing;
    bool detached;        /* caller gone: close when the write completes */
    bool head_fresh;      /* on_head was just called: on_body follows even with no bytes */
};

/* ---- pool ---- */

struct gpd_upstream_pool *gpd_upstream_pool_new(void)
{
    return calloc(1, sizeof(gpd_upstream_pool));
}

static uint64_t hash_addr(const struct sockaddr *a, socklen_t len)
{
    const unsigned char *p = (const unsigned char *)a;
    uint64_t h = 1469598103934665603ULL;
    for (socklen_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static pool_bucket *pool_find(gpd_upstream_pool *pool, const struct sockaddr *a, socklen_t len, bool create)
{
    size_t i = (size_t)hash_addr(a, len) & (POOL_BUCKETS - 1);
    for (size_t probes = 0; probes < POOL_BUCKETS; probes++, i = (i + 1) & (POOL_BUCKETS - 1)) {
        pool_bucket *b = &pool->buckets[i];
        if (!b->used) {
            if (!create)
                return NULL;
            b->used = true;
            memcpy(&b->key, a, len);
            b->keylen = len;
            return b;
        }
        if (b->keylen == len && memcmp(&b->key, a, len) == 0)
            return b;
    }
    return NULL;
}

static void pool_unlink(gpd_upstream *u)
{
    pool_bucket *b = u->bucket;
    for (gpd_upstream **pp = &b->idle; *pp; pp = &(*pp)->next_idle) {
        if (*pp == u) {
            *pp = u->next_idle;
            b->n_idle--;
            break;
        }
    }
    u->next_idle = NULL;
}

/* ---- connection lifecycle ---- */

static void up_closed(uv_handle_t *h)
{
    gpd_upstream *u = h->data;
    gpd_worker_buf_put(u->w, u->in);
    free(u);
}

static void up_close(gpd_upstream *u)
{
    if (u->state == UP_CLOSED)
        return;
    if (u->state == UP_IDLE)
        pool_unlink(u);
    u->state = UP_CLOSED;
    gpd_deadline_cancel(&u->wait);
    uv_close((uv_handle_t *)&u->tcp, up_closed);
}

static void fail(gpd_upstream *u, enum gpd_upstream_error_kind kind)
{
    const gpd_upstream_events *ev = u->ev;
    void *ctx = u->ctx;
    bool received = u->received, reused = u->reused;
    up_close(u);
    if (ev && !u->detached)
        ev->on_error(ctx, kind, received, reused);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gpd_upstream *u = h->data;
    if (!u->in)
        u->in = gpd_worker_buf_get(u->w);
    buf->base = u->in ? u->in + u->in_len : NULL;
    buf->len = u->in ? GPD_BUF_SIZE - u->in_len : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static int start_request(gpd_upstream *u, bool from_send);

static void complete(gpd_upstream *u)
{
    const gpd_upstream_events *ev = u->ev;
    void *ctx = u->ctx;
    gpd_worker *w = u->w;
    u->ev = NULL;
    u->ctx = NULL;
    u->head_fresh = false;
    gpd_deadline_cancel(&u->wait);
    pool_bucket *b = u->bucket;
    if (u->keep_alive && u->in_len == 0 && b && b->n_idle < POOL_MAX_IDLE && !w->stopping) {
        u->state = UP_IDLE;
        u->reused = true;
        u->next_idle = b->idle;
        b->idle = u;
        b->n_idle++;
        gpd_deadline_arm(&w->waits[GPD_WAIT_UPSTREAM_IDLE], &u->wait, gpd_worker_now(w));
        if (u->paused) {
            u->paused = false;
        }
        if (!u->reading)
            u->reading = uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read) == 0;
    } else {
        up_close(u);
    }
    ev->on_done(ctx);
}

/* Feed body bytes in u->in[off..in_len) through framing and to the caller.
 * Returns -1 when u is gone (completed, failed or aborted). */
static int process_body(gpd_upstream *u, size_t off)
{
    const char *p = u->in + off;
    size_t n = u->in_len - off;
    size_t relay = n;
    bool done = false;

    if (u->body_kind == GPD_HTTP_BODY_LENGTH) {
        if (n >= u->remaining) {
            relay = (size_t)u->remaining;
            done = true;
            if (n > relay)
                u->keep_alive = false; /* bytes beyond the response: do not trust the connection */
        }
        u->remaining -= relay;
        if (relay && u->ev->on_payload) {
            u->ev->on_payload(u->ctx, p, relay);
            if (u->state == UP_CLOSED)
                return -1; /* the caller aborted from its callback */
        }
    } else if (u->body_kind == GPD_HTTP_BODY_CHUNKED) {
        size_t pos = 0;
        while (pos < n) {
            size_t consumed = 0, doff = 0, dlen = 0;
            const char *why = NULL;
            enum gpd_chunked_result r = gpd_http_chunked_step(&u->chunked, p + pos, n - pos, &consumed, &doff, &dlen, &why);
            if (r == GPD_CHUNKED_ERROR) {
                fail(u, GPD_UPERR_PROTOCOL);
                return -1;
            }
            if (r == GPD_CHUNKED_DATA && u->ev->on_payload) {
                u->ev->on_payload(u->ctx, p + pos + doff, dlen);
                if (u->state == UP_CLOSED)
                    return -1;
            }
            pos += consumed;
            if (r == GPD_CHUNKED_DONE) {
                done = true;
                if (pos < n)
                    u->keep_alive = false;
                relay = pos;
                break;
            }
            if (r == GPD_CHUNKED_AGAIN)
                break;
        }
    } else if (u->body_kind == GPD_HTTP_BODY_UNTIL_CLOSE) {
        if (relay && u->ev->on_payload) {
            u->ev->on_payload(u->ctx, p, relay);
            if (u->state == UP_CLOSED)
                return -1;
        }
    } else {
        relay = 0;
        done = true;
    }
    /* Everything in the buffer is handed over now; the next read starts at 0. */
    u->in_len = 0;
    if (relay > 0 || (u->head_fresh && !done)) {
        u->head_fresh = false;
        int r = u->ev->on_body(u->ctx, p, relay);
        if (r < 0)
            return -1;
        if (r > 0 && !done) {
            u->paused = true;
            if (u->reading) {
                uv_read_stop((uv_stream_t *)&u->tcp);
                u->reading = false;
            }
        }
    }
    if (done) {
        complete(u);
        return -1;
    }
    return 0;
}

static void process_head(gpd_upstream *u)
{
    for (;;) {
        gpd_http_header headers[MAX_RESPONSE_HEADERS];
        gpd_http_response res;
        const char *why = NULL;
        int r = gpd_http_parse_response(u->in, u->in_len, &res, headers, MAX_RESPONSE_HEADERS, u->head_request, &why);
        if (r == GPD_HTTP_INCOMPLETE) {
            if (u->in_len >= GPD_BUF_SIZE)
                fail(u, GPD_UPERR_PROTOCOL); /* a response head above 16 KiB is not a model server's */
            return;
        }
        if (r < 0) {
            fail(u, GPD_UPERR_PROTOCOL);
            return;
        }
        if (res.status < 200) {
            /* 1xx: skip it and read the real response. */
            memmove(u->in, u->in + r, u->in_len - (size_t)r);
            u->in_len -= (size_t)r;
            if (u->in_len == 0)
                return;
            continue;
        }
        u->state = UP_BODY;
        u->body_kind = res.framing.body;
        u->remaining = res.framing.content_length;
        u->keep_alive = res.framing.keep_alive && res.framing.body != GPD_HTTP_BODY_UNTIL_CLOSE;
        gpd_http_chunked_init(&u->chunked);
        if (u->ev->on_head(u->ctx, &res) != 0)
            return; /* aborted */
        u->head_fresh = true;
        process_body(u, (size_t)r);
        return;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gpd_upstream *u = s->data;
    if (nread == 0)
        return;
    if (u->state == UP_IDLE) {
        /* A pooled connection spoke or closed: it is no longer usable. */
        up_close(u);
        return;
    }
    if (nread < 0) {
        if (u->state == UP_BODY && u->body_kind == GPD_HTTP_BODY_UNTIL_CLOSE && nread == UV_EOF) {
            u->keep_alive = false;
            complete(u);
            return;
        }
        fail(u, nread == UV_EOF || nread == UV_ECONNRESET ? GPD_UPERR_RESET : GPD_UPERR_PROTOCOL);
        return;
    }
    u->received = true;
    u->in_len += (size_t)nread;
    gpd_deadline_arm(&u->w->waits[GPD_WAIT_UPSTREAM_RESPONSE], &u->wait, gpd_worker_now(u->w));
    if (u->state == UP_HEAD || u->state == UP_SENDING)
        process_head(u);
    else if (u->state == UP_BODY)
        process_body(u, 0);
}

static void on_written(uv_write_t *req, int status)
{
    gpd_upstream *u = req->data;
    u->writing = false;
    if (u->detached) {
        up_close(u);
        return;
    }
    if (status < 0 && u->state != UP_CLOSED) {
        fail(u, u->reused ? GPD_UPERR_RESET : GPD_UPERR_CONNECT);
        return;
    }
    if (u->state == UP_SENDING)
        u->state = UP_HEAD;
}

/* Write the request.  From gpd_upstream_send() a failure is returned (-1)
 * instead of reported, so that no callback runs inside send. */
static int start_request(gpd_upstream *u, bool from_send)
{
    gpd_worker *w = u->w;
    u->state = UP_SENDING;
    u->in_len = 0;
    u->received = false;
    gpd_deadline_arm(&w->waits[GPD_WAIT_UPSTREAM_RESPONSE], &u->wait, gpd_worker_now(w));
    if (!u->reading)
        u->reading = uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read) == 0;
    size_t total = 0;
    for (unsigned i = 0; i < u->nbufs; i++)
        total += u->bufs[i].len;
    int r = uv_try_write((uv_stream_t *)&u->tcp, u->bufs, u->nbufs);
    if (r == (int)total) {
        u->state = UP_HEAD;
        return 0;
    }
    if (r < 0 && r != UV_EAGAIN) {
        if (from_send) {
            u->ev = NULL;
            up_close(u);
            return -1;
        }
        fail(u, u->reused ? GPD_UPERR_RESET : GPD_UPERR_CONNECT);
        return -1;
    }
    /* Write the rest asynchronously; the caller's buffers stay valid. */
    size_t skip = r > 0 ? (size_t)r : 0;
    uv_buf_t rest[GPD_UPSTREAM_MAX_BUFS];
    unsigned nrest = 0;
    for (unsigned i = 0; i < u->nbufs; i++) {
        if (skip >= u->bufs[i].len) {
            skip -= u->bufs[i].len;
            continue;
        }
        rest[nrest++] = uv_buf_init(u->bufs[i].base + skip, (unsigned)(u->bufs[i].len - skip));
        skip = 0;
    }
    u->write_req.data = u;
    u->writing = true;
    if (uv_write(&u->write_req, (uv_stream_t *)&u->tcp, rest, nrest, on_written) != 0) {
        u->writing = false;
        if (from_send) {
            u->ev = NULL;
            up_close(u);
            return -1;
        }
        fail(u, GPD_UPERR_CONNECT);
        return -1;
    }
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    gpd_upstream *u = req->data;
    if (u->state == UP_CLOSED)
        return;
    if (u->detached) {
        up_close(u);
        return;
    }
    if (status < 0) {
        fail(u, GPD_UPERR_CONNECT);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    start_request(u, false);
}

gpd_upstream *gpd_upstream_send(gpd_worker *w, const struct sockaddr *addr, socklen_t addrlen, bool head_request,
                                const uv_buf_t *bufs, unsigned nbufs, const gpd_upstream_events *ev, void *ctx)
{
    gpd_upstream_pool *pool = w->upstreams;
    pool_bucket *b = pool_find(pool, addr, addrlen, true);
    if (nbufs > GPD_UPSTREAM_MAX_BUFS)
        return NULL;
    /* Reuse the warmest idle connection; one the server closed is dropped
     * and the next one tried. */
    while (b && b->idle) {
        gpd_upstream *u = b->idle;
        b->idle = u->next_idle;
        b->n_idle--;
        u->next_idle = NULL;
        gpd_deadline_cancel(&u->wait);
        u->ev = ev;
        u->ctx = ctx;
        memcpy(u->bufs, bufs, nbufs * sizeof(*bufs));
        u->nbufs = nbufs;
        u->head_request = head_request;
        u->paused = false;
        u->detached = false;
        u->state = UP_SENDING;
        if (start_request(u, true) == 0)
            return u;
    }
    gpd_upstream *u;
    {
        u = calloc(1, sizeof(*u));
        if (!u)
            return NULL;
        u->w = w;
        u->bucket = b;
        if (uv_tcp_init(&w->loop, &u->tcp) != 0) {
            free(u);
            return NULL;
        }
        u->tcp.data = u;
    }
    u->ev = ev;
    u->ctx = ctx;
    memcpy(u->bufs, bufs, nbufs * sizeof(*bufs));
    u->nbufs = nbufs;
    u->head_request = head_request;
    u->paused = false;
    u->detached = false;
    u->state = UP_CONNECTING;
    u->reused = false;
    u->connect_req.data = u;
    gpd_deadline_arm(&w->waits[GPD_WAIT_UPSTREAM_CONNECT], &u->wait, gpd_worker_now(w));
    int r = uv_tcp_connect(&u->connect_req, &u->tcp, addr, on_connected);
    if (r != 0) {
        /* Report asynchronously-safe: the caller gets the handle, then the error on the next tick. */
        u->state = UP_CONNECTING;
        gpd_deadline_arm(&w->waits[GPD_WAIT_UPSTREAM_CONNECT], &u->wait, 0);
    }
    return u;
}

void gpd_upstream_abort(gpd_upstream *u)
{
    if (!u || u->state == UP_CLOSED)
        return;
    u->ev = NULL;
    u->ctx = NULL;
    u->detached = true;
    if (u->state == UP_CONNECTING) {
        /* uv_close cancels the connect; its callback sees UV_ECANCELED. */
        up_close(u);
        return;
    }
    up_close(u);
}

void gpd_upstream_resume(gpd_upstream *u)
{
    if (!u || u->state != UP_BODY || !u->paused)
        return;
    u->paused = false;
    if (!u->reading)
        u->reading = uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read) == 0;
}

void gpd_upstream_connect_expired(gpd_deadline *d)
{
    gpd_upstream *u = gpd_container_of(d, gpd_upstream, wait);
    fail(u, GPD_UPERR_CONNECT);
}

void gpd_upstream_response_expired(gpd_deadline *d)
{
    gpd_upstream *u = gpd_container_of(d, gpd_upstream, wait);
    fail(u, GPD_UPERR_TIMEOUT);
}

void gpd_upstream_idle_expired(gpd_deadline *d)
{
    up_close(gpd_container_of(d, gpd_upstream, wait));
}

void gpd_upstream_pool_free(gpd_worker *w)
{
    gpd_upstream_pool *pool = w->upstreams;
    if (!pool)
        return;
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        while (pool->buckets[i].idle)
            up_close(pool->buckets[i].idle);
    }
    free(pool);
    w->upstreams = NULL;
}
