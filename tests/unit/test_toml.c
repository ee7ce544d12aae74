/*
 * Unit tests for src/core/toml.c: every feature the configuration relies on,
 * every error path (message names file, line and key), and the tree API.
 * Run under ASan: every error path must also be leak-free.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/toml.h"

static char g_err[512];

static gpd_toml_value *parse(const char *src)
{
    return gpd_toml_parse(src, strlen(src), "t.toml", g_err, sizeof g_err);
}

static gpd_toml_value *parse_ok(const char *src)
{
    gpd_toml_value *root = parse(src);
    cr_assert_not_null(root, "unexpected error: %s\n--- input:\n%s", g_err, src);
    cr_assert_eq(root->type, GPD_TOML_TABLE);
    cr_assert_null(root->key);
    return root;
}

/* Parse must fail, and the message must contain every needle (NULL-terminated list). */
static void expect_err(const char *src, ...)
{
    gpd_toml_value *root = parse(src);
    va_list ap;
    const char *needle;

    if (root)
        gpd_toml_free(root);
    cr_assert_null(root, "expected an error for:\n%s", src);
    cr_assert(strncmp(g_err, "t.toml:", 7) == 0, "error lacks the file name: %s", g_err);
    va_start(ap, src);
    while ((needle = va_arg(ap, const char *)) != NULL)
        cr_assert(strstr(g_err, needle) != NULL, "error '%s' lacks '%s'\n--- input:\n%s", g_err, needle, src);
    va_end(ap);
}

/* Walk a dotted path of table keys (no quoting; test helper only). */
static gpd_toml_value *path(gpd_toml_value *t, const char *dotted)
{
    char buf[256], *save = NULL, *part;

    snprintf(buf, sizeof buf, "%s", dotted);
    for (part = strtok_r(buf, ".", &save); part && t; part = strtok_r(NULL, ".", &save))
        t = gpd_toml_get(t, part);
    return t;
}

static const char *str_at(gpd_toml_value *t, const char *dotted)
{
    gpd_toml_value *v = path(t, dotted);
    cr_assert_not_null(v, "missing %s", dotted);
    cr_assert_eq(v->type, GPD_TOML_STRING, "%s is a %s", dotted, gpd_toml_type_name(v->type));
    cr_assert_eq(strlen(v->u.string.ptr), v->u.string.len);
    return v->u.string.ptr;
}

static int64_t int_at(gpd_toml_value *t, const char *dotted)
{
    gpd_toml_value *v = path(t, dotted);
    cr_assert_not_null(v, "missing %s", dotted);
    cr_assert_eq(v->type, GPD_TOML_INTEGER, "%s is a %s", dotted, gpd_toml_type_name(v->type));
    return v->u.integer;
}

static double float_at(gpd_toml_value *t, const char *dotted)
{
    gpd_toml_value *v = path(t, dotted);
    cr_assert_not_null(v, "missing %s", dotted);
    cr_assert_eq(v->type, GPD_TOML_FLOAT, "%s is a %s", dotted, gpd_toml_type_name(v->type));
    return v->u.floating;
}

/* ---- the realistic config ---------------------------------------------- */

static const char *const k_config =
    "# gpuproxyd\n"
    "[server]\n"
    "listen = \"127.0.0.1:8080\"\n"
    "workers = 2\n"
    "max_body = \"16MB\"\n"
    "[providers.openrouter]\n"
    "base_url = \"https://openrouter.ai/api/v1\"\n"
    "[[models]]\n"
    "name = \"claude-3-opus\"\n"
    "provider = \"openrouter\"\n"
    "upstream_model = \"anthropic/claude-3-opus\"\n"
    "port = 2001\n"
    "[[models]]\n"
    "name = \"my-llama\"\n"
    "upstream_urls = [\"http://10.0.0.5:8000/v1\", \"http://10.0.0.6:8000/v1\"]\n"
    "labels = { team = \"ml\", tier = 2 }\n"
    "prompt_usd_per_mtok = 0.15\n";

Test(toml, realistic_config)
{
    gpd_toml_value *root = parse_ok(k_config), *server, *models, *m0, *m1, *urls, *labels, *prov;

    cr_assert_eq(gpd_toml_count(root), 3);
    cr_assert_str_eq(gpd_toml_at(root, 0)->key, "server");
    cr_assert_str_eq(gpd_toml_at(root, 1)->key, "providers");
    cr_assert_str_eq(gpd_toml_at(root, 2)->key, "models");

    server = gpd_toml_get(root, "server");
    cr_assert_eq(server->type, GPD_TOML_TABLE);
    cr_assert_eq(server->line, 2);
    cr_assert(server->defined);
    cr_assert_eq(gpd_toml_count(server), 3);
    cr_assert_str_eq(str_at(server, "listen"), "127.0.0.1:8080");
    cr_assert_eq(gpd_toml_get(server, "listen")->line, 3);
    cr_assert_eq(int_at(server, "workers"), 2);
    cr_assert_eq(gpd_toml_get(server, "workers")->line, 4);
    cr_assert_str_eq(str_at(server, "max_body"), "16MB");
    cr_assert_str_eq(gpd_toml_at(server, 2)->key, "max_body");

    prov = gpd_toml_get(root, "providers");
    cr_assert_eq(prov->type, GPD_TOML_TABLE);
    cr_assert_not(prov->defined, "implicit parent table must not count as defined");
    cr_assert(gpd_toml_get(prov, "openrouter")->defined);
    cr_assert_eq(gpd_toml_get(prov, "openrouter")->line, 6);
    cr_assert_str_eq(str_at(root, "providers.openrouter.base_url"), "https://openrouter.ai/api/v1");

    models = gpd_toml_get(root, "models");
    cr_assert_eq(models->type, GPD_TOML_ARRAY);
    cr_assert(models->is_array_of_tables);
    cr_assert_eq(models->line, 8);
    cr_assert_eq(gpd_toml_count(models), 2);
    m0 = gpd_toml_at(models, 0);
    m1 = gpd_toml_at(models, 1);
    cr_assert_null(gpd_toml_at(models, 2));
    cr_assert_eq(m0->type, GPD_TOML_TABLE);
    cr_assert_null(m0->key);
    cr_assert_eq(m0->line, 8);
    cr_assert_eq(m1->line, 13);
    cr_assert_str_eq(str_at(m0, "name"), "claude-3-opus");
    cr_assert_str_eq(str_at(m0, "provider"), "openrouter");
    cr_assert_str_eq(str_at(m0, "upstream_model"), "anthropic/claude-3-opus");
    cr_assert_eq(int_at(m0, "port"), 2001);
    cr_assert_null(gpd_toml_get(m0, "labels"));

    cr_assert_str_eq(str_at(m1, "name"), "my-llama");
    urls = gpd_toml_get(m1, "upstream_urls");
    cr_assert_eq(urls->type, GPD_TOML_ARRAY);
    cr_assert_not(urls->is_array_of_tables);
    cr_assert_eq(urls->line, 15);
    cr_assert_eq(gpd_toml_count(urls), 2);
    cr_assert_null(gpd_toml_at(urls, 0)->key);
    cr_assert_str_eq(gpd_toml_at(urls, 0)->u.string.ptr, "http://10.0.0.5:8000/v1");
    cr_assert_str_eq(gpd_toml_at(urls, 1)->u.string.ptr, "http://10.0.0.6:8000/v1");
    labels = gpd_toml_get(m1, "labels");
    cr_assert_eq(labels->type, GPD_TOML_TABLE);
    cr_assert_eq(labels->line, 16);
    cr_assert_str_eq(str_at(labels, "team"), "ml");
    cr_assert_eq(int_at(labels, "tier"), 2);
    cr_assert_float_eq(float_at(m1, "prompt_usd_per_mtok"), 0.15, 1e-12);
    gpd_toml_free(root);
}

