#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

gpd_listener *gpd_listener_open(const char *host, int port, bool is_main, int *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd = -1, one = 1;
    gpd_listener *l = NULL;

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sslen = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sslen = sizeof(*s6);
    } else if (!strcmp(host, "localhost")) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sslen = sizeof(*s4);
    } else {
        *err = -EINVAL;
        return NULL;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0)
        goto fail;
    if (listen(fd, 4096) != 0)
        goto fail;
    l = calloc(1, sizeof(*l));
    if (!l) {
        errno = ENOMEM;
        goto fail;
    }
    l->fd = fd;
    l->port = port;
    l->is_main = is_main;
    atomic_init(&l->refs, 1);
    return l;
fail:
    *err = -errno;
    if (fd >= 0)
        close(fd);
    return NULL;
}

void gpd_listener_ref(gpd_listener *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

void gpd_listener_unref(gpd_listener *l)
{
    if (!l)
        return;
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
        close(l->fd);
        free(l);
    }
}
