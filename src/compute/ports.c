#include "compute/ports.h"

#include <string.h>

void gpd_ports_init(gpd_ports *p, const gpd_config *cfg)
{
    memset(p, 0, sizeof(*p));
    for (int t = 0; t < GPD_TIER_COUNT; t++) {
        p->min[t] = cfg->port_min[t];
        p->max[t] = cfg->port_max[t];
        p->next[t] = cfg->port_min[t];
    }
    gpd_ports_take(p, cfg->listen_port);
}

bool gpd_ports_in_use(const gpd_ports *p, int port)
{
    return port > 0 && port < 65536 && (p->used[port >> 3] & (1u << (port & 7)));
}

void gpd_ports_take(gpd_ports *p, int port)
{
    if (port > 0 && port < 65536)
        p->used[port >> 3] |= (uint8_t)(1u << (port & 7));
}

void gpd_ports_release(gpd_ports *p, int port)
{
    if (port > 0 && port < 65536)
        p->used[port >> 3] &= (uint8_t) ~(1u << (port & 7));
}

int gpd_ports_next_free(gpd_ports *p, enum gpd_tier tier, int after)
{
    int lo = p->min[tier], hi = p->max[tier];
    int span = hi - lo + 1;
    /* Lowest free port first: operators expect model ports to fill the
     * range in order; `after` skips ports that failed to bind. */
    int start = after ? after + 1 : lo;
    for (int i = 0; i < span; i++) {
        int port = start + i;
        if (port > hi)
            break;
        if (!gpd_ports_in_use(p, port))
            return port;
    }
    return -1;
}
