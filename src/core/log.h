/*
 * Logging: one JSON object per line on stderr.
 *
 * Two paths.  gpd_log() formats and writes at once; it is for the control
 * thread and for start-up, where a blocking write is harmless.  Workers
 * never write to a file: they append their access-log lines to their own
 * gpd_log_ring (single producer, single consumer), and the control thread
 * drains every ring on a timer.  When a ring is full the line is dropped
 * and counted, never the request.
 */
#ifndef GPD_CORE_LOG_H
#define GPD_CORE_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum gpd_log_level { GPD_LOG_DEBUG = 0, GPD_LOG_INFO, GPD_LOG_WARN, GPD_LOG_ERROR };

/* Set once at start-up, before threads start. */
void gpd_log_set_level(enum gpd_log_level level);
int gpd_log_parse_level(const char *name, enum gpd_log_level *out);
enum gpd_log_level gpd_log_get_level(void);

/*
 * Write one line: {"ts":...,"level":...,"msg":MSG, FIELDS}.  fields_fmt is a
 * printf format for the rest of the object's members, already JSON (use
 * gpd_json_escape for strings), e.g. "\"port\":%d", or NULL.
 */
void gpd_log(enum gpd_log_level level, const char *msg, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define gpd_log_info(msg, ...) gpd_log(GPD_LOG_INFO, msg, __VA_ARGS__)
#define gpd_log_warn(msg, ...) gpd_log(GPD_LOG_WARN, msg, __VA_ARGS__)
#define gpd_log_error(msg, ...) gpd_log(GPD_LOG_ERROR, msg, __VA_ARGS__)
#define gpd_log_debug(msg, ...)                                                                        \
    do {                                                                                               \
        if (gpd_log_get_level() <= GPD_LOG_DEBUG)                                                      \
            gpd_log(GPD_LOG_DEBUG, msg, __VA_ARGS__);                                                  \
    } while (0)

/* Format the current wall-clock time as RFC 3339 UTC with milliseconds. */
size_t gpd_log_timestamp(char *buf, size_t len);

/*
 * Escape s[0..len) as the inside of a JSON string into out (NUL-terminated,
 * truncated to outlen).  Returns the number of bytes written.
 */
size_t gpd_json_escape(char *out, size_t outlen, const char *s, size_t len);

/* Single-producer single-consumer byte ring for a worker's log lines. */
typedef struct gpd_log_ring {
    char *buf;
    size_t cap;                /* a power of two */
    _Atomic size_t head;       /* written by the producer */
    _Atomic size_t tail;       /* written by the consumer */
    _Atomic uint64_t dropped;  /* lines that did not fit */
} gpd_log_ring;

int gpd_log_ring_init(gpd_log_ring *r, size_t cap);
void gpd_log_ring_free(gpd_log_ring *r);
/* Producer: append one whole line or drop it.  Never blocks. */
void gpd_log_ring_put(gpd_log_ring *r, const char *line, size_t len);
/* Consumer: write everything buffered to fd. */
void gpd_log_ring_drain(gpd_log_ring *r, int fd);

#endif
