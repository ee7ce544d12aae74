/*
 * TOML v1.0 reader (without dates and times) for gpuproxyd's configuration.
 *
 * A recursive-descent parser over the whole buffer that builds the tree as
 * it goes.  Three things shape it:
 *
 *  - TOML's redefinition rules depend on how a table came to exist (as the
 *    implicit parent of a [a.b] header, by its own [header], by a dotted key,
 *    or inline).  The public struct only has `defined`, so every value lives
 *    in a private node that also records that origin and its depth.
 *  - Nesting is capped at TOML_MAX_DEPTH levels of the *tree* (not just of
 *    the syntax), so hostile or fuzzed input cannot exhaust the stack in the
 *    parser, in gpd_toml_free, or in any caller that walks the tree.
 *  - Error messages are for a person editing a config file: they name the
 *    file, the line, and the key as written ("key 'port': duplicate key").
 *    The key is tracked in a small capped buffer while parsing.
 */
#include "core/toml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOML_MAX_DEPTH  64
#define TOML_MAX_INPUT  ((size_t)16 << 20) /* also the cap on any one string */
#define TOML_KEYCTX_MAX 256                /* key shown in messages; longer keys are cut */
#define TOML_NUMBER_MAX 128                /* longest float token we convert */
#define TOML_SHOW_MAX   64                 /* longest token quoted in a message */

enum table_origin {
    ORIGIN_VALUE,    /* not a table */
    ORIGIN_IMPLICIT, /* parent made by a [a.b] header: may be defined once later */
    ORIGIN_HEADER,   /* defined by its own [header] or [[header]], or the root */
    ORIGIN_DOTTED,   /* made by a dotted key: closed to headers, open to more dotted keys */
    ORIGIN_INLINE    /* { ... }: closed to everything once written */
};

struct toml_node {
    gpd_toml_value v; /* first member, so a value pointer is a node pointer */
    enum table_origin origin;
    int depth;        /* root is 0 */
    size_t keylen;
    char keymem[];    /* storage behind v.key */
};

struct strbuf {
    char *p; /* always NUL-terminated once allocated */
    size_t len, cap;
};

struct parser {
    const char *s;
    size_t len;
    size_t pos;
    int line;
    const char *file;
    char *err;
    size_t errlen;
    bool failed;
    size_t keylen;                  /* bytes used in keyctx */
    char keyctx[TOML_KEYCTX_MAX];   /* the key being parsed, for messages */
};

struct keypart {
    char *s;
    size_t len;
    size_t ctx_end; /* keyctx length once this part was added: its printable prefix */
};

struct keypath {
    size_t n;
    struct keypart part[TOML_MAX_DEPTH];
};

static gpd_toml_value *parse_value(struct parser *p, int depth, int line, const char *key, size_t keylen);

static struct toml_node *node_of(gpd_toml_value *v)
{
    return (struct toml_node *)(void *)v;
}

/* ---- errors ---------------------------------------------------------- */

/* Only the first error is kept: later ones are consequences of it. */
__attribute__((format(printf, 3, 4)))
static void fail(struct parser *p, int line, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (p->failed)
        return;
    p->failed = true;
    if (!p->err || p->errlen == 0)
        return;
    n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, line);
    if (n < 0 || (size_t)n >= p->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Like fail, prefixed with "key 'K': " when a key is being parsed. */
__attribute__((format(printf, 3, 4)))
static void fail_key(struct parser *p, int line, const char *fmt, ...)
{
    char msg[384];
    va_list ap;

    if (p->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->keylen > 0)
        fail(p, line, "key '%s': %s", p->keyctx, msg);
    else
        fail(p, line, "%s", msg);
}

static void fail_oom(struct parser *p)
{
    fail(p, p->line, "out of memory");
}

/* What sits at the cursor, for "found X" in messages. */
static const char *describe_here(const struct parser *p, char *buf, size_t buflen)
{
    unsigned char c;

    if (p->pos >= p->len)
        return "end of file";
    c = (unsigned char)p->s[p->pos];
    if (c == '\n' || c == '\r')
        return "end of line";
    if (c == ' ' || c == '\t')
        return "whitespace";
    if (c > 0x20 && c < 0x7f)
        snprintf(buf, buflen, "'%c'", c);
    else
        snprintf(buf, buflen, "byte 0x%02x", c);
    return buf;
}

static const char *describe_value(gpd_toml_value *v)
{
    if (v->is_array_of_tables)
        return "an array of tables";
    if (v->type == GPD_TOML_TABLE)
        return node_of(v)->origin == ORIGIN_INLINE ? "an inline table" : "a table";
    switch (v->type) {
    case GPD_TOML_STRING:  return "a string";
    case GPD_TOML_INTEGER: return "an integer";
    case GPD_TOML_FLOAT:   return "a float";
    case GPD_TOML_BOOL:    return "a boolean";
    case GPD_TOML_ARRAY:   return "an array";
    default:               return "a value";
    }
}

/* ---- key context for messages ---------------------------------------- */

static void keyctx_reset(struct parser *p, size_t mark)
{
    p->keylen = mark;
    p->keyctx[mark] = '\0';
}

static void keyctx_putc(struct parser *p, char c)
{
    if (p->keylen + 1 < sizeof p->keyctx) {
        p->keyctx[p->keylen++] = c;
        p->keyctx[p->keylen] = '\0';
    }
}

/* Control characters (possible in quoted keys) would garble a log line. */
static void keyctx_add(struct parser *p, const char *s, size_t n)
{
    size_t i;

    if (p->keylen > 0)
        keyctx_putc(p, '.');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        keyctx_putc(p, (c < 0x20 || c == 0x7f) ? '?' : (char)c);
    }
}

