/*
 * The daemon's configuration: the TOML file, then the environment
 * variables that override it (by the names DESIGN.md fixes), then
 * validation.  Every refusal names the file, line and key (or the
 * variable) and the reason.
 *
 * Ownership: gpd_config_load fills *cfg; gpd_config_free releases it.
 */
#ifndef GPD_CORE_CONFIG_H
#define GPD_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hosted models (OpenRouter) and custom models live in separate port tiers. */
enum gpd_tier { GPD_TIER_HOSTED = 0, GPD_TIER_CUSTOM = 1, GPD_TIER_COUNT };

#define GPD_MAX_UPSTREAMS 16

/* One model endpoint, as the config or the admin API describes it. */
typedef struct gpd_model_spec {
    char *name;
    enum gpd_tier tier;           /* HOSTED when provider = "openrouter" */
    char *upstream_model;         /* sent upstream in place of "model"; NULL keeps the client's */
    char *upstream_urls[GPD_MAX_UPSTREAMS];
    size_t n_upstreams;           /* 0 for hosted models: the OpenRouter base URL is used */
    int port;                     /* 0: allocate from the tier's range */
    double prompt_usd_per_mtok;   /* < 0: unknown (hosted models then use OpenRouter's pricing) */
    double completion_usd_per_mtok;
    bool from_config;             /* static [[models]] entry (reloaded on SIGHUP) vs registered at run time */
} gpd_model_spec;

typedef struct gpd_config {
    char *path;

    /* [server] */
    char *listen_host;            /* "127.0.0.1" */
    int listen_port;              /* 8080 */
    char *model_host;             /* where model ports bind; default listen_host */
    int workers;                  /* resolved: > 0 */
    uint64_t max_header_bytes;
    uint64_t max_body;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t upstream_connect_timeout_ms;
    uint64_t upstream_timeout_ms;
    uint64_t drain_timeout_ms;
    bool access_log;
    char *log_level;
    char *ca_file;

    /* [ports] */
    int port_min[GPD_TIER_COUNT];
    int port_max[GPD_TIER_COUNT];

    /* [providers.*] */
    char *openrouter_base_url;
    char *openrouter_api_key;     /* only from OPENROUTER_API_KEY or the file; never logged */
    uint64_t openrouter_pricing_refresh_ms;
    char *vastai_base_url, *vastai_api_key;
    char *ionet_base_url, *ionet_api_key;
    char *gcp_tpu_base_url, *gcp_project, *gcp_zone;

    /* [compute] */
    int64_t max_gpus, max_tpus, max_vastai_gpus, max_ionet_gpus;

    /* [distillation] */
    bool distillation_enabled;
    char *distillation_mode;
    double confidence_threshold;
    int64_t max_training_examples;

    /* [auth] */
    bool jwt_enabled;
    char *jwt_secret;

    /* [store] */
    char *store_url;

    /* [[models]] */
    gpd_model_spec *models;
    size_t n_models;
} gpd_config;

/* Load path (NULL: defaults only), apply the environment, validate.
 * Returns 0, or -1 with err set. */
int gpd_config_load(const char *path, gpd_config *cfg, char *err, size_t errlen);
void gpd_config_free(gpd_config *cfg);

/* Validate and normalise a model spec (name, URLs, port range); shared by
 * the config and the admin API so that both refuse the same things.
 * Returns 0, or -1 with err naming the field. */
int gpd_model_spec_validate(gpd_model_spec *m, const gpd_config *cfg, char *err, size_t errlen);
void gpd_model_spec_free(gpd_model_spec *m);
/* Deep copy (dst must be uninitialised). Returns 0 or -1 on allocation failure. */
int gpd_model_spec_copy(gpd_model_spec *dst, const gpd_model_spec *src);

const char *gpd_tier_name(enum gpd_tier t); /* "hosted" / "custom" */

#endif
