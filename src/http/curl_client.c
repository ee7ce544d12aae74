#include "http/curl_client.h"

#include <stdlib.h>
#include <string.h>

#include "http/server.h"

#define MAX_HEAD_BYTES (32 * 1024)
#define MAX_HEADERS 64

struct gpd_curl {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *ca_file;
    int running;
    struct gpd_curl_req *reqs;     /* every transfer in flight */
};

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    gpd_curl *g;
} sock_ctx;

struct gpd_curl_req {
    gpd_curl *g;
    CURL *easy;
    struct curl_slist *headers;
    const gpd_upstream_events *ev;
    void *ctx;
    gpd_deadline wait;
    gpd_deadline_list *response_wait;
    char head[MAX_HEAD_BYTES];     /* response header lines as received */
    size_t head_len;
    bool head_done;
    bool received;
    bool paused;
    bool want_pause;
    bool failed;
    bool aborted;                  /* the caller let go while a callback ran */
    int in_callback;
    struct gpd_curl_req *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

static void check_done(gpd_curl *g);

/* ---- loop integration ---- */

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(s->g->multi, s->fd, flags, &s->g->running);
    check_done(s->g);
}

static void poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    gpd_curl *g = userp;
    sock_ctx *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, poll_closed);
            curl_multi_assign(g->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->fd = fd;
        s->g = g;
        if (uv_poll_init_socket(g->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(g->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    gpd_curl *g = t->data;
    curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &g->running);
    check_done(g);
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    gpd_curl *g = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&g->timer);
    else
        uv_timer_start(&g->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

gpd_curl *gpd_curl_new(uv_loop_t *loop, const char *ca_file)
{
    gpd_curl *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->loop = loop;
    g->multi = curl_multi_init();
    if (!g->multi) {
        free(g);
        return NULL;
    }
    g->ca_file = ca_file ? strdup(ca_file) : NULL;
    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    curl_multi_setopt(g->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(g->multi, CURLMOPT_SOCKETDATA, g);
    curl_multi_setopt(g->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(g->multi, CURLMOPT_TIMERDATA, g);
    return g;
}

void gpd_curl_set_limits(gpd_curl *g, long max_host_connections, long max_cached_connections)
{
    curl_multi_setopt(g->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host_connections);
    curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, max_cached_connections);
}

static void req_free(gpd_curl_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->g->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    gpd_deadline_cancel(&r->wait);
    curl_multi_remove_handle(r->g->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r);
}

static void timer_closed(uv_handle_t *h)
{
    gpd_curl *g = h->data;
    free(g->ca_file);
    free(g);
}

void gpd_curl_free(gpd_curl *g)
{
    if (!g)
        return;
    /* Abort every transfer without callbacks. */
    while (g->reqs)
        req_free(g->reqs);
    curl_multi_cleanup(g->multi);
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, timer_closed);
}

/* ---- callbacks ---- */

/* Turn the raw header lines into a response for on_head. */
static int deliver_head(gpd_curl_req *r)
{
    gpd_http_header headers[MAX_HEADERS];
    gpd_http_response res;
    const char *why = NULL;
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    /* curl hands us the final head's lines (earlier 1xx heads were reset below);
     * parse it with the strict parser for uniform framing facts. */
    int n = gpd_http_parse_response(r->head, r->head_len, &res, headers, MAX_HEADERS, false, &why);
    if (n < 0) {
        res = (gpd_http_response){ 0 };
        res.status = (int)code;
        res.headers = headers;
        res.num_headers = 0;
    }
    /* curl decodes chunked transfer coding: the body we relay is the payload. */
    if (res.framing.body == GPD_HTTP_BODY_CHUNKED)
        res.framing.body = GPD_HTTP_BODY_UNTIL_CLOSE;
    r->head_done = true;
    return r->ev->on_head(r->ctx, &res);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    gpd_curl_req *r = userp;
    size_t n = size * nitems;
    if (r->failed)
        return 0;
    r->received = true;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0)
        r->head_len = 0; /* a new head (after 1xx or a redirect) */
    if (r->head_len + n > sizeof(r->head))
        return 0;
    memcpy(r->head + r->head_len, buf, n);
    r->head_len += n;
    if (n == 2 && buf[0] == '\r' && buf[1] == '\n') {
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 100 && code < 200)
            return n;
        if (r->response_wait)
            gpd_deadline_arm(r->response_wait, &r->wait, uv_now(r->g->loop));
        r->in_callback++;
        int rc = deliver_head(r);
        /* Let the caller send the head now: a stream's first bytes may be slow to come. */
        if (rc == 0 && !r->aborted)
            rc = r->ev->on_body(r->ctx, NULL, 0) < 0 ? -1 : 0;
        r->in_callback--;
        if (rc != 0 || r->aborted) {
            r->failed = true;
            return 0;
        }
    }
    return n;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userp)
{
    gpd_curl_req *r = userp;
    size_t n = size * nmemb;
    if (r->failed)
        return 0;
    if (r->want_pause) {
        /* Output is backed up: curl keeps this data and hands it again after resume. */
        r->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (r->response_wait)
        gpd_deadline_arm(r->response_wait, &r->wait, uv_now(r->g->loop));
    r->in_callback++;
    if (r->ev->on_payload)
        r->ev->on_payload(r->ctx, ptr, n);
    int rc = r->aborted ? -1 : r->ev->on_body(r->ctx, ptr, n);
    r->in_callback--;
    if (rc < 0 || r->aborted) {
        r->failed = true;
        return 0;
    }
    if (rc > 0)
        r->want_pause = true;
    return n;
}

static enum gpd_upstream_error_kind classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return GPD_UPERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return GPD_UPERR_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return GPD_UPERR_TLS;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return GPD_UPERR_RESET;
    default:
        return GPD_UPERR_PROTOCOL;
    }
}

