/*
 * /api/v1/models: register, list, show and delete model endpoints at run
 * time.  A port opens on registration and closes on deletion, without a
 * restart and without touching any other connection.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/admin.h"
#include "core/log.h"

static gpd_registry *registry;
static gpd_store *store;

void gpd_api_models_init(gpd_registry *r, gpd_store *s)
{
    registry = r;
    store = s;
}

static const char *public_host(const gpd_config *cfg)
{
    const char *h = cfg->model_host;
    if (!strcmp(h, "0.0.0.0") || !strcmp(h, "::"))
        return "localhost";
    return h;
}

/* The registration as it is stored, to register it again after a restart. */
static json_t *spec_json(const gpd_model_spec *s)
{
    json_t *o = json_pack("{s:s,s:s,s:i}", "name", s->name, "provider",
                          s->tier == GPD_TIER_HOSTED ? "openrouter" : "custom", "port", s->port);
    if (s->upstream_model)
        json_object_set_new(o, "upstream_model", json_string(s->upstream_model));
    if (s->n_upstreams) {
        json_t *urls = json_array();
        for (size_t i = 0; i < s->n_upstreams; i++)
            json_array_append_new(urls, json_string(s->upstream_urls[i]));
        json_object_set_new(o, "upstream_urls", urls);
    }
    if (s->prompt_usd_per_mtok >= 0)
        json_object_set_new(o, "prompt_usd_per_mtok", json_real(s->prompt_usd_per_mtok));
    if (s->completion_usd_per_mtok >= 0)
        json_object_set_new(o, "completion_usd_per_mtok", json_real(s->completion_usd_per_mtok));
    return o;
}

static json_t *model_json(const gpd_endpoint *e)
{
    const gpd_model_spec *s = &e->spec;
    char endpoint[300];
    const char *host = public_host(registry->cfg);
    snprintf(endpoint, sizeof(endpoint), strchr(host, ':') ? "http://[%s]:%d/v1" : "http://%s:%d/v1", host, s->port);
    json_t *o = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s}", "name", s->name, "port", s->port, "endpoint", endpoint,
                          "provider", s->tier == GPD_TIER_HOSTED ? "openrouter" : "custom", "tier",
                          gpd_tier_name(s->tier), "source", s->source == GPD_MODEL_FROM_CONFIG ? "config" : s->source == GPD_MODEL_FROM_RESERVATION ? "reservation" : "api");
    if (s->upstream_model)
        json_object_set_new(o, "upstream_model", json_string(s->upstream_model));
    if (s->tier == GPD_TIER_CUSTOM) {
        json_t *urls = json_array();
        for (size_t i = 0; i < s->n_upstreams; i++)
            json_array_append_new(urls, json_string(s->upstream_urls[i]));
        json_object_set_new(o, "upstream_urls", urls);
    }
    double pp = gpd_endpoint_price(e, false), cp = gpd_endpoint_price(e, true);
    if (e->priced) {
        json_object_set_new(o, "prompt_usd_per_mtok", json_real(pp * 1e6));
        json_object_set_new(o, "completion_usd_per_mtok", json_real(cp * 1e6));
    }
    return o;
}

/* Fill a spec from the request body; err names the field on failure. */
static int spec_from_json(json_t *j, gpd_model_spec *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->tier = GPD_TIER_CUSTOM;
    s->prompt_usd_per_mtok = -1;
    s->completion_usd_per_mtok = -1;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        if (!strcmp(key, "name") || !strcmp(key, "upstream_model") || !strcmp(key, "upstream_url") ||
            !strcmp(key, "provider")) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "field '%s' must be a string", key);
                return -1;
            }
            const char *str = json_string_value(v);
            if (!strcmp(key, "name"))
                s->name = strdup(str);
            else if (!strcmp(key, "upstream_model"))
                s->upstream_model = strdup(str);
            else if (!strcmp(key, "upstream_url")) {
                if (s->n_upstreams < GPD_MAX_UPSTREAMS)
                    s->upstream_urls[s->n_upstreams++] = strdup(str);
            } else if (!strcmp(str, "openrouter"))
                s->tier = GPD_TIER_HOSTED;
            else if (strcmp(str, "custom") != 0) {
                snprintf(err, errlen, "field 'provider' must be \"openrouter\" or \"custom\", not \"%s\"", str);
                return -1;
            }
        } else if (!strcmp(key, "upstream_urls")) {
            size_t i;
            json_t *u;
            if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > GPD_MAX_UPSTREAMS) {
                snprintf(err, errlen, "field 'upstream_urls' must be an array of 1-%d URLs", GPD_MAX_UPSTREAMS);
                return -1;
            }
            json_array_foreach(v, i, u)
            {
                if (!json_is_string(u)) {
                    snprintf(err, errlen, "field 'upstream_urls' must hold strings");
                    return -1;
                }
                if (s->n_upstreams < GPD_MAX_UPSTREAMS)
                    s->upstream_urls[s->n_upstreams++] = strdup(json_string_value(u));
            }
        } else if (!strcmp(key, "port")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
                snprintf(err, errlen, "field 'port' must be an integer 1-65535");
                return -1;
            }
            s->port = (int)json_integer_value(v);
        } else if (!strcmp(key, "prompt_usd_per_mtok") || !strcmp(key, "completion_usd_per_mtok")) {
            if (!json_is_number(v) || json_number_value(v) < 0) {
                snprintf(err, errlen, "field '%s' must be a non-negative number", key);
                return -1;
            }
            if (key[0] == 'p')
                s->prompt_usd_per_mtok = json_number_value(v);
            else
                s->completion_usd_per_mtok = json_number_value(v);
        } else {
            snprintf(err, errlen, "unknown field '%s'", key);
            return -1;
        }
    }
    return 0;
}

