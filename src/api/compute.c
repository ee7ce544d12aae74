/*
 * /api/v1/compute: reserve, list, show, release and extend reservations.
 * The broker does the work; this file only maps HTTP to it.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "api/admin.h"

static gpd_broker *broker;

void gpd_api_compute_init(gpd_broker *b)
{
    broker = b;
}

static json_t *body_json(gpd_admin_call *call, bool required)
{
    if (call->body_len == 0)
        return required ? NULL : json_object();
    json_error_t e;
    return json_loadb(call->body, call->body_len, 0, &e);
}

/* ?status=active */
static void query_param(const char *query, const char *key, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1;
            size_t n = strcspn(v, "&");
            snprintf(out, outlen, "%.*s", (int)n, v);
            return;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
}

bool gpd_api_compute(gpd_admin_call *call)
{
    static const char prefix[] = "/api/v1/compute/";
    const char *path = call->path, *m = call->method;
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        return false;
    if (!broker) {
        gpd_api_reply_error(call, 503, "broker_unavailable", "the compute broker is not running (store unavailable)");
        return true;
    }
    const char *rest = path + sizeof(prefix) - 1;
    json_t *out = NULL;
    int status;
    if (!strcmp(rest, "reserve")) {
        if (strcmp(m, "POST") != 0) {
            gpd_api_reply_error(call, 405, "method_not_allowed", "use POST on /api/v1/compute/reserve");
            return true;
        }
        json_t *req = body_json(call, true);
        if (!req) {
            gpd_api_reply_error(call, 400, "invalid_json", "request body must be a JSON object");
            return true;
        }
        status = gpd_broker_reserve(broker, req, &out);
        json_decref(req);
    } else if (!strcmp(rest, "reservations") || !strcmp(rest, "reservations/")) {
        if (strcmp(m, "GET") != 0) {
            gpd_api_reply_error(call, 405, "method_not_allowed", "use GET on /api/v1/compute/reservations");
            return true;
        }
        char st[32];
        query_param(call->query, "status", st, sizeof(st));
        status = gpd_broker_list(broker, st, &out);
    } else if (!strncmp(rest, "reservations/", 13)) {
        char id[128];
        const char *idp = rest + 13;
        size_t n = strcspn(idp, "/");
        snprintf(id, sizeof(id), "%.*s", (int)n, idp);
        const char *tail = idp + n;
        if (!strcmp(tail, "/extend")) {
            if (strcmp(m, "POST") != 0) {
                gpd_api_reply_error(call, 405, "method_not_allowed", "use POST on .../extend");
                return true;
            }
            json_t *req = body_json(call, true);
            if (!req) {
                gpd_api_reply_error(call, 400, "invalid_json", "request body must be a JSON object with 'duration'");
                return true;
            }
            status = gpd_broker_extend(broker, id, req, &out);
            json_decref(req);
        } else if (*tail == '\0') {
            if (!strcmp(m, "GET"))
                status = gpd_broker_get(broker, id, &out);
            else if (!strcmp(m, "DELETE"))
                status = gpd_broker_release(broker, id, &out);
            else {
                gpd_api_reply_error(call, 405, "method_not_allowed", "use GET or DELETE on a reservation");
                return true;
            }
        } else {
            return false;
        }
    } else {
        return false;
    }
    gpd_api_reply_json(call, status, out);
    return true;
}
