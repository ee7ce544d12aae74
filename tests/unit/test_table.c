#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "compute/ports.h"
#include "gateway/table.h"

static gpd_listener *fake_listener(int port)
{
    gpd_listener *l = calloc(1, sizeof(*l));
    l->fd = dup(0);
    l->port = port;
    atomic_init(&l->refs, 1);
    return l;
}

static gpd_endpoint *endpoint(const char *name, int port, enum gpd_tier tier)
{
    gpd_endpoint *e = calloc(1, sizeof(*e));
    atomic_init(&e->refs, 1);
    e->spec.name = strdup(name);
    e->spec.port = port;
    e->spec.tier = tier;
    e->name_len = strlen(name);
    e->listener = fake_listener(port);
    e->stats = gpd_model_stats_new(name, 2);
    return e;
}

Test(table, lookup_by_port_and_name)
{
    gpd_endpoint *eps[200];
    char name[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "model-%d", i);
        eps[i] = endpoint(name, 3000 + i, i % 2 ? GPD_TIER_CUSTOM : GPD_TIER_HOSTED);
    }
    gpd_listener *main_l = fake_listener(8080);
    gpd_table *t = gpd_table_build(eps, 200, main_l, "sk-test", 1, 1);
    cr_assert_not_null(t);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "model-%d", i);
        cr_assert_eq(gpd_table_by_port(t, 3000 + i), eps[i]);
        cr_assert_eq(gpd_table_by_name(t, name, strlen(name)), eps[i]);
    }
    cr_assert_null(gpd_table_by_name(t, "model-200", 9));
    cr_assert_null(gpd_table_by_port(t, 2999));
    cr_assert_eq(t->n_listeners, 201);
    cr_assert_eq(t->ports_by_tier[GPD_TIER_HOSTED], 100);
    cr_assert_str_eq(t->openrouter_auth, "Bearer sk-test");
    /* The table holds its own references: dropping ours keeps them alive. */
    for (int i = 0; i < 200; i++)
        gpd_endpoint_unref(eps[i]);
    gpd_listener_unref(main_l);
    cr_assert_eq(gpd_table_by_port(t, 3010)->spec.port, 3010);
    gpd_table_unref(t);
}

Test(table, no_key_no_auth)
{
    gpd_listener *main_l = fake_listener(8080);
    gpd_table *t = gpd_table_build(NULL, 0, main_l, NULL, 1, 1);
    cr_assert_null(t->openrouter_auth);
    cr_assert_null(gpd_table_by_name(t, "x", 1));
    gpd_table_unref(t);
    gpd_listener_unref(main_l);
}

Test(target, parses_urls)
{
    const char *why = NULL;
    gpd_target *t = gpd_target_new("http://127.0.0.1:8000/v1/", &why);
    cr_assert_not_null(t);
    cr_assert_str_eq(t->host, "127.0.0.1");
    cr_assert_eq(t->port, 8000);
    cr_assert_str_eq(t->base_path, "/v1");
    cr_assert_str_eq(t->host_header, "127.0.0.1:8000");
    cr_assert(t->resolved);
    gpd_target_unref(t);

    t = gpd_target_new("https://openrouter.ai/api/v1", &why);
    cr_assert_not_null(t);
    cr_assert(t->https);
    cr_assert_eq(t->port, 443);
    cr_assert_str_eq(t->base_path, "/api/v1");
    gpd_target_unref(t);

    cr_assert_null(gpd_target_new("ftp://x", &why));
    cr_assert_null(gpd_target_new("http://user:pw@h/v1", &why));
    cr_assert_null(gpd_target_new("http://h:99999/v1", &why));
    cr_assert_null(gpd_target_new("http://:80/v1", &why));
}

Test(target, passive_health)
{
    const char *why = NULL;
    gpd_target *t = gpd_target_new("http://127.0.0.1:9/v1", &why);
    for (int i = 0; i < GPD_HEALTH_FAILURES - 1; i++)
        gpd_target_report(t, false, 1000);
    cr_assert_not(gpd_target_is_down(t, 1000));
    gpd_target_report(t, false, 1000);
    cr_assert(gpd_target_is_down(t, 1000));
    cr_assert_not(gpd_target_is_down(t, 1000 + GPD_HEALTH_DOWN_MS));
    gpd_target_report(t, true, 2000);
    cr_assert_eq(atomic_load(&t->failures), 0);
    gpd_target_unref(t);
}

Test(ports, allocates_lowest_free_in_tier)
{
    gpd_config cfg = { 0 };
    cfg.listen_port = 8080;
    cfg.port_min[GPD_TIER_HOSTED] = 2000;
    cfg.port_max[GPD_TIER_HOSTED] = 2002;
    cfg.port_min[GPD_TIER_CUSTOM] = 3000;
    cfg.port_max[GPD_TIER_CUSTOM] = 15000;
    gpd_ports p;
    gpd_ports_init(&p, &cfg);
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_HOSTED, 0), 2000);
    gpd_ports_take(&p, 2000);
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_HOSTED, 0), 2001);
    /* `after` skips a port that failed to bind. */
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_HOSTED, 2001), 2002);
    gpd_ports_take(&p, 2001);
    gpd_ports_take(&p, 2002);
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_HOSTED, 0), -1);
    gpd_ports_release(&p, 2001);
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_HOSTED, 0), 2001);
    cr_assert_eq(gpd_ports_next_free(&p, GPD_TIER_CUSTOM, 0), 3000);
    cr_assert(gpd_ports_in_use(&p, 8080));
}