/* ---- API --------------------------------------------------------------- */

Test(toml, api_edges)
{
    gpd_toml_value *root = parse_ok("a = 1\nb = [1]\n");
    gpd_toml_value *a = gpd_toml_get(root, "a");

    cr_assert_null(gpd_toml_get(root, "zz"));
    cr_assert_null(gpd_toml_get(a, "x"), "get on a non-table");
    cr_assert_null(gpd_toml_get(NULL, "x"));
    cr_assert_null(gpd_toml_get(gpd_toml_get(root, "b"), "x"), "get on an array");
    cr_assert_eq(gpd_toml_count(a), 0);
    cr_assert_eq(gpd_toml_count(NULL), 0);
    cr_assert_null(gpd_toml_at(a, 0));
    cr_assert_null(gpd_toml_at(NULL, 0));
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_STRING), "string");
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_INTEGER), "integer");
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_FLOAT), "float");
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_BOOL), "boolean");
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_ARRAY), "array");
    cr_assert_str_eq(gpd_toml_type_name(GPD_TOML_TABLE), "table");
    gpd_toml_free(root);
    gpd_toml_free(NULL);
}

Test(toml, empty_and_comment_only_documents)
{
    gpd_toml_value *root;

    root = gpd_toml_parse("", 0, "t.toml", g_err, sizeof g_err);
    cr_assert_not_null(root);
    cr_assert_eq(gpd_toml_count(root), 0);
    gpd_toml_free(root);
    root = gpd_toml_parse(NULL, 0, NULL, g_err, sizeof g_err);
    cr_assert_not_null(root);
    gpd_toml_free(root);
    root = parse_ok("# only a comment\n\n   \t\n# another");
    cr_assert_eq(gpd_toml_count(root), 0);
    gpd_toml_free(root);
}

Test(toml, not_nul_terminated_input)
{
    char buf[8];
    gpd_toml_value *root;

    memcpy(buf, "a = 12345", 8); /* "a = 1234" without a NUL */
    root = gpd_toml_parse(buf, 8, "t.toml", g_err, sizeof g_err);
    cr_assert_not_null(root, "%s", g_err);
    cr_assert_eq(int_at(root, "a"), 1234);
    gpd_toml_free(root);
}

Test(toml, crlf_and_bom)
{
    gpd_toml_value *root = parse_ok("\xef\xbb\xbf" "a = 1\r\n[t]\r\nb = \"x\" # c\r\ns = \"\"\"\r\nl1\r\nl2\"\"\"\r\n");

    cr_assert_eq(int_at(root, "a"), 1);
    cr_assert_str_eq(str_at(root, "t.b"), "x");
    cr_assert_eq(path(root, "t.b")->line, 3);
    cr_assert_str_eq(str_at(root, "t.s"), "l1\nl2");
    gpd_toml_free(root);
}

Test(toml, null_err_buffer_is_fine)
{
    cr_assert_null(gpd_toml_parse("a = ", 4, "t.toml", NULL, 0));
    cr_assert_null(gpd_toml_parse("a = ", 4, "t.toml", g_err, 0));
}

Test(toml, short_err_buffer_truncates)
{
    char small[12];
    cr_assert_null(gpd_toml_parse("key = 12x", 9, "file.toml", small, sizeof small));
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert(strncmp(small, "file.toml:1", 11) == 0);
}

/* ---- keys -------------------------------------------------------------- */

Test(toml, keys_bare_quoted_dotted)
{
    gpd_toml_value *root = parse_ok(
        "bare_key-1 = 1\n"
        "1234 = 2\n"
        "\"quoted key\" = 3\n"
        "'literal \\n key' = 4\n"
        "\"\" = 5\n"
        "a.b.c = 6\n"
        "a . b . d = 7\n"
        "x.\"y.z\".'w' = 8\n"
        "3.14 = 9\n"
        "\"\\u00e9t\\u00e9\" = 10\n");
    gpd_toml_value *a, *b;

    cr_assert_eq(int_at(root, "bare_key-1"), 1);
    cr_assert_eq(int_at(root, "1234"), 2);
    cr_assert_eq(gpd_toml_get(root, "quoted key")->u.integer, 3);
    cr_assert_eq(gpd_toml_get(root, "literal \\n key")->u.integer, 4);
    cr_assert_eq(gpd_toml_get(root, "")->u.integer, 5);
    a = gpd_toml_get(root, "a");
    cr_assert_eq(a->type, GPD_TOML_TABLE);
    cr_assert(a->defined);
    cr_assert_eq(a->line, 6);
    b = gpd_toml_get(a, "b");
    cr_assert_str_eq(b->key, "b");
    cr_assert_eq(gpd_toml_count(b), 2);
    cr_assert_eq(int_at(root, "a.b.c"), 6);
    cr_assert_eq(int_at(root, "a.b.d"), 7);
    cr_assert_eq(gpd_toml_get(gpd_toml_get(gpd_toml_get(root, "x"), "y.z"), "w")->u.integer, 8);
    cr_assert_eq(int_at(root, "3.14"), 9);
    cr_assert_eq(gpd_toml_get(root, "\xc3\xa9t\xc3\xa9")->u.integer, 10);
    gpd_toml_free(root);
}

Test(toml, insertion_order_kept)
{
    gpd_toml_value *root = parse_ok("z = 1\na = 2\nm = 3\nb.x = 4\nc = 5\n");
    const char *want[] = { "z", "a", "m", "b", "c" };
    size_t i;

    cr_assert_eq(gpd_toml_count(root), 5);
    for (i = 0; i < 5; i++)
        cr_assert_str_eq(gpd_toml_at(root, i)->key, want[i]);
    gpd_toml_free(root);
}

