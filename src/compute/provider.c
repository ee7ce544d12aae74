/*
 * The provider-independent parts of compute/provider.h: names for the
 * enums, the reservation label, and GPU model normalisation; and the
 * internals every provider file shares (providers/providers_internal.h):
 * the operation list and the runtime recipe helpers.
 */
#include "compute/provider.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "compute/providers/providers_internal.h"

const char *gpd_prov_err_name(enum gpd_prov_err e)
{
    switch (e) {
    case GPD_PROV_OK:
        return "ok";
    case GPD_PROV_NO_CAPACITY:
        return "no_capacity";
    case GPD_PROV_RATE_LIMITED:
        return "rate_limited";
    case GPD_PROV_TRANSIENT:
        return "transient";
    case GPD_PROV_AUTH:
        return "auth";
    case GPD_PROV_QUOTA:
        return "quota";
    case GPD_PROV_BAD_REQUEST:
        return "bad_request";
    case GPD_PROV_NOT_FOUND:
        return "not_found";
    case GPD_PROV_UNSUPPORTED:
        return "unsupported";
    case GPD_PROV_FAILED:
        return "failed";
    }
    return "unknown";
}

const char *gpd_instance_state_name(enum gpd_instance_state s)
{
    switch (s) {
    case GPD_INSTANCE_PENDING:
        return "pending";
    case GPD_INSTANCE_RUNNING:
        return "running";
    case GPD_INSTANCE_FAILED:
        return "failed";
    case GPD_INSTANCE_STOPPED:
        return "stopped";
    case GPD_INSTANCE_GONE:
        return "gone";
    }
    return "unknown";
}

/*
 * "gpd-" + the reservation id, made safe for every provider at once:
 *   - GCP label values: lowercase letters, digits, '-' and '_', at most 63;
 *   - GCP TPU node ids (the label is the nodeId): [a-z]([-a-z0-9]*[a-z0-9])?,
 *     at most 63, so no '_' and no trailing '-';
 *   - Vast.ai labels and IO.net names take any short string.
 * So: ASCII letters are lowercased, digits and '-' kept, everything else
 * becomes '-', the result is cut at 63 bytes and trailing '-' dropped.
 * Reservation ids are generated lowercase alphanumerics with dashes, short
 * enough that this changes nothing for them; an id that needs rewriting
 * could collide with another one, which is why the ids are made that way.
 */
#define GPD_LABEL_MAX 63

void gpd_label_for(const char *reservation_id, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    size_t cap = outlen - 1 < GPD_LABEL_MAX ? outlen - 1 : GPD_LABEL_MAX;
    size_t n = 0;
    const char *prefix = "gpd-";
    for (const char *s = prefix; *s && n < cap; s++)
        out[n++] = *s;
    for (const char *s = reservation_id ? reservation_id : ""; *s && n < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && isalnum(c))
            out[n++] = (char)tolower(c);
        else
            out[n++] = '-';
    }
    while (n > 4 && out[n - 1] == '-')
        n--;
    out[n] = '\0';
}

bool gpd_label_is_ours(const char *label)
{
    return label && strncmp(label, "gpd-", 4) == 0 && label[4] != '\0';
}

const char *const gpd_gpu_models[] = { "H100",  "H200",    "A100",    "A10",  "A10G", "L4", "L40S",
                                       "RTX4090", "RTX3090", "A6000", "V100", "T4",   "B200", NULL };

/* Words that name the maker or a product line, never the model. */
static const char *const noise_words[] = { "NVIDIA", "TESLA", "GEFORCE", "QUADRO", NULL };

/* What may follow a model name inside one word ("A100SXM4", "H100PCIE",
 * "A10080GB" is not accepted: digits run into the model). */
static const char *const variant_suffixes[] = { "SXM", "SXM2", "SXM4", "SXM5", "PCIE", "NVL", "HBM3", "HBM3E", NULL };

static bool word_in(const char *w, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(w, list[i]))
            return true;
    return false;
}

/* The model a single upper-case word names: exactly, or followed by a
 * variant suffix; the longest model wins ("A100SXM4" is A100, not A10). */
static const char *model_of_word(const char *w)
{
    const char *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; gpd_gpu_models[i]; i++) {
        const char *m = gpd_gpu_models[i];
        size_t n = strlen(m);
        if (strncmp(w, m, n) != 0 || n <= best_len)
            continue;
        if (w[n] == '\0' || word_in(w + n, variant_suffixes)) {
            best = m;
            best_len = n;
        }
    }
    return best;
}

