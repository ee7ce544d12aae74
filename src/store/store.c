/*
 * The engine-independent half of the store: choosing the engine from the
 * URL, checking arguments once for both engines, the capacity rule of
 * gpd_store_res_claim, and freeing rows.
 */
#include "store/store_internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t system_now(void)
{
    return (int64_t)time(NULL);
}

int64_t (*gpd__store_now)(void) = system_now;

int gpd__store_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *gpd__store_strdup(const char *s)
{
    return strdup(s ? s : "");
}

int gpd__store_grow(void **rows, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    if (ncap > SIZE_MAX / elem)
        return -1;
    void *p = realloc(*rows, ncap * elem);
    if (!p)
        return -1;
    *rows = p;
    *cap = ncap;
    return 0;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int gpd_store_open(const char *url, gpd_store **out, char *err, size_t errlen)
{
    gpd_store *s = NULL;
    int rc = -1;

    *out = NULL;
    if (!url || !*url) {
        gpd__store_fail(err, errlen, "store URL is empty");
        goto out;
    }
    if (has_prefix(url, "sqlite:")) {
        const char *path = url + strlen("sqlite:");
        if (!*path) {
            gpd__store_fail(err, errlen, "store URL \"sqlite:\" names no file (sqlite:PATH or sqlite::memory:)");
            goto out;
        }
        if (gpd__sqlite_open(path, &s, err, errlen) != 0)
            goto out;
    } else if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://")) {
        if (gpd__postgres_open(url, &s, err, errlen) != 0)
            goto out;
    } else {
        /* Only the scheme: the rest may hold a password. */
        const char *colon = strchr(url, ':');
        int scheme_len = colon ? (int)(colon - url) : (int)strlen(url);
        if (scheme_len > 32)
            scheme_len = 32;
        gpd__store_fail(err, errlen,
                        "store URL scheme \"%.*s\" is not known (sqlite:PATH, postgres:// or postgresql://)",
                        scheme_len, url);
        goto out;
    }
    if (gpd__store_migrate(s, err, errlen) != 0)
        goto out;
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (s)
        s->ops->close(s);
    return rc;
}

void gpd_store_close(gpd_store *s)
{
    if (s)
        s->ops->close(s);
}

const char *gpd_store_engine(const gpd_store *s)
{
    return s->ops->engine;
}

int gpd_store_schema_version(gpd_store *s, int *version, char *err, size_t errlen)
{
    int64_t v = 0;
    if (s->ops->query_int(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &v, err, errlen) != 0)
        return -1;
    *version = (int)v;
    return 0;
}

/* ---- models ---- */

int gpd_store_model_put(gpd_store *s, const char *name, int port, const char *doc, char *err, size_t errlen)
{
    if (!name || !*name)
        return gpd__store_fail(err, errlen, "model name is empty");
    return s->ops->model_put(s, name, port, doc ? doc : "", gpd__store_now(), err, errlen);
}

int gpd_store_model_delete(gpd_store *s, const char *name, char *err, size_t errlen)
{
    if (!name)
        return gpd__store_fail(err, errlen, "model name is missing");
    return s->ops->model_delete(s, name, err, errlen);
}

int gpd_store_model_list(gpd_store *s, gpd_store_model_row **rows, size_t *n, char *err, size_t errlen)
{
    *rows = NULL;
    *n = 0;
    return s->ops->model_list(s, rows, n, err, errlen);
}

void gpd_store_model_rows_free(gpd_store_model_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++) {
        free(rows[i].name);
        free(rows[i].doc);
    }
    free(rows);
}

/* ---- reservations ---- */

int gpd_store_res_insert(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    if (!r->id || !*r->id)
        return gpd__store_fail(err, errlen, "reservation id is empty");
    return s->ops->res_insert(s, r, err, errlen);
}

int gpd_store_res_update(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    if (!r->id || !*r->id)
        return gpd__store_fail(err, errlen, "reservation id is empty");
    return s->ops->res_update(s, r, err, errlen);
}

int gpd_store_res_get(gpd_store *s, const char *id, gpd_store_res_row *out, char *err, size_t errlen)
{
    /* Zeroed first so that gpd_store_res_row_free is safe whatever the
     * outcome. */
    memset(out, 0, sizeof(*out));
    if (!id)
        return gpd__store_fail(err, errlen, "reservation id is missing");
    return s->ops->res_get(s, id, out, err, errlen);
}

int gpd_store_res_list(gpd_store *s, const char *const *statuses, gpd_store_res_row **rows, size_t *n, char *err,
                       size_t errlen)
{
    size_t nstatuses = 0;

    *rows = NULL;
    *n = 0;
    if (statuses) {
        while (statuses[nstatuses])
            nstatuses++;
        if (nstatuses == 0)
            return 0; /* "one of no statuses" matches nothing */
        if (nstatuses > GPD__STORE_MAX_STATUSES)
            return gpd__store_fail(err, errlen, "%zu statuses asked; at most %d", nstatuses,
                                   GPD__STORE_MAX_STATUSES);
    }
    return s->ops->res_list(s, statuses, nstatuses, rows, n, err, errlen);
}

