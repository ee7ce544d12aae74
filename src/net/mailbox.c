#include "net/mailbox.h"

#include <stdlib.h>

static void mailbox_run(uv_async_t *a)
{
    gpd_mailbox *mb = a->data;
    uv_mutex_lock(&mb->mu);
    gpd_task *t = mb->head;
    mb->head = mb->tail = NULL;
    uv_mutex_unlock(&mb->mu);
    while (t) {
        gpd_task *next = t->next;
        t->fn(t->arg);
        free(t);
        t = next;
    }
}

int gpd_mailbox_init(gpd_mailbox *mb, uv_loop_t *loop)
{
    mb->head = mb->tail = NULL;
    if (uv_mutex_init(&mb->mu) != 0)
        return -1;
    mb->async.data = mb;
    return uv_async_init(loop, &mb->async, mailbox_run);
}

int gpd_mailbox_post(gpd_mailbox *mb, gpd_task_fn fn, void *arg)
{
    gpd_task *t = malloc(sizeof(*t));
    if (!t)
        return -1;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    uv_mutex_lock(&mb->mu);
    if (mb->tail)
        mb->tail->next = t;
    else
        mb->head = t;
    mb->tail = t;
    uv_mutex_unlock(&mb->mu);
    uv_async_send(&mb->async);
    return 0;
}

static void mailbox_closed(uv_handle_t *h)
{
    gpd_mailbox *mb = h->data;
    uv_mutex_destroy(&mb->mu);
}

void gpd_mailbox_close(gpd_mailbox *mb)
{
    mailbox_run(&mb->async);
    uv_close((uv_handle_t *)&mb->async, mailbox_closed);
}
