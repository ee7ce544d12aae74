/*
 * Token usage, read from response bodies as they stream past: a byte-level
 * matcher for "prompt_tokens": N and "completion_tokens": N that keeps a
 * few bytes of state, so that it works across read boundaries, on whole
 * bodies and on SSE streams alike (the last value seen wins, which is the
 * final chunk's usage in a stream).  It allocates nothing and never
 * buffers the body.
 */
#ifndef GPD_GATEWAY_USAGE_H
#define GPD_GATEWAY_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gpd_usage {
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    bool seen;
    /* matcher state */
    uint8_t phase;
    uint8_t pos;
    uint8_t key;
    uint64_t num;
} gpd_usage;

static inline void gpd_usage_init(gpd_usage *u)
{
    *u = (gpd_usage){ 0 };
}

void gpd_usage_feed(gpd_usage *u, const char *p, size_t n);

#endif
