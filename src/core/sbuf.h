/*
 * sbuf: a growable byte buffer with a hard cap (curl's dynbuf habit).
 * Appends past the cap fail and leave the buffer marked truncated, so a
 * caller can never be made to grow it without bound.
 */
#ifndef GPD_CORE_SBUF_H
#define GPD_CORE_SBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gpd_sbuf {
    char *data;      /* NUL-terminated when non-NULL */
    size_t len, cap;
    size_t max;      /* hard cap on len */
    bool failed;     /* an append hit the cap or ran out of memory */
} gpd_sbuf;

void gpd_sbuf_init(gpd_sbuf *b, size_t max);
void gpd_sbuf_free(gpd_sbuf *b);
int gpd_sbuf_append(gpd_sbuf *b, const void *p, size_t n);
int gpd_sbuf_puts(gpd_sbuf *b, const char *s);
int gpd_sbuf_printf(gpd_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append v in decimal (hot paths: no printf). */
int gpd_sbuf_append_u64(gpd_sbuf *b, unsigned long long v);
/* Empty the buffer, keeping its memory. */
static inline void gpd_sbuf_reset(gpd_sbuf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}
/* Append s as a JSON string literal, quotes included. */
int gpd_sbuf_json_str(gpd_sbuf *b, const char *s, size_t n);
/* Take the data (caller frees); the buffer is reset. */
char *gpd_sbuf_take(gpd_sbuf *b, size_t *len);

#endif