static void keyctx_add_index(struct parser *p, size_t idx)
{
    char tmp[32];
    size_t i;

    snprintf(tmp, sizeof tmp, "[%zu]", idx);
    for (i = 0; tmp[i]; i++)
        keyctx_putc(p, tmp[i]);
}

/* ---- memory ---------------------------------------------------------- */

static bool sb_reserve(struct parser *p, struct strbuf *b, size_t extra)
{
    size_t need, cap;
    char *np;

    if (b->len > TOML_MAX_INPUT || extra > TOML_MAX_INPUT - b->len) {
        fail(p, p->line, "string longer than 16 MiB");
        return false;
    }
    need = b->len + extra + 1;
    if (b->p && need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 32;
    while (cap < need)
        cap *= 2;
    np = realloc(b->p, cap);
    if (!np) {
        fail_oom(p);
        return false;
    }
    b->p = np;
    b->cap = cap;
    b->p[b->len] = '\0';
    return true;
}

static bool sb_put(struct parser *p, struct strbuf *b, const char *s, size_t n)
{
    if (!sb_reserve(p, b, n))
        return false;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool sb_putc(struct parser *p, struct strbuf *b, char c)
{
    return sb_put(p, b, &c, 1);
}

static void free_value(gpd_toml_value *v)
{
    size_t i;

    if (!v)
        return;
    if (v->type == GPD_TOML_STRING) {
        free(v->u.string.ptr);
    } else if (v->type == GPD_TOML_ARRAY || v->type == GPD_TOML_TABLE) {
        for (i = 0; i < v->u.array.count; i++)
            free_value(v->u.array.items[i]);
        free(v->u.array.items);
    }
    free(node_of(v));
}

/* key == NULL: an array element.  Fails (with a message) past the depth cap. */
static gpd_toml_value *node_new(struct parser *p, enum gpd_toml_type type, int line,
                                const char *key, size_t keylen, int depth)
{
    struct toml_node *n;

    if (depth > TOML_MAX_DEPTH) {
        fail_key(p, p->line, "nesting deeper than %d levels", TOML_MAX_DEPTH);
        return NULL;
    }
    n = calloc(1, sizeof *n + (key ? keylen + 1 : 0));
    if (!n) {
        fail_oom(p);
        return NULL;
    }
    n->v.type = type;
    n->v.line = line;
    n->depth = depth;
    n->origin = type == GPD_TOML_TABLE ? ORIGIN_HEADER : ORIGIN_VALUE;
    if (key) {
        if (keylen)
            memcpy(n->keymem, key, keylen);
        n->keymem[keylen] = '\0';
        n->keylen = keylen;
        n->v.key = n->keymem;
    }
    return &n->v;
}

/* On failure the caller still owns child. */
static bool append_child(struct parser *p, gpd_toml_value *parent, gpd_toml_value *child)
{
    size_t cap = parent->u.array.cap;
    gpd_toml_value **items;

    if (parent->u.array.count == cap) {
        cap = cap ? cap * 2 : 4;
        if (cap > SIZE_MAX / sizeof *items) {
            fail_oom(p);
            return false;
        }
        items = realloc(parent->u.array.items, cap * sizeof *items);
        if (!items) {
            fail_oom(p);
            return false;
        }
        parent->u.array.items = items;
        parent->u.array.cap = cap;
    }
    parent->u.array.items[parent->u.array.count++] = child;
    return true;
}

static gpd_toml_value *find_child(gpd_toml_value *t, const char *key, size_t keylen)
{
    size_t i;

    for (i = 0; i < t->u.array.count; i++) {
        struct toml_node *n = node_of(t->u.array.items[i]);
        if (n->keylen == keylen && memcmp(n->keymem, key, keylen) == 0)
            return &n->v;
    }
    return NULL;
}

/* ---- characters ------------------------------------------------------ */

static int peek(const struct parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int peek_at(const struct parser *p, size_t off)
{
    return p->pos + off < p->len ? (unsigned char)p->s[p->pos + off] : -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_bare_key_char(int c)
{
    return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}

/* Characters that can make up an unquoted value (number, boolean, date). */
static bool is_token_char(int c)
{
    return is_bare_key_char(c) || c == '+' || c == '.' || c == ':';
}

static bool is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
        p->pos++;
}

static bool at_newline(const struct parser *p)
{
    int c = peek(p);
    return c == '\n' || (c == '\r' && peek_at(p, 1) == '\n');
}

static void eat_newline(struct parser *p)
{
    if (p->s[p->pos] == '\r')
        p->pos++;
    p->pos++;
    p->line++;
}

/*
 * Consume a comment up to its newline.  TOML forbids control characters in
 * comments; accepting them would hide a corrupted or binary file.
 */
static bool skip_comment(struct parser *p)
{
    p->pos++; /* '#' */
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '\n' || (c == '\r' && peek_at(p, 1) == '\n'))
            break;
        if (is_control(c)) {
            fail(p, p->line, "control character 0x%02x in comment", c);
            return false;
        }
        p->pos++;
    }
    return true;
}

/* Whitespace, newlines and comments, as allowed between array elements. */
static bool skip_ws_nl_comments(struct parser *p)
{
    for (;;) {
        skip_ws(p);
        if (peek(p) == '#') {
            if (!skip_comment(p))
                return false;
        } else if (at_newline(p)) {
            eat_newline(p);
        } else {
            return true;
        }
    }
}

/* After a key/value pair or a header only a comment may follow on the line. */
static bool expect_line_end(struct parser *p, bool header)
{
    char buf[24];

    skip_ws(p);
    if (peek(p) == '#' && !skip_comment(p))
        return false;
    if (p->pos >= p->len)
        return true;
    if (at_newline(p)) {
        eat_newline(p);
        return true;
    }
    if (peek(p) == '\r')
        fail(p, p->line, "carriage return not followed by a newline");
    else if (header)
        fail(p, p->line, "table '%s': expected end of line after the table header, found %s",
             p->keyctx, describe_here(p, buf, sizeof buf));
    else
        fail_key(p, p->line, "expected end of line after the value, found %s",
                 describe_here(p, buf, sizeof buf));
    return false;
}

/* Offset of the first byte that is not well-formed UTF-8, or len. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t need, k;
        unsigned char lo = 0x80, hi = 0xbf;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;        /* overlong */
            else if (c == 0xed)
                hi = 0x9f;        /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;        /* overlong */
            else if (c == 0xf4)
                hi = 0x8f;        /* beyond U+10FFFF */
        } else {
            return i;
        }
        if (len - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return i;
        i += need + 1;
    }
    return len;
}

