/*
 * The store: one interface, two engines.
 *
 *   sqlite.c    embedded default (GPUPROXYD_STORE=sqlite:PATH), WAL mode
 *   postgres.c  shared by several gpuproxyd instances (postgres://...), libpq
 *
 * Both run the same versioned migrations (migrations.c) at open, and the
 * same test suite runs against both.  Calls are synchronous and belong to
 * the control thread only: no worker ever touches the store.
 *
 * Records are rows with the columns the broker queries and counts on, plus
 * a JSON document ("doc") with everything else, so that the broker's
 * records can grow without a migration per field.
 *
 * Errors: functions return 0 on success, GPD_STORE_NOT_FOUND or
 * GPD_STORE_CONFLICT where stated, and -1 with err filled otherwise.
 * Strings returned in rows are owned by the row (gpd_store_*_row_free).
 */
#ifndef GPD_STORE_STORE_H
#define GPD_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GPD_STORE_NOT_FOUND 1
#define GPD_STORE_CONFLICT 2

typedef struct gpd_store gpd_store;

/* Open (and migrate) the store named by url: "sqlite:PATH", "sqlite::memory:",
 * or a "postgres://" / "postgresql://" URL. */
int gpd_store_open(const char *url, gpd_store **out, char *err, size_t errlen);
void gpd_store_close(gpd_store *s);
/* "sqlite" or "postgres" */
const char *gpd_store_engine(const gpd_store *s);
/* The schema version after migrations (for tests and /readyz). */
int gpd_store_schema_version(gpd_store *s, int *version, char *err, size_t errlen);

/* ---- model endpoints registered at run time ---- */

typedef struct gpd_store_model_row {
    char *name;
    int port;
    char *doc;          /* the registration, JSON */
    int64_t created_at; /* unix seconds */
} gpd_store_model_row;

/* Insert or replace by name. */
int gpd_store_model_put(gpd_store *s, const char *name, int port, const char *doc, char *err, size_t errlen);
/* GPD_STORE_NOT_FOUND when absent. */
int gpd_store_model_delete(gpd_store *s, const char *name, char *err, size_t errlen);
/* All rows, ordered by created_at then name; *rows is an array the caller
 * frees with gpd_store_model_rows_free. */
int gpd_store_model_list(gpd_store *s, gpd_store_model_row **rows, size_t *n, char *err, size_t errlen);
void gpd_store_model_rows_free(gpd_store_model_row *rows, size_t n);

/* ---- reservations ---- */

typedef struct gpd_store_res_row {
    char *id;            /* "res-..." */
    char *status;        /* queued | provisioning | active | released | expired | failed */
    char *provider;      /* chosen provider, "" while queued */
    char *compute_type;  /* gpu | tpu | cpu */
    int gpus;            /* GPUs held (counted against MAX_GPUS etc. while provisioning or active) */
    int tpus;            /* TPU chips held */
    double cost_per_hr;
    int64_t created_at, expires_at, updated_at; /* unix seconds; expires_at 0 = none yet */
    char *owner;         /* instance id of the gpuproxyd that drives it */
    char *doc;           /* everything else, JSON */
} gpd_store_res_row;

/* Insert a new reservation; GPD_STORE_CONFLICT when the id exists. */
int gpd_store_res_insert(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen);
/* Replace every column of an existing row; GPD_STORE_NOT_FOUND when absent. */
int gpd_store_res_update(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen);
int gpd_store_res_get(gpd_store *s, const char *id, gpd_store_res_row *out, char *err, size_t errlen);
/* Rows whose status is one of statuses (NULL-terminated; NULL = all),
 * ordered by created_at then id. */
int gpd_store_res_list(gpd_store *s, const char *const *statuses, gpd_store_res_row **rows, size_t *n, char *err,
                       size_t errlen);
void gpd_store_res_row_free(gpd_store_res_row *r);
void gpd_store_res_rows_free(gpd_store_res_row *rows, size_t n);

/* Capacity limits; a limit < 0 means none. */
typedef struct gpd_store_limits {
    int64_t max_gpus;            /* all providers */
    int64_t max_tpus;
    int64_t max_provider_gpus;   /* for the provider being claimed (MAX_VASTAI_GPUS...) */
} gpd_store_limits;

/*
 * Claim capacity for reservation r (already inserted) in one transaction:
 * sum the GPUs and TPUs held by reservations in provisioning or active
 * state (in total, and for r->provider), and if r's gpus/tpus fit under the
 * limits, update r's row (status, provider, gpus, tpus, doc...) as given and
 * commit.  Serialised across processes (SQLite: BEGIN IMMEDIATE;
 * PostgreSQL: a transaction-scoped advisory lock), so that limits hold for
 * several gpuproxyd instances sharing one database.
 * Returns 0 and *granted; when not granted, why says which limit
 * ("MAX_GPUS 8 reached: 6 held, 4 asked").
 */
int gpd_store_res_claim(gpd_store *s, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                        char *why, size_t whylen, char *err, size_t errlen);

/* Sums held now (provisioning + active), for metrics: per provider when
 * provider is non-NULL. */
int gpd_store_res_held(gpd_store *s, const char *provider, int64_t *gpus, int64_t *tpus, char *err, size_t errlen);

/* ---- provider instances (so that nothing paid for is forgotten) ---- */

typedef struct gpd_store_instance_row {
    char *provider;
    char *instance_id;   /* the provider's id */
    char *reservation_id;
    char *status;        /* creating | running | destroying | destroyed | failed */
    char *endpoint;      /* http://host:port of the runtime, "" until known */
    int64_t created_at, updated_at;
    char *doc;
} gpd_store_instance_row;

/* Insert or replace by (provider, instance_id). */
int gpd_store_instance_put(gpd_store *s, const gpd_store_instance_row *r, char *err, size_t errlen);
int gpd_store_instance_delete(gpd_store *s, const char *provider, const char *instance_id, char *err, size_t errlen);
/* reservation_id NULL = all instances. */
int gpd_store_instance_list(gpd_store *s, const char *reservation_id, gpd_store_instance_row **rows, size_t *n,
                            char *err, size_t errlen);
void gpd_store_instance_rows_free(gpd_store_instance_row *rows, size_t n);

#endif
