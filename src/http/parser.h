/*
 * Strict, zero-copy HTTP/1.1 message-head parser and chunked-body decoder.
 *
 * The parser never allocates and never copies: every gpd_str it returns
 * points into the caller's buffer, and the caller supplies the header
 * array.  It is deliberately strict where leniency lets requests be
 * smuggled past a backend (RFC 9112 section 6.3, 11.2): ambiguous framing
 * is an error, never a guess.
 *
 * Return convention of the parse functions:
 *   > 0                  the head is complete; the value is its length in
 *                        bytes (request/status line, headers, final CRLF)
 *   GPD_HTTP_INCOMPLETE  more bytes are needed; call again with the same
 *                        buffer grown (the parser keeps no state)
 *   GPD_HTTP_ERROR       the head is malformed; *why (when non-NULL) is set
 *                        to a static, human-readable reason
 *   GPD_HTTP_TOO_MANY_HEADERS  more header lines than the array holds
 */
#ifndef GPD_HTTP_PARSER_H
#define GPD_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/str.h"

#define GPD_HTTP_INCOMPLETE (-2)
#define GPD_HTTP_ERROR (-1)
#define GPD_HTTP_TOO_MANY_HEADERS (-3)

/* Largest Content-Length or chunk size accepted: 2^53, far above any cap. */
#define GPD_HTTP_MAX_LENGTH ((uint64_t)1 << 53)

typedef struct gpd_http_header {
    gpd_str name;  /* token, no surrounding whitespace */
    gpd_str value; /* leading/trailing SP/HTAB trimmed */
} gpd_http_header;

enum gpd_http_body_kind {
    GPD_HTTP_BODY_NONE = 0,   /* no body (no framing header on a request, 204/304/1xx) */
    GPD_HTTP_BODY_LENGTH,     /* Content-Length bytes follow */
    GPD_HTTP_BODY_CHUNKED,    /* Transfer-Encoding: chunked */
    GPD_HTTP_BODY_UNTIL_CLOSE /* responses only: read until the peer closes */
};

/* Framing and connection facts derived from the headers while parsing. */
typedef struct gpd_http_framing {
    enum gpd_http_body_kind body;
    uint64_t content_length;  /* valid when body == GPD_HTTP_BODY_LENGTH */
    bool keep_alive;          /* HTTP/1.1 default true, 1.0 default false; Connection: close/keep-alive */
    bool expect_continue;     /* requests: "Expect: 100-continue" */
    bool upgrade;             /* "Connection: upgrade" present (not supported by the gateway) */
} gpd_http_framing;

typedef struct gpd_http_request {
    gpd_str method;           /* token, e.g. "POST" */
    gpd_str target;           /* request-target as sent, e.g. "/v1/chat/completions?x=1" */
    gpd_str path;             /* target up to '?' */
    gpd_str query;            /* after '?', without it; empty when absent */
    int minor_version;        /* 0 or 1 (HTTP/1.0 or HTTP/1.1) */
    gpd_http_header *headers; /* caller-supplied array */
    size_t num_headers;       /* out: headers filled in */
    gpd_str host;             /* the Host header's value (required, exactly once, on HTTP/1.1) */
    gpd_http_framing framing;
} gpd_http_request;

typedef struct gpd_http_response {
    int status;               /* 100-599 */
    gpd_str reason;           /* may be empty */
    int minor_version;
    gpd_http_header *headers;
    size_t num_headers;
    gpd_http_framing framing; /* body kind already accounts for 1xx/204/304 and HEAD */
} gpd_http_response;

/*
 * Parse a request head from buf[0..len).  headers/max_headers: caller's
 * array.  Rules enforced (each refusal sets *why):
 *   - request line: method token, one SP, target (no CTL/SP), one SP,
 *     "HTTP/1.0" or "HTTP/1.1", CRLF; up to 2 empty lines before it ignored
 *   - lines end in CRLF; a bare CR or a bare LF is an error
 *   - header name: token characters only, no whitespace before the colon
 *   - obs-fold (a line starting with SP or HTAB) is an error
 *   - header values: no CTL except HTAB, no bytes 0x7F; obs-text (0x80-0xFF) allowed
 *   - Content-Length: digits only, at most once (two, even equal, is an error)
 *   - Transfer-Encoding: exactly "chunked" (case-insensitive), at most once;
 *     any other coding, or together with Content-Length, is an error
 *   - HTTP/1.1 requires exactly one Host header
 */
int gpd_http_parse_request(const char *buf, size_t len, gpd_http_request *req, gpd_http_header *headers,
                           size_t max_headers, const char **why);

/*
 * Parse a response head.  request_was_head: the request was HEAD (no body
 * whatever the headers say).  1xx responses are returned as such (body
 * NONE); the caller skips them and parses the next head.  Responses with
 * neither Content-Length nor chunked have body UNTIL_CLOSE and keep_alive
 * false.  The same framing strictness as requests applies.
 */
int gpd_http_parse_response(const char *buf, size_t len, gpd_http_response *res, gpd_http_header *headers,
                            size_t max_headers, bool request_was_head, const char **why);

/* Find a header by case-insensitive name; NULL when absent. */
const gpd_http_header *gpd_http_find_header(const gpd_http_header *headers, size_t n, const char *name);

/* True when the comma-separated header value contains token (case-insensitive). */
bool gpd_http_value_has_token(gpd_str value, const char *token);

/*
 * Incremental chunked-body decoder.  It keeps a little state between calls
 * so that framing split across reads is handled; it never modifies the
 * buffer, so the caller may relay the raw bytes verbatim and use the data
 * spans only to observe the payload, or compact the spans in place to
 * decode a body.
 *
 * Call gpd_http_chunked_step() repeatedly with the unconsumed bytes:
 *   GPD_CHUNKED_DATA   *consumed bytes were used; the last *data_len of
 *                      them, starting at buf + *data_off, are payload
 *   GPD_CHUNKED_AGAIN  all len bytes were consumed (*consumed == len): the
 *                      decoder keeps the state of an incomplete framing
 *                      line itself, so callers may discard the buffer
 *   GPD_CHUNKED_DONE   the last-chunk and trailers ended after *consumed
 *                      bytes; bytes after that belong to the next message
 *   GPD_CHUNKED_ERROR  malformed; *why set
 * Limits: chunk-size hex digits <= 15 (size <= GPD_HTTP_MAX_LENGTH), a
 * chunk-size line (with extensions) <= 4096 bytes, trailers <= 16 KiB.
 */
enum gpd_chunked_result { GPD_CHUNKED_ERROR = -1, GPD_CHUNKED_AGAIN = 0, GPD_CHUNKED_DATA = 1, GPD_CHUNKED_DONE = 2 };

typedef struct gpd_http_chunked {
    int state;            /* internal */
    uint64_t remaining;   /* payload bytes left in the current chunk */
    uint32_t line_bytes;  /* bytes of the current framing line seen so far */
    uint32_t trailer_bytes;
    uint64_t total;       /* payload bytes decoded so far */
} gpd_http_chunked;

void gpd_http_chunked_init(gpd_http_chunked *d);
enum gpd_chunked_result gpd_http_chunked_step(gpd_http_chunked *d, const char *buf, size_t len, size_t *consumed,
                                              size_t *data_off, size_t *data_len, const char **why);

/* Reason phrase for a status code ("OK", "Not Found"...); "Unknown" otherwise. */
const char *gpd_http_reason(int status);

#endif
