#include "net/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct gpd_worker_poll {
    uv_poll_t poll;
    gpd_worker *w;
    gpd_listener *listener;   /* holds a reference while polled */
    struct gpd_worker_poll *next, *prev;
    uint32_t mark;
} gpd_worker_poll;

#define TICK_MS 50
#define ACCEPTS_PER_WAKE 64

static void tick(uv_timer_t *t)
{
    gpd_worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    for (int i = 0; i < GPD_WAIT_COUNT; i++) {
        gpd_deadline *d;
        while ((d = gpd_deadline_pop_expired(&w->waits[i], now)) != NULL)
            w->waits[i].on_expire(d);
    }
}

int gpd_worker_init(gpd_worker *w, int id, const uint64_t timeouts_ms[GPD_WAIT_COUNT],
                    void (*on_expire[GPD_WAIT_COUNT])(gpd_deadline *))
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->accepting = true;
    if (uv_loop_init(&w->loop) != 0)
        return -1;
    w->loop.data = w;
    if (gpd_mailbox_init(&w->mailbox, &w->loop) != 0)
        return -1;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    for (int i = 0; i < GPD_WAIT_COUNT; i++)
        gpd_deadline_list_init(&w->waits[i], timeouts_ms[i], on_expire[i]);
    w->poll_by_port = calloc(65536, sizeof(*w->poll_by_port));
    w->free_bufs = calloc(GPD_BUF_FREE_MAX, sizeof(void *));
    if (!w->poll_by_port || !w->free_bufs || gpd_log_ring_init(&w->log, 1 << 20) != 0)
        return -1;
    return 0;
}

static void worker_main(void *arg)
{
    gpd_worker *w = arg;
    uv_timer_start(&w->tick, tick, TICK_MS, TICK_MS);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->on_exit)
        w->on_exit(w);
}

int gpd_worker_start(gpd_worker *w)
{
    return uv_thread_create(&w->thread, worker_main, w);
}

void gpd_worker_join(gpd_worker *w)
{
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
    for (size_t i = 0; i < w->n_free_bufs; i++)
        free(w->free_bufs[i]);
    free(w->free_bufs);
    free(w->poll_by_port);
    gpd_log_ring_free(&w->log);
}

static void on_listener_readable(uv_poll_t *p, int status, int events)
{
    gpd_worker_poll *wp = p->data;
    gpd_worker *w = wp->w;
    if (status < 0 || !w->accepting)
        return;
    for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
        int fd = accept4(wp->listener->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            /* EAGAIN: another worker took it, or the backlog is empty.
             * EMFILE/ENFILE: out of descriptors; the connection waits in the
             * backlog until one frees up. */
            return;
        }
        w->on_accept(w, fd, wp->listener);
    }
}

static void poll_closed(uv_handle_t *h)
{
    gpd_worker_poll *wp = h->data;
    gpd_listener_unref(wp->listener);
    free(wp);
}

static void poll_remove(gpd_worker *w, gpd_worker_poll *wp)
{
    if (w->poll_by_port[wp->listener->port] == wp)
        w->poll_by_port[wp->listener->port] = NULL;
    if (wp->prev)
        wp->prev->next = wp->next;
    else
        w->polls = wp->next;
    if (wp->next)
        wp->next->prev = wp->prev;
    uv_poll_stop(&wp->poll);
    uv_close((uv_handle_t *)&wp->poll, poll_closed);
}

static int poll_add(gpd_worker *w, gpd_listener *l)
{
    gpd_worker_poll *wp = calloc(1, sizeof(*wp));
    if (!wp)
        return -1;
    wp->w = w;
    wp->listener = l;
    wp->mark = w->poll_mark;
    if (uv_poll_init_socket(&w->loop, &wp->poll, l->fd) != 0) {
        free(wp);
        return -1;
    }
    gpd_listener_ref(l);
    wp->poll.data = wp;
    if (w->accepting)
        uv_poll_start(&wp->poll, UV_READABLE, on_listener_readable);
    wp->next = w->polls;
    if (w->polls)
        w->polls->prev = wp;
    w->polls = wp;
    w->poll_by_port[l->port] = wp;
    return 0;
}

void gpd_worker_set_listeners(gpd_worker *w, gpd_listener *const *ls, size_t n)
{
    uint32_t mark = ++w->poll_mark;
    for (size_t i = 0; i < n; i++) {
        gpd_listener *l = ls[i];
        gpd_worker_poll *wp = w->poll_by_port[l->port];
        if (wp && wp->listener != l) {
            /* The port was closed and opened again: a new socket. */
            poll_remove(w, wp);
            wp = NULL;
        }
        if (wp)
            wp->mark = mark;
        else
            poll_add(w, l);
    }
    for (gpd_worker_poll *wp = w->polls, *next; wp; wp = next) {
        next = wp->next;
        if (wp->mark != mark)
            poll_remove(w, wp);
    }
}

void gpd_worker_stop_accepting(gpd_worker *w)
{
    w->accepting = false;
    for (gpd_worker_poll *wp = w->polls; wp; wp = wp->next)
        uv_poll_stop(&wp->poll);
}

void gpd_worker_close_loop(gpd_worker *w)
{
    while (w->polls)
        poll_remove(w, w->polls);
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    gpd_mailbox_close(&w->mailbox);
}

void *gpd_worker_buf_get(gpd_worker *w)
{
    if (w->n_free_bufs > 0)
        return w->free_bufs[--w->n_free_bufs];
    return malloc(GPD_BUF_SIZE);
}

void gpd_worker_buf_put(gpd_worker *w, void *buf)
{
    if (!buf)
        return;
    if (w->n_free_bufs < GPD_BUF_FREE_MAX)
        w->free_bufs[w->n_free_bufs++] = buf;
    else
        free(buf);
}
