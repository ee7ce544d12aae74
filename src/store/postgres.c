/*
 * The PostgreSQL engine: one database shared by several gpuproxyd
 * instances (GPUPROXYD_STORE=postgres://...).
 *
 * Synchronous libpq: the store belongs to the control thread, whose calls
 * are rare next to the data plane, so blocking on the server is accepted
 * there and nowhere else.  Parameters travel as text (PQexecParams), never
 * spliced into SQL.
 *
 * A connection that drops (server restart, failover, idle timeout) is
 * re-established once per call with PQreset.  The statement is then run
 * again only when that cannot do twice what was meant once: outside a
 * transaction (a half-done transaction died with the connection) and not
 * a plain INSERT (it may have committed before the reply was lost; run
 * again it would answer "conflict" for our own row).  A claim whose
 * connection drops before its COMMIT is sent is redone whole: nothing of
 * it was committed.
 */
#include "store/store_internal.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Advisory lock keys ("gpd" + 'M'igrate / 'C'laim), so that no other
 * application's locks in a shared database collide with ours by chance. */
#define LOCK_MIGRATE "6775172941300461"
#define LOCK_CLAIM "6775172941300462"

#define RES_COLUMNS                                                                                              \
    "id, status, provider, compute_type, gpus, tpus, cost_per_hr, created_at, expires_at, updated_at, owner, doc"
#define INST_COLUMNS "provider, instance_id, reservation_id, status, endpoint, created_at, updated_at, doc"

#define SQL_RES_UPDATE                                                                                           \
    "UPDATE reservations SET status = $2, provider = $3, compute_type = $4, gpus = $5, tpus = $6,"              \
    " cost_per_hr = $7, created_at = $8, expires_at = $9, updated_at = $10, owner = $11, doc = $12"            \
    " WHERE id = $1"

/* $1: a reservation to leave out (a claim does not count its own row
 * twice); $2: the provider whose share is wanted. */
#define SQL_RES_SUMS                                                                                             \
    "SELECT COALESCE(SUM(gpus), 0), COALESCE(SUM(tpus), 0),"                                                    \
    " COALESCE(SUM(CASE WHEN provider = $2 THEN gpus ELSE 0 END), 0),"                                          \
    " COALESCE(SUM(CASE WHEN provider = $2 THEN tpus ELSE 0 END), 0)"                                           \
    " FROM reservations WHERE status IN (" GPD__STORE_HELD_STATUSES ") AND id <> $1"

typedef struct pg_store {
    gpd_store base; /* first: gpd_store * and pg_store * convert */
    PGconn *conn;
    bool in_tx;       /* between our BEGIN and its COMMIT / ROLLBACK */
    bool may_reset;   /* this call has not reconnected yet */
    bool lost;        /* this call saw the connection drop */
} pg_store;

/* Whether a statement may be sent again after a reconnect. */
enum retry { NO_RETRY, RETRY };

static pg_store *to_pg(gpd_store *s)
{
    return (pg_store *)s;
}

/* Every public entry starts here: one reconnect per call. */
static void call_begin(pg_store *ps)
{
    ps->may_reset = true;
    ps->lost = false;
}

/* libpq's messages end in a newline (sometimes several lines): keep the
 * first line only, for one-line logs. */
static int fail_msg(char *err, size_t errlen, const char *what, const char *msg)
{
    size_t len = strcspn(msg, "\n");
    return gpd__store_fail(err, errlen, "postgres: %s: %.*s", what, (int)len, msg);
}

static void ignore_notice(void *arg, const char *message)
{
    /* "relation already exists, skipping" and the like: not for stderr. */
    (void)arg;
    (void)message;
}

/* After the connection dropped: reconnect if this call still may.  Any
 * transaction we had open is gone with the old connection. */
static bool reconnect(pg_store *ps)
{
    ps->lost = true;
    ps->in_tx = false;
    if (!ps->may_reset)
        return false;
    ps->may_reset = false;
    PQreset(ps->conn);
    if (PQstatus(ps->conn) != CONNECTION_OK)
        return false;
    PQsetClientEncoding(ps->conn, "UTF8");
    return true;
}

/*
 * Run one statement.  On success *res (when res is non-NULL) holds the
 * result, which the caller clears.  Returns 0, GPD_STORE_CONFLICT on a
 * unique violation, or -1 with err filled ("postgres: what: message").
 */
static int pg_run(pg_store *ps, const char *what, const char *sql, int nparams, const char *const *params,
                  enum retry retry, PGresult **res, char *err, size_t errlen)
{
    PGresult *r = NULL;
    int rc = -1;