Test(toml, key_errors)
{
    expect_err("name \"x\"\n", "t.toml:1: expected '=' after key 'name'", NULL);
    expect_err("a = 1\nb.c\n", "t.toml:2:", "expected '=' after key 'b.c'", NULL);
    expect_err("= 1\n", "t.toml:1:", "expected a key", NULL);
    expect_err("a. = 1\n", "t.toml:1:", "key 'a':", "expected a key", NULL);
    expect_err("a b = 1\n", "t.toml:1:", "expected '=' after key 'a'", NULL);
    expect_err("\"\"\"k\"\"\" = 1\n", "t.toml:1:", "multi-line string cannot be a key", NULL);
    expect_err("\"a\\u0000b\" = 1\n", "t.toml:1:", "NUL", NULL);
    expect_err("k@ = 1\n", "t.toml:1:", "expected '=' after key 'k'", NULL);
    expect_err("\"unterminated = 1\n", "t.toml:1:", "unterminated", NULL);
}

Test(toml, duplicate_keys)
{
    expect_err("a = 1\nport = 2\nport = 3\n", "t.toml:3: key 'port': duplicate key", NULL);
    expect_err("[server]\nport = 1\n\nport = 2\n", "t.toml:4: key 'port': duplicate key", NULL);
    expect_err("a = 1\n\"a\" = 2\n", "t.toml:2:", "key 'a'", "duplicate key", NULL);
    expect_err("a = 1\n'a' = 2\n", "t.toml:2:", "duplicate key", NULL);
    expect_err("a.b = 1\na.b = 2\n", "t.toml:2:", "key 'a.b'", "duplicate key", NULL);
    /* a value of another type at a key already used as a table */
    expect_err("a.b = 1\na = 2\n", "t.toml:2:", "key 'a'", "duplicate key", NULL);
    expect_err("[t.x]\n[t]\nx = 1\n", "t.toml:3:", "key 'x'", "duplicate key", NULL);
    expect_err("a = 1\na.b = 2\n", "t.toml:2:", "key 'a.b'", "'a' is already an integer", NULL);
    expect_err("a = [1]\na.b = 2\n", "t.toml:2:", "'a' is already an array", NULL);
    expect_err("x = { a = 1, a = 2 }\n", "t.toml:1:", "key 'x.a'", "duplicate key", NULL);
}

/* ---- tables ------------------------------------------------------------ */

Test(toml, tables_and_implicit_parents)
{
    gpd_toml_value *root = parse_ok(
        "top = 1\n"
        "[a.b.c]\n"
        "x = 1\n"
        "[a]\n"       /* defining an implicit super-table afterwards is fine */
        "y = 2\n"
        "[a.b.d]\n"
        "z = 3\n"
        "[ e . \"f g\" ]  # spaces and quotes\n"
        "w = 4\n"
        "[empty]\n");
    gpd_toml_value *a = gpd_toml_get(root, "a"), *b = gpd_toml_get(a, "b");

    cr_assert_eq(int_at(root, "top"), 1);
    cr_assert(a->defined);
    cr_assert_eq(a->line, 4, "line follows the explicit header");
    cr_assert_not(b->defined);
    cr_assert_eq(b->line, 2);
    cr_assert_eq(int_at(root, "a.b.c.x"), 1);
    cr_assert_eq(int_at(root, "a.y"), 2);
    cr_assert_eq(int_at(root, "a.b.d.z"), 3);
    cr_assert_eq(gpd_toml_get(gpd_toml_get(gpd_toml_get(root, "e"), "f g"), "w")->u.integer, 4);
    cr_assert_eq(gpd_toml_get(root, "empty")->type, GPD_TOML_TABLE);
    cr_assert_eq(gpd_toml_count(gpd_toml_get(root, "empty")), 0);
    gpd_toml_free(root);
}

Test(toml, dotted_keys_and_subtables)
{
    gpd_toml_value *root = parse_ok(
        "[fruit]\n"
        "apple.color = \"red\"\n"
        "apple.taste.sweet = true\n"
        "[fruit.apple.texture]\n"   /* sub-table of a dotted-key table is allowed */
        "smooth = true\n"
        "[x.y.z]\n"
        "[x]\n"
        "y.w = 1\n");               /* dotted key through an implicit table */

    cr_assert_str_eq(str_at(root, "fruit.apple.color"), "red");
    cr_assert(path(root, "fruit.apple.taste.sweet")->u.boolean);
    cr_assert(path(root, "fruit.apple.texture.smooth")->u.boolean);
    cr_assert_eq(int_at(root, "x.y.w"), 1);
    gpd_toml_free(root);
}

Test(toml, table_errors)
{
    expect_err("[server]\na = 1\n[other]\n\n\n\n[server]\n", "t.toml:7: table 'server' defined twice", NULL);
    expect_err("[a.b]\n[a.b]\n", "t.toml:2:", "table 'a.b' defined twice", NULL);
    expect_err("[a.b]\n[a]\n[a]\n", "t.toml:3:", "table 'a' defined twice", NULL);
    expect_err("[fruit]\napple.color = 1\n[fruit.apple]\n", "t.toml:3:", "table 'fruit.apple' defined twice", NULL);
    expect_err("[fruit]\napple.taste.sweet = 1\n[fruit.apple.taste]\n", "t.toml:3:", "defined twice", NULL);
    expect_err("a.b = 1\n[a]\n", "t.toml:2:", "table 'a' defined twice", NULL);
    expect_err("a = 1\n[a]\n", "t.toml:2:", "table 'a'", "already an integer", NULL);
    expect_err("a = 1\n[a.b]\n", "t.toml:2:", "table 'a.b'", "'a' is already an integer", NULL);
    expect_err("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", "t.toml:4:", "key 'b.c.t'", "table 'b.c' is already defined", NULL);
    expect_err("[a]\nb = 1\n[a.b]\n", "t.toml:3:", "table 'a.b'", NULL);
    expect_err("[]\n", "t.toml:1:", "expected a key", NULL);
    expect_err("[a\n", "t.toml:1:", "table 'a'", "expected ']'", NULL);
    expect_err("[a] b = 1\n", "t.toml:1:", "table 'a'", "expected end of line", NULL);
    expect_err("[[a]\n", "t.toml:1:", "expected ']]'", NULL);
    expect_err("[[a] ]\n", "t.toml:1:", "expected ']]'", NULL);
    expect_err("[a.]\n", "t.toml:1:", "expected a key", NULL);
}

