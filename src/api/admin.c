/* The admin API's dispatch, on the control thread. */
#include "api/admin.h"

#include <stdio.h>
#include <string.h>

void gpd_api_reply_json(gpd_admin_call *call, int status, json_t *body)
{
    call->status = status;
    call->resp_body = json_dumps(body, JSON_COMPACT);
    call->resp_len = call->resp_body ? strlen(call->resp_body) : 0;
    json_decref(body);
    gpd_admin_reply(call);
}

void gpd_api_reply_error(gpd_admin_call *call, int status, const char *code, const char *msg)
{
    json_t *err = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type",
                            status >= 500 ? "server_error" : "invalid_request_error", "code", code);
    gpd_api_reply_json(call, status, err);
}

void gpd_admin_init(gpd_registry *r, gpd_store *s, gpd_broker *b)
{
    gpd_api_models_init(r, s);
    gpd_api_compute_init(b);
}

void gpd_admin_handle(gpd_admin_call *call)
{
    if (gpd_api_models(call) || gpd_api_compute(call))
        return;
    char msg[600];
    snprintf(msg, sizeof(msg), "no admin route for %s %s", call->method, call->path);
    gpd_api_reply_error(call, 404, "not_found", msg);
}