    if (res)
        *res = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool was_in_tx = ps->in_tx;
        PQclear(r);
        r = PQexecParams(ps->conn, sql, nparams, NULL, params, NULL, NULL, 0);
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (res) {
                *res = r;
                r = NULL;
            }
            rc = 0;
            goto out;
        }
        if (PQstatus(ps->conn) == CONNECTION_BAD) {
            char first[256];
            snprintf(first, sizeof(first), "%s", PQerrorMessage(ps->conn));
            bool again = reconnect(ps) && attempt == 0 && retry == RETRY && !was_in_tx;
            if (again)
                continue;
            fail_msg(err, errlen, what, first);
            goto out;
        }
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "23505") == 0)
            rc = GPD_STORE_CONFLICT;
        fail_msg(err, errlen, what, r ? PQresultErrorMessage(r) : PQerrorMessage(ps->conn));
        goto out;
    }
out:
    PQclear(r);
    return rc;
}

static char *val_strdup(const PGresult *r, int row, int col)
{
    return strdup(PQgetvalue(r, row, col)); /* "" for NULL */
}

static int64_t val_int64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ---- transactions ---- */

static int tx_begin(pg_store *ps, char *err, size_t errlen)
{
    /* BEGIN may be resent after a reconnect: nothing had started. */
    if (pg_run(ps, "BEGIN", "BEGIN", 0, NULL, RETRY, NULL, err, errlen) != 0)
        return -1;
    ps->in_tx = true;
    return 0;
}

static int tx_commit(pg_store *ps, char *err, size_t errlen)
{
    int rc = pg_run(ps, "COMMIT", "COMMIT", 0, NULL, NO_RETRY, NULL, err, errlen);
    ps->in_tx = false;
    return rc;
}

static void tx_rollback(pg_store *ps)
{
    if (ps->in_tx && PQstatus(ps->conn) == CONNECTION_OK)
        pg_run(ps, "ROLLBACK", "ROLLBACK", 0, NULL, NO_RETRY, NULL, NULL, 0);
    ps->in_tx = false;
}

/* ---- for migrations.c ---- */

static int pg_exec(gpd_store *s, const char *sql, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    /* PQexec, not PQexecParams: a migration is several statements. */
    PGresult *r = PQexec(ps->conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = fail_msg(err, errlen, "exec", r ? PQresultErrorMessage(r) : PQerrorMessage(ps->conn));
    /* migrations.c brackets its transactions with exec: follow along so
     * that tx_rollback and the reconnect rule know. */
    if (rc == 0 && strncmp(sql, "BEGIN", 5) == 0)
        ps->in_tx = true;
    else if (strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0)
        ps->in_tx = false;
    PQclear(r);
    return rc;
}

static int pg_query_int(gpd_store *s, const char *sql, int64_t *v, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    PGresult *r = NULL;
    int rc = -1;

    call_begin(ps);
    if (pg_run(ps, "query", sql, 0, NULL, RETRY, &r, err, errlen) != 0)
        goto out;
    if (PQntuples(r) != 1 || PQnfields(r) != 1) {
        gpd__store_fail(err, errlen, "postgres: query: %d rows, %d columns; one value expected", PQntuples(r),
                        PQnfields(r));
        goto out;
    }
    *v = val_int64(r, 0, 0);
    rc = 0;
out:
    PQclear(r);
    return rc;
}

static int pg_migrate_lock(gpd_store *s, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);

    call_begin(ps);
    /* Session-scoped: held across the migrations' transactions, and
     * released by the server if this process dies while holding it. */
    return pg_run(ps, "migration lock", "SELECT pg_advisory_lock(" LOCK_MIGRATE ")", 0, NULL, NO_RETRY, NULL, err,
                  errlen);
}

static int pg_migrate_unlock(gpd_store *s, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);

    call_begin(ps);
    /* A connection lost since the lock means the server released it. */
    if (PQstatus(ps->conn) != CONNECTION_OK)
        return 0;
    return pg_run(ps, "migration unlock", "SELECT pg_advisory_unlock(" LOCK_MIGRATE ")", 0, NULL, NO_RETRY, NULL,
                  err, errlen);
}

/* ---- models ---- */

