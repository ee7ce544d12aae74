/*
 * Model requests: forward to the endpoint's upstreams and relay the answer.
 *
 * The path of one request:
 *   gpd_proxy_start   rewrite "model", build the upstream head, pick a target
 *   send_attempt      lean client (http://) or libcurl (https://)
 *   on_head           5xx/429 with another target left: retry; else send the
 *                     client's head (framing chosen here)
 *   on_payload/body   relay as bytes arrive (SSE included); usage observed
 *   on_done/on_error  finish, or retry / answer 502/503/504
 *
 * Nothing here blocks or takes a lock; the per-request state comes from
 * the worker's free list.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"
#include "core/sbuf.h"
#include "gateway/gateway.h"
#include "gateway/usage.h"
#include "http/curl_client.h"
#include "http/upstream.h"

enum relay_mode {
    RELAY_RAW = 0,     /* upstream body bytes as they came (Content-Length or chunked framing kept) */
    RELAY_WRAP,        /* decoded payload wrapped in our own chunks (length unknown) */
    RELAY_CLOSE        /* decoded payload, end marked by closing (HTTP/1.0 clients) */
};

typedef struct gpd_proxy {
    gpd_request_info info;      /* first: the exchange's handler points here */
    gpd_conn *conn;
    gpd_worker *w;
    const gpd_endpoint *ep;
    gpd_upstream *up;
    gpd_curl_req *creq;
    size_t cur_target;
    bool stale_retried;
    bool head_sent;
    bool done;
    bool stream;
    enum relay_mode mode;
    gpd_sbuf head;              /* upstream request head */
    gpd_sbuf resp_head;         /* the client's response head, sent with the first body bytes */
    bool resp_head_pending;
    char model_json[320];       /* the rewritten "model" value, or an inserted member */
    uv_buf_t bufs[4];
    unsigned nbufs;
    char *body_copy;            /* curl needs one contiguous body when rewritten */
    size_t body_copy_len;
    gpd_usage usage;
    struct gpd_proxy *next_free;
} gpd_proxy;

static const gpd_upstream_events proxy_events;

/* ---- per-request state ---- */

static gpd_proxy *proxy_get(gpd_worker *w)
{
    gpd_proxy *p = w->free_proxies;
    if (p) {
        w->free_proxies = p->next_free;
    } else {
        p = malloc(sizeof(*p));
        if (!p)
            return NULL;
        gpd_sbuf_init(&p->head, 0);
        gpd_sbuf_init(&p->resp_head, 0);
    }
    gpd_sbuf head = p->head, resp_head = p->resp_head;
    memset(p, 0, sizeof(*p));
    p->head = head;
    p->resp_head = resp_head;
    gpd_sbuf_reset(&p->head);
    gpd_sbuf_reset(&p->resp_head);
    p->w = w;
    return p;
}

static void proxy_put(gpd_proxy *p)
{
    gpd_worker *w = p->w;
    free(p->body_copy);
    p->body_copy = NULL;
    if (p->head.cap > 16384) /* do not keep an unusually large head around */
        gpd_sbuf_free(&p->head);
    if (p->resp_head.cap > 16384)
        gpd_sbuf_free(&p->resp_head);
    p->next_free = w->free_proxies;
    w->free_proxies = p;
}

static void detach_upstream(gpd_proxy *p)
{
    if (p->up) {
        gpd_upstream_abort(p->up);
        p->up = NULL;
    }
    if (p->creq) {
        gpd_curl_abort(p->creq);
        p->creq = NULL;
    }
}

/* The client left: drop the upstream request (this cancels it upstream). */
static void proxy_on_abort(gpd_conn *c)
{
    /* 499, as nginx logs a client that closed first. */
    if (!c->ex->status || !((gpd_proxy *)c->ex->handler)->done)
        c->ex->status = 499;
    gpd_gateway_request_done(c); /* releases the state, cancelling the upstream request */
}

static void proxy_on_drain(gpd_conn *c)
{
    gpd_proxy *p = c->ex->handler;
    if (p->up)
        gpd_upstream_resume(p->up);
    if (p->creq)
        gpd_curl_resume(p->creq);
}

/* Finish: the exchange ends; the state goes back with gpd_gateway_request_done. */
static void proxy_finish(gpd_proxy *p)
{
    gpd_conn *c = p->conn;
    p->done = true;
    p->info.prompt_tokens = p->usage.prompt_tokens;
    p->info.completion_tokens = p->usage.completion_tokens;
    gpd_conn_end(c);
}

