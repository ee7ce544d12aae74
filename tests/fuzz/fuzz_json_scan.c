// fuzz-sources: src/core/json_scan.c src/core/log.c src/gateway/usage.c
/*
 * libFuzzer harness for the request-body JSON scanner and the usage
 * matcher: whatever the bytes, no read outside the buffer, and every
 * reported span lies inside it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"
#include "gateway/usage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that ASan sees any overread. */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    gpd_json_field f[3] = { { .key = "model" }, { .key = "stream" }, { .key = "messages" } };
    const char *why = NULL;
    size_t off = 0;
    if (gpd_json_scan_object(buf, size, f, 3, &why, &off) == 0) {
        for (int i = 0; i < 3; i++) {
            if (!f[i].found)
                continue;
            if (f[i].value.base < buf || f[i].value.base + f[i].value.len > buf + size || f[i].value.len == 0)
                abort();
            char out[64];
            gpd_json_string_decode(f[i].value, out, sizeof(out));
        }
    } else if (!why || off > size) {
        abort();
    }
    /* Usage: fed whole and split in two must agree. */
    gpd_usage a, b;
    gpd_usage_init(&a);
    gpd_usage_init(&b);
    gpd_usage_feed(&a, buf, size);
    size_t half = size / 2;
    gpd_usage_feed(&b, buf, half);
    gpd_usage_feed(&b, buf + half, size - half);
    if (a.prompt_tokens != b.prompt_tokens || a.completion_tokens != b.completion_tokens)
        abort();
    free(buf);
    return 0;
}