static int pg_model_put(gpd_store *s, const char *name, int port, const char *doc, int64_t now, char *err,
                        size_t errlen)
{
    pg_store *ps = to_pg(s);
    char port_s[16], now_s[24];
    const char *params[4] = { name, port_s, doc, now_s };

    call_begin(ps);
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(now_s, sizeof(now_s), "%" PRId64, now);
    /* created_at is kept on replace: the list's order is registration order. */
    return pg_run(ps, "model put",
                  "INSERT INTO models (name, port, doc, created_at) VALUES ($1, $2, $3, $4)"
                  " ON CONFLICT (name) DO UPDATE SET port = EXCLUDED.port, doc = EXCLUDED.doc",
                  4, params, RETRY, NULL, err, errlen) == 0
               ? 0
               : -1;
}

static int pg_model_delete(gpd_store *s, const char *name, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    const char *params[1] = { name };
    PGresult *r = NULL;
    int rc = -1;

    call_begin(ps);
    /* Resent after a reconnect, a delete that had been done answers "not
     * found": the row is gone either way, which is what was asked. */
    if (pg_run(ps, "model delete", "DELETE FROM models WHERE name = $1", 1, params, RETRY, &r, err, errlen) != 0)
        goto out;
    rc = strcmp(PQcmdTuples(r), "0") == 0 ? GPD_STORE_NOT_FOUND : 0;
out:
    PQclear(r);
    return rc;
}

static int pg_model_list(gpd_store *s, gpd_store_model_row **rows, size_t *n, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    PGresult *r = NULL;
    gpd_store_model_row *v = NULL;
    size_t cnt = 0;
    int rc = -1;

    call_begin(ps);
    if (pg_run(ps, "model list", "SELECT name, port, doc, created_at FROM models ORDER BY created_at, name", 0,
               NULL, RETRY, &r, err, errlen) != 0)
        goto out;
    int ntuples = PQntuples(r);
    if (ntuples > 0 && !(v = calloc((size_t)ntuples, sizeof(*v))))
        goto oom;
    for (int i = 0; i < ntuples; i++) {
        gpd_store_model_row *m = &v[cnt++];
        m->name = val_strdup(r, i, 0);
        m->port = (int)val_int64(r, i, 1);
        m->doc = val_strdup(r, i, 2);
        m->created_at = val_int64(r, i, 3);
        if (!m->name || !m->doc)
            goto oom;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "postgres: model list: out of memory");
out:
    gpd_store_model_rows_free(v, cnt);
    PQclear(r);
    return rc;
}

/* ---- reservations ---- */

/* r as the twelve text parameters of RES_COLUMNS / SQL_RES_UPDATE; the
 * numbers are formatted into nums, which must outlive params. */
typedef struct res_params {
    char nums[6][32];
    const char *v[12];
} res_params;

static void res_params_fill(res_params *p, const gpd_store_res_row *r)
{
    snprintf(p->nums[0], sizeof(p->nums[0]), "%d", r->gpus);
    snprintf(p->nums[1], sizeof(p->nums[1]), "%d", r->tpus);
    /* 17 significant digits: the double comes back bit for bit. */
    snprintf(p->nums[2], sizeof(p->nums[2]), "%.17g", r->cost_per_hr);
    snprintf(p->nums[3], sizeof(p->nums[3]), "%" PRId64, r->created_at);
    snprintf(p->nums[4], sizeof(p->nums[4]), "%" PRId64, r->expires_at);
    snprintf(p->nums[5], sizeof(p->nums[5]), "%" PRId64, r->updated_at);
    p->v[0] = r->id ? r->id : "";
    p->v[1] = r->status ? r->status : "";
    p->v[2] = r->provider ? r->provider : "";
    p->v[3] = r->compute_type ? r->compute_type : "";
    p->v[4] = p->nums[0];
    p->v[5] = p->nums[1];
    p->v[6] = p->nums[2];
    p->v[7] = p->nums[3];
    p->v[8] = p->nums[4];
    p->v[9] = p->nums[5];
    p->v[10] = r->owner ? r->owner : "";
    p->v[11] = r->doc ? r->doc : "";
}

/* Row i of r (RES_COLUMNS order) into out; -1 when out of memory, with
 * out still safe to free. */
