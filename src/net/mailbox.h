/*
 * A mailbox: tasks posted from any thread run on the loop that owns it.
 * This is how the control thread hands workers new endpoint tables and
 * admin answers, and how workers hand admin requests to the control
 * thread.  It takes a mutex, but only on the control path: the request
 * path never posts.
 */
#ifndef GPD_NET_MAILBOX_H
#define GPD_NET_MAILBOX_H

#include <uv.h>

typedef void (*gpd_task_fn)(void *arg);

typedef struct gpd_task {
    struct gpd_task *next;
    gpd_task_fn fn;
    void *arg;
} gpd_task;

typedef struct gpd_mailbox {
    uv_mutex_t mu;
    gpd_task *head, *tail;
    uv_async_t async;
} gpd_mailbox;

int gpd_mailbox_init(gpd_mailbox *mb, uv_loop_t *loop);
/* Post fn(arg) to run on the mailbox's loop.  Returns 0, or -1 when out of memory. */
int gpd_mailbox_post(gpd_mailbox *mb, gpd_task_fn fn, void *arg);
/* Close the async handle (on the owning loop); pending tasks are run first. */
void gpd_mailbox_close(gpd_mailbox *mb);

#endif