static int line_at(const char *s, size_t off)
{
    int line = 1;
    size_t i;

    for (i = 0; i < off; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

/* ---- strings --------------------------------------------------------- */

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool put_utf8(struct parser *p, struct strbuf *b, uint32_t cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return sb_put(p, b, u, n);
}

/* Cursor on the backslash of an escape inside a basic string. */
static bool parse_escape(struct parser *p, struct strbuf *b)
{
    char buf[24];
    int c, digits, i;
    uint32_t cp = 0;

    p->pos++;
    c = peek(p);
    switch (c) {
    case 'b':  p->pos++; return sb_putc(p, b, '\b');
    case 't':  p->pos++; return sb_putc(p, b, '\t');
    case 'n':  p->pos++; return sb_putc(p, b, '\n');
    case 'f':  p->pos++; return sb_putc(p, b, '\f');
    case 'r':  p->pos++; return sb_putc(p, b, '\r');
    case '"':  p->pos++; return sb_putc(p, b, '"');
    case '\\': p->pos++; return sb_putc(p, b, '\\');
    case 'u':  digits = 4; break;
    case 'U':  digits = 8; break;
    default:
        fail_key(p, p->line, "invalid escape '\\' followed by %s", describe_here(p, buf, sizeof buf));
        return false;
    }
    p->pos++;
    for (i = 0; i < digits; i++) {
        int h = hex_value(peek(p));
        if (h < 0) {
            fail_key(p, p->line, "\\%c escape needs %d hex digits", c, digits);
            return false;
        }
        cp = (cp << 4) | (uint32_t)h;
        p->pos++;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        fail_key(p, p->line, "escape \\%c%0*X is not a Unicode scalar value", c, digits, (unsigned)cp);
        return false;
    }
    return put_utf8(p, b, cp);
}

/*
 * Cursor on the opening quote.  Appends the decoded string to b.  Multi-line
 * forms are refused when !allow_multi (keys).  Newlines inside multi-line
 * strings come out as "\n" whatever the file used.
 */
static bool parse_string(struct parser *p, struct strbuf *b, bool allow_multi)
{
    int q = peek(p);
    bool literal = q == '\'';
    bool multi = peek_at(p, 1) == q && peek_at(p, 2) == q;
    int start_line = p->line;

    if (!sb_reserve(p, b, 0))
        return false;
    if (multi && !allow_multi) {
        fail(p, p->line, "a multi-line string cannot be a key");
        return false;
    }
    p->pos += multi ? 3 : 1;
    /* A newline right after the opening delimiter is not part of the string. */
    if (multi && at_newline(p))
        eat_newline(p);

    for (;;) {
        int c = peek(p);

        if (c < 0) {
            fail_key(p, start_line, "unterminated %sstring", multi ? "multi-line " : "");
            return false;
        }
        if (c == q) {
            size_t run = 1;
            if (!multi) {
                p->pos++;
                return true;
            }
            while (peek_at(p, run) == q)
                run++;
            if (run >= 3) {
                /* Up to two quotes may sit right before the closing delimiter. */
                if (run > 5) {
                    fail_key(p, p->line, "too many quotes at the end of a multi-line string");
                    return false;
                }
                if (!sb_put(p, b, p->s + p->pos, run - 3))
                    return false;
                p->pos += run;
                return true;
            }
            if (!sb_put(p, b, p->s + p->pos, run))
                return false;
            p->pos += run;
            continue;
        }
        if (at_newline(p)) {
            if (!multi) {
                fail_key(p, start_line, "unterminated string (newline before the closing quote)");
                return false;
            }
            eat_newline(p);
            if (!sb_putc(p, b, '\n'))
                return false;
            continue;
        }
        if (c == '\\' && !literal) {
            if (multi) {
                /* Line-ending backslash: drop it and all whitespace up to the next text. */
                size_t j = 1;
                while (peek_at(p, j) == ' ' || peek_at(p, j) == '\t')
                    j++;
                if (peek_at(p, j) == '\n' || (peek_at(p, j) == '\r' && peek_at(p, j + 1) == '\n')) {
                    p->pos += j;
                    for (;;) {
                        skip_ws(p);
                        if (!at_newline(p))
                            break;
                        eat_newline(p);
                    }
                    continue;
                }
            }
            if (!parse_escape(p, b))
                return false;
            continue;
        }
        if (is_control((unsigned char)c)) {
            fail_key(p, p->line, "control character 0x%02x in string (use an escape)", c);
            return false;
        }
        if (!sb_putc(p, b, (char)c))
            return false;
        p->pos++;
    }
}

/* ---- keys ------------------------------------------------------------ */

static void keypath_free(struct keypath *kp)
{
    size_t i;

    for (i = 0; i < kp->n; i++)
        free(kp->part[i].s);
    kp->n = 0;
}

/* One bare or quoted key into b (allocated and NUL-terminated on success). */
static bool parse_simple_key(struct parser *p, struct strbuf *b)
{
    char buf[24];
    size_t start = p->pos;
    int c = peek(p);

    if (c == '"' || c == '\'')
        return parse_string(p, b, false);
    while (p->pos < p->len && is_bare_key_char((unsigned char)p->s[p->pos]))
        p->pos++;
    if (p->pos == start) {
        fail_key(p, p->line, "expected a key, found %s", describe_here(p, buf, sizeof buf));
        return false;
    }
    return sb_put(p, b, p->s + start, p->pos - start);
}

/* A dotted key into kp; each part is also appended to the message context. */
static bool parse_key(struct parser *p, struct keypath *kp)
{
    for (;;) {
        struct strbuf b = { 0 };

        skip_ws(p);
        if (kp->n == TOML_MAX_DEPTH) {
            fail_key(p, p->line, "key has more than %d parts", TOML_MAX_DEPTH);
            return false;
        }
        if (!parse_simple_key(p, &b)) {
            free(b.p);
            return false;
        }
        keyctx_add(p, b.p, b.len);
        /* Keys are handed out as C strings; an embedded NUL would alias another key. */
        if (b.len && memchr(b.p, '\0', b.len)) {
            free(b.p);
            fail_key(p, p->line, "key contains a NUL character");
            return false;
        }
        kp->part[kp->n].s = b.p;
        kp->part[kp->n].len = b.len;
        kp->part[kp->n].ctx_end = p->keylen;
        kp->n++;
        skip_ws(p);
        if (peek(p) != '.')
            return true;
        p->pos++;
    }
}

/* ---- key/value pairs ------------------------------------------------- */

/*
 * key = value, added to table.  At top level (line_end) the rest of the line
 * must be empty; inside an inline table the caller handles ',' and '}'.
 */
static bool parse_keyval(struct parser *p, gpd_toml_value *table, bool line_end)
{
    struct keypath kp;
    size_t mark = p->keylen;
    int line = p->line;
    gpd_toml_value *t = table, *child, *value;
    struct keypart *last;
    bool ok = false;
    size_t i;

    kp.n = 0;
    if (!parse_key(p, &kp))
        goto out;
    if (peek(p) != '=') {
        fail(p, line, "expected '=' after key '%s'", p->keyctx);
        goto out;
    }
    p->pos++;
    skip_ws(p);

    for (i = 0; i + 1 < kp.n; i++) {
        struct keypart *part = &kp.part[i];
        int plen = (int)part->ctx_end;

        child = find_child(t, part->s, part->len);
        if (!child) {
            child = node_new(p, GPD_TOML_TABLE, line, part->s, part->len, node_of(t)->depth + 1);
            if (!child)
                goto out;
            node_of(child)->origin = ORIGIN_DOTTED;
            child->defined = true;
            if (!append_child(p, t, child)) {
                free_value(child);
                goto out;
            }
        } else if (child->type != GPD_TOML_TABLE) {
            fail_key(p, line, "'%.*s' is already %s", plen, p->keyctx, describe_value(child));
            goto out;
        } else if (node_of(child)->origin == ORIGIN_INLINE) {
            fail_key(p, line, "cannot add to inline table '%.*s'", plen, p->keyctx);
            goto out;
        } else if (node_of(child)->origin == ORIGIN_HEADER) {
            fail_key(p, line, "table '%.*s' is already defined by a [header]", plen, p->keyctx);
            goto out;
        } else if (node_of(child)->origin == ORIGIN_IMPLICIT) {
            /* Defined now, by dotted keys: a later [header] for it is a redefinition. */
            node_of(child)->origin = ORIGIN_DOTTED;
            child->defined = true;
        }
        t = child;
    }

    last = &kp.part[kp.n - 1];
    if (find_child(t, last->s, last->len)) {
        fail_key(p, line, "duplicate key");
        goto out;
    }
    value = parse_value(p, node_of(t)->depth + 1, line, last->s, last->len);
    if (!value)
        goto out;
    if (!append_child(p, t, value)) {
        free_value(value);
        goto out;
    }
    if (line_end && !expect_line_end(p, false))
        goto out;
    ok = true;
out:
    keypath_free(&kp);
    keyctx_reset(p, mark);
    return ok;
}

/* ---- values ---------------------------------------------------------- */

/*
 * Digits with '_' allowed only between two digits; appends the digits to
 * clean (when given).  Returns how many digits, or -1 for a stray '_'.
 */
static int scan_digits(const char *t, size_t n, size_t *i, char *clean, size_t *cl)
{
    int digits = 0;
    bool prev_digit = false;

    while (*i < n) {
        char c = t[*i];
        if (is_digit(c)) {
            if (clean)
                clean[(*cl)++] = c;
            digits++;
            prev_digit = true;
        } else if (c == '_') {
            if (!prev_digit || *i + 1 >= n || !is_digit(t[*i + 1]))
                return -1;
            prev_digit = false;
        } else {
            break;
        }
        (*i)++;
    }
    return digits;
}

/* 0 ok, -1 malformed, -2 out of range. */
static int parse_integer(const char *t, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false, prev_digit = false, overflow = false;
    unsigned base = 10;
    uint64_t v = 0, limit;

    if (i < n && (t[i] == '+' || t[i] == '-')) {
        neg = t[i] == '-';
        i++;
    }
    if (n - i >= 2 && t[i] == '0' && (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
        if (i > 0)
            return -1; /* no sign on hex/octal/binary */
        base = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
        i += 2;
    } else if (n - i >= 2 && t[i] == '0') {
        return -1;     /* leading zero */
    }
    if (i == n)
        return -1;
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        int d;
        if (t[i] == '_') {
            if (!prev_digit || i + 1 == n)
                return -1;
            prev_digit = false;
            continue;
        }
        d = hex_value((unsigned char)t[i]);
        if (d < 0 || (unsigned)d >= base)
            return -1;
        if (v > (limit - (unsigned)d) / base)
            overflow = true;
        else
            v = v * base + (unsigned)d;
        prev_digit = true;
    }
    if (!prev_digit)
        return -1;
    if (overflow)
        return -2;
    if (!neg)
        *out = (int64_t)v;
    else if (v == (uint64_t)INT64_MAX + 1)
        *out = INT64_MIN;
    else
        *out = -(int64_t)v;
    return 0;
}

/*
 * 0 ok, -1 malformed, -2 out of range.  strtod does the conversion, on a copy
 * without underscores; it follows LC_NUMERIC, which the daemon leaves as "C".
 */
static int parse_float(const char *t, size_t n, double *out)
{
    char clean[TOML_NUMBER_MAX + 1];
    size_t i = 0, cl = 0, int_start;
    bool has_frac = false, has_exp = false;
    int d;
    char *end;
    double v;

    if (n > TOML_NUMBER_MAX)
        return -1;
    if (i < n && (t[i] == '+' || t[i] == '-'))
        clean[cl++] = t[i++];
    int_start = i;
    d = scan_digits(t, n, &i, clean, &cl);
    if (d <= 0 || (d > 1 && t[int_start] == '0'))
        return -1;
    if (i < n && t[i] == '.') {
        clean[cl++] = t[i++];
        if (scan_digits(t, n, &i, clean, &cl) <= 0)
            return -1;
        has_frac = true;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        clean[cl++] = 'e';
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-'))
            clean[cl++] = t[i++];
        if (scan_digits(t, n, &i, clean, &cl) <= 0)
            return -1;
        has_exp = true;
    }
    if (i != n || (!has_frac && !has_exp))
        return -1;
    clean[cl] = '\0';
    v = strtod(clean, &end);
    if (end != clean + cl)
        return -1;
    if (isinf(v))
        return -2;
    *out = v;
    return 0;
}

static bool token_is(const char *t, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(t, word, n) == 0;
}

/* "1979-05-27..." or "07:32:00": recognised only to give a clear refusal. */
static bool looks_like_date_time(const char *t, size_t n)
{
    if (n >= 5 && is_digit(t[0]) && is_digit(t[1]) && is_digit(t[2]) && is_digit(t[3]) && t[4] == '-')
        return true;
    return n >= 3 && is_digit(t[0]) && is_digit(t[1]) && t[2] == ':';
}

/* An unquoted value: boolean, integer or float. */
static gpd_toml_value *parse_scalar(struct parser *p, int depth, int line, const char *key, size_t keylen)
{
    char buf[24];
    size_t start = p->pos, n, i;
    const char *t = p->s + start;
    int show, rc;
    gpd_toml_value *v;

    while (p->pos < p->len && is_token_char((unsigned char)p->s[p->pos]))
        p->pos++;
    n = p->pos - start;
    show = (int)(n > TOML_SHOW_MAX ? TOML_SHOW_MAX : n);
    if (n == 0) {
        if (p->pos >= p->len || at_newline(p) || peek(p) == '#')
            fail_key(p, p->line, "expected a value");
        else
            fail_key(p, p->line, "expected a value, found %s", describe_here(p, buf, sizeof buf));
        return NULL;
    }
    if (looks_like_date_time(t, n)) {
        fail_key(p, p->line, "dates and times are not supported");
        return NULL;
    }
    if (token_is(t, n, "true") || token_is(t, n, "false")) {
        v = node_new(p, GPD_TOML_BOOL, line, key, keylen, depth);
        if (v)
            v->u.boolean = t[0] == 't';
        return v;
    }
    if (token_is(t, n, "inf") || token_is(t, n, "+inf") || token_is(t, n, "-inf") ||
        token_is(t, n, "nan") || token_is(t, n, "+nan") || token_is(t, n, "-nan")) {
        v = node_new(p, GPD_TOML_FLOAT, line, key, keylen, depth);
        if (v) {
            double mag = t[n - 1] == 'f' ? INFINITY : NAN;
            v->u.floating = t[0] == '-' ? -mag : mag;
        }
        return v;
    }
    if (!is_digit(t[0]) && t[0] != '+' && t[0] != '-') {
        fail_key(p, p->line, "expected a value, found '%.*s' (strings must be quoted)", show, t);
        return NULL;
    }

    i = (t[0] == '+' || t[0] == '-') ? 1 : 0;
    if (!(n - i >= 2 && t[i] == '0' && t[i + 1] == 'x') &&
        (memchr(t, '.', n) || memchr(t, 'e', n) || memchr(t, 'E', n))) {
        double f = 0;
        rc = parse_float(t, n, &f);
        if (rc == -2) {
            fail_key(p, p->line, "float '%.*s' out of range", show, t);
            return NULL;
        }
        if (rc < 0) {
            fail_key(p, p->line, "invalid float '%.*s'", show, t);
            return NULL;
        }
        v = node_new(p, GPD_TOML_FLOAT, line, key, keylen, depth);
        if (v)
            v->u.floating = f;
        return v;
    } else {
        int64_t x = 0;
        rc = parse_integer(t, n, &x);
        if (rc == -2) {
            fail_key(p, p->line, "integer '%.*s' out of range", show, t);
            return NULL;
        }
        if (rc < 0) {
            fail_key(p, p->line, "invalid integer '%.*s'", show, t);
            return NULL;
        }
        v = node_new(p, GPD_TOML_INTEGER, line, key, keylen, depth);
        if (v)
            v->u.integer = x;
        return v;
    }
}

static gpd_toml_value *parse_array(struct parser *p, int depth, int line, const char *key, size_t keylen)
{
    char buf[24];
    gpd_toml_value *arr, *elem;
    size_t mark = p->keylen;

    arr = node_new(p, GPD_TOML_ARRAY, line, key, keylen, depth);
    if (!arr)
        return NULL;
    p->pos++; /* '[' */
    for (;;) {
        if (!skip_ws_nl_comments(p))
            goto fail;
        if (peek(p) == ']') {
            p->pos++;
            break;
        }
        if (p->pos >= p->len) {
            fail_key(p, line, "unterminated array (missing ']')");
            goto fail;
        }
        keyctx_add_index(p, arr->u.array.count);
        elem = parse_value(p, depth + 1, p->line, NULL, 0);
        keyctx_reset(p, mark);
        if (!elem)
            goto fail;
        if (!append_child(p, arr, elem)) {
            free_value(elem);
            goto fail;
        }
        if (!skip_ws_nl_comments(p))
            goto fail;
        if (p->pos >= p->len) {
            fail_key(p, line, "unterminated array (missing ']')");
            goto fail;
        }
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']') {
            p->pos++;
            break;
        }
        fail_key(p, p->line, "expected ',' or ']' in array, found %s", describe_here(p, buf, sizeof buf));
        goto fail;
    }
    return arr;
fail:
    free_value(arr);
    return NULL;
}

/* { k = v, ... } on one line, no trailing comma; frozen once closed. */
static gpd_toml_value *parse_inline_table(struct parser *p, int depth, int line, const char *key, size_t keylen)
{
    char buf[24];
    gpd_toml_value *t;

    t = node_new(p, GPD_TOML_TABLE, line, key, keylen, depth);
    if (!t)
        return NULL;
    node_of(t)->origin = ORIGIN_INLINE;
    t->defined = true;
    p->pos++; /* '{' */
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return t;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || at_newline(p) || peek(p) == '#' || peek(p) == '\r') {
            fail_key(p, p->line, "an inline table must be on one line (missing '}')");
            goto fail;
        }
        if (!parse_keyval(p, t, false))
            goto fail;
        skip_ws(p);
        if (peek(p) == ',') {
            p->pos++;
            skip_ws(p);
            if (peek(p) == '}') {
                fail_key(p, p->line, "trailing comma in inline table");
                goto fail;
            }
            continue;
        }
        if (peek(p) == '}') {
            p->pos++;
            break;
        }
        if (p->pos >= p->len || at_newline(p) || peek(p) == '#')
            fail_key(p, p->line, "an inline table must be on one line (missing '}')");
        else
            fail_key(p, p->line, "expected ',' or '}' in inline table, found %s",
                     describe_here(p, buf, sizeof buf));
        goto fail;
    }
    return t;
