/*
 * Which handler serves a request.  Model ports serve the OpenAI API of
 * their one model; the main port serves every model (chosen by the body's
 * "model"), plus the admin API, metrics and health.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "gateway/gateway.h"
#include "http/curl_client.h"

static gpd_gateway *gateway_of(gpd_conn *c)
{
    return (gpd_gateway *)c->w->server;
}

static bool is_model_api(gpd_str path)
{
    return gpd_str_eq_cstr(path, "/v1/chat/completions") || gpd_str_eq_cstr(path, "/v1/completions") ||
           gpd_str_eq_cstr(path, "/v1/embeddings");
}

/* ---- /v1/models ---- */

static void append_model(gpd_sbuf *b, const gpd_endpoint *e)
{
    gpd_sbuf_puts(b, "{\"id\":");
    gpd_sbuf_json_str(b, e->spec.name, e->name_len);
    gpd_sbuf_printf(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}",
                    e->spec.tier == GPD_TIER_HOSTED ? "openrouter" : "gpuproxyd");
}

void gpd_router_models_list(gpd_conn *c, const gpd_table *t, const gpd_endpoint *ep)
{
    gpd_sbuf b;
    gpd_sbuf_init(&b, (size_t)64 << 20);
    gpd_sbuf_puts(&b, "{\"object\":\"list\",\"data\":[");
    if (ep) {
        append_model(&b, ep);
    } else {
        for (size_t i = 0; i < t->n; i++) {
            if (i)
                gpd_sbuf_puts(&b, ",");
            append_model(&b, t->endpoints[i]);
        }
    }
    gpd_sbuf_puts(&b, "]}");
    if (b.failed)
        gpd_conn_respond_error(c, 500, "server_error", "internal_error", "model list too large");
    else
        gpd_conn_respond(c, 200, "application/json", NULL, b.data, b.len);
    gpd_sbuf_free(&b);
}

/* ---- admin calls: to the control thread and back ---- */

static void admin_reply_on_worker(void *arg)
{
    gpd_admin_call *call = arg;
    gpd_conn *c = call->conn;
    /* The connection may have gone (and its memory been reused) meanwhile. */
    if (c->serial == call->serial && c->ex && !c->closing) {
        gpd_conn_respond(c, call->status, "application/json", NULL, call->resp_body ? call->resp_body : "",
                         call->resp_body ? call->resp_len : 0);
    }
    gpd_admin_call_free(call);
}

void gpd_admin_reply(gpd_admin_call *call)
{
    if (gpd_mailbox_post(&call->w->mailbox, admin_reply_on_worker, call) != 0)
        gpd_admin_call_free(call);
}

void gpd_admin_call_free(gpd_admin_call *call)
{
    if (!call)
        return;
    free(call->path);
    free(call->query);
    free(call->body);
    free(call->resp_body);
    free(call);
}

static void admin_on_control(void *arg)
{
    gpd_admin_call *call = arg;
    gpd_gateway *g = (gpd_gateway *)call->w->server;
    g->admin(call);
}

static void admin_on_abort(gpd_conn *c)
{
    c->ex->status = 499;
    gpd_gateway_request_done(c);
}

static void forward_admin(gpd_conn *c)
{
    gpd_exchange *ex = c->ex;
    gpd_gateway *g = gateway_of(c);
    gpd_admin_call *call = calloc(1, sizeof(*call));
    if (!call)
        goto oom;
    call->w = c->w;
    call->conn = c;
    call->serial = c->serial;
    snprintf(call->method, sizeof(call->method), "%.*s", GPD_STR_FMT(ex->req.method));
    call->path = strndup(ex->req.path.base, ex->req.path.len);
    call->query = strndup(ex->req.query.base ? ex->req.query.base : "", ex->req.query.len);
    call->body = malloc(ex->body_len + 1);
    if (!call->path || !call->query || !call->body)
        goto oom;
    memcpy(call->body, ex->body, ex->body_len);
    call->body[ex->body_len] = '\0';
    call->body_len = ex->body_len;
    ex->on_abort = admin_on_abort;
    if (gpd_mailbox_post(g->control, admin_on_control, call) != 0)
        goto oom;
    return;
oom:
    gpd_admin_call_free(call);
    ex->on_abort = NULL;
    gpd_conn_respond_error(c, 500, "server_error", "internal_error", "out of memory");
}

/* ---- metrics and health ---- */

