/*
 * gpuproxyctl: the command-line client of a running gpuproxyd.
 *
 *   gpuproxyctl [--url URL] [--json] models      list model endpoints
 *   gpuproxyctl [--url URL] health               liveness and readiness
 *
 * URL defaults to $GPUPROXYD_URL, else http://127.0.0.1:8080.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"

static size_t collect(char *p, size_t size, size_t n, void *userp)
{
    gpd_sbuf *b = userp;
    return gpd_sbuf_append(b, p, size * n) == 0 ? size * n : 0;
}

/* GET base+path; returns the HTTP status (0 on transport failure) and the body in out. */
static long http_get(const char *base, const char *path, gpd_sbuf *out, char *err, size_t errlen)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *c = curl_easy_init();
    char cerr[CURL_ERROR_SIZE] = "";
    long code = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    else
        snprintf(err, errlen, "%s: %s", url, cerr);
    curl_easy_cleanup(c);
    return code;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gpuproxyctl [--url URL] [--json] <command>\n"
               "commands:\n"
               "  models    list the model endpoints (name, port, provider, upstream)\n"
               "  health    check /healthz and /readyz\n");
}

static int cmd_models(const char *base, bool as_json)
{
    gpd_sbuf b;
    char err[2600] = "";
    gpd_sbuf_init(&b, 256 << 20);
    long code = http_get(base, "/api/v1/models", &b, err, sizeof(err));
    if (code != 200) {
        fprintf(stderr, "gpuproxyctl: %s\n", code ? (b.data ? b.data : "error") : err);
        gpd_sbuf_free(&b);
        return 1;
    }
    if (as_json) {
        printf("%s\n", b.data);
        gpd_sbuf_free(&b);
        return 0;
    }
    json_t *root = json_loads(b.data, 0, NULL);
    json_t *models = json_object_get(root, "models");
    size_t i;
    json_t *m;
    printf("%-32s %6s  %-10s %s\n", "NAME", "PORT", "PROVIDER", "UPSTREAM");
    json_array_foreach(models, i, m)
    {
        const char *up = json_string_value(json_object_get(m, "upstream_model"));
        json_t *urls = json_object_get(m, "upstream_urls");
        if (!up && json_array_size(urls))
            up = json_string_value(json_array_get(urls, 0));
        printf("%-32s %6lld  %-10s %s\n", json_string_value(json_object_get(m, "name")),
               (long long)json_integer_value(json_object_get(m, "port")),
               json_string_value(json_object_get(m, "provider")), up ? up : "-");
    }
    json_decref(root);
    gpd_sbuf_free(&b);
    return 0;
}

static int cmd_health(const char *base, bool as_json)
{
    gpd_sbuf b;
    char err[2600] = "";
    gpd_sbuf_init(&b, 1 << 20);
    long live = http_get(base, "/healthz", &b, err, sizeof(err));
    gpd_sbuf_free(&b);
    long ready = live ? http_get(base, "/readyz", &b, err, sizeof(err)) : 0;
    gpd_sbuf_free(&b);
    if (as_json)
        printf("{\"url\":\"%s\",\"live\":%s,\"ready\":%s}\n", base, live == 200 ? "true" : "false",
               ready == 200 ? "true" : "false");
    else if (!live)
        printf("%s: unreachable (%s)\n", base, err);
    else
        printf("%s: live=%s ready=%s\n", base, live == 200 ? "yes" : "no", ready == 200 ? "yes" : "no");
    return live == 200 && ready == 200 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *base = getenv("GPUPROXYD_URL");
    bool as_json = false;
    const char *cmd = NULL;
    if (!base)
        base = "http://127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc)
            base = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            as_json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!cmd)
            cmd = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc;
    if (!strcmp(cmd, "models"))
        rc = cmd_models(base, as_json);
    else if (!strcmp(cmd, "health"))
        rc = cmd_health(base, as_json);
    else {
        fprintf(stderr, "gpuproxyctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
