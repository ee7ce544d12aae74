/*
 * Internals shared by the provider files and their unit tests: the
 * operation list every provider keeps (so that freeing a provider cancels
 * what is in flight) and the plumbing of an operation (its one report, its
 * deferred failure, its authenticated calls), the helpers that fill runtime
 * recipes in, and each provider's pure parsers and request builders.  Not
 * for the broker: it goes through compute/provider.h only.
 */
#ifndef GPD_COMPUTE_PROVIDERS_INTERNAL_H
#define GPD_COMPUTE_PROVIDERS_INTERNAL_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#include "compute/provider.h"
#include "compute/providers/http_call.h"

/* ---- operations in flight ---- */

#define GPD__OP_CALLS 16

typedef struct gpd__op gpd__op;

/* The ctx a call's callback receives: which op, which slot. */
typedef struct gpd__op_slot {
    gpd__op *op;
    unsigned idx;
} gpd__op_slot;

/* Which of the provider interface's operations an op is; the values show
 * in logs ("kind"). */
enum gpd__op_kind {
    GPD__OP_SEARCH,
    GPD__OP_CREATE,
    GPD__OP_STATUS,
    GPD__OP_DESTROY,
    GPD__OP_LIST,
    GPD__OP_EXTEND
};

/* The user's callback, by kind (DESTROY and EXTEND: done). */
typedef union gpd__op_cb {
    gpd_offers_cb offers;
    gpd_create_cb create;
    gpd_status_cb status;
    gpd_done_cb done;
    gpd_list_cb list;
} gpd__op_cb;

/* Embedded first in every provider operation. */
struct gpd__op {
    gpd__op *prev, *next;
    gpd__op **head;                       /* the provider's list */
    gpd_http_call *calls[GPD__OP_CALLS];  /* calls in flight, by slot */
    gpd__op_slot slots[GPD__OP_CALLS];
    unsigned pending;                     /* calls in flight */
    void (*destroy)(gpd__op *op);         /* frees the op (no callback) */
    gpd_provider *prov;                   /* loop, curl, and the name logs carry */
    const char *auth;                     /* "Name: value" header every call carries (copied), or NULL */
    enum gpd__op_kind kind;
    gpd__op_cb cb;                        /* set by the provider, by kind */
    void *ctx;
};

/* Link op into the provider's list (op is zeroed by the caller first). */
void gpd__op_link(gpd__op **head, gpd__op *op, void (*destroy)(gpd__op *op));
/* Start a call in slot idx; its callback gets &op->slots[idx] as ctx.
 * Returns 0, or -1 when out of memory (nothing will be called back). */
int gpd__op_call(gpd__op *op, unsigned idx, uv_loop_t *loop, gpd_curl *curl, const gpd_http_call_opts *o,
                 gpd_http_call_cb cb);
/* Report err/msg through cb on the next loop turn (an early failure). */
int gpd__op_fail_later(gpd__op *op, unsigned idx, uv_loop_t *loop, enum gpd_prov_err err, const char *msg,
                       gpd_http_call_cb cb);
/* In a call's callback: the op, the slot emptied; *idx (may be NULL) the slot. */
gpd__op *gpd__op_of(void *ctx, unsigned *idx);
/* Cancel the op's calls in flight (it stays linked). */
void gpd__op_cancel_calls(gpd__op *op);
/* The op is over: unlink it and cancel any calls left; its memory stays
 * for the caller to report from, then op->destroy(op).  Ending before the
 * user's callback means a provider freed inside that callback neither
 * sees the op nor outlives calls on its gpd_curl. */
void gpd__op_end(gpd__op *op);
/* Provider free: cancel every call and destroy every op, no callbacks. */
void gpd__op_cancel_all(gpd__op **head);

/* The plumbing every remote provider's operations share (http_call.c). */

/* A new op of `size` bytes (the provider's op type, gpd__op first), zeroed
 * and linked into head; the caller sets op->cb and op->auth.  NULL when out
 * of memory, logged as "<provider>: out of memory" (nothing is called back). */
gpd__op *gpd__op_new(size_t size, gpd_provider *prov, gpd__op **head, enum gpd__op_kind kind, void *ctx,
                     void (*destroy)(gpd__op *op));
/* End the op and report to the user's callback, then destroy the op.  msg
 * NULL reads "".  Only what the op's kind takes is passed on: the id for a
 * CREATE (NULL when empty), st for a STATUS, offers / list and n for a
 * SEARCH / LIST. */