static void serve_metrics(gpd_conn *c, const gpd_table *t)
{
    gpd_gateway *g = gateway_of(c);
    gpd_sbuf b;
    gpd_sbuf_init(&b, (size_t)256 << 20);
    if (gpd_metrics_render(&b, t, g->workers, g->nworkers) != 0 || b.failed)
        gpd_conn_respond_error(c, 500, "server_error", "internal_error", "metrics rendering failed");
    else
        gpd_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
    gpd_sbuf_free(&b);
}

/* ---- dispatch ---- */

static void not_found(gpd_conn *c)
{
    gpd_exchange *ex = c->ex;
    gpd_conn_respond_error(c, 404, "invalid_request_error", "not_found", "no route for %.*s %.*s",
                           GPD_STR_FMT(ex->req.method), GPD_STR_FMT(ex->req.path));
}

static void method_not_allowed(gpd_conn *c, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"method %.*s is not allowed here; use %s\",\"type\":"
                     "\"invalid_request_error\",\"code\":\"method_not_allowed\"}}",
                     GPD_STR_FMT(c->ex->req.method), allow);
    gpd_conn_respond(c, 405, "application/json", extra, body, (size_t)n);
}

/* Main port: the body names the model. */
static const gpd_endpoint *route_by_model(gpd_conn *c, const gpd_table *t)
{
    gpd_exchange *ex = c->ex;
    gpd_json_field f = { .key = "model" };
    const char *why = NULL;
    size_t off = 0;
    if (gpd_json_scan_object(ex->body, ex->body_len, &f, 1, &why, &off) != 0) {
        gpd_conn_respond_error(c, 400, "invalid_request_error", "invalid_json",
                               "request body is not valid JSON: %s at byte %zu", why, off);
        return NULL;
    }
    char name[256];
    if (!f.found || gpd_json_string_decode(f.value, name, sizeof(name)) < 0) {
        gpd_conn_respond_error(c, 400, "invalid_request_error", "missing_model",
                               f.found ? "field 'model' must be a string of at most 255 bytes"
                                       : "field 'model' is required on the main port");
        return NULL;
    }
    const gpd_endpoint *ep = gpd_table_by_name(t, name, strlen(name));
    if (!ep)
        gpd_conn_respond_error(c, 404, "invalid_request_error", "model_not_found", "The model '%s' does not exist",
                               name);
    return ep;
}

void gpd_gateway_on_request(gpd_conn *c)
{
    gpd_exchange *ex = c->ex;
    gpd_worker *w = c->w;
    gpd_str path = ex->req.path;
    gpd_str method = ex->req.method;
    bool is_get = gpd_str_eq_cstr(method, "GET") || gpd_str_eq_cstr(method, "HEAD");
    bool is_post = gpd_str_eq_cstr(method, "POST");
    gpd_table_pin *pin = gpd_table_pin_acquire(w->tables);
    const gpd_table *t = pin->table;

    if (is_model_api(path)) {
        if (!is_post) {
            method_not_allowed(c, "POST");
            goto release;
        }
        const gpd_endpoint *ep = c->is_main ? route_by_model(c, t) : gpd_table_by_port(t, c->port);
        if (!ep) {
            if (!c->is_main)
                gpd_conn_respond_error(c, 404, "invalid_request_error", "model_not_found",
                                       "no model is served on port %d any more", c->port);
            goto release;
        }
        gpd_proxy_start(c, pin, ep); /* the proxy keeps the pin until the end */
        return;
    }
    if (gpd_str_eq_cstr(path, "/v1/models")) {
        if (!is_get) {
            method_not_allowed(c, "GET");
            goto release;
        }
        const gpd_endpoint *ep = c->is_main ? NULL : gpd_table_by_port(t, c->port);
        if (!c->is_main && !ep)
            gpd_conn_respond_error(c, 404, "invalid_request_error", "model_not_found",
                                   "no model is served on port %d any more", c->port);
        else
            gpd_router_models_list(c, t, ep);
        goto release;
    }
    if (gpd_str_eq_cstr(path, "/healthz")) {
        gpd_conn_respond(c, 200, "application/json", NULL, "{\"status\":\"ok\"}", 15);
        goto release;
    }
    if (c->is_main) {
        if (gpd_str_eq_cstr(path, "/readyz")) {
            if (atomic_load(&gateway_of(c)->ready) && !w->draining)
                gpd_conn_respond(c, 200, "application/json", NULL, "{\"status\":\"ready\"}", 18);
            else
                gpd_conn_respond(c, 503, "application/json", NULL, "{\"status\":\"not ready\"}", 22);
            goto release;
        }
        if (gpd_str_eq_cstr(path, "/metrics")) {
            if (!is_get)
                method_not_allowed(c, "GET");
            else
                serve_metrics(c, t);
            goto release;
        }
        if (gpd_str_has_prefix(path, "/api/")) {
            gpd_table_pin_release(w->tables, pin);
            forward_admin(c);
            return;
        }
    }
    not_found(c);
release:
    gpd_table_pin_release(w->tables, pin);
}