static void proxy_error(gpd_proxy *p, int status, const char *type, const char *code, const char *msg)
{
    gpd_conn_respond_error(p->conn, status, type, code, "%s", msg);
}

/* ---- the upstream request ---- */

static bool in_list(gpd_str name, const gpd_str *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (name.len == list[i].len && strncasecmp(name.base, list[i].base, name.len) == 0)
            return true;
    return false;
}

static bool skip_request_header(gpd_str name, bool hosted)
{
    /* Hop-by-hop headers, framing we recompute, and what we set ourselves
     * (Accept-Encoding: usage is read from the body, so it must not be compressed). */
    static const gpd_str drop[] = { GPD_STR_LIT("host"), GPD_STR_LIT("content-length"),
                                    GPD_STR_LIT("transfer-encoding"), GPD_STR_LIT("connection"),
                                    GPD_STR_LIT("keep-alive"), GPD_STR_LIT("te"), GPD_STR_LIT("trailer"),
                                    GPD_STR_LIT("upgrade"), GPD_STR_LIT("proxy-connection"),
                                    GPD_STR_LIT("proxy-authorization"), GPD_STR_LIT("expect"),
                                    GPD_STR_LIT("accept-encoding") };
    static const gpd_str authorization = GPD_STR_LIT("authorization");
    if (in_list(name, drop, sizeof(drop) / sizeof(drop[0])))
        return true;
    /* The client's own key never reaches a hosted API: ours replaces it. */
    return hosted && in_list(name, &authorization, 1);
}

static size_t body_len_out(const gpd_proxy *p)
{
    size_t n = 0;
    for (unsigned i = 1; i < p->nbufs; i++)
        n += p->bufs[i].len;
    return n;
}

static int build_head(gpd_proxy *p, const gpd_target *t, gpd_str suffix, gpd_str query)
{
    gpd_conn *c = p->conn;
    const gpd_http_request *req = &c->ex->req;
    const gpd_table *tbl = p->info.pin->table;
    bool hosted = p->ep->spec.tier == GPD_TIER_HOSTED;
    gpd_sbuf *h = &p->head;
    h->len = 0;
    h->failed = false;
    h->max = 1 << 20;
    gpd_sbuf_append(h, req->method.base, req->method.len);
    gpd_sbuf_append(h, " ", 1);
    gpd_sbuf_append(h, t->base_path, t->base_path_len);
    gpd_sbuf_append(h, suffix.base, suffix.len);
    if (query.len) {
        gpd_sbuf_append(h, "?", 1);
        gpd_sbuf_append(h, query.base, query.len);
    }
    gpd_sbuf_puts(h, " HTTP/1.1\r\nHost: ");
    gpd_sbuf_puts(h, t->host_header);
    gpd_sbuf_puts(h, "\r\nContent-Length: ");
    gpd_sbuf_append_u64(h, body_len_out(p));
    gpd_sbuf_append(h, "\r\n", 2);
    if (hosted) {
        gpd_sbuf_puts(h, "Authorization: ");
        gpd_sbuf_append(h, tbl->openrouter_auth, tbl->openrouter_auth_len);
        gpd_sbuf_puts(h, "\r\nHTTP-Referer: https://github.com/gpuproxyd\r\nX-Title: gpuproxyd\r\n");
    }
    for (size_t i = 0; i < req->num_headers; i++) {
        const gpd_http_header *hd = &req->headers[i];
        if (skip_request_header(hd->name, hosted))
            continue;
        gpd_sbuf_append(h, hd->name.base, hd->name.len);
        gpd_sbuf_puts(h, ": ");
        gpd_sbuf_append(h, hd->value.base, hd->value.len);
        gpd_sbuf_puts(h, "\r\n");
    }
    gpd_sbuf_puts(h, "\r\n");
    return h->failed ? -1 : 0;
}

/* Split the body around "model" so that the upstream gets upstream_model,
 * without copying the body. */