/*
 * Split into words at anything not a letter or digit, upper-case them,
 * skip the maker's words, join "RTX" with a following number ("RTX 4090"),
 * accept a bare "4090"/"3090" (the consumer cards), and return the first
 * word that names a model.  "NVIDIA H100 80GB HBM3", "H100 SXM",
 * "A100-SXM4-80GB", "Tesla T4", "RTX 4090", "GeForce RTX 3090" all work;
 * "GH200" or "L40" (not in the list) give NULL rather than a wrong guess.
 */
const char *gpd_gpu_model_normalise(const char *name)
{
    if (!name)
        return NULL;
    char words[8][32];
    size_t nw = 0;
    const char *s = name;
    while (*s && nw < 8) {
        while (*s && !isalnum((unsigned char)*s))
            s++;
        size_t n = 0;
        while (*s && isalnum((unsigned char)*s)) {
            if (n < sizeof(words[0]) - 1)
                words[nw][n++] = (char)toupper((unsigned char)*s);
            s++;
        }
        if (n == 0)
            break;
        words[nw][n] = '\0';
        if (!word_in(words[nw], noise_words))
            nw++;
    }
    for (size_t i = 0; i < nw; i++) {
        char joined[64];
        const char *w = words[i];
        if (!strcmp(w, "RTX") && i + 1 < nw && isdigit((unsigned char)words[i + 1][0])) {
            snprintf(joined, sizeof(joined), "RTX%s", words[i + 1]);
            w = joined;
        } else if (!strcmp(w, "4090") || !strcmp(w, "3090")) {
            snprintf(joined, sizeof(joined), "RTX%s", w);
            w = joined;
        }
        const char *m = model_of_word(w);
        if (m)
            return m;
    }
    return NULL;
}

/* ---- operations in flight ---- */

void gpd__op_link(gpd__op **head, gpd__op *op, void (*destroy)(gpd__op *op))
{
    op->head = head;
    op->destroy = destroy;
    op->prev = NULL;
    op->next = *head;
    if (*head)
        (*head)->prev = op;
    *head = op;
    for (unsigned i = 0; i < GPD__OP_CALLS; i++)
        op->slots[i] = (gpd__op_slot){ op, i };
}

int gpd__op_call(gpd__op *op, unsigned idx, uv_loop_t *loop, gpd_curl *curl, const gpd_http_call_opts *o,
                 gpd_http_call_cb cb)
{
    if (idx >= GPD__OP_CALLS || op->calls[idx])
        return -1;
    op->calls[idx] = gpd_http_call_start(loop, curl, o, cb, &op->slots[idx]);
    if (!op->calls[idx])
        return -1;
    op->pending++;
    return 0;
}

int gpd__op_fail_later(gpd__op *op, unsigned idx, uv_loop_t *loop, enum gpd_prov_err err, const char *msg,
                       gpd_http_call_cb cb)
{
    if (idx >= GPD__OP_CALLS || op->calls[idx])
        return -1;
    op->calls[idx] = gpd_http_call_fail_later(loop, err, msg, cb, &op->slots[idx]);
    if (!op->calls[idx])
        return -1;
    op->pending++;
    return 0;
}

gpd__op *gpd__op_of(void *ctx, unsigned *idx)
{
    gpd__op_slot *s = ctx;
    gpd__op *op = s->op;
    if (op->calls[s->idx]) {
        op->calls[s->idx] = NULL; /* the call frees itself after this callback */
        op->pending--;
    }
    if (idx)
        *idx = s->idx;
    return op;
}

void gpd__op_cancel_calls(gpd__op *op)
{
    for (unsigned i = 0; i < GPD__OP_CALLS; i++) {
        if (op->calls[i])
            gpd_http_call_cancel(op->calls[i]);
        op->calls[i] = NULL;
    }
    op->pending = 0;
}

void gpd__op_end(gpd__op *op)
{
    if (op->head) {
        if (op->prev)
            op->prev->next = op->next;
        else
            *op->head = op->next;
        if (op->next)
            op->next->prev = op->prev;
        op->prev = op->next = NULL;
        op->head = NULL;
    }
    gpd__op_cancel_calls(op);
}

