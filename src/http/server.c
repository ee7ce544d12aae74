#include "http/server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "metrics/metrics.h"

enum phase { PHASE_HEAD = 0, PHASE_BODY, PHASE_SERVING };

static void conn_closed(uv_handle_t *h);
void gpd_server_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void process_input(gpd_conn *c);

static gpd_server *server_of(gpd_conn *c)
{
    return c->w->server;
}

/* ---- buffers ---- */

static void in_release(gpd_conn *c)
{
    if (!c->in)
        return;
    if (c->in_cap == GPD_BUF_SIZE)
        gpd_worker_buf_put(c->w, c->in);
    else
        free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

/* Grow the input buffer to at least want bytes (never above the caps the caller checked). */
static int in_grow(gpd_conn *c, size_t want)
{
    if (want <= c->in_cap)
        return 0;
    size_t cap = c->in_cap * 2;
    if (cap < want)
        cap = want;
    char *p;
    if (c->in_cap == GPD_BUF_SIZE) {
        p = malloc(cap);
        if (!p)
            return -1;
        memcpy(p, c->in, c->in_len);
        gpd_worker_buf_put(c->w, c->in);
    } else {
        p = realloc(c->in, cap);
        if (!p)
            return -1;
    }
    if (p != c->in && c->phase != PHASE_HEAD)
        c->head_moved = true;
    c->in = p;
    c->in_cap = (uint32_t)cap;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gpd_conn *c = h->data;
    if (!c->in) {
        c->in = gpd_worker_buf_get(c->w);
        c->in_cap = c->in ? GPD_BUF_SIZE : 0;
        c->in_len = 0;
    }
    buf->base = c->in ? c->in + c->in_len : NULL;
    buf->len = c->in ? c->in_cap - c->in_len : 0;
}

/* ---- output ---- */

static void on_write(uv_write_t *req, int status);

static void flush_out(gpd_conn *c)
{
    if (c->writing || c->out_len == 0 || c->closing)
        return;
    /* The accumulating buffer becomes the busy one; new output starts a fresh buffer. */
    c->out_busy = c->out;
    c->out_busy_len = c->out_len;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    uv_buf_t b = uv_buf_init(c->out_busy, (unsigned)c->out_busy_len);
    c->writing = true;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writing = false;
        gpd_conn_close(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    gpd_conn *c = req->data;
    c->writing = false;
    free(c->out_busy);
    c->out_busy = NULL;
    c->out_busy_len = 0;
    if (status < 0 || c->closing) {
        gpd_conn_close(c);
        return;
    }
    if (c->out_len > 0) {
        flush_out(c);
        return;
    }
    if (c->close_after_write) {
        gpd_conn_close(c);
        return;
    }
    if (c->ex && c->ex->on_drain)
        c->ex->on_drain(c);
}

int gpd_conn_send(gpd_conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing)
        return -1;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (c->ex)
        c->ex->bytes_out += total;
    size_t done = 0;
    if (!c->writing && c->out_len == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r >= 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN) {
            gpd_conn_close(c);
            return -1;
        }
        if (done == total)
            return 0;
    }
    /* Copy what the socket did not take. */
    size_t rest = total - done;
    if (c->out_len + rest > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + rest)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            gpd_conn_close(c);
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    size_t skip = done;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(c->out + c->out_len, bufs[i].base + skip, len - skip);
        c->out_len += len - skip;
        skip = 0;
    }
    flush_out(c);
    return 0;
}

/* ---- lifecycle ---- */

void gpd_server_accept(gpd_worker *w, int fd, gpd_listener *l)
{
    gpd_conn *c = w->free_conns;
    if (c) {
        w->free_conns = c->next;
    } else {
        c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
    }
    uint64_t serial = c->serial;
    memset(c, 0, sizeof(*c));
    c->serial = serial + 1;
    c->w = w;
    c->port = (uint16_t)l->port;
    c->is_main = l->is_main;
    c->keep_alive = true;
    if (uv_tcp_init(&w->loop, &c->tcp) != 0 || uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        c->next = w->free_conns;
        w->free_conns = c;
        return;
    }
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    gpd_counter_add(&w->metrics->open_connections_opened, 1);
    gpd_deadline_arm(&w->waits[GPD_WAIT_HEADER], &c->wait, gpd_worker_now(w));
    c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, gpd_server_on_read) == 0;
    if (!c->reading)
        gpd_conn_close(c);
}

