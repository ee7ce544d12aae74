/*
 * Strict, zero-copy HTTP/1.1 message-head parser and chunked-body decoder.
 *
 * The head parsers are stateless and make one forward pass: each decision
 * depends only on bytes already seen, so a prefix of a message yields
 * either INCOMPLETE or the very same verdict the whole message yields.
 * That property lets the caller simply re-call with a grown buffer, and the
 * fuzz harness checks it.  Errors are reported as soon as the offending
 * line is complete, so a smuggling attempt is refused without waiting for
 * the rest of the head.
 */
#include "http/parser.h"

#include <limits.h>
#include <string.h>

/* Character classes, one lookup per byte on the hot path. */
enum {
    CC_TCHAR = 1,  /* token character (RFC 9110 5.6.2) */
    CC_VALUE = 2,  /* field-vchar, SP, HTAB, obs-text: what a field value may hold */
    CC_TARGET = 4, /* VCHAR: request-target bytes (no SP, no CTL, no obs-text) */
    CC_QDTEXT = 8, /* quoted-string body bytes other than '"' and '\\' */
};

static const uint8_t char_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  10, 0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    10, 15, 6,  15, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 14, /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 14, 14, 14, 14, /* 0x30 */
    14, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 15, 15, /* 0x50 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 15, 14, 15, 0,  /* 0x70 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0x80 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0x90 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xa0 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xb0 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xc0 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xd0 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xe0 */
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, /* 0xf0 */
};

#define IS_CLASS(c, cls) ((char_class[(uint8_t)(c)] & (cls)) != 0)

/*
 * First byte at or after p that is not in cls, or end.  Unrolled by eight
 * because this loop is where a head parse spends its time: the per-byte
 * bound check goes, and the loads of one block are independent.
 */
static inline const char *skip_class(const char *p, const char *end, uint8_t cls)
{
    while (end - p >= 8) {
        if (!IS_CLASS(p[0], cls))
            return p;
        if (!IS_CLASS(p[1], cls))
            return p + 1;
        if (!IS_CLASS(p[2], cls))
            return p + 2;
        if (!IS_CLASS(p[3], cls))
            return p + 3;
        if (!IS_CLASS(p[4], cls))
            return p + 4;
        if (!IS_CLASS(p[5], cls))
            return p + 5;
        if (!IS_CLASS(p[6], cls))
            return p + 6;
        if (!IS_CLASS(p[7], cls))
            return p + 7;
        p += 8;
    }
    while (p < end && IS_CLASS(*p, cls))
        p++;
    return p;
}

/* The empty lines tolerated before a request line (RFC 9112 2.2). */
#define MAX_LEADING_EMPTY_LINES 2
/* Content-Length digits: 19 decimal digits cannot overflow uint64_t. */
#define MAX_CONTENT_LENGTH_DIGITS 19
#define MAX_CHUNK_SIZE_DIGITS 15
#define MAX_CHUNK_LINE_BYTES 4096
#define MAX_TRAILER_BYTES (16 * 1024)

/* ASCII only: locale-dependent tolower() has no place in a protocol parser. */
static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool ascii_case_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

/* lower: a lowercase literal, so only the message side needs folding. */
static inline bool str_is(gpd_str s, const char *lower, size_t lower_len)
{
    if (s.len != lower_len)
        return false;
    for (size_t i = 0; i < lower_len; i++) {
        if (ascii_lower((unsigned char)s.base[i]) != (unsigned char)lower[i])
            return false;
    }
    return true;
}

#define STR_IS(s, lit) str_is((s), (lit), sizeof(lit) - 1)

/*
 * Next non-empty item of a comma-separated list, OWS trimmed (RFC 9110 5.6.1
 * lets senders emit empty items, and recipients must skip them).
 */
static bool list_next(const char **pp, const char *end, gpd_str *item)
{
    const char *p = *pp;
    bool found = false;

    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    if (p < end) {
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *stop = p;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        *item = gpd_str_make(start, (size_t)(stop - start));
        found = true;
    }
    *pp = p;
    return found;
}

