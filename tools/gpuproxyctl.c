/*
 * gpuproxyctl: the command-line client of a running gpuproxyd.
 *
 *   gpuproxyctl [--url URL] [--json] models      list model endpoints
 *   gpuproxyctl [--url URL] health               liveness and readiness
 *   gpuproxyctl reserve --provider P --gpu H100 --count 1 --duration 2h [--runtime R]
 *               [--region US] [--model NAME] [--max-cost 3.5] [--fallback a,b] [--hybrid] [--tpu TYPE]
 *               [--compute gpu|tpu|cpu] [--no-wait]      reserve, with a live progress line
 *   gpuproxyctl list [--status S]                        reservations
 *   gpuproxyctl show ID | release ID | extend ID DURATION
 *
 * URL defaults to $GPUPROXYD_URL, else http://127.0.0.1:8080.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
               "  models                 list the model endpoints (name, port, provider, upstream)\n"
               "  health                 check /healthz and /readyz\n"
               "  reserve [options]      reserve compute; options: --provider vastai|ionet|gcp_tpu|openrouter|local|auto\n"
               "                         --gpu MODEL --count N --duration 2h --runtime NAME --region CC --model NAME\n"
               "                         --max-cost USD_PER_HR --fallback p1,p2 --hybrid --tpu TYPE --compute gpu|tpu|cpu\n"
               "                         --no-wait (default: wait, printing progress, until active, queued or failed)\n"
               "  list [--status S]      list reservations\n"
               "  show ID                one reservation\n"
               "  release ID             release (destroys the instances, closes the port)\n"
               "  extend ID DURATION     add time\n");
}

/* METHOD base+path with an optional JSON body; returns the status, body in out. */
static long http_call(const char *method, const char *base, const char *path, const char *body, gpd_sbuf *out,
                      char *err, size_t errlen)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", base, path);
    CURL *c = curl_easy_init();
    char cerr[CURL_ERROR_SIZE] = "";
    long code = 0;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    else
        snprintf(err, errlen, "%s: %s", url, cerr);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return code;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static void print_reservation_line(json_t *r)
{
    json_t *port = json_object_get(r, "port");
    char portbuf[16] = "-";
    if (json_is_integer(port))
        snprintf(portbuf, sizeof(portbuf), "%lld", (long long)json_integer_value(port));
    printf("%-22s %-12s %-10s %-8s %3lld  %8.3f  %6s  %s\n", jstr(r, "reservation_id"), jstr(r, "status"),
           jstr(r, "provider"), jstr(r, "gpu_model"), (long long)json_integer_value(json_object_get(r, "count")),
           json_number_value(json_object_get(r, "cost_per_hr")), portbuf, jstr(r, "expires_at"));
}

static void print_reservation(json_t *r)
{
    printf("reservation  %s\nstatus       %s\nprovider     %s\ncompute      %s %s x%lld\n", jstr(r, "reservation_id"),
           jstr(r, "status"), jstr(r, "provider"), jstr(r, "compute_type"), jstr(r, "gpu_model"),
           (long long)json_integer_value(json_object_get(r, "count")));
    printf("cost         $%.3f/h (accrued $%.4f)\n", json_number_value(json_object_get(r, "cost_per_hr")),
           json_number_value(json_object_get(r, "accrued_cost")));
    printf("endpoint     %s\nexpires_at   %s\n", jstr(r, "endpoint"), jstr(r, "expires_at"));
    json_t *sel = json_object_get(r, "selection");
    printf("selection    %s\n", jstr(sel, "reason"));
    if (json_object_get(r, "message"))
        printf("message      %s\n", jstr(r, "message"));
    if (json_object_get(r, "queue_position"))
        printf("queue        #%lld\n", (long long)json_integer_value(json_object_get(r, "queue_position")));
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r, "instances"), i, x)
        printf("instance     %s %s %s %s\n", jstr(x, "provider"), jstr(x, "id"), jstr(x, "status"), jstr(x, "endpoint"));
    json_array_foreach(json_object_get(r, "attempts"), i, x)
        printf("attempt      %s %s %s: %s\n", jstr(x, "provider"), jstr(x, "offer"), jstr(x, "outcome"), jstr(x, "reason"));
}

/* Print the answer (JSON or human), return the exit code. */
static int show_answer(long code, gpd_sbuf *b, const char *err, bool as_json, bool list)
{
    if (!code) {
        fprintf(stderr, "gpuproxyctl: %s\n", err);
        return 1;
    }
    json_t *root = b->data ? json_loads(b->data, 0, NULL) : NULL;
    if (code >= 400) {
        const char *msg = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
        fprintf(stderr, "gpuproxyctl: %ld: %s\n", code, msg ? msg : (b->data ? b->data : ""));
        json_decref(root);
        return 1;
    }
    if (as_json) {
        printf("%s\n", b->data ? b->data : "");
    } else if (list) {
        printf("%-22s %-12s %-10s %-8s %3s  %8s  %6s  %s\n", "RESERVATION", "STATUS", "PROVIDER", "GPU", "N", "$/H",
               "PORT", "EXPIRES");
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(root, "reservations"), i, r)
            print_reservation_line(r);
    } else {
        print_reservation(root);
    }
    json_decref(root);
    return 0;
}

