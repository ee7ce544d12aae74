#include "gateway/usage.h"

#include <string.h>

enum { PH_SCAN = 0, PH_KEY, PH_COLON, PH_VALUE_START, PH_VALUE };

static const char key_prompt[] = "\"prompt_tokens\"";
static const char key_completion[] = "\"completion_tokens\"";

static void commit(gpd_usage *u)
{
    if (u->key == 0)
        u->prompt_tokens = u->num;
    else
        u->completion_tokens = u->num;
    u->seen = true;
}

void gpd_usage_feed(gpd_usage *u, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        char ch = *p;
        switch (u->phase) {
        case PH_SCAN: {
            /* Skip ahead to where a key could start: just before the next
             * "_tokens\"" (found with memmem, which is fast), or, when there is
             * none, to the last bytes, where a key may begin that ends in the
             * next segment.  The longest key, "completion_tokens" with its
             * quotes, is 19 bytes. */
            const char *hit = memmem(p, (size_t)(end - p), "_tokens\"", 8);
            if (hit)
                p = hit - p > 11 ? hit - 11 : p;
            else if (end - p > 19)
                p = end - 19;
            /* Then to the next quote. */
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q)
                return;
            p = q + 1;
            u->phase = PH_KEY;
            u->pos = 1;
            u->key = 2; /* undecided */
            continue;
        }
        case PH_KEY: {
            if (u->key == 2) {
                if (ch == 'p')
                    u->key = 0;
                else if (ch == 'c')
                    u->key = 1;
                else {
                    u->phase = PH_SCAN;
                    continue; /* re-examine this byte: it may be a quote */
                }
            }
            const char *k = u->key == 0 ? key_prompt : key_completion;
            size_t klen = u->key == 0 ? sizeof(key_prompt) - 1 : sizeof(key_completion) - 1;
            if (ch != k[u->pos]) {
                u->phase = PH_SCAN;
                continue;
            }
            p++;
            if (++u->pos == klen)
                u->phase = PH_COLON;
            continue;
        }
        case PH_COLON:
            if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
                p++;
                continue;
            }
            if (ch == ':') {
                p++;
                u->phase = PH_VALUE_START;
                continue;
            }
            u->phase = PH_SCAN;
            continue;
        case PH_VALUE_START:
            if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
                p++;
                continue;
            }
            if (ch >= '0' && ch <= '9') {
                u->num = 0;
                u->phase = PH_VALUE;
                continue;
            }
            u->phase = PH_SCAN; /* null or another type: not usage */
            continue;
        case PH_VALUE:
            if (ch >= '0' && ch <= '9') {
                if (u->num < UINT64_MAX / 10)
                    u->num = u->num * 10 + (uint64_t)(ch - '0');
                p++;
                continue;
            }
            commit(u);
            u->phase = PH_SCAN;
            continue;
        }
    }
}