/* Exchanges come from the worker's free list: no malloc per request. */
static gpd_exchange *exchange_get(gpd_worker *w)
{
    gpd_exchange *ex = w->free_exchanges;
    if (ex) {
        w->free_exchanges = ex->next_free;
        return ex;
    }
    return malloc(sizeof(*ex));
}

static void exchange_put(gpd_worker *w, gpd_exchange *ex)
{
    ex->next_free = w->free_exchanges;
    w->free_exchanges = ex;
}

static void exchange_free(gpd_conn *c)
{
    gpd_exchange *ex = c->ex;
    c->ex = NULL;
    if (ex)
        exchange_put(c->w, ex);
}

static void pending_free(gpd_conn *c)
{
    if (c->ex_pending)
        exchange_put(c->w, c->ex_pending);
    c->ex_pending = NULL;
}

void gpd_conn_close(gpd_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    gpd_deadline_cancel(&c->wait);
    if (c->ex) {
        if (c->ex->on_abort)
            c->ex->on_abort(c);
        exchange_free(c);
    }
    pending_free(c);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void conn_closed(uv_handle_t *h)
{
    gpd_conn *c = h->data;
    gpd_worker *w = c->w;
    in_release(c);
    free(c->out);
    free(c->out_busy);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    gpd_counter_add(&w->metrics->open_connections_closed, 1);
    c->serial++;
    c->next = w->free_conns;
    w->free_conns = c;
}

size_t gpd_server_open_connections(const gpd_worker *w)
{
    return w->n_conns;
}

void gpd_server_drain(gpd_worker *w)
{
    for (gpd_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (!c->ex && !c->closing)
            gpd_conn_close(c);
    }
}

void gpd_server_header_expired(gpd_deadline *d)
{
    gpd_conn *c = gpd_container_of(d, gpd_conn, wait);
    if (c->in_len > 0 && !c->ex) {
        /* Part of a request arrived, but not all of it in time. */
        static const char resp[] = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                                   "Content-Length: 96\r\nConnection: close\r\n\r\n"
                                   "{\"error\":{\"message\":\"request not received in time\",\"type\":\"invalid_request_error\",\"code\":408}}";
        uv_buf_t b = uv_buf_init((char *)resp, sizeof(resp) - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    gpd_conn_close(c);
}

void gpd_server_idle_expired(gpd_deadline *d)
{
    gpd_conn_close(gpd_container_of(d, gpd_conn, wait));
}

/* ---- responses ---- */

void gpd_conn_respond(gpd_conn *c, int status, const char *content_type, const char *extra_headers,
                      const char *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     gpd_http_reason(status), content_type, len, extra_headers ? extra_headers : "",
                     gpd_conn_keep_alive(c) ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof(head))
        n = 0;
    uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len) };
    if (c->ex)
        c->ex->status = status;
    gpd_conn_send(c, bufs, len ? 2 : 1);
    gpd_conn_end(c);
}

static size_t format_error(char *out, size_t outlen, int status, const char *type, const char *code,
                           const char *msg)
{
    char esc[1024];
    gpd_json_escape(esc, sizeof(esc), msg, strlen(msg));
    int n;
    if (code)
        n = snprintf(out, outlen, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":\"%s\"}}", esc, type,
                     code);
    else
        n = snprintf(out, outlen, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":%d}}", esc, type,
                     status);
    return n < 0 ? 0 : (size_t)n < outlen ? (size_t)n : outlen - 1;
}