/* What the headers said about framing, gathered while they are scanned. */
struct head_facts {
    bool is_request;
    int minor_version;
    bool have_content_length;
    bool have_transfer_encoding;
    bool have_host;
    bool conn_close;
    bool conn_keep_alive;
    bool conn_upgrade;
    bool expect_continue;
    uint64_t content_length;
    gpd_str host;
};

static bool parse_content_length(gpd_str v, uint64_t *out)
{
    uint64_t n = 0;

    if (v.len == 0 || v.len > MAX_CONTENT_LENGTH_DIGITS)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.base[i];
        if (c < '0' || c > '9')
            return false;
        n = n * 10 + (uint64_t)(c - '0');
    }
    *out = n;
    return true;
}

/*
 * Record one complete header line.  Framing conflicts are refused here, the
 * moment the second framing header arrives, rather than after the head.
 */
static const char *note_header(struct head_facts *f, gpd_str name, gpd_str value)
{
    const char *err = NULL;

    /* Switch on length first: most headers match none of these. */
    switch (name.len) {
    case 4:
        if (f->is_request && STR_IS(name, "host")) {
            if (f->have_host) {
                err = "duplicate Host header";
                break;
            }
            f->have_host = true;
            f->host = value;
        }
        break;
    case 6:
        if (f->is_request && STR_IS(name, "expect")) {
            /* RFC 9110 10.1.1: a 100-continue from an HTTP/1.0 client is ignored. */
            if (f->minor_version == 1 && STR_IS(value, "100-continue"))
                f->expect_continue = true;
        }
        break;
    case 10:
        if (STR_IS(name, "connection")) {
            const char *p = value.base, *end = value.base + value.len;
            gpd_str item;
            while (list_next(&p, end, &item)) {
                if (STR_IS(item, "close"))
                    f->conn_close = true;
                else if (STR_IS(item, "keep-alive"))
                    f->conn_keep_alive = true;
                else if (STR_IS(item, "upgrade"))
                    f->conn_upgrade = true;
            }
        }
        break;
    case 14:
        if (STR_IS(name, "content-length")) {
            uint64_t n;
            if (f->have_content_length) {
                /* Even equal values: one hop may merge them, the next may not. */
                err = "duplicate Content-Length";
            } else if (f->have_transfer_encoding) {
                err = "both Content-Length and Transfer-Encoding";
            } else if (!parse_content_length(value, &n)) {
                err = "invalid Content-Length";
            } else if (n > GPD_HTTP_MAX_LENGTH) {
                err = "invalid Content-Length: too large";
            } else {
                f->have_content_length = true;
                f->content_length = n;
            }
        }
        break;
    case 17:
        if (STR_IS(name, "transfer-encoding")) {
            if (f->have_transfer_encoding) {
                err = "duplicate Transfer-Encoding";
            } else if (f->have_content_length) {
                err = "both Content-Length and Transfer-Encoding";
            } else if (f->minor_version == 0) {
                /* RFC 9112 6.1: an HTTP/1.0 peer cannot mean chunked; the framing is faulty. */
                err = "Transfer-Encoding on an HTTP/1.0 message";
            } else if (!STR_IS(value, "chunked")) {
                /* Only plain chunked: any other coding would have to be decoded to find the end. */
                err = "unsupported Transfer-Encoding";
            } else {
                f->have_transfer_encoding = true;
            }
        }
        break;
    default:
        break;
    }
    return err;
}

/*
 * Header lines from *pp through the empty line that ends the head.
 * Returns 0 with *pp past the empty line, or a GPD_HTTP_* code (with *msg
 * set for GPD_HTTP_ERROR).
 */
