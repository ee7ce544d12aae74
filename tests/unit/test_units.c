/*
 * Unit tests for src/core/units.c: durations, sizes, and the compact
 * duration format (which must read back to the same value).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "core/units.h"

static uint64_t dur_ok(const char *s)
{
    uint64_t ms = 12345;
    const char *why = NULL;

    cr_assert_eq(gpd_parse_duration_ms(s, strlen(s), &ms, &why), 0, "'%s' refused: %s", s, why ? why : "?");
    return ms;
}

static void dur_bad(const char *s, const char *why_expected)
{
    uint64_t ms = 777;
    const char *why = NULL;

    cr_assert_eq(gpd_parse_duration_ms(s, strlen(s), &ms, &why), -1, "'%s' accepted as %llu", s,
                 (unsigned long long)ms);
    cr_assert_not_null(why, "'%s': no reason", s);
    cr_assert_str_eq(why, why_expected, "'%s': why '%s', wanted '%s'", s, why, why_expected);
    cr_assert_eq(ms, 777, "output written on failure");
}

static uint64_t size_ok(const char *s)
{
    uint64_t b = 12345;
    const char *why = NULL;

    cr_assert_eq(gpd_parse_size(s, strlen(s), &b, &why), 0, "'%s' refused: %s", s, why ? why : "?");
    return b;
}

static void size_bad(const char *s, const char *why_expected)
{
    uint64_t b = 777;
    const char *why = NULL;

    cr_assert_eq(gpd_parse_size(s, strlen(s), &b, &why), -1, "'%s' accepted as %llu", s, (unsigned long long)b);
    cr_assert_not_null(why, "'%s': no reason", s);
    cr_assert_str_eq(why, why_expected, "'%s': why '%s', wanted '%s'", s, why, why_expected);
    cr_assert_eq(b, 777, "output written on failure");
}

/* ---- durations ---------------------------------------------------------- */

Test(units, duration_single_units)
{
    cr_assert_eq(dur_ok("250ms"), 250);
    cr_assert_eq(dur_ok("0ms"), 0);
    cr_assert_eq(dur_ok("2s"), 2000);
    cr_assert_eq(dur_ok("0s"), 0);
    cr_assert_eq(dur_ok("30m"), 1800000);
    cr_assert_eq(dur_ok("2h"), 7200000);
    cr_assert_eq(dur_ok("1d"), 86400000);
    cr_assert_eq(dur_ok("007s"), 7000);
}

Test(units, duration_bare_number_is_seconds)
{
    cr_assert_eq(dur_ok("30"), 30000);
    cr_assert_eq(dur_ok("0"), 0);
    cr_assert_eq(dur_ok("1.5"), 1500);
}

Test(units, duration_combined)
{
    cr_assert_eq(dur_ok("1h30m"), 5400000);
    cr_assert_eq(dur_ok("1m30s"), 90000);
    cr_assert_eq(dur_ok("1d2h3m4s5ms"), 86400000 + 7200000 + 180000 + 4000 + 5);
    cr_assert_eq(dur_ok("2s500ms"), 2500);
    cr_assert_eq(dur_ok("1h0m"), 3600000);
    cr_assert_eq(dur_ok("1d1s"), 86401000);
}

Test(units, duration_fractions_round_to_ms)
{
    cr_assert_eq(dur_ok("1.5s"), 1500);
    cr_assert_eq(dur_ok("0.5h"), 1800000);
    cr_assert_eq(dur_ok("0.25m"), 15000);
    cr_assert_eq(dur_ok("1.5ms"), 2);   /* half rounds up */
    cr_assert_eq(dur_ok("1.4ms"), 1);
    cr_assert_eq(dur_ok("0.0004s"), 0);
    cr_assert_eq(dur_ok("0.0005s"), 1);
    cr_assert_eq(dur_ok("1.1h30m"), 3960000 + 1800000);
    cr_assert_eq(dur_ok("0.000000001d"), 0);
    cr_assert_eq(dur_ok("0.123456789123456789s"), 123);
    cr_assert_eq(dur_ok("1.9999999999999s"), 2000);
}

Test(units, duration_max)
{
    /* UINT64_MAX ms = 18446744073709551615 */
    cr_assert_eq(dur_ok("18446744073709551615ms"), UINT64_MAX);
    cr_assert_eq(dur_ok("18446744073709551s615ms"), UINT64_MAX);
    cr_assert_eq(dur_ok("213503982334d"), 213503982334ull * 86400000ull);
}

