#include <criterion/criterion.h>
#include <string.h>

#include "core/json_scan.h"
#include "gateway/usage.h"

static int scan(const char *s, gpd_json_field *f, size_t n, const char **why)
{
    size_t off;
    return gpd_json_scan_object(s, strlen(s), f, n, why, &off);
}

Test(json_scan, finds_top_level_members)
{
    gpd_json_field f[2] = { { .key = "model" }, { .key = "stream" } };
    const char *body = "{\"messages\":[{\"model\":\"inner\"}],\"model\":\"gpt-4\",\"stream\":true}";
    cr_assert_eq(scan(body, f, 2, NULL), 0);
    cr_assert(f[0].found);
    cr_assert_eq(f[0].value.len, 7);
    cr_assert_eq(strncmp(f[0].value.base, "\"gpt-4\"", 7), 0);
    cr_assert(f[1].found);
    cr_assert(gpd_json_is_true(f[1].value));
}

Test(json_scan, nested_member_names_do_not_match)
{
    gpd_json_field f = { .key = "model" };
    cr_assert_eq(scan("{\"a\":{\"model\":\"x\"}}", &f, 1, NULL), 0);
    cr_assert_not(f.found);
}

Test(json_scan, container_value_span)
{
    gpd_json_field f = { .key = "messages" };
    const char *body = "{ \"messages\" : [1, {\"a\": [2]}] , \"x\":1}";
    cr_assert_eq(scan(body, &f, 1, NULL), 0);
    cr_assert(f.found);
    cr_assert_eq(strncmp(f.value.base, "[1, {\"a\": [2]}]", f.value.len), 0);
    cr_assert_eq(f.value.len, strlen("[1, {\"a\": [2]}]"));
}

Test(json_scan, refuses_malformed)
{
    const char *bad[] = { "", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":01}", "{\"a\":tru}",
                          "{\"a\":\"\\x\"}", "{\"a\":\"\x01\"}", "{} x", "{\"a\":1 \"b\":2}", "{\"a\":[1,]}",
                          "{\"a\":\"\xc3\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":-}", "{\"a\":1.}", "{'a':1}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        gpd_json_field f = { .key = "a" };
        cr_assert_eq(scan(bad[i], &f, 1, &why), -1, "accepted %s", bad[i]);
        cr_assert_not_null(why);
    }
}

Test(json_scan, accepts_valid)
{
    const char *good[] = { "{}", " {\"a\" : [ ] } ", "{\"a\":-0.5e+10,\"b\":null,\"c\":false}",
                           "{\"a\":\"\\u00e9\\n\\\"\"}", "{\"a\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert_eq(scan(good[i], NULL, 0, NULL), 0, "refused %s", good[i]);
}

Test(json_scan, depth_is_capped)
{
    char buf[2 * GPD_JSON_MAX_DEPTH + 8];
    size_t o = 0;
    buf[o++] = '{';
    buf[o++] = '"';
    buf[o++] = 'a';
    buf[o++] = '"';
    buf[o++] = ':';
    for (int i = 0; i < GPD_JSON_MAX_DEPTH; i++)
        buf[o++] = '[';
    buf[o] = '\0';
    const char *why = NULL;
    cr_assert_eq(scan(buf, NULL, 0, &why), -1);
    cr_assert_str_eq(why, "JSON nested too deeply");
}

Test(json_scan, string_decode)
{
    char out[32];
    cr_assert_eq(gpd_json_string_decode(GPD_STR_LIT("\"a\\u00e9\\/b\""), out, sizeof(out)), 5);
    cr_assert_str_eq(out, "a\xc3\xa9/b");
    cr_assert_eq(gpd_json_string_decode(GPD_STR_LIT("12"), out, sizeof(out)), -1);
}

Test(usage, whole_body)
{
    gpd_usage u;
    gpd_usage_init(&u);
    const char *b = "{\"usage\": {\"prompt_tokens\": 12, \"prompt_tokens_details\": {\"cached_tokens\": 3},"
                    " \"completion_tokens\":34, \"total_tokens\": 46}}";
    gpd_usage_feed(&u, b, strlen(b));
    cr_assert(u.seen);
    cr_assert_eq(u.prompt_tokens, 12);
    cr_assert_eq(u.completion_tokens, 34);
}

Test(usage, split_at_every_byte)
{
    const char *b = "data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1234}}\n\n";
    size_t n = strlen(b);
    for (size_t cut = 0; cut <= n; cut++) {
        gpd_usage u;
        gpd_usage_init(&u);
        gpd_usage_feed(&u, b, cut);
        gpd_usage_feed(&u, b + cut, n - cut);
        cr_assert_eq(u.prompt_tokens, 7, "cut %zu", cut);
        cr_assert_eq(u.completion_tokens, 1234, "cut %zu", cut);
    }
}

Test(usage, last_value_wins_and_null_ignored)
{
    gpd_usage u;
    gpd_usage_init(&u);
    const char *a = "data: {\"usage\":null}\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"
                    "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}\n\n";
    gpd_usage_feed(&u, a, strlen(a));
    cr_assert_eq(u.prompt_tokens, 5);
    cr_assert_eq(u.completion_tokens, 9);
}