Test(toml, arrays_of_tables)
{
    gpd_toml_value *root = parse_ok(
        "[[fruits]]\n"
        "name = \"apple\"\n"
        "[fruits.physical]\n"
        "color = \"red\"\n"
        "[[fruits.varieties]]\n"
        "name = \"red delicious\"\n"
        "[[fruits.varieties]]\n"
        "name = \"granny smith\"\n"
        "[[fruits]]\n"
        "name = \"banana\"\n"
        "[[fruits.varieties]]\n"
        "name = \"plantain\"\n"
        "[[empty]]\n"
        "[[empty]]\n");
    gpd_toml_value *fruits = gpd_toml_get(root, "fruits"), *f0, *f1, *v;

    cr_assert(fruits->is_array_of_tables);
    cr_assert_eq(gpd_toml_count(fruits), 2);
    f0 = gpd_toml_at(fruits, 0);
    f1 = gpd_toml_at(fruits, 1);
    cr_assert_str_eq(str_at(f0, "name"), "apple");
    cr_assert_str_eq(str_at(f0, "physical.color"), "red");
    v = gpd_toml_get(f0, "varieties");
    cr_assert(v->is_array_of_tables);
    cr_assert_eq(gpd_toml_count(v), 2);
    cr_assert_str_eq(str_at(gpd_toml_at(v, 1), "name"), "granny smith");
    cr_assert_eq(gpd_toml_at(v, 1)->line, 7);
    cr_assert_str_eq(str_at(f1, "name"), "banana");
    cr_assert_eq(f1->line, 9);
    cr_assert_eq(gpd_toml_count(gpd_toml_get(f1, "varieties")), 1);
    cr_assert_eq(gpd_toml_count(gpd_toml_get(root, "empty")), 2);
    gpd_toml_free(root);
}

Test(toml, array_of_tables_errors)
{
    expect_err("[[a]]\n[a]\n", "t.toml:2:", "table 'a'", "already an array of tables", NULL);
    expect_err("[a]\n[[a]]\n", "t.toml:2:", "array of tables 'a'", "already a table", NULL);
    expect_err("a = [1, 2]\n[[a]]\n", "t.toml:2:", "array of tables 'a'", "already an array", NULL);
    expect_err("a = [{b = 1}]\n[a.c]\n", "t.toml:2:", "'a' is already an array", NULL);
    expect_err("[[a]]\nb = 1\n[a.b]\n", "t.toml:3:", "table 'a.b'", NULL);
    expect_err("[[a]]\n[a.b]\n[a.b]\n", "t.toml:3:", "table 'a.b' defined twice", NULL);
    expect_err("a = 1\n[[a.b]]\n", "t.toml:2:", "'a' is already an integer", NULL);
}

/* ---- strings ----------------------------------------------------------- */

