/*
 * The data plane: what a worker does with a complete request.
 *
 *   router.c   which handler serves it (model API, admin API, metrics, health)
 *   proxy.c    model requests: pick the endpoint, rewrite, forward upstream
 *              over the worker's pools, relay the answer (streaming or not),
 *              retry on another upstream before the first byte is relayed
 *   usage.c    token usage read from the answer, for cost
 *   table.c    the endpoint table the worker routes with
 *
 * Admin requests are not served here: they are handed to the control
 * thread (gpd_gateway.admin) and answered when it replies.
 */
#ifndef GPD_GATEWAY_GATEWAY_H
#define GPD_GATEWAY_GATEWAY_H

#include "core/config.h"
#include "gateway/table.h"
#include "http/server.h"
#include "net/mailbox.h"

/* An admin call, carried to the control thread and back. */
typedef struct gpd_admin_call {
    gpd_worker *w;
    gpd_conn *conn;
    uint64_t serial;             /* the connection's serial when the call left */
    char method[8];
    char *path;                  /* owned */
    char *query;                 /* owned, may be empty */
    char *body;                  /* owned copy */
    size_t body_len;
    /* the answer, filled by the control thread */
    int status;
    char *resp_body;             /* owned JSON */
    size_t resp_len;
} gpd_admin_call;

typedef struct gpd_gateway {
    gpd_server server;           /* first: workers' server pointer is this */
    const gpd_config *cfg;
    gpd_worker **workers;
    int nworkers;
    gpd_mailbox *control;        /* the control thread's mailbox */
    void (*admin)(gpd_admin_call *call); /* runs on the control thread */
    _Atomic int ready;           /* /readyz */
} gpd_gateway;

/* Set up the server callbacks of g (before workers start). */
void gpd_gateway_init(gpd_gateway *g, const gpd_config *cfg);

/* Control thread: send the answer back to the worker (takes the call). */
void gpd_admin_reply(gpd_admin_call *call);
void gpd_admin_call_free(gpd_admin_call *call);

/* proxy.c: serve a model request (chat, completions, embeddings). */
void gpd_proxy_start(gpd_conn *c, gpd_table_pin *pin, const gpd_endpoint *ep);
/* router.c: GET /v1/models for a port (ep) or the main port (ep NULL). */
void gpd_router_models_list(gpd_conn *c, const gpd_table *t, const gpd_endpoint *ep);

/* proxy.c: drop the proxy state of the exchange (cancels any upstream request). */
void gpd_proxy_release(gpd_conn *c);
/* proxy.c: free the worker's cached proxy states (worker exit). */
void gpd_proxy_free_list(gpd_worker *w);

/* Log line and counters for a finished exchange, then release its state
 * (server callback, also used when the client aborts). */
void gpd_gateway_request_done(gpd_conn *c);
/* router.c: the server's on_request. */
void gpd_gateway_on_request(gpd_conn *c);

/* Per-request gateway state kept on the exchange. */
typedef struct gpd_request_info {
    const gpd_endpoint *ep;      /* NULL when unrouted */
    gpd_table_pin *pin;
    uint64_t prompt_tokens, completion_tokens;
    double cost_usd;
    const char *upstream_url;
} gpd_request_info;

#endif
