/*
 * The provider interface: one file per provider in compute/providers/
 * (vastai.c, ionet.c, gcp_tpu.c, openrouter.c, local.c) behind these five
 * operations.  Every operation is asynchronous and runs on the control
 * thread's loop (HTTP through libcurl multi, gpd_curl); its callback runs
 * later on that loop, exactly once, never inside the call itself.
 *
 * Everything a provider creates carries the label gpd_label_for() gives the
 * reservation ("gpd-<reservation id>"), so that reconciliation can find it
 * again after a crash and destroy what no live reservation owns.
 */
#ifndef GPD_COMPUTE_PROVIDER_H
#define GPD_COMPUTE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h" /* gpd_runtime: the [runtimes.NAME] recipes */
#include "http/curl_client.h"

/* Outcome of a provider call, coarse enough for the broker to decide. */
enum gpd_prov_err {
    GPD_PROV_OK = 0,
    GPD_PROV_NO_CAPACITY,   /* no machine for this offer now: try the next offer / provider */
    GPD_PROV_RATE_LIMITED,  /* 429 after the client's own retries: back off */
    GPD_PROV_TRANSIENT,     /* 5xx, timeout, connection failure: retry later */
    GPD_PROV_AUTH,          /* 401/403: the key is wrong; do not retry */
    GPD_PROV_QUOTA,         /* quota exceeded (GCP 403/429 quotaExceeded) */
    GPD_PROV_BAD_REQUEST,   /* 400/422: our request is wrong for this provider */
    GPD_PROV_NOT_FOUND,     /* the instance does not exist (counts as destroyed on delete) */
    GPD_PROV_UNSUPPORTED,   /* this provider cannot do that (e.g. TPUs on Vast.ai) */
    GPD_PROV_FAILED         /* anything else */
};
const char *gpd_prov_err_name(enum gpd_prov_err e);

/* What the broker asks for. */
typedef struct gpd_offer_query {
    const char *compute_type;   /* "gpu" | "tpu" | "cpu" */
    const char *gpu_model;      /* normalised name from gpd_gpu_models, e.g. "H100"; NULL = any */
    const char *tpu_type;       /* e.g. "v5litepod-8" (TPUs) */
    int count;                  /* GPUs (or TPU chips) wanted in one instance */
    const char *region;         /* ISO country ("US") or zone prefix ("us-central1"); NULL = any */
    double max_cost_per_hr;     /* <= 0: no cap */
    int duration_hours;         /* for providers that bill a duration up front (IO.net) */
    int limit;                  /* at most this many offers back (the broker walks them in order) */
} gpd_offer_query;

/* One way to get the compute, as a provider offers it. */
typedef struct gpd_offer {
    char provider[16];
    char id[96];                /* provider's handle: Vast ask id, "hardware_id:location_id" for IO.net, zone for TPU */
    char gpu_model[48];         /* normalised, e.g. "H100", "RTX4090", "v5litepod-8", "cpu" */
    char compute_type[8];
    int count;
    double price_per_hr;        /* total $/h for count units (on-demand) */
    double spot_price_per_hr;   /* < 0: none */
    char region[48];            /* ISO country code, or zone */
    double reliability;         /* 0-1, < 0 unknown */
    int available;              /* units the provider says are free, -1 unknown */
} gpd_offer;

/* What to create. */
typedef struct gpd_instance_spec {
    const char *reservation_id;
    const char *label;          /* "gpd-res-..." */
    const gpd_offer *offer;
    const gpd_runtime *runtime;
    const char *model;          /* model the runtime serves (labels.model_name), may be NULL */
    int duration_hours;
    bool spot;
} gpd_instance_spec;

enum gpd_instance_state {
    GPD_INSTANCE_PENDING = 0,   /* creating, loading, provisioning */
    GPD_INSTANCE_RUNNING,       /* up; the endpoint is known */
    GPD_INSTANCE_FAILED,        /* terminal failure (image failed, exited, FAILED...) */
    GPD_INSTANCE_STOPPED,       /* stopped or preempted (outbid, PREEMPTED): terminal for us */
    GPD_INSTANCE_GONE           /* not found */
};
const char *gpd_instance_state_name(enum gpd_instance_state s);

typedef struct gpd_instance_status {
    char id[128];
    enum gpd_instance_state state;
    char endpoint[256];         /* "http://host:port" of the runtime, once running */
    char label[96];             /* our label, when the provider reports it */
    char message[256];          /* provider's status text (status_msg, container event...) */
    double cost_per_hr;         /* < 0 unknown */
} gpd_instance_status;

typedef struct gpd_provider gpd_provider;

