/*
 * The HTTP call (http_call.h), and below it the plumbing every remote
 * provider's operations share on top of it (providers_internal.h): an op's
 * creation, its one report to the user, its deferred failure and its
 * authenticated sends.
 */
#include "compute/providers/http_call.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "compute/providers/providers_internal.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "metrics/metrics.h"

#define MAX_SLIST_HEADERS (GPD_HTTP_CALL_MAX_HEADERS + 2)

struct gpd_http_call {
    uv_loop_t *loop;
    gpd_curl *curl;
    uv_timer_t timer;           /* first-try delay, backoff, deferred failure */
    gpd_curl_req *req;          /* the try in flight, NULL between tries */
    char *method, *url, *body;
    size_t body_len;
    char *headers[MAX_SLIST_HEADERS];
    size_t nheaders;
    bool idempotent;
    int tries, n429, nretried;
    int status;
    int64_t retry_after_ms;     /* -1: the last response had none */
    gpd_sbuf resp;
    gpd_http_call_cb cb;
    void *ctx;
    bool fail_pending;          /* the timer reports fail_err instead of sending */
    enum gpd_prov_err fail_err;
    char msg[320];
    bool in_callback;
};

static void send_try(gpd_http_call *c);

uint64_t gpd_http_backoff_ms(int tries)
{
    double ms = GPD_HTTP_CALL_BACKOFF_MS;
    for (int i = 1; i < tries; i++)
        ms *= 1.5;
    return (uint64_t)ms;
}

int64_t gpd_http_parse_retry_after(const char *value, size_t len, time_t now)
{
    char buf[64];
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, value, len);
    buf[len] = '\0';
    bool digits = true;
    for (size_t i = 0; i < len; i++)
        digits &= isdigit((unsigned char)buf[i]) != 0;
    if (digits)
        return len > 9 ? -1 : (int64_t)strtol(buf, NULL, 10) * 1000;
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    return t <= now ? 0 : (int64_t)(t - now) * 1000;
}

char *gpd_http_escape(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    if (outlen == 0)
        return out;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            if (n + 1 >= outlen)
                break;
            out[n++] = (char)ch;
        } else {
            if (n + 3 >= outlen)
                break;
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
    return out;
}

static bool body_has(const char *body, size_t len, const char *needle)
{
    return body && len && memmem(body, len, needle, strlen(needle)) != NULL;
}

enum gpd_prov_err gpd_http_classify(int status, const char *body, size_t len)
{
    /* Google answers both quota and request-rate limits as RESOURCE_EXHAUSTED;
     * the ErrorInfo reason tells them apart when present. */
    bool rate = body_has(body, len, "RATE_LIMIT_EXCEEDED") || body_has(body, len, "rateLimitExceeded");
    bool quota = body_has(body, len, "quotaExceeded") || (!rate && body_has(body, len, "RESOURCE_EXHAUSTED"));
    if (status >= 200 && status < 300)
        return GPD_PROV_OK;
    switch (status) {
    case 401:
        return GPD_PROV_AUTH;
    case 403:
        return quota ? GPD_PROV_QUOTA : GPD_PROV_AUTH;
    case 429:
        return quota ? GPD_PROV_QUOTA : GPD_PROV_RATE_LIMITED;
    case 400:
    case 422:
        return GPD_PROV_BAD_REQUEST;
    case 404:
    case 410:
        return GPD_PROV_NOT_FOUND;
    case 408:
        return GPD_PROV_TRANSIENT;
    default:
        return status >= 500 && status < 600 ? GPD_PROV_TRANSIENT : GPD_PROV_FAILED;
    }
}

