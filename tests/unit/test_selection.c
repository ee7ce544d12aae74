#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "compute/selection.h"

static gpd_offer offer(const char *prov, const char *model, int count, double price, double spot, const char *region)
{
    gpd_offer o = { 0 };
    snprintf(o.provider, sizeof(o.provider), "%s", prov);
    snprintf(o.gpu_model, sizeof(o.gpu_model), "%s", model);
    snprintf(o.compute_type, sizeof(o.compute_type), "gpu");
    snprintf(o.region, sizeof(o.region), "%s", region);
    o.count = count;
    o.price_per_hr = price;
    o.spot_price_per_hr = spot;
    o.reliability = 0.99;
    o.available = -1;
    return o;
}

static gpd_offer_query query(const char *model, int count)
{
    return (gpd_offer_query){ .compute_type = "gpu", .gpu_model = model, .count = count };
}

Test(selection, price_under_0_8x_wins)
{
    gpd_offer o[] = { offer("vastai", "H100", 1, 2.0, -1, "US"), offer("ionet", "H100", 1, 1.5, -1, "US") };
    gpd_offer_query q = query("H100", 1);
    gpd_provider_load loads[] = { { "vastai", 0.0 }, { "ionet", 0.9 } };
    size_t order[2];
    gpd_selection s;
    gpd_select(o, 2, &q, loads, 2, order, &s);
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.provider, "ionet", "%s", s.why); /* 1.5 < 0.8 * 2.0: price wins despite the load */
    cr_assert_not_null(strstr(s.why, "cheapest"));
}

Test(selection, close_prices_go_to_the_least_loaded)
{
    gpd_offer o[] = { offer("vastai", "H100", 1, 2.0, -1, "US"), offer("ionet", "H100", 1, 1.8, -1, "US") };
    gpd_offer_query q = query("H100", 1);
    gpd_provider_load loads[] = { { "vastai", 0.1 }, { "ionet", 0.7 } };
    size_t order[2];
    gpd_selection s;
    gpd_select(o, 2, &q, loads, 2, order, &s);
    cr_assert_str_eq(s.provider, "vastai", "%s", s.why);
    cr_assert_not_null(strstr(s.why, "least loaded"));
    cr_assert_eq(order[1], 1); /* ionet follows for failover */
}

Test(selection, spot_price_counts)
{
    gpd_offer o[] = { offer("vastai", "H100", 1, 2.0, 1.0, "US"), offer("ionet", "H100", 1, 1.5, -1, "US") };
    gpd_offer_query q = query("H100", 1);
    size_t order[2];
    gpd_selection s;
    gpd_select(o, 2, &q, NULL, 0, order, &s);
    cr_assert_str_eq(s.provider, "vastai", "%s", s.why);
}

Test(selection, eligibility_filters)
{
    gpd_offer o[] = {
        offer("vastai", "A100", 1, 1.0, -1, "US"), /* wrong model */
        offer("vastai", "H100", 1, 5.0, -1, "US"), /* over the cap */
        offer("vastai", "H100", 2, 2.0, -1, "DE"), /* wrong region */
        offer("vastai", "H100", 2, 2.5, -1, "US"), /* eligible */
        offer("vastai", "H100", 1, 2.2, -1, "US"), /* too few GPUs */
    };
    gpd_offer_query q = query("H100", 2);
    q.region = "US";
    q.max_cost_per_hr = 3.0;
    size_t order[5];
    gpd_selection s;
    gpd_select(o, 5, &q, NULL, 0, order, &s);
    cr_assert_eq(s.n, 1);
    cr_assert_eq(order[0], 3);
}

Test(selection, nothing_eligible_says_why)
{
    gpd_offer o[] = { offer("vastai", "A100", 1, 1.0, -1, "US") };
    gpd_offer_query q = query("H100", 1);
    size_t order[1];
    gpd_selection s;
    gpd_select(o, 1, &q, NULL, 0, order, &s);
    cr_assert_eq(s.n, 0);
    cr_assert_null(s.provider);
    cr_assert_not_null(strstr(s.why, "no offer matches"));
}

Test(selection, offers_within_a_provider_cheapest_first)
{
    gpd_offer o[] = { offer("vastai", "H100", 1, 3.0, -1, "US"), offer("vastai", "H100", 1, 2.0, -1, "US"),
                      offer("vastai", "H100", 1, 2.5, -1, "US") };
    gpd_offer_query q = query("H100", 1);
    size_t order[3];
    gpd_selection s;
    gpd_select(o, 3, &q, NULL, 0, order, &s);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 0);
}

Test(selection, zone_prefix_region)
{
    gpd_offer o = offer("gcp_tpu", "v5litepod-8", 8, 9.6, -1, "us-central1-a");
    snprintf(o.compute_type, sizeof(o.compute_type), "tpu");
    gpd_offer_query q = { .compute_type = "tpu", .tpu_type = "v5litepod-8", .count = 8, .region = "us-central1" };
    cr_assert(gpd_offer_eligible(&o, &q));
    q.region = "us-central";
    cr_assert_not(gpd_offer_eligible(&o, &q));
}

/* The number: selection over 10,000 offers in under 5 ms. */
Test(selection, ten_thousand_offers_fast)
{
    static gpd_offer o[10000];
    static size_t order[10000];
    const char *provs[] = { "vastai", "ionet", "local" };
    const char *models[] = { "H100", "A100", "RTX4090", "L40S" };
    for (int i = 0; i < 10000; i++)
        o[i] = offer(provs[i % 3], models[i % 4], 1 + i % 8, 0.5 + (i * 7919 % 1000) / 100.0, -1, i % 5 ? "US" : "DE");
    gpd_offer_query q = query("H100", 2);
    gpd_selection s;
    struct timespec a, b;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        gpd_select(o, 10000, &q, NULL, 0, order, &s);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        if (ms < best)
            best = ms;
    }
    cr_log_info("selection over 10,000 offers: %.3f ms (best of 5)", best);
    cr_assert_gt(s.n, 0);
    cr_assert_lt(best, 5.0, "took %.3f ms", best);
}
