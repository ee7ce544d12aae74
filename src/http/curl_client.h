/*
 * https:// upstreams (OpenRouter and other hosted APIs) through libcurl's
 * multi interface, driven by the calling thread's libuv loop: curl owns
 * TLS, connection reuse and DNS (in its resolver thread), the loop owns
 * the sockets' readiness and the timers.  One gpd_curl per loop: each
 * worker has one, and so does the control thread (provider APIs,
 * OpenRouter's pricing).
 *
 * Responses reach the caller through the same gpd_upstream_events as the
 * lean client: on_head, then on_payload and on_body with the decoded body
 * (curl removes chunked framing), then on_done or on_error.
 */
#ifndef GPD_HTTP_CURL_CLIENT_H
#define GPD_HTTP_CURL_CLIENT_H

#include <curl/curl.h>
#include <uv.h>

#include "http/upstream.h"
#include "net/deadline.h"

typedef struct gpd_curl gpd_curl;
typedef struct gpd_curl_req gpd_curl_req;

/* ca_file: extra CA bundle (NULL: the system's). */
gpd_curl *gpd_curl_new(uv_loop_t *loop, const char *ca_file);
/* Bound the connections: per host, and kept open in all.  Transfers beyond
 * the per-host bound wait in curl's queue (provider APIs must not see a
 * burst of a thousand connections when a thousand reservations end). */
void gpd_curl_set_limits(gpd_curl *g, long max_host_connections, long max_cached_connections);
/* Abort every transfer (no callbacks) and free; the loop must still run to close handles. */
void gpd_curl_free(gpd_curl *g);

typedef struct gpd_curl_opts {
    const char *method;            /* "GET", "POST", "DELETE", "PUT" */
    const char *url;
    struct curl_slist *headers;    /* taken over (freed with the request) */
    const char *body;              /* must stay valid until the request ends */
    size_t body_len;
    uint64_t connect_timeout_ms;
    uint64_t total_timeout_ms;     /* 0: none (streams); see response_wait */
    gpd_deadline_list *response_wait; /* optional: first-byte and between-reads timeout */
} gpd_curl_opts;

gpd_curl_req *gpd_curl_send(gpd_curl *g, const gpd_curl_opts *o, const gpd_upstream_events *ev, void *ctx);
/* Drop the request; no callback follows. */
void gpd_curl_abort(gpd_curl_req *r);
void gpd_curl_resume(gpd_curl_req *r);
void gpd_curl_response_expired(gpd_deadline *d);

#endif
