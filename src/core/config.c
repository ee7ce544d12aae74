#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/toml.h"
#include "core/units.h"

/*
 * The schema: one row per key, grouped by section.  Loading walks the TOML
 * tree against it, so that an unknown key, a wrong type or a bad value is
 * refused with the file, the line and the key, and each environment
 * variable goes through the same value parser as the file.
 */

enum field_type { F_STR, F_INT, F_I64, F_BOOL, F_FLOAT, F_DURATION, F_SIZE, F_LISTEN };

typedef struct field {
    const char *section; /* "server", "providers.openrouter", ... */
    const char *key;
    enum field_type type;
    size_t offset;
    int64_t min, max;    /* F_INT (and F_SIZE/F_DURATION when max > 0) */
    const char *env;     /* overriding environment variable, or NULL */
} field;

#define OFF(m) offsetof(gpd_config, m)
#define NOLIM 0, 0

static const field fields[] = {
    { "server", "listen", F_LISTEN, 0, NOLIM, "GPUPROXYD_LISTEN" },
    { "server", "model_host", F_STR, OFF(model_host), NOLIM, NULL },
    { "server", "workers", F_INT, OFF(workers), 0, 256, "GPUPROXYD_WORKERS" },
    { "server", "max_header_bytes", F_SIZE, OFF(max_header_bytes), 1024, 1 << 20, NULL },
    { "server", "max_body", F_SIZE, OFF(max_body), 1, (int64_t)1 << 32, NULL },
    { "server", "header_timeout", F_DURATION, OFF(header_timeout_ms), 1, 0, NULL },
    { "server", "idle_timeout", F_DURATION, OFF(idle_timeout_ms), 1, 0, NULL },
    { "server", "upstream_connect_timeout", F_DURATION, OFF(upstream_connect_timeout_ms), 1, 0, NULL },
    { "server", "upstream_timeout", F_DURATION, OFF(upstream_timeout_ms), 1, 0, NULL },
    { "server", "drain_timeout", F_DURATION, OFF(drain_timeout_ms), 0, 0, NULL },
    { "server", "access_log", F_BOOL, OFF(access_log), NOLIM, NULL },
    { "server", "log_level", F_STR, OFF(log_level), NOLIM, "GPUPROXYD_LOG_LEVEL" },
    { "server", "ca_file", F_STR, OFF(ca_file), NOLIM, "GPUPROXYD_CA_FILE" },

    { "ports", "openrouter_min", F_INT, OFF(port_min[GPD_TIER_HOSTED]), 1, 65535, "PORT_OPENROUTER_MIN" },
    { "ports", "openrouter_max", F_INT, OFF(port_max[GPD_TIER_HOSTED]), 1, 65535, "PORT_OPENROUTER_MAX" },
    { "ports", "custom_min", F_INT, OFF(port_min[GPD_TIER_CUSTOM]), 1, 65535, "PORT_CUSTOM_MIN" },
    { "ports", "custom_max", F_INT, OFF(port_max[GPD_TIER_CUSTOM]), 1, 65535, "PORT_CUSTOM_MAX" },

    { "providers.openrouter", "base_url", F_STR, OFF(openrouter_base_url), NOLIM, "OPENROUTER_BASE_URL" },
    { "providers.openrouter", "api_key", F_STR, OFF(openrouter_api_key), NOLIM, "OPENROUTER_API_KEY" },
    { "providers.openrouter", "pricing_refresh", F_DURATION, OFF(openrouter_pricing_refresh_ms), 1000, 0, NULL },
    { "providers.vastai", "base_url", F_STR, OFF(vastai_base_url), NOLIM, "VASTAI_BASE_URL" },
    { "providers.vastai", "api_key", F_STR, OFF(vastai_api_key), NOLIM, "VASTAI_API_KEY" },
    { "providers.ionet", "base_url", F_STR, OFF(ionet_base_url), NOLIM, "IONET_BASE_URL" },
    { "providers.ionet", "api_key", F_STR, OFF(ionet_api_key), NOLIM, "IONET_API_KEY" },
    { "providers.gcp_tpu", "base_url", F_STR, OFF(gcp_tpu_base_url), NOLIM, "GCP_TPU_BASE_URL" },
    { "providers.gcp_tpu", "project", F_STR, OFF(gcp_project), NOLIM, "GCP_PROJECT" },
    { "providers.gcp_tpu", "zone", F_STR, OFF(gcp_zone), NOLIM, "GCP_ZONE" },

    { "compute", "max_gpus", F_I64, OFF(max_gpus), 0, 1000000, "MAX_GPUS" },
    { "compute", "max_tpus", F_I64, OFF(max_tpus), 0, 1000000, "MAX_TPUS" },
    { "compute", "max_vastai_gpus", F_I64, OFF(max_vastai_gpus), 0, 1000000, "MAX_VASTAI_GPUS" },
    { "compute", "max_ionet_gpus", F_I64, OFF(max_ionet_gpus), 0, 1000000, "MAX_IONET_GPUS" },

    { "compute", "provisioning_timeout", F_DURATION, OFF(provisioning_timeout_ms), 1000, 0, NULL },
    { "compute", "reconcile_interval", F_DURATION, OFF(reconcile_interval_ms), 100, 0, NULL },
    { "compute", "queue_recheck", F_DURATION, OFF(queue_recheck_ms), 100, 0, NULL },
    { "compute", "poll_interval", F_DURATION, OFF(poll_interval_ms), 50, 0, NULL },
    { "compute", "max_offers_per_provider", F_I64, OFF(max_offers_per_provider), 1, 1000, NULL },
    { "compute", "capacity_cooldown", F_DURATION, OFF(capacity_cooldown_ms), 0, 0, NULL },
    { "compute", "local_cpu_slots", F_I64, OFF(local_cpu_slots), 0, 4096, NULL },
    { "compute", "tpu_runtime_version", F_STR, OFF(tpu_runtime_version), NOLIM, NULL },
    { "providers.gcp_tpu", "access_token", F_STR, OFF(gcp_access_token), NOLIM, "GCP_ACCESS_TOKEN" },
    { "providers.gcp_tpu", "credentials_file", F_STR, OFF(gcp_credentials_file), NOLIM, "GOOGLE_APPLICATION_CREDENTIALS" },

    { "distillation", "enabled", F_BOOL, OFF(distillation_enabled), NOLIM, "DISTILLATION_ENABLED" },
    { "distillation", "mode", F_STR, OFF(distillation_mode), NOLIM, "DISTILLATION_MODE" },
    { "distillation", "confidence_threshold", F_FLOAT, OFF(confidence_threshold), NOLIM, "CONFIDENCE_THRESHOLD" },
    { "distillation", "max_training_examples", F_I64, OFF(max_training_examples), 1, INT64_MAX, "MAX_TRAINING_EXAMPLES" },

    { "auth", "jwt_enabled", F_BOOL, OFF(jwt_enabled), NOLIM, "JWT_ENABLED" },
    { "auth", "jwt_secret", F_STR, OFF(jwt_secret), NOLIM, "JWT_SECRET" },

    { "store", "url", F_STR, OFF(store_url), NOLIM, "GPUPROXYD_STORE" },
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

static const char *const known_sections[] = {
    "server", "ports", "providers", "providers.openrouter", "providers.vastai", "providers.ionet",
    "providers.gcp_tpu", "compute", "distillation", "auth", "store",
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int replace_str(char **slot, const char *v)
{
    char *copy = strdup(v);
    if (!copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

/* Split "host:port" (or "[v6]:port", or ":port") into its parts. */
static int parse_listen(const char *v, gpd_config *cfg, const char **why)
{
    const char *colon = strrchr(v, ':');
    if (!colon) {
        *why = "expected HOST:PORT";
        return -1;
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 1 || port > 65535) {
        *why = "port must be 1-65535";
        return -1;
    }
    const char *h = v;
    size_t hl = (size_t)(colon - v);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
        h++, hl -= 2;
    char *host = strndup(h, hl);
    if (!host)
        return -1;
    if (hl == 0) {
        free(host);
        host = strdup("0.0.0.0");
    }
    free(cfg->listen_host);
    cfg->listen_host = host;
    cfg->listen_port = (int)port;
    return 0;
}

/* Parse a textual value of a field (from the environment, or a TOML string
 * for durations and sizes) into the config. */
static int apply_text(const field *f, const char *v, gpd_config *cfg, const char **why)
{
    char *base = (char *)cfg;
    char *end;
    switch (f->type) {
    case F_STR:
        return replace_str((char **)(base + f->offset), v) == 0 ? 0 : (*why = "out of memory", -1);
    case F_LISTEN:
        return parse_listen(v, cfg, why);
    case F_INT:
    case F_I64: {
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno) {
            *why = "expected an integer";
            return -1;
        }
        if (f->max > 0 && (n < f->min || n > f->max)) {
            *why = "out of range";
            return -1;
        }
        if (f->type == F_INT)
            *(int *)(base + f->offset) = (int)n;
        else
            *(int64_t *)(base + f->offset) = n;
        return 0;
    }
    case F_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *(bool *)(base + f->offset) = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            *(bool *)(base + f->offset) = false;
        else {
            *why = "expected true or false";
            return -1;
        }
        return 0;
    case F_FLOAT: {
        errno = 0;
        double d = strtod(v, &end);
        if (*v == '\0' || *end != '\0' || errno) {
            *why = "expected a number";
            return -1;
        }
        *(double *)(base + f->offset) = d;
        return 0;
    }
    case F_DURATION:
    case F_SIZE: {
        uint64_t n;
        int rc = f->type == F_DURATION ? gpd_parse_duration_ms(v, strlen(v), &n, why)
                                       : gpd_parse_size(v, strlen(v), &n, why);
        if (rc != 0)
            return -1;
        if ((f->min > 0 && n < (uint64_t)f->min) || (f->max > 0 && n > (uint64_t)f->max)) {
            *why = "out of range";
            return -1;
        }
        *(uint64_t *)(base + f->offset) = n;
        return 0;
    }
    }
    return -1;
}

/* Apply a TOML value to a field: type checks first, then the same textual
 * rules as the environment for the types that allow text. */
static int apply_toml(const field *f, const gpd_toml_value *v, gpd_config *cfg, const char **why)
{
    char num[32];
    switch (f->type) {
    case F_STR:
    case F_LISTEN:
        if (v->type != GPD_TOML_STRING) {
            *why = "expected a string";
            return -1;
        }
        return apply_text(f, v->u.string.ptr, cfg, why);
    case F_INT:
    case F_I64:
        if (v->type != GPD_TOML_INTEGER) {
            *why = "expected an integer";
            return -1;
        }
        snprintf(num, sizeof(num), "%lld", (long long)v->u.integer);
        return apply_text(f, num, cfg, why);
    case F_BOOL:
        if (v->type != GPD_TOML_BOOL) {
            *why = "expected true or false";
            return -1;
        }
        *(bool *)((char *)cfg + f->offset) = v->u.boolean;
        return 0;
    case F_FLOAT:
        if (v->type == GPD_TOML_INTEGER)
            *(double *)((char *)cfg + f->offset) = (double)v->u.integer;
        else if (v->type == GPD_TOML_FLOAT)
            *(double *)((char *)cfg + f->offset) = v->u.floating;
        else {
            *why = "expected a number";
            return -1;
        }
        return 0;
    case F_DURATION:
    case F_SIZE:
        if (v->type == GPD_TOML_INTEGER) {
            if (v->u.integer < 0) {
                *why = "must not be negative";
                return -1;
            }
            snprintf(num, sizeof(num), "%lld", (long long)v->u.integer);
            return apply_text(f, num, cfg, why);
        }
        if (v->type != GPD_TOML_STRING) {
            *why = f->type == F_DURATION ? "expected a duration such as \"30s\"" : "expected a size such as \"16MB\"";
            return -1;
        }
        return apply_text(f, v->u.string.ptr, cfg, why);
    }
    return -1;
}

static void set_defaults(gpd_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 8080;
    cfg->workers = 0;
    cfg->max_header_bytes = 64 * 1024;
    cfg->max_body = 16 * 1024 * 1024;
    cfg->header_timeout_ms = 10 * 1000;
    cfg->idle_timeout_ms = 60 * 1000;
    cfg->upstream_connect_timeout_ms = 5 * 1000;
    cfg->upstream_timeout_ms = 300 * 1000;
    cfg->drain_timeout_ms = 30 * 1000;
    cfg->access_log = true;
    cfg->log_level = strdup("info");
    cfg->port_min[GPD_TIER_HOSTED] = 2000;
    cfg->port_max[GPD_TIER_HOSTED] = 2500;
    cfg->port_min[GPD_TIER_CUSTOM] = 3000;
    cfg->port_max[GPD_TIER_CUSTOM] = 15000;
    cfg->openrouter_base_url = strdup("https://openrouter.ai/api/v1");
    cfg->openrouter_pricing_refresh_ms = 3600 * 1000;
    cfg->vastai_base_url = strdup("https://console.vast.ai/api/v0");
    cfg->ionet_base_url = strdup("https://api.io.solutions/enterprise/v1/io-cloud");
    cfg->gcp_tpu_base_url = strdup("https://tpu.googleapis.com/v2");
    cfg->max_gpus = 1000;
    cfg->max_tpus = 200;
    cfg->max_vastai_gpus = 1000;
    cfg->max_ionet_gpus = 1000;
    cfg->provisioning_timeout_ms = 30 * 60 * 1000;
    cfg->reconcile_interval_ms = 60 * 1000;
    cfg->queue_recheck_ms = 30 * 1000;
    cfg->poll_interval_ms = 2000;
    cfg->max_offers_per_provider = 25;
    cfg->capacity_cooldown_ms = 45 * 1000;
    cfg->local_cpu_slots = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    cfg->tpu_runtime_version = strdup("tpu-ubuntu2204-base");
    cfg->distillation_mode = strdup("shadow");
    cfg->confidence_threshold = 0.8;
    cfg->max_training_examples = 100000;
    cfg->store_url = strdup("sqlite:gpuproxyd.db");
}

static const field *find_field(const char *section, const char *key)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (!strcmp(fields[i].section, section) && !strcmp(fields[i].key, key))
            return &fields[i];
    return NULL;
}

static bool is_known_section(const char *name)
{
    for (size_t i = 0; i < sizeof(known_sections) / sizeof(known_sections[0]); i++)
        if (!strcmp(known_sections[i], name))
            return true;
    return false;
}

/* Walk one section table; nested tables recurse with a dotted name. */
static int load_section(const char *file, const char *name, const gpd_toml_value *t, gpd_config *cfg, char *err,
                        size_t errlen)
{
    for (size_t i = 0; i < gpd_toml_count(t); i++) {
        const gpd_toml_value *v = gpd_toml_at(t, i);
        if (v->type == GPD_TOML_TABLE) {
            char sub[128];
            snprintf(sub, sizeof(sub), "%s.%s", name, v->key);
            if (!is_known_section(sub)) {
                set_err(err, errlen, "%s:%d: unknown section [%s]", file, v->line, sub);
                return -1;
            }
            if (load_section(file, sub, v, cfg, err, errlen) != 0)
                return -1;
            continue;
        }
        const field *f = find_field(name, v->key);
        if (!f) {
            set_err(err, errlen, "%s:%d: key '%s': unknown key in [%s]", file, v->line, v->key, name);
            return -1;
        }
        const char *why = "invalid value";
        if (apply_toml(f, v, cfg, &why) != 0) {
            set_err(err, errlen, "%s:%d: key '%s': %s", file, v->line, v->key, why);
            return -1;
        }
    }
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int load_model(const char *file, const gpd_toml_value *t, gpd_model_spec *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->tier = GPD_TIER_CUSTOM;
    m->prompt_usd_per_mtok = -1;
    m->completion_usd_per_mtok = -1;
    m->source = GPD_MODEL_FROM_CONFIG;
    for (size_t i = 0; i < gpd_toml_count(t); i++) {
        const gpd_toml_value *v = gpd_toml_at(t, i);
        const char *k = v->key;
        const char *want = NULL;
        if (!strcmp(k, "name") || !strcmp(k, "provider") || !strcmp(k, "upstream_model") ||
            !strcmp(k, "upstream_url")) {
            if (v->type != GPD_TOML_STRING) {
                want = "expected a string";
            } else if (!strcmp(k, "name")) {
                m->name = strdup(v->u.string.ptr);
            } else if (!strcmp(k, "provider")) {
                if (!strcmp(v->u.string.ptr, "openrouter"))
                    m->tier = GPD_TIER_HOSTED;
                else if (!strcmp(v->u.string.ptr, "custom"))
                    m->tier = GPD_TIER_CUSTOM;
                else
                    want = "provider must be \"openrouter\" or \"custom\"";
            } else if (!strcmp(k, "upstream_model")) {
                m->upstream_model = strdup(v->u.string.ptr);
            } else {
                if (m->n_upstreams >= GPD_MAX_UPSTREAMS)
                    want = "too many upstreams";
                else
                    m->upstream_urls[m->n_upstreams++] = strdup(v->u.string.ptr);
            }
        } else if (!strcmp(k, "upstream_urls")) {
            if (v->type != GPD_TOML_ARRAY || v->is_array_of_tables) {
                want = "expected an array of strings";
            } else {
                for (size_t j = 0; j < gpd_toml_count(v) && !want; j++) {
                    const gpd_toml_value *u = gpd_toml_at(v, j);
                    if (u->type != GPD_TOML_STRING)
                        want = "expected an array of strings";
                    else if (m->n_upstreams >= GPD_MAX_UPSTREAMS)
                        want = "too many upstreams (at most 16)";
                    else
                        m->upstream_urls[m->n_upstreams++] = strdup(u->u.string.ptr);
                }
            }
        } else if (!strcmp(k, "port")) {
            if (v->type != GPD_TOML_INTEGER)
                want = "expected an integer";
            else if (v->u.integer < 1 || v->u.integer > 65535)
                want = "port must be 1-65535";
            else
                m->port = (int)v->u.integer;
        } else if (!strcmp(k, "prompt_usd_per_mtok") || !strcmp(k, "completion_usd_per_mtok")) {
            double d;
            if (v->type == GPD_TOML_INTEGER)
                d = (double)v->u.integer;
            else if (v->type == GPD_TOML_FLOAT)
                d = v->u.floating;
            else
                d = -1, want = "expected a number";
            if (!want && d < 0)
                want = "must not be negative";
            if (!want && k[0] == 'p')
                m->prompt_usd_per_mtok = d;
            else if (!want)
                m->completion_usd_per_mtok = d;
        } else {
            want = "unknown key in [[models]]";
        }
        if (want) {
            set_err(err, errlen, "%s:%d: key '%s': %s", file, v->line, k, want);
            return -1;
        }
    }
    return 0;
}

/* [runtimes.NAME] tables: image, command, port, health_path, args. */
static int load_runtimes(const char *file, const gpd_toml_value *t, gpd_config *cfg, char *err, size_t errlen)
{
    size_t n = gpd_toml_count(t);
    cfg->runtimes = calloc(n ? n : 1, sizeof(*cfg->runtimes));
    if (!cfg->runtimes)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const gpd_toml_value *rt = gpd_toml_at(t, i);
        if (rt->type != GPD_TOML_TABLE) {
            set_err(err, errlen, "%s:%d: key '%s': expected a [runtimes.%s] table", file, rt->line, rt->key, rt->key);
            return -1;
        }
        gpd_runtime *r = &cfg->runtimes[cfg->n_runtimes++];
        r->name = strdup(rt->key);
        r->port = 8000;
        r->health_path = strdup("/health");
        for (size_t j = 0; j < gpd_toml_count(rt); j++) {
            const gpd_toml_value *v = gpd_toml_at(rt, j);
            char **slot = !strcmp(v->key, "image") ? &r->image
                          : !strcmp(v->key, "command") ? &r->command
                          : !strcmp(v->key, "health_path") ? &r->health_path
                          : !strcmp(v->key, "args") ? &r->args
                                                     : NULL;
            if (slot) {
                if (v->type != GPD_TOML_STRING) {
                    set_err(err, errlen, "%s:%d: key '%s': expected a string", file, v->line, v->key);
                    return -1;
                }
                free(*slot);
                *slot = strdup(v->u.string.ptr);
            } else if (!strcmp(v->key, "port")) {
                if (v->type != GPD_TOML_INTEGER || v->u.integer < 1 || v->u.integer > 65535) {
                    set_err(err, errlen, "%s:%d: key 'port': expected an integer 1-65535", file, v->line);
                    return -1;
                }
                r->port = (int)v->u.integer;
            } else {
                set_err(err, errlen, "%s:%d: key '%s': unknown key in [runtimes.%s]", file, v->line, v->key, r->name);
                return -1;
            }
        }
        if (!r->image && !r->command) {
            set_err(err, errlen, "%s:%d: [runtimes.%s]: needs 'image' (remote providers) or 'command' (local)", file,
                    rt->line, r->name);
            return -1;
        }
        if (r->health_path[0] != '/') {
            set_err(err, errlen, "%s:%d: [runtimes.%s]: 'health_path' must start with '/'", file, rt->line, r->name);
            return -1;
        }
    }
    return 0;
}

const gpd_runtime *gpd_config_runtime(const gpd_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_runtimes; i++)
        if (!strcmp(cfg->runtimes[i].name, name))
            return &cfg->runtimes[i];
    return NULL;
}

static int apply_env(gpd_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        if (!f->env)
            continue;
        const char *v = getenv(f->env);
        if (!v)
            continue;
        const char *why = "invalid value";
        if (apply_text(f, v, cfg, &why) != 0) {
            set_err(err, errlen, "environment variable %s: %s", f->env, why);
            return -1;
        }
    }
    return 0;
}

