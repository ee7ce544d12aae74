/*
 * The local provider: this machine's GPUs (NVML when the driver is there,
 * else nvidia-smi), or CPU slots on a machine without GPUs.  It spawns the
 * runtime itself, with CUDA_VISIBLE_DEVICES set to the GPUs it was given,
 * through gpd-runtime-exec, which asks the kernel to kill the runtime when
 * the daemon dies (PR_SET_PDEATHSIG): no runtime outlives the daemon, even
 * after kill -9.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "compute/provider.h"
#include "core/log.h"

#define MAX_LOCAL_GPUS 64
#define MAX_ARGS 64
#define KILL_GRACE_MS 3000

typedef struct local_gpu {
    char model[48];
    bool busy;
} local_gpu;

typedef struct local_inst local_inst;

typedef struct local_provider {
    gpd_provider base;
    const gpd_config *cfg;
    local_gpu gpus[MAX_LOCAL_GPUS];
    int n_gpus;
    int cpu_slots, cpu_busy;
    local_inst *insts;
    struct deferred *deferred;  /* callbacks not yet run: cancelled at free */
    char exec_path[PATH_MAX];   /* gpd-runtime-exec, beside the daemon */
    unsigned next_id;
} local_provider;

struct local_inst {
    local_inst *next;
    local_provider *lp;
    char id[64];
    char label[96];
    uv_process_t proc;
    uv_timer_t kill_timer;
    int port;
    int gpu_idx[MAX_LOCAL_GPUS];
    int n_gpu;
    int cpu;
    bool exited;
    int64_t exit_status;
    int term_signal;
    bool destroying;
    gpd_done_cb destroy_cb;
    void *destroy_ctx;
    int handles_open;
};

/* ---- deferred callbacks: never inside the call ---- */

typedef struct deferred {
    uv_timer_t t;
    struct deferred *prev, *next;
    void (*run)(struct deferred *);
    local_provider *lp;
    enum gpd_prov_err err;
    char msg[256];
    char id[64];
    gpd_offer *offers;
    size_t n;
    gpd_instance_status st;
    gpd_instance_status *list;
    void *cb;
    void *ctx;
} deferred;

static void deferred_closed(uv_handle_t *h)
{
    deferred *d = h->data;
    free(d->offers);
    free(d->list);
    free(d);
}

static void deferred_unlink(deferred *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else if (d->lp->deferred == d)
        d->lp->deferred = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

static void deferred_fire(uv_timer_t *t)
{
    deferred *d = t->data;
    deferred_unlink(d);
    d->run(d);
    uv_close((uv_handle_t *)&d->t, deferred_closed);
}

static deferred *defer(local_provider *lp, void (*run)(deferred *), void *cb, void *ctx)
{
    deferred *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->lp = lp;
    d->run = run;
    d->cb = cb;
    d->ctx = ctx;
    uv_timer_init(lp->base.loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, deferred_fire, 0, 0);
    d->next = lp->deferred;
    if (lp->deferred)
        lp->deferred->prev = d;
    lp->deferred = d;
    return d;
}

/* ---- detection ---- */

typedef int (*nvml_init_fn)(void);
typedef int (*nvml_count_fn)(unsigned *);
typedef int (*nvml_handle_fn)(unsigned, void **);
typedef int (*nvml_name_fn)(void *, char *, unsigned);

static int detect_nvml(local_provider *lp)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return -1;
    nvml_init_fn init = (nvml_init_fn)dlsym(h, "nvmlInit_v2");
    nvml_count_fn count = (nvml_count_fn)dlsym(h, "nvmlDeviceGetCount_v2");
    nvml_handle_fn handle = (nvml_handle_fn)dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    nvml_name_fn name = (nvml_name_fn)dlsym(h, "nvmlDeviceGetName");
    unsigned n = 0;
    if (!init || !count || !handle || !name || init() != 0 || count(&n) != 0) {
        dlclose(h);
        return -1;
    }
    for (unsigned i = 0; i < n && lp->n_gpus < MAX_LOCAL_GPUS; i++) {
        void *dev;
        char buf[96] = "";
        if (handle(i, &dev) != 0 || name(dev, buf, sizeof(buf)) != 0)
            continue;
        const char *norm = gpd_gpu_model_normalise(buf);
        snprintf(lp->gpus[lp->n_gpus++].model, sizeof(lp->gpus[0].model), "%.47s", norm ? norm : buf);
    }
    /* The library stays loaded: NVML does not like being unloaded. */
    return 0;
}