void gpd__op_cancel_all(gpd__op **head)
{
    while (*head) {
        gpd__op *op = *head;
        gpd__op_end(op);
        op->destroy(op);
    }
}

/* ---- runtime recipes ---- */

int gpd__fill_template(const char *tmpl, const char *model, int port, int gpus, char *out, size_t outlen)
{
    size_t n = 0;
    if (outlen == 0)
        return -1;
    for (const char *s = tmpl ? tmpl : ""; *s;) {
        char num[24];
        const char *put = NULL;
        size_t skip = 1;
        if (!strncmp(s, "{model}", 7)) {
            put = model ? model : "";
            skip = 7;
        } else if (!strncmp(s, "{port}", 6)) {
            snprintf(num, sizeof(num), "%d", port);
            put = num;
            skip = 6;
        } else if (!strncmp(s, "{gpus}", 6)) {
            snprintf(num, sizeof(num), "%d", gpus);
            put = num;
            skip = 6;
        }
        size_t len = put ? strlen(put) : 1;
        if (n + len >= outlen) {
            out[n] = '\0';
            return -1;
        }
        memcpy(out + n, put ? put : s, len);
        n += len;
        s += skip;
    }
    out[n] = '\0';
    return 0;
}

json_t *gpd__runtime_args(const gpd_runtime *rt, const char *model, int gpus)
{
    json_t *arr = json_array();
    char word[4096], filled[4096];
    if (!arr || !rt || !rt->args || !*rt->args)
        return arr;
    /* Split the recipe first, then fill each word in: a model name with a
     * quote or a space in it stays one argument. */
    const char *s = rt->args;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            break;
        size_t n = 0;
        while (*s && *s != ' ' && *s != '\t' && *s != '\n') {
            if (*s == '\'' || *s == '"') {
                char q = *s++;
                while (*s && *s != q) {
                    if (n + 1 < sizeof(word))
                        word[n++] = *s;
                    s++;
                }
                if (*s)
                    s++;
            } else {
                if (n + 1 < sizeof(word))
                    word[n++] = *s;
                s++;
            }
        }
        word[n] = '\0';
        if (gpd__fill_template(word, model, rt->port, gpus, filled, sizeof(filled)) != 0)
            continue; /* a word this long is a configuration error: left out */
        json_array_append_new(arr, json_string(filled));
    }
    return arr;
}

int gpd__shell_quote(const char *s, char *out, size_t outlen)
{
    size_t n = strlen(out);
    if (n + 1 >= outlen)
        return -1;
    out[n++] = '\'';
    for (; s && *s; s++) {
        if (*s == '\'') {
            if (n + 4 >= outlen)
                return -1;
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            if (n + 1 >= outlen)
                return -1;
            out[n++] = *s;
        }
    }
    if (n + 1 >= outlen)
        return -1;
    out[n++] = '\'';
    out[n] = '\0';
    return 0;
}

char *gpd__json_compact(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT);
}

bool gpd__json_id(const json_t *v, char *out, size_t outlen)
{
    if (json_is_integer(v)) {
        snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
        return true;
    }
    if (json_is_real(v)) {
        snprintf(out, outlen, "%.0f", json_real_value(v));
        return true;
    }
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < outlen) {
        snprintf(out, outlen, "%s", json_string_value(v));
        return true;
    }
    return false;
}

double gpd__json_num(const json_t *v, double dflt)
{
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v)) {
        char *end;
        const char *s = json_string_value(v);
        double d = strtod(s, &end);
        if (end != s && *end == '\0')
            return d;
    }
    return dflt;
}

bool gpd__contains_ci(const char *hay, const char *needle)
{
    return hay && needle && strcasestr(hay, needle) != NULL;
}

void gpd__port_memo_put(gpd__port_memo *m, const char *id, int port)
{
    for (unsigned i = 0; i < GPD__PORT_MEMO; i++) {
        if (!strcmp(m->id[i], id)) {
            m->port[i] = port;
            return;
        }
    }
    unsigned i = m->next++ % GPD__PORT_MEMO;
    snprintf(m->id[i], sizeof(m->id[i]), "%s", id);
    m->port[i] = port;
}

int gpd__port_memo_get(const gpd__port_memo *m, const char *id)
{
    for (unsigned i = 0; i < GPD__PORT_MEMO; i++)
        if (m->id[i][0] && !strcmp(m->id[i], id))
            return m->port[i];
    return 0;
}
