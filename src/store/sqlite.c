/*
 * The SQLite engine: the embedded default (GPUPROXYD_STORE=sqlite:PATH).
 *
 * Settings, and why:
 *   journal_mode=WAL     readers never block the writer nor the writer
 *                        readers, and several gpuproxyd processes on one
 *                        host may share the file.
 *   synchronous=FULL     the store records what is being paid for
 *                        (reservations, provider instances); NORMAL could
 *                        lose the last commits on power loss, and an
 *                        instance forgotten that way is billed until
 *                        someone notices.  Writes here are few (capture is
 *                        group-committed), so one fsync per commit is cheap.
 *   busy_timeout=5000    another process holding the write lock is waited
 *                        for, not reported as an error.
 *
 * Statements are prepared once per handle, on first use, and kept until
 * close; each use resets them at once so that no read transaction is
 * left open between calls.
 */
#include "store/store_internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum stmt_id {
    ST_BEGIN_IMMEDIATE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_MODEL_PUT,
    ST_MODEL_DELETE,
    ST_MODEL_LIST,
    ST_RES_INSERT,
    ST_RES_UPDATE,
    ST_RES_GET,
    ST_RES_LIST_ALL,
    ST_RES_SUMS,
    ST_INST_PUT,
    ST_INST_DELETE,
    ST_INST_LIST_ALL,
    ST_INST_LIST_RES,
    ST_COUNT
};

#define RES_COLUMNS                                                                                              \
    "id, status, provider, compute_type, gpus, tpus, cost_per_hr, created_at, expires_at, updated_at, owner, doc"
#define INST_COLUMNS "provider, instance_id, reservation_id, status, endpoint, created_at, updated_at, doc"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* created_at is kept on replace: the list's order is registration order. */
    [ST_MODEL_PUT] = "INSERT INTO models (name, port, doc, created_at) VALUES (?1, ?2, ?3, ?4)"
                     " ON CONFLICT (name) DO UPDATE SET port = excluded.port, doc = excluded.doc",
    [ST_MODEL_DELETE] = "DELETE FROM models WHERE name = ?1",
    [ST_MODEL_LIST] = "SELECT name, port, doc, created_at FROM models ORDER BY created_at, name",
    [ST_RES_INSERT] = "INSERT INTO reservations (" RES_COLUMNS ")"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_RES_UPDATE] = "UPDATE reservations SET status = ?2, provider = ?3, compute_type = ?4, gpus = ?5,"
                      " tpus = ?6, cost_per_hr = ?7, created_at = ?8, expires_at = ?9, updated_at = ?10,"
                      " owner = ?11, doc = ?12 WHERE id = ?1",
    [ST_RES_GET] = "SELECT " RES_COLUMNS " FROM reservations WHERE id = ?1",
    [ST_RES_LIST_ALL] = "SELECT " RES_COLUMNS " FROM reservations ORDER BY created_at, id",
    /* ?1: a reservation to leave out (a claim does not count its own row
     * twice); ?2: the provider whose share is wanted. */
    [ST_RES_SUMS] = "SELECT COALESCE(SUM(gpus), 0), COALESCE(SUM(tpus), 0),"
                    " COALESCE(SUM(CASE WHEN provider = ?2 THEN gpus ELSE 0 END), 0),"
                    " COALESCE(SUM(CASE WHEN provider = ?2 THEN tpus ELSE 0 END), 0)"
                    " FROM reservations WHERE status IN (" GPD__STORE_HELD_STATUSES ") AND id <> ?1",
    [ST_INST_PUT] = "INSERT INTO instances (" INST_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                    " ON CONFLICT (provider, instance_id) DO UPDATE SET reservation_id = excluded.reservation_id,"
                    " status = excluded.status, endpoint = excluded.endpoint, created_at = excluded.created_at,"
                    " updated_at = excluded.updated_at, doc = excluded.doc",
    [ST_INST_DELETE] = "DELETE FROM instances WHERE provider = ?1 AND instance_id = ?2",
    [ST_INST_LIST_ALL] = "SELECT " INST_COLUMNS " FROM instances ORDER BY created_at, provider, instance_id",
    [ST_INST_LIST_RES] = "SELECT " INST_COLUMNS " FROM instances WHERE reservation_id = ?1"
                         " ORDER BY created_at, provider, instance_id",
};

typedef struct sqlite_store {
    gpd_store base; /* first: gpd_store * and sqlite_store * convert */
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
} sqlite_store;

static sqlite_store *to_sqlite(gpd_store *s)
{
    return (sqlite_store *)s;
}