void gpd_conn_respond_error(gpd_conn *c, int status, const char *type, const char *code, const char *fmt, ...)
{
    char msg[512], body[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t n = format_error(body, sizeof(body), status, type, code, msg);
    gpd_conn_respond(c, status, "application/json", NULL, body, n);
}

/* An error found while framing the request: answer and close, since the
 * stream can no longer be trusted to find the next request. */
static void reject(gpd_conn *c, int status, const char *code, const char *msg)
{
    char body[1024], head[256];
    size_t n = format_error(body, sizeof(body), status, "invalid_request_error", code, msg);
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, gpd_http_reason(status), n);
    uv_buf_t bufs[2] = { uv_buf_init(head, (unsigned)hn), uv_buf_init(body, (unsigned)n) };
    gpd_deadline_cancel(&c->wait);
    c->close_after_write = true;
    c->keep_alive = false;
    if (uv_is_active((uv_handle_t *)&c->tcp) && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    gpd_log_debug("request refused", "\"status\":%d,\"reason\":\"%s\"", status, msg);
    if (gpd_conn_send(c, bufs, 2) == 0 && !c->writing && c->out_len == 0)
        gpd_conn_close(c);
}

/* ---- requests ---- */

static int start_exchange(gpd_conn *c)
{
    gpd_exchange *ex = exchange_get(c->w);
    if (!ex)
        return -1;
    memset(ex, 0, offsetof(gpd_exchange, headers));
    ex->body = NULL;
    ex->body_len = 0;
    ex->bytes_out = 0;
    ex->handler = NULL;
    ex->on_abort = NULL;
    ex->on_drain = NULL;
    c->ex = ex;
    return 0;
}

static void request_ready(gpd_conn *c, char *body, size_t body_len)
{
    gpd_exchange *ex = c->ex;
    const char *why = NULL;
    if (c->head_moved) {
        /* The buffer moved while the body arrived: point the head at it again. */
        gpd_http_parse_request(c->in, c->head_len, &ex->req, ex->headers, GPD_MAX_HEADERS, &why);
        c->head_moved = false;
    }
    ex->body = body;
    ex->body_len = body_len;
    ex->start_ns = uv_hrtime();
    c->phase = PHASE_SERVING;
    c->keep_alive = ex->req.framing.keep_alive;
    c->serial++;
    gpd_deadline_cancel(&c->wait);
    server_of(c)->on_request(c);
}

static void process_input(gpd_conn *c)
{
    gpd_server *s = server_of(c);
    while (!c->closing && !c->ex && c->in_len > 0 && !c->close_after_write) {
        if (c->phase == PHASE_HEAD) {
            gpd_http_request req;
            gpd_http_header *hdrs;
            const char *why = "malformed request";
            if (start_exchange(c) != 0) {
                gpd_conn_close(c);
                return;
            }
            hdrs = c->ex->headers;
            int r = gpd_http_parse_request(c->in, c->in_len, &req, hdrs, GPD_MAX_HEADERS, &why);
            if (r == GPD_HTTP_INCOMPLETE) {
                exchange_free(c);
                if (c->in_len >= s->limits.max_header_bytes) {
                    reject(c, 431, "headers_too_large", "request header block exceeds max_header_bytes");
                    return;
                }
                if (c->in_len == c->in_cap && in_grow(c, s->limits.max_header_bytes) != 0)
                    gpd_conn_close(c);
                return;
            }
            if (r == GPD_HTTP_TOO_MANY_HEADERS || (r > 0 && (uint64_t)r > s->limits.max_header_bytes)) {
                exchange_free(c);
                reject(c, 431, "headers_too_large", r > 0 ? "request header block exceeds max_header_bytes"
                                                          : "too many request headers");
                return;
            }
            if (r < 0) {
                exchange_free(c);
                reject(c, 400, "bad_request", why);
                return;
            }
            c->ex->req = req;
            c->head_len = (uint32_t)r;
            if (req.framing.upgrade) {
                exchange_free(c);
                reject(c, 400, "bad_request", "protocol upgrade is not supported");
                return;
            }
            if (req.framing.body == GPD_HTTP_BODY_LENGTH && req.framing.content_length > s->limits.max_body) {
                exchange_free(c);
                reject(c, 413, "request_too_large", "request body exceeds max_body");
                return;
            }
            c->phase = PHASE_BODY;
            c->sent_continue = false;
            gpd_http_chunked_init(&c->chunked);
            c->raw_end = c->head_len;
            /* Body bookkeeping continues below; the exchange stays but is not "served" yet.
             * Detach it so the loop guard (!c->ex) keeps framing. */
            gpd_exchange *ex = c->ex;
            c->ex = NULL;
            c->ex_pending = ex;
        }
        /* PHASE_BODY */
        gpd_exchange *ex = c->ex_pending;
        gpd_http_framing *fr = &ex->req.framing;
        if (fr->body == GPD_HTTP_BODY_NONE) {
            c->request_end = c->head_len;
            c->ex = ex;
            c->ex_pending = NULL;
            request_ready(c, c->in + c->head_len, 0);
            return;
        }
        if (fr->body == GPD_HTTP_BODY_LENGTH) {
            size_t need = c->head_len + (size_t)fr->content_length;
            if (c->in_len >= need) {
                c->request_end = (uint32_t)need;
                c->ex = ex;
                c->ex_pending = NULL;
                request_ready(c, c->in + c->head_len, (size_t)fr->content_length);
                return;
            }
            if (fr->expect_continue && !c->sent_continue) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
                c->sent_continue = true;
                gpd_conn_send(c, &b, 1);
            }
            if (in_grow(c, need) != 0)
                gpd_conn_close(c);
            return;
        }
        /* Chunked: decode in place behind the head; decoded bytes never
         * overtake the raw bytes still to be read. */
        size_t decoded = c->chunked.total;
        for (;;) {
            size_t consumed = 0, off = 0, dlen = 0;
            const char *why = "bad chunked encoding";
            enum gpd_chunked_result r = gpd_http_chunked_step(&c->chunked, c->in + c->raw_end,
                                                              c->in_len - c->raw_end, &consumed, &off, &dlen, &why);
            if (r == GPD_CHUNKED_ERROR) {
                pending_free(c);
                reject(c, 400, "bad_request", why);
                return;
            }
            if (r == GPD_CHUNKED_DATA) {
                if (decoded + dlen > s->limits.max_body) {
                    pending_free(c);
                    reject(c, 413, "request_too_large", "request body exceeds max_body");
                    return;
                }
                memmove(c->in + c->head_len + decoded, c->in + c->raw_end + off, dlen);
                decoded += dlen;
            }
            c->raw_end += (uint32_t)consumed;
            if (r == GPD_CHUNKED_DONE) {
                c->request_end = c->raw_end;
                c->ex = ex;
                c->ex_pending = NULL;
                request_ready(c, c->in + c->head_len, decoded);
                return;
            }
            if (r == GPD_CHUNKED_AGAIN)
                break;
        }
        if (fr->expect_continue && !c->sent_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
            c->sent_continue = true;
            gpd_conn_send(c, &b, 1);
        }
        if (c->in_len == c->in_cap) {
            size_t cap_limit = s->limits.max_header_bytes + s->limits.max_body + 65536;
            if (c->in_cap >= cap_limit) {
                pending_free(c);
                reject(c, 413, "request_too_large", "request body exceeds max_body");
                return;
            }
            size_t want = (size_t)c->in_cap * 2 < cap_limit ? (size_t)c->in_cap * 2 : cap_limit;
            if (in_grow(c, want) != 0)
                gpd_conn_close(c);
        }
        return;
    }
}