static int read_res(const PGresult *r, int i, gpd_store_res_row *out)
{
    memset(out, 0, sizeof(*out));
    out->id = val_strdup(r, i, 0);
    out->status = val_strdup(r, i, 1);
    out->provider = val_strdup(r, i, 2);
    out->compute_type = val_strdup(r, i, 3);
    out->gpus = (int)val_int64(r, i, 4);
    out->tpus = (int)val_int64(r, i, 5);
    out->cost_per_hr = strtod(PQgetvalue(r, i, 6), NULL);
    out->created_at = val_int64(r, i, 7);
    out->expires_at = val_int64(r, i, 8);
    out->updated_at = val_int64(r, i, 9);
    out->owner = val_strdup(r, i, 10);
    out->doc = val_strdup(r, i, 11);
    if (!out->id || !out->status || !out->provider || !out->compute_type || !out->owner || !out->doc)
        return -1;
    return 0;
}

static int pg_res_insert(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    res_params p;
    int rc;

    call_begin(ps);
    res_params_fill(&p, r);
    rc = pg_run(ps, "reservation insert",
                "INSERT INTO reservations (" RES_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                12, p.v, NO_RETRY, NULL, err, errlen);
    if (rc == GPD_STORE_CONFLICT)
        gpd__store_fail(err, errlen, "reservation %s already exists", r->id);
    return rc;
}

/* UPDATE every column of r's row; GPD_STORE_NOT_FOUND when it has none. */
static int res_update_row(pg_store *ps, const gpd_store_res_row *r, enum retry retry, char *err, size_t errlen)
{
    res_params p;
    PGresult *res = NULL;
    int rc = -1;

    res_params_fill(&p, r);
    if (pg_run(ps, "reservation update", SQL_RES_UPDATE, 12, p.v, retry, &res, err, errlen) != 0)
        goto out;
    if (strcmp(PQcmdTuples(res), "0") == 0) {
        gpd__store_fail(err, errlen, "reservation %s not found", r->id);
        rc = GPD_STORE_NOT_FOUND;
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static int pg_res_update(gpd_store *s, const gpd_store_res_row *r, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);

    call_begin(ps);
    /* Setting every column to given values: doing it twice is harmless. */
    return res_update_row(ps, r, RETRY, err, errlen);
}

static int pg_res_get(gpd_store *s, const char *id, gpd_store_res_row *out, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    const char *params[1] = { id };
    PGresult *r = NULL;
    int rc = -1;

    call_begin(ps);
    if (pg_run(ps, "reservation get", "SELECT " RES_COLUMNS " FROM reservations WHERE id = $1", 1, params, RETRY,
               &r, err, errlen) != 0)
        goto out;
    if (PQntuples(r) == 0) {
        gpd__store_fail(err, errlen, "reservation %s not found", id);
        rc = GPD_STORE_NOT_FOUND;
        goto out;
    }
    if (read_res(r, 0, out) != 0) {
        gpd_store_res_row_free(out);
        gpd__store_fail(err, errlen, "postgres: reservation get: out of memory");
        goto out;
    }
    rc = 0;
out:
    PQclear(r);
    return rc;
}

static int pg_res_list(gpd_store *s, const char *const *statuses, size_t nstatuses, gpd_store_res_row **rows,
                       size_t *n, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    char sql[512];
    PGresult *r = NULL;
    gpd_store_res_row *v = NULL;
    size_t cnt = 0;
    int rc = -1;

    call_begin(ps);
    size_t o = (size_t)snprintf(sql, sizeof(sql), "SELECT " RES_COLUMNS " FROM reservations");
    if (statuses) {
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, " WHERE status IN (");
        for (size_t i = 0; i < nstatuses; i++)
            o += (size_t)snprintf(sql + o, sizeof(sql) - o, i ? ", $%zu" : "$%zu", i + 1);
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, ")");
    }
    snprintf(sql + o, sizeof(sql) - o, " ORDER BY created_at, id");
    if (pg_run(ps, "reservation list", sql, (int)nstatuses, statuses, RETRY, &r, err, errlen) != 0)
        goto out;
    int ntuples = PQntuples(r);
    if (ntuples > 0 && !(v = calloc((size_t)ntuples, sizeof(*v))))
        goto oom;
    for (int i = 0; i < ntuples; i++) {
        if (read_res(r, i, &v[cnt++]) != 0)
            goto oom;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "postgres: reservation list: out of memory");
out:
    gpd_store_res_rows_free(v, cnt);
    PQclear(r);
    return rc;
}

/* The four sums held by reservations other than except_id:
 * sums[0..1] all GPUs/TPUs, sums[2..3] provider's GPUs/TPUs. */
