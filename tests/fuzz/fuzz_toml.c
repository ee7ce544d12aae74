/*
 * libFuzzer harness for the TOML reader and the unit parsers.
 *
 * The input is parsed as a whole document; the resulting tree is walked so
 * that every value is read (ASan catches a dangling or short buffer), the
 * tree's invariants are checked (a violation aborts, which libFuzzer reports),
 * and it is freed (LeakSanitizer checks the error paths too).  The same bytes
 * go to the duration and size parsers, and every accepted duration must read
 * back from its own formatted form.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/toml.h"
#include "core/units.h"

/* Deeper than the parser's cap of 64 means the cap failed. */
#define WALK_DEPTH_LIMIT 70

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_units(const char *s, size_t len)
{
    uint64_t v = 0, back = 0;
    const char *why = NULL;
    char buf[64];

    if (gpd_parse_duration_ms(s, len, &v, &why) == 0) {
        gpd_format_duration(buf, sizeof buf, v);
        check(gpd_parse_duration_ms(buf, strlen(buf), &back, &why) == 0);
        check(back == v);
    } else {
        check(why != NULL);
    }
    why = NULL;
    if (gpd_parse_size(s, len, &v, &why) != 0)
        check(why != NULL);
}

static uint64_t walk(const gpd_toml_value *v, int depth)
{
    uint64_t h = (uint64_t)v->line * 31 + (uint64_t)v->type;
    size_t i, n;

    check(depth <= WALK_DEPTH_LIMIT);
    check(v->line >= 1);
    switch (v->type) {
    case GPD_TOML_STRING:
        check(v->u.string.ptr != NULL);
        check(v->u.string.ptr[v->u.string.len] == '\0');
        for (i = 0; i < v->u.string.len; i++)
            h = h * 131 + (unsigned char)v->u.string.ptr[i];
        check_units(v->u.string.ptr, v->u.string.len);
        break;
    case GPD_TOML_INTEGER:
        h ^= (uint64_t)v->u.integer;
        break;
    case GPD_TOML_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->u.floating, sizeof bits);
        h ^= bits;
        break;
    }
    case GPD_TOML_BOOL:
        h += v->u.boolean;
        break;
    case GPD_TOML_ARRAY:
    case GPD_TOML_TABLE:
        n = gpd_toml_count(v);
        check(gpd_toml_at(v, n) == NULL);
        for (i = 0; i < n; i++) {
            const gpd_toml_value *c = gpd_toml_at(v, i);
            check(c != NULL);
            if (v->type == GPD_TOML_TABLE) {
                /* keys are unique, so lookup finds exactly this child */
                check(c->key != NULL);
                check(gpd_toml_get(v, c->key) == c);
            } else {
                check(c->key == NULL);
                if (v->is_array_of_tables)
                    check(c->type == GPD_TOML_TABLE);
            }
            h = h * 7 + walk(c, depth + 1);
        }
        break;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    gpd_toml_value *root;
    volatile uint64_t sink;

    root = gpd_toml_parse((const char *)data, size, "fuzz.toml", err, sizeof err);
    if (root) {
        check(root->type == GPD_TOML_TABLE && root->key == NULL);
        sink = walk(root, 0);
        (void)sink;
        gpd_toml_free(root);
    } else {
        /* every failure explains itself, naming the file and a line */
        check(strncmp(err, "fuzz.toml:", 10) == 0);
    }
    check_units((const char *)data, size);
    return 0;
}
