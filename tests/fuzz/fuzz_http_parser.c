/*
 * libFuzzer harness for the HTTP/1.1 head parsers and the chunked decoder.
 *
 * Beyond "no crash", it checks the properties the proxy relies on:
 *   - every span handed out lies inside the head it was parsed from;
 *   - the parsers never look past len (each call gets an exact-size heap
 *     copy, so ASan sees any over-read) nor past the head they report;
 *   - a prefix of the input yields INCOMPLETE or the very same verdict,
 *     which is what makes "re-call with more bytes" correct;
 *   - the chunked decoder reaches the same end, the same payload and the
 *     same verdict however the input is split across reads.
 * Any violation calls abort() so that libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define FUZZ_MAX_HEADERS 16
/* Inputs up to this size have every prefix checked; longer ones a sample. */
#define FUZZ_ALL_PREFIXES_UP_TO 192
#define FUZZ_PREFIX_SAMPLES 48

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_http_parser: check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static char *copy_exact(const uint8_t *data, size_t len)
{
    char *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    if (len)
        memcpy(p, data, len);
    return p;
}

static void check_span(gpd_str s, const char *buf, size_t head_len)
{
    uintptr_t lo = (uintptr_t)buf, b = (uintptr_t)s.base;
    if (s.base == NULL) {
        CHECK(s.len == 0);
        return;
    }
    CHECK(b >= lo && b - lo <= head_len && s.len <= head_len - (b - lo));
}

static void check_headers(const gpd_http_header *h, size_t n, const char *buf, size_t head_len)
{
    CHECK(n <= FUZZ_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        check_span(h[i].name, buf, head_len);
        check_span(h[i].value, buf, head_len);
        CHECK(h[i].name.len > 0);
        if (h[i].value.len > 0) {
            char first = h[i].value.base[0], last = h[i].value.base[h[i].value.len - 1];
            CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t');
        }
    }
}

static void check_framing(const gpd_http_framing *f)
{
    CHECK(f->body >= GPD_HTTP_BODY_NONE && f->body <= GPD_HTTP_BODY_UNTIL_CLOSE);
    if (f->body == GPD_HTTP_BODY_LENGTH)
        CHECK(f->content_length <= GPD_HTTP_MAX_LENGTH);
    if (f->body == GPD_HTTP_BODY_UNTIL_CLOSE)
        CHECK(!f->keep_alive);
}

static int parse_request_copy(const uint8_t *data, size_t len, const char **why)
{
    gpd_http_header headers[FUZZ_MAX_HEADERS];
    gpd_http_request req;
    char *buf = copy_exact(data, len);
    *why = NULL;
    int rc = gpd_http_parse_request(buf, len, &req, headers, FUZZ_MAX_HEADERS, why);
    free(buf);
    return rc;
}

static int parse_response_copy(const uint8_t *data, size_t len, bool head, const char **why)
{
    gpd_http_header headers[FUZZ_MAX_HEADERS];
    gpd_http_response res;
    char *buf = copy_exact(data, len);
    *why = NULL;
    int rc = gpd_http_parse_response(buf, len, &res, headers, FUZZ_MAX_HEADERS, head, why);
    free(buf);
    return rc;
}

/* kind: 0 request, 1 response, 2 response to HEAD. */
static int parse_kind(int kind, const uint8_t *data, size_t len, const char **why)
{
    return kind == 0 ? parse_request_copy(data, len, why) : parse_response_copy(data, len, kind == 2, why);
}

/* A prefix must give INCOMPLETE or exactly the verdict of the whole. */
static void check_prefixes(int kind, const uint8_t *data, size_t size, int rc, const char *why)
{
    size_t limit = rc > 0 ? (size_t)rc : size;
    size_t step = limit <= FUZZ_ALL_PREFIXES_UP_TO ? 1 : limit / FUZZ_PREFIX_SAMPLES + 1;

    for (size_t k = 0; k < limit; k += step) {
        const char *w;
        int r = parse_kind(kind, data, k, &w);
        if (r == GPD_HTTP_INCOMPLETE)
            continue;
        CHECK(rc <= 0 && r == rc);
        if (r == GPD_HTTP_ERROR)
            CHECK(w == why);
    }
    if (limit > 0) {
        const char *w;
        int r = parse_kind(kind, data, limit - 1, &w);
        CHECK(r == GPD_HTTP_INCOMPLETE || (rc <= 0 && r == rc));
    }
    /* Bytes after the head must not change the verdict: re-parse the head alone. */
    if (rc > 0) {
        const char *w;
        CHECK(parse_kind(kind, data, (size_t)rc, &w) == rc);
    }
}