void gpd__op_report(gpd__op *op, enum gpd_prov_err err, const char *msg);
void gpd__op_report_id(gpd__op *op, enum gpd_prov_err err, const char *msg, const char *id);
void gpd__op_report_status(gpd__op *op, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st);
void gpd__op_report_offers(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_offer *offers, size_t n);
void gpd__op_report_list(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_instance_status *list, size_t n);
/* Fail the op without calling back inside the caller: cancel its calls and
 * have cb receive err/msg (status 0) on the next loop turn, in slot 0.  When
 * even that cannot start (out of memory) the op ends and is destroyed with
 * no callback, logged as "<provider>: out of memory". */
void gpd__op_fail(gpd__op *op, enum gpd_prov_err err, const char *msg, gpd_http_call_cb cb);
/* Send method url in slot idx with the op's auth header, after delay_ms
 * (0: now); body is NUL-terminated and copied, NULL for none; idempotent as
 * in gpd_http_call_opts.  Returns 0, or -1 when the call could not start
 * (then nothing is called back for it). */
int gpd__op_send(gpd__op *op, unsigned idx, const char *method, const char *url, const char *body,
                 bool idempotent, uint64_t delay_ms, gpd_http_call_cb cb);
/* gpd__op_send in slot 0, now; when the call cannot start the op fails
 * through cb instead (gpd__op_fail: GPD_PROV_FAILED, "out of memory"). */
void gpd__op_send_or_fail(gpd__op *op, const char *method, const char *url, const char *body, bool idempotent,
                          gpd_http_call_cb cb);

/* ---- runtime recipes ---- */

/* Replace {model}, {port}, {gpus} in tmpl.  Returns 0, -1 when out is too small. */
int gpd__fill_template(const char *tmpl, const char *model, int port, int gpus, char *out, size_t outlen);
/* The runtime's args, filled in and split into words (shell-like: spaces
 * separate, '...' and "..." group, no expansion) as a JSON array; [] when none. */
json_t *gpd__runtime_args(const gpd_runtime *rt, const char *model, int gpus);
/* Quote s for a POSIX shell ('...'), appended to out; -1 when it does not fit. */
int gpd__shell_quote(const char *s, char *out, size_t outlen);
/* json_dumps compact; caller frees. */
char *gpd__json_compact(const json_t *j);
/* A JSON integer or numeric string as text (ids come as both); false when neither. */
bool gpd__json_id(const json_t *v, char *out, size_t outlen);
/* A JSON number or numeric string as a double; dflt when neither. */
double gpd__json_num(const json_t *v, double dflt);
/* Case-insensitive substring. */
bool gpd__contains_ci(const char *hay, const char *needle);

/* Remember which runtime port an instance serves on (status needs it, the
 * interface does not pass it): a small ring, oldest forgotten first. */
#define GPD__PORT_MEMO 256
typedef struct gpd__port_memo {
    char id[GPD__PORT_MEMO][64];
    int port[GPD__PORT_MEMO];
    unsigned next;
} gpd__port_memo;
void gpd__port_memo_put(gpd__port_memo *m, const char *id, int port);
int gpd__port_memo_get(const gpd__port_memo *m, const char *id); /* 0 when unknown */

/* ---- Vast.ai ---- */

/* Vast's gpu_name spellings for a normalised model, NULL-terminated; NULL when unknown. */
const char *const *gpd__vast_gpu_names(const char *model);
/* The POST /bundles/ query object for q (caller decrefs); NULL when q
 * cannot be asked of Vast (TPU, CPU, unknown model). */
json_t *gpd__vast_search_body(const gpd_offer_query *q);
/* Offers out of {"offers":[...]}, filtered against q, cheapest first.
 * Returns how many were written to out[0..max). */
size_t gpd__vast_parse_offers(const json_t *root, const gpd_offer_query *q, gpd_offer *out, size_t max);
/* The PUT /asks/{id}/ body (caller decrefs). */
json_t *gpd__vast_create_body(const gpd_instance_spec *spec, int disk_gb);
/* The create answer: the outcome, and the instance id whenever one was
 * made (also on error: the stopped-bid leak). */
enum gpd_prov_err gpd__vast_create_result(int status, const json_t *root, const char *body, size_t len,
                                          char *id, size_t idlen, char *msg, size_t msglen);