static int parse_header_block(const char **pp, const char *end, gpd_http_header *headers, size_t max_headers,
                              size_t *num_headers, struct head_facts *facts, const char **msg)
{
    const char *p = *pp;
    size_t n = 0;
    int rc = 0;

    for (;;) {
        if (p == end)
            goto incomplete;
        if (*p == '\r') {
            if (p + 1 == end)
                goto incomplete;
            if (p[1] != '\n') {
                *msg = "bare CR in header section";
                goto error;
            }
            p += 2;
            break;
        }

        const char *name = p;
        p = skip_class(p, end, CC_TCHAR);
        if (p == end)
            goto incomplete;
        if (p == name || *p != ':') {
            if (p != name) {
                *msg = (*p == ' ' || *p == '\t') ? "whitespace before colon in header"
                                                 : "invalid character in header name";
            } else if (*p == ' ' || *p == '\t') {
                *msg = n > 0 ? "obs-fold in header" : "whitespace before first header";
            } else if (*p == '\n') {
                *msg = "bare LF in header section";
            } else {
                *msg = *p == ':' ? "empty header name" : "invalid character in header name";
            }
            goto error;
        }
        size_t name_len = (size_t)(p - name);
        p++;

        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *value = p;
        p = skip_class(p, end, CC_VALUE);
        if (p == end)
            goto incomplete;
        if (*p == '\r') {
            if (p + 1 == end)
                goto incomplete;
            if (p[1] != '\n') {
                *msg = "bare CR in header value";
                goto error;
            }
        } else {
            *msg = *p == '\n' ? "bare LF in header value" : "invalid character in header value";
            goto error;
        }
        const char *value_end = p;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        p += 2;

        if (n == max_headers) {
            rc = GPD_HTTP_TOO_MANY_HEADERS;
            goto out;
        }
        headers[n].name = gpd_str_make(name, name_len);
        headers[n].value = gpd_str_make(value, (size_t)(value_end - value));
        const char *err = note_header(facts, headers[n].name, headers[n].value);
        n++;
        if (err != NULL) {
            *msg = err;
            goto error;
        }
    }
    *pp = p;
    goto out;

incomplete:
    rc = GPD_HTTP_INCOMPLETE;
    goto out;
error:
    rc = GPD_HTTP_ERROR;
out:
    *num_headers = n;
    return rc;
}

/*
 * "HTTP/1.0" or "HTTP/1.1" at p.  Returns 8, or GPD_HTTP_INCOMPLETE, or
 * GPD_HTTP_ERROR with *msg set.  Mismatches in a partial version are
 * reported at once so that garbage is refused without waiting for more.
 */
static int parse_version(const char *p, const char *end, int *minor, const char **msg)
{
    static const char prefix[] = "HTTP/1.";
    size_t avail = (size_t)(end - p);

    for (size_t i = 0; i < sizeof(prefix) - 1 && i < avail; i++) {
        if (p[i] != prefix[i]) {
            *msg = i < 5 ? "invalid HTTP version" : "unsupported HTTP version";
            return GPD_HTTP_ERROR;
        }
    }
    if (avail < 8)
        return GPD_HTTP_INCOMPLETE;
    if (p[7] != '0' && p[7] != '1') {
        *msg = "unsupported HTTP version";
        return GPD_HTTP_ERROR;
    }
    *minor = p[7] - '0';
    return 8;
}

/* The CRLF that ends a start line; other_msg names anything but CR or LF. */
static int expect_crlf(const char *p, const char *end, const char *other_msg, const char **msg)
{
    if (p == end)
        return GPD_HTTP_INCOMPLETE;
    if (*p != '\r') {
        *msg = *p == '\n' ? "bare LF in start line" : other_msg;
        return GPD_HTTP_ERROR;
    }
    if (p + 1 == end)
        return GPD_HTTP_INCOMPLETE;
    if (p[1] != '\n') {
        *msg = "bare CR in start line";
        return GPD_HTTP_ERROR;
    }
    return 2;
}

static bool keep_alive_of(const struct head_facts *f)
{
    if (f->conn_close)
        return false;
    return f->minor_version == 1 || f->conn_keep_alive;
}