static int detect_nvidia_smi(local_provider *lp)
{
    FILE *f = popen("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null", "r");
    if (!f)
        return -1;
    char line[256];
    while (fgets(line, sizeof(line), f) && lp->n_gpus < MAX_LOCAL_GPUS) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!*line)
            continue;
        const char *norm = gpd_gpu_model_normalise(line);
        snprintf(lp->gpus[lp->n_gpus++].model, sizeof(lp->gpus[0].model), "%.47s", norm ? norm : line);
    }
    return pclose(f) == 0 && lp->n_gpus > 0 ? 0 : -1;
}

/* ---- search ---- */

static void run_offers(deferred *d)
{
    ((gpd_offers_cb)d->cb)(d->ctx, d->err, d->msg[0] ? d->msg : NULL, d->offers, d->n);
}

static void local_search(gpd_provider *p, const gpd_offer_query *q, gpd_offers_cb cb, void *ctx)
{
    local_provider *lp = (local_provider *)p;
    deferred *d = defer(lp, run_offers, (void *)cb, ctx);
    if (!d)
        return;
    d->offers = calloc((size_t)lp->n_gpus + 2, sizeof(gpd_offer));
    if (!d->offers)
        return;
    /* One offer per GPU model, for as many of them as are free. */
    for (int i = 0; i < lp->n_gpus; i++) {
        if (lp->gpus[i].busy)
            continue;
        gpd_offer *o = NULL;
        for (size_t k = 0; k < d->n; k++)
            if (!strcmp(d->offers[k].gpu_model, lp->gpus[i].model))
                o = &d->offers[k];
        if (!o) {
            o = &d->offers[d->n++];
            snprintf(o->provider, sizeof(o->provider), "local");
            snprintf(o->id, sizeof(o->id), "gpu:%s", lp->gpus[i].model);
            snprintf(o->gpu_model, sizeof(o->gpu_model), "%s", lp->gpus[i].model);
            snprintf(o->compute_type, sizeof(o->compute_type), "gpu");
            snprintf(o->region, sizeof(o->region), "local");
            o->spot_price_per_hr = -1;
            o->reliability = 1;
        }
        o->count++;
        o->available = o->count;
    }
    if (lp->cpu_slots > lp->cpu_busy) {
        gpd_offer *o = &d->offers[d->n++];
        snprintf(o->provider, sizeof(o->provider), "local");
        snprintf(o->id, sizeof(o->id), "cpu");
        snprintf(o->gpu_model, sizeof(o->gpu_model), "cpu");
        snprintf(o->compute_type, sizeof(o->compute_type), "cpu");
        snprintf(o->region, sizeof(o->region), "local");
        o->count = lp->cpu_slots - lp->cpu_busy;
        o->available = o->count;
        o->spot_price_per_hr = -1;
        o->reliability = 1;
    }
    (void)q;
}

