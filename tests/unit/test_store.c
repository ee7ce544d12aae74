/*
 * The store's tests: every body below runs against both engines, as
 * store_sqlite/NAME (a temporary file) and store_postgres/NAME (the server
 * named by GPD_TEST_POSTGRES_URL; skipped when that is unset).
 *
 * Each PostgreSQL test works in a schema of its own (search_path set in
 * the URL's options), dropped and created afresh at setup and dropped at
 * teardown, so tests start from empty tables and never see each other's
 * rows, even when Criterion runs them in parallel.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"

#define WORKERS 8

typedef struct fixture {
    bool postgres;
    char url[1024];
    char dir[256];     /* sqlite: the temporary directory */
    char path[512];    /* sqlite: the database file in it */
    char base_url[768]; /* postgres: GPD_TEST_POSTGRES_URL */
    char schema[64];   /* postgres: this test's schema */
    char setup_err[512];
    gpd_store *s;
} fixture;

static fixture F;
static int64_t fake_time = 1700000000;

static int64_t fake_now(void)
{
    return fake_time;
}

/* ---- raw access to the database, to check what the store cannot say ---- */

static PGconn *pg_raw_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(F.setup_err, sizeof(F.setup_err), "connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static bool pg_raw_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(F.setup_err, sizeof(F.setup_err), "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* One integer from a query, through a connection of our own. */
static int64_t raw_int(const char *sql)
{
    int64_t v = -1;
    if (F.postgres) {
        PGconn *c = pg_raw_connect(F.url);
        cr_assert_not_null(c, "%s", F.setup_err);
        PGresult *r = PQexec(c, sql);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        PQfinish(c);
    } else {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        cr_assert_eq(sqlite3_open_v2(F.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    return v;
}

/* ---- fixtures ---- */

static void sqlite_init(void)
{
    memset(&F, 0, sizeof(F));
    gpd__store_now = fake_now;
    snprintf(F.dir, sizeof(F.dir), "%s/gpd-store-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(F.dir)) {
        snprintf(F.setup_err, sizeof(F.setup_err), "mkdtemp %s failed", F.dir);
        F.dir[0] = '\0';
        return;
    }
    snprintf(F.path, sizeof(F.path), "%s/store.db", F.dir);
    snprintf(F.url, sizeof(F.url), "sqlite:%s", F.path);
}

static void pg_init(void)
{
    memset(&F, 0, sizeof(F));
    F.postgres = true;
    gpd__store_now = fake_now;
    const char *base = getenv("GPD_TEST_POSTGRES_URL");
    if (!base || !*base)
        return; /* the body skips */
    snprintf(F.base_url, sizeof(F.base_url), "%s", base);
    snprintf(F.schema, sizeof(F.schema), "gpd_test_%ld", (long)getpid());
    /* search_path in the connection's options: the store's unqualified
     * tables land in this test's schema.  application_name lets a test
     * find (and kill) the store's own backends. */
    snprintf(F.url, sizeof(F.url), "%s%coptions=-csearch_path%%3D%s&application_name=%s", base,
             strchr(base, '?') ? '&' : '?', F.schema, F.schema);

    PGconn *c = pg_raw_connect(base);
    if (!c)
        return;
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", F.schema);
    if (pg_raw_exec(c, sql)) {
        snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", F.schema);
        pg_raw_exec(c, sql);
    }
    PQfinish(c);
}

static void fixture_fini(void)
{
    gpd_store_close(F.s);
    F.s = NULL;
    if (F.postgres && F.schema[0]) {
        PGconn *c = pg_raw_connect(F.base_url);
        if (c) {
            char sql[256];
            snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", F.schema);
            pg_raw_exec(c, sql);
            PQfinish(c);
        }
    }
    if (!F.postgres && F.dir[0]) {
        const char *suffixes[] = { "", "-wal", "-shm", "-journal" };
        char p[600];
        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
            snprintf(p, sizeof(p), "%s%s", F.path, suffixes[i]);
            unlink(p);
        }
        rmdir(F.dir);
    }
}

static void fixture_check(void)
{
    if (F.postgres && !F.base_url[0])
        cr_skip_test("GPD_TEST_POSTGRES_URL not set");
    cr_assert_eq(F.setup_err[0], '\0', "setup: %s", F.setup_err);
}

static gpd_store *open_store(void)
{
    char err[256] = "";
    gpd_store *s = NULL;
    int rc = gpd_store_open(F.url, &s, err, sizeof(err));
    cr_assert_eq(rc, 0, "open %s: %s", F.postgres ? "postgres" : F.url, err);
    cr_assert_not_null(s);
    return s;
}

/* The same body as store_sqlite/NAME and store_postgres/NAME; F.s is open. */
#define STORE_TEST(name)                                                                                         \
    static void name##_body(void);                                                                               \
    Test(store_sqlite, name, .init = sqlite_init, .fini = fixture_fini)                                          \
    {                                                                                                            \
        fixture_check();                                                                                         \
        F.s = open_store();                                                                                      \
        name##_body();                                                                                           \
    }                                                                                                            \
    Test(store_postgres, name, .init = pg_init, .fini = fixture_fini)                                            \
    {                                                                                                            \
        fixture_check();                                                                                         \
        F.s = open_store();                                                                                      \
        name##_body();                                                                                           \
    }                                                                                                            \
    static void name##_body(void)

/* ---- helpers ---- */

#define ERRBUF char err[256] = ""

static gpd_store_res_row res(const char *id, const char *status, const char *provider, int gpus, int tpus,
                             int64_t created_at)
{
    gpd_store_res_row r = {
        .id = (char *)id,
        .status = (char *)status,
        .provider = (char *)provider,
        .compute_type = (char *)(tpus ? "tpu" : "gpu"),
        .gpus = gpus,
        .tpus = tpus,
        .cost_per_hr = 1.25 * (gpus + tpus),
        .created_at = created_at,
        .expires_at = 0,
        .updated_at = created_at,
        .owner = (char *)"gpd-a",
        .doc = (char *)"{}",
    };
    return r;
}

static void insert(const gpd_store_res_row *r)
{
    ERRBUF;
    cr_assert_eq(gpd_store_res_insert(F.s, r, err, sizeof(err)), 0, "insert %s: %s", r->id, err);
}

static void expect_res_eq(const gpd_store_res_row *a, const gpd_store_res_row *b)
{
    cr_expect_str_eq(a->id, b->id);
    cr_expect_str_eq(a->status, b->status);
    cr_expect_str_eq(a->provider, b->provider);
    cr_expect_str_eq(a->compute_type, b->compute_type);
    cr_expect_eq(a->gpus, b->gpus);
    cr_expect_eq(a->tpus, b->tpus);
    cr_expect(a->cost_per_hr == b->cost_per_hr, "cost %.17g != %.17g", a->cost_per_hr, b->cost_per_hr);
    cr_expect_eq(a->created_at, b->created_at);
    cr_expect_eq(a->expires_at, b->expires_at);
    cr_expect_eq(a->updated_at, b->updated_at);
    cr_expect_str_eq(a->owner, b->owner);
    cr_expect_str_eq(a->doc, b->doc);
}

static gpd_store_limits limits(int64_t gpus, int64_t tpus, int64_t provider_gpus)
{
    gpd_store_limits l = { .max_gpus = gpus, .max_tpus = tpus, .max_provider_gpus = provider_gpus };
    return l;
}

/* Claim r under lim; asserts the call itself worked, returns granted. */
static bool claim(const gpd_store_res_row *r, gpd_store_limits lim, char *why, size_t whylen)
{
    ERRBUF;
    bool granted = true;
    int rc = gpd_store_res_claim(F.s, r, &lim, &granted, why, whylen, err, sizeof(err));
    cr_assert_eq(rc, 0, "claim %s: %s", r->id, err);
    return granted;
}

static void expect_status(const char *id, const char *status)
{
    ERRBUF;
    gpd_store_res_row got;
    cr_assert_eq(gpd_store_res_get(F.s, id, &got, err, sizeof(err)), 0, "get %s: %s", id, err);
    cr_expect_str_eq(got.status, status, "%s: status %s, expected %s", id, got.status, status);
    gpd_store_res_row_free(&got);
}

static const char TRICKY[] = "{\"q\":\"it's \\\"quoted\\\"\",\"u\":\"h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 "
                             "\xf0\x9f\x9a\x80\",\"sql\":\"'); DROP TABLE models; --\",\"ws\":\"a\\tb\\nc\","
                             "\"raw\":\"line1\nline2\ttab $1 ?1 %s\"}";

/* ---- open and migrations ---- */

STORE_TEST(open_migrates)
{
    ERRBUF;
    int version = 0;
    cr_assert_str_eq(gpd_store_engine(F.s), F.postgres ? "postgres" : "sqlite");
    cr_assert_eq(gpd_store_schema_version(F.s, &version, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(version, gpd__store_latest_version());
    cr_assert_eq(version, 3);
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM schema_migrations"), 3);
    cr_assert_eq(raw_int("SELECT MIN(applied_at) FROM schema_migrations"), fake_time);
    /* the tables and indexes are there and empty */
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM models"), 0);
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM reservations"), 0);
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM instances"), 0);
    if (F.postgres) {
        cr_assert_eq(raw_int("SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema()"
                             " AND indexname IN ('reservations_status_idx', 'reservations_status_provider_idx',"
                             " 'instances_reservation_idx')"),
                     3);
    } else {
        cr_assert_eq(raw_int("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN"
                             " ('reservations_status_idx', 'reservations_status_provider_idx',"
                             " 'instances_reservation_idx')"),
                     3);
        cr_assert_eq(raw_int("SELECT COUNT(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
    }
}

STORE_TEST(reopen_runs_no_migration_twice)
{
    ERRBUF;
    int64_t first = fake_time;
    cr_assert_eq(gpd_store_model_put(F.s, "kept", 3001, "{}", err, sizeof(err)), 0, "%s", err);
    gpd_store_close(F.s);
    F.s = NULL;

    fake_time += 1000;
    for (int i = 0; i < 2; i++) {
        F.s = open_store();
        int version = 0;
        cr_assert_eq(gpd_store_schema_version(F.s, &version, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(version, 3);
        gpd_store_close(F.s);
        F.s = NULL;
    }
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM schema_migrations"), 3);
    cr_assert_eq(raw_int("SELECT MAX(applied_at) FROM schema_migrations"), first, "a migration ran again");
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM models WHERE name = 'kept' AND port = 3001"), 1);
}

/* WORKERS processes open one fresh database at the same moment: each
 * migration must be applied once, and every opener must succeed. */
STORE_TEST(concurrent_open_migrates_once)
{
    int ready[2], go[2];

    /* A fresh database: forget the one the fixture opened. */
    gpd_store_close(F.s);
    F.s = NULL;
    if (F.postgres) {
        PGconn *c = pg_raw_connect(F.url);
        cr_assert_not_null(c, "%s", F.setup_err);
        cr_assert(pg_raw_exec(c, "DROP TABLE models, reservations, instances, schema_migrations"), "%s",
                  F.setup_err);
        PQfinish(c);
    } else {
        char p[600];
        const char *suffixes[] = { "", "-wal", "-shm" };
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof(p), "%s%s", F.path, suffixes[i]);
            unlink(p);
        }
    }

    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            char b;
            close(go[1]);
            if (write(ready[1], "r", 1) != 1)
                _exit(10);
            if (read(go[0], &b, 1) != 0) /* EOF: everyone starts now */
                _exit(11);
            char err[256] = "";
            gpd_store *s = NULL;
            int version = 0;
            if (gpd_store_open(F.url, &s, err, sizeof(err)) != 0) {
                fprintf(stderr, "worker %d: %s\n", i, err);
                _exit(2);
            }
            int rc = gpd_store_schema_version(s, &version, err, sizeof(err));
            gpd_store_close(s);
            _exit(rc == 0 && version == 3 ? 0 : 3);
        }
    }
    close(go[0]);
    for (int i = 0; i < WORKERS; i++) {
        char b;
        cr_assert_eq(read(ready[0], &b, 1), 1);
    }
    close(go[1]);
    int ok = 0;
    for (int i = 0; i < WORKERS; i++) {
        int status = 0;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            ok++;
    }
    close(ready[0]);
    close(ready[1]);
    cr_assert_eq(ok, WORKERS, "%d of %d openers succeeded", ok, WORKERS);
    cr_assert_eq(raw_int("SELECT COUNT(*) FROM schema_migrations"), 3);
}

Test(store_sqlite, memory_database, .init = sqlite_init, .fini = fixture_fini)
{
    ERRBUF;
    gpd_store *s = NULL;
    gpd_store_model_row *rows = NULL;
    size_t n = 0;
    int version = 0;

    cr_assert_eq(gpd_store_open("sqlite::memory:", &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_schema_version(s, &version, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(version, 3);
    cr_assert_eq(gpd_store_model_put(s, "m", 2001, "{}", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_list(s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rows[0].name, "m");
    gpd_store_model_rows_free(rows, n);
    gpd_store_close(s);
}

Test(store, open_errors)
{
    ERRBUF;
    gpd_store *s = (gpd_store *)1;

    cr_assert_eq(gpd_store_open("mysql://u:pw@h/db", &s, err, sizeof(err)), -1);
    cr_assert_null(s);
    cr_assert(strstr(err, "\"mysql\""), "%s", err);
    cr_assert_null(strstr(err, "pw"), "the error shows the URL's password: %s", err);

    cr_assert_eq(gpd_store_open("sqlite:", &s, err, sizeof(err)), -1);
    cr_assert_eq(gpd_store_open("", &s, err, sizeof(err)), -1);
    cr_assert_eq(gpd_store_open("sqlite:/nonexistent-dir-gpd/x/store.db", &s, err, sizeof(err)), -1);
    cr_assert(strstr(err, "sqlite"), "%s", err);

    /* Port 1 refuses at once; the password must not leak into the error. */
    cr_assert_eq(gpd_store_open("postgresql://u:secretpw@127.0.0.1:1/db?connect_timeout=2", &s, err, sizeof(err)),
                 -1);
    cr_assert_null(s);
    cr_assert(strstr(err, "postgres: connect"), "%s", err);
    cr_assert_null(strstr(err, "secretpw"), "%s", err);
}

Test(store, claim_fits_messages)
{
    char why[128];
    gpd_store_res_row r = res("res-1", "provisioning", "vastai", 4, 0, 1);
    gpd_store_limits l = limits(8, -1, -1);

    cr_assert_not(gpd__store_claim_fits(&r, &l, 6, 0, 0, why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_GPUS 8 reached: 6 held, 4 asked");
    l = limits(-1, -1, 5);
    cr_assert_not(gpd__store_claim_fits(&r, &l, 100, 0, 2, why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_VASTAI_GPUS 5 reached: 2 held, 4 asked");
    r.provider = (char *)"io.net";
    cr_assert_not(gpd__store_claim_fits(&r, &l, 100, 0, 2, why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_IO_NET_GPUS 5 reached: 2 held, 4 asked");
    /* exactly at the limit fits */
    l = limits(10, -1, 4);
    cr_assert(gpd__store_claim_fits(&r, &l, 6, 0, 0, why, sizeof(why)));
    /* a TPU claim is not refused because GPUs are over their limit */
    gpd_store_res_row t = res("res-2", "provisioning", "gcp", 0, 8, 1);
    l = limits(0, 8, 0);
    cr_assert(gpd__store_claim_fits(&t, &l, 50, 0, 50, why, sizeof(why)));
    l = limits(-1, 10, -1);
    cr_assert_not(gpd__store_claim_fits(&t, &l, 0, 4, 0, why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_TPUS 10 reached: 4 held, 8 asked");
}

/* ---- models ---- */

STORE_TEST(models_put_replace_list_delete)
{
    ERRBUF;
    gpd_store_model_row *rows = NULL;
    size_t n = 0;

    fake_time = 100;
    cr_assert_eq(gpd_store_model_put(F.s, "b", 3002, "{\"v\":1}", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_put(F.s, "a", 3001, "{\"v\":1}", err, sizeof(err)), 0, "%s", err);
    fake_time = 50;
    cr_assert_eq(gpd_store_model_put(F.s, "c", 3003, "", err, sizeof(err)), 0, "%s", err);
    fake_time = 200;
    /* replace: port and doc change, registration time stays */
    cr_assert_eq(gpd_store_model_put(F.s, "a", 4001, "{\"v\":2}", err, sizeof(err)), 0, "%s", err);

    cr_assert_eq(gpd_store_model_list(F.s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(rows[0].name, "c"); /* created_at 50 */
    cr_expect_str_eq(rows[1].name, "a"); /* created_at 100, name a < b */
    cr_expect_str_eq(rows[2].name, "b");
    cr_expect_eq(rows[0].created_at, 50);
    cr_expect_str_eq(rows[0].doc, "");
    cr_expect_eq(rows[1].port, 4001);
    cr_expect_str_eq(rows[1].doc, "{\"v\":2}");
    cr_expect_eq(rows[1].created_at, 100);
    cr_expect_eq(rows[2].port, 3002);
    gpd_store_model_rows_free(rows, n);

    cr_assert_eq(gpd_store_model_delete(F.s, "b", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_delete(F.s, "b", err, sizeof(err)), GPD_STORE_NOT_FOUND);
    cr_assert_eq(gpd_store_model_delete(F.s, "never", err, sizeof(err)), GPD_STORE_NOT_FOUND);
    cr_assert_eq(gpd_store_model_list(F.s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(rows[0].name, "c");
    cr_expect_str_eq(rows[1].name, "a");
    gpd_store_model_rows_free(rows, n);

    cr_assert_eq(gpd_store_model_delete(F.s, "a", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_delete(F.s, "c", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_list(F.s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0);
    gpd_store_model_rows_free(rows, n);
}

STORE_TEST(strings_round_trip_exactly)
{
    ERRBUF;
    const char *name = "it's a \"model\" \xc3\xa9\xf0\x9f\x9a\x80";
    gpd_store_model_row *rows = NULL;
    size_t n = 0;

    cr_assert_eq(gpd_store_model_put(F.s, name, 3001, TRICKY, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_model_list(F.s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_expect_str_eq(rows[0].name, name);
    cr_expect_str_eq(rows[0].doc, TRICKY);
    gpd_store_model_rows_free(rows, n);

    gpd_store_res_row r = res("res-'\"\xe4\xb8\xad", "queued", "", 0, 0, 5);
    r.doc = (char *)TRICKY;
    r.owner = (char *)"gpd-\xc3\xa9";
    r.cost_per_hr = 0.1 + 0.2; /* not representable in few digits */
    insert(&r);
    gpd_store_res_row got;
    cr_assert_eq(gpd_store_res_get(F.s, r.id, &got, err, sizeof(err)), 0, "%s", err);
    expect_res_eq(&got, &r);
    gpd_store_res_row_free(&got);

    gpd_store_instance_row in = {
        .provider = (char *)"vastai",
        .instance_id = (char *)"i-'1'",
        .reservation_id = r.id,
        .status = (char *)"running",
        .endpoint = (char *)"http://[::1]:8000",
        .created_at = 1,
        .updated_at = 2,
        .doc = (char *)TRICKY,
    };
    gpd_store_instance_row *irows = NULL;
    cr_assert_eq(gpd_store_instance_put(F.s, &in, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_instance_list(F.s, r.id, &irows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_expect_str_eq(irows[0].instance_id, in.instance_id);
    cr_expect_str_eq(irows[0].doc, TRICKY);
    gpd_store_instance_rows_free(irows, n);
}

/* ---- reservations ---- */

STORE_TEST(reservation_insert_get_conflict)
{
    ERRBUF;
    gpd_store_res_row r = res("res-1", "queued", "", 2, 0, 10);
    r.expires_at = 4000000000LL; /* past 2038: 64-bit all the way */
    r.cost_per_hr = 3.1415926535897931;
    r.doc = (char *)"{\"label\":\"llama\"}";
    insert(&r);

    gpd_store_res_row got;
    cr_assert_eq(gpd_store_res_get(F.s, "res-1", &got, err, sizeof(err)), 0, "%s", err);
    expect_res_eq(&got, &r);
    gpd_store_res_row_free(&got);

    gpd_store_res_row dup = res("res-1", "active", "vastai", 9, 0, 11);
    cr_assert_eq(gpd_store_res_insert(F.s, &dup, err, sizeof(err)), GPD_STORE_CONFLICT);
    cr_assert(strstr(err, "res-1"), "%s", err);
    /* the first row is untouched */
    expect_status("res-1", "queued");

    memset(&got, 0x5a, sizeof(got));
    cr_assert_eq(gpd_store_res_get(F.s, "res-none", &got, err, sizeof(err)), GPD_STORE_NOT_FOUND);
    cr_assert_null(got.id); /* zeroed: freeing it is safe */
    gpd_store_res_row_free(&got);

    /* NULL strings are stored as "" */
    gpd_store_res_row sparse = { .id = (char *)"res-2", .created_at = 12 };
    insert(&sparse);
    cr_assert_eq(gpd_store_res_get(F.s, "res-2", &got, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(got.status, "");
    cr_expect_str_eq(got.provider, "");
    cr_expect_str_eq(got.owner, "");
    cr_expect_str_eq(got.doc, "");
    gpd_store_res_row_free(&got);
}

STORE_TEST(reservation_update)
{
    ERRBUF;
    gpd_store_res_row r = res("res-1", "queued", "", 2, 0, 10);
    insert(&r);

    gpd_store_res_row u = res("res-1", "active", "vastai", 4, 0, 10);
    u.expires_at = 9999;
    u.updated_at = 20;
    u.cost_per_hr = 2.5;
    u.owner = (char *)"gpd-b";
    u.doc = (char *)"{\"instance\":\"i-1\"}";
    cr_assert_eq(gpd_store_res_update(F.s, &u, err, sizeof(err)), 0, "%s", err);
    gpd_store_res_row got;
    cr_assert_eq(gpd_store_res_get(F.s, "res-1", &got, err, sizeof(err)), 0, "%s", err);
    expect_res_eq(&got, &u);
    gpd_store_res_row_free(&got);

    gpd_store_res_row missing = res("res-none", "active", "vastai", 1, 0, 1);
    cr_assert_eq(gpd_store_res_update(F.s, &missing, err, sizeof(err)), GPD_STORE_NOT_FOUND);
    cr_assert_eq(gpd_store_res_get(F.s, "res-none", &got, err, sizeof(err)), GPD_STORE_NOT_FOUND);
}

STORE_TEST(reservation_list_by_status)
{
    ERRBUF;
    gpd_store_res_row *rows = NULL;
    size_t n = 0;

    gpd_store_res_row rs[] = {
        res("res-e", "active", "vastai", 1, 0, 30),
        res("res-a", "queued", "", 1, 0, 20),
        res("res-c", "provisioning", "ionet", 1, 0, 20),
        res("res-b", "released", "vastai", 1, 0, 10),
        res("res-d", "active", "gcp", 0, 4, 5),
    };
    for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++)
        insert(&rs[i]);

    cr_assert_eq(gpd_store_res_list(F.s, NULL, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 5);
    const char *all[] = { "res-d", "res-b", "res-a", "res-c", "res-e" }; /* created_at, then id */
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(rows[i].id, all[i], "row %zu", i);
    expect_res_eq(&rows[0], &rs[4]);
    gpd_store_res_rows_free(rows, n);

    const char *held[] = { "active", "provisioning", NULL };
    cr_assert_eq(gpd_store_res_list(F.s, held, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(rows[0].id, "res-d");
    cr_expect_str_eq(rows[1].id, "res-c");
    cr_expect_str_eq(rows[2].id, "res-e");
    gpd_store_res_rows_free(rows, n);

    const char *one[] = { "released", NULL };
    cr_assert_eq(gpd_store_res_list(F.s, one, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    cr_expect_str_eq(rows[0].id, "res-b");
    gpd_store_res_rows_free(rows, n);

    const char *none[] = { NULL };
    cr_assert_eq(gpd_store_res_list(F.s, none, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0);
    gpd_store_res_rows_free(rows, n);

    const char *unknown[] = { "expired", "it's", NULL };
    cr_assert_eq(gpd_store_res_list(F.s, unknown, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0);
    gpd_store_res_rows_free(rows, n);
}

/* ---- claims ---- */

STORE_TEST(claim_granted_within_limits)
{
    ERRBUF;
    char why[128] = "x";
    gpd_store_res_row q = res("res-1", "queued", "", 2, 0, 10);
    insert(&q);

    gpd_store_res_row c = res("res-1", "provisioning", "vastai", 2, 0, 10);
    c.updated_at = 11;
    c.doc = (char *)"{\"offer\":42}";
    cr_assert(claim(&c, limits(8, 4, 4), why, sizeof(why)), "refused: %s", why);
    cr_expect_str_eq(why, "");
    gpd_store_res_row got;
    cr_assert_eq(gpd_store_res_get(F.s, "res-1", &got, err, sizeof(err)), 0, "%s", err);
    expect_res_eq(&got, &c);
    gpd_store_res_row_free(&got);

    /* no limits at all */
    gpd_store_res_row big = res("res-2", "queued", "", 1000, 1000, 11);
    insert(&big);
    big.status = (char *)"provisioning";
    big.provider = (char *)"vastai";
    cr_assert(claim(&big, limits(-1, -1, -1), why, sizeof(why)), "refused: %s", why);

    /* claiming a row that holds capacity already does not count it twice */
    c.status = (char *)"active";
    cr_assert(claim(&c, limits(1002, -1, 1002), why, sizeof(why)), "refused: %s", why);
    expect_status("res-1", "active");

    /* why is optional */
    gpd_store_limits l = limits(-1, -1, -1);
    bool granted = false;
    cr_assert_eq(gpd_store_res_claim(F.s, &c, &l, &granted, NULL, 0, err, sizeof(err)), 0, "%s", err);
    cr_assert(granted);

    /* a claim needs its row */
    gpd_store_res_row ghost = res("res-ghost", "provisioning", "vastai", 1, 0, 1);
    cr_assert_neq(gpd_store_res_claim(F.s, &ghost, &l, &granted, why, sizeof(why), err, sizeof(err)), 0);
    cr_assert_not(granted);
}

/* 6 GPUs held across providers; asking 4 more under MAX_GPUS 8 fails. */
STORE_TEST(claim_refused_by_max_gpus)
{
    char why[128] = "";
    gpd_store_res_row a = res("res-a", "active", "vastai", 3, 0, 1);
    gpd_store_res_row b = res("res-b", "provisioning", "ionet", 3, 0, 2);
    gpd_store_res_row q = res("res-q", "queued", "", 4, 0, 3);
    insert(&a);
    insert(&b);
    insert(&q);

    q.status = (char *)"provisioning";
    q.provider = (char *)"gcp";
    cr_assert_not(claim(&q, limits(8, -1, -1), why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_GPUS 8 reached: 6 held, 4 asked");
    expect_status("res-q", "queued"); /* refused: the row is untouched */

    q.gpus = 2; /* exactly up to the limit fits */
    cr_assert(claim(&q, limits(8, -1, -1), why, sizeof(why)), "refused: %s", why);
    expect_status("res-q", "provisioning");
}

STORE_TEST(claim_refused_by_provider_limit)
{
    char why[128] = "";
    gpd_store_res_row a = res("res-a", "active", "vastai", 3, 0, 1);
    gpd_store_res_row b = res("res-b", "active", "ionet", 1, 0, 2);
    gpd_store_res_row q = res("res-q", "queued", "", 2, 0, 3);
    gpd_store_res_row p = res("res-p", "queued", "", 2, 0, 4);
    insert(&a);
    insert(&b);
    insert(&q);
    insert(&p);

    q.status = (char *)"provisioning";
    q.provider = (char *)"vastai";
    cr_assert_not(claim(&q, limits(100, -1, 4), why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_VASTAI_GPUS 4 reached: 3 held, 2 asked");
    expect_status("res-q", "queued");

    /* the same limit for another provider counts only that provider's */
    p.status = (char *)"provisioning";
    p.provider = (char *)"ionet";
    cr_assert(claim(&p, limits(100, -1, 4), why, sizeof(why)), "refused: %s", why);
    expect_status("res-p", "provisioning");
}

STORE_TEST(claim_refused_by_max_tpus)
{
    char why[128] = "";
    gpd_store_res_row a = res("res-a", "active", "gcp", 0, 8, 1);
    gpd_store_res_row q = res("res-q", "queued", "", 0, 4, 2);
    insert(&a);
    insert(&q);

    q.status = (char *)"provisioning";
    q.provider = (char *)"gcp";
    cr_assert_not(claim(&q, limits(-1, 10, -1), why, sizeof(why)));
    cr_assert_str_eq(why, "MAX_TPUS 10 reached: 8 held, 4 asked");
    expect_status("res-q", "queued");
    /* GPU limits do not stand in the way of a TPU-only claim */
    cr_assert(claim(&q, limits(0, 12, 0), why, sizeof(why)), "refused: %s", why);
}

STORE_TEST(claim_ignores_released_failed_queued)
{
    char why[128] = "";
    const char *statuses[] = { "released", "failed", "queued", "expired" };
    for (int i = 0; i < 4; i++) {
        char id[32];
        snprintf(id, sizeof(id), "res-%d", i);
        gpd_store_res_row r = res(id, statuses[i], "vastai", 100, 100, i);
        insert(&r);
    }
    gpd_store_res_row q = res("res-q", "queued", "", 4, 4, 10);
    insert(&q);
    q.status = (char *)"provisioning";
    q.provider = (char *)"vastai";
    cr_assert(claim(&q, limits(4, 4, 4), why, sizeof(why)), "refused: %s", why);
}

STORE_TEST(held_sums)
{
    ERRBUF;
    int64_t g = -1, t = -1;

    cr_assert_eq(gpd_store_res_held(F.s, NULL, &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(g, 0);
    cr_expect_eq(t, 0);

    gpd_store_res_row rs[] = {
        res("res-1", "active", "vastai", 2, 0, 1),       res("res-2", "provisioning", "vastai", 3, 0, 2),
        res("res-3", "active", "ionet", 4, 0, 3),        res("res-4", "active", "gcp", 0, 8, 4),
        res("res-5", "released", "vastai", 50, 50, 5),   res("res-6", "queued", "", 7, 7, 6),
        res("res-7", "failed", "gcp", 0, 16, 7),
    };
    for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++)
        insert(&rs[i]);

    cr_assert_eq(gpd_store_res_held(F.s, NULL, &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(g, 9);
    cr_expect_eq(t, 8);
    cr_assert_eq(gpd_store_res_held(F.s, "vastai", &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(g, 5);
    cr_expect_eq(t, 0);
    cr_assert_eq(gpd_store_res_held(F.s, "gcp", &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(g, 0);
    cr_expect_eq(t, 8);
    cr_assert_eq(gpd_store_res_held(F.s, "nobody", &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(g, 0);
    cr_expect_eq(t, 0);
}

/* ---- claims under concurrency: WORKERS handles, 1 GPU each, MAX_GPUS 5 ---- */

#define CONCURRENT_MAX 5

enum { CLAIM_GRANTED = 0, CLAIM_REFUSED = 1, CLAIM_ERROR = 2 };

typedef struct claim_worker {
    int index;
    pthread_barrier_t *barrier;
    int result;
    char err[256];
} claim_worker;

/* Open a handle of one's own, insert one reservation, wait for the others
 * (wait() returns when all are ready), claim 1 GPU. */
static int claim_one(int index, void (*wait)(void *), void *arg, char *err, size_t errlen)
{
    gpd_store *s = NULL;
    char id[32], why[128];
    bool granted = false;
    int result = CLAIM_ERROR;

    snprintf(id, sizeof(id), "res-w%d", index);
    gpd_store_res_row r = res(id, "queued", "", 1, 0, index);
    if (gpd_store_open(F.url, &s, err, errlen) != 0) {
        wait(arg);
        return CLAIM_ERROR;
    }
    int irc = gpd_store_res_insert(s, &r, err, errlen);
    wait(arg);
    if (irc != 0)
        goto out;
    r.status = (char *)"provisioning";
    r.provider = (char *)"vastai";
    gpd_store_limits lim = limits(CONCURRENT_MAX, -1, -1);
    if (gpd_store_res_claim(s, &r, &lim, &granted, why, sizeof(why), err, errlen) != 0)
        goto out;
    result = granted ? CLAIM_GRANTED : CLAIM_REFUSED;
out:
    gpd_store_close(s);
    return result;
}

static void barrier_wait(void *arg)
{
    pthread_barrier_wait(arg);
}

static void *claim_thread(void *arg)
{
    claim_worker *w = arg;
    w->result = claim_one(w->index, barrier_wait, w->barrier, w->err, sizeof(w->err));
    return NULL;
}

static void check_concurrent_outcome(int granted, int refused)
{
    ERRBUF;
    int64_t g = 0, t = 0;
    gpd_store_res_row *rows = NULL;
    size_t n = 0;
    const char *prov[] = { "provisioning", NULL };

    cr_assert_eq(granted, CONCURRENT_MAX, "%d granted, expected %d", granted, CONCURRENT_MAX);
    cr_assert_eq(refused, WORKERS - CONCURRENT_MAX);
    gpd_store *s = open_store();
    cr_assert_eq(gpd_store_res_held(s, NULL, &g, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(g, CONCURRENT_MAX);
    cr_assert_eq(gpd_store_res_list(s, prov, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, CONCURRENT_MAX);
    gpd_store_res_rows_free(rows, n);
    gpd_store_close(s);
}

STORE_TEST(claim_concurrent_threads)
{
    pthread_t th[WORKERS];
    claim_worker w[WORKERS];
    pthread_barrier_t barrier;
    int granted = 0, refused = 0;

    pthread_barrier_init(&barrier, NULL, WORKERS);
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (claim_worker){ .index = i, .barrier = &barrier };
        cr_assert_eq(pthread_create(&th[i], NULL, claim_thread, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < WORKERS; i++) {
        cr_expect_neq(w[i].result, CLAIM_ERROR, "worker %d: %s", i, w[i].err);
        granted += w[i].result == CLAIM_GRANTED;
        refused += w[i].result == CLAIM_REFUSED;
    }
    check_concurrent_outcome(granted, refused);
}

typedef struct pipes {
    int ready[2], go[2];
} pipes;

static void pipe_wait(void *arg)
{
    pipes *p = arg;
    char b;
    if (write(p->ready[1], "r", 1) != 1)
        _exit(10);
    if (read(p->go[0], &b, 1) != 0) /* EOF: everyone starts now */
        _exit(11);
}

STORE_TEST(claim_concurrent_processes)
{
    pipes p;
    pid_t pids[WORKERS];
    int granted = 0, refused = 0;

    /* No open handle crosses fork(): SQLite forbids using one in the child,
     * and a PostgreSQL connection must not be shared. */
    gpd_store_close(F.s);
    F.s = NULL;
    cr_assert_eq(pipe(p.ready), 0);
    cr_assert_eq(pipe(p.go), 0);
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            char err[256] = "";
            close(p.go[1]);
            int result = claim_one(i, pipe_wait, &p, err, sizeof(err));
            if (result == CLAIM_ERROR)
                fprintf(stderr, "worker %d: %s\n", i, err);
            _exit(result);
        }
    }
    close(p.go[0]);
    for (int i = 0; i < WORKERS; i++) {
        char b;
        cr_assert_eq(read(p.ready[0], &b, 1), 1);
    }
    close(p.go[1]);
    for (int i = 0; i < WORKERS; i++) {
        int status = 0;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status), "worker %d died", i);
        cr_expect_neq(WEXITSTATUS(status), CLAIM_ERROR, "worker %d failed", i);
        granted += WEXITSTATUS(status) == CLAIM_GRANTED;
        refused += WEXITSTATUS(status) == CLAIM_REFUSED;
    }
    close(p.ready[0]);
    close(p.ready[1]);
    check_concurrent_outcome(granted, refused);
}

/* ---- instances ---- */

static gpd_store_instance_row inst(const char *provider, const char *id, const char *res_id, const char *status,
                                   int64_t created_at)
{
    gpd_store_instance_row r = {
        .provider = (char *)provider,
        .instance_id = (char *)id,
        .reservation_id = (char *)res_id,
        .status = (char *)status,
        .endpoint = (char *)"",
        .created_at = created_at,
        .updated_at = created_at,
        .doc = (char *)"{}",
    };
    return r;
}

STORE_TEST(instances_put_replace_list_delete)
{
    ERRBUF;
    gpd_store_instance_row *rows = NULL;
    size_t n = 0;

    gpd_store_instance_row a = inst("vastai", "i-2", "res-1", "creating", 20);
    gpd_store_instance_row b = inst("vastai", "i-1", "res-1", "creating", 20);
    gpd_store_instance_row c = inst("gcp", "i-1", "res-2", "running", 10); /* same id, other provider */
    cr_assert_eq(gpd_store_instance_put(F.s, &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_instance_put(F.s, &b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_instance_put(F.s, &c, err, sizeof(err)), 0, "%s", err);

    /* replace */
    a.status = (char *)"running";
    a.endpoint = (char *)"http://10.0.0.5:8000";
    a.updated_at = 30;
    a.doc = (char *)"{\"ssh\":\"root@10.0.0.5\"}";
    cr_assert_eq(gpd_store_instance_put(F.s, &a, err, sizeof(err)), 0, "%s", err);

    cr_assert_eq(gpd_store_instance_list(F.s, "res-1", &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(rows[0].instance_id, "i-1");
    cr_expect_str_eq(rows[1].instance_id, "i-2");
    cr_expect_str_eq(rows[1].provider, "vastai");
    cr_expect_str_eq(rows[1].reservation_id, "res-1");
    cr_expect_str_eq(rows[1].status, "running");
    cr_expect_str_eq(rows[1].endpoint, "http://10.0.0.5:8000");
    cr_expect_eq(rows[1].created_at, 20);
    cr_expect_eq(rows[1].updated_at, 30);
    cr_expect_str_eq(rows[1].doc, "{\"ssh\":\"root@10.0.0.5\"}");
    gpd_store_instance_rows_free(rows, n);

    cr_assert_eq(gpd_store_instance_list(F.s, NULL, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(rows[0].provider, "gcp"); /* created_at 10 first */
    cr_expect_str_eq(rows[0].reservation_id, "res-2");
    gpd_store_instance_rows_free(rows, n);

    cr_assert_eq(gpd_store_instance_list(F.s, "res-none", &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0);
    gpd_store_instance_rows_free(rows, n);

    cr_assert_eq(gpd_store_instance_delete(F.s, "vastai", "i-1", err, sizeof(err)), 0, "%s", err);
    /* absent: not an error (nothing to forget) */
    cr_assert_eq(gpd_store_instance_delete(F.s, "vastai", "i-1", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(gpd_store_instance_list(F.s, NULL, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(rows[0].provider, "gcp");
    cr_expect_str_eq(rows[0].instance_id, "i-1");
    cr_expect_str_eq(rows[1].instance_id, "i-2");
    gpd_store_instance_rows_free(rows, n);
}

/* ---- PostgreSQL: the connection drops between calls ---- */

/* Kill the store's backend(s) and wait until they are gone. */
static void kill_store_backends(void)
{
    char sql[256];
    PGconn *c = pg_raw_connect(F.base_url);
    cr_assert_not_null(c, "%s", F.setup_err);
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = '%s'",
             F.schema);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    cr_assert_eq(PQntuples(r), 1, "%d backends of this test", PQntuples(r));
    PQclear(r);
    PQfinish(c);
}

Test(store_postgres, reconnects_after_connection_drop, .init = pg_init, .fini = fixture_fini)
{
    ERRBUF;
    gpd_store_model_row *rows = NULL;
    size_t n = 0;
    char why[128];

    fixture_check();
    F.s = open_store();
    cr_assert_eq(gpd_store_model_put(F.s, "m", 3001, "{}", err, sizeof(err)), 0, "%s", err);

    /* a read is simply run again */
    kill_store_backends();
    cr_assert_eq(gpd_store_model_list(F.s, &rows, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 1);
    gpd_store_model_rows_free(rows, n);

    /* a claim reconnects and starts its transaction again */
    gpd_store_res_row r = res("res-1", "queued", "", 1, 0, 1);
    insert(&r);
    kill_store_backends();
    r.status = (char *)"provisioning";
    r.provider = (char *)"vastai";
    cr_assert(claim(&r, limits(1, -1, -1), why, sizeof(why)), "refused: %s", why);
    expect_status("res-1", "provisioning");

    /* a plain INSERT is not resent (it may have committed): it fails, and
     * the connection is back for the next call */
    gpd_store_res_row r2 = res("res-2", "queued", "", 1, 0, 2);
    kill_store_backends();
    cr_assert_eq(gpd_store_res_insert(F.s, &r2, err, sizeof(err)), -1);
    cr_assert(strstr(err, "postgres"), "%s", err);
    insert(&r2);
    expect_status("res-2", "queued");
}