static int res_sums(pg_store *ps, const char *except_id, const char *provider, int64_t sums[4], char *err,
                    size_t errlen)
{
    const char *params[2] = { except_id, provider ? provider : "" };
    PGresult *r = NULL;
    int rc = -1;

    if (pg_run(ps, "reservation sums", SQL_RES_SUMS, 2, params, RETRY, &r, err, errlen) != 0)
        goto out;
    if (PQntuples(r) != 1 || PQnfields(r) != 4) {
        gpd__store_fail(err, errlen, "postgres: reservation sums: unexpected result shape");
        goto out;
    }
    for (int i = 0; i < 4; i++)
        sums[i] = val_int64(r, 0, i);
    rc = 0;
out:
    PQclear(r);
    return rc;
}

/* One attempt at a claim; *commit_sent says whether its outcome may be
 * unknown (COMMIT sent, answer lost), which forbids redoing it. */
static int claim_once(pg_store *ps, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                      char *why, size_t whylen, bool *commit_sent, char *err, size_t errlen)
{
    int64_t sums[4];
    int rc = -1;

    *granted = false;
    *commit_sent = false;
    why[0] = '\0';
    if (tx_begin(ps, err, errlen) != 0)
        goto out;
    /* Transaction-scoped: released by COMMIT or ROLLBACK, or by the server
     * when the connection dies.  Read committed gives the sums below a
     * snapshot taken after the lock, so they include every earlier claim. */
    if (pg_run(ps, "claim lock", "SELECT pg_advisory_xact_lock(" LOCK_CLAIM ")", 0, NULL, NO_RETRY, NULL, err,
               errlen) != 0)
        goto out;
    if (res_sums(ps, r->id, r->provider, sums, err, errlen) != 0)
        goto out;
    if (gpd__store_claim_fits(r, lim, sums[0], sums[1], sums[2], why, whylen)) {
        if (res_update_row(ps, r, NO_RETRY, err, errlen) != 0)
            goto out; /* a claim's row must exist: not found is an error here */
        *granted = true;
    }
    *commit_sent = true;
    if (tx_commit(ps, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    tx_rollback(ps);
    if (rc != 0)
        *granted = false;
    return rc;
}

static int pg_res_claim(gpd_store *s, const gpd_store_res_row *r, const gpd_store_limits *lim, bool *granted,
                        char *why, size_t whylen, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    bool commit_sent = false;
    int rc = -1;

    call_begin(ps);
    for (int attempt = 0; attempt < 2; attempt++) {
        ps->lost = false;
        rc = claim_once(ps, r, lim, granted, why, whylen, &commit_sent, err, errlen);
        /* Redo only a claim cut short by a dropped connection before its
         * COMMIT, once reconnected: the server threw all of it away. */
        if (rc == 0 || !ps->lost || commit_sent || PQstatus(ps->conn) != CONNECTION_OK)
            break;
    }
    return rc;
}

static int pg_res_held(gpd_store *s, const char *provider, int64_t *gpus, int64_t *tpus, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    int64_t sums[4];

    call_begin(ps);
    if (res_sums(ps, "", provider, sums, err, errlen) != 0)
        return -1;
    *gpus = provider ? sums[2] : sums[0];
    *tpus = provider ? sums[3] : sums[1];
    return 0;
}

/* ---- instances ---- */

static int pg_instance_put(gpd_store *s, const gpd_store_instance_row *r, char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    char created[24], updated[24];
    const char *params[8] = {
        r->provider,
        r->instance_id,
        r->reservation_id ? r->reservation_id : "",
        r->status ? r->status : "",
        r->endpoint ? r->endpoint : "",
        created,
        updated,
        r->doc ? r->doc : "",
    };

    call_begin(ps);
    snprintf(created, sizeof(created), "%" PRId64, r->created_at);
    snprintf(updated, sizeof(updated), "%" PRId64, r->updated_at);
    return pg_run(ps, "instance put",
                  "INSERT INTO instances (" INST_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                  " ON CONFLICT (provider, instance_id) DO UPDATE SET reservation_id = EXCLUDED.reservation_id,"
                  " status = EXCLUDED.status, endpoint = EXCLUDED.endpoint, created_at = EXCLUDED.created_at,"
                  " updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc",
                  8, params, RETRY, NULL, err, errlen) == 0
               ? 0
               : -1;
}

static int pg_instance_delete(gpd_store *s, const char *provider, const char *instance_id, char *err,
                              size_t errlen)
{
    pg_store *ps = to_pg(s);
    const char *params[2] = { provider, instance_id };

    call_begin(ps);
    /* Deleting an absent instance is not an error (the header promises no
     * GPD_STORE_NOT_FOUND here): the goal, no such row, holds. */
    return pg_run(ps, "instance delete", "DELETE FROM instances WHERE provider = $1 AND instance_id = $2", 2,
                  params, RETRY, NULL, err, errlen) == 0
               ? 0
               : -1;
}

static int pg_instance_list(gpd_store *s, const char *reservation_id, gpd_store_instance_row **rows, size_t *n,
                            char *err, size_t errlen)
{
    pg_store *ps = to_pg(s);
    const char *params[1] = { reservation_id };
    PGresult *r = NULL;
    gpd_store_instance_row *v = NULL;
    size_t cnt = 0;
    int rc = -1;

    call_begin(ps);
    if (pg_run(ps, "instance list",
               reservation_id ? "SELECT " INST_COLUMNS " FROM instances WHERE reservation_id = $1"
                                " ORDER BY created_at, provider, instance_id"
                              : "SELECT " INST_COLUMNS " FROM instances ORDER BY created_at, provider, instance_id",
               reservation_id ? 1 : 0, reservation_id ? params : NULL, RETRY, &r, err, errlen) != 0)
        goto out;
    int ntuples = PQntuples(r);
    if (ntuples > 0 && !(v = calloc((size_t)ntuples, sizeof(*v))))
        goto oom;
    for (int i = 0; i < ntuples; i++) {
        gpd_store_instance_row *row = &v[cnt++];
        row->provider = val_strdup(r, i, 0);
        row->instance_id = val_strdup(r, i, 1);
        row->reservation_id = val_strdup(r, i, 2);
        row->status = val_strdup(r, i, 3);
        row->endpoint = val_strdup(r, i, 4);
        row->created_at = val_int64(r, i, 5);
        row->updated_at = val_int64(r, i, 6);
        row->doc = val_strdup(r, i, 7);
        if (!row->provider || !row->instance_id || !row->reservation_id || !row->status || !row->endpoint ||
            !row->doc)
            goto oom;
    }
    *rows = v;
    *n = cnt;
    v = NULL;
    rc = 0;
    goto out;
oom:
    gpd__store_fail(err, errlen, "postgres: instance list: out of memory");
out:
    gpd_store_instance_rows_free(v, cnt);
    PQclear(r);
    return rc;
}

/* ---- open / close ---- */

static void pg_close(gpd_store *s)
{
    pg_store *ps = to_pg(s);

    PQfinish(ps->conn); /* NULL-safe */
    free(ps);
}

static const gpd__store_ops pg_ops = {
    .engine = "postgres",
    .close = pg_close,
    .exec = pg_exec,
    .query_int = pg_query_int,
    .migrate_lock = pg_migrate_lock,
    .migrate_unlock = pg_migrate_unlock,
    .begin_sql = "BEGIN",
    .model_put = pg_model_put,
    .model_delete = pg_model_delete,
    .model_list = pg_model_list,
    .res_insert = pg_res_insert,
    .res_update = pg_res_update,
    .res_get = pg_res_get,
    .res_list = pg_res_list,
    .res_claim = pg_res_claim,
    .res_held = pg_res_held,
    .instance_put = pg_instance_put,
    .instance_delete = pg_instance_delete,
    .instance_list = pg_instance_list,
};

int gpd__postgres_open(const char *url, gpd_store **out, char *err, size_t errlen)
{
    pg_store *ps = calloc(1, sizeof(*ps));
    int rc = -1;

    *out = NULL;
    if (!ps) {
        gpd__store_fail(err, errlen, "postgres: out of memory");
        goto out;
    }
    ps->base.ops = &pg_ops;
    /* The URL as given: libpq parses it, options and all.  Errors quote
     * libpq's message, never the URL (it may hold a password). */
    ps->conn = PQconnectdb(url);
    if (!ps->conn) {
        gpd__store_fail(err, errlen, "postgres: connect: out of memory");
        goto out;
    }
    if (PQstatus(ps->conn) != CONNECTION_OK) {
        fail_msg(err, errlen, "connect", PQerrorMessage(ps->conn));
        goto out;
    }
    PQsetNoticeProcessor(ps->conn, ignore_notice, NULL);
    /* Rows hold UTF-8 JSON whatever the server's default client encoding. */
    if (PQsetClientEncoding(ps->conn, "UTF8") != 0) {
        fail_msg(err, errlen, "client encoding UTF8", PQerrorMessage(ps->conn));
        goto out;
    }
    *out = &ps->base;
    ps = NULL;
    rc = 0;
out:
    if (ps)
        pg_close(&ps->base);
    return rc;
}
