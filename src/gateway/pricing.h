/*
 * OpenRouter's model pricing, read from its public /models list on the
 * control thread at start and on a timer, so that hosted models without
 * configured prices still get a cost.
 */
#ifndef GPD_GATEWAY_PRICING_H
#define GPD_GATEWAY_PRICING_H

#include "gateway/registry.h"
#include "http/curl_client.h"

typedef struct gpd_pricing gpd_pricing;

gpd_pricing *gpd_pricing_start(uv_loop_t *loop, gpd_curl *curl, gpd_registry *r, const gpd_config *cfg);
void gpd_pricing_stop(gpd_pricing *p);

/* Parse an OpenRouter /models body into prices (exposed for tests). Returns count or -1. */
long gpd_pricing_parse(const char *body, size_t len, gpd_price **out);

#endif
