/*
 * Unit tests for the strict HTTP/1.1 parser and the chunked decoder.
 * Every refusal is checked twice: on the return code and on the reason,
 * so a refusal for the wrong cause does not pass unnoticed.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define MAX_HDRS 32

static gpd_http_header hdrs[MAX_HDRS];

#define assert_str(s, lit)                                                                                   \
    cr_assert(gpd_str_eq_cstr((s), (lit)), "got \"%.*s\", expected \"%s\"", GPD_STR_FMT(s), (lit))

#define assert_refused(rc, why, sub)                                                                         \
    do {                                                                                                     \
        cr_assert_eq((rc), GPD_HTTP_ERROR, "rc=%d, expected GPD_HTTP_ERROR", (rc));                         \
        cr_assert_not_null((why));                                                                           \
        cr_assert(strstr((why), (sub)) != NULL, "why=\"%s\", expected it to contain \"%s\"", (why), (sub)); \
    } while (0)

static void rebase(gpd_str *x, const char *copy, const char *s)
{
    if (x->base != NULL)
        x->base = s + (x->base - copy);
}

/* The buffer is an exact-size heap copy so that ASan sees any read past len. */
static int parse_req_n(const char *s, size_t len, gpd_http_request *req, size_t max, const char **why)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    int rc = gpd_http_parse_request(copy, len, req, hdrs, max, why);
    /* Spans must point into the caller's buffer: move them onto s before freeing. */
    if (rc > 0) {
        rebase(&req->method, copy, s);
        rebase(&req->target, copy, s);
        rebase(&req->path, copy, s);
        rebase(&req->query, copy, s);
        rebase(&req->host, copy, s);
        for (size_t i = 0; i < req->num_headers; i++) {
            rebase(&hdrs[i].name, copy, s);
            rebase(&hdrs[i].value, copy, s);
        }
    }
    free(copy);
    return rc;
}

static int parse_req(const char *s, gpd_http_request *req, const char **why)
{
    return parse_req_n(s, strlen(s), req, MAX_HDRS, why);
}

static int parse_res_n(const char *s, size_t len, gpd_http_response *res, bool head, const char **why)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    int rc = gpd_http_parse_response(copy, len, res, hdrs, MAX_HDRS, head, why);
    if (rc > 0) {
        rebase(&res->reason, copy, s);
        for (size_t i = 0; i < res->num_headers; i++) {
            rebase(&hdrs[i].name, copy, s);
            rebase(&hdrs[i].value, copy, s);
        }
    }
    free(copy);
    return rc;
}

static int parse_res(const char *s, gpd_http_response *res, bool head, const char **why)
{
    return parse_res_n(s, strlen(s), res, head, why);
}

/* Refusal of a request head; each framing test names only its cause. */
static void refuse_req(const char *s, const char *sub)
{
    gpd_http_request req;
    const char *why = NULL;
    int rc = parse_req(s, &req, &why);
    assert_refused(rc, why, sub);
}

static void refuse_res(const char *s, const char *sub)
{
    gpd_http_response res;
    const char *why = NULL;
    int rc = parse_res(s, &res, false, &why);
    assert_refused(rc, why, sub);
}

/* ---------------------------------------------------------------- requests */

Test(http_request, simple_get)
{
    const char *s = "GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\n\r\n";
    gpd_http_request req;
    const char *why = NULL;
    int rc = gpd_http_parse_request(s, strlen(s), &req, hdrs, MAX_HDRS, &why);
    cr_assert_eq(rc, (int)strlen(s));
    assert_str(req.method, "GET");
    assert_str(req.target, "/v1/models");
    assert_str(req.path, "/v1/models");
    cr_assert_eq(req.query.len, 0);
    cr_assert_eq(req.minor_version, 1);
    cr_assert_eq(req.num_headers, 2);
    cr_assert_eq(req.headers, hdrs);
    assert_str(hdrs[0].name, "Host");
    assert_str(hdrs[0].value, "api.example.com");
    assert_str(hdrs[1].name, "User-Agent");
    assert_str(hdrs[1].value, "t");
    assert_str(req.host, "api.example.com");
    cr_assert_eq(req.host.base, hdrs[0].value.base, "host points into the buffer");
    cr_assert_eq(req.framing.body, GPD_HTTP_BODY_NONE);
    cr_assert(req.framing.keep_alive);
    cr_assert_not(req.framing.expect_continue);
    cr_assert_not(req.framing.upgrade);
    cr_assert_eq(req.method.base, s, "zero-copy: spans point into the buffer");
}

