#include "gateway/pricing.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"

struct gpd_pricing {
    uv_timer_t timer;
    gpd_curl *curl;
    gpd_curl_req *req;
    gpd_registry *registry;
    const gpd_config *cfg;
    gpd_sbuf body;
    int status;
    char url[2048];
};

long gpd_pricing_parse(const char *body, size_t len, gpd_price **out)
{
    json_error_t err;
    json_t *root = json_loadb(body, len, 0, &err);
    json_t *data = root ? json_object_get(root, "data") : NULL;
    *out = NULL;
    if (!json_is_array(data)) {
        json_decref(root);
        return -1;
    }
    size_t n = json_array_size(data), k = 0, i;
    gpd_price *prices = calloc(n ? n : 1, sizeof(*prices));
    json_t *m;
    json_array_foreach(data, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        json_t *pricing = json_object_get(m, "pricing");
        if (!id || !json_is_object(pricing))
            continue;
        /* Prices are per token, as strings ("0.000015"); accept numbers too. */
        double v[2] = { -1, -1 };
        const char *keys[2] = { "prompt", "completion" };
        for (int t = 0; t < 2; t++) {
            json_t *p = json_object_get(pricing, keys[t]);
            if (json_is_string(p)) {
                char *end;
                v[t] = strtod(json_string_value(p), &end);
                if (*end)
                    v[t] = -1;
            } else if (json_is_number(p)) {
                v[t] = json_number_value(p);
            }
        }
        if (v[0] < 0 || v[1] < 0)
            continue;
        prices[k].id = strdup(id);
        prices[k].prompt = v[0];
        prices[k].completion = v[1];
        k++;
    }
    json_decref(root);
    *out = prices;
    return (long)k;
}

static int on_head(void *ctx, const gpd_http_response *res)
{
    gpd_pricing *p = ctx;
    p->status = res->status;
    return 0;
}

static void on_payload(void *ctx, const char *data, size_t n)
{
    gpd_pricing *p = ctx;
    gpd_sbuf_append(&p->body, data, n);
}

static int on_body(void *ctx, const char *raw, size_t n)
{
    return 0;
}

static void on_done(void *ctx)
{
    gpd_pricing *p = ctx;
    p->req = NULL;
    gpd_price *prices = NULL;
    long n = p->status == 200 && !p->body.failed ? gpd_pricing_parse(p->body.data, p->body.len, &prices) : -1;
    if (n < 0) {
        gpd_log_warn("OpenRouter pricing not read", "\"status\":%d", p->status);
    } else {
        gpd_registry_set_prices(p->registry, prices, (size_t)n);
        gpd_log_info("OpenRouter pricing read", "\"models\":%ld", n);
    }
    gpd_sbuf_free(&p->body);
}

static void on_error(void *ctx, enum gpd_upstream_error_kind kind, bool received, bool reused)
{
    gpd_pricing *p = ctx;
    p->req = NULL;
    gpd_sbuf_free(&p->body);
    gpd_log_warn("OpenRouter pricing not read", "\"error\":\"%s\"", gpd_upstream_error_name(kind));
}

static const gpd_upstream_events events = { on_head, on_payload, on_body, on_done, on_error };

static void fetch(uv_timer_t *t)
{
    gpd_pricing *p = t->data;
    if (p->req)
        return;
    gpd_sbuf_init(&p->body, 64 << 20);
    p->status = 0;
    gpd_curl_opts o = {
        .method = "GET",
        .url = p->url,
        .headers = curl_slist_append(NULL, "Accept: application/json"),
        .connect_timeout_ms = 5000,
        .total_timeout_ms = 30000,
    };
    p->req = gpd_curl_send(p->curl, &o, &events, p);
}

gpd_pricing *gpd_pricing_start(uv_loop_t *loop, gpd_curl *curl, gpd_registry *r, const gpd_config *cfg)
{
    /* Read even with no hosted model yet: they may arrive through the admin API. */
    gpd_pricing *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->curl = curl;
    p->registry = r;
    p->cfg = cfg;
    gpd_sbuf_init(&p->body, 64 << 20);
    size_t bl = strlen(cfg->openrouter_base_url);
    while (bl > 0 && cfg->openrouter_base_url[bl - 1] == '/')
        bl--;
    snprintf(p->url, sizeof(p->url), "%.*s/models", (int)bl, cfg->openrouter_base_url);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, fetch, 0, cfg->openrouter_pricing_refresh_ms);
    return p;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void gpd_pricing_stop(gpd_pricing *p)
{
    if (!p)
        return;
    if (p->req)
        gpd_curl_abort(p->req);
    gpd_sbuf_free(&p->body);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