Test(units, duration_errors)
{
    dur_bad("", "empty duration");
    dur_bad("-5s", "negative duration");
    dur_bad("-1", "negative duration");
    dur_bad("1h-5m", "negative duration");
    dur_bad("+5s", "missing number");
    dur_bad("5x", "unknown duration unit");
    dur_bad("5sec", "unknown duration unit");
    dur_bad("5us", "unknown duration unit");
    dur_bad("5S", "unknown duration unit");
    dur_bad("5H", "unknown duration unit");
    dur_bad("s", "missing number");
    dur_bad("ms", "missing number");
    dur_bad(".5s", "missing number");
    dur_bad("1.s", "missing digits after '.'");
    dur_bad("1.", "missing digits after '.'");
    dur_bad("5s!", "unexpected character");
    dur_bad("5s ", "unexpected character");
    dur_bad(" 5s", "unexpected character");
    dur_bad("5 s", "unexpected character");
    dur_bad("1h 30m", "unexpected character");
    dur_bad("1h30", "missing unit after number");
    dur_bad("30m1h", "duration units must go from largest to smallest, each once");
    dur_bad("1s1s", "duration units must go from largest to smallest, each once");
    dur_bad("1ms1s", "duration units must go from largest to smallest, each once");
    dur_bad("18446744073709551616ms", "value too large");
    dur_bad("18446744073709552s", "value too large");
    dur_bad("213503982335d", "value too large");
    dur_bad("18446744073709551s616ms", "value too large");
    dur_bad("99999999999999999999999", "value too large");
    dur_bad("1e3s", "unknown duration unit");
}

Test(units, duration_length_is_respected)
{
    uint64_t ms = 0;
    const char *why = NULL;

    /* only "2s" of "2s30" is looked at */
    cr_assert_eq(gpd_parse_duration_ms("2s30", 2, &ms, &why), 0);
    cr_assert_eq(ms, 2000);
    cr_assert_eq(gpd_parse_duration_ms("2s", 0, &ms, &why), -1);
    cr_assert_str_eq(why, "empty duration");
    cr_assert_eq(gpd_parse_duration_ms(NULL, 0, &ms, &why), -1);
    cr_assert_eq(gpd_parse_duration_ms("x", 1, &ms, NULL), -1, "why may be NULL");
}

/* ---- sizes -------------------------------------------------------------- */

Test(units, size_plain_and_suffixes)
{
    cr_assert_eq(size_ok("0"), 0);
    cr_assert_eq(size_ok("512"), 512);
    cr_assert_eq(size_ok("512B"), 512);
    cr_assert_eq(size_ok("512b"), 512);
    cr_assert_eq(size_ok("64K"), 65536);
    cr_assert_eq(size_ok("64KB"), 65536);
    cr_assert_eq(size_ok("64KiB"), 65536);
    cr_assert_eq(size_ok("64k"), 65536);
    cr_assert_eq(size_ok("64kb"), 65536);
    cr_assert_eq(size_ok("64kB"), 65536);
    cr_assert_eq(size_ok("64kib"), 65536);
    cr_assert_eq(size_ok("16MB"), 16u << 20);
    cr_assert_eq(size_ok("16M"), 16u << 20);
    cr_assert_eq(size_ok("16m"), 16u << 20);
    cr_assert_eq(size_ok("1MiB"), 1u << 20);
    cr_assert_eq(size_ok("1GB"), 1u << 30);
    cr_assert_eq(size_ok("1G"), 1u << 30);
    cr_assert_eq(size_ok("1g"), 1u << 30);
    cr_assert_eq(size_ok("1GiB"), 1u << 30);
    cr_assert_eq(size_ok("2TB"), (uint64_t)2 << 40);
    cr_assert_eq(size_ok("2TiB"), (uint64_t)2 << 40);
}

Test(units, size_single_space)
{
    cr_assert_eq(size_ok("16 MB"), 16u << 20);
    cr_assert_eq(size_ok("512 B"), 512);
    cr_assert_eq(size_ok("1 KiB"), 1024);
}

Test(units, size_fractions)
{
    cr_assert_eq(size_ok("1.5K"), 1536);
    cr_assert_eq(size_ok("0.5 GiB"), 1u << 29);
    cr_assert_eq(size_ok("1.0001K"), 1024);  /* 1024.1024 rounds down */
    cr_assert_eq(size_ok("0.0005K"), 1);     /* 0.512 rounds up */
}