Test(http_request, path_and_query)
{
    gpd_http_request req;
    int rc = parse_req("GET /a/b?x=1&y=?2 HTTP/1.1\r\nHost: h\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    assert_str(req.target, "/a/b?x=1&y=?2");
    assert_str(req.path, "/a/b");
    assert_str(req.query, "x=1&y=?2");

    rc = parse_req("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    assert_str(req.path, "/a");
    assert_str(req.query, "");

    rc = parse_req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    assert_str(req.path, "*");

    rc = parse_req("GET http://h:80/p?q HTTP/1.1\r\nHost: h:80\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    assert_str(req.path, "http://h:80/p");
    assert_str(req.query, "q");
}

Test(http_request, post_content_length)
{
    const char *head = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                       "Content-Type: application/json\r\n\r\n";
    char buf[512];
    snprintf(buf, sizeof(buf), "%s{\"a\"}", head);
    gpd_http_request req;
    int rc = parse_req(buf, &req, NULL);
    cr_assert_eq(rc, (int)strlen(head));
    assert_str(req.method, "POST");
    cr_assert_eq(req.framing.body, GPD_HTTP_BODY_LENGTH);
    cr_assert_eq(req.framing.content_length, 5);
    cr_assert_eq(req.num_headers, 3);
}

Test(http_request, content_length_zero_and_limits)
{
    gpd_http_request req;
    int rc = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(req.framing.body, GPD_HTTP_BODY_LENGTH);
    cr_assert_eq(req.framing.content_length, 0);

    rc = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9007199254740992\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0, "2^53 is the largest accepted length");
    cr_assert_eq(req.framing.content_length, GPD_HTTP_MAX_LENGTH);

    rc = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000042\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0, "19 digits with leading zeros are fine");
    cr_assert_eq(req.framing.content_length, 42);
}

Test(http_request, post_chunked)
{
    gpd_http_request req;
    int rc = parse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD  \r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(req.framing.body, GPD_HTTP_BODY_CHUNKED);
}

Test(http_request, pipelined)
{
    const char *s = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                    "GET /b?z HTTP/1.1\r\nHost: h2\r\nConnection: close\r\n\r\n";
    gpd_http_request req;
    size_t len = strlen(s);
    int rc = gpd_http_parse_request(s, len, &req, hdrs, MAX_HDRS, NULL);
    cr_assert_gt(rc, 0);
    assert_str(req.path, "/a");
    cr_assert_eq(req.framing.content_length, 3);
    size_t off = (size_t)rc + 3;

    rc = gpd_http_parse_request(s + off, len - off, &req, hdrs, MAX_HDRS, NULL);
    cr_assert_eq((size_t)rc, len - off);
    assert_str(req.path, "/b");
    assert_str(req.query, "z");
    assert_str(req.host, "h2");
    cr_assert_not(req.framing.keep_alive);
    cr_assert_eq(req.framing.body, GPD_HTTP_BODY_NONE);
}

Test(http_request, incomplete_at_every_prefix)
{
    const char *s = "\r\nPOST /v1/x?y=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\n"
                    "X-Empty:\r\nX-Pad: \t a b \t\r\nConnection: keep-alive, Upgrade\r\n\r\n";
    size_t len = strlen(s);
    gpd_http_request req;
    for (size_t k = 0; k < len; k++) {
        const char *why = NULL;
        int rc = parse_req_n(s, k, &req, MAX_HDRS, &why);
        cr_assert_eq(rc, GPD_HTTP_INCOMPLETE, "prefix %zu: rc=%d why=%s", k, rc, why ? why : "-");
    }
    cr_assert_eq(parse_req_n(s, len, &req, MAX_HDRS, NULL), (int)len);
    cr_assert(req.framing.upgrade);
    cr_assert(req.framing.keep_alive);
}

Test(http_request, empty_buffer_incomplete)
{
    gpd_http_request req;
    cr_assert_eq(gpd_http_parse_request(NULL, 0, &req, hdrs, MAX_HDRS, NULL), GPD_HTTP_INCOMPLETE);
}

Test(http_request, leading_empty_lines)
{
    gpd_http_request req;
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    int rc = parse_req(s, &req, NULL);
    cr_assert_eq(rc, (int)strlen(s), "the skipped lines count in the head length");
    assert_str(req.method, "GET");
    refuse_req("\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "empty lines");
    refuse_req("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare LF");
    refuse_req("\r\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", "bare CR");
}

Test(http_request, value_trimming)
{
    gpd_http_request req;
    int rc = parse_req("GET / HTTP/1.1\r\nHost:h\r\nA:  \t spaced  value \t \r\nB:\r\nC: \t \r\n"
                       "D: \xc3\xa9t\xe9\r\n\r\n",
                       &req, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(req.num_headers, 5);
    assert_str(hdrs[0].value, "h");
    assert_str(hdrs[1].value, "spaced  value");
    assert_str(hdrs[2].value, "");
    assert_str(hdrs[3].value, "");
    assert_str(hdrs[4].value, "\xc3\xa9t\xe9");
}

Test(http_request, header_names_are_tokens)
{
    gpd_http_request req;
    int rc = parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", &req, NULL);
    cr_assert_gt(rc, 0);
    assert_str(hdrs[1].name, "X-!#$%&'*+-.^_`|~09azAZ");
}

Test(http_request, too_many_headers)
{
    gpd_http_request req;
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    cr_assert_eq(parse_req_n(s, strlen(s), &req, 3, NULL), GPD_HTTP_TOO_MANY_HEADERS);
    cr_assert_eq(parse_req_n(s, strlen(s), &req, 4, NULL), (int)strlen(s));
    cr_assert_eq(req.num_headers, 4);
    cr_assert_eq(parse_req_n(s, strlen(s), &req, 0, NULL), GPD_HTTP_TOO_MANY_HEADERS);
}

Test(http_request, http10_keep_alive_semantics)
{
    gpd_http_request req;
    cr_assert_gt(parse_req("GET / HTTP/1.0\r\n\r\n", &req, NULL), 0, "Host is optional on 1.0");
    cr_assert_eq(req.minor_version, 0);
    cr_assert_not(req.framing.keep_alive);
    cr_assert_null(req.host.base);

    cr_assert_gt(parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req, NULL), 0);
    cr_assert(req.framing.keep_alive);

    cr_assert_gt(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &req, NULL), 0);
    cr_assert_not(req.framing.keep_alive, "close wins");

    cr_assert_gt(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n", &req, NULL), 0);
    cr_assert_not(req.framing.keep_alive, "tokens match whole");
}

Test(http_request, http11_connection_tokens)
{
    gpd_http_request req;
    cr_assert_gt(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n", &req, NULL), 0);
    cr_assert_not(req.framing.keep_alive);

    cr_assert_gt(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, foo ,Upgrade\r\n"
                           "connection: close\r\n\r\n",
                           &req, NULL),
                 0);
    cr_assert(req.framing.upgrade);
    cr_assert_not(req.framing.keep_alive, "every Connection header counts");

    cr_assert_gt(parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", &req, NULL), 0);
    cr_assert(req.framing.keep_alive);
}

Test(http_request, expect_continue)
{
    gpd_http_request req;
    cr_assert_gt(parse_req("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
                           &req, NULL),
                 0);
    cr_assert(req.framing.expect_continue);

    cr_assert_gt(parse_req("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, foo\r\n\r\n", &req, NULL), 0);
    cr_assert_not(req.framing.expect_continue, "the value must be exactly 100-continue");

    cr_assert_gt(parse_req("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req, NULL), 0);
    cr_assert_not(req.framing.expect_continue, "ignored from HTTP/1.0 clients");
}

Test(http_request, host_required_on_11)
{
    refuse_req("GET / HTTP/1.1\r\nX: y\r\n\r\n", "missing Host header");
}

Test(http_request, duplicate_host)
{
    refuse_req("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "duplicate Host header");
}

Test(http_request, empty_host_allowed)
{
    gpd_http_request req;
    cr_assert_gt(parse_req("GET / HTTP/1.1\r\nHost:\r\n\r\n", &req, NULL), 0);
    cr_assert_not_null(req.host.base);
    cr_assert_eq(req.host.len, 0);
}

/* Framing refusals: each a request-smuggling vector somewhere. */

Test(http_framing, cl_and_te)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
               "both Content-Length and Transfer-Encoding");
}

Test(http_framing, te_and_cl)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
               "both Content-Length and Transfer-Encoding");
}

Test(http_framing, duplicate_cl_equal)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
               "duplicate Content-Length");
}