const char *gpd_tier_name(enum gpd_tier t)
{
    return t == GPD_TIER_HOSTED ? "hosted" : "custom";
}

static bool valid_model_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 128)
        return false;
    for (const char *p = n; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

int gpd_model_spec_validate(gpd_model_spec *m, const gpd_config *cfg, char *err, size_t errlen)
{
    if (!m->name || !*m->name) {
        set_err(err, errlen, "field 'name' is required");
        return -1;
    }
    if (!valid_model_name(m->name)) {
        set_err(err, errlen, "field 'name': must be 1-128 printable characters without spaces or quotes");
        return -1;
    }
    if (m->tier == GPD_TIER_HOSTED) {
        if (m->n_upstreams > 0) {
            set_err(err, errlen, "model '%s': field 'upstream_url' does not apply to provider \"openrouter\"",
                    m->name);
            return -1;
        }
    } else if (m->n_upstreams == 0) {
        set_err(err, errlen, "model '%s': field 'upstream_url' (or 'upstream_urls') is required", m->name);
        return -1;
    }
    for (size_t i = 0; i < m->n_upstreams; i++) {
        const char *u = m->upstream_urls[i];
        if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
            strlen(u) < 9 || strpbrk(u, " \t\r\n\"")) {
            set_err(err, errlen, "model '%s': field 'upstream_url': '%s' is not an http:// or https:// URL",
                    m->name, u ? u : "");
            return -1;
        }
    }
    if (m->upstream_model && (!*m->upstream_model || strpbrk(m->upstream_model, "\"\\\r\n"))) {
        set_err(err, errlen, "model '%s': field 'upstream_model' is empty or has quotes", m->name);
        return -1;
    }
    if (m->port) {
        int lo = cfg->port_min[m->tier], hi = cfg->port_max[m->tier];
        if (m->port < lo || m->port > hi) {
            set_err(err, errlen, "model '%s': port %d is outside the %s range %d-%d", m->name, m->port,
                    gpd_tier_name(m->tier), lo, hi);
            return -1;
        }
        if (m->port == cfg->listen_port) {
            set_err(err, errlen, "model '%s': port %d is the main port", m->name, m->port);
            return -1;
        }
    }
    return 0;
}