/* ---- create ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Fill {port} {model} {gpus} into the configured command. */
static void expand(const char *tmpl, char *out, size_t outlen, int port, const char *model, const char *gpus)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 1 < outlen;) {
        const char *val = NULL;
        size_t skip = 0;
        char num[16];
        if (!strncmp(p, "{port}", 6)) {
            snprintf(num, sizeof(num), "%d", port);
            val = num, skip = 6;
        } else if (!strncmp(p, "{model}", 7)) {
            val = model ? model : "", skip = 7;
        } else if (!strncmp(p, "{gpus}", 6)) {
            val = gpus, skip = 6;
        }
        if (val) {
            size_t n = strlen(val);
            if (o + n >= outlen)
                break;
            memcpy(out + o, val, n);
            o += n;
            p += skip;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

/* Split a command line on spaces, honouring single and double quotes; no
 * shell runs, so the runtime itself is the child the kernel kills. */
static int split_args(char *line, char **argv, int max)
{
    int n = 0;
    char *p = line;
    while (*p && n < max - 1) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        char *w = p, *o = p;
        char quote = 0;
        while (*p && (quote || (*p != ' ' && *p != '\t'))) {
            if (!quote && (*p == '\'' || *p == '"'))
                quote = *p++;
            else if (quote && *p == quote)
                quote = 0, p++;
            else
                *o++ = *p++;
        }
        if (*p)
            p++;
        *o = '\0';
        argv[n++] = w;
    }
    argv[n] = NULL;
    return n;
}

static void inst_handle_closed(uv_handle_t *h)
{
    local_inst *li = h->data;
    if (--li->handles_open == 0)
        free(li);
}

static void inst_release(local_inst *li)
{
    local_provider *lp = li->lp;
    for (int i = 0; i < li->n_gpu; i++)
        lp->gpus[li->gpu_idx[i]].busy = false;
    lp->cpu_busy -= li->cpu;
    li->n_gpu = li->cpu = 0;
}

static void inst_unlink(local_inst *li)
{
    for (local_inst **pp = &li->lp->insts; *pp; pp = &(*pp)->next) {
        if (*pp == li) {
            *pp = li->next;
            return;
        }
    }
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int term_signal)
{
    local_inst *li = proc->data;
    li->exited = true;
    li->exit_status = status;
    li->term_signal = term_signal;
    gpd_log_info("local runtime exited", "\"instance\":\"%s\",\"status\":%lld,\"signal\":%d", li->id,
                 (long long)status, term_signal);
    inst_release(li);
    if (li->destroying) {
        gpd_done_cb cb = li->destroy_cb;
        void *ctx = li->destroy_ctx;
        li->destroy_cb = NULL;
        inst_unlink(li);
        uv_timer_stop(&li->kill_timer);
        uv_close((uv_handle_t *)&li->kill_timer, inst_handle_closed);
        uv_close((uv_handle_t *)&li->proc, inst_handle_closed);
        if (cb)
            cb(ctx, GPD_PROV_OK, NULL);
    }
}

static void run_create(deferred *d)
{
    ((gpd_create_cb)d->cb)(d->ctx, d->err, d->msg[0] ? d->msg : NULL, d->id[0] ? d->id : NULL);
}

static void local_create(gpd_provider *p, const gpd_instance_spec *spec, gpd_create_cb cb, void *ctx)
{
    local_provider *lp = (local_provider *)p;
    deferred *d = defer(lp, run_create, (void *)cb, ctx);
    if (!d)
        return;
    const gpd_runtime *rt = spec->runtime;
    if (!rt || !rt->command) {
        d->err = GPD_PROV_BAD_REQUEST;
        snprintf(d->msg, sizeof(d->msg), "runtime '%s' has no 'command' for the local provider",
                 rt ? rt->name : "(none)");
        return;
    }
    int want = spec->offer->count > 0 ? spec->offer->count : 1;
    bool cpu = !strcmp(spec->offer->compute_type, "cpu");
    local_inst *li = calloc(1, sizeof(*li));
    if (!li) {
        d->err = GPD_PROV_FAILED;
        snprintf(d->msg, sizeof(d->msg), "out of memory");
        return;
    }
    li->lp = lp;
    char gpus[256] = "";
    if (cpu) {
        if (lp->cpu_slots - lp->cpu_busy < want) {
            free(li);
            d->err = GPD_PROV_NO_CAPACITY;
            snprintf(d->msg, sizeof(d->msg), "only %d CPU slots free", lp->cpu_slots - lp->cpu_busy);
            return;
        }
        li->cpu = want;
    } else {
        for (int i = 0; i < lp->n_gpus && li->n_gpu < want; i++)
            if (!lp->gpus[i].busy && !strcmp(lp->gpus[i].model, spec->offer->gpu_model))
                li->gpu_idx[li->n_gpu++] = i;
        if (li->n_gpu < want) {
            int free_gpus = li->n_gpu;
            free(li);
            d->err = GPD_PROV_NO_CAPACITY;
            snprintf(d->msg, sizeof(d->msg), "only %d free %s GPUs here, %d asked", free_gpus,
                     spec->offer->gpu_model, want);
            return;
        }
        for (int i = 0; i < li->n_gpu; i++) {
            char n[8];
            snprintf(n, sizeof(n), "%s%d", i ? "," : "", li->gpu_idx[i]);
            strncat(gpus, n, sizeof(gpus) - strlen(gpus) - 1);
        }
    }
    li->port = free_port();
    char cmd[4096];
    expand(rt->command, cmd, sizeof(cmd), li->port, spec->model, gpus);
    char *args[MAX_ARGS + 2];
    int argc = 0;
    if (lp->exec_path[0])
        args[argc++] = lp->exec_path;
    int n = split_args(cmd, args + argc, MAX_ARGS);
    if (n == 0) {
        free(li);
        d->err = GPD_PROV_BAD_REQUEST;
        snprintf(d->msg, sizeof(d->msg), "runtime '%s': empty command", rt->name);
        return;
    }
    /* The environment: ours, plus the GPUs and the reservation. */
    extern char **environ;
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = calloc(nenv + 4, sizeof(char *));
    char cuda[300], label[128], port_env[32];
    snprintf(cuda, sizeof(cuda), "CUDA_VISIBLE_DEVICES=%s", gpus);
    snprintf(label, sizeof(label), "GPD_LABEL=%s", spec->label);
    snprintf(port_env, sizeof(port_env), "PORT=%d", li->port);
    size_t e = 0;
    for (size_t i = 0; env && i < nenv; i++)
        if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) != 0 && strncmp(environ[i], "PORT=", 5) != 0)
            env[e++] = environ[i];
    if (env) {
        if (!cpu)
            env[e++] = cuda;
        env[e++] = label;
        env[e++] = port_env;
    }
    uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE }, { .flags = UV_INHERIT_FD, .data.fd = 2 },
                                      { .flags = UV_INHERIT_FD, .data.fd = 2 } };
    uv_process_options_t opts = { .exit_cb = on_exit_cb, .file = args[0], .args = args, .env = env,
                                  .stdio_count = 3, .stdio = stdio };
    li->proc.data = li;
    int rc = uv_spawn(p->loop, &li->proc, &opts);
    free(env);
    if (rc != 0) {
        d->err = GPD_PROV_FAILED;
        snprintf(d->msg, sizeof(d->msg), "cannot start runtime '%s': %s", rt->name, uv_strerror(rc));
        /* uv_spawn initialised the handle even on failure. */
        li->handles_open = 1;
        uv_close((uv_handle_t *)&li->proc, inst_handle_closed);
        return;
    }
    uv_timer_init(p->loop, &li->kill_timer);
    li->kill_timer.data = li;
    li->handles_open = 2;
    for (int i = 0; i < li->n_gpu; i++)
        lp->gpus[li->gpu_idx[i]].busy = true;
    lp->cpu_busy += li->cpu;
    snprintf(li->id, sizeof(li->id), "local-%d", li->proc.pid);
    snprintf(li->label, sizeof(li->label), "%s", spec->label);
    li->next = lp->insts;
    lp->insts = li;
    snprintf(d->id, sizeof(d->id), "%s", li->id);
    gpd_log_info("local runtime started", "\"instance\":\"%s\",\"runtime\":\"%s\",\"port\":%d,\"gpus\":\"%s\"", li->id,
                 rt->name, li->port, gpus);
}