int gpd_http_parse_request(const char *buf, size_t len, gpd_http_request *req, gpd_http_header *headers,
                           size_t max_headers, const char **why)
{
    const char *p = buf, *end = buf + len;
    const char *msg = NULL;
    struct head_facts facts = { .is_request = true };
    size_t num_headers = 0;
    int rc;

    req->headers = headers;
    req->num_headers = 0;
    if (len == 0) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }

    for (int empty = 0;; empty++) {
        if (p == end) {
            rc = GPD_HTTP_INCOMPLETE;
            goto out;
        }
        if (*p == '\n') {
            msg = "bare LF before request line";
            rc = GPD_HTTP_ERROR;
            goto out;
        }
        if (*p != '\r')
            break;
        if (empty == MAX_LEADING_EMPTY_LINES) {
            msg = "too many empty lines before request line";
            rc = GPD_HTTP_ERROR;
            goto out;
        }
        if (p + 1 == end) {
            rc = GPD_HTTP_INCOMPLETE;
            goto out;
        }
        if (p[1] != '\n') {
            msg = "bare CR before request line";
            rc = GPD_HTTP_ERROR;
            goto out;
        }
        p += 2;
    }

    const char *method = p;
    while (p < end && IS_CLASS(*p, CC_TCHAR))
        p++;
    if (p == end) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }
    if (p == method || *p != ' ') {
        msg = p == method ? "invalid request line: empty method" : "invalid request line: bad method";
        rc = GPD_HTTP_ERROR;
        goto out;
    }
    req->method = gpd_str_make(method, (size_t)(p - method));
    p++;

    const char *target = p;
    p = skip_class(p, end, CC_TARGET);
    if (p == end) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }
    if (p == target || *p != ' ') {
        if (p == target)
            msg = "invalid request line: empty request-target";
        else if (*p == '\r' || *p == '\n')
            msg = "invalid request line: no HTTP version";
        else
            msg = "invalid request line: bad character in request-target";
        rc = GPD_HTTP_ERROR;
        goto out;
    }
    req->target = gpd_str_make(target, (size_t)(p - target));
    const char *question = memchr(target, '?', (size_t)(p - target));
    if (question != NULL) {
        req->path = gpd_str_make(target, (size_t)(question - target));
        req->query = gpd_str_make(question + 1, (size_t)(p - question - 1));
    } else {
        req->path = req->target;
        req->query = gpd_str_make(p, 0);
    }
    p++;

    rc = parse_version(p, end, &facts.minor_version, &msg);
    if (rc < 0)
        goto out;
    p += rc;
    rc = expect_crlf(p, end, "invalid request line: junk after HTTP version", &msg);
    if (rc < 0)
        goto out;
    p += rc;

    rc = parse_header_block(&p, end, headers, max_headers, &num_headers, &facts, &msg);
    req->num_headers = num_headers;
    if (rc < 0)
        goto out;

    if (facts.minor_version == 1 && !facts.have_host) {
        msg = "missing Host header";
        rc = GPD_HTTP_ERROR;
        goto out;
    }
    if (p - buf > INT_MAX) {
        msg = "request head too large";
        rc = GPD_HTTP_ERROR;
        goto out;
    }

    req->minor_version = facts.minor_version;
    req->host = facts.host;
    req->framing = (gpd_http_framing){ 0 };
    if (facts.have_transfer_encoding) {
        req->framing.body = GPD_HTTP_BODY_CHUNKED;
    } else if (facts.have_content_length) {
        req->framing.body = GPD_HTTP_BODY_LENGTH;
        req->framing.content_length = facts.content_length;
    } else {
        /* RFC 9112 6.3: a request without framing headers has no body. */
        req->framing.body = GPD_HTTP_BODY_NONE;
    }
    req->framing.keep_alive = keep_alive_of(&facts);
    req->framing.expect_continue = facts.expect_continue;
    req->framing.upgrade = facts.conn_upgrade;
    rc = (int)(p - buf);

out:
    if (rc == GPD_HTTP_ERROR && why != NULL)
        *why = msg;
    return rc;
}

