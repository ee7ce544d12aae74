#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

static char path[64];

static void write_config(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/gpd-test-%d.toml", getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void clear_env(void)
{
    const char *vars[] = { "GPUPROXYD_LISTEN", "PORT_CUSTOM_MIN", "PORT_CUSTOM_MAX", "PORT_OPENROUTER_MIN",
                           "PORT_OPENROUTER_MAX", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "MAX_GPUS",
                           "GPUPROXYD_WORKERS", "CONFIDENCE_THRESHOLD" };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

TestSuite(config, .init = clear_env);

Test(config, defaults)
{
    gpd_config c;
    char err[512];
    cr_assert_eq(gpd_config_load(NULL, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.listen_host, "127.0.0.1");
    cr_assert_eq(c.listen_port, 8080);
    cr_assert_eq(c.max_body, 16 * 1024 * 1024);
    cr_assert_eq(c.max_header_bytes, 64 * 1024);
    cr_assert_eq(c.header_timeout_ms, 10000);
    cr_assert_eq(c.upstream_timeout_ms, 300000);
    cr_assert_eq(c.port_min[GPD_TIER_HOSTED], 2000);
    cr_assert_eq(c.port_max[GPD_TIER_CUSTOM], 15000);
    cr_assert_gt(c.workers, 0);
    gpd_config_free(&c);
}

Test(config, file_and_models)
{
    write_config("[server]\nlisten = \"0.0.0.0:9000\"\nmax_body = \"1MB\"\nidle_timeout = \"2m\"\n"
                 "[[models]]\nname = \"a\"\nprovider = \"openrouter\"\nupstream_model = \"x/y\"\nport = 2001\n"
                 "[[models]]\nname = \"b\"\nupstream_urls = [\"http://127.0.0.1:1/v1\", \"http://127.0.0.1:2/v1\"]\n"
                 "prompt_usd_per_mtok = 0.5\n");
    gpd_config c;
    char err[512];
    cr_assert_eq(gpd_config_load(path, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.listen_port, 9000);
    cr_assert_eq(c.max_body, 1024 * 1024);
    cr_assert_eq(c.idle_timeout_ms, 120000);
    cr_assert_eq(c.n_models, 2);
    cr_assert_eq(c.models[0].tier, GPD_TIER_HOSTED);
    cr_assert_eq(c.models[0].port, 2001);
    cr_assert_eq(c.models[1].n_upstreams, 2);
    cr_assert_float_eq(c.models[1].prompt_usd_per_mtok, 0.5, 1e-9);
    cr_assert_lt(c.models[1].completion_usd_per_mtok, 0);
    gpd_config_free(&c);
    unlink(path);
}

Test(config, env_overrides_file)
{
    write_config("[server]\nlisten = \"127.0.0.1:9000\"\n[ports]\ncustom_min = 3000\n");
    setenv("GPUPROXYD_LISTEN", "127.0.0.1:9100", 1);
    setenv("PORT_CUSTOM_MIN", "4000", 1);
    setenv("OPENROUTER_API_KEY", "sk-or-1", 1);
    gpd_config c;
    char err[512];
    cr_assert_eq(gpd_config_load(path, &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.listen_port, 9100);
    cr_assert_eq(c.port_min[GPD_TIER_CUSTOM], 4000);
    cr_assert_str_eq(c.openrouter_api_key, "sk-or-1");
    gpd_config_free(&c);
    unlink(path);
}

static void expect_error(const char *text, const char *needle)
{
    write_config(text);
    gpd_config c;
    char err[512] = "";
    cr_assert_eq(gpd_config_load(path, &c, err, sizeof(err)), -1, "accepted: %s", text);
    cr_assert_not_null(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
    unlink(path);
}

Test(config, errors_name_file_line_and_key)
{
    expect_error("[server]\n\nworkers = \"two\"\n", ":3: key 'workers': expected an integer");
    expect_error("[server]\nmax_body = \"16XB\"\n", ":2: key 'max_body'");
    expect_error("[server]\nheader_timeout = \"soon\"\n", "key 'header_timeout'");
    expect_error("[server]\nlisten = \"nohostport\"\n", "key 'listen'");
    expect_error("[server]\nbogus = 1\n", "key 'bogus': unknown key in [server]");
    expect_error("[nosuch]\na = 1\n", "unknown section 'nosuch'");
    expect_error("[[models]]\nname = \"a\"\nport = \"abc\"\n", ":3: key 'port'");
    expect_error("[[models]]\nname = \"a\"\n", "'upstream_url'");
    expect_error("[[models]]\nname = \"a\"\nupstream_url = \"http://h/v1\"\nport = 99\n", "outside the custom range");
    expect_error("[[models]]\nname = \"a\"\nupstream_url = \"http://h/v1\"\n[[models]]\nname = \"a\"\n"
                 "upstream_url = \"http://h/v1\"\n",
                 "duplicate model name 'a'");
    expect_error("[[models]]\nname = \"a\"\nprovider = \"aws\"\n", "key 'provider'");
    expect_error("[distillation]\nconfidence_threshold = 1.5\n", "confidence_threshold");
}

Test(config, bad_environment_is_named)
{
    setenv("PORT_CUSTOM_MIN", "lots", 1);
    gpd_config c;
    char err[512];
    cr_assert_eq(gpd_config_load(NULL, &c, err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "PORT_CUSTOM_MIN"), "%s", err);
}

Test(config, example_config_is_valid)
{
    gpd_config c;
    char err[512];
    cr_assert_eq(gpd_config_load("examples/gpuproxyd.toml", &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_geq(c.n_models, 1);
    gpd_config_free(&c);
}