static int fail_db(sqlite_store *ss, char *err, size_t errlen, const char *what)
{
    return gpd__store_fail(err, errlen, "sqlite: %s: %s", what, sqlite3_errmsg(ss->db));
}

/* The cached statement id, prepared on first use; NULL with err set. */
static sqlite3_stmt *stmt_get(sqlite_store *ss, enum stmt_id id, char *err, size_t errlen)
{
    if (!ss->stmt[id] &&
        sqlite3_prepare_v3(ss->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &ss->stmt[id], NULL) != SQLITE_OK) {
        fail_db(ss, err, errlen, "prepare");
        return NULL;
    }
    return ss->stmt[id];
}

/* Make a cached statement ready for its next use (and end the read
 * transaction a SELECT left open). */
static void stmt_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
    return sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_TRANSIENT);
}

/* A column as a new string, "" for NULL; NULL only when out of memory. */
static char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int len = sqlite3_column_bytes(st, i);
    if (!t)
        return strdup("");
    char *p = malloc((size_t)len + 1);
    if (p) {
        memcpy(p, t, (size_t)len);
        p[len] = '\0';
    }
    return p;
}

/* Run a cached statement that returns no rows; *changes gets the rows it
 * touched when non-NULL.  Returns the SQLite result code. */
static int step_write(sqlite_store *ss, sqlite3_stmt *st, int *changes)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE && changes)
        *changes = sqlite3_changes(ss->db);
    return rc;
}

/* ---- for migrations.c ---- */

static int sqlite_exec(gpd_store *s, const char *sql, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    char *msg = NULL;
    int rc = 0;

    if (sqlite3_exec(ss->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        rc = gpd__store_fail(err, errlen, "sqlite: %s", msg ? msg : sqlite3_errmsg(ss->db));
        sqlite3_free(msg);
    }
    return rc;
}

static int sqlite_query_int(gpd_store *s, const char *sql, int64_t *v, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = NULL;
    int rc = -1;

    if (sqlite3_prepare_v2(ss->db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_db(ss, err, errlen, "prepare");
        goto out;
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_db(ss, err, errlen, "query");
        goto out;
    }
    *v = sqlite3_column_int64(st, 0);
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- models ---- */

static int sqlite_model_put(gpd_store *s, const char *name, int port, const char *doc, int64_t now, char *err,
                            size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_MODEL_PUT, err, errlen);
    int rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, port);
    bind_text(st, 3, doc);
    sqlite3_bind_int64(st, 4, now);
    if (step_write(ss, st, NULL) != SQLITE_DONE) {
        fail_db(ss, err, errlen, "model put");
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_model_delete(gpd_store *s, const char *name, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_MODEL_DELETE, err, errlen);
    int changes = 0, rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, name);
    if (step_write(ss, st, &changes) != SQLITE_DONE) {
        fail_db(ss, err, errlen, "model delete");
        goto out;
    }
    rc = changes ? 0 : GPD_STORE_NOT_FOUND;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_model_list(gpd_store *s, gpd_store_model_row **rows, size_t *n, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_MODEL_LIST, err, errlen);
    gpd_store_model_row *v = NULL;
    size_t cnt = 0, cap = 0;
    int step, rc = -1;

    if (!st)
        goto out;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (gpd__store_grow((void **)&v, &cap, cnt + 1, sizeof(*v)) != 0)
            goto oom;
        gpd_store_model_row *m = &v[cnt++];
        memset(m, 0, sizeof(*m));
        m->name = col_strdup(st, 0);
        m->port = sqlite3_column_int(st, 1);
        m->doc = col_strdup(st, 2);
        m->created_at = sqlite3_column_int64(st, 3);
        if (!m->name || !m->doc)
            goto oom;
    }
    if (step != SQLITE_DONE) {
        fail_db(ss, err, errlen, "model list");
        goto out;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "sqlite: model list: out of memory");
out:
    gpd_store_model_rows_free(v, cnt);
    stmt_done(st);
    return rc;
}

/* ---- reservations ---- */

static void bind_res(sqlite3_stmt *st, const gpd_store_res_row *r)
{
    bind_text(st, 1, r->id);
    bind_text(st, 2, r->status);
    bind_text(st, 3, r->provider);
    bind_text(st, 4, r->compute_type);
    sqlite3_bind_int(st, 5, r->gpus);
    sqlite3_bind_int(st, 6, r->tpus);
    sqlite3_bind_double(st, 7, r->cost_per_hr);
    sqlite3_bind_int64(st, 8, r->created_at);
    sqlite3_bind_int64(st, 9, r->expires_at);
    sqlite3_bind_int64(st, 10, r->updated_at);
    bind_text(st, 11, r->owner);
    bind_text(st, 12, r->doc);
}