/* ---- status, destroy, list ---- */

static local_inst *find_inst(local_provider *lp, const char *id)
{
    for (local_inst *li = lp->insts; li; li = li->next)
        if (!strcmp(li->id, id))
            return li;
    return NULL;
}

static void fill_status(const local_inst *li, gpd_instance_status *st)
{
    snprintf(st->id, sizeof(st->id), "%s", li->id);
    snprintf(st->label, sizeof(st->label), "%s", li->label);
    st->cost_per_hr = 0;
    if (li->exited) {
        st->state = GPD_INSTANCE_FAILED;
        snprintf(st->message, sizeof(st->message), "runtime exited (status %lld, signal %d)",
                 (long long)li->exit_status, li->term_signal);
    } else {
        st->state = GPD_INSTANCE_RUNNING;
        snprintf(st->endpoint, sizeof(st->endpoint), "http://127.0.0.1:%d", li->port);
    }
}

static void run_status(deferred *d)
{
    ((gpd_status_cb)d->cb)(d->ctx, d->err, d->msg[0] ? d->msg : NULL, &d->st);
}

static void local_status(gpd_provider *p, const char *id, gpd_status_cb cb, void *ctx)
{
    local_provider *lp = (local_provider *)p;
    deferred *d = defer(lp, run_status, (void *)cb, ctx);
    if (!d)
        return;
    local_inst *li = find_inst(lp, id);
    if (!li) {
        d->err = GPD_PROV_NOT_FOUND;
        snprintf(d->st.id, sizeof(d->st.id), "%s", id);
        d->st.state = GPD_INSTANCE_GONE;
        return;
    }
    fill_status(li, &d->st);
}

