/*
 * The port allocator: which model ports are taken, per tier (hosted
 * models 2000-2500, custom models 3000-15000 by default).  It knows only
 * our own ports; a port some other process holds is found when binding
 * fails, and the caller then asks for the next one.
 */
#ifndef GPD_COMPUTE_PORTS_H
#define GPD_COMPUTE_PORTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

typedef struct gpd_ports {
    uint8_t used[65536 / 8];
    int min[GPD_TIER_COUNT], max[GPD_TIER_COUNT];
    int next[GPD_TIER_COUNT];   /* where the next search starts (round robin) */
} gpd_ports;

void gpd_ports_init(gpd_ports *p, const gpd_config *cfg);
bool gpd_ports_in_use(const gpd_ports *p, int port);
void gpd_ports_take(gpd_ports *p, int port);
void gpd_ports_release(gpd_ports *p, int port);
/* The next free port of the tier after `after` (0: from the start of the
 * search), or -1 when the tier is full.  Does not take it. */
int gpd_ports_next_free(gpd_ports *p, enum gpd_tier tier, int after);

#endif