Test(units, size_max)
{
    cr_assert_eq(size_ok("18446744073709551615"), UINT64_MAX);
    cr_assert_eq(size_ok("16777215TB"), (uint64_t)16777215 << 40);
}

Test(units, size_errors)
{
    size_bad("", "empty size");
    size_bad("-1", "negative size");
    size_bad("-16MB", "negative size");
    size_bad("+1", "missing number");
    size_bad("MB", "missing number");
    size_bad(".5M", "missing number");
    size_bad(" 16MB", "unexpected character");
    size_bad("16XB", "unknown size unit");
    size_bad("16Kb2", "unexpected character");
    size_bad("16 ", "missing unit after the space");
    size_bad("16  MB", "unexpected character");
    size_bad("16MB ", "unexpected character");
    size_bad("16 MB x", "unexpected character");
    size_bad("16\tMB", "unexpected character");
    size_bad("16MBB", "unknown size unit");
    size_bad("16Ki", "unknown size unit");
    size_bad("16mibs", "unknown size unit");
    size_bad("1.5", "fractional byte count");
    size_bad("1.5B", "fractional byte count");
    size_bad("1.M", "missing digits after '.'");
    size_bad("18446744073709551616", "value too large");
    size_bad("16777216TB", "value too large");
    size_bad("17179869184G", "value too large");
    size_bad("99999999999999999999999999K", "value too large");
}

Test(units, size_length_is_respected)
{
    uint64_t b = 0;
    const char *why = NULL;

    cr_assert_eq(gpd_parse_size("16MB", 3, &b, &why), 0);
    cr_assert_eq(b, 16u << 20);
    cr_assert_eq(gpd_parse_size(NULL, 0, &b, &why), -1);
    cr_assert_str_eq(why, "empty size");
    cr_assert_eq(gpd_parse_size("x", 1, &b, NULL), -1, "why may be NULL");
}

/* ---- formatting --------------------------------------------------------- */

static void fmt_is(uint64_t ms, const char *want)
{
    char buf[64];
    int n = gpd_format_duration(buf, sizeof buf, ms);

    cr_assert_str_eq(buf, want);
    cr_assert_eq(n, (int)strlen(want));
}

Test(units, format_duration)
{
    fmt_is(0, "0s");
    fmt_is(250, "250ms");
    fmt_is(2000, "2s");
    fmt_is(90000, "1m30s");
    fmt_is(5400000, "1h30m");
    fmt_is(1800000, "30m");
    fmt_is(86400000, "1d");
    fmt_is(2500, "2s500ms");
    fmt_is(86400000 + 1, "1d1ms");
    fmt_is(90061001, "1d1h1m1s1ms");
    fmt_is(UINT64_MAX, "213503982334d14h25m51s615ms");
}

Test(units, format_duration_truncates_like_snprintf)
{
    char buf[4];

    cr_assert_eq(gpd_format_duration(buf, sizeof buf, 5400000), 5);
    cr_assert_str_eq(buf, "1h3");
    cr_assert_eq(gpd_format_duration(NULL, 0, 250), 5);
}

Test(units, format_then_parse_round_trips)
{
    uint64_t samples[] = { 0, 1, 999, 1000, 1001, 59999, 60000, 3599999, 3600000, 86399999, 86400000,
                           123456789, 987654321012ull, UINT64_MAX, UINT64_MAX - 1, (uint64_t)1 << 63 };
    uint64_t x = 88172645463325252ull;
    size_t i;

    for (i = 0; i < sizeof samples / sizeof samples[0] + 2000; i++) {
        char buf[64];
        uint64_t v, back = 0;
        const char *why = NULL;

        if (i < sizeof samples / sizeof samples[0]) {
            v = samples[i];
        } else {
            /* xorshift, spread over all magnitudes */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v = x >> (x % 64);
        }
        gpd_format_duration(buf, sizeof buf, v);
        cr_assert_eq(gpd_parse_duration_ms(buf, strlen(buf), &back, &why), 0, "'%s': %s", buf, why);
        cr_assert_eq(back, v, "'%s' read back as %llu, not %llu", buf, (unsigned long long)back,
                     (unsigned long long)v);
    }
}
