/*
 * A TOML reader for what gpuproxyd's configuration uses: tables, dotted
 * table headers ([providers.vastai]), arrays of tables ([[models]]),
 * bare/quoted/dotted keys, basic and literal strings (single- and
 * multi-line, with escapes), integers (decimal, hex 0x, octal 0o, binary
 * 0b, underscores), floats (incl. exponent, inf, nan), booleans, arrays
 * (mixed types, trailing commas, newlines, comments), inline tables, and
 * comments.  Dates/times are not supported (an error names the line).
 *
 * Errors name the file, line and key: "gpuproxyd.toml:12: key 'port':
 * expected a value".  Redefining a key or a table is an error.
 *
 * Ownership: gpd_toml_parse returns a tree the caller frees with
 * gpd_toml_free; every value points into that tree.
 */
#ifndef GPD_CORE_TOML_H
#define GPD_CORE_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gpd_toml_type {
    GPD_TOML_STRING,
    GPD_TOML_INTEGER,
    GPD_TOML_FLOAT,
    GPD_TOML_BOOL,
    GPD_TOML_ARRAY,
    GPD_TOML_TABLE
};

typedef struct gpd_toml_value gpd_toml_value;

/* A table or array's children are values; a table child carries its key. */
struct gpd_toml_value {
    enum gpd_toml_type type;
    int line;          /* 1-based line where the value (or table header) appears */
    const char *key;   /* key within the parent table (NUL-terminated); NULL for array elements */
    union {
        struct { char *ptr; size_t len; } string; /* NUL-terminated; len excludes the NUL */
        int64_t integer;
        double floating;
        bool boolean;
        struct { gpd_toml_value **items; size_t count, cap; } array; /* also a table's children, in order */
    } u;
    bool is_array_of_tables; /* GPD_TOML_ARRAY built from [[name]] headers */
    bool defined;            /* tables: defined by a header or key (internal; implicit parents are false) */
};

/*
 * Parse text[0..len) (need not be NUL-terminated).  filename is used only in
 * messages.  Returns the root table, or NULL with err filled ("FILE:LINE:
 * reason", including the key when one is involved).
 */
gpd_toml_value *gpd_toml_parse(const char *text, size_t len, const char *filename, char *err, size_t errlen);

/* Read and parse a file; errors as above (a missing file names the path). */
gpd_toml_value *gpd_toml_parse_file(const char *path, char *err, size_t errlen);

void gpd_toml_free(gpd_toml_value *root);

/* Child of a table by key; NULL when absent or when t is not a table. */
gpd_toml_value *gpd_toml_get(const gpd_toml_value *t, const char *key);

/* Number of children of a table or array, and the i-th one (in order). */
size_t gpd_toml_count(const gpd_toml_value *v);
gpd_toml_value *gpd_toml_at(const gpd_toml_value *v, size_t i);

/* "string", "integer", "float", "boolean", "array", "table" */
const char *gpd_toml_type_name(enum gpd_toml_type t);

#endif