int gpd_http_parse_response(const char *buf, size_t len, gpd_http_response *res, gpd_http_header *headers,
                            size_t max_headers, bool request_was_head, const char **why)
{
    const char *p = buf, *end = buf + len;
    const char *msg = NULL;
    struct head_facts facts = { .is_request = false };
    size_t num_headers = 0;
    int rc;

    res->headers = headers;
    res->num_headers = 0;
    if (len == 0) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }

    rc = parse_version(p, end, &facts.minor_version, &msg);
    if (rc < 0)
        goto out;
    p += rc;
    if (p == end) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }
    if (*p != ' ') {
        msg = "invalid status line";
        rc = GPD_HTTP_ERROR;
        goto out;
    }
    p++;

    int status = 0;
    for (int i = 0; i < 3; i++, p++) {
        if (p == end) {
            rc = GPD_HTTP_INCOMPLETE;
            goto out;
        }
        if (*p < '0' || *p > '9' || (i == 0 && (*p < '1' || *p > '5'))) {
            msg = "invalid status code";
            rc = GPD_HTTP_ERROR;
            goto out;
        }
        status = status * 10 + (*p - '0');
    }
    if (p == end) {
        rc = GPD_HTTP_INCOMPLETE;
        goto out;
    }
    /* Both "200\r\n" and "200 \r\n" are seen in the wild and unambiguous. */
    const char *reason = p;
    if (*p == ' ') {
        p++;
        reason = p;
        while (p < end && IS_CLASS(*p, CC_VALUE))
            p++;
    }
    const char *reason_end = p;
    rc = expect_crlf(p, end, "invalid status line", &msg);
    if (rc < 0)
        goto out;
    p += rc;

    rc = parse_header_block(&p, end, headers, max_headers, &num_headers, &facts, &msg);
    res->num_headers = num_headers;
    if (rc < 0)
        goto out;
    if (p - buf > INT_MAX) {
        msg = "response head too large";
        rc = GPD_HTTP_ERROR;
        goto out;
    }

    res->status = status;
    res->reason = gpd_str_make(reason, (size_t)(reason_end - reason));
    res->minor_version = facts.minor_version;
    res->framing = (gpd_http_framing){ 0 };
    res->framing.keep_alive = keep_alive_of(&facts);
    res->framing.upgrade = facts.conn_upgrade;
    /* RFC 9112 6.3 items 1 and 2: these never have a body, whatever the headers say. */
    if (status < 200 || status == 204 || status == 304 || request_was_head) {
        res->framing.body = GPD_HTTP_BODY_NONE;
    } else if (facts.have_transfer_encoding) {
        res->framing.body = GPD_HTTP_BODY_CHUNKED;
    } else if (facts.have_content_length) {
        res->framing.body = GPD_HTTP_BODY_LENGTH;
        res->framing.content_length = facts.content_length;
    } else {
        /* The close is the only end marker, so the connection cannot be reused. */
        res->framing.body = GPD_HTTP_BODY_UNTIL_CLOSE;
        res->framing.keep_alive = false;
    }
    rc = (int)(p - buf);

out:
    if (rc == GPD_HTTP_ERROR && why != NULL)
        *why = msg;
    return rc;
}

const gpd_http_header *gpd_http_find_header(const gpd_http_header *headers, size_t n, const char *name)
{
    const gpd_http_header *found = NULL;
    size_t name_len;

    if (name == NULL)
        return NULL;
    name_len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (headers[i].name.len == name_len && ascii_case_eq(headers[i].name.base, name, name_len)) {
            found = &headers[i];
            break;
        }
    }
    return found;
}

bool gpd_http_value_has_token(gpd_str value, const char *token)
{
    const char *p = value.base, *end = value.base + value.len;
    size_t token_len;
    gpd_str item;

    if (token == NULL || value.base == NULL)
        return false;
    token_len = strlen(token);
    if (token_len == 0)
        return false;
    while (list_next(&p, end, &item)) {
        if (item.len == token_len && ascii_case_eq(item.base, token, token_len))
            return true;
    }
    return false;
}

/*
 * Chunked decoder states.  The size-line states come first and the trailer
 * states after them so that a range test picks the right byte budget.
 */
