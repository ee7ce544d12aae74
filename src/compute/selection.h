/*
 * Provider and offer selection: a pure function from (offers, request,
 * provider loads) to an ordered list of offers to try and the reason for
 * the choice.  The rules, from the seed:
 *
 *   - eligibility: the GPU model (or TPU type), the count, the region, the
 *     availability, and the request's max_cost_per_hr;
 *   - price: a provider whose best price is under 0.8x every other
 *     provider's best price wins outright (spot price where the offer has
 *     one, the price actually paid otherwise);
 *   - otherwise load: among providers within that margin of the cheapest,
 *     the least loaded (GPUs held / its limit) goes first, ties to the cheaper;
 *   - the other providers follow by price, for failover.
 * Within a provider, offers go cheapest first, then most reliable.
 */
#ifndef GPD_COMPUTE_SELECTION_H
#define GPD_COMPUTE_SELECTION_H

#include <stddef.h>

#include "compute/provider.h"

#define GPD_PRICE_WIN_RATIO 0.8

typedef struct gpd_provider_load {
    const char *provider;
    double load;            /* 0-1: held / limit; > 1 means full */
} gpd_provider_load;

typedef struct gpd_selection {
    size_t n;               /* offers to try, in order, as indices into the input */
    const char *provider;   /* the provider of the first offer, NULL when none */
    char why[512];          /* human-readable reason, also when nothing is eligible */
} gpd_selection;

/* True when offer o can serve query q (model, count, region, cost, availability). */
bool gpd_offer_eligible(const gpd_offer *o, const gpd_offer_query *q);
/* The price used for comparisons: spot when the offer has one, else on-demand. */
double gpd_offer_effective_price(const gpd_offer *o);

/*
 * Rank offers[0..n) for q.  order must hold n entries; on return
 * order[0..sel->n) are the eligible offers in the order to try.
 * loads[0..nloads) may be NULL/0 (all loads 0).  O(n log n), no allocation
 * beyond one scratch array.
 */
int gpd_select(const gpd_offer *offers, size_t n, const gpd_offer_query *q, const gpd_provider_load *loads,
               size_t nloads, size_t *order, gpd_selection *sel);

#endif
