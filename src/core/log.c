#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum gpd_log_level log_level = GPD_LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };

void gpd_log_set_level(enum gpd_log_level level)
{
    log_level = level;
}

enum gpd_log_level gpd_log_get_level(void)
{
    return log_level;
}

int gpd_log_parse_level(const char *name, enum gpd_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum gpd_log_level)i;
            return 0;
        }
    }
    return -1;
}

size_t gpd_log_timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

size_t gpd_json_escape(char *out, size_t outlen, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (outlen == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t n;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\', esc[1] = (char)ch, n = 2;
        } else if (ch == '\n') {
            esc[0] = '\\', esc[1] = 'n', n = 2;
        } else if (ch == '\r') {
            esc[0] = '\\', esc[1] = 'r', n = 2;
        } else if (ch == '\t') {
            esc[0] = '\\', esc[1] = 't', n = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4], esc[5] = hex[ch & 15], n = 6;
        } else {
            esc[0] = (char)ch, n = 1;
        }
        if (o + n >= outlen)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

/* Write all of buf, retrying on EINTR and short writes; errors are dropped
 * because there is nowhere left to report them. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void gpd_log(enum gpd_log_level level, const char *msg, const char *fields_fmt, ...)
{
    if (level < log_level)
        return;
    char line[4096];
    size_t o = 0;
    o += (size_t)snprintf(line, sizeof(line), "{\"ts\":\"");
    o += gpd_log_timestamp(line + o, sizeof(line) - o);
    o += (size_t)snprintf(line + o, sizeof(line) - o, "\",\"level\":\"%s\",\"msg\":\"", level_names[level]);
    o += gpd_json_escape(line + o, sizeof(line) - o, msg, strlen(msg));
    if (o < sizeof(line) - 1)
        line[o++] = '"';
    if (fields_fmt && *fields_fmt && o < sizeof(line) - 1) {
        line[o++] = ',';
        va_list ap;
        va_start(ap, fields_fmt);
        int n = vsnprintf(line + o, sizeof(line) - o, fields_fmt, ap);
        va_end(ap);
        if (n > 0)
            o += (size_t)n < sizeof(line) - o ? (size_t)n : sizeof(line) - o - 1;
    }
    if (o > sizeof(line) - 3)
        o = sizeof(line) - 3;
    line[o++] = '}';
    line[o++] = '\n';
    write_all(STDERR_FILENO, line, o);
}

int gpd_log_ring_init(gpd_log_ring *r, size_t cap)
{
    size_t c = 1;
    while (c < cap)
        c <<= 1;
    r->buf = malloc(c);
    if (!r->buf)
        return -1;
    r->cap = c;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->dropped, 0);
    return 0;
}

void gpd_log_ring_free(gpd_log_ring *r)
{
    free(r->buf);
    r->buf = NULL;
}

void gpd_log_ring_put(gpd_log_ring *r, const char *line, size_t len)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (r->cap - (head - tail) < len) {
        atomic_store_explicit(&r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    size_t at = head & (r->cap - 1);
    size_t first = r->cap - at < len ? r->cap - at : len;
    memcpy(r->buf + at, line, first);
    memcpy(r->buf, line + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release);
}

void gpd_log_ring_drain(gpd_log_ring *r, int fd)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    if (head == tail)
        return;
    size_t at = tail & (r->cap - 1);
    size_t len = head - tail;
    size_t first = r->cap - at < len ? r->cap - at : len;
    write_all(fd, r->buf + at, first);
    write_all(fd, r->buf, len - first);
    atomic_store_explicit(&r->tail, head, memory_order_release);
}