enum chunked_state {
    CS_SIZE = 0,         /* hex digits; line_bytes counts them (0 = zeroed struct works) */
    CS_EXT_NAME_FIRST,   /* after ';' */
    CS_EXT_NAME,         /* inside an extension name */
    CS_EXT_VALUE_FIRST,  /* after '=' */
    CS_EXT_TOKEN,        /* inside a token value */
    CS_EXT_QUOTED,       /* inside a quoted-string value */
    CS_EXT_QUOTED_PAIR,  /* after a backslash in a quoted-string */
    CS_EXT_AFTER_QUOTED, /* after the closing quote */
    CS_SIZE_LF,          /* after the CR of the size line */
    CS_DATA,             /* remaining payload bytes of the chunk */
    CS_DATA_CR,          /* the CR after the chunk data */
    CS_DATA_LF,          /* the LF after the chunk data */
    CS_TRAILER_START,    /* start of a trailer line or the final CRLF */
    CS_TRAILER_NAME,     /* inside a trailer field name */
    CS_TRAILER_VALUE,    /* inside a trailer field value */
    CS_TRAILER_LF,       /* the LF ending a trailer line */
    CS_FINAL_LF,         /* the LF ending the message */
    CS_DONE,
    CS_FAILED,
};

void gpd_http_chunked_init(gpd_http_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CS_SIZE;
}

static inline int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* After the chunk-size: ';' starts an extension, CR ends the line. */
static const char *size_line_separator(gpd_http_chunked *d, unsigned char c)
{
    const char *err = NULL;

    if (c == ';')
        d->state = CS_EXT_NAME_FIRST;
    else if (c == '\r')
        d->state = CS_SIZE_LF;
    else if (c == '\n')
        err = "bare LF in chunk-size line";
    else
        err = "invalid chunk extension";
    return err;
}

