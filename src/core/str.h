/*
 * gpd_str: a borrowed, length-delimited byte span.  Parsers hand these out
 * pointing into the caller's buffer; nothing here allocates or copies.
 */
#ifndef GPD_CORE_STR_H
#define GPD_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct gpd_str {
    const char *base;
    size_t len;
} gpd_str;

#define GPD_STR_LIT(s) ((gpd_str){ (s), sizeof(s) - 1 })
#define GPD_STR_NULL ((gpd_str){ NULL, 0 })
/* printf("%.*s", GPD_STR_FMT(s)) */
#define GPD_STR_FMT(s) (int)(s).len, (s).base

static inline gpd_str gpd_str_make(const char *base, size_t len)
{
    return (gpd_str){ base, len };
}

static inline gpd_str gpd_str_from_cstr(const char *s)
{
    return (gpd_str){ s, s ? strlen(s) : 0 };
}

static inline bool gpd_str_eq(gpd_str a, gpd_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static inline bool gpd_str_eq_cstr(gpd_str a, const char *b)
{
    return gpd_str_eq(a, gpd_str_from_cstr(b));
}

/* ASCII case-insensitive comparison, as HTTP header names need. */
static inline bool gpd_str_case_eq(gpd_str a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && strncasecmp(a.base, b, n) == 0;
}

static inline bool gpd_str_has_prefix(gpd_str a, const char *prefix)
{
    size_t n = strlen(prefix);
    return a.len >= n && memcmp(a.base, prefix, n) == 0;
}

#endif