fail:
    free_value(t);
    return NULL;
}

static gpd_toml_value *parse_value(struct parser *p, int depth, int line, const char *key, size_t keylen)
{
    int c = peek(p);

    if (depth > TOML_MAX_DEPTH) {
        fail_key(p, p->line, "nesting deeper than %d levels", TOML_MAX_DEPTH);
        return NULL;
    }
    if (c == '"' || c == '\'') {
        struct strbuf b = { 0 };
        gpd_toml_value *v;

        if (!parse_string(p, &b, true)) {
            free(b.p);
            return NULL;
        }
        v = node_new(p, GPD_TOML_STRING, line, key, keylen, depth);
        if (!v) {
            free(b.p);
            return NULL;
        }
        v->u.string.ptr = b.p;
        v->u.string.len = b.len;
        return v;
    }
    if (c == '[')
        return parse_array(p, depth, line, key, keylen);
    if (c == '{')
        return parse_inline_table(p, depth, line, key, keylen);
    return parse_scalar(p, depth, line, key, keylen);
}

/* ---- table headers --------------------------------------------------- */

/* [a.b] or [[a.b]]; returns the table that following keys go into. */
static gpd_toml_value *parse_header(struct parser *p, gpd_toml_value *root)
{
    char buf[24];
    struct keypath kp;
    size_t mark = p->keylen, i;
    int line = p->line;
    bool aot;
    gpd_toml_value *t = root, *child, *result = NULL;
    struct keypart *last;

    kp.n = 0;
    p->pos++; /* '[' */
    aot = peek(p) == '[';
    if (aot)
        p->pos++;
    if (!parse_key(p, &kp))
        goto out;
    if (peek(p) != ']' || (aot && peek_at(p, 1) != ']')) {
        fail(p, line, "table '%s': expected '%s' after the table name, found %s",
             p->keyctx, aot ? "]]" : "]", describe_here(p, buf, sizeof buf));
        goto out;
    }
    p->pos += aot ? 2 : 1;

    for (i = 0; i + 1 < kp.n; i++) {
        struct keypart *part = &kp.part[i];
        int plen = (int)part->ctx_end;

        child = find_child(t, part->s, part->len);
        if (!child) {
            child = node_new(p, GPD_TOML_TABLE, line, part->s, part->len, node_of(t)->depth + 1);
            if (!child)
                goto out;
            node_of(child)->origin = ORIGIN_IMPLICIT;
            if (!append_child(p, t, child)) {
                free_value(child);
                goto out;
            }
        } else if (child->is_array_of_tables && child->u.array.count > 0) {
            /* [a.b] after [[a]] belongs to the latest element of a. */
            child = child->u.array.items[child->u.array.count - 1];
        } else if (child->type != GPD_TOML_TABLE) {
            fail(p, line, "table '%s': '%.*s' is already %s", p->keyctx, plen, p->keyctx,
                 describe_value(child));
            goto out;
        } else if (node_of(child)->origin == ORIGIN_INLINE) {
            fail(p, line, "table '%s': cannot add to inline table '%.*s'", p->keyctx, plen, p->keyctx);
            goto out;
        }
        t = child;
    }

    last = &kp.part[kp.n - 1];
    child = find_child(t, last->s, last->len);
    if (!aot) {
        if (!child) {
            child = node_new(p, GPD_TOML_TABLE, line, last->s, last->len, node_of(t)->depth + 1);
            if (!child)
                goto out;
            child->defined = true;
            if (!append_child(p, t, child)) {
                free_value(child);
                goto out;
            }
        } else if (child->type == GPD_TOML_TABLE && node_of(child)->origin == ORIGIN_IMPLICIT) {
            node_of(child)->origin = ORIGIN_HEADER;
            child->defined = true;
            child->line = line;
        } else if (child->type == GPD_TOML_TABLE) {
            fail(p, line, "table '%s' defined twice", p->keyctx);
            goto out;
        } else {
            fail(p, line, "table '%s': key is already %s", p->keyctx, describe_value(child));
            goto out;
        }
        result = child;
    } else {
        gpd_toml_value *elem;

        if (!child) {
            child = node_new(p, GPD_TOML_ARRAY, line, last->s, last->len, node_of(t)->depth + 1);
            if (!child)
                goto out;
            child->is_array_of_tables = true;
            if (!append_child(p, t, child)) {
                free_value(child);
                goto out;
            }
        } else if (!child->is_array_of_tables) {
            fail(p, line, "array of tables '%s': key is already %s", p->keyctx, describe_value(child));
            goto out;
        }
        elem = node_new(p, GPD_TOML_TABLE, line, NULL, 0, node_of(child)->depth + 1);
        if (!elem)
            goto out;
        elem->defined = true;
        if (!append_child(p, child, elem)) {
            free_value(elem);
            goto out;
        }
        result = elem;
    }
    if (!expect_line_end(p, true))
        result = NULL;
out:
    keypath_free(&kp);
    keyctx_reset(p, mark);
    return result;
}