void gpd_store_res_row_free(gpd_store_res_row *r)
{
    if (!r)
        return;
    free(r->id);
    free(r->status);
    free(r->provider);
    free(r->compute_type);
    free(r->owner);
    free(r->doc);
    memset(r, 0, sizeof(*r));
}

void gpd_store_res_rows_free(gpd_store_res_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        gpd_store_res_row_free(&rows[i]);
    free(rows);
}

/* The environment variable's spelling of a provider's limit:
 * "vastai" -> "MAX_VASTAI_GPUS", "io.net" -> "MAX_IO_NET_GPUS". */
static void provider_limit_name(const char *provider, char *buf, size_t buflen)
{
    size_t o = 0;
    const char *prefix = "MAX_", *suffix = "_GPUS";

    for (const char *p = prefix; *p && o + 1 < buflen; p++)
        buf[o++] = *p;
    for (const char *p = provider; *p && o + 1 < buflen && o < 40; p++)
        buf[o++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
    for (const char *p = suffix; *p && o + 1 < buflen; p++)
        buf[o++] = *p;
    buf[o] = '\0';
}

bool gpd__store_claim_fits(const gpd_store_res_row *r, const gpd_store_limits *lim, int64_t held_gpus,
                           int64_t held_tpus, int64_t held_provider_gpus, char *why, size_t whylen)
{
    int64_t gpus = r->gpus, tpus = r->tpus;

    /* A dimension the claim does not ask for is not checked: lowering a
     * limit below what is already held must not block claims of another
     * kind. */
    if (gpus > 0 && lim->max_gpus >= 0 && held_gpus + gpus > lim->max_gpus) {
        snprintf(why, whylen, "MAX_GPUS %" PRId64 " reached: %" PRId64 " held, %" PRId64 " asked", lim->max_gpus,
                 held_gpus, gpus);
        return false;
    }
    if (gpus > 0 && lim->max_provider_gpus >= 0 && held_provider_gpus + gpus > lim->max_provider_gpus) {
        char name[64];
        provider_limit_name(r->provider ? r->provider : "", name, sizeof(name));
        snprintf(why, whylen, "%s %" PRId64 " reached: %" PRId64 " held, %" PRId64 " asked", name,
                 lim->max_provider_gpus, held_provider_gpus, gpus);
        return false;
    }
    if (tpus > 0 && lim->max_tpus >= 0 && held_tpus + tpus > lim->max_tpus) {
        snprintf(why, whylen, "MAX_TPUS %" PRId64 " reached: %" PRId64 " held, %" PRId64 " asked", lim->max_tpus,
                 held_tpus, tpus);
        return false;
    }
    return true;
}

int gpd_store_res_claim(gpd_store *s, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                        char *why, size_t whylen, char *err, size_t errlen)
{
    char scratch[8];

    *granted = false;
    /* why is optional for callers that only want the answer. */
    if (!why || !whylen) {
        why = scratch;
        whylen = sizeof(scratch);
    }
    why[0] = '\0';
    if (!r->id || !*r->id)
        return gpd__store_fail(err, errlen, "reservation id is empty");
    if (r->gpus < 0 || r->tpus < 0)
        return gpd__store_fail(err, errlen, "reservation %s asks for a negative count", r->id);
    return s->ops->res_claim(s, r, lim, granted, why, whylen, err, errlen);
}

int gpd_store_res_held(gpd_store *s, const char *provider, int64_t *gpus, int64_t *tpus, char *err, size_t errlen)
{
    *gpus = 0;
    *tpus = 0;
    return s->ops->res_held(s, provider, gpus, tpus, err, errlen);
}

/* ---- instances ---- */

int gpd_store_instance_put(gpd_store *s, const gpd_store_instance_row *r, char *err, size_t errlen)
{
    if (!r->provider || !*r->provider || !r->instance_id || !*r->instance_id)
        return gpd__store_fail(err, errlen, "instance provider or id is empty");
    return s->ops->instance_put(s, r, err, errlen);
}

int gpd_store_instance_delete(gpd_store *s, const char *provider, const char *instance_id, char *err, size_t errlen)
{
    if (!provider || !instance_id)
        return gpd__store_fail(err, errlen, "instance provider or id is missing");
    return s->ops->instance_delete(s, provider, instance_id, err, errlen);
}

int gpd_store_instance_list(gpd_store *s, const char *reservation_id, gpd_store_instance_row **rows, size_t *n,
                            char *err, size_t errlen)
{
    *rows = NULL;
    *n = 0;
    return s->ops->instance_list(s, reservation_id, rows, n, err, errlen);
}

void gpd_store_instance_rows_free(gpd_store_instance_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++) {
        free(rows[i].provider);
        free(rows[i].instance_id);
        free(rows[i].reservation_id);
        free(rows[i].status);
        free(rows[i].endpoint);
        free(rows[i].doc);
    }
    free(rows);
}