static void check_done(gpd_curl *g)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(g->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        gpd_curl_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (!r)
            continue;
        CURLcode rc = m->data.result;
        if (r->aborted) {
            req_free(r);
            continue;
        }
        const gpd_upstream_events *ev = r->ev;
        void *ctx = r->ctx;
        bool received = r->received, head_done = r->head_done, failed = r->failed;
        req_free(r);
        if (rc == CURLE_OK && head_done)
            ev->on_done(ctx);
        else if (!failed || rc != CURLE_WRITE_ERROR)
            ev->on_error(ctx, rc == CURLE_OK ? GPD_UPERR_PROTOCOL : classify(rc), received, false);
    }
}

gpd_curl_req *gpd_curl_send(gpd_curl *g, const gpd_curl_opts *o, const gpd_upstream_events *ev, void *ctx)
{
    gpd_curl_req *r = calloc(1, sizeof(*r));
    if (!r) {
        curl_slist_free_all(o->headers);
        return NULL;
    }
    r->g = g;
    r->ev = ev;
    r->ctx = ctx;
    r->headers = o->headers;
    r->response_wait = o->response_wait;
    r->easy = curl_easy_init();
    if (!r->easy) {
        curl_slist_free_all(r->headers);
        free(r);
        return NULL;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
    if (o->total_timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->total_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    if (g->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, g->ca_file);
    if (!strcmp(o->method, "POST") || !strcmp(o->method, "PUT") || !strcmp(o->method, "PATCH")) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body ? o->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        if (strcmp(o->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    } else if (!strcmp(o->method, "DELETE")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
        if (o->body) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        }
    } else if (!strcmp(o->method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    if (r->response_wait)
        gpd_deadline_arm(r->response_wait, &r->wait, uv_now(g->loop));
    r->next = g->reqs;
    if (g->reqs)
        g->reqs->prev = r;
    g->reqs = r;
    if (curl_multi_add_handle(g->multi, e) != CURLM_OK) {
        req_free(r);
        return NULL;
    }
    return r;
}

void gpd_curl_abort(gpd_curl_req *r)
{
    if (!r)
        return;
    if (r->in_callback) {
        /* curl forbids removing a handle from its own callback: let the
         * callback fail the transfer, and free it when curl reports it. */
        r->aborted = true;
        r->ev = NULL;
        gpd_deadline_cancel(&r->wait);
        return;
    }
    req_free(r);
}

void gpd_curl_resume(gpd_curl_req *r)
{
    if (!r)
        return;
    r->want_pause = false;
    if (r->paused) {
        r->paused = false;
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
    }
}

void gpd_curl_response_expired(gpd_deadline *d)
{
    gpd_curl_req *r = gpd_container_of(d, gpd_curl_req, wait);
    const gpd_upstream_events *ev = r->ev;
    void *ctx = r->ctx;
    bool received = r->received;
    req_free(r);
    ev->on_error(ctx, GPD_UPERR_TIMEOUT, received, false);
}
