#include "compute/selection.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PROVIDERS 8

double gpd_offer_effective_price(const gpd_offer *o)
{
    return o->spot_price_per_hr >= 0 && o->spot_price_per_hr < o->price_per_hr ? o->spot_price_per_hr
                                                                             : o->price_per_hr;
}

/* A region matches as an ISO country code ("US" matches "US") or as a zone
 * prefix ("us-central1" matches "us-central1-a"), case-insensitively. */
static bool region_matches(const char *want, const char *have)
{
    if (!want || !*want)
        return true;
    size_t n = strlen(want);
    return strncasecmp(want, have, n) == 0 && (have[n] == '\0' || have[n] == '-');
}

bool gpd_offer_eligible(const gpd_offer *o, const gpd_offer_query *q)
{
    if (q->compute_type && strcmp(q->compute_type, o->compute_type) != 0)
        return false;
    if (q->compute_type && !strcmp(q->compute_type, "tpu")) {
        if (q->tpu_type && *q->tpu_type && strcasecmp(q->tpu_type, o->gpu_model) != 0)
            return false;
    } else if (q->gpu_model && *q->gpu_model && strcasecmp(q->gpu_model, o->gpu_model) != 0) {
        return false;
    }
    if (q->count > 0 && o->count < q->count)
        return false;
    if (!region_matches(q->region, o->region))
        return false;
    if (o->available == 0)
        return false;
    if (q->max_cost_per_hr > 0 && o->price_per_hr > q->max_cost_per_hr)
        return false;
    return true;
}

typedef struct prov_summary {
    const char *name;
    double best;     /* lowest effective price among its eligible offers */
    double load;
    int rank;
    size_t count;
} prov_summary;

typedef struct sort_ctx {
    const gpd_offer *offers;
    const prov_summary *provs;
    size_t nprovs;
} sort_ctx;

static int prov_index(const prov_summary *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].name, name))
            return (int)i;
    return -1;
}

static int cmp_offers(const void *a, const void *b, void *vctx)
{
    const sort_ctx *ctx = vctx;
    const gpd_offer *x = &ctx->offers[*(const size_t *)a], *y = &ctx->offers[*(const size_t *)b];
    int rx = ctx->provs[prov_index(ctx->provs, ctx->nprovs, x->provider)].rank;
    int ry = ctx->provs[prov_index(ctx->provs, ctx->nprovs, y->provider)].rank;
    if (rx != ry)
        return rx - ry;
    double px = gpd_offer_effective_price(x), py = gpd_offer_effective_price(y);
    if (px != py)
        return px < py ? -1 : 1;
    if (x->reliability != y->reliability)
        return x->reliability > y->reliability ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1; /* stable */
}

static int cmp_by_price(const void *a, const void *b)
{
    const prov_summary *x = a, *y = b;
    return x->best < y->best ? -1 : x->best > y->best ? 1 : 0;
}

int gpd_select(const gpd_offer *offers, size_t n, const gpd_offer_query *q, const gpd_provider_load *loads,
               size_t nloads, size_t *order, gpd_selection *sel)
{
    prov_summary provs[MAX_PROVIDERS];
    size_t nprovs = 0, k = 0;
    memset(sel, 0, sizeof(*sel));

    for (size_t i = 0; i < n; i++) {
        const gpd_offer *o = &offers[i];
        if (!gpd_offer_eligible(o, q))
            continue;
        int pi = prov_index(provs, nprovs, o->provider);
        if (pi < 0) {
            if (nprovs == MAX_PROVIDERS)
                continue;
            pi = (int)nprovs++;
            provs[pi] = (prov_summary){ .name = o->provider, .best = INFINITY };
            for (size_t l = 0; l < nloads; l++)
                if (!strcmp(loads[l].provider, o->provider))
                    provs[pi].load = loads[l].load;
        }
        double price = gpd_offer_effective_price(o);
        if (price < provs[pi].best)
            provs[pi].best = price;
        provs[pi].count++;
        order[k++] = i;
    }
    if (k == 0) {
        snprintf(sel->why, sizeof(sel->why), "no offer matches %s%s%s x%d%s%s%s", q->compute_type ? q->compute_type : "",
                 q->gpu_model || q->tpu_type ? " " : "", q->gpu_model ? q->gpu_model : q->tpu_type ? q->tpu_type : "",
                 q->count, q->region ? " in " : "", q->region ? q->region : "",
                 q->max_cost_per_hr > 0 ? " within max_cost_per_hr" : "");
        return 0;
    }

    /* Rank providers: by price first, then decide whether the cheapest
     * wins on price or the least loaded of the close ones goes first. */
    qsort(provs, nprovs, sizeof(*provs), cmp_by_price);
    const prov_summary *cheapest = &provs[0];
    bool price_wins = nprovs == 1 || cheapest->best < GPD_PRICE_WIN_RATIO * provs[1].best;
    size_t first = 0;
    if (!price_wins) {
        for (size_t i = 1; i < nprovs; i++) {
            if (provs[i].best * GPD_PRICE_WIN_RATIO > cheapest->best)
                break; /* beyond the margin: not a contender */
            if (provs[i].load < provs[first].load)
                first = i;
        }
    }
    provs[first].rank = 0;
    int r = 1;
    for (size_t i = 0; i < nprovs; i++)
        if (i != first)
            provs[i].rank = r++;

    sort_ctx ctx = { offers, provs, nprovs };
    qsort_r(order, k, sizeof(*order), cmp_offers, &ctx);
    sel->n = k;
    sel->provider = offers[order[0]].provider;
    const prov_summary *w = &provs[first];
    if (nprovs == 1)
        snprintf(sel->why, sizeof(sel->why), "%s: the only provider with a matching offer (%zu offers, from $%.3f/h)",
                 w->name, w->count, w->best);
    else if (price_wins)
        snprintf(sel->why, sizeof(sel->why), "%s: cheapest at $%.3f/h, under %.1fx the next (%s at $%.3f/h)", w->name,
                 w->best, GPD_PRICE_WIN_RATIO, provs[1].name, provs[1].best);
    else
        snprintf(sel->why, sizeof(sel->why),
                 "%s: least loaded (%.0f%% of its limit) among providers priced within %.2fx of the cheapest "
                 "($%.3f/h vs %s at $%.3f/h)",
                 w->name, w->load * 100, 1 / GPD_PRICE_WIN_RATIO, w->best, cheapest->name, cheapest->best);
    return 0;
}