static void models_create(gpd_admin_call *call)
{
    json_error_t jerr;
    char err[512];
    json_t *j = json_loadb(call->body, call->body_len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        snprintf(err, sizeof(err), "request body must be a JSON object%s%s", j ? "" : ": ", j ? "" : jerr.text);
        json_decref(j);
        gpd_api_reply_error(call, 400, "invalid_json", err);
        return;
    }
    gpd_model_spec spec;
    if (spec_from_json(j, &spec, err, sizeof(err)) != 0) {
        gpd_model_spec_free(&spec);
        json_decref(j);
        gpd_api_reply_error(call, 400, "invalid_model", err);
        return;
    }
    json_decref(j);
    char name[256];
    snprintf(name, sizeof(name), "%s", spec.name ? spec.name : "");
    int status = gpd_registry_add(registry, &spec, err, sizeof(err));
    if (status != 201) {
        gpd_api_reply_error(call, status, status == 409 ? "conflict" : status == 400 ? "invalid_model" : "internal_error", err);
        return;
    }
    const gpd_endpoint *e = gpd_registry_find(registry, name);
    /* Stored, so that it comes back after a restart on the same port. */
    json_t *doc = spec_json(&e->spec);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char serr[256];
    if (store && gpd_store_model_put(store, name, e->spec.port, text ? text : "{}", serr, sizeof(serr)) != 0) {
        free(text);
        gpd_registry_remove(registry, name);
        snprintf(err, sizeof(err), "model not stored (nothing registered): %s", serr);
        gpd_api_reply_error(call, 500, "store_error", err);
        return;
    }
    free(text);
    gpd_log_info("model registered", "\"model\":\"%s\",\"port\":%d", name, e->spec.port);
    gpd_api_reply_json(call, 201, model_json(e));
}

static void models_list(gpd_admin_call *call)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < registry->n; i++)
        json_array_append_new(arr, model_json(registry->eps[i]));
    gpd_api_reply_json(call, 200, json_pack("{s:o}", "models", arr));
}

/* Decode %XX in a path segment (model names may hold '/'). */
static void url_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '%' && p[1] && p[2]) {
            char hex[3] = { p[1], p[2], 0 };
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == '\0') {
                *o++ = (char)v;
                p += 2;
                continue;
            }
        }
        *o++ = *p;
    }
    *o = '\0';
}

bool gpd_api_models(gpd_admin_call *call)
{
    const char *path = call->path;
    const char *m = call->method;
    static const char prefix[] = "/api/v1/models";
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0 || (path[sizeof(prefix) - 1] && path[sizeof(prefix) - 1] != '/'))
        return false;
    if (!strcmp(path, prefix) || !strcmp(path, "/api/v1/models/")) {
        if (!strcmp(m, "GET"))
            models_list(call);
        else if (!strcmp(m, "POST"))
            models_create(call);
        else
            gpd_api_reply_error(call, 405, "method_not_allowed", "use GET or POST on /api/v1/models");
        return true;
    }
    if (!strncmp(path, "/api/v1/models/", sizeof(prefix))) {
        char name[512];
        snprintf(name, sizeof(name), "%s", path + sizeof(prefix));
        url_decode(name);
        const gpd_endpoint *e = gpd_registry_find(registry, name);
        if (!strcmp(m, "GET")) {
            if (e)
                gpd_api_reply_json(call, 200, model_json(e));
            else
                gpd_api_reply_error(call, 404, "model_not_found", "no such model");
            return true;
        }
        if (!strcmp(m, "DELETE")) {
            char msg[600];
            if (!e) {
                snprintf(msg, sizeof(msg), "model '%s' does not exist", name);
                gpd_api_reply_error(call, 404, "model_not_found", msg);
                return true;
            }
            int port = e->spec.port;
            if (e->spec.source == GPD_MODEL_FROM_RESERVATION) {
                gpd_api_reply_error(call, 409, "conflict",
                                    "this model belongs to a reservation: release the reservation instead");
                return true;
            }
            char serr[256];
            if (store && e->spec.source == GPD_MODEL_FROM_API &&
                gpd_store_model_delete(store, name, serr, sizeof(serr)) < 0) {
                gpd_api_reply_error(call, 500, "store_error", serr);
                return true;
            }
            gpd_registry_remove(registry, name);
            gpd_log_info("model deleted", "\"model\":\"%s\",\"port\":%d", name, port);
            gpd_api_reply_json(call, 200, json_pack("{s:s,s:i}", "deleted", name, "port", port));
            return true;
        }
        gpd_api_reply_error(call, 405, "method_not_allowed", "use GET or DELETE on /api/v1/models/{name}");
        return true;
    }
    return false;
}

/* Register the models stored by earlier runs, on their ports. */
int gpd_api_models_restore(char *err, size_t errlen)
{
    gpd_store_model_row *rows = NULL;
    size_t n = 0;
    if (gpd_store_model_list(store, &rows, &n, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(rows[i].doc, 0, NULL);
        gpd_model_spec spec;
        char why[512];
        if (!j || spec_from_json(j, &spec, why, sizeof(why)) != 0) {
            gpd_log_error("stored model skipped", "\"model\":\"%s\"", rows[i].name);
            if (j)
                gpd_model_spec_free(&spec);
            json_decref(j);
            continue;
        }
        json_decref(j);
        if (gpd_registry_add(registry, &spec, why, sizeof(why)) != 201)
            gpd_log_error("stored model not restored", "\"model\":\"%s\",\"reason\":\"%s\"", rows[i].name, why);
    }
    gpd_store_model_rows_free(rows, n);
    return 0;
}