Test(http_framing, duplicate_cl_different)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\nCONTENT-LENGTH: 6\r\n\r\n",
               "duplicate Content-Length");
}

Test(http_framing, cl_negative)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_plus_sign)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_space_inside)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_comma_list)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_hex)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_empty)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", "invalid Content-Length");
}

Test(http_framing, cl_twenty_digits)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000005\r\n\r\n",
               "invalid Content-Length");
}

Test(http_framing, cl_overflow)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
               "invalid Content-Length");
}

Test(http_framing, cl_above_max)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9007199254740993\r\n\r\n", "invalid Content-Length");
}

Test(http_framing, te_gzip_chunked)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
               "unsupported Transfer-Encoding");
}

Test(http_framing, te_chunked_chunked)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
               "unsupported Transfer-Encoding");
}

Test(http_framing, te_identity)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", "unsupported Transfer-Encoding");
}

Test(http_framing, te_empty)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", "unsupported Transfer-Encoding");
}

Test(http_framing, te_chunked_prefix)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedx\r\n\r\n", "unsupported Transfer-Encoding");
}

Test(http_framing, te_quoted)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
               "unsupported Transfer-Encoding");
}

Test(http_framing, te_duplicate)
{
    refuse_req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
               "duplicate Transfer-Encoding");
}

Test(http_framing, te_on_http10_request)
{
    refuse_req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0");
}

Test(http_framing, refused_before_head_completes)
{
    /* A smuggling attempt is refused without waiting for the rest of the head. */
    gpd_http_request req;
    const char *why = NULL;
    int rc = parse_req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\nX-", &req, &why);
    assert_refused(rc, why, "duplicate Content-Length");
}

/* Head syntax refusals. */