/* Fill out from the current row (RES_COLUMNS order); -1 when out of
 * memory, with out still safe to free. */
static int read_res(sqlite3_stmt *st, gpd_store_res_row *out)
{
    memset(out, 0, sizeof(*out));
    out->id = col_strdup(st, 0);
    out->status = col_strdup(st, 1);
    out->provider = col_strdup(st, 2);
    out->compute_type = col_strdup(st, 3);
    out->gpus = sqlite3_column_int(st, 4);
    out->tpus = sqlite3_column_int(st, 5);
    out->cost_per_hr = sqlite3_column_double(st, 6);
    out->created_at = sqlite3_column_int64(st, 7);
    out->expires_at = sqlite3_column_int64(st, 8);
    out->updated_at = sqlite3_column_int64(st, 9);
    out->owner = col_strdup(st, 10);
    out->doc = col_strdup(st, 11);
    if (!out->id || !out->status || !out->provider || !out->compute_type || !out->owner || !out->doc)
        return -1;
    return 0;
}

static int sqlite_res_insert(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_RES_INSERT, err, errlen);
    int step, rc = -1;

    if (!st)
        goto out;
    bind_res(st, r);
    step = step_write(ss, st, NULL);
    if (step == SQLITE_CONSTRAINT) {
        gpd__store_fail(err, errlen, "reservation %s already exists", r->id);
        rc = GPD_STORE_CONFLICT;
        goto out;
    }
    if (step != SQLITE_DONE) {
        fail_db(ss, err, errlen, "reservation insert");
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

/* UPDATE every column of r's row; GPD_STORE_NOT_FOUND when it has none. */
static int res_update_row(sqlite_store *ss, const gpd_store_res_row *r, char *err, size_t errlen)
{
    sqlite3_stmt *st = stmt_get(ss, ST_RES_UPDATE, err, errlen);
    int changes = 0, rc = -1;

    if (!st)
        goto out;
    bind_res(st, r);
    if (step_write(ss, st, &changes) != SQLITE_DONE) {
        fail_db(ss, err, errlen, "reservation update");
        goto out;
    }
    if (!changes) {
        gpd__store_fail(err, errlen, "reservation %s not found", r->id);
        rc = GPD_STORE_NOT_FOUND;
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_res_update(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    return res_update_row(to_sqlite(s), r, err, errlen);
}

static int sqlite_res_get(gpd_store *s, const char *id, gpd_store_res_row *out, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_RES_GET, err, errlen);
    int step, rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, id);
    step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        gpd__store_fail(err, errlen, "reservation %s not found", id);
        rc = GPD_STORE_NOT_FOUND;
        goto out;
    }
    if (step != SQLITE_ROW) {
        fail_db(ss, err, errlen, "reservation get");
        goto out;
    }
    if (read_res(st, out) != 0) {
        gpd_store_res_row_free(out);
        gpd__store_fail(err, errlen, "sqlite: reservation get: out of memory");
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_res_list(gpd_store *s, const char *const *statuses, size_t nstatuses, gpd_store_res_row **rows,
                           size_t *n, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = NULL;
    bool cached = !statuses;
    gpd_store_res_row *v = NULL;
    size_t cnt = 0, cap = 0;
    int step, rc = -1;

    if (cached) {
        st = stmt_get(ss, ST_RES_LIST_ALL, err, errlen);
    } else {
        /* The IN list's length varies with the call: prepared per call
         * (cheap next to the query; the list is at most 16 long). */
        char sql[512];
        size_t o = (size_t)snprintf(sql, sizeof(sql), "SELECT " RES_COLUMNS " FROM reservations WHERE status IN (");
        for (size_t i = 0; i < nstatuses; i++)
            o += (size_t)snprintf(sql + o, sizeof(sql) - o, i ? ", ?" : "?");
        snprintf(sql + o, sizeof(sql) - o, ") ORDER BY created_at, id");
        if (sqlite3_prepare_v2(ss->db, sql, -1, &st, NULL) != SQLITE_OK) {
            fail_db(ss, err, errlen, "prepare");
            st = NULL;
        }
        for (size_t i = 0; st && i < nstatuses; i++)
            bind_text(st, (int)i + 1, statuses[i]);
    }
    if (!st)
        goto out;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (gpd__store_grow((void **)&v, &cap, cnt + 1, sizeof(*v)) != 0)
            goto oom;
        if (read_res(st, &v[cnt++]) != 0)
            goto oom;
    }
    if (step != SQLITE_DONE) {
        fail_db(ss, err, errlen, "reservation list");
        goto out;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "sqlite: reservation list: out of memory");
out:
    gpd_store_res_rows_free(v, cnt);
    if (cached)
        stmt_done(st);
    else
        sqlite3_finalize(st);
    return rc;
}

/* The four sums held by reservations other than except_id:
 * sums[0..1] all GPUs/TPUs, sums[2..3] provider's GPUs/TPUs. */
static int res_sums(sqlite_store *ss, const char *except_id, const char *provider, int64_t sums[4], char *err,
                    size_t errlen)
{
    sqlite3_stmt *st = stmt_get(ss, ST_RES_SUMS, err, errlen);
    int rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, except_id);
    bind_text(st, 2, provider);
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_db(ss, err, errlen, "reservation sums");
        goto out;
    }
    for (int i = 0; i < 4; i++)
        sums[i] = sqlite3_column_int64(st, i);
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int run_simple(sqlite_store *ss, enum stmt_id id, char *err, size_t errlen)
{
    sqlite3_stmt *st = stmt_get(ss, id, err, errlen);
    int rc = -1;

    if (!st)
        goto out;
    if (sqlite3_step(st) != SQLITE_DONE) {
        fail_db(ss, err, errlen, stmt_sql[id]);
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_res_claim(gpd_store *s, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                            char *why, size_t whylen, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    int64_t sums[4];
    bool in_tx = false;
    int rc = -1;

    /* IMMEDIATE: the write lock is taken before the sums are read, so no
     * other connection can claim between our read and our write. */
    if (run_simple(ss, ST_BEGIN_IMMEDIATE, err, errlen) != 0)
        goto out;
    in_tx = true;
    if (res_sums(ss, r->id, r->provider, sums, err, errlen) != 0)
        goto out;
    if (gpd__store_claim_fits(r, lim, sums[0], sums[1], sums[2], why, whylen)) {
        int urc = res_update_row(ss, r, err, errlen);
        if (urc != 0) {
            rc = urc == GPD_STORE_NOT_FOUND ? -1 : urc; /* a claim's row must exist */
            goto out;
        }
        *granted = true;
    }
    /* Committed even when refused: nothing was written, and ending the
     * transaction is all that is needed. */
    if (run_simple(ss, ST_COMMIT, err, errlen) != 0) {
        *granted = false;
        goto out;
    }
    in_tx = false;
    rc = 0;
out:
    if (in_tx && !sqlite3_get_autocommit(ss->db))
        run_simple(ss, ST_ROLLBACK, NULL, 0);
    if (rc != 0)
        *granted = false;
    return rc;
}

static int sqlite_res_held(gpd_store *s, const char *provider, int64_t *gpus, int64_t *tpus, char *err,
                           size_t errlen)
{
    int64_t sums[4];

    if (res_sums(to_sqlite(s), "", provider, sums, err, errlen) != 0)
        return -1;
    *gpus = provider ? sums[2] : sums[0];
    *tpus = provider ? sums[3] : sums[1];
    return 0;
}

/* ---- instances ---- */

static int sqlite_instance_put(gpd_store *s, const gpd_store_instance_row *r, char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_INST_PUT, err, errlen);
    int rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, r->provider);
    bind_text(st, 2, r->instance_id);
    bind_text(st, 3, r->reservation_id);
    bind_text(st, 4, r->status);
    bind_text(st, 5, r->endpoint);
    sqlite3_bind_int64(st, 6, r->created_at);
    sqlite3_bind_int64(st, 7, r->updated_at);
    bind_text(st, 8, r->doc);
    if (step_write(ss, st, NULL) != SQLITE_DONE) {
        fail_db(ss, err, errlen, "instance put");
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_instance_delete(gpd_store *s, const char *provider, const char *instance_id, char *err,
                                  size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, ST_INST_DELETE, err, errlen);
    int rc = -1;

    if (!st)
        goto out;
    bind_text(st, 1, provider);
    bind_text(st, 2, instance_id);
    /* Deleting an absent instance is not an error (the header promises no
     * GPD_STORE_NOT_FOUND here): the goal, no such row, holds. */
    if (step_write(ss, st, NULL) != SQLITE_DONE) {
        fail_db(ss, err, errlen, "instance delete");
        goto out;
    }
    rc = 0;
out:
    stmt_done(st);
    return rc;
}

static int sqlite_instance_list(gpd_store *s, const char *reservation_id, gpd_store_instance_row **rows, size_t *n,
                                char *err, size_t errlen)
{
    sqlite_store *ss = to_sqlite(s);
    sqlite3_stmt *st = stmt_get(ss, reservation_id ? ST_INST_LIST_RES : ST_INST_LIST_ALL, err, errlen);
    gpd_store_instance_row *v = NULL;
    size_t cnt = 0, cap = 0;
    int step, rc = -1;

    if (!st)
        goto out;
    if (reservation_id)
        bind_text(st, 1, reservation_id);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (gpd__store_grow((void **)&v, &cap, cnt + 1, sizeof(*v)) != 0)
            goto oom;
        gpd_store_instance_row *r = &v[cnt++];
        memset(r, 0, sizeof(*r));
        r->provider = col_strdup(st, 0);
        r->instance_id = col_strdup(st, 1);
        r->reservation_id = col_strdup(st, 2);
        r->status = col_strdup(st, 3);
        r->endpoint = col_strdup(st, 4);
        r->created_at = sqlite3_column_int64(st, 5);
        r->updated_at = sqlite3_column_int64(st, 6);
        r->doc = col_strdup(st, 7);
        if (!r->provider || !r->instance_id || !r->reservation_id || !r->status || !r->endpoint || !r->doc)
            goto oom;
    }
    if (step != SQLITE_DONE) {
        fail_db(ss, err, errlen, "instance list");
        goto out;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "sqlite: instance list: out of memory");
out:
    gpd_store_instance_rows_free(v, cnt);
    stmt_done(st);
    return rc;
}