typedef void (*gpd_offers_cb)(void *ctx, enum gpd_prov_err err, const char *msg, gpd_offer *offers, size_t n);
typedef void (*gpd_create_cb)(void *ctx, enum gpd_prov_err err, const char *msg, const char *instance_id);
typedef void (*gpd_status_cb)(void *ctx, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st);
typedef void (*gpd_done_cb)(void *ctx, enum gpd_prov_err err, const char *msg);
typedef void (*gpd_list_cb)(void *ctx, enum gpd_prov_err err, const char *msg, gpd_instance_status *list, size_t n);

typedef struct gpd_provider_ops {
    const char *name;           /* "vastai", "ionet", "gcp_tpu", "openrouter", "local" */
    void (*search)(gpd_provider *p, const gpd_offer_query *q, gpd_offers_cb cb, void *ctx);
    /* On failure a create that still made an instance reports its id too
     * (Vast.ai's stopped-bid case): the broker destroys it. */
    void (*create)(gpd_provider *p, const gpd_instance_spec *spec, gpd_create_cb cb, void *ctx);
    void (*status)(gpd_provider *p, const char *instance_id, gpd_status_cb cb, void *ctx);
    /* "Not found" is success. */
    void (*destroy)(gpd_provider *p, const char *instance_id, gpd_done_cb cb, void *ctx);
    /* Every instance of ours (labelled "gpd-..."), for reconciliation. */
    void (*list_ours)(gpd_provider *p, gpd_list_cb cb, void *ctx);
    /* Lengthen a prepaid instance (IO.net); NULL when not needed. */
    void (*extend)(gpd_provider *p, const char *instance_id, int hours, gpd_done_cb cb, void *ctx);
    void (*free)(gpd_provider *p);
} gpd_provider_ops;

/* Common part of every provider; each provider file extends it. */
struct gpd_provider {
    const gpd_provider_ops *ops;
    uv_loop_t *loop;
    gpd_curl *curl;
    char *base_url;             /* no trailing slash */
    char *api_key;              /* NULL when not configured (calls fail with GPD_PROV_AUTH) */
};

/* The label for a reservation's instances. */
void gpd_label_for(const char *reservation_id, char *out, size_t outlen);
/* True for labels we create ("gpd-"), so reconciliation never touches others' instances. */
bool gpd_label_is_ours(const char *label);

/* Normalise a GPU name ("NVIDIA H100 80GB HBM3", "H100 SXM", "RTX 4090") to
 * the broker's list ("H100", "RTX4090"); NULL when unknown. */
const char *gpd_gpu_model_normalise(const char *name);
/* The known GPU models, NULL-terminated. */
extern const char *const gpd_gpu_models[];

/* ---- Constructors of the remote providers (compute/providers/), added
 * with their implementation.  base_url: the API root, a trailing '/'
 * ignored (tests point it at local fakes).  A NULL or empty key (token,
 * credentials) makes every call fail with GPD_PROV_AUTH.  Returns NULL
 * only when out of memory.  ops->free aborts what is in flight: no
 * callbacks follow; the loop must still run to close handles. */

/* Vast.ai: api_key is sent as "Authorization: Bearer KEY". */
/* The local machine: its GPUs (NVML or nvidia-smi) or CPU slots. */
gpd_provider *gpd_local_new(uv_loop_t *loop, const gpd_config *cfg);
gpd_provider *gpd_vastai_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *api_key);
/* Disk to ask for with each Vast.ai instance, GB (default 80). */
void gpd_vastai_set_disk_gb(gpd_provider *p, int disk_gb);

/* IO.net: api_key is sent as "x-api-key: KEY". */
gpd_provider *gpd_ionet_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *api_key);

/* Google Cloud TPU v2 in one zone.  access_token (GCP_ACCESS_TOKEN) is used
 * as is; otherwise credentials_file (GOOGLE_APPLICATION_CREDENTIALS), a
 * service-account JSON key, is read now and traded for tokens as needed. */
gpd_provider *gpd_gcp_tpu_new(uv_loop_t *loop, gpd_curl *curl, const char *base_url, const char *project,
                              const char *zone, const char *access_token, const char *credentials_file);
/* runtimeVersion for new nodes (NULL: a default per TPU generation). */
void gpd_gcp_tpu_set_runtime_version(gpd_provider *p, const char *runtime_version);
/* Override the built-in list price of a TPU type, $ per chip-hour (spot < 0: none). */
void gpd_gcp_tpu_set_price(gpd_provider *p, const char *tpu_type, double per_chip_hr, double spot_per_chip_hr);

#endif