static void check_verdict(int rc, size_t size, const char *why)
{
    CHECK(rc == GPD_HTTP_INCOMPLETE || rc == GPD_HTTP_ERROR || rc == GPD_HTTP_TOO_MANY_HEADERS ||
          (rc > 0 && (size_t)rc <= size));
    if (rc == GPD_HTTP_ERROR)
        CHECK(why != NULL && why[0] != '\0');
    if (rc > 0)
        CHECK(rc >= 4);
}

struct chunked_outcome {
    enum gpd_chunked_result result; /* DONE, ERROR, or AGAIN when input ran out */
    size_t end;                     /* bytes of input used */
    uint64_t total;
    uint64_t hash; /* FNV-1a over the payload */
    const char *why;
};

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/*
 * Decode data[0..size) fed the way a reader would: the window starts with
 * first_piece bytes and grows by piece bytes each time the decoder asks for
 * more; consumed bytes leave it.
 */
static void run_chunked(const uint8_t *data, size_t size, size_t first_piece, size_t piece,
                        struct chunked_outcome *o)
{
    gpd_http_chunked d;
    size_t pos = 0, limit = first_piece < size ? first_piece : size;
    uint64_t sum = 0;
    size_t guard = 0;

    memset(o, 0, sizeof(*o));
    o->hash = 0xcbf29ce484222325ULL;
    gpd_http_chunked_init(&d);
    for (;;) {
        size_t avail = limit - pos, consumed = SIZE_MAX, off = SIZE_MAX, n = SIZE_MAX;
        const char *why = NULL;
        char *buf = copy_exact(data + pos, avail);
        enum gpd_chunked_result r = gpd_http_chunked_step(&d, buf, avail, &consumed, &off, &n, &why);

        CHECK(++guard <= 2 * size + 16);
        CHECK(consumed <= avail);
        if (r == GPD_CHUNKED_DATA) {
            CHECK(n > 0 && off <= consumed && n == consumed - off);
            o->hash = fnv1a(o->hash, buf + off, n);
            sum += n;
        } else {
            CHECK(n == 0);
        }
        free(buf);
        pos += consumed;
        if (r == GPD_CHUNKED_ERROR) {
            CHECK(why != NULL);
            o->why = why;
        }
        if (r == GPD_CHUNKED_DONE || r == GPD_CHUNKED_ERROR) {
            o->result = r;
            break;
        }
        CHECK(r == GPD_CHUNKED_DATA || r == GPD_CHUNKED_AGAIN);
        if (r == GPD_CHUNKED_AGAIN) {
            if (limit == size) {
                o->result = GPD_CHUNKED_AGAIN;
                break;
            }
            limit = size - limit > piece ? limit + piece : size;
        }
    }
    CHECK(sum == d.total);
    o->total = d.total;
    o->end = pos;
}

static void check_chunked(const uint8_t *data, size_t size)
{
    /* Split patterns: whole, byte by byte, small odd pieces, two halves. */
    static const size_t pieces[] = { 1, 2, 3, 5, 7, 16, 61 };
    struct chunked_outcome whole, other;

    run_chunked(data, size, size, size ? size : 1, &whole);
    if (whole.result == GPD_CHUNKED_DONE)
        CHECK(whole.end <= size && whole.total <= whole.end);
    if (whole.result == GPD_CHUNKED_AGAIN)
        CHECK(whole.end == size);

    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        if (pieces[i] >= size)
            break;
        run_chunked(data, size, pieces[i], pieces[i], &other);
        CHECK(other.result == whole.result);
        CHECK(other.total == whole.total && other.hash == whole.hash);
        CHECK(other.why == whole.why);
        if (whole.result == GPD_CHUNKED_DONE)
            CHECK(other.end == whole.end);
    }
    if (size > 2) {
        size_t splits[] = { size / 3, size / 2, size - 1 };
        for (size_t i = 0; i < 3; i++) {
            run_chunked(data, size, splits[i], size, &other);
            CHECK(other.result == whole.result);
            CHECK(other.total == whole.total && other.hash == whole.hash);
            CHECK(other.why == whole.why);
            if (whole.result == GPD_CHUNKED_DONE)
                CHECK(other.end == whole.end);
        }
    }
}