static int plan_body(gpd_proxy *p, gpd_str model_value, bool has_model)
{
    gpd_exchange *ex = p->conn->ex;
    const gpd_endpoint *ep = p->ep;
    const char *want = ep->spec.upstream_model;
    char *body = ex->body;
    size_t len = ex->body_len;
    p->nbufs = 1; /* bufs[0] is the head, filled in later */
    if (len == 0) {
        return 0;
    }
    if (has_model && !want) {
        p->bufs[p->nbufs++] = uv_buf_init(body, (unsigned)len);
        return 0;
    }
    if (!want)
        want = ep->spec.name; /* a model port: the endpoint's own name stands in */
    if (has_model) {
        int n = snprintf(p->model_json, sizeof(p->model_json), "\"%s\"", want);
        if (n < 0 || (size_t)n >= sizeof(p->model_json))
            return -1;
        size_t pre = (size_t)(model_value.base - body);
        p->bufs[p->nbufs++] = uv_buf_init(body, (unsigned)pre);
        p->bufs[p->nbufs++] = uv_buf_init(p->model_json, (unsigned)n);
        p->bufs[p->nbufs++] = uv_buf_init(body + pre + model_value.len, (unsigned)(len - pre - model_value.len));
        return 0;
    }
    /* No "model" at all: insert it after the opening brace. */
    const char *brace = memchr(body, '{', len);
    if (!brace)
        return -1;
    const char *q = brace + 1;
    while (q < body + len && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
        q++;
    bool empty = q < body + len && *q == '}';
    int n = snprintf(p->model_json, sizeof(p->model_json), "\"model\":\"%s\"%s", want, empty ? "" : ",");
    if (n < 0 || (size_t)n >= sizeof(p->model_json))
        return -1;
    size_t pre = (size_t)(brace + 1 - body);
    p->bufs[p->nbufs++] = uv_buf_init(body, (unsigned)pre);
    p->bufs[p->nbufs++] = uv_buf_init(p->model_json, (unsigned)n);
    p->bufs[p->nbufs++] = uv_buf_init(body + pre, (unsigned)(len - pre));
    return 0;
}

/* Index of the first target at or after `from` that is not marked down; n when none. */
static size_t next_live_target(const gpd_proxy *p, size_t from)
{
    uint64_t now = gpd_worker_now(p->w);
    for (size_t i = from; i < p->ep->n_targets; i++)
        if (!gpd_target_is_down(p->ep->targets[i], now))
            return i;
    return p->ep->n_targets;
}

static void send_attempt(gpd_proxy *p);

static gpd_str request_suffix(const gpd_proxy *p)
{
    gpd_str path = p->conn->ex->req.path;
    return gpd_str_make(path.base + 3, path.len - 3); /* after "/v1" */
}

/* Nothing relayed yet: send the request to the next live upstream, if any. */
static bool retry_next_target(gpd_proxy *p)
{
    size_t next = next_live_target(p, p->cur_target + 1);
    if (next >= p->ep->n_targets)
        return false;
    detach_upstream(p);
    gpd_counter_add(&p->w->metrics->retries, 1);
    p->cur_target = next;
    p->stale_retried = false;
    send_attempt(p);
    return true;
}

static void fail_over(gpd_proxy *p, const char *why, int status, const char *code)
{
    if (!retry_next_target(p))
        proxy_error(p, status, status == 504 ? "timeout_error" : "upstream_error", code, why);
}

static void send_attempt(gpd_proxy *p)
{
    const gpd_target *t = p->ep->targets[p->cur_target];
    gpd_exchange *ex = p->conn->ex;
    p->info.upstream_url = t->url;
    gpd_usage_init(&p->usage);
    if (build_head(p, t, request_suffix(p), ex->req.query) != 0) {
        proxy_error(p, 500, "server_error", "internal_error", "request head too large to forward");
        return;
    }
    p->bufs[0] = uv_buf_init(p->head.data, (unsigned)p->head.len);
    bool head_req = gpd_str_eq_cstr(ex->req.method, "HEAD");
    if (!t->https) {
        if (!t->resolved) {
            gpd_counter_add(&p->w->metrics->upstream_errors[GPD_UPERR_CONNECT], 1);
            gpd_target_report((gpd_target *)t, false, gpd_worker_now(p->w));
            fail_over(p, "upstream host could not be resolved", 502, "upstream_unreachable");
            return;
        }
        p->up = gpd_upstream_send(p->w, (const struct sockaddr *)&t->addr, t->addrlen, head_req, p->bufs, p->nbufs,
                                  &proxy_events, p);
        if (!p->up)
            proxy_error(p, 500, "server_error", "internal_error", "out of memory");
        return;
    }
    /* https: libcurl wants the URL, headers as a list, and one body. */
    const gpd_config *cfg = ((gpd_gateway *)p->w->server)->cfg;
    char url[2048];
    gpd_str suffix = request_suffix(p);
    snprintf(url, sizeof(url), "https://%s%s%.*s%s%.*s", t->host_header, t->base_path, GPD_STR_FMT(suffix),
             ex->req.query.len ? "?" : "", GPD_STR_FMT(ex->req.query));
    struct curl_slist *hl = NULL;
    /* Our head minus its request line, Host and Content-Length: curl sets those. */
    const char *line = strstr(p->head.data, "\r\n") + 2;
    while (line && *line && !(line[0] == '\r' && line[1] == '\n')) {
        const char *eol = strstr(line, "\r\n");
        size_t ll = (size_t)(eol - line);
        if (!(ll >= 5 && !strncasecmp(line, "Host:", 5)) && !(ll >= 15 && !strncasecmp(line, "Content-Length:", 15))) {
            char tmp[8192];
            if (ll < sizeof(tmp)) {
                memcpy(tmp, line, ll);
                tmp[ll] = '\0';
                hl = curl_slist_append(hl, tmp);
            }
        }
        line = eol + 2;
    }
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */
    if (p->nbufs > 2 && !p->body_copy) {
        size_t n = body_len_out(p);
        p->body_copy = malloc(n ? n : 1);
        if (!p->body_copy) {
            curl_slist_free_all(hl);
            proxy_error(p, 500, "server_error", "internal_error", "out of memory");
            return;
        }
        size_t o = 0;
        for (unsigned i = 1; i < p->nbufs; i++) {
            memcpy(p->body_copy + o, p->bufs[i].base, p->bufs[i].len);
            o += p->bufs[i].len;
        }
        p->body_copy_len = n;
    }
    gpd_curl_opts o = {
        .method = "POST",
        .url = url,
        .headers = hl,
        .body = p->body_copy ? p->body_copy : (p->nbufs > 1 ? p->bufs[1].base : ""),
        .body_len = p->body_copy ? p->body_copy_len : body_len_out(p),
        .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
        .response_wait = &p->w->waits[GPD_WAIT_CURL_RESPONSE],
    };
    char method[16];
    snprintf(method, sizeof(method), "%.*s", GPD_STR_FMT(ex->req.method));
    o.method = method;
    p->creq = gpd_curl_send(p->w->curl, &o, &proxy_events, p);
    if (!p->creq)
        proxy_error(p, 500, "server_error", "internal_error", "could not start the upstream request");
}

void gpd_proxy_start(gpd_conn *c, gpd_table_pin *pin, const gpd_endpoint *ep)
{
    gpd_exchange *ex = c->ex;
    gpd_proxy *p = proxy_get(c->w);
    if (!p) {
        gpd_table_pin_release(c->w->tables, pin);
        gpd_conn_respond_error(c, 500, "server_error", "internal_error", "out of memory");
        return;
    }
    p->conn = c;
    p->ep = ep;
    p->info.ep = ep;
    p->info.pin = pin;
    ex->handler = p;
    ex->on_abort = proxy_on_abort;
    ex->on_drain = proxy_on_drain;

    if (ep->spec.tier == GPD_TIER_HOSTED && !pin->table->openrouter_auth) {
        gpd_conn_respond_error(c, 503, "service_unavailable", "missing_api_key",
                               "hosted model '%s' is unavailable: OPENROUTER_API_KEY is not set", ep->spec.name);
        return;
    }
    gpd_json_field fields[2] = { { .key = "model" }, { .key = "stream" } };
    if (ex->body_len > 0) {
        const char *why = NULL;
        size_t off = 0;
        if (gpd_json_scan_object(ex->body, ex->body_len, fields, 2, &why, &off) != 0) {
            gpd_conn_respond_error(c, 400, "invalid_request_error", "invalid_json",
                                   "request body is not valid JSON: %s at byte %zu", why, off);
            return;
        }
    }
    p->stream = fields[1].found && gpd_json_is_true(fields[1].value);
    if (plan_body(p, fields[0].value, fields[0].found) != 0) {
        gpd_conn_respond_error(c, 400, "invalid_request_error", "invalid_request", "cannot rewrite the model field");
        return;
    }
    size_t first = next_live_target(p, 0);
    if (first >= ep->n_targets) {
        gpd_conn_respond_error(c, 503, "service_unavailable", "no_upstream",
                               "no upstream available for model '%s': every upstream failed recently", ep->spec.name);
        return;
    }
    p->cur_target = first;
    send_attempt(p);
}

/* ---- the response ---- */

static bool skip_response_header(gpd_str name)
{
    static const gpd_str drop[] = { GPD_STR_LIT("connection"), GPD_STR_LIT("keep-alive"),
                                    GPD_STR_LIT("transfer-encoding"), GPD_STR_LIT("content-length"),
                                    GPD_STR_LIT("te"), GPD_STR_LIT("trailer"), GPD_STR_LIT("upgrade"),
                                    GPD_STR_LIT("proxy-connection") };
    return in_list(name, drop, sizeof(drop) / sizeof(drop[0]));
}

static int on_head(void *ctx, const gpd_http_response *res)
{
    gpd_proxy *p = ctx;
    gpd_conn *c = p->conn;
    gpd_target *t = p->ep->targets[p->cur_target];
    uint64_t now = gpd_worker_now(p->w);
    bool failed = res->status >= 500 || res->status == 429;

    if (failed) {
        gpd_counter_add(&p->w->metrics->upstream_errors[res->status == 429 ? GPD_UPERR_STATUS_429 : GPD_UPERR_STATUS_5XX], 1);
        gpd_target_report(t, false, now);
        if (retry_next_target(p))
            return -1; /* another upstream may answer; this answer is dropped */
    } else {
        gpd_target_report(t, true, now);
    }

    bool http10 = c->ex->req.minor_version == 0;
    enum gpd_http_body_kind kind = res->framing.body;
    bool from_curl = p->creq != NULL;
    gpd_sbuf *h = &p->resp_head;
    gpd_sbuf_reset(h);
    h->max = 64 * 1024;
    gpd_str reason = res->reason.len ? res->reason : gpd_str_from_cstr(gpd_http_reason(res->status));
    gpd_sbuf_append(h, "HTTP/1.1 ", 9);
    gpd_sbuf_append_u64(h, (unsigned)res->status);
    gpd_sbuf_append(h, " ", 1);
    gpd_sbuf_append(h, reason.base, reason.len);
    gpd_sbuf_append(h, "\r\n", 2);
    for (size_t i = 0; i < res->num_headers; i++) {
        const gpd_http_header *hd = &res->headers[i];
        if (skip_response_header(hd->name))
            continue;
        gpd_sbuf_append(h, hd->name.base, hd->name.len);
        gpd_sbuf_append(h, ": ", 2);
        gpd_sbuf_append(h, hd->value.base, hd->value.len);
        gpd_sbuf_append(h, "\r\n", 2);
    }
    if (kind == GPD_HTTP_BODY_LENGTH) {
        p->mode = RELAY_RAW;
        gpd_sbuf_puts(h, "Content-Length: ");
        gpd_sbuf_append_u64(h, (unsigned long long)res->framing.content_length);
        gpd_sbuf_append(h, "\r\n", 2);
    } else if (kind == GPD_HTTP_BODY_NONE) {
        p->mode = RELAY_RAW;
        if (res->status != 204 && res->status != 304)
            gpd_sbuf_puts(h, "Content-Length: 0\r\n");
    } else if (http10) {
        p->mode = RELAY_CLOSE;
        c->keep_alive = false;
    } else if (kind == GPD_HTTP_BODY_CHUNKED && !from_curl) {
        p->mode = RELAY_RAW; /* the upstream's chunks go through as they are */
        gpd_sbuf_puts(h, "Transfer-Encoding: chunked\r\n");
    } else {
        p->mode = RELAY_WRAP;
        gpd_sbuf_puts(h, "Transfer-Encoding: chunked\r\n");
    }
    if (!gpd_conn_keep_alive(c) || p->mode == RELAY_CLOSE)
        gpd_sbuf_puts(h, "Connection: close\r\n");
    gpd_sbuf_append(h, "\r\n", 2);
    if (h->failed) {
        detach_upstream(p);
        proxy_error(p, 502, "upstream_error", "upstream_failed", "upstream response head too large");
        return -1;
    }
    c->ex->status = res->status;
    p->head_sent = true;
    /* The head waits for the first body bytes, so that both leave in one write. */
    p->resp_head_pending = true;
    return 0;
}

/* Send bufs to the client, preceded by the response head if it has not left yet. */
static int relay(gpd_proxy *p, const uv_buf_t *bufs, unsigned n)
{
    uv_buf_t all[4];
    unsigned k = 0;
    if (p->resp_head_pending) {
        all[k++] = uv_buf_init(p->resp_head.data, (unsigned)p->resp_head.len);
        p->resp_head_pending = false;
    }
    for (unsigned i = 0; i < n && k < 4; i++)
        if (bufs[i].len)
            all[k++] = bufs[i];
    return k ? gpd_conn_send(p->conn, all, k) : 0;
}

static void on_payload(void *ctx, const char *data, size_t n)
{
    gpd_proxy *p = ctx;
    gpd_usage_feed(&p->usage, data, n);
    if (p->mode == RELAY_RAW || n == 0)
        return;
    if (p->mode == RELAY_WRAP) {
        char pre[24];
        int pl = snprintf(pre, sizeof(pre), "%zx\r\n", n);
        uv_buf_t b[3] = { uv_buf_init(pre, (unsigned)pl), uv_buf_init((char *)data, (unsigned)n),
                          uv_buf_init("\r\n", 2) };
        relay(p, b, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
        relay(p, &b, 1);
    }
}

static int on_body(void *ctx, const char *raw, size_t n)
{
    gpd_proxy *p = ctx;
    gpd_conn *c = p->conn;
    /* RAW relays these bytes; the other modes relayed the payload already,
     * but a head still pending (no body bytes yet) leaves now. */
    uv_buf_t b = uv_buf_init((char *)raw, (unsigned)(p->mode == RELAY_RAW ? n : 0));
    if (relay(p, &b, 1) != 0)
        return -1;
    if (c->closing)
        return -1;
    return gpd_conn_pending(c) > GPD_OUT_HIGH_WATER ? 1 : 0;
}

static void on_done(void *ctx)
{
    gpd_proxy *p = ctx;
    p->up = NULL;
    p->creq = NULL;
    uv_buf_t b = uv_buf_init("0\r\n\r\n", p->mode == RELAY_WRAP ? 5 : 0);
    relay(p, &b, 1);
    if (p->mode == RELAY_CLOSE)
        p->conn->keep_alive = false;
    proxy_finish(p);
}

static void on_error(void *ctx, enum gpd_upstream_error_kind kind, bool received, bool reused)
{
    gpd_proxy *p = ctx;
    gpd_target *t = p->ep->targets[p->cur_target];
    p->up = NULL;
    p->creq = NULL;
    if (!received && reused && !p->stale_retried && !p->head_sent) {
        /* A pooled connection the server had closed: not the upstream's fault. */
        p->stale_retried = true;
        send_attempt(p);
        return;
    }
    gpd_counter_add(&p->w->metrics->upstream_errors[kind], 1);
    if (p->head_sent) {
        /* Mid-response: the client cannot be told with a status; cut the
         * connection so that it sees the answer is incomplete. */
        gpd_target_report(t, false, gpd_worker_now(p->w));
        p->conn->keep_alive = false;
        gpd_conn_close(p->conn);
        return;
    }
    if (kind == GPD_UPERR_TIMEOUT) {
        gpd_target_report(t, false, gpd_worker_now(p->w));
        char msg[256];
        snprintf(msg, sizeof(msg), "upstream %s did not answer within upstream_timeout", t->url);
        proxy_error(p, 504, "timeout_error", "upstream_timeout", msg);
        return;
    }
    gpd_target_report(t, false, gpd_worker_now(p->w));
    char msg[256];
    snprintf(msg, sizeof(msg), "upstream %s failed: %s", t->url, gpd_upstream_error_name(kind));
    fail_over(p, msg, 502, "upstream_failed");
}

static const gpd_upstream_events proxy_events = {
    .on_head = on_head,
    .on_payload = on_payload,
    .on_body = on_body,
    .on_done = on_done,
    .on_error = on_error,
};

void gpd_proxy_release(gpd_conn *c)
{
    gpd_proxy *p = c->ex->handler;
    if (!p)
        return;
    detach_upstream(p);
    c->ex->handler = NULL;
    proxy_put(p);
}

void gpd_proxy_free_list(gpd_worker *w)
{
    while (w->free_proxies) {
        gpd_proxy *p = w->free_proxies;
        w->free_proxies = p->next_free;
        gpd_sbuf_free(&p->head);
        gpd_sbuf_free(&p->resp_head);
        free(p);
    }
}
