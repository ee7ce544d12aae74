/*
 * Listening sockets.  One socket per port, shared by every worker (each
 * worker polls it from its own loop), so that 12,500 model ports cost
 * 12,500 descriptors, not 12,500 per worker.  SO_REUSEPORT lets several
 * gpuproxyd processes on one host share the ports.
 *
 * A listener is reference-counted: the endpoints that use it hold
 * references, and the socket is closed when the last one goes, which is
 * after every worker has stopped polling it (workers drop a table only
 * after switching their polls to the next one).
 */
#ifndef GPD_NET_LISTENER_H
#define GPD_NET_LISTENER_H

#include <stdatomic.h>
#include <stdbool.h>

typedef struct gpd_listener {
    int fd;
    int port;
    bool is_main;        /* the main port: routes by model, admin API, metrics */
    _Atomic int refs;
} gpd_listener;

/*
 * Open host:port (SO_REUSEADDR, SO_REUSEPORT, non-blocking, backlog 4096).
 * Returns the listener with one reference, or NULL with *err set to a
 * negative errno (-EADDRINUSE when the port is taken).
 */
gpd_listener *gpd_listener_open(const char *host, int port, bool is_main, int *err);
void gpd_listener_ref(gpd_listener *l);
/* Drop a reference; the last one closes the socket. */
void gpd_listener_unref(gpd_listener *l);

#endif
