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
    enum gpd_model_source {
        GPD_MODEL_FROM_API = 0,       /* registered at run time: persisted in the store */
        GPD_MODEL_FROM_CONFIG,        /* a static [[models]] entry: reloaded on SIGHUP */
        GPD_MODEL_FROM_RESERVATION    /* a reservation's port: the reservation restores it */
    } source;
} gpd_model_spec;

/* A runtime recipe from [runtimes.NAME]: how a model is served on reserved
 * compute.  Only configured runtimes can be started: no command ever comes
 * from an API caller. */
typedef struct gpd_runtime {
    char *name;
    char *image;                /* container image, for remote providers */
    char *command;              /* local provider: command line with {port} {model} {gpus} */
    int port;                   /* where the runtime listens inside the instance */
    char *health_path;          /* e.g. "/health" or "/v1/models" */
    char *args;                 /* arguments for the image's entrypoint, {model} {port} filled in */
} gpd_runtime;

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

    uint64_t provisioning_timeout_ms;   /* a reservation not active by then fails */
    uint64_t reconcile_interval_ms;
    uint64_t queue_recheck_ms;
    uint64_t poll_interval_ms;          /* provider status and runtime health polls */
    int64_t max_offers_per_provider;
    uint64_t capacity_cooldown_ms;      /* an offer that had no capacity is skipped this long */
    int64_t local_cpu_slots;            /* CPU slots the local provider offers without GPUs */
    char *tpu_runtime_version;
    char *gcp_access_token, *gcp_credentials_file;

    /* [runtimes.NAME] */
    gpd_runtime *runtimes;
    size_t n_runtimes;

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

const gpd_runtime *gpd_config_runtime(const gpd_config *cfg, const char *name);

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