void gpd_model_spec_free(gpd_model_spec *m)
{
    free(m->name);
    free(m->upstream_model);
    for (size_t i = 0; i < m->n_upstreams; i++)
        free(m->upstream_urls[i]);
    memset(m, 0, sizeof(*m));
}

int gpd_model_spec_copy(gpd_model_spec *dst, const gpd_model_spec *src)
{
    *dst = *src;
    dst->name = dup_or_null(src->name);
    dst->upstream_model = dup_or_null(src->upstream_model);
    for (size_t i = 0; i < src->n_upstreams; i++)
        dst->upstream_urls[i] = dup_or_null(src->upstream_urls[i]);
    return 0;
}

static int cmp_model_names(const void *a, const void *b, void *ctx)
{
    const gpd_model_spec *models = ctx;
    size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    int c = strcmp(models[ia].name, models[ib].name);
    return c ? c : (ia > ib) - (ia < ib);
}

static int validate(gpd_config *cfg, char *err, size_t errlen)
{
    const char *file = cfg->path ? cfg->path : "(defaults)";
    for (int t = 0; t < GPD_TIER_COUNT; t++) {
        if (cfg->port_min[t] > cfg->port_max[t]) {
            set_err(err, errlen, "%s: [ports]: %s range is empty (%d > %d)", file, gpd_tier_name((enum gpd_tier)t),
                    cfg->port_min[t], cfg->port_max[t]);
            return -1;
        }
    }
    enum gpd_log_level lvl;
    if (gpd_log_parse_level(cfg->log_level, &lvl) != 0) {
        set_err(err, errlen, "%s: key 'log_level': expected debug, info, warn or error", file);
        return -1;
    }
    if (cfg->confidence_threshold < 0 || cfg->confidence_threshold > 1) {
        set_err(err, errlen, "%s: key 'confidence_threshold': must be between 0 and 1", file);
        return -1;
    }
    if (strncmp(cfg->openrouter_base_url, "http://", 7) != 0 && strncmp(cfg->openrouter_base_url, "https://", 8) != 0) {
        set_err(err, errlen, "%s: key 'base_url' in [providers.openrouter]: not an http(s) URL", file);
        return -1;
    }
    if (!cfg->model_host)
        cfg->model_host = strdup(cfg->listen_host);
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (int)n : 1;
    }
    /* Duplicates: ports through a table, names through a sorted index, so
     * that 12,500 models are checked in milliseconds, not quadratic time. */
    int rc = -1;
    size_t *port_owner = calloc(65536, sizeof(*port_owner));
    size_t *order = calloc(cfg->n_models ? cfg->n_models : 1, sizeof(*order));
    if (!port_owner || !order) {
        set_err(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_models; i++) {
        char why[256];
        gpd_model_spec *m = &cfg->models[i];
        if (gpd_model_spec_validate(m, cfg, why, sizeof(why)) != 0) {
            set_err(err, errlen, "%s: [[models]] #%zu: %s", file, i + 1, why);
            goto out;
        }
        if (m->port && port_owner[m->port]) {
            set_err(err, errlen, "%s: [[models]] #%zu: port %d is already used by model '%s'", file, i + 1, m->port,
                    cfg->models[port_owner[m->port] - 1].name);
            goto out;
        }
        if (m->port)
            port_owner[m->port] = i + 1;
        order[i] = i;
    }
    qsort_r(order, cfg->n_models, sizeof(*order), cmp_model_names, cfg->models);
    for (size_t k = 1; k < cfg->n_models; k++) {
        size_t a = order[k - 1], b = order[k];
        if (!strcmp(cfg->models[a].name, cfg->models[b].name)) {
            size_t later = a > b ? a : b;
            set_err(err, errlen, "%s: [[models]] #%zu: duplicate model name '%s'", file, later + 1,
                    cfg->models[later].name);
            goto out;
        }
    }
    rc = 0;
out:
    free(port_owner);
    free(order);
    return rc;
}