void gpd_server_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    gpd_conn *c = st->data;
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        /* The buffer is full while a request is served: wait for its end. */
        uv_read_stop(st);
        c->reading = false;
        return;
    }
    if (nread < 0) {
        /* EOF or error: a client that leaves mid-request cancels it. */
        gpd_conn_close(c);
        return;
    }
    if (c->close_after_write)
        return; /* a refused request: nothing more is read */
    if (c->in_len == 0 && !c->ex && c->wait.list == &c->w->waits[GPD_WAIT_IDLE])
        gpd_deadline_arm(&c->w->waits[GPD_WAIT_HEADER], &c->wait, gpd_worker_now(c->w));
    c->in_len += (uint32_t)nread;
    if (c->ex) {
        /* Pipelined bytes arrive while a request is served: keep them, but
         * stop reading once the buffer is full (it must not move now). */
        if (c->in_len == c->in_cap) {
            uv_read_stop(st);
            c->reading = false;
        }
        return;
    }
    process_input(c);
    /* A request that filled the buffer exactly: libuv would ask for more room
     * at once, and there is none until the response ends. */
    if (!c->closing && c->reading && c->in && c->in_len == c->in_cap) {
        uv_read_stop(st);
        c->reading = false;
    }
}

void gpd_conn_end(gpd_conn *c)
{
    gpd_server *s = server_of(c);
    gpd_worker *w = c->w;
    if (!c->ex)
        return;
    s->on_request_done(c);
    exchange_free(c);
    if (c->closing)
        return;
    if (!gpd_conn_keep_alive(c)) {
        c->close_after_write = true;
        if (!c->writing && c->out_len == 0)
            gpd_conn_close(c);
        return;
    }
    /* Keep what the client already sent after this request. */
    size_t rest = c->in_len > c->request_end ? c->in_len - c->request_end : 0;
    if (rest > 0) {
        memmove(c->in, c->in + c->request_end, rest);
        c->in_len = (uint32_t)rest;
    } else {
        in_release(c);
    }
    c->phase = PHASE_HEAD;
    c->head_len = c->request_end = c->raw_end = 0;
    if (!c->reading) {
        c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, gpd_server_on_read) == 0;
        if (!c->reading) {
            gpd_conn_close(c);
            return;
        }
    }
    if (rest > 0) {
        gpd_deadline_arm(&w->waits[GPD_WAIT_HEADER], &c->wait, gpd_worker_now(w));
        process_input(c);
    } else {
        gpd_deadline_arm(&w->waits[GPD_WAIT_IDLE], &c->wait, gpd_worker_now(w));
    }
}