/* ---- document -------------------------------------------------------- */

static gpd_toml_value *parse_document(struct parser *p)
{
    gpd_toml_value *root, *cur;

    root = node_new(p, GPD_TOML_TABLE, 1, NULL, 0, 0);
    if (!root)
        return NULL;
    root->defined = true;
    cur = root;
    /* Editors on some platforms prepend a byte-order mark. */
    if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;

    while (!p->failed) {
        int c;

        skip_ws(p);
        c = peek(p);
        if (c < 0)
            break;
        if (c == '#' || c == '\n' || c == '\r') {
            if (!expect_line_end(p, false))
                break;
        } else if (c == '[') {
            cur = parse_header(p, root);
            if (!cur)
                break;
        } else if (!parse_keyval(p, cur, true)) {
            break;
        }
    }
    if (p->failed) {
        free_value(root);
        return NULL;
    }
    return root;
}

gpd_toml_value *gpd_toml_parse(const char *text, size_t len, const char *filename, char *err, size_t errlen)
{
    struct parser p;
    gpd_toml_value *root = NULL;
    size_t bad;

    memset(&p, 0, sizeof p);
    p.s = text;
    p.len = len;
    p.line = 1;
    p.file = filename ? filename : "<input>";
    p.err = err;
    p.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';

    if (!text && len) {
        fail(&p, 1, "no input");
        goto out;
    }
    if (len > TOML_MAX_INPUT) {
        fail(&p, 1, "input larger than 16 MiB");
        goto out;
    }
    bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len) {
        fail(&p, line_at(text, bad), "invalid UTF-8");
        goto out;
    }
    root = parse_document(&p);
