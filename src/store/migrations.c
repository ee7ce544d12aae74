/*
 * Versioned migrations, the same for both engines.
 *
 * Each migration is applied at most once, in its own transaction, and
 * recorded in schema_migrations(version, applied_at) in that same
 * transaction, so a crash leaves either all of it or none of it.  A
 * migration is never edited once released: a change is a new version.
 *
 * Two processes may open one database at the same moment (two gpuproxyd
 * instances starting together).  PostgreSQL: the engine's migrate_lock
 * takes a session advisory lock around the whole run.  SQLite: each
 * migration's transaction is BEGIN IMMEDIATE, which takes the database's
 * write lock before reading schema_migrations, so the second process
 * waits (busy_timeout) and then finds the version already applied.
 *
 * The SQL keeps to what both engines accept alike: TEXT, BIGINT, DOUBLE
 * PRECISION, PRIMARY KEY, CREATE INDEX.  A migration that cannot may give
 * per-engine text in sqlite_sql / postgres_sql instead of sql.  The
 * CREATEs deliberately lack IF NOT EXISTS: running one twice is a bug
 * that should fail loudly, not pass silently.
 */
#include "store/store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct migration {
    int version;
    const char *sql;        /* both engines, unless one of the next two is set */
    const char *sqlite_sql; /* SQLite only */
    const char *postgres_sql;
} migration;

static const migration migrations[] = {
    {
        1,
        "CREATE TABLE models ("
        " name TEXT PRIMARY KEY,"
        " port BIGINT NOT NULL DEFAULT 0,"
        " doc TEXT NOT NULL DEFAULT '',"
        " created_at BIGINT NOT NULL DEFAULT 0);",
        NULL,
        NULL,
    },
    {
        2,
        "CREATE TABLE reservations ("
        " id TEXT PRIMARY KEY,"
        " status TEXT NOT NULL DEFAULT '',"
        " provider TEXT NOT NULL DEFAULT '',"
        " compute_type TEXT NOT NULL DEFAULT '',"
        " gpus BIGINT NOT NULL DEFAULT 0,"
        " tpus BIGINT NOT NULL DEFAULT 0,"
        " cost_per_hr DOUBLE PRECISION NOT NULL DEFAULT 0,"
        " created_at BIGINT NOT NULL DEFAULT 0,"
        " expires_at BIGINT NOT NULL DEFAULT 0,"
        " updated_at BIGINT NOT NULL DEFAULT 0,"
        " owner TEXT NOT NULL DEFAULT '',"
        " doc TEXT NOT NULL DEFAULT '');"
        /* Listing by status, and the claim's sums (status IN held, and
         * provider = ?) read only the few rows that hold capacity. */
        "CREATE INDEX reservations_status_idx ON reservations (status);"
        "CREATE INDEX reservations_status_provider_idx ON reservations (status, provider);",
        NULL,
        NULL,
    },
    {
        3,
        "CREATE TABLE instances ("
        " provider TEXT NOT NULL,"
        " instance_id TEXT NOT NULL,"
        " reservation_id TEXT NOT NULL DEFAULT '',"
        " status TEXT NOT NULL DEFAULT '',"
        " endpoint TEXT NOT NULL DEFAULT '',"
        " created_at BIGINT NOT NULL DEFAULT 0,"
        " updated_at BIGINT NOT NULL DEFAULT 0,"
        " doc TEXT NOT NULL DEFAULT '',"
        " PRIMARY KEY (provider, instance_id));"
        "CREATE INDEX instances_reservation_idx ON instances (reservation_id);",
        NULL,
        NULL,
    },
};

#define MIGRATION_COUNT (sizeof(migrations) / sizeof(migrations[0]))

int gpd__store_latest_version(void)
{
    return migrations[MIGRATION_COUNT - 1].version;
}

static const char *migration_sql(const gpd_store *s, const migration *m)
{
    if (strcmp(s->ops->engine, "sqlite") == 0 && m->sqlite_sql)
        return m->sqlite_sql;
    if (strcmp(s->ops->engine, "postgres") == 0 && m->postgres_sql)
        return m->postgres_sql;
    return m->sql;
}

/* Apply m unless schema_migrations says it already was; one transaction. */
static int apply_one(gpd_store *s, const migration *m, char *err, size_t errlen)
{
    char sql[160];
    char why[256];
    int64_t applied = 0;
    bool in_tx = false;
    int rc = -1;

    if (s->ops->exec(s, s->ops->begin_sql, err, errlen) != 0)
        goto out;
    in_tx = true;
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM schema_migrations WHERE version = %d", m->version);
    if (s->ops->query_int(s, sql, &applied, err, errlen) != 0)
        goto out;
    if (!applied) {
        if (s->ops->exec(s, migration_sql(s, m), why, sizeof(why)) != 0) {
            gpd__store_fail(err, errlen, "migration %d: %s", m->version, why);
            goto out;
        }
        snprintf(sql, sizeof(sql), "INSERT INTO schema_migrations (version, applied_at) VALUES (%d, %" PRId64 ")",
                 m->version, gpd__store_now());
        if (s->ops->exec(s, sql, err, errlen) != 0)
            goto out;
    }
    if (s->ops->exec(s, "COMMIT", err, errlen) != 0)
        goto out;
    in_tx = false;
    rc = 0;
out:
    if (in_tx)
        s->ops->exec(s, "ROLLBACK", NULL, 0); /* the first error is the one to report */
    return rc;
}

int gpd__store_migrate(gpd_store *s, char *err, size_t errlen)
{
    bool locked = false;
    int rc = -1;

    if (s->ops->migrate_lock) {
        if (s->ops->migrate_lock(s, err, errlen) != 0)
            goto out;
        locked = true;
    }
    /* IF NOT EXISTS here only: this table must exist before anything can
     * be asked of it, and two openers may both create it. */
    if (s->ops->exec(s,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version BIGINT PRIMARY KEY,"
                     " applied_at BIGINT NOT NULL)",
                     err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < MIGRATION_COUNT; i++) {
        if (apply_one(s, &migrations[i], err, errlen) != 0)
            goto out;
    }
    rc = 0;
out:
    if (locked) {
        char uerr[128];
        if (s->ops->migrate_unlock(s, uerr, sizeof(uerr)) != 0 && rc == 0)
            rc = gpd__store_fail(err, errlen, "%s", uerr);
    }
    return rc;
}