/* Copy s into out as one printable line. */
static void put_line(char *out, size_t outlen, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[k++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    out[k] = '\0';
}

void gpd_http_error_message(const json_t *json, const char *body, size_t len, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    out[0] = '\0';
    if (json_is_object(json)) {
        const json_t *detail = json_object_get(json, "detail");
        const json_t *error = json_object_get(json, "error");
        const char *msg = json_string_value(json_object_get(json, "msg"));
        const char *message = json_string_value(json_object_get(json, "message"));
        if (json_is_string(detail)) {
            put_line(out, outlen, json_string_value(detail), json_string_length(detail));
            return;
        }
        if (json_is_array(detail) && json_array_size(detail) > 0) {
            /* FastAPI 422: [{"loc":["body","hardware_id"],"msg":"field required","type":...}] */
            const json_t *d0 = json_array_get(detail, 0);
            const char *m = json_string_value(json_object_get(d0, "msg"));
            const json_t *loc = json_object_get(d0, "loc");
            char where[128] = "";
            size_t w = 0, i;
            const json_t *part;
            json_array_foreach(loc, i, part)
            {
                char one[48];
                if (json_is_string(part))
                    snprintf(one, sizeof(one), "%s", json_string_value(part));
                else if (json_is_integer(part))
                    snprintf(one, sizeof(one), "%lld", (long long)json_integer_value(part));
                else
                    continue;
                int k = snprintf(where + w, sizeof(where) - w, "%s%s", w ? "." : "", one);
                if (k < 0 || (size_t)k >= sizeof(where) - w)
                    break;
                w += (size_t)k;
            }
            char line[320];
            snprintf(line, sizeof(line), "%s%s%s%s", m ? m : "invalid request", w ? " (" : "", where, w ? ")" : "");
            put_line(out, outlen, line, strlen(line));
            return;
        }
        if (json_is_object(error)) {
            const char *m = json_string_value(json_object_get(error, "message"));
            if (m) {
                put_line(out, outlen, m, strlen(m));
                return;
            }
        }
        if (json_is_string(error)) {
            /* Vast {"error":"no_such_ask","msg":...}; OAuth {"error":"invalid_grant","error_description":...} */
            char line[320];
            const char *desc = json_string_value(json_object_get(json, "error_description"));
            const char *more = msg ? msg : message ? message : desc;
            snprintf(line, sizeof(line), "%s%s%s", json_string_value(error), more ? ": " : "", more ? more : "");
            put_line(out, outlen, line, strlen(line));
            return;
        }
        if (msg || message) {
            const char *m = msg ? msg : message;
            put_line(out, outlen, m, strlen(m));
            return;
        }
    }
    put_line(out, outlen, body ? body : "", body ? (len < 200 ? len : 200) : 0);
}

/* ---- the call ---- */

static void call_closed(uv_handle_t *h)
{
    free(h->data);
}

static void call_free(gpd_http_call *c)
{
    uv_timer_stop(&c->timer);
    for (size_t i = 0; i < c->nheaders; i++)
        free(c->headers[i]);
    free(c->method);
    free(c->url);
    free(c->body);
    gpd_sbuf_free(&c->resp);
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

static void deliver(gpd_http_call *c, enum gpd_prov_err err, const char *msg)
{
    gpd_http_reply r = { 0 };
    json_error_t jerr;
    r.status = c->status;
    r.body = c->resp.data ? c->resp.data : "";
    r.body_len = c->resp.len;
    r.json = r.body_len ? json_loadb(r.body, r.body_len, 0, &jerr) : NULL;
    r.err = err;
    r.tries = c->tries;
    if (msg) {
        if (msg != c->msg)
            snprintf(c->msg, sizeof(c->msg), "%s", msg);
    } else if (err != GPD_PROV_OK) {
        char m[256];
        gpd_http_error_message(r.json, r.body, r.body_len, m, sizeof(m));
        snprintf(c->msg, sizeof(c->msg), "HTTP %d%s%s", c->status, m[0] ? ": " : "", m);
    } else {
        c->msg[0] = '\0';
    }
    r.msg = c->msg;
    c->in_callback = true;
    c->cb(c->ctx, &r);
    json_decref(r.json);
    call_free(c);
}

static void on_timer(uv_timer_t *t)
{
    gpd_http_call *c = t->data;
    if (c->fail_pending)
        deliver(c, c->fail_err, c->msg);
    else
        send_try(c);
}

static void retry_after(gpd_http_call *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void fail_later(gpd_http_call *c, enum gpd_prov_err err, const char *msg)
{
    c->fail_pending = true;
    c->fail_err = err;
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

static int on_head(void *ctx, const gpd_http_response *res)
{
    gpd_http_call *c = ctx;
    c->status = res->status;
    const gpd_http_header *h = gpd_http_find_header(res->headers, res->num_headers, "Retry-After");
    c->retry_after_ms = h ? gpd_http_parse_retry_after(h->value.base, h->value.len, time(NULL)) : -1;
    return 0;
}

static void on_payload(void *ctx, const char *p, size_t n)
{
    gpd_http_call *c = ctx;
    gpd_sbuf_append(&c->resp, p, n);
}

static int on_body(void *ctx, const char *raw, size_t n)
{
    return 0;
}

static void on_done(void *ctx)
{
    gpd_http_call *c = ctx;
    c->req = NULL;
    if (c->resp.failed) {
        deliver(c, GPD_PROV_FAILED, "response body too large or out of memory");
        return;
    }
    /* A quota (not a request rate) does not clear in a second: no retry. */
    bool quota = c->status == 429 && gpd_http_classify(c->status, c->resp.data, c->resp.len) == GPD_PROV_QUOTA;
    if (c->status == 429 && !quota && ++c->n429 < GPD_HTTP_CALL_TRIES_429) {
        int64_t wait = (int64_t)gpd_http_backoff_ms(c->tries);
        if (c->retry_after_ms > GPD_HTTP_CALL_MAX_RETRY_AFTER_MS) {
            deliver(c, gpd_http_classify(c->status, c->resp.data, c->resp.len), NULL);
            return;
        }
        if (c->retry_after_ms > wait)
            wait = c->retry_after_ms;
        gpd_log_debug("provider API rate limited, retrying", "\"url\":\"%.200s\",\"wait_ms\":%lld", c->url,
                      (long long)wait);
        retry_after(c, (uint64_t)wait);
        return;
    }
    bool server_error = c->status == 408 || (c->status >= 500 && c->status < 600);
    if (server_error && c->idempotent && c->nretried < GPD_HTTP_CALL_RETRIES_5XX) {
        c->nretried++;
        retry_after(c, gpd_http_backoff_ms(c->tries));
        return;
    }
    deliver(c, gpd_http_classify(c->status, c->resp.data, c->resp.len), NULL);
}

static void on_error(void *ctx, enum gpd_upstream_error_kind kind, bool received, bool reused)
{
    gpd_http_call *c = ctx;
    c->req = NULL;
    /* A connection that was never made carried nothing: always safe to repeat. */
    bool safe = kind == GPD_UPERR_CONNECT || c->idempotent;
    if (safe && c->nretried < GPD_HTTP_CALL_RETRIES_5XX) {
        c->nretried++;
        retry_after(c, gpd_http_backoff_ms(c->tries));
        return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "%s: %s", kind == GPD_UPERR_TIMEOUT ? "timed out" : "request failed",
             gpd_upstream_error_name(kind));
    c->status = 0;
    gpd_sbuf_reset(&c->resp);
    deliver(c, GPD_PROV_TRANSIENT, msg);
}

static const gpd_upstream_events events = { on_head, on_payload, on_body, on_done, on_error };

static void send_try(gpd_http_call *c)
{
    struct curl_slist *list = NULL;
    c->tries++;
    c->status = 0;
    c->retry_after_ms = -1;
    gpd_sbuf_reset(&c->resp);
    for (size_t i = 0; i < c->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(list, c->headers[i]);
        if (!l) {
            curl_slist_free_all(list);
            fail_later(c, GPD_PROV_FAILED, "out of memory");
            return;
        }
        list = l;
    }
    gpd_curl_opts o = {
        .method = c->method,
        .url = c->url,
        .headers = list,
        .body = c->body,
        .body_len = c->body_len,
        .connect_timeout_ms = GPD_HTTP_CALL_CONNECT_TIMEOUT_MS,
        .total_timeout_ms = GPD_HTTP_CALL_TOTAL_TIMEOUT_MS,
    };
    c->req = gpd_curl_send(c->curl, &o, &events, c);
    if (!c->req)
        fail_later(c, GPD_PROV_FAILED, "could not start the request");
}

static gpd_http_call *call_new(uv_loop_t *loop, gpd_http_call_cb cb, void *ctx)
{
    gpd_http_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->cb = cb;
    c->ctx = ctx;
    c->retry_after_ms = -1;
    gpd_sbuf_init(&c->resp, GPD_HTTP_CALL_MAX_BODY);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    return c;
}

static int add_header(gpd_http_call *c, const char *line)
{
    if (c->nheaders >= MAX_SLIST_HEADERS)
        return -1;
    c->headers[c->nheaders] = strdup(line);
    if (!c->headers[c->nheaders])
        return -1;
    c->nheaders++;
    return 0;
}

gpd_http_call *gpd_http_call_start(uv_loop_t *loop, gpd_curl *curl, const gpd_http_call_opts *o,
                                   gpd_http_call_cb cb, void *ctx)
{
    gpd_http_call *c = call_new(loop, cb, ctx);
    if (!c)
        return NULL;
    c->curl = curl;
    c->idempotent = o->idempotent;
    c->method = strdup(o->method);
    c->url = strdup(o->url);
    bool ok = c->method && c->url;
    if (ok && o->body) {
        c->body = malloc(o->body_len + 1);
        ok = c->body != NULL;
        if (ok) {
            memcpy(c->body, o->body, o->body_len);
            c->body[o->body_len] = '\0';
            c->body_len = o->body_len;
        }
    }
    ok = ok && add_header(c, "Accept: application/json") == 0;
    if (ok && o->body) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", o->content_type ? o->content_type : "application/json");
        ok = add_header(c, ct) == 0;
    }
    for (size_t i = 0; ok && i < GPD_HTTP_CALL_MAX_HEADERS && o->headers[i]; i++)
        ok = add_header(c, o->headers[i]) == 0;
    if (!ok)
        fail_later(c, GPD_PROV_FAILED, "out of memory");
    else if (o->delay_ms)
        retry_after(c, o->delay_ms);
    else
        send_try(c);
    return c;
}

gpd_http_call *gpd_http_call_fail_later(uv_loop_t *loop, enum gpd_prov_err err, const char *msg,
                                        gpd_http_call_cb cb, void *ctx)
{
    gpd_http_call *c = call_new(loop, cb, ctx);
    if (c)
        fail_later(c, err, msg ? msg : "");
    return c;
}

void gpd_http_call_cancel(gpd_http_call *c)
{
    if (!c || c->in_callback)
        return;
    if (c->req)
        gpd_curl_abort(c->req);
    c->req = NULL;
    call_free(c);
}

/* ---- provider operations ---- */

static void log_out_of_memory(const gpd_provider *prov, enum gpd__op_kind kind)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "%s: out of memory", prov->ops->name);
    gpd_log_error(msg, "\"kind\":%d", (int)kind);
}

gpd__op *gpd__op_new(size_t size, gpd_provider *prov, gpd__op **head, enum gpd__op_kind kind, void *ctx,
                     void (*destroy)(gpd__op *op))
{
    gpd__op *op = calloc(1, size);
    if (!op) {
        log_out_of_memory(prov, kind);
        return NULL;
    }
    op->prov = prov;
    op->kind = kind;
    op->ctx = ctx;
    gpd__op_link(head, op, destroy);
    return op;
}

/* The one report: the op leaves its list before the user hears of it (see
 * gpd__op_end), and is freed after. */
static void op_report(gpd__op *op, enum gpd_prov_err err, const char *msg, const char *id,
                      const gpd_instance_status *st, gpd_offer *offers, gpd_instance_status *list, size_t n)
{
    gpd__op_end(op);
    msg = msg ? msg : "";
    switch (op->kind) {
    case GPD__OP_SEARCH:
        op->cb.offers(op->ctx, err, msg, offers, n);
        break;
    case GPD__OP_CREATE:
        op->cb.create(op->ctx, err, msg, id && *id ? id : NULL);
        break;
    case GPD__OP_STATUS:
        op->cb.status(op->ctx, err, msg, st);
        break;
    case GPD__OP_DESTROY:
    case GPD__OP_EXTEND:
        op->cb.done(op->ctx, err, msg);
        break;
    case GPD__OP_LIST:
        op->cb.list(op->ctx, err, msg, list, n);
        break;
    }
    op->destroy(op);
}

void gpd__op_report(gpd__op *op, enum gpd_prov_err err, const char *msg)
{
    op_report(op, err, msg, NULL, NULL, NULL, NULL, 0);
}

void gpd__op_report_id(gpd__op *op, enum gpd_prov_err err, const char *msg, const char *id)
{
    op_report(op, err, msg, id, NULL, NULL, NULL, 0);
}

void gpd__op_report_status(gpd__op *op, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st)
{
    op_report(op, err, msg, NULL, st, NULL, NULL, 0);
}

void gpd__op_report_offers(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_offer *offers, size_t n)
{
    op_report(op, err, msg, NULL, NULL, offers, NULL, n);
}

void gpd__op_report_list(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_instance_status *list, size_t n)
{
    op_report(op, err, msg, NULL, NULL, NULL, list, n);
}

void gpd__op_fail(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_http_call_cb cb)
{
    gpd__op_cancel_calls(op);
    if (gpd__op_fail_later(op, 0, op->prov->loop, err, msg, cb) != 0) {
        log_out_of_memory(op->prov, op->kind);
        gpd__op_end(op);
        op->destroy(op);
    }
}

int gpd__op_send(gpd__op *op, unsigned idx, const char *method, const char *url, const char *body,
                 bool idempotent, uint64_t delay_ms, gpd_http_call_cb cb)
{
    gpd_http_call_opts opts = {
        .method = method,
        .url = url,
        .headers = { op->auth },
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .idempotent = idempotent,
        .delay_ms = delay_ms,
    };
    return gpd__op_call(op, idx, op->prov->loop, op->prov->curl, &opts, cb);
}

void gpd__op_send_or_fail(gpd__op *op, const char *method, const char *url, const char *body, bool idempotent,
                          gpd_http_call_cb cb)
{
    if (gpd__op_send(op, 0, method, url, body, idempotent, 0, cb) != 0)
        gpd__op_fail(op, GPD_PROV_FAILED, "out of memory", cb);
}