static void fuzz_request(const uint8_t *data, size_t size)
{
    gpd_http_header headers[FUZZ_MAX_HEADERS];
    gpd_http_request req;
    const char *why = NULL;
    char *buf = copy_exact(data, size);
    int rc = gpd_http_parse_request(buf, size, &req, headers, FUZZ_MAX_HEADERS, &why);

    check_verdict(rc, size, why);
    if (rc > 0) {
        size_t head = (size_t)rc;
        CHECK(memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
        check_span(req.method, buf, head);
        check_span(req.target, buf, head);
        check_span(req.path, buf, head);
        check_span(req.query, buf, head);
        check_span(req.host, buf, head);
        CHECK(req.method.len > 0 && req.target.len > 0);
        CHECK(req.path.base == req.target.base && req.path.len <= req.target.len);
        CHECK(req.minor_version == 0 || req.minor_version == 1);
        CHECK(req.minor_version == 0 || req.host.base != NULL);
        CHECK(req.headers == headers);
        check_headers(headers, req.num_headers, buf, head);
        check_framing(&req.framing);
        CHECK(req.framing.body != GPD_HTTP_BODY_UNTIL_CLOSE);
        if (req.framing.body == GPD_HTTP_BODY_CHUNKED) {
            const gpd_http_header *te = gpd_http_find_header(headers, req.num_headers, "Transfer-Encoding");
            CHECK(te != NULL && gpd_http_value_has_token(te->value, "chunked"));
            CHECK(gpd_http_find_header(headers, req.num_headers, "Content-Length") == NULL);
        }
        if (req.framing.body == GPD_HTTP_BODY_NONE) {
            CHECK(gpd_http_find_header(headers, req.num_headers, "Content-Length") == NULL);
            CHECK(gpd_http_find_header(headers, req.num_headers, "Transfer-Encoding") == NULL);
        }
    }
    free(buf);
    check_prefixes(0, data, size, rc, why);
    if (rc > 0 && req.framing.body == GPD_HTTP_BODY_CHUNKED)
        check_chunked(data + rc, size - (size_t)rc);
}

static void fuzz_response(const uint8_t *data, size_t size, bool head_request)
{
    gpd_http_header headers[FUZZ_MAX_HEADERS];
    gpd_http_response res;
    const char *why = NULL;
    char *buf = copy_exact(data, size);
    int rc = gpd_http_parse_response(buf, size, &res, headers, FUZZ_MAX_HEADERS, head_request, &why);

    check_verdict(rc, size, why);
    if (rc > 0) {
        size_t head = (size_t)rc;
        CHECK(memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
        CHECK(res.status >= 100 && res.status <= 599);
        CHECK(res.minor_version == 0 || res.minor_version == 1);
        check_span(res.reason, buf, head);
        CHECK(res.headers == headers);
        check_headers(headers, res.num_headers, buf, head);
        check_framing(&res.framing);
        if (head_request || res.status < 200 || res.status == 204 || res.status == 304)
            CHECK(res.framing.body == GPD_HTTP_BODY_NONE);
        else
            CHECK(res.framing.body != GPD_HTTP_BODY_NONE);
        CHECK(gpd_http_reason(res.status) != NULL);
    }
    free(buf);
    check_prefixes(head_request ? 2 : 1, data, size, rc, why);
    if (rc > 0 && res.framing.body == GPD_HTTP_BODY_CHUNKED)
        check_chunked(data + rc, size - (size_t)rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_request(data, size);
    fuzz_response(data, size, false);
    fuzz_response(data, size, true);
    check_chunked(data, size);
    return 0;
}