static void kill_hard(uv_timer_t *t)
{
    local_inst *li = t->data;
    if (!li->exited)
        uv_process_kill(&li->proc, SIGKILL);
}

static void run_done(deferred *d)
{
    if (d->cb)
        ((gpd_done_cb)d->cb)(d->ctx, d->err, d->msg[0] ? d->msg : NULL);
}

static void local_destroy(gpd_provider *p, const char *id, gpd_done_cb cb, void *ctx)
{
    local_provider *lp = (local_provider *)p;
    local_inst *li = find_inst(lp, id);
    if (!li || li->exited) {
        if (li) {
            inst_unlink(li);
            uv_close((uv_handle_t *)&li->kill_timer, inst_handle_closed);
            uv_close((uv_handle_t *)&li->proc, inst_handle_closed);
        }
        defer(lp, run_done, (void *)cb, ctx); /* gone already: that is destroyed */
        return;
    }
    /* TERM first, KILL if it lingers; the callback comes when it has exited. */
    li->destroying = true;
    li->destroy_cb = cb;
    li->destroy_ctx = ctx;
    uv_process_kill(&li->proc, SIGTERM);
    uv_timer_start(&li->kill_timer, kill_hard, KILL_GRACE_MS, 0);
}

static void run_list(deferred *d)
{
    ((gpd_list_cb)d->cb)(d->ctx, d->err, NULL, d->list, d->n);
}

static void local_list_ours(gpd_provider *p, gpd_list_cb cb, void *ctx)
{
    local_provider *lp = (local_provider *)p;
    deferred *d = defer(lp, run_list, (void *)cb, ctx);
    if (!d)
        return;
    size_t n = 0;
    for (local_inst *li = lp->insts; li; li = li->next)
        n++;
    d->list = calloc(n + 1, sizeof(*d->list));
    for (local_inst *li = lp->insts; li && d->list; li = li->next)
        fill_status(li, &d->list[d->n++]);
}

static void local_free(gpd_provider *p)
{
    local_provider *lp = (local_provider *)p;
    /* Callbacks not yet run never will: their callers are going away too. */
    while (lp->deferred) {
        deferred *d = lp->deferred;
        deferred_unlink(d);
        uv_timer_stop(&d->t);
        uv_close((uv_handle_t *)&d->t, deferred_closed);
    }
    /* Whatever still runs is killed now: runtimes never outlive the daemon. */
    while (lp->insts) {
        local_inst *li = lp->insts;
        lp->insts = li->next;
        if (!li->exited)
            uv_process_kill(&li->proc, SIGKILL);
        uv_close((uv_handle_t *)&li->kill_timer, inst_handle_closed);
        uv_close((uv_handle_t *)&li->proc, inst_handle_closed);
    }
    free(lp->base.base_url);
    free(lp);
}

static const gpd_provider_ops local_ops = {
    .name = "local",
    .search = local_search,
    .create = local_create,
    .status = local_status,
    .destroy = local_destroy,
    .list_ours = local_list_ours,
    .extend = NULL,
    .free = local_free,
};

gpd_provider *gpd_local_new(uv_loop_t *loop, const gpd_config *cfg)
{
    local_provider *lp = calloc(1, sizeof(*lp));
    if (!lp)
        return NULL;
    lp->base.ops = &local_ops;
    lp->base.loop = loop;
    lp->cfg = cfg;
    lp->cpu_slots = (int)cfg->local_cpu_slots;
    if (detect_nvml(lp) != 0)
        detect_nvidia_smi(lp);
    /* gpd-runtime-exec sits beside the daemon's binary. */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(lp->exec_path, sizeof(lp->exec_path), "%.4000s/gpd-runtime-exec", self);
            if (access(lp->exec_path, X_OK) != 0)
                lp->exec_path[0] = '\0';
        }
    }
    if (!lp->exec_path[0])
        gpd_log_warn("gpd-runtime-exec not found beside gpuproxyd: local runtimes would survive a crash", NULL);
    gpd_log_info("local provider", "\"gpus\":%d,\"cpu_slots\":%d", lp->n_gpus, lp->cpu_slots);
    return &lp->base;
}
