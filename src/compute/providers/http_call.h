/*
 * One JSON REST call to a provider API, with the retries every provider
 * needs, on the control thread's gpd_curl:
 *
 *   - 429: up to 5 tries in all, waiting 0.2 s, then x1.5 each time, or
 *     the Retry-After the server asked for when that is longer (a
 *     Retry-After over 60 s ends the call at once with RATE_LIMITED; a 429
 *     that names a quota, GPD_PROV_QUOTA, is not retried);
 *   - 5xx (and 408) and transport failures: 2 more tries with the same
 *     backoff, but only when the call is marked idempotent.  A request that
 *     never reached the server (connect refused, DNS) is retried whatever
 *     the method: nothing can have happened.  A create that timed out or got
 *     a 5xx may have rented the machine, and repeating it may rent a second
 *     one, so such calls are not repeated (see each provider for what it
 *     does instead);
 *   - connect timeout 5 s, total 30 s per try.
 *
 * The callback runs exactly once, later on the loop, never inside
 * gpd_http_call_start(); the call frees itself after the callback returns.
 */
#ifndef GPD_COMPUTE_PROVIDERS_HTTP_CALL_H
#define GPD_COMPUTE_PROVIDERS_HTTP_CALL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "compute/provider.h"
#include "http/curl_client.h"

#define GPD_HTTP_CALL_MAX_HEADERS 4
#define GPD_HTTP_CALL_MAX_BODY (32u << 20)    /* response bodies over this fail the call */
#define GPD_HTTP_CALL_TRIES_429 5
#define GPD_HTTP_CALL_RETRIES_5XX 2
#define GPD_HTTP_CALL_BACKOFF_MS 200
#define GPD_HTTP_CALL_MAX_RETRY_AFTER_MS 60000
#define GPD_HTTP_CALL_CONNECT_TIMEOUT_MS 5000
#define GPD_HTTP_CALL_TOTAL_TIMEOUT_MS 30000

typedef struct gpd_http_call gpd_http_call;

/* What came back.  Everything is borrowed: valid during the callback only. */
typedef struct gpd_http_reply {
    int status;                 /* HTTP status of the last try; 0 when no response came */
    json_t *json;               /* the body parsed, NULL when empty or not JSON */
    const char *body;           /* the raw body, NUL-terminated, "" when none */
    size_t body_len;
    enum gpd_prov_err err;      /* generic mapping (gpd_http_classify), or the transport's */
    const char *msg;            /* short reason, "" on success */
    int tries;                  /* requests sent */
} gpd_http_reply;

typedef void (*gpd_http_call_cb)(void *ctx, const gpd_http_reply *r);

typedef struct gpd_http_call_opts {
    const char *method;         /* "GET", "POST", "PUT", "DELETE" */
    const char *url;
    const char *headers[GPD_HTTP_CALL_MAX_HEADERS]; /* "Name: value" lines (auth), NULL-terminated or full */
    const char *body;           /* copied; NULL: none */
    size_t body_len;
    const char *content_type;   /* default "application/json" when there is a body */
    bool idempotent;            /* safe to repeat after a 5xx or a timeout */
    uint64_t delay_ms;          /* wait this long before the first try (polling) */
} gpd_http_call_opts;

/* Start the call.  Returns the handle (never NULL unless out of memory, and
 * then nothing is called back). */
gpd_http_call *gpd_http_call_start(uv_loop_t *loop, gpd_curl *curl, const gpd_http_call_opts *o,
                                   gpd_http_call_cb cb, void *ctx);

/* A call that sends nothing and reports err/msg on the next loop turn: the
 * way to fail an operation early without calling back inside the call. */
gpd_http_call *gpd_http_call_fail_later(uv_loop_t *loop, enum gpd_prov_err err, const char *msg,
                                        gpd_http_call_cb cb, void *ctx);

/* Drop the call: no callback follows.  Not for use after the callback ran
 * (the handle is gone then); a no-op from inside the call's own callback. */
void gpd_http_call_cancel(gpd_http_call *c);

/* The generic status mapping: 2xx OK, 401 AUTH, 403 AUTH or QUOTA (body
 * says quotaExceeded / RESOURCE_EXHAUSTED), 429 RATE_LIMITED or QUOTA (the same
 * words, unless the reason is RATE_LIMIT_EXCEEDED / rateLimitExceeded),
 * 400/422 BAD_REQUEST, 404/410 NOT_FOUND, 408/5xx TRANSIENT, else FAILED
 * (409 included: what a conflict means is the provider's to say). */
enum gpd_prov_err gpd_http_classify(int status, const char *body, size_t len);

/* The human-readable error out of a provider's error body: FastAPI
 * {"detail":"..."} or {"detail":[{"msg":...}]}, Google {"error":{"message":...}},
 * Vast {"error":"...","msg":"..."}, {"message":...}; else the raw body's
 * start.  Always NUL-terminates out. */
void gpd_http_error_message(const json_t *json, const char *body, size_t len, char *out, size_t outlen);

/* Backoff before try number `tries`+1 (tries >= 1 already sent), in ms. */
uint64_t gpd_http_backoff_ms(int tries);

/* Retry-After: delta-seconds or an HTTP-date; -1 when unreadable. */
int64_t gpd_http_parse_retry_after(const char *value, size_t len, time_t now);

/* Percent-encode s for a URL path segment or query value into out;
 * returns out (truncated, always NUL-terminated). */
char *gpd_http_escape(const char *s, char *out, size_t outlen);

#endif