/* The one instance of GET /instances/{id}/ ({"instances":{...}}, a list
 * accepted too); NULL when there is none. */
const json_t *gpd__vast_one_instance(const json_t *root);
/* Map a Vast instance to our status; port_hint: the runtime port when known (0: guess). */
void gpd__vast_instance_status(const json_t *inst, int port_hint, gpd_instance_status *st);
/* The destroy answer: OK also for no_such_instance / 404. */
enum gpd_prov_err gpd__vast_destroy_result(int status, const char *body, size_t len);

/* ---- IO.net ---- */

typedef struct gpd__ionet_hw {
    long long id;
    char model[48];      /* normalised */
    int max_gpus;
    int available;
} gpd__ionet_hw;
/* Matching hardware out of /caas/hardware/max-gpus-per-container. */
size_t gpd__ionet_parse_hardware(const json_t *root, const gpd_offer_query *q, gpd__ionet_hw *out, size_t max);
typedef struct gpd__ionet_loc {
    long long id;
    char iso2[8];
    int replicas;
} gpd__ionet_loc;
/* Locations with capacity out of /caas/available-replicas, filtered by region. */
size_t gpd__ionet_parse_locations(const json_t *root, const char *region, gpd__ionet_loc *out, size_t max);
/* $/h out of /caas/price (the total for duration_hours); < 0 when absent. */
double gpd__ionet_parse_price(const json_t *root, int duration_hours);
/* The POST /caas/deploy body; NULL when the offer id is not "hw:loc". */
json_t *gpd__ionet_deploy_body(const gpd_instance_spec *spec);
/* The deployment id out of the deploy answer. */
bool gpd__ionet_deployment_id(const json_t *root, char *out, size_t outlen);
/* Map deployment + containers answers (containers may be NULL) to our status. */
void gpd__ionet_status(const json_t *deployment, const json_t *containers, gpd_instance_status *st);
/* State for a deployment status string alone ("running" counts as running). */
enum gpd_instance_state gpd__ionet_state_name(const char *status, bool have_url);
/* The deployments array of GET /caas/deployments, in any of its shapes. */
const json_t *gpd__ionet_deployments(const json_t *root);
/* Error kind for an IO.net error answer (no-capacity wording recognised). */
enum gpd_prov_err gpd__ionet_error(int status, const json_t *root, const char *body, size_t len);

/* ---- Google Cloud TPU ---- */

/* Chips in a TPU type: v5litepod-N / v5e / v6e count chips, v2/v3/v4/v5p
 * count TensorCores (2 per chip).  0 when the type is not recognised. */
int gpd__tpu_chips(const char *tpu_type);
/* List $/chip-hour for a TPU type (on-demand, and spot or -1). */
bool gpd__tpu_price(const char *tpu_type, double *on_demand, double *spot);
/* The default runtimeVersion for a TPU type. */
const char *gpd__tpu_runtime_version(const char *tpu_type);
/* True when a zone is in the region asked for (country code or prefix). */
bool gpd__tpu_zone_matches(const char *zone, const char *region);
/* The node create body (caller decrefs). */
json_t *gpd__tpu_create_body(const gpd_instance_spec *spec, const char *runtime_version);
/* A node id that GCP accepts, from our label. */
void gpd__tpu_node_id(const char *label, char *out, size_t outlen);
/* An Operation: done? and, when done with an error, its mapping and message. */
typedef struct gpd__gcp_op_result {
    bool done;
    enum gpd_prov_err err;
    char msg[256];
    char name[512];
} gpd__gcp_op_result;
void gpd__gcp_parse_operation(const json_t *root, gpd__gcp_op_result *out);
/* Map a node to our status; runtime_port used when networkEndpoints has none. */
void gpd__tpu_node_status(const json_t *node, int runtime_port, gpd_instance_status *st);

/* base64url without padding; returns the length written (out needs 4*ceil(n/3)+1). */
size_t gpd__base64url(const unsigned char *in, size_t n, char *out);
/* The signed RS256 JWT assertion a service account trades for a token
 * (caller frees); NULL on failure. */
char *gpd__gcp_jwt_assertion(EVP_PKEY *key, const char *key_id, const char *client_email, const char *scope,
                             const char *audience, long long now);
/* Read access_token and expires_in out of a token answer; false when absent. */
bool gpd__gcp_parse_token(const json_t *root, char *token, size_t toklen, long long *expires_in);

#endif
