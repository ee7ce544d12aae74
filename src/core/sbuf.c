#include "core/sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

void gpd_sbuf_init(gpd_sbuf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
    b->failed = false;
}

void gpd_sbuf_free(gpd_sbuf *b)
{
    free(b->data);
    gpd_sbuf_init(b, b->max);
}

static int reserve(gpd_sbuf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (extra > b->max - b->len) {
        b->failed = true;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int gpd_sbuf_append(gpd_sbuf *b, const void *p, size_t n)
{
    if (reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int gpd_sbuf_puts(gpd_sbuf *b, const char *s)
{
    return gpd_sbuf_append(b, s, strlen(s));
}

int gpd_sbuf_append_u64(gpd_sbuf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return gpd_sbuf_append(b, tmp + i, sizeof(tmp) - i);
}

int gpd_sbuf_printf(gpd_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int gpd_sbuf_json_str(gpd_sbuf *b, const char *s, size_t n)
{
    /* Worst case every byte becomes \u00XX. */
    if (reserve(b, n * 6 + 2) != 0)
        return -1;
    b->data[b->len++] = '"';
    b->len += gpd_json_escape(b->data + b->len, n * 6 + 1, s, n);
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    return 0;
}

char *gpd_sbuf_take(gpd_sbuf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    gpd_sbuf_init(b, b->max);
    return p;
}