enum gpd_chunked_result gpd_http_chunked_step(gpd_http_chunked *d, const char *buf, size_t len, size_t *consumed,
                                              size_t *data_off, size_t *data_len, const char **why)
{
    enum gpd_chunked_result result = GPD_CHUNKED_AGAIN;
    const char *err = NULL;
    size_t i = 0;

    *consumed = 0;
    *data_off = 0;
    *data_len = 0;
    if (d->state == CS_DONE) {
        result = GPD_CHUNKED_DONE;
        goto out;
    }
    if (d->state == CS_FAILED) {
        err = "chunked body already failed";
        goto out;
    }

    while (i < len) {
        if (d->state == CS_DATA) {
            /* The payload is handed out in place; never as an empty span. */
            size_t avail = len - i;
            size_t n = d->remaining < avail ? (size_t)d->remaining : avail;
            d->remaining -= n;
            d->total += n;
            if (d->remaining == 0)
                d->state = CS_DATA_CR;
            *data_off = i;
            *data_len = n;
            i += n;
            result = GPD_CHUNKED_DATA;
            goto out;
        }

        unsigned char c = (unsigned char)buf[i];
        if (d->state <= CS_SIZE_LF) {
            if (++d->line_bytes > MAX_CHUNK_LINE_BYTES) {
                err = "chunk-size line too long";
                goto out;
            }
        } else if (d->state >= CS_TRAILER_START) {
            if (++d->trailer_bytes > MAX_TRAILER_BYTES) {
                err = "trailers too large";
                goto out;
            }
        }

        switch (d->state) {
        case CS_SIZE: {
            int v = hex_value(c);
            if (v >= 0) {
                /* line_bytes counts this digit already: the size line is digits so far. */
                if (d->line_bytes > MAX_CHUNK_SIZE_DIGITS) {
                    err = "chunk size has too many digits";
                    break;
                }
                d->remaining = d->remaining * 16 + (uint64_t)v;
                if (d->remaining > GPD_HTTP_MAX_LENGTH)
                    err = "chunk size too large";
            } else if (d->line_bytes == 1) {
                err = c == '\n' ? "bare LF in chunk-size line" : "invalid chunk size";
            } else if (c == ';' || c == '\r' || c == '\n') {
                err = size_line_separator(d, c);
            } else {
                err = "invalid chunk size";
            }
            break;
        }
        case CS_EXT_NAME_FIRST:
            if (IS_CLASS(c, CC_TCHAR))
                d->state = CS_EXT_NAME;
            else
                err = "invalid chunk extension";
            break;
        case CS_EXT_NAME:
            if (c == '=')
                d->state = CS_EXT_VALUE_FIRST;
            else if (!IS_CLASS(c, CC_TCHAR))
                err = size_line_separator(d, c);
            break;
        case CS_EXT_VALUE_FIRST:
            if (c == '"')
                d->state = CS_EXT_QUOTED;
            else if (IS_CLASS(c, CC_TCHAR))
                d->state = CS_EXT_TOKEN;
            else
                err = "invalid chunk extension";
            break;
        case CS_EXT_TOKEN:
            if (!IS_CLASS(c, CC_TCHAR))
                err = size_line_separator(d, c);
            break;
        case CS_EXT_QUOTED:
            if (c == '"')
                d->state = CS_EXT_AFTER_QUOTED;
            else if (c == '\\')
                d->state = CS_EXT_QUOTED_PAIR;
            else if (!IS_CLASS(c, CC_QDTEXT))
                err = "invalid chunk extension";
            break;
        case CS_EXT_QUOTED_PAIR:
            if (IS_CLASS(c, CC_VALUE))
                d->state = CS_EXT_QUOTED;
            else
                err = "invalid chunk extension";
            break;
        case CS_EXT_AFTER_QUOTED:
            err = size_line_separator(d, c);
            break;
        case CS_SIZE_LF:
            if (c != '\n') {
                err = "bare CR in chunk-size line";
                break;
            }
            d->line_bytes = 0;
            if (d->remaining == 0) {
                d->state = CS_TRAILER_START;
                d->trailer_bytes = 0;
            } else {
                d->state = CS_DATA;
            }
            break;
        case CS_DATA_CR:
            if (c == '\r')
                d->state = CS_DATA_LF;
            else
                err = "bad chunk terminator";
            break;
        case CS_DATA_LF:
            if (c == '\n') {
                d->state = CS_SIZE;
                d->remaining = 0;
                d->line_bytes = 0;
            } else {
                err = "bad chunk terminator";
            }
            break;
        case CS_TRAILER_START:
            if (c == '\r')
                d->state = CS_FINAL_LF;
            else if (IS_CLASS(c, CC_TCHAR))
                d->state = CS_TRAILER_NAME;
            else if (c == '\n')
                err = "bare LF in trailer section";
            else if (c == ' ' || c == '\t')
                err = "obs-fold in trailer";
            else
                err = "invalid character in trailer name";
            break;
        case CS_TRAILER_NAME:
            if (c == ':')
                d->state = CS_TRAILER_VALUE;
            else if (!IS_CLASS(c, CC_TCHAR))
                err = (c == ' ' || c == '\t') ? "whitespace before colon in trailer"
                                              : "invalid character in trailer name";
            break;
        case CS_TRAILER_VALUE:
            if (c == '\r')
                d->state = CS_TRAILER_LF;
            else if (c == '\n')
                err = "bare LF in trailer value";
            else if (!IS_CLASS(c, CC_VALUE))
                err = "invalid character in trailer value";
            break;
        case CS_TRAILER_LF:
            if (c == '\n')
                d->state = CS_TRAILER_START;
            else
                err = "bare CR in trailer section";
            break;
        case CS_FINAL_LF:
            if (c != '\n') {
                err = "bare CR in trailer section";
                break;
            }
            d->state = CS_DONE;
            i++;
            result = GPD_CHUNKED_DONE;
            goto out;
        default:
            err = "chunked decoder in an impossible state";
            break;
        }
        if (err != NULL)
            goto out;
        i++;
    }

out:
    if (err != NULL) {
        /* Sticky: the bytes after a framing error have no defined meaning. */
        d->state = CS_FAILED;
        result = GPD_CHUNKED_ERROR;
        if (why != NULL)
            *why = err;
    }
    *consumed = i;
    return result;
}

const char *gpd_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}
