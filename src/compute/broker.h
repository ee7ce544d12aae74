/*
 * The compute broker, on the control thread: reservations from request to
 * release.
 *
 *   reserve    validate, then place: pick providers (selection.c), walk their
 *              offers (bounded, skipping offers that just had no capacity),
 *              claim capacity in the store (limits hold across instances),
 *              create, wait for the instance, wait for the runtime's health,
 *              open the reservation's port; or queue when nothing fits
 *   timers     provisioning deadline, expiry, queue re-check, reconciliation
 *   release    destroy, close the port; "not found" counts as destroyed
 *
 * Every state change is written to the store before it is acted on, and
 * every instance carries the reservation's label, so that after a crash
 * reconciliation finds what is ours: instances no live reservation owns are
 * destroyed, reservations whose instances vanished are failed, active ones
 * get their ports back.
 */
#ifndef GPD_COMPUTE_BROKER_H
#define GPD_COMPUTE_BROKER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "compute/provider.h"
#include "core/config.h"
#include "gateway/registry.h"
#include "metrics/metrics.h"
#include "store/store.h"

typedef struct gpd_broker gpd_broker;

/* The broker's gauges are gpd_compute_metrics (metrics/metrics.h). */
#define gpd_broker_metrics gpd_compute_metrics
#define gpd_broker_provider_names gpd_compute_provider_names

/* Create the broker: providers from cfg (those with credentials), state from
 * the store (reopening active reservations' ports), reconciliation at once. */
gpd_broker *gpd_broker_new(uv_loop_t *loop, gpd_curl *curl, const gpd_config *cfg, gpd_store *store,
                           gpd_registry *registry, char *err, size_t errlen);
/* Stop timers and in-flight work (instances stay: they are in the store). */
void gpd_broker_free(gpd_broker *b);
/* Shutdown: end local runtime processes (they must not outlive the daemon). */
void gpd_broker_shutdown(gpd_broker *b);

/*
 * The admin API, as JSON in and JSON out.  Each returns an HTTP status and
 * sets *out (caller decrefs): the reservation, a list, or an OpenAI-shaped
 * error whose message names the offending field.
 */
int gpd_broker_reserve(gpd_broker *b, json_t *request, json_t **out);
int gpd_broker_get(gpd_broker *b, const char *id, json_t **out);
int gpd_broker_list(gpd_broker *b, const char *status_filter, json_t **out);
int gpd_broker_release(gpd_broker *b, const char *id, json_t **out);
int gpd_broker_extend(gpd_broker *b, const char *id, json_t *request, json_t **out);

/* Run reconciliation now (tests, SIGHUP). */
void gpd_broker_reconcile(gpd_broker *b);

#endif
