/*
 * Human units used throughout the configuration and the admin API:
 * durations ("250ms", "2s", "30m", "2h", "1d", "1h30m", or a bare number of
 * seconds) and sizes ("512", "64KB", "16MB", "1GB", "64KiB", "1MiB"; KB/MB/GB
 * are 1024-based like nginx's k/m/g, and the binary spellings are accepted).
 * Both return 0 on success and -1 with *why set on a malformed or
 * overflowing value; they never allocate.
 */
#ifndef GPD_CORE_UNITS_H
#define GPD_CORE_UNITS_H

#include <stddef.h>
#include <stdint.h>

int gpd_parse_duration_ms(const char *s, size_t len, uint64_t *out_ms, const char **why);
int gpd_parse_size(const char *s, size_t len, uint64_t *out_bytes, const char **why);

/* Format a duration compactly ("90s" -> "1m30s"); returns snprintf's result. */
int gpd_format_duration(char *buf, size_t buflen, uint64_t ms);

#endif