/* ---- after every request ---- */

void gpd_gateway_request_done(gpd_conn *c)
{
    gpd_exchange *ex = c->ex;
    gpd_worker *w = c->w;
    gpd_gateway *g = gateway_of(c);
    gpd_request_info *info = ex->handler;
    const gpd_endpoint *ep = info ? info->ep : NULL;
    uint64_t elapsed_us = (uv_hrtime() - ex->start_ns) / 1000;
    int slot = gpd_code_slot(ex->status);
    double cost = 0;

    if (ep) {
        gpd_model_counters *mc = &ep->stats->per_worker[w->id];
        gpd_counter_add(&mc->requests[slot], 1);
        if (info->prompt_tokens || info->completion_tokens) {
            gpd_counter_add(&mc->prompt_tokens, info->prompt_tokens);
            gpd_counter_add(&mc->completion_tokens, info->completion_tokens);
            double pp = gpd_endpoint_price(ep, false), cp = gpd_endpoint_price(ep, true);
            if (pp > 0)
                cost += pp * (double)info->prompt_tokens;
            if (cp > 0)
                cost += cp * (double)info->completion_tokens;
            if (cost > 0)
                gpd_counter_add(&mc->cost_nanousd, (uint64_t)(cost * 1e9 + 0.5));
        }
        gpd_histogram_observe(&w->metrics->duration[ep->spec.tier], elapsed_us);
    } else if (is_model_api(ex->req.path)) {
        /* A model request that named no served model (404, bad body...). */
        gpd_counter_add(&w->metrics->unrouted_requests[slot], 1);
    }

    if (g->cfg->access_log) {
        char line[2048], ts[40], path[512], model[300];
        gpd_log_timestamp(ts, sizeof(ts));
        gpd_json_escape(path, sizeof(path), ex->req.path.base, ex->req.path.len);
        if (ep) {
            model[0] = '"';
            size_t n = gpd_json_escape(model + 1, sizeof(model) - 3, ep->spec.name, ep->name_len);
            model[n + 1] = '"';
            model[n + 2] = '\0';
        } else {
            strcpy(model, "null");
        }
        int n = snprintf(line, sizeof(line),
                         "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"request\",\"worker\":%d,\"method\":\"%.*s\","
                         "\"path\":\"%s\",\"port\":%u,\"model\":%s,\"status\":%d,\"latency_ms\":%.3f,"
                         "\"bytes_in\":%zu,\"bytes_out\":%llu,\"upstream\":%s%s%s,\"prompt_tokens\":%llu,"
                         "\"completion_tokens\":%llu,\"cost_usd\":%.9f}\n",
                         ts, w->id, (int)(ex->req.method.len > 16 ? 16 : ex->req.method.len), ex->req.method.base,
                         path, c->port, model, ex->status, (double)elapsed_us / 1000.0, ex->body_len,
                         (unsigned long long)ex->bytes_out, info && info->upstream_url ? "\"" : "",
                         info && info->upstream_url ? info->upstream_url : "null",
                         info && info->upstream_url ? "\"" : "",
                         (unsigned long long)(info ? info->prompt_tokens : 0),
                         (unsigned long long)(info ? info->completion_tokens : 0), cost);
        if (n > 0 && (size_t)n < sizeof(line))
            gpd_log_ring_put(&w->log, line, (size_t)n);
    }

    if (info) {
        gpd_table_pin *pin = info->pin;
        gpd_proxy_release(c);
        if (pin)
            gpd_table_pin_release(w->tables, pin);
    }
}

void gpd_gateway_init(gpd_gateway *g, const gpd_config *cfg)
{
    g->cfg = cfg;
    g->server.limits.max_header_bytes = cfg->max_header_bytes;
    g->server.limits.max_body = cfg->max_body;
    g->server.on_request = gpd_gateway_on_request;
    g->server.on_request_done = gpd_gateway_request_done;
}