Test(toml, basic_string_escapes)
{
    gpd_toml_value *root = parse_ok(
        "s = \"a\\bb\\tc\\nd\\fe\\rf\\\"g\\\\h\"\n"
        "u = \"\\u00e9\\u20AC\\U0001F600\\u0041\"\n"
        "z = \"nul\\u0000here\"\n"
        "e = \"\"\n"
        "t = \"tab\there\"\n"
        "x = \"caf\xc3\xa9\"\n");
    gpd_toml_value *z;

    cr_assert_str_eq(str_at(root, "s"), "a\bb\tc\nd\fe\rf\"g\\h");
    cr_assert_str_eq(str_at(root, "u"), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A");
    z = gpd_toml_get(root, "z");
    cr_assert_eq(z->u.string.len, 8);
    cr_assert(memcmp(z->u.string.ptr, "nul\0here", 9) == 0);
    cr_assert_str_eq(str_at(root, "e"), "");
    cr_assert_str_eq(str_at(root, "t"), "tab\there");
    cr_assert_str_eq(str_at(root, "x"), "caf\xc3\xa9");
    gpd_toml_free(root);
}

Test(toml, literal_strings)
{
    gpd_toml_value *root = parse_ok(
        "win = 'C:\\Users\\nodejs\\templates'\n"
        "q = 'Tom \"Dubs\" Preston'\n"
        "e = ''\n");

    cr_assert_str_eq(str_at(root, "win"), "C:\\Users\\nodejs\\templates");
    cr_assert_str_eq(str_at(root, "q"), "Tom \"Dubs\" Preston");
    cr_assert_str_eq(str_at(root, "e"), "");
    gpd_toml_free(root);
}

Test(toml, multiline_basic_strings)
{
    gpd_toml_value *root = parse_ok(
        "k = 1\n"
        "a = \"\"\"\nRoses are red\nViolets are blue\"\"\"\n"
        "b = \"\"\"\\\n   The quick brown \\\n\n\n  fox.\\\n   \"\"\"\n"
        "c = \"\"\"trailing \\   \n  space\"\"\"\n"
        "d = \"\"\"Here are two quotation marks: \"\". Simple.\"\"\"\n"
        "e = \"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"\n"
        "f = \"\"\"ends with two\"\"\"\"\"\n"
        "g = \"\"\"esc \\\"\"\" \\u00e9\"\"\"\n"
        "h = \"\"\"\"\"\"\n"
        "after = 2\n");

    cr_assert_str_eq(str_at(root, "a"), "Roses are red\nViolets are blue");
    cr_assert_eq(gpd_toml_get(root, "a")->line, 2);
    cr_assert_str_eq(str_at(root, "b"), "The quick brown fox.");
    cr_assert_str_eq(str_at(root, "c"), "trailing space");
    cr_assert_str_eq(str_at(root, "d"), "Here are two quotation marks: \"\". Simple.");
    cr_assert_str_eq(str_at(root, "e"), "\"This,\" she said, \"is just a pointless statement.\"");
    cr_assert_str_eq(str_at(root, "f"), "ends with two\"\"");
    cr_assert_str_eq(str_at(root, "g"), "esc \"\"\" \xc3\xa9");
    cr_assert_str_eq(str_at(root, "h"), "");
    cr_assert_eq(gpd_toml_get(root, "after")->line, 18, "line counting through multi-line strings");
    gpd_toml_free(root);
}

Test(toml, multiline_literal_strings)
{
    gpd_toml_value *root = parse_ok(
        "re = '''I [dw]on't need \\d{2} apples'''\n"
        "lines = '''\nThe first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n'''\n"
        "q = '''''quoted'''''\n"
        "n = 1\n");

    cr_assert_str_eq(str_at(root, "re"), "I [dw]on't need \\d{2} apples");
    cr_assert_str_eq(str_at(root, "lines"),
                     "The first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n");
    cr_assert_str_eq(str_at(root, "q"), "''quoted''");
    cr_assert_eq(gpd_toml_get(root, "n")->line, 9);
    gpd_toml_free(root);
}

Test(toml, string_errors)
{
    expect_err("a = 1\nname = \"abc\n", "t.toml:2:", "key 'name'", "unterminated string", NULL);
    expect_err("name = \"abc", "t.toml:1:", "key 'name'", "unterminated", NULL);
    expect_err("name = 'abc\n", "t.toml:1:", "key 'name'", "unterminated", NULL);
    expect_err("\n\nname = \"\"\"abc\n\n", "t.toml:3:", "key 'name'", "unterminated multi-line string", NULL);
    expect_err("name = '''abc", "t.toml:1:", "unterminated multi-line", NULL);
    expect_err("s = \"bad \\x41\"\n", "t.toml:1:", "key 's'", "invalid escape", NULL);
    expect_err("s = \"bad \\a\"\n", "t.toml:1:", "invalid escape", NULL);
    expect_err("s = \"bad \\ \"\n", "t.toml:1:", "invalid escape", NULL);
    expect_err("s = \"bad \\", "t.toml:1:", "invalid escape", NULL);
    expect_err("s = \"\\u12\"\n", "t.toml:1:", "key 's'", "hex digits", NULL);
    expect_err("s = \"\\U0001F60\"\n", "t.toml:1:", "hex digits", NULL);
    expect_err("s = \"\\uD800\"\n", "t.toml:1:", "key 's'", "not a Unicode scalar value", NULL);
    expect_err("s = \"\\uDFFF\"\n", "t.toml:1:", "not a Unicode scalar value", NULL);
    expect_err("s = \"\\U00110000\"\n", "t.toml:1:", "not a Unicode scalar value", NULL);
    expect_err("s = \"\"\"a \\ b\"\"\"\n", "t.toml:1:", "invalid escape", NULL);
    expect_err("s = \"ctl \x01\"\n", "t.toml:1:", "key 's'", "control character 0x01", NULL);
    expect_err("s = \"del \x7f\"\n", "t.toml:1:", "control character 0x7f", NULL);
    expect_err("s = 'ctl \x1f'\n", "t.toml:1:", "control character", NULL);
    expect_err("s = \"\"\"\nok\nctl \x02\"\"\"\n", "t.toml:3:", "key 's'", "control character", NULL);
    expect_err("s = '''a\rb'''\n", "t.toml:1:", "control character 0x0d", NULL);
    expect_err("s = \"a\rb\"\n", "t.toml:1:", "control character 0x0d", NULL);
    expect_err("s = \"\"\"a\"\"\"\"\"\"\n", "t.toml:1:", "too many quotes", NULL);
    expect_err("s = '''a''''''\n", "t.toml:1:", "too many quotes", NULL);
}

Test(toml, string_with_embedded_nul_byte_in_input)
{
    const char src[] = "s = \"a\0b\"\n";
    cr_assert_null(gpd_toml_parse(src, sizeof src - 1, "t.toml", g_err, sizeof g_err));
    cr_assert(strstr(g_err, "t.toml:1:") && strstr(g_err, "control character"), "%s", g_err);
}

Test(toml, invalid_utf8)
{
    expect_err("a = 1\ns = \"\xff\"\n", "t.toml:2:", "invalid UTF-8", NULL);
    expect_err("# \xc3\x28\n", "t.toml:1:", "invalid UTF-8", NULL);
    expect_err("s = \"\xed\xa0\x80\"\n", "invalid UTF-8", NULL);   /* encoded surrogate */
    expect_err("s = \"\xc0\xaf\"\n", "invalid UTF-8", NULL);       /* overlong */
    expect_err("s = \"\xf4\x90\x80\x80\"\n", "invalid UTF-8", NULL);
    expect_err("s = \"\xe2\x82\"", "invalid UTF-8", NULL);         /* truncated */
}

/* ---- integers ---------------------------------------------------------- */

Test(toml, integers)
{
    gpd_toml_value *root = parse_ok(
        "a = 99\nb = +42\nc = 0\nd = -17\ne = +0\nf = -0\n"
        "g = 1_000\nh = 5_349_221\ni = 53_49_221\nj = 1_2_3_4_5\n"
        "hex1 = 0xDEADBEEF\nhex2 = 0xdeadbeef\nhex3 = 0xdead_beef\n"
        "oct1 = 0o01234567\noct2 = 0o755\nbin1 = 0b11010110\n"
        "max = 9223372036854775807\nmin = -9223372036854775808\n"
        "hmax = 0x7FFFFFFFFFFFFFFF\nz = 0x0\n");

    cr_assert_eq(int_at(root, "a"), 99);
    cr_assert_eq(int_at(root, "b"), 42);
    cr_assert_eq(int_at(root, "c"), 0);
    cr_assert_eq(int_at(root, "d"), -17);
    cr_assert_eq(int_at(root, "e"), 0);
    cr_assert_eq(int_at(root, "f"), 0);
    cr_assert_eq(int_at(root, "g"), 1000);
    cr_assert_eq(int_at(root, "h"), 5349221);
    cr_assert_eq(int_at(root, "i"), 5349221);
    cr_assert_eq(int_at(root, "j"), 12345);
    cr_assert_eq(int_at(root, "hex1"), 0xDEADBEEF);
    cr_assert_eq(int_at(root, "hex2"), 0xDEADBEEF);
    cr_assert_eq(int_at(root, "hex3"), 0xDEADBEEF);
    cr_assert_eq(int_at(root, "oct1"), 01234567);
    cr_assert_eq(int_at(root, "oct2"), 0755);
    cr_assert_eq(int_at(root, "bin1"), 214);
    cr_assert_eq(int_at(root, "max"), INT64_MAX);
    cr_assert_eq(int_at(root, "min"), INT64_MIN);
    cr_assert_eq(int_at(root, "hmax"), INT64_MAX);
    cr_assert_eq(int_at(root, "z"), 0);
    gpd_toml_free(root);
}

Test(toml, integer_errors)
{
    expect_err("[pool]\n\n\n\n\n\n\n\nworkers = 12x\n", "t.toml:9: key 'workers': invalid integer '12x'", NULL);
    expect_err("n = 012\n", "t.toml:1:", "key 'n'", "invalid integer '012'", NULL);
    expect_err("n = 00\n", "invalid integer", NULL);
    expect_err("n = -012\n", "invalid integer", NULL);
    expect_err("n = 1__000\n", "invalid integer '1__000'", NULL);
    expect_err("n = _1000\n", "key 'n'", "strings must be quoted", NULL);
    expect_err("n = 1000_\n", "invalid integer '1000_'", NULL);
    expect_err("n = 0x\n", "invalid integer", NULL);
    expect_err("n = 0x_1\n", "invalid integer", NULL);
    expect_err("n = 0xG\n", "invalid integer", NULL);
    expect_err("n = 0o8\n", "invalid integer", NULL);
    expect_err("n = 0b102\n", "invalid integer", NULL);
    expect_err("n = +0x10\n", "invalid integer", NULL);
    expect_err("n = -0b1\n", "invalid integer", NULL);
    expect_err("n = 0X10\n", "invalid integer", NULL);
    expect_err("n = +\n", "invalid integer", NULL);
    expect_err("n = 1 2\n", "t.toml:1:", "key 'n'", "expected end of line", NULL);
    expect_err("n = 9223372036854775808\n", "t.toml:1:", "key 'n'", "out of range", NULL);
    expect_err("n = -9223372036854775809\n", "out of range", NULL);
    expect_err("n = 0x8000000000000000\n", "out of range", NULL);
    expect_err("n = 0xFFFFFFFFFFFFFFFFFF\n", "out of range", NULL);
    expect_err("n = 99999999999999999999999999\n", "out of range", NULL);
}

/* ---- floats ------------------------------------------------------------ */

Test(toml, floats)
{
    gpd_toml_value *root = parse_ok(
        "a = +1.0\nb = 3.1415\nc = -0.01\nd = 5e+22\ne = 1e06\nf = -2E-2\n"
        "g = 6.626e-34\nh = 224_617.445_991_228\ni = 0.0\nj = -0.0\nk = 1e1_0\n"
        "l = 0e0\nm = 1.5E3\n"
        "pinf = inf\nsinf = +inf\nninf = -inf\nnan1 = nan\nnan2 = +nan\nnan3 = -nan\n");

    cr_assert_float_eq(float_at(root, "a"), 1.0, 0);
    cr_assert_float_eq(float_at(root, "b"), 3.1415, 1e-12);
    cr_assert_float_eq(float_at(root, "c"), -0.01, 1e-15);
    cr_assert_float_eq(float_at(root, "d"), 5e22, 1e8);
    cr_assert_float_eq(float_at(root, "e"), 1e6, 0);
    cr_assert_float_eq(float_at(root, "f"), -0.02, 1e-15);
    cr_assert_float_eq(float_at(root, "g"), 6.626e-34, 1e-40);
    cr_assert_float_eq(float_at(root, "h"), 224617.445991228, 1e-6);
    cr_assert_float_eq(float_at(root, "i"), 0.0, 0);
    cr_assert(signbit(float_at(root, "j")));
    cr_assert_float_eq(float_at(root, "k"), 1e10, 0);
    cr_assert_float_eq(float_at(root, "l"), 0.0, 0);
    cr_assert_float_eq(float_at(root, "m"), 1500.0, 0);
    cr_assert(isinf(float_at(root, "pinf")) && float_at(root, "pinf") > 0);
    cr_assert(isinf(float_at(root, "sinf")) && float_at(root, "sinf") > 0);
    cr_assert(isinf(float_at(root, "ninf")) && float_at(root, "ninf") < 0);
    cr_assert(isnan(float_at(root, "nan1")));
    cr_assert(isnan(float_at(root, "nan2")));
    cr_assert(isnan(float_at(root, "nan3")));
    gpd_toml_free(root);
}

Test(toml, float_errors)
{
    expect_err("f = .7\n", "t.toml:1:", "key 'f'", "strings must be quoted", NULL);
    expect_err("f = 7.\n", "t.toml:1:", "key 'f'", "invalid float '7.'", NULL);
    expect_err("f = 3.e+20\n", "invalid float", NULL);
    expect_err("f = 1e\n", "invalid float", NULL);
    expect_err("f = 1e+\n", "invalid float", NULL);
    expect_err("f = 01.5\n", "invalid float", NULL);
    expect_err("f = 1._5\n", "invalid float", NULL);
    expect_err("f = 1_.5\n", "invalid float", NULL);
    expect_err("f = 1.5_\n", "invalid float", NULL);
    expect_err("f = 1.2.3\n", "invalid float", NULL);
    expect_err("f = 1.5x\n", "invalid float '1.5x'", NULL);
    expect_err("f = 1e_5\n", "invalid float", NULL);
    expect_err("f = 1e400\n", "t.toml:1:", "key 'f'", "out of range", NULL);
    expect_err("f = -1e400\n", "out of range", NULL);
    expect_err("f = Inf\n", "strings must be quoted", NULL);
    expect_err("f = NaN\n", "strings must be quoted", NULL);
    expect_err("f = infinity\n", "strings must be quoted", NULL);
    expect_err("f = -infx\n", "invalid", NULL);
}

/* ---- booleans and bare words ------------------------------------------- */

Test(toml, booleans)
{
    gpd_toml_value *root = parse_ok("t = true\nf = false\n");

    cr_assert_eq(path(root, "t")->type, GPD_TOML_BOOL);
    cr_assert(path(root, "t")->u.boolean);
    cr_assert_not(path(root, "f")->u.boolean);
    gpd_toml_free(root);
}

Test(toml, value_errors)
{
    expect_err("b = True\n", "t.toml:1:", "key 'b'", "strings must be quoted", NULL);
    expect_err("b = truex\n", "strings must be quoted", NULL);
    expect_err("name = hello\n", "t.toml:1: key 'name': expected a value, found 'hello'", NULL);
    expect_err("a = 1\nport =\n", "t.toml:2: key 'port': expected a value", NULL);
    expect_err("port = # comment\n", "t.toml:1: key 'port': expected a value", NULL);
    expect_err("port =", "t.toml:1: key 'port': expected a value", NULL);
    expect_err("port = }\n", "key 'port'", "expected a value, found '}'", NULL);
    expect_err("a = \"x\" \"y\"\n", "key 'a'", "expected end of line", NULL);
    expect_err("a = 1\r", "carriage return", NULL);
    expect_err("a = 1\n\r\n\rb = 2\n", "t.toml:3:", "carriage return", NULL);
}

Test(toml, dates_are_refused)
{
    expect_err("a = 1\nd = 1979-05-27\n", "t.toml:2:", "key 'd'", "dates and times are not supported", NULL);
    expect_err("d = 1979-05-27T07:32:00Z\n", "dates and times are not supported", NULL);
    expect_err("d = 1979-05-27 07:32:00\n", "dates and times are not supported", NULL);
    expect_err("d = 1979-05-27T00:32:00.999999-07:00\n", "dates and times are not supported", NULL);
    expect_err("t = 07:32:00\n", "dates and times are not supported", NULL);
    expect_err("a = [1979-05-27]\n", "dates and times are not supported", NULL);
}

/* ---- arrays ------------------------------------------------------------ */

Test(toml, arrays)
{
    gpd_toml_value *root = parse_ok(
        "ints = [ 1, 2, 3 ]\n"
        "empty = []\n"
        "empty2 = [ # c\n ]\n"
        "mixed = [ 0.1, \"x\", true, 5, [1, 2], { a = 1 } ]\n"
        "nested = [ [ 1, 2 ], [\"a\", 'b'] ]\n"
        "multi = [\n"
        "  \"one\",   # first\n"
        "  # only a comment\n"
        "  \"two\",\n"
        "\n"
        "  \"\"\"three\n3\"\"\",\n"
        "]\n"
        "trail = [1,2,]\n"
        "after = 1\n");
    gpd_toml_value *mixed, *multi, *inner;

    cr_assert_eq(gpd_toml_count(path(root, "ints")), 3);
    cr_assert_eq(gpd_toml_at(path(root, "ints"), 2)->u.integer, 3);
    cr_assert_eq(path(root, "empty")->type, GPD_TOML_ARRAY);
    cr_assert_eq(gpd_toml_count(path(root, "empty")), 0);
    cr_assert_eq(gpd_toml_count(path(root, "empty2")), 0);
    mixed = path(root, "mixed");
    cr_assert_eq(gpd_toml_count(mixed), 6);
    cr_assert_eq(gpd_toml_at(mixed, 0)->type, GPD_TOML_FLOAT);
    cr_assert_eq(gpd_toml_at(mixed, 1)->type, GPD_TOML_STRING);
    cr_assert_eq(gpd_toml_at(mixed, 2)->type, GPD_TOML_BOOL);
    cr_assert_eq(gpd_toml_at(mixed, 3)->type, GPD_TOML_INTEGER);
    cr_assert_eq(gpd_toml_at(mixed, 4)->type, GPD_TOML_ARRAY);
    cr_assert_eq(gpd_toml_at(mixed, 5)->type, GPD_TOML_TABLE);
    cr_assert_null(gpd_toml_at(mixed, 5)->key);
    cr_assert_eq(gpd_toml_get(gpd_toml_at(mixed, 5), "a")->u.integer, 1);
    inner = gpd_toml_at(path(root, "nested"), 1);
    cr_assert_str_eq(gpd_toml_at(inner, 1)->u.string.ptr, "b");
    multi = path(root, "multi");
    cr_assert_eq(multi->line, 7);
    cr_assert_eq(gpd_toml_count(multi), 3);
    cr_assert_eq(gpd_toml_at(multi, 0)->line, 8);
    cr_assert_eq(gpd_toml_at(multi, 1)->line, 10);
    cr_assert_eq(gpd_toml_at(multi, 2)->line, 12);
    cr_assert_str_eq(gpd_toml_at(multi, 2)->u.string.ptr, "three\n3");
    cr_assert_eq(gpd_toml_count(path(root, "trail")), 2);
    cr_assert_eq(path(root, "after")->line, 16);
    gpd_toml_free(root);
}

Test(toml, array_errors)
{
    expect_err("a = [1, 2\n", "t.toml:1:", "key 'a'", "unterminated array", NULL);
    expect_err("a = [1 2]\n", "t.toml:1:", "key 'a'", "expected ',' or ']'", NULL);
    expect_err("a = [,]\n", "key 'a[0]'", "expected a value", NULL);
    expect_err("a = [1,,2]\n", "key 'a[1]'", "expected a value", NULL);
    expect_err("a = [\n1,\n2x\n]\n", "t.toml:3:", "key 'a[1]'", "invalid integer '2x'", NULL);
    expect_err("a = [1] x\n", "key 'a'", "expected end of line", NULL);
    expect_err("a = [ { b = 1x } ]\n", "key 'a[0].b'", "invalid integer", NULL);
}

/* ---- inline tables ----------------------------------------------------- */

Test(toml, inline_tables)
{
    gpd_toml_value *root = parse_ok(
        "name = { first = \"Tom\", last = \"Preston-Werner\" }\n"
        "point = {x=1,y=2}\n"
        "empty = {}\n"
        "sp = {  }\n"
        "animal = { type.name = \"pug\", type.size = 'small' }\n"
        "nest = { a = { b = { c = [1, 2] } } }\n"
        "arr = { list = [\n 1,\n 2 ] }\n"
        "after = true\n");
    gpd_toml_value *name = path(root, "name");

    cr_assert_eq(name->type, GPD_TOML_TABLE);
    cr_assert(name->defined);
    cr_assert_eq(gpd_toml_count(name), 2);
    cr_assert_str_eq(gpd_toml_at(name, 0)->key, "first");
    cr_assert_str_eq(str_at(root, "name.last"), "Preston-Werner");
    cr_assert_eq(int_at(root, "point.y"), 2);
    cr_assert_eq(gpd_toml_count(path(root, "empty")), 0);
    cr_assert_eq(gpd_toml_count(path(root, "sp")), 0);
    cr_assert_str_eq(str_at(root, "animal.type.name"), "pug");
    cr_assert_str_eq(str_at(root, "animal.type.size"), "small");
    cr_assert_eq(gpd_toml_count(path(root, "nest.a.b.c")), 2);
    cr_assert_eq(gpd_toml_count(path(root, "arr.list")), 2);
    cr_assert_eq(path(root, "after")->line, 10);
    gpd_toml_free(root);
}

Test(toml, inline_table_errors)
{
    expect_err("t = { a = 1, }\n", "t.toml:1:", "key 't'", "trailing comma", NULL);
    expect_err("t = { a = 1\n}\n", "t.toml:1:", "key 't'", "one line", NULL);
    expect_err("t = {\na = 1 }\n", "t.toml:1:", "one line", NULL);
    expect_err("t = { a = 1 b = 2 }\n", "key 't'", "expected ',' or '}'", NULL);
    expect_err("t = { a = 1", "one line", NULL);
    expect_err("t = { a 1 }\n", "expected '=' after key 't.a'", NULL);
    expect_err("t = { , }\n", "expected a key", NULL);
    expect_err("t = { a = 1 }\nt.b = 2\n", "t.toml:2:", "key 't.b'", "inline table 't'", NULL);
    expect_err("t = { a = 1 }\n[t]\n", "t.toml:2:", "table 't' defined twice", NULL);
    expect_err("t = { a = {} }\n[t.a]\n", "t.toml:2:", "table 't.a'", "inline table 't'", NULL);
    expect_err("t = { a = { b = 1 } }\n[t.a.c]\n", "t.toml:2:", "inline table", NULL);
    expect_err("t = { a = { b = 1 }, a.c = 2 }\n", "key 't.a.c'", "inline table 't.a'", NULL);
    expect_err("[a]\nt = { x = 1 }\n[a.t.y]\n", "t.toml:3:", "inline table 'a.t'", NULL);
    expect_err("t = [{ a = 1 }]\n[[t]]\n", "t.toml:2:", "array of tables 't'", NULL);
}

/* ---- comments ---------------------------------------------------------- */

Test(toml, comments)
{
    gpd_toml_value *root = parse_ok(
        "# full line\n"
        "a = 1 # after a value\n"
        "s = \"# not a comment\" # but this is\n"
        "[t] # after a header\n"
        "  # indented\n"
        "\tb = 2\t# tabs\n"
        "#no space\n");

    cr_assert_eq(int_at(root, "a"), 1);
    cr_assert_str_eq(str_at(root, "s"), "# not a comment");
    cr_assert_eq(int_at(root, "t.b"), 2);
    gpd_toml_free(root);
    expect_err("a = 1\n# bad \x01 comment\n", "t.toml:2:", "control character", NULL);
    expect_err("# bad \x7f\n", "t.toml:1:", "control character", NULL);
}

/* ---- depth ------------------------------------------------------------- */

static char *repeat_join(const char *prefix, const char *unit, size_t n, const char *mid, const char *close,
                         const char *suffix)
{
    size_t cap = strlen(prefix) + n * (strlen(unit) + strlen(close)) + strlen(mid) + strlen(suffix) + 1;
    char *s = malloc(cap), *w = s;
    size_t i;

    cr_assert_not_null(s);
    w += sprintf(w, "%s", prefix);
    for (i = 0; i < n; i++)
        w += sprintf(w, "%s", unit);
    w += sprintf(w, "%s", mid);
    for (i = 0; i < n; i++)
        w += sprintf(w, "%s", close);
    sprintf(w, "%s", suffix);
    return s;
}

Test(toml, depth_limit_arrays)
{
    char *ok = repeat_join("a = ", "[", 63, "1", "]", "\n");
    char *bad = repeat_join("a = ", "[", 64, "1", "]", "\n");
    char *huge = repeat_join("a = ", "[", 100000, "", "]", "\n");
    gpd_toml_value *root = parse_ok(ok);

    gpd_toml_free(root);
    expect_err(bad, "t.toml:1:", "key 'a", "nesting deeper than 64", NULL);
    expect_err(huge, "t.toml:1:", "nesting deeper than 64", NULL);
    free(ok);
    free(bad);
    free(huge);
}

Test(toml, depth_limit_inline_tables)
{
    char *ok = repeat_join("a = ", "{b=", 63, "1", "}", "\n");
    char *bad = repeat_join("a = ", "{b=", 64, "1", "}", "\n");
    gpd_toml_value *root = parse_ok(ok);

    gpd_toml_free(root);
    expect_err(bad, "t.toml:1:", "nesting deeper than 64", NULL);
    free(ok);
    free(bad);
}

Test(toml, depth_limit_keys_and_headers)
{
    char *ok_key = repeat_join("", "a.", 63, "b = 1", "", "\n");
    char *bad_key = repeat_join("", "a.", 64, "b = 1", "", "\n");
    char *bad_header = repeat_join("[", "a.", 64, "b]", "", "\n");
    char *bad_mix = repeat_join("", "", 0, "", "", "");
    gpd_toml_value *root = parse_ok(ok_key);

    gpd_toml_free(root);
    expect_err(bad_key, "t.toml:1:", "64", NULL);
    expect_err(bad_header, "t.toml:1:", "64", NULL);
    free(bad_mix);
    /* 40 levels of header plus 40 of dotted key: the tree is what is capped */
    bad_mix = repeat_join("[", "h.", 39, "h]\n", "", "");
    {
        char *key = repeat_join("", "k.", 39, "k = 1\n", "", "");
        char *doc = malloc(strlen(bad_mix) + strlen(key) + 1);
        sprintf(doc, "%s%s", bad_mix, key);
        expect_err(doc, "t.toml:2:", "nesting deeper than 64", NULL);
        free(doc);
        free(key);
    }
    free(ok_key);
    free(bad_key);
    free(bad_header);
    free(bad_mix);
}

/* ---- files ------------------------------------------------------------- */

Test(toml, parse_file)
{
    char path_buf[] = "/tmp/gpd_toml_test_XXXXXX";
    int fd = mkstemp(path_buf);
    gpd_toml_value *root;
    FILE *f;

    cr_assert(fd >= 0);
    f = fdopen(fd, "w");
    fputs(k_config, f);
    fclose(f);
    root = gpd_toml_parse_file(path_buf, g_err, sizeof g_err);
    cr_assert_not_null(root, "%s", g_err);
    cr_assert_eq(gpd_toml_count(gpd_toml_get(root, "models")), 2);
    gpd_toml_free(root);

    f = fopen(path_buf, "w");
    fputs("a = 1\nb = 2\nb = 3\n", f);
    fclose(f);
    cr_assert_null(gpd_toml_parse_file(path_buf, g_err, sizeof g_err));
    cr_assert(strstr(g_err, path_buf) == g_err, "%s", g_err);
    cr_assert(strstr(g_err, ":3: key 'b': duplicate key"), "%s", g_err);
    unlink(path_buf);
}

Test(toml, parse_file_errors)
{
    cr_assert_null(gpd_toml_parse_file("/nonexistent/dir/gpd.toml", g_err, sizeof g_err));
    cr_assert_str_eq(g_err, "/nonexistent/dir/gpd.toml: cannot open: No such file or directory");
    cr_assert_null(gpd_toml_parse_file("/tmp", g_err, sizeof g_err));
    cr_assert(strstr(g_err, "/tmp: cannot read"), "%s", g_err);
}

Test(toml, parse_file_too_large)
{
    char path_buf[] = "/tmp/gpd_toml_big_XXXXXX";
    int fd = mkstemp(path_buf);

    cr_assert(fd >= 0);
    cr_assert_eq(ftruncate(fd, ((off_t)16 << 20) + 1), 0);
    close(fd);
    cr_assert_null(gpd_toml_parse_file(path_buf, g_err, sizeof g_err));
    cr_assert(strstr(g_err, "larger than 16 MiB"), "%s", g_err);
    unlink(path_buf);
}

Test(toml, parse_file_empty)
{
    char path_buf[] = "/tmp/gpd_toml_empty_XXXXXX";
    int fd = mkstemp(path_buf);
    gpd_toml_value *root;

    cr_assert(fd >= 0);
    close(fd);
    root = gpd_toml_parse_file(path_buf, g_err, sizeof g_err);
    cr_assert_not_null(root, "%s", g_err);
    cr_assert_eq(gpd_toml_count(root), 0);
    gpd_toml_free(root);
    unlink(path_buf);
}

Test(toml, many_keys_and_elements)
{
    size_t n = 2000, i, off = 0;
    char *doc = malloc(n * 40 + 64);
    gpd_toml_value *root, *arr;

    for (i = 0; i < n; i++)
        off += (size_t)sprintf(doc + off, "k%zu = %zu\n", i, i);
    off += (size_t)sprintf(doc + off, "arr = [");
    for (i = 0; i < n; i++)
        off += (size_t)sprintf(doc + off, "%zu,", i);
    sprintf(doc + off, "]\n");
    root = parse_ok(doc);
    cr_assert_eq(gpd_toml_count(root), n + 1);
    cr_assert_eq(int_at(root, "k1999"), 1999);
    arr = gpd_toml_get(root, "arr");
    cr_assert_eq(gpd_toml_count(arr), n);
    cr_assert_eq(gpd_toml_at(arr, n - 1)->u.integer, (int64_t)n - 1);
    gpd_toml_free(root);
    free(doc);
}

Test(toml, long_key_in_message_is_cut)
{
    char *doc = repeat_join("", "k", 1000, " = 1x\n", "", "");

    expect_err(doc, "t.toml:1: key 'kkkk", "invalid integer '1x'", NULL);
    cr_assert_lt(strlen(g_err), sizeof g_err - 1);
    free(doc);
}