int gpd_config_load(const char *path, gpd_config *cfg, char *err, size_t errlen)
{
    int rc = -1;
    gpd_toml_value *root = NULL;
    set_defaults(cfg);
    if (path) {
        cfg->path = strdup(path);
        root = gpd_toml_parse_file(path, err, errlen);
        if (!root)
            goto out;
        for (size_t i = 0; i < gpd_toml_count(root); i++) {
            const gpd_toml_value *v = gpd_toml_at(root, i);
            if (!strcmp(v->key, "models")) {
                if (v->type != GPD_TOML_ARRAY || !v->is_array_of_tables) {
                    set_err(err, errlen, "%s:%d: key 'models': expected [[models]] tables", path, v->line);
                    goto out;
                }
                size_t n = gpd_toml_count(v);
                cfg->models = calloc(n ? n : 1, sizeof(*cfg->models));
                if (!cfg->models)
                    goto out;
                for (size_t j = 0; j < n; j++) {
                    const gpd_toml_value *mt = gpd_toml_at(v, j);
                    cfg->n_models = j + 1;
                    if (load_model(path, mt, &cfg->models[j], err, errlen) != 0)
                        goto out;
                    if (!cfg->models[j].name) {
                        set_err(err, errlen, "%s:%d: [[models]]: key 'name' is required", path, mt->line);
                        goto out;
                    }
                }
                continue;
            }
            if (!strcmp(v->key, "runtimes") && v->type == GPD_TOML_TABLE) {
                if (load_runtimes(path, v, cfg, err, errlen) != 0)
                    goto out;
                continue;
            }
            if (v->type != GPD_TOML_TABLE || !is_known_section(v->key)) {
                set_err(err, errlen, "%s:%d: unknown %s '%s'", path, v->line,
                        v->type == GPD_TOML_TABLE ? "section" : "top-level key", v->key);
                goto out;
            }
            if (load_section(path, v->key, v, cfg, err, errlen) != 0)
                goto out;
        }
    }
    if (apply_env(cfg, err, errlen) != 0)
        goto out;
    if (validate(cfg, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    gpd_toml_free(root);
    if (rc != 0)
        gpd_config_free(cfg);
    return rc;
}

void gpd_config_free(gpd_config *cfg)
{
    char **strs[] = { &cfg->path, &cfg->listen_host, &cfg->model_host, &cfg->log_level, &cfg->ca_file,
                      &cfg->openrouter_base_url, &cfg->openrouter_api_key, &cfg->vastai_base_url,
                      &cfg->vastai_api_key, &cfg->ionet_base_url, &cfg->ionet_api_key, &cfg->gcp_tpu_base_url,
                      &cfg->gcp_project, &cfg->gcp_zone, &cfg->distillation_mode, &cfg->jwt_secret,
                      &cfg->store_url, &cfg->tpu_runtime_version, &cfg->gcp_access_token,
                      &cfg->gcp_credentials_file };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    for (size_t i = 0; i < cfg->n_models; i++)
        gpd_model_spec_free(&cfg->models[i]);
    free(cfg->models);
    for (size_t i = 0; i < cfg->n_runtimes; i++) {
        gpd_runtime *r = &cfg->runtimes[i];
        free(r->name);
        free(r->image);
        free(r->command);
        free(r->health_path);
        free(r->args);
    }
    free(cfg->runtimes);
    cfg->runtimes = NULL;
    cfg->n_runtimes = 0;
    cfg->models = NULL;
    cfg->n_models = 0;
}
