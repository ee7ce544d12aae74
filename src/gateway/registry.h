/*
 * The model registry, on the control thread: every model endpoint (from
 * the config and registered at run time), their ports and listeners, and
 * the publishing of a new endpoint table to the workers after each change.
 */
#ifndef GPD_GATEWAY_REGISTRY_H
#define GPD_GATEWAY_REGISTRY_H

#include "compute/ports.h"
#include "core/config.h"
#include "gateway/table.h"
#include "net/worker.h"

typedef struct gpd_price {
    char *id;
    double prompt, completion;   /* USD per token */
} gpd_price;

typedef struct gpd_registry {
    const gpd_config *cfg;
    gpd_ports ports;
    gpd_listener *main_listener;
    gpd_endpoint **eps;           /* in registration order */
    size_t n, cap;
    gpd_endpoint **by_port;       /* 65536 slots */
    struct gpd_name_index *by_name;
    gpd_worker **workers;
    int nworkers;
    uint64_t version;
    gpd_target *openrouter;      /* shared target of every hosted model */
    gpd_price *prices;           /* OpenRouter's /models pricing */
    size_t n_prices;
    int hold;                    /* > 0: batch changes, publish once at the end */
    bool dirty;
} gpd_registry;

int gpd_registry_init(gpd_registry *r, const gpd_config *cfg, gpd_listener *main_listener, gpd_worker **workers,
                      int nworkers, char *err, size_t errlen);
void gpd_registry_free(gpd_registry *r);

/*
 * Add a model (takes ownership of *spec, which is zeroed).  Returns an HTTP
 * status: 201, 400 (bad spec), 409 (name or port taken), 500; err says why.
 */
int gpd_registry_add(gpd_registry *r, gpd_model_spec *spec, char *err, size_t errlen);
/* Remove by name: 200, or 404. */
int gpd_registry_remove(gpd_registry *r, const char *name);
const gpd_endpoint *gpd_registry_find(const gpd_registry *r, const char *name);

/* SIGHUP: make the static models match cfg->models; run-time ones stay. */
int gpd_registry_reload(gpd_registry *r, const gpd_config *cfg, char *err, size_t errlen);

/* Replace OpenRouter's pricing (takes ownership of the array). */
void gpd_registry_set_prices(gpd_registry *r, gpd_price *prices, size_t n);

void gpd_registry_hold(gpd_registry *r);
void gpd_registry_release(gpd_registry *r); /* publishes if anything changed */
void gpd_registry_publish(gpd_registry *r);

#endif
