/*
 * The admin API, served on the control thread: JSON in, calls into the
 * registry (and, with later issues, compute/ and distill/), JSON out.
 */
#ifndef GPD_API_ADMIN_H
#define GPD_API_ADMIN_H

#include "gateway/gateway.h"
#include "gateway/registry.h"

/* Set the registry the handlers work on (control thread, before workers start). */
void gpd_admin_init(gpd_registry *r);
/* gpd_gateway.admin: answer one call and reply to its worker. */
void gpd_admin_handle(gpd_admin_call *call);

#endif
