/*
 * Durations and sizes as people write them in configuration files.
 *
 * Durations: one or more <number><unit> segments with units d, h, m, s, ms
 * (lower case, since "M" reads as months), largest unit first and each unit
 * at most once ("1h30m", "1m30s", "2s500ms"); a bare number is seconds.  A
 * number may have a fraction ("1.5s", "0.5h"); the total is rounded to the
 * nearest millisecond.  No sign, no spaces.
 *
 * Sizes: <number>[ ]<unit>, at most one space, unit case-insensitive:
 * B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, all 1024-based (KB == KiB, as
 * in nginx's "16m").  A bare number is bytes.  A fraction is allowed with a
 * unit ("1.5G") and rounded to the nearest byte; not on a bare byte count.
 *
 * Fractions: only their first 9 digits count.  That is finer than a
 * millisecond of a day and than a byte of a TiB, so nothing visible is lost,
 * and it keeps every product within 64 bits.
 */
#include "core/units.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define FRAC_DIGITS_MAX 9

struct decimal {
    uint64_t whole;
    uint64_t frac;       /* first FRAC_DIGITS_MAX fraction digits ... */
    uint64_t frac_scale; /* ... over this power of ten (1 when there is none) */
    bool has_frac;
};

struct unit {
    const char *name;
    uint64_t mult;
};

/* Largest first: a duration's segments must follow this order. */
static const struct unit duration_units[] = {
    { "d", 86400000 },
    { "h", 3600000 },
    { "m", 60000 },
    { "s", 1000 },
    { "ms", 1 },
};