static int cmd_reserve(const char *base, bool as_json, int argc, char **argv)
{
    json_t *req = json_object();
    json_t *labels = json_object();
    bool wait = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--hybrid")) {
            json_object_set_new(req, "enable_hybrid", json_true());
            continue;
        }
        if (!strcmp(a, "--no-wait")) {
            wait = false;
            continue;
        }
        if (!v) {
            fprintf(stderr, "gpuproxyctl: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--provider"))
            json_object_set_new(req, "provider", json_string(v));
        else if (!strcmp(a, "--gpu"))
            json_object_set_new(req, "gpu_model", json_string(v));
        else if (!strcmp(a, "--tpu"))
            json_object_set_new(req, "tpu_type", json_string(v));
        else if (!strcmp(a, "--compute"))
            json_object_set_new(req, "compute_type", json_string(v));
        else if (!strcmp(a, "--count"))
            json_object_set_new(req, "count", json_integer(atoll(v)));
        else if (!strcmp(a, "--duration"))
            json_object_set_new(req, "duration", json_string(v));
        else if (!strcmp(a, "--runtime"))
            json_object_set_new(req, "runtime", json_string(v));
        else if (!strcmp(a, "--region"))
            json_object_set_new(req, "region", json_string(v));
        else if (!strcmp(a, "--model"))
            json_object_set_new(labels, "model_name", json_string(v));
        else if (!strcmp(a, "--max-cost"))
            json_object_set_new(req, "max_cost_per_hr", json_real(atof(v)));
        else if (!strcmp(a, "--fallback")) {
            json_t *arr = json_array();
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
                json_array_append_new(arr, json_string(t));
            free(copy);
            json_object_set_new(req, "fallback_providers", arr);
        } else {
            fprintf(stderr, "gpuproxyctl: unknown option %s\n", a);
            return 2;
        }
    }
    if (json_object_size(labels))
        json_object_set_new(req, "labels", labels);
    else
        json_decref(labels);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    gpd_sbuf b;
    char err[2600] = "";
    gpd_sbuf_init(&b, 16 << 20);
    long code = http_call("POST", base, "/api/v1/compute/reserve", body, &b, err, sizeof(err));
    free(body);
    if (!wait || code != 201 || as_json) {
        int rc = show_answer(code, &b, err, as_json, false);
        gpd_sbuf_free(&b);
        return rc;
    }
    json_t *r = json_loads(b.data, 0, NULL);
    char id[128];
    snprintf(id, sizeof(id), "%s", jstr(r, "reservation_id"));
    json_decref(r);
    gpd_sbuf_free(&b);
    /* The progress line: status, provider, attempts, elapsed. */
    bool tty = isatty(STDOUT_FILENO);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/compute/reservations/%s", id);
    for (int t = 0;; t++) {
        gpd_sbuf_init(&b, 16 << 20);
        code = http_call("GET", base, path, NULL, &b, err, sizeof(err));
        json_t *cur = code == 200 ? json_loads(b.data, 0, NULL) : NULL;
        const char *st = jstr(cur, "status");
        if (tty)
            printf("\r\033[K%s  %-12s %-8s attempts=%zu  %ds", id, st, jstr(cur, "provider"),
                   json_array_size(json_object_get(cur, "attempts")), t / 2);
        fflush(stdout);
        bool done = !cur || strcmp(st, "provisioning") != 0;
        if (done) {
            if (tty)
                printf("\n");
            int rc = show_answer(code, &b, err, false, false);
            int ok = cur && !strcmp(st, "active");
            json_decref(cur);
            gpd_sbuf_free(&b);
            return rc ? rc : (ok || !strcmp(st, "queued") ? 0 : 1);
        }
        json_decref(cur);
        gpd_sbuf_free(&b);
        usleep(500 * 1000);
    }
}

static int cmd_simple(const char *method, const char *base, const char *path, const char *body, bool as_json,
                      bool list)
{
    gpd_sbuf b;
    char err[2600] = "";
    gpd_sbuf_init(&b, 64 << 20);
    long code = http_call(method, base, path, body, &b, err, sizeof(err));
    int rc = show_answer(code, &b, err, as_json, list);
    gpd_sbuf_free(&b);
    return rc;
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
    int cmd_at = 0;
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
        } else if (!cmd) {
            cmd = argv[i];
            cmd_at = i;
            break; /* the rest belongs to the command */
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
    else if (!strcmp(cmd, "reserve"))
        rc = cmd_reserve(base, as_json, argc - cmd_at - 1, argv + cmd_at + 1);
    else if (!strcmp(cmd, "list")) {
        char path[256] = "/api/v1/compute/reservations";
        if (argc - cmd_at > 2 && !strcmp(argv[cmd_at + 1], "--status"))
            snprintf(path, sizeof(path), "/api/v1/compute/reservations?status=%s", argv[cmd_at + 2]);
        rc = cmd_simple("GET", base, path, NULL, as_json, true);
    } else if ((!strcmp(cmd, "show") || !strcmp(cmd, "release")) && argc - cmd_at == 2) {
        char path[300];
        snprintf(path, sizeof(path), "/api/v1/compute/reservations/%s", argv[cmd_at + 1]);
        rc = cmd_simple(!strcmp(cmd, "show") ? "GET" : "DELETE", base, path, NULL, as_json, false);
    } else if (!strcmp(cmd, "extend") && argc - cmd_at == 3) {
        char path[300], body[128];
        snprintf(path, sizeof(path), "/api/v1/compute/reservations/%s/extend", argv[cmd_at + 1]);
        snprintf(body, sizeof(body), "{\"duration\":\"%s\"}", argv[cmd_at + 2]);
        rc = cmd_simple("POST", base, path, body, as_json, false);
    }
    else {
        fprintf(stderr, "gpuproxyctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
