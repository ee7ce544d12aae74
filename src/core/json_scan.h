/*
 * A validating JSON scanner that allocates nothing: it checks that a
 * request body is one well-formed JSON object and reports where chosen
 * top-level members' values lie, so that the gateway can route on "model"
 * and "stream" and splice "model" without building a tree for every
 * request.  Depth is capped so that hostile input cannot exhaust the stack
 * (the scanner is iterative anyway).
 */
#ifndef GPD_CORE_JSON_SCAN_H
#define GPD_CORE_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

#define GPD_JSON_MAX_DEPTH 256

typedef struct gpd_json_field {
    const char *key;  /* in: top-level member name to find (compared raw, unescaped keys only) */
    gpd_str value;    /* out: the raw value span, quotes included for strings */
    bool found;       /* out */
} gpd_json_field;

/*
 * Validate buf[0..len) as a single JSON object and fill the fields found at
 * its top level (the last occurrence wins, as most parsers do).  Returns 0,
 * or -1 with *why naming the problem and *err_off its byte offset.
 */
int gpd_json_scan_object(const char *buf, size_t len, gpd_json_field *fields, size_t nfields, const char **why,
                         size_t *err_off);

/*
 * Decode a raw JSON string span (with its quotes) into out (NUL-terminated).
 * Returns the decoded length, or -1 when raw is not a string or does not fit.
 */
long gpd_json_string_decode(gpd_str raw, char *out, size_t outlen);

/* True when the raw value span is the literal true. */
static inline bool gpd_json_is_true(gpd_str raw)
{
    return raw.len == 4 && memcmp(raw.base, "true", 4) == 0;
}

#endif