/* ---- open / close ---- */

static void sqlite_close(gpd_store *s)
{
    sqlite_store *ss = to_sqlite(s);

    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(ss->stmt[i]);
    sqlite3_close(ss->db);
    free(ss);
}

static const gpd__store_ops sqlite_ops = {
    .engine = "sqlite",
    .close = sqlite_close,
    .exec = sqlite_exec,
    .query_int = sqlite_query_int,
    .migrate_lock = NULL,
    .migrate_unlock = NULL,
    .begin_sql = "BEGIN IMMEDIATE",
    .model_put = sqlite_model_put,
    .model_delete = sqlite_model_delete,
    .model_list = sqlite_model_list,
    .res_insert = sqlite_res_insert,
    .res_update = sqlite_res_update,
    .res_get = sqlite_res_get,
    .res_list = sqlite_res_list,
    .res_claim = sqlite_res_claim,
    .res_held = sqlite_res_held,
    .instance_put = sqlite_instance_put,
    .instance_delete = sqlite_instance_delete,
    .instance_list = sqlite_instance_list,
};

/* Switching a fresh file to WAL needs the database briefly to itself, and
 * that wait does not always go through the busy handler: when another
 * process is opening the same file at this moment, retry for as long as
 * busy_timeout would have waited. */
static int set_wal(sqlite_store *ss, char *err, size_t errlen)
{
    struct timespec pause = { 0, 10 * 1000 * 1000 };
    char *msg = NULL;
    int rc = SQLITE_OK;

    for (int attempt = 0; attempt < 500; attempt++) {
        rc = sqlite3_exec(ss->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            break;
        sqlite3_free(msg);
        msg = NULL;
        nanosleep(&pause, NULL);
    }
    if (rc != SQLITE_OK) {
        gpd__store_fail(err, errlen, "sqlite: journal_mode=WAL: %s", msg ? msg : sqlite3_errmsg(ss->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int gpd__sqlite_open(const char *path, gpd_store **out, char *err, size_t errlen)
{
    sqlite_store *ss = calloc(1, sizeof(*ss));
    int rc = -1;

    *out = NULL;
    if (!ss) {
        gpd__store_fail(err, errlen, "sqlite: out of memory");
        goto out;
    }
    ss->base.ops = &sqlite_ops;
    if (sqlite3_open_v2(path, &ss->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        if (ss->db)
            gpd__store_fail(err, errlen, "sqlite: open %s: %s", path, sqlite3_errmsg(ss->db));
        else
            gpd__store_fail(err, errlen, "sqlite: open %s: out of memory", path);
        goto out;
    }
    /* Before anything else touches the file, so that every statement,
     * the pragmas included, waits for other processes' locks. */
    sqlite3_busy_timeout(ss->db, 5000);
    sqlite3_extended_result_codes(ss->db, 0);
    /* ":memory:" answers "memory" and stays so: nothing to share there. */
    if (set_wal(ss, err, errlen) != 0)
        goto out;
    if (sqlite_exec(&ss->base, "PRAGMA synchronous=FULL", err, errlen) != 0)
        goto out;
    *out = &ss->base;
    ss = NULL;
    rc = 0;
out:
    if (ss)
        sqlite_close(&ss->base);
    return rc;
}
