/*
 * Inside the store: what store.c, migrations.c and the two engines share.
 * Nothing outside src/store/ includes this, except the store's unit tests.
 *
 * Each engine's handle embeds struct gpd_store as its first member and
 * points it at the engine's operation table; store.c's public functions
 * only check arguments and dispatch.
 */
#ifndef GPD_STORE_STORE_INTERNAL_H
#define GPD_STORE_STORE_INTERNAL_H

#include "store/store.h"

/* The statuses whose GPUs and TPUs count against the limits, as SQL. */
#define GPD__STORE_HELD_STATUSES "'provisioning', 'active'"

typedef struct gpd__store_ops {
    const char *engine; /* "sqlite" or "postgres" */
    void (*close)(gpd_store *s);

    /* For migrations.c: run SQL without parameters (several statements
     * allowed), and read one integer from a one-row, one-column query. */
    int (*exec)(gpd_store *s, const char *sql, char *err, size_t errlen);
    int (*query_int)(gpd_store *s, const char *sql, int64_t *v, char *err, size_t errlen);
    /* Serialise migrating across processes: lock before the first
     * migration and unlock after the last (NULL: nothing to do, as with
     * SQLite, whose BEGIN IMMEDIATE already serialises writers). */
    int (*migrate_lock)(gpd_store *s, char *err, size_t errlen);
    int (*migrate_unlock)(gpd_store *s, char *err, size_t errlen);
    const char *begin_sql; /* opens a migration's transaction */

    int (*model_put)(gpd_store *s, const char *name, int port, const char *doc, int64_t now, char *err,
                     size_t errlen);
    int (*model_delete)(gpd_store *s, const char *name, char *err, size_t errlen);
    int (*model_list)(gpd_store *s, gpd_store_model_row **rows, size_t *n, char *err, size_t errlen);

    int (*res_insert)(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen);
    int (*res_update)(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen);
    int (*res_get)(gpd_store *s, const char *id, gpd_store_res_row *out, char *err, size_t errlen);
    /* statuses: NULL for all, else nstatuses > 0 entries. */
    int (*res_list)(gpd_store *s, const char *const *statuses, size_t nstatuses, gpd_store_res_row **rows,
                    size_t *n, char *err, size_t errlen);
    int (*res_claim)(gpd_store *s, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                     char *why, size_t whylen, char *err, size_t errlen);
    int (*res_held)(gpd_store *s, const char *provider, int64_t *gpus, int64_t *tpus, char *err, size_t errlen);

    int (*instance_put)(gpd_store *s, const gpd_store_instance_row *r, char *err, size_t errlen);
    int (*instance_delete)(gpd_store *s, const char *provider, const char *instance_id, char *err, size_t errlen);
    int (*instance_list)(gpd_store *s, const char *reservation_id, gpd_store_instance_row **rows, size_t *n,
                         char *err, size_t errlen);
} gpd__store_ops;

struct gpd_store {
    const gpd__store_ops *ops;
};

/* The most statuses one gpd_store_res_list call may filter on (there are
 * six; a longer list is a caller's bug). */
#define GPD__STORE_MAX_STATUSES 16

/* Engines.  url is the whole URL as given; sqlite's path is after "sqlite:". */
int gpd__sqlite_open(const char *path, gpd_store **out, char *err, size_t errlen);
int gpd__postgres_open(const char *url, gpd_store **out, char *err, size_t errlen);

/* migrations.c: bring the schema to the newest version; 0 or -1. */
int gpd__store_migrate(gpd_store *s, char *err, size_t errlen);
/* The newest version migrations.c knows (what a fresh store reaches). */
int gpd__store_latest_version(void);

/* The clock rows are stamped with (unix seconds); tests replace it. */
extern int64_t (*gpd__store_now)(void);

/* snprintf into err when err is non-NULL; always returns -1. */
int gpd__store_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* strdup that turns NULL into "" (rows are NULL-free); NULL only when out
 * of memory. */
char *gpd__store_strdup(const char *s);

/* Given the sums held by others, does r fit under lim?  When it does not,
 * why says which limit ("MAX_GPUS 8 reached: 6 held, 4 asked"). */
bool gpd__store_claim_fits(const gpd_store_res_row *r, const gpd_store_limits *lim, int64_t held_gpus,
                           int64_t held_tpus, int64_t held_provider_gpus, char *why, size_t whylen);

/* Grow a row array of elem-sized entries to hold at least need; 0 or -1. */
int gpd__store_grow(void **rows, size_t *cap, size_t need, size_t elem);

#endif