Test(http_syntax, obs_fold)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n", "obs-fold");
}

Test(http_syntax, obs_fold_tab)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tfolded\r\n\r\n", "obs-fold");
}

Test(http_syntax, whitespace_before_first_header)
{
    refuse_req("GET / HTTP/1.1\r\n Host: h\r\n\r\n", "whitespace");
}

Test(http_syntax, bare_lf_in_request_line)
{
    refuse_req("GET / HTTP/1.1\nHost: h\r\n\r\n", "bare LF");
}

Test(http_syntax, bare_lf_after_header)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "bare LF");
}

Test(http_syntax, bare_lf_final)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\n\n", "bare LF");
}

Test(http_syntax, bare_cr_in_value)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", "bare CR");
}

Test(http_syntax, bare_cr_in_request_line)
{
    refuse_req("GET / HTTP/1.1\rX\r\nHost: h\r\n\r\n", "bare CR");
}

Test(http_syntax, bare_cr_final)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\n\rX", "bare CR");
}

Test(http_syntax, whitespace_before_colon)
{
    refuse_req("GET / HTTP/1.1\r\nHost : h\r\n\r\n", "whitespace before colon");
}

Test(http_syntax, invalid_header_name_char)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX(y): z\r\n\r\n", "invalid character in header name");
}

Test(http_syntax, header_without_colon)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", "invalid character in header name");
}

Test(http_syntax, empty_header_name)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", "empty header name");
}

Test(http_syntax, ctl_in_value)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", "invalid character in header value");
}

Test(http_syntax, del_in_value)
{
    refuse_req("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n", "invalid character in header value");
}

Test(http_syntax, nul_in_value)
{
    gpd_http_request req;
    const char *why = NULL;
    static const char s[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0z\r\n\r\n";
    int rc = parse_req_n(s, sizeof(s) - 1, &req, MAX_HDRS, &why);
    assert_refused(rc, why, "invalid character in header value");
}

Test(http_syntax, double_space_after_method)
{
    refuse_req("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request line");
}

Test(http_syntax, double_space_after_target)
{
    refuse_req("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", "invalid HTTP version");
}

Test(http_syntax, tab_separator)
{
    refuse_req("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request line");
}

Test(http_syntax, space_in_target)
{
    refuse_req("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", "invalid HTTP version");
}

Test(http_syntax, ctl_in_target)
{
    refuse_req("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", "request-target");
}

Test(http_syntax, obs_text_in_target)
{
    refuse_req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", "request-target");
}

Test(http_syntax, empty_method)
{
    refuse_req(" / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request line");
}

Test(http_syntax, bad_method_char)
{
    refuse_req("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid request line");
}

Test(http_syntax, http09_request)
{
    refuse_req("GET /\r\n\r\n", "invalid request line");
}

Test(http_syntax, lowercase_version)
{
    refuse_req("GET / http/1.1\r\nHost: h\r\n\r\n", "invalid HTTP version");
}

Test(http_syntax, http12)
{
    refuse_req("GET / HTTP/1.2\r\nHost: h\r\n\r\n", "unsupported HTTP version");
}

Test(http_syntax, http20)
{
    refuse_req("GET / HTTP/2.0\r\nHost: h\r\n\r\n", "unsupported HTTP version");
}

Test(http_syntax, junk_after_version)
{
    refuse_req("GET / HTTP/1.10\r\nHost: h\r\n\r\n", "invalid request line");
}

Test(http_syntax, version_refused_early)
{
    gpd_http_request req;
    const char *why = NULL;
    int rc = parse_req("GET / XTTP", &req, &why);
    assert_refused(rc, why, "invalid HTTP version");
}

/* --------------------------------------------------------------- responses */

Test(http_response, ok_with_length)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nhi";
    gpd_http_response res;
    int rc = parse_res(s, &res, false, NULL);
    cr_assert_eq(rc, (int)strlen(s) - 2);
    cr_assert_eq(res.status, 200);
    assert_str(res.reason, "OK");
    cr_assert_eq(res.minor_version, 1);
    cr_assert_eq(res.num_headers, 2);
    cr_assert_eq(res.headers, hdrs);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_LENGTH);
    cr_assert_eq(res.framing.content_length, 2);
    cr_assert(res.framing.keep_alive);
}

Test(http_response, chunked)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_CHUNKED);
    cr_assert(res.framing.keep_alive);
}

Test(http_response, no_content_ignores_length)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.status, 204);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    cr_assert(res.framing.keep_alive);
}

Test(http_response, not_modified)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    rc = parse_res("HTTP/1.1 304 Not Modified\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    cr_assert(res.framing.keep_alive, "no body, so no need to close");
}

Test(http_response, head_request)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", &res, true, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    cr_assert(res.framing.keep_alive);
    rc = parse_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &res, true, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
}