out:
    return root;
}

gpd_toml_value *gpd_toml_parse_file(const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL, *nb;
    size_t len = 0, cap = 0, got;
    gpd_toml_value *root = NULL;

    if (err && errlen)
        err[0] = '\0';
    f = fopen(path, "rb");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        if (len == cap) {
            /* Read one byte past the cap so an oversized file is noticed. */
            cap = cap ? cap * 2 : 64 * 1024;
            if (cap > TOML_MAX_INPUT + 1)
                cap = TOML_MAX_INPUT + 1;
            nb = realloc(buf, cap);
            if (!nb) {
                if (err && errlen)
                    snprintf(err, errlen, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len > TOML_MAX_INPUT) {
            if (err && errlen)
                snprintf(err, errlen, "%s: file larger than 16 MiB", path);
            goto out;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    root = gpd_toml_parse(buf ? buf : "", len, path, err, errlen);
out:
    free(buf);
    if (f)
        fclose(f);
    return root;
}

void gpd_toml_free(gpd_toml_value *root)
{
    free_value(root);
}

gpd_toml_value *gpd_toml_get(const gpd_toml_value *t, const char *key)
{
    size_t i;

    if (!t || !key || t->type != GPD_TOML_TABLE)
        return NULL;
    for (i = 0; i < t->u.array.count; i++) {
        gpd_toml_value *c = t->u.array.items[i];
        if (c->key && strcmp(c->key, key) == 0)
            return c;
    }
    return NULL;
}

size_t gpd_toml_count(const gpd_toml_value *v)
{
    if (!v || (v->type != GPD_TOML_ARRAY && v->type != GPD_TOML_TABLE))
        return 0;
    return v->u.array.count;
}

gpd_toml_value *gpd_toml_at(const gpd_toml_value *v, size_t i)
{
    if (i >= gpd_toml_count(v))
        return NULL;
    return v->u.array.items[i];
}

const char *gpd_toml_type_name(enum gpd_toml_type t)
{
    switch (t) {
    case GPD_TOML_STRING:  return "string";
    case GPD_TOML_INTEGER: return "integer";
    case GPD_TOML_FLOAT:   return "float";
    case GPD_TOML_BOOL:    return "boolean";
    case GPD_TOML_ARRAY:   return "array";
    case GPD_TOML_TABLE:   return "table";
    }
    return "unknown";
}