static const struct unit size_units[] = {
    { "b", 1 },
    { "k", (uint64_t)1 << 10 }, { "kb", (uint64_t)1 << 10 }, { "kib", (uint64_t)1 << 10 },
    { "m", (uint64_t)1 << 20 }, { "mb", (uint64_t)1 << 20 }, { "mib", (uint64_t)1 << 20 },
    { "g", (uint64_t)1 << 30 }, { "gb", (uint64_t)1 << 30 }, { "gib", (uint64_t)1 << 30 },
    { "t", (uint64_t)1 << 40 }, { "tb", (uint64_t)1 << 40 }, { "tib", (uint64_t)1 << 40 },
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Cursor on a digit.  "1." and ".5" are refused: they read like typos. */
static int scan_decimal(const char *s, size_t len, size_t *i, struct decimal *d, const char **why)
{
    size_t start;

    d->whole = 0;
    d->frac = 0;
    d->frac_scale = 1;
    d->has_frac = false;
    while (*i < len && is_digit(s[*i])) {
        unsigned dig = (unsigned)(s[*i] - '0');
        if (d->whole > (UINT64_MAX - dig) / 10) {
            *why = "value too large";
            return -1;
        }
        d->whole = d->whole * 10 + dig;
        (*i)++;
    }
    if (*i < len && s[*i] == '.') {
        (*i)++;
        start = *i;
        while (*i < len && is_digit(s[*i])) {
            if (d->frac_scale < 1000000000u) {
                d->frac = d->frac * 10 + (unsigned)(s[*i] - '0');
                d->frac_scale *= 10;
            }
            (*i)++;
        }
        if (*i == start) {
            *why = "missing digits after '.'";
            return -1;
        }
        d->has_frac = true;
    }
    return 0;
}

/* d * mult rounded half up; -1 on overflow. */
static int scale_decimal(const struct decimal *d, uint64_t mult, uint64_t *out)
{
    uint64_t whole, frac, q, r;

    if (d->whole > UINT64_MAX / mult)
        return -1;
    whole = d->whole * mult;
    /*
     * frac * mult / scale without a 128-bit product: split mult by scale.
     * frac < scale <= 1e9, so both products below fit in 64 bits.
     */
    q = mult / d->frac_scale;
    r = mult % d->frac_scale;
    frac = d->frac * q + (d->frac * r + d->frac_scale / 2) / d->frac_scale;
    if (whole > UINT64_MAX - frac)
        return -1;
    *out = whole + frac;
    return 0;
}

/* Why a character cannot start a number here. */
static const char *not_a_number(char c, const char *negative)
{
    if (c == '-')
        return negative;
    if (is_alpha(c) || c == '.' || c == '+')
        return "missing number";
    return "unexpected character";
}

int gpd_parse_duration_ms(const char *s, size_t len, uint64_t *out_ms, const char **why)
{
    const char *reason = NULL;
    uint64_t total = 0;
    size_t i = 0, nunits = sizeof duration_units / sizeof duration_units[0];
    size_t next_unit = 0; /* index of the smallest unit still allowed */
    int rc = -1;

    if (!s || len == 0) {
        reason = "empty duration";
        goto out;
    }
    while (i < len) {
        struct decimal d;
        size_t ustart, ulen, u;
        uint64_t part;

        if (!is_digit(s[i])) {
            reason = not_a_number(s[i], "negative duration");
            goto out;
        }
        if (scan_decimal(s, len, &i, &d, &reason) < 0)
            goto out;
        ustart = i;
        while (i < len && is_alpha(s[i]))
            i++;
        ulen = i - ustart;
        if (ulen == 0) {
            if (i < len) {
                reason = "unexpected character";
                goto out;
            }
            if (next_unit != 0) {
                reason = "missing unit after number";
                goto out;
            }
            u = 3; /* a bare number is seconds */
        } else {
            for (u = 0; u < nunits; u++)
                if (ulen == strlen(duration_units[u].name) &&
                    memcmp(s + ustart, duration_units[u].name, ulen) == 0)
                    break;
            if (u == nunits) {
                reason = "unknown duration unit";
                goto out;
            }
            if (u < next_unit) {
                reason = "duration units must go from largest to smallest, each once";
                goto out;
            }
        }
        if (scale_decimal(&d, duration_units[u].mult, &part) < 0 || total > UINT64_MAX - part) {
            reason = "value too large";
            goto out;
        }
        total += part;
        next_unit = u + 1;
    }
    *out_ms = total;
    rc = 0;
out:
    if (rc < 0 && why)
        *why = reason;
    return rc;
}

int gpd_parse_size(const char *s, size_t len, uint64_t *out_bytes, const char **why)
{
    const char *reason = NULL;
    struct decimal d;
    size_t i = 0, ustart, ulen, u, k, nunits = sizeof size_units / sizeof size_units[0];
    uint64_t mult = 1;
    bool space = false;
    int rc = -1;

    if (!s || len == 0) {
        reason = "empty size";
        goto out;
    }
    if (!is_digit(s[0])) {
        reason = not_a_number(s[0], "negative size");
        goto out;
    }
    if (scan_decimal(s, len, &i, &d, &reason) < 0)
        goto out;
    if (i < len && s[i] == ' ') {
        space = true;
        i++;
    }
    ustart = i;
    while (i < len && is_alpha(s[i]))
        i++;
    ulen = i - ustart;
    if (i < len) {
        reason = "unexpected character";
        goto out;
    }
    if (ulen == 0 && space) {
        reason = "missing unit after the space";
        goto out;
    }
    if (ulen > 0) {
        for (u = 0; u < nunits; u++) {
            const char *name = size_units[u].name;
            for (k = 0; k < ulen && name[k] && to_lower(s[ustart + k]) == name[k]; k++)
                ;
            if (k == ulen && name[k] == '\0')
                break;
        }
        if (u == nunits) {
            reason = "unknown size unit";
            goto out;
        }
        mult = size_units[u].mult;
    }
    if (d.has_frac && mult == 1) {
        reason = "fractional byte count";
        goto out;
    }
    if (scale_decimal(&d, mult, out_bytes) < 0) {
        reason = "value too large";
        goto out;
    }
    rc = 0;
out:
    if (rc < 0 && why)
        *why = reason;
    return rc;
}

int gpd_format_duration(char *buf, size_t buflen, uint64_t ms)
{
    char tmp[96];
    size_t n = 0, u;

    tmp[0] = '\0';
    if (ms == 0)
        return snprintf(buf, buflen, "0s");
    for (u = 0; u < sizeof duration_units / sizeof duration_units[0]; u++) {
        uint64_t q = ms / duration_units[u].mult;
        if (q == 0)
            continue;
        ms %= duration_units[u].mult;
        n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%" PRIu64 "%s", q, duration_units[u].name);
    }
    return snprintf(buf, buflen, "%s", tmp);
}
