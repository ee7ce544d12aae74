/*
 * The admin API, served on the control thread: JSON in, calls into the
 * registry (and, with later issues, compute/ and distill/), JSON out.
 */
#ifndef GPD_API_ADMIN_H
#define GPD_API_ADMIN_H

#include <jansson.h>

#include "compute/broker.h"
#include "gateway/gateway.h"
#include "gateway/registry.h"
#include "store/store.h"

/* Set what the handlers work on (control thread, before workers start). */
void gpd_admin_init(gpd_registry *r, gpd_store *s, gpd_broker *b);
/* gpd_gateway.admin: answer one call and reply to its worker. */
void gpd_admin_handle(gpd_admin_call *call);

/* Answer helpers (take the JSON). */
void gpd_api_reply_json(gpd_admin_call *call, int status, json_t *body);
void gpd_api_reply_error(gpd_admin_call *call, int status, const char *code, const char *msg);

/* models.c: /api/v1/models; false when the path is not theirs. */
void gpd_api_models_init(gpd_registry *r, gpd_store *s);
bool gpd_api_models(gpd_admin_call *call);
int gpd_api_models_restore(char *err, size_t errlen);
/* compute.c: /api/v1/compute/... */
void gpd_api_compute_init(gpd_broker *b);
bool gpd_api_compute(gpd_admin_call *call);

#endif
