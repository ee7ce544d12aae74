#include "core/json_scan.h"

#include <stdint.h>

/*
 * The scanner is a loop over values with an explicit stack of container
 * kinds (one bit per level: object or array), so that nesting costs 32
 * bytes of state, not stack frames.
 */

enum { CT_OBJECT = 0, CT_ARRAY = 1 };

typedef struct scanner {
    const char *p, *end, *start;
    const char *why;
} scanner;

static void skip_ws(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Scan a string starting at the opening quote; on success p is past the
 * closing quote.  UTF-8 is checked for structure (no overlongs, no
 * surrogates), so that what is forwarded upstream is valid JSON text. */
static int scan_string(scanner *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c == '\\') {
            if (++s->p >= s->end)
                break;
            char e = *s->p;
            if (e == 'u') {
                if (s->end - s->p < 5) {
                    s->p = s->end;
                    break;
                }
                for (int i = 1; i <= 4; i++) {
                    if (hexval(s->p[i]) < 0) {
                        s->why = "invalid \\u escape in string";
                        return -1;
                    }
                }
                s->p += 5;
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') {
                s->why = "invalid escape in string";
                return -1;
            }
            s->p++;
            continue;
        }
        if (c < 0x20) {
            s->why = "control character in string";
            return -1;
        }
        if (c < 0x80) {
            s->p++;
            continue;
        }
        /* multi-byte UTF-8 */
        int need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, cp = c & 0x07;
        else {
            s->why = "invalid UTF-8 in string";
            return -1;
        }
        if (s->end - s->p <= need) {
            s->p = s->end;
            break;
        }
        for (int i = 1; i <= need; i++) {
            unsigned char cc = (unsigned char)s->p[i];
            if ((cc & 0xc0) != 0x80) {
                s->why = "invalid UTF-8 in string";
                return -1;
            }
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
            s->why = "invalid UTF-8 in string";
            return -1;
        }
        s->p += need + 1;
    }
    s->why = "unterminated string";
    return -1;
}

static int scan_number(scanner *s)
{
    const char *p = s->p;
    if (p < s->end && *p == '-')
        p++;
    if (p >= s->end)
        goto bad;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    } else {
        goto bad;
    }
    if (p < s->end && *p == '.') {
        p++;
        if (p >= s->end || *p < '0' || *p > '9')
            goto bad;
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < s->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= s->end || *p < '0' || *p > '9')
            goto bad;
        while (p < s->end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return 0;
bad:
    s->why = "invalid number";
    return -1;
}

static int scan_literal(scanner *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        s->why = "invalid literal";
        return -1;
    }
    s->p += n;
    return 0;
}

/* Scan one scalar value (string, number, literal); containers are handled by the caller's loop. */
static int scan_scalar(scanner *s)
{
    switch (*s->p) {
    case '"':
        return scan_string(s);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
            return scan_number(s);
        s->why = "unexpected character";
        return -1;
    }
}