Test(http_response, informational_then_final)
{
    const char *s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    gpd_http_response res;
    int rc = parse_res(s, &res, false, NULL);
    cr_assert_eq(rc, 25);
    cr_assert_eq(res.status, 100);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    rc = gpd_http_parse_response(s + 25, strlen(s) - 25, &res, hdrs, MAX_HDRS, false, NULL);
    cr_assert_eq(rc, (int)strlen(s) - 25);
    cr_assert_eq(res.status, 201);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_LENGTH);
    cr_assert_eq(res.framing.content_length, 0);
}

Test(http_response, switching_protocols)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                       &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_NONE);
    cr_assert(res.framing.upgrade);
}

Test(http_response, until_close)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_UNTIL_CLOSE);
    cr_assert_not(res.framing.keep_alive);
}

Test(http_response, http10)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.minor_version, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_LENGTH);
    cr_assert_not(res.framing.keep_alive);

    rc = parse_res("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert(res.framing.keep_alive);

    rc = parse_res("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.framing.body, GPD_HTTP_BODY_UNTIL_CLOSE);
    cr_assert_not(res.framing.keep_alive, "until-close overrides keep-alive");
}

Test(http_response, http10_transfer_encoding)
{
    refuse_res("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0");
}

Test(http_response, empty_reason)
{
    gpd_http_response res;
    int rc = parse_res("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.reason.len, 0);
    rc = parse_res("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    cr_assert_eq(res.status, 404);
    cr_assert_eq(res.reason.len, 0);
    rc = parse_res("HTTP/1.1 500 Internal  Server\tError \xe9\r\n\r\n", &res, false, NULL);
    cr_assert_gt(rc, 0);
    assert_str(res.reason, "Internal  Server\tError \xe9");
}

Test(http_response, bad_status_codes)
{
    refuse_res("HTTP/1.1 600 Nope\r\n\r\n", "invalid status code");
    refuse_res("HTTP/1.1 099 Nope\r\n\r\n", "invalid status code");
    refuse_res("HTTP/1.1 20 OK\r\n\r\n", "invalid status code");
    refuse_res("HTTP/1.1 2x0 OK\r\n\r\n", "invalid status code");
    refuse_res("HTTP/1.1 2000 OK\r\n\r\n", "invalid status line");
    refuse_res("HTTP/1.1  200 OK\r\n\r\n", "invalid status code");
    refuse_res("HTTP/1.1\r\n\r\n", "invalid status line");
}

Test(http_response, bad_versions)
{
    refuse_res("HTTP/2 200 OK\r\n\r\n", "unsupported HTTP version");
    refuse_res("HTTP/1.2 200 OK\r\n\r\n", "unsupported HTTP version");
    refuse_res("ICY 200 OK\r\n\r\n", "invalid HTTP version");
}

Test(http_response, bad_reason)
{
    refuse_res("HTTP/1.1 200 O\x01K\r\n\r\n", "invalid status line");
    refuse_res("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF");
}

Test(http_response, framing_refusals)
{
    refuse_res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
               "both Content-Length and Transfer-Encoding");
    refuse_res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "duplicate Content-Length");
    refuse_res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding");
    refuse_res("HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n", "invalid Content-Length");
    refuse_res("HTTP/1.1 204 No Content\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
               "duplicate Content-Length");
    refuse_res("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "obs-fold");
}

Test(http_response, incomplete_at_every_prefix)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX:\r\n\r\n";
    size_t len = strlen(s);
    gpd_http_response res;
    for (size_t k = 0; k < len; k++) {
        const char *why = NULL;
        int rc = parse_res_n(s, k, &res, false, &why);
        cr_assert_eq(rc, GPD_HTTP_INCOMPLETE, "prefix %zu: rc=%d why=%s", k, rc, why ? why : "-");
    }
    cr_assert_eq(parse_res_n(s, len, &res, false, NULL), (int)len);
}

Test(http_response, host_not_required)
{
    gpd_http_response res;
    cr_assert_gt(parse_res("HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n", &res, false, NULL),
                 0);
}

/* ----------------------------------------------------------------- helpers */

Test(http_helpers, find_header)
{
    gpd_http_request req;
    cr_assert_gt(parse_req("GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: k1\r\nx-api-key: k2\r\n\r\n", &req, NULL), 0);
    const gpd_http_header *h = gpd_http_find_header(req.headers, req.num_headers, "x-API-key");
    cr_assert_not_null(h);
    assert_str(h->value, "k1");
    cr_assert_null(gpd_http_find_header(req.headers, req.num_headers, "X-Api-Ke"));
    cr_assert_null(gpd_http_find_header(req.headers, req.num_headers, "X-Api-Keys"));
    cr_assert_null(gpd_http_find_header(req.headers, 0, "Host"));
}

Test(http_helpers, value_has_token)
{
    cr_assert(gpd_http_value_has_token(GPD_STR_LIT("close"), "close"));
    cr_assert(gpd_http_value_has_token(GPD_STR_LIT("Keep-Alive, Upgrade"), "upgrade"));
    cr_assert(gpd_http_value_has_token(GPD_STR_LIT(" ,\tfoo\t, ,bar ,"), "BAR"));
    cr_assert(gpd_http_value_has_token(GPD_STR_LIT("a,b"), "a"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_LIT("closed"), "close"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_LIT("xclose"), "close"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_LIT("clo se"), "close"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_LIT(""), "close"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_NULL, "close"));
    cr_assert_not(gpd_http_value_has_token(GPD_STR_LIT("a,,b"), ""));
}

Test(http_helpers, reason)
{
    cr_assert_str_eq(gpd_http_reason(200), "OK");
    cr_assert_str_eq(gpd_http_reason(404), "Not Found");
    cr_assert_str_eq(gpd_http_reason(429), "Too Many Requests");
    cr_assert_str_eq(gpd_http_reason(502), "Bad Gateway");
    cr_assert_str_eq(gpd_http_reason(100), "Continue");
    static const int codes[] = { 100, 101, 200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 402, 403, 404,
                                 405, 408, 409, 411, 413, 414, 415, 422, 429, 431, 500, 501, 502, 503, 504 };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        cr_assert_str_neq(gpd_http_reason(codes[i]), "Unknown", "code %d", codes[i]);
    cr_assert_str_eq(gpd_http_reason(299), "Unknown");
    cr_assert_str_eq(gpd_http_reason(-1), "Unknown");
}

/* ----------------------------------------------------------------- chunked */

struct chunk_run {
    enum gpd_chunked_result last;
    size_t end;  /* input offset just past the message when DONE */
    uint64_t total;
    char out[65536];
    size_t out_len;
    const char *why;
};

/*
 * Feed s in pieces of at most piece bytes, as a reader would: unconsumed
 * bytes stay and the next piece is appended.  Each call sees an exact-size
 * heap copy so that ASan catches a read past len.
 */
static void run_chunked(const char *s, size_t len, size_t piece, struct chunk_run *r)
{
    gpd_http_chunked d;
    size_t pos = 0, limit = piece < len ? piece : len;

    memset(r, 0, sizeof(*r));
    gpd_http_chunked_init(&d);
    for (;;) {
        size_t avail = limit - pos, consumed = 99, off = 99, n = 99;
        char *copy = malloc(avail ? avail : 1);
        memcpy(copy, s + pos, avail);
        enum gpd_chunked_result res = gpd_http_chunked_step(&d, copy, avail, &consumed, &off, &n, &r->why);
        r->last = res;
        cr_assert_leq(consumed, avail);
        if (res == GPD_CHUNKED_DATA) {
            cr_assert_gt(n, 0, "DATA never comes with an empty span");
            cr_assert_eq(off + n, consumed, "payload is the tail of the consumed bytes");
            cr_assert_lt(r->out_len + n, sizeof(r->out) + 1);
            memcpy(r->out + r->out_len, copy + off, n);
            r->out_len += n;
        } else {
            cr_assert_eq(n, 0);
        }
        free(copy);
        pos += consumed;
        if (res == GPD_CHUNKED_DONE) {
            r->end = pos;
            break;
        }
        if (res == GPD_CHUNKED_ERROR)
            break;
        if (res == GPD_CHUNKED_AGAIN) {
            if (limit == len)
                break;
            limit = limit + piece < len ? limit + piece : len;
        }
    }
    r->total = d.total;
}

static const char multi[] = "5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n";

static void check_multi(size_t piece)
{
    static struct chunk_run r;
    run_chunked(multi, sizeof(multi) - 1, piece, &r);
    cr_assert_eq(r.last, GPD_CHUNKED_DONE, "piece %zu: %d %s", piece, r.last, r.why ? r.why : "");
    cr_assert_eq(r.end, sizeof(multi) - 1);
    cr_assert_eq(r.total, 22);
    cr_assert_eq(r.out_len, 22);
    cr_assert_arr_eq(r.out, "hello, world0123456789", 22);
}

Test(http_chunked, multi_chunk_whole)
{
    check_multi(sizeof(multi));
}

Test(http_chunked, multi_chunk_byte_by_byte)
{
    check_multi(1);
}

Test(http_chunked, multi_chunk_every_piece_size)
{
    for (size_t piece = 2; piece < sizeof(multi); piece++)
        check_multi(piece);
}

Test(http_chunked, whole_in_one_call)
{
    gpd_http_chunked d;
    size_t consumed, off, n;
    const char *why = NULL;
    size_t len = sizeof(multi) - 1, pos = 0;
    int datas = 0;

    gpd_http_chunked_init(&d);
    for (;;) {
        enum gpd_chunked_result r = gpd_http_chunked_step(&d, multi + pos, len - pos, &consumed, &off, &n, &why);
        pos += consumed;
        if (r == GPD_CHUNKED_DONE)
            break;
        cr_assert_eq(r, GPD_CHUNKED_DATA);
        datas++;
    }
    cr_assert_eq(datas, 4, "one DATA per chunk when the body arrives whole");
    cr_assert_eq(pos, len);
    cr_assert_eq(d.total, 22);
    /* After DONE the decoder stays done and consumes nothing more. */
    cr_assert_eq(gpd_http_chunked_step(&d, "x", 1, &consumed, &off, &n, &why), GPD_CHUNKED_DONE);
    cr_assert_eq(consumed, 0);
}

Test(http_chunked, next_message_not_consumed)
{
    static const char s[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    static struct chunk_run r;
    run_chunked(s, sizeof(s) - 1, sizeof(s), &r);
    cr_assert_eq(r.last, GPD_CHUNKED_DONE);
    cr_assert_eq(r.end, strlen("3\r\nabc\r\n0\r\n\r\n"));
    run_chunked(s, sizeof(s) - 1, 1, &r);
    cr_assert_eq(r.end, strlen("3\r\nabc\r\n0\r\n\r\n"));
}

Test(http_chunked, hex_case_and_leading_zeros)
{
    static const char s[] = "000000000000001\r\nx\r\na\r\n0123456789\r\nB\r\nabcdefghijk\r\n000\r\n\r\n";
    static struct chunk_run r;
    run_chunked(s, sizeof(s) - 1, 3, &r);
    cr_assert_eq(r.last, GPD_CHUNKED_DONE, "%s", r.why ? r.why : "");
    cr_assert_eq(r.total, 22);
}

Test(http_chunked, extensions)
{
    static const char s[] = "5;a\r\nhello\r\n3;name=value;x=\"q \\\" ;=\\\\\";y\r\nabc\r\n0;last=1\r\n\r\n";
    static struct chunk_run r;
    for (size_t piece = 1; piece <= sizeof(s); piece++) {
        run_chunked(s, sizeof(s) - 1, piece, &r);
        cr_assert_eq(r.last, GPD_CHUNKED_DONE, "piece %zu: %s", piece, r.why ? r.why : "");
        cr_assert_eq(r.total, 8);
        cr_assert_arr_eq(r.out, "helloabc", 8);
        cr_assert_eq(r.end, sizeof(s) - 1);
    }
}

Test(http_chunked, trailers)
{
    static const char s[] = "4\r\nwxyz\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\nX-Obs: \xe9\t\r\n\r\nNEXT";
    static struct chunk_run r;
    for (size_t piece = 1; piece <= sizeof(s); piece++) {
        run_chunked(s, sizeof(s) - 1, piece, &r);
        cr_assert_eq(r.last, GPD_CHUNKED_DONE, "piece %zu: %s", piece, r.why ? r.why : "");
        cr_assert_eq(r.total, 4);
        cr_assert_eq(r.end, sizeof(s) - 1 - 4);
    }
}

Test(http_chunked, large_chunk_split)
{
    static char s[40000];
    size_t n = (size_t)snprintf(s, sizeof(s), "7530\r\n");
    memset(s + n, 'z', 30000);
    n += 30000;
    n += (size_t)snprintf(s + n, sizeof(s) - n, "\r\n0\r\n\r\n");
    static struct chunk_run r;
    run_chunked(s, n, 4096, &r);
    cr_assert_eq(r.last, GPD_CHUNKED_DONE);
    cr_assert_eq(r.total, 30000);
    cr_assert_eq(r.end, n);
}

Test(http_chunked, max_size_accepted)
{
    gpd_http_chunked d;
    size_t consumed, off, n;
    const char *why = NULL;
    gpd_http_chunked_init(&d);
    cr_assert_eq(gpd_http_chunked_step(&d, "20000000000000\r\nab", 18, &consumed, &off, &n, &why), GPD_CHUNKED_DATA);
    cr_assert_eq(off, 16);
    cr_assert_eq(n, 2);
    cr_assert_eq(d.remaining, GPD_HTTP_MAX_LENGTH - 2);
}

Test(http_chunked, empty_input)
{
    gpd_http_chunked d;
    size_t consumed = 7, off = 7, n = 7;
    gpd_http_chunked_init(&d);
    cr_assert_eq(gpd_http_chunked_step(&d, NULL, 0, &consumed, &off, &n, NULL), GPD_CHUNKED_AGAIN);
    cr_assert_eq(consumed, 0);
    cr_assert_eq(n, 0);
}

static void refuse_chunked(const char *s, const char *sub)
{
    static struct chunk_run r;
    size_t len = strlen(s);
    /* Whole and byte by byte: the verdict must not depend on the split. */
    run_chunked(s, len, len, &r);
    assert_refused(r.last, r.why, sub);
    run_chunked(s, len, 1, &r);
    assert_refused(r.last, r.why, sub);
}

Test(http_chunked_bad, non_hex)
{
    refuse_chunked("zz\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
}

Test(http_chunked_bad, non_hex_after_digits)
{
    refuse_chunked("5g\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
}

Test(http_chunked_bad, empty_size)
{
    refuse_chunked("\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
}

Test(http_chunked_bad, sign)
{
    refuse_chunked("+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
}

Test(http_chunked_bad, space_after_size)
{
    refuse_chunked("5 \r\nhello\r\n0\r\n\r\n", "invalid chunk size");
}

Test(http_chunked_bad, too_many_digits)
{
    refuse_chunked("0000000000000005\r\nhello\r\n0\r\n\r\n", "too many digits");
}

Test(http_chunked_bad, oversize)
{
    refuse_chunked("20000000000001\r\nhello\r\n0\r\n\r\n", "chunk size too large");
}

Test(http_chunked_bad, missing_crlf_after_data)
{
    refuse_chunked("5\r\nhelloX\r\n0\r\n\r\n", "bad chunk terminator");
}

Test(http_chunked_bad, data_longer_than_size)
{
    refuse_chunked("3\r\nhello\r\n0\r\n\r\n", "bad chunk terminator");
}

Test(http_chunked_bad, lf_only_after_data)
{
    refuse_chunked("5\r\nhello\n0\r\n\r\n", "bad chunk terminator");
}

Test(http_chunked_bad, cr_only_after_data)
{
    refuse_chunked("5\r\nhello\r0\r\n\r\n", "bad chunk terminator");
}

Test(http_chunked_bad, lf_only_size_line)
{
    refuse_chunked("5\nhello\r\n0\r\n\r\n", "bare LF");
}

Test(http_chunked_bad, cr_only_size_line)
{
    refuse_chunked("5\rhello\r\n0\r\n\r\n", "bare CR");
}

Test(http_chunked_bad, lf_only_last_chunk)
{
    refuse_chunked("5\r\nhello\r\n0\n\n", "bare LF");
}

Test(http_chunked_bad, lf_only_final)
{
    refuse_chunked("5\r\nhello\r\n0\r\n\n", "bare LF");
}

Test(http_chunked_bad, extension_empty_name)
{
    refuse_chunked("5;\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
}

Test(http_chunked_bad, extension_bws)
{
    refuse_chunked("5 ;a\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
    refuse_chunked("5; a\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
    refuse_chunked("5;a =b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
}

Test(http_chunked_bad, extension_empty_value)
{
    refuse_chunked("5;a=\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
}

Test(http_chunked_bad, extension_unterminated_quote)
{
    refuse_chunked("5;a=\"b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
}

Test(http_chunked_bad, extension_junk_after_quote)
{
    refuse_chunked("5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
}

Test(http_chunked_bad, size_line_too_long)
{
    static char s[8192];
    /* "1;a=" + padding + "\r\n" is exactly 4096 bytes: accepted. */
    memcpy(s, "1;a=", 4);
    memset(s + 4, 'v', 4090);
    memcpy(s + 4094, "\r\nx\r\n0\r\n\r\n", 11);
    static struct chunk_run r;
    run_chunked(s, strlen(s), 1000, &r);
    cr_assert_eq(r.last, GPD_CHUNKED_DONE, "%s", r.why ? r.why : "");

    memcpy(s, "1;a=", 4);
    memset(s + 4, 'v', 4091);
    memcpy(s + 4095, "\r\nx\r\n0\r\n\r\n", 11);
    refuse_chunked(s, "chunk-size line too long");
}

Test(http_chunked_bad, trailer_too_large)
{
    static char s[20000];
    size_t n = (size_t)snprintf(s, sizeof(s), "1\r\nx\r\n0\r\n");
    for (int i = 0; i < 400; i++)
        n += (size_t)snprintf(s + n, sizeof(s) - n, "X-Trailer-%03d: 0123456789012345678901234\r\n", i);
    snprintf(s + n, sizeof(s) - n, "\r\n");
    refuse_chunked(s, "trailers too large");
}

Test(http_chunked_bad, trailer_obs_fold)
{
    refuse_chunked("0\r\nX: a\r\n b\r\n\r\n", "obs-fold");
}

Test(http_chunked_bad, trailer_bare_lf)
{
    refuse_chunked("0\r\nX: a\n\r\n", "bare LF");
}

Test(http_chunked_bad, trailer_bad_name)
{
    refuse_chunked("0\r\nX Y: a\r\n\r\n", "trailer");
    refuse_chunked("0\r\n: a\r\n\r\n", "invalid character in trailer name");
}

Test(http_chunked_bad, trailer_ctl_in_value)
{
    refuse_chunked("0\r\nX: a\x01\r\n\r\n", "invalid character in trailer value");
}

Test(http_chunked_bad, error_is_sticky)
{
    gpd_http_chunked d;
    size_t consumed, off, n;
    const char *why = NULL;
    gpd_http_chunked_init(&d);
    cr_assert_eq(gpd_http_chunked_step(&d, "x", 1, &consumed, &off, &n, &why), GPD_CHUNKED_ERROR);
    why = NULL;
    cr_assert_eq(gpd_http_chunked_step(&d, "0\r\n\r\n", 5, &consumed, &off, &n, &why), GPD_CHUNKED_ERROR);
    cr_assert_not_null(why);
}
