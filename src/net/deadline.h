/*
 * Deadline lists: O(1) timeouts for many connections.
 *
 * Every connection in a given state waits with the same timeout (header,
 * idle, upstream connect...), so appending at the tail keeps each list
 * sorted by deadline.  A worker's periodic tick pops expired entries from
 * the heads.  This costs two pointers per connection instead of a heap
 * node, and no system call when a deadline moves (HAProxy and nginx reach
 * the same place with trees; the list suffices because the timeout per
 * list is constant).
 */
#ifndef GPD_NET_DEADLINE_H
#define GPD_NET_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct gpd_deadline {
    struct gpd_deadline *prev, *next;
    uint64_t at_ms;     /* expiry time on the loop's clock */
    struct gpd_deadline_list *list; /* NULL when not armed */
} gpd_deadline;

typedef struct gpd_deadline_list {
    gpd_deadline head;  /* sentinel */
    uint64_t timeout_ms;
    void (*on_expire)(gpd_deadline *d); /* called by the tick for each expired entry (already unlinked) */
} gpd_deadline_list;

static inline void gpd_deadline_list_init(gpd_deadline_list *l, uint64_t timeout_ms, void (*on_expire)(gpd_deadline *))
{
    l->head.prev = l->head.next = &l->head;
    l->head.list = l;
    l->timeout_ms = timeout_ms;
    l->on_expire = on_expire;
}

static inline void gpd_deadline_cancel(gpd_deadline *d)
{
    if (!d->list)
        return;
    d->prev->next = d->next;
    d->next->prev = d->prev;
    d->prev = d->next = NULL;
    d->list = NULL;
}

/* (Re)arm d on list l to expire at now + l->timeout_ms. */
static inline void gpd_deadline_arm(gpd_deadline_list *l, gpd_deadline *d, uint64_t now_ms)
{
    gpd_deadline_cancel(d);
    d->at_ms = now_ms + l->timeout_ms;
    d->list = l;
    d->prev = l->head.prev;
    d->next = &l->head;
    l->head.prev->next = d;
    l->head.prev = d;
}

/* Pop the first expired entry, or NULL. */
static inline gpd_deadline *gpd_deadline_pop_expired(gpd_deadline_list *l, uint64_t now_ms)
{
    gpd_deadline *d = l->head.next;
    if (d == &l->head || d->at_ms > now_ms)
        return NULL;
    gpd_deadline_cancel(d);
    return d;
}

#define gpd_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