int gpd_json_scan_object(const char *buf, size_t len, gpd_json_field *fields, size_t nfields, const char **why,
                         size_t *err_off)
{
    scanner s = { buf, buf + len, buf, NULL };
    uint64_t kinds[GPD_JSON_MAX_DEPTH / 64] = { 0 };
    int depth = 0;
    gpd_json_field *pending = NULL; /* top-level member whose value comes next */
    const char *value_start = NULL;

    for (size_t i = 0; i < nfields; i++)
        fields[i].found = false, fields[i].value = GPD_STR_NULL;

    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') {
        s.why = s.p >= s.end ? "empty body" : "body is not a JSON object";
        goto fail;
    }
    s.p++;
    depth = 1;
    kinds[0] = 0; /* CT_OBJECT at level 0 */

    /* State: we are inside a container, right after its opening bracket or a comma. */
    bool first = true;
    while (depth > 0) {
        int kind = (int)((kinds[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1);
        skip_ws(&s);
        if (s.p >= s.end) {
            s.why = "unexpected end of JSON";
            goto fail;
        }
        char close = kind == CT_OBJECT ? '}' : ']';
        if (*s.p == close) {
            if (!first) {
                s.why = "trailing comma";
                goto fail;
            }
            s.p++;
            goto after_value;
        }
        if (kind == CT_OBJECT) {
            if (*s.p != '"') {
                s.why = "expected a member name";
                goto fail;
            }
            const char *key_start = s.p + 1;
            if (scan_string(&s) != 0)
                goto fail;
            size_t key_len = (size_t)(s.p - 1 - key_start);
            if (depth == 1) {
                pending = NULL;
                for (size_t i = 0; i < nfields; i++) {
                    if (strlen(fields[i].key) == key_len && memcmp(fields[i].key, key_start, key_len) == 0)
                        pending = &fields[i];
                }
            }
            skip_ws(&s);
            if (s.p >= s.end || *s.p != ':') {
                s.why = "expected ':' after member name";
                goto fail;
            }
            s.p++;
            skip_ws(&s);
            if (s.p >= s.end) {
                s.why = "unexpected end of JSON";
                goto fail;
            }
        }
        /* A value. */
        if (depth == 1)
            value_start = s.p;
        if (*s.p == '{' || *s.p == '[') {
            if (depth >= GPD_JSON_MAX_DEPTH) {
                s.why = "JSON nested too deeply";
                goto fail;
            }
            uint64_t bit = (uint64_t)1 << (depth % 64);
            if (*s.p == '[')
                kinds[depth / 64] |= bit;
            else
                kinds[depth / 64] &= ~bit;
            depth++;
            s.p++;
            first = true;
            continue;
        }
        if (scan_scalar(&s) != 0)
            goto fail;
        if (depth == 1 && pending) {
            pending->found = true;
            pending->value = gpd_str_make(value_start, (size_t)(s.p - value_start));
            pending = NULL;
        }
        goto separator;

    after_value:
        /* A container just closed at s.p; depth still counts it. */
        depth--;
        if (depth == 1 && pending) {
            pending->found = true;
            pending->value = gpd_str_make(value_start, (size_t)(s.p - value_start));
            pending = NULL;
        }
        if (depth == 0)
            break;
    separator:
        skip_ws(&s);
        if (s.p >= s.end) {
            s.why = "unexpected end of JSON";
            goto fail;
        }
        kind = (int)((kinds[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1);
        if (*s.p == ',') {
            s.p++;
            first = false;
            continue;
        }
        if (*s.p == (kind == CT_OBJECT ? '}' : ']')) {
            s.p++;
            goto after_value;
        }
        s.why = kind == CT_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
    skip_ws(&s);
    if (s.p != s.end) {
        s.why = "trailing characters after JSON object";
        goto fail;
    }
    return 0;
fail:
    if (why)
        *why = s.why ? s.why : "invalid JSON";
    if (err_off)
        *err_off = (size_t)(s.p - s.start);
    return -1;
}

long gpd_json_string_decode(gpd_str raw, char *out, size_t outlen)
{
    if (raw.len < 2 || raw.base[0] != '"' || raw.base[raw.len - 1] != '"' || outlen == 0)
        return -1;
    size_t o = 0;
    for (size_t i = 1; i + 1 < raw.len; i++) {
        char c = raw.base[i];
        if (c == '\\' && i + 2 < raw.len) {
            char e = raw.base[++i];
            switch (e) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                if (i + 4 >= raw.len)
                    return -1;
                uint32_t cp = 0;
                for (int k = 1; k <= 4; k++) {
                    int h = hexval(raw.base[i + k]);
                    if (h < 0)
                        return -1;
                    cp = (cp << 4) | (uint32_t)h;
                }
                i += 4;
                /* Model names are ASCII in practice; encode BMP code points as UTF-8. */
                char enc[3];
                size_t n;
                if (cp < 0x80)
                    enc[0] = (char)cp, n = 1;
                else if (cp < 0x800)
                    enc[0] = (char)(0xc0 | (cp >> 6)), enc[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
                else
                    enc[0] = (char)(0xe0 | (cp >> 12)), enc[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
                    enc[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
                if (o + n >= outlen)
                    return -1;
                memcpy(out + o, enc, n);
                o += n;
                continue;
            }
            default: c = e; break;
            }
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}
