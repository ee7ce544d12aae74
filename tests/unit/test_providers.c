/*
 * The pure parts of the provider clients: names, labels, the request
 * bodies each provider gets, the mapping of each provider's answers (canned
 * from shared/docs/provider-apis.md and the fakes) to our states and
 * errors, the JWT assertion, and http_call's retries against a scripted
 * in-process server.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "compute/provider.h"
#include "compute/providers/http_call.h"
#include "compute/providers/providers_internal.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    cr_assert_not_null(j, "bad test JSON: %s (%s)", e.text, text);
    return j;
}

/* ---- names, labels, models ---- */

Test(provider, enum_names)
{
    cr_assert_str_eq(gpd_prov_err_name(GPD_PROV_OK), "ok");
    cr_assert_str_eq(gpd_prov_err_name(GPD_PROV_NO_CAPACITY), "no_capacity");
    cr_assert_str_eq(gpd_prov_err_name(GPD_PROV_QUOTA), "quota");
    cr_assert_str_eq(gpd_prov_err_name(GPD_PROV_FAILED), "failed");
    cr_assert_str_eq(gpd_prov_err_name((enum gpd_prov_err)99), "unknown");
    cr_assert_str_eq(gpd_instance_state_name(GPD_INSTANCE_RUNNING), "running");
    cr_assert_str_eq(gpd_instance_state_name(GPD_INSTANCE_GONE), "gone");
}

Test(provider, labels)
{
    char l[96];
    gpd_label_for("res-123", l, sizeof(l));
    cr_assert_str_eq(l, "gpd-res-123");
    cr_assert(gpd_label_is_ours(l));
    gpd_label_for("Res_AB.9", l, sizeof(l));
    cr_assert_str_eq(l, "gpd-res-ab-9");
    gpd_label_for("x\xc3\xa9", l, sizeof(l)); /* non-ASCII: each byte becomes '-', trailing dropped */
    cr_assert_str_eq(l, "gpd-x");
    char long_id[200];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    long_id[58] = '-'; /* cut falls right after a '-' at 63: no trailing dash */
    gpd_label_for(long_id, l, sizeof(l));
    cr_assert_leq(strlen(l), 63);
    cr_assert_neq(l[strlen(l) - 1], '-');
    char small[8];
    gpd_label_for("res-123", small, sizeof(small));
    cr_assert_str_eq(small, "gpd-res");
    cr_assert_not(gpd_label_is_ours("gpd-"));
    cr_assert_not(gpd_label_is_ours("other-1"));
    cr_assert_not(gpd_label_is_ours(NULL));
    cr_assert(gpd_label_is_ours("gpd-res-dead"));
}

Test(provider, gpu_model_normalise)
{
    static const char *const cases[][2] = {
        { "H100", "H100" },          { "H100 SXM", "H100" },         { "H100 PCIE", "H100" },
        { "H100 NVL", "H100" },      { "NVIDIA H100 80GB HBM3", "H100" }, { "h100-sxm5-80gb", "H100" },
        { "H200", "H200" },          { "NVIDIA H200 NVL", "H200" },  { "A100", "A100" },
        { "A100 SXM4", "A100" },     { "A100-SXM4-80GB", "A100" },   { "A100 PCIE", "A100" },
        { "A100 SXM4 80GB", "A100" }, { "NVIDIA A100-SXM4-40GB", "A100" }, { "A10", "A10" },
        { "NVIDIA A10", "A10" },     { "A10G", "A10G" },             { "NVIDIA A10G", "A10G" },
        { "L4", "L4" },              { "NVIDIA L4", "L4" },          { "L40S", "L40S" },
        { "NVIDIA L40S", "L40S" },   { "RTX 4090", "RTX4090" },      { "RTX4090", "RTX4090" },
        { "GeForce RTX 4090", "RTX4090" }, { "NVIDIA GeForce RTX 3090", "RTX3090" }, { "rtx_3090", "RTX3090" },
        { "RTX A6000", "A6000" },    { "NVIDIA RTX A6000", "A6000" }, { "A6000", "A6000" },
        { "Tesla V100", "V100" },    { "V100-SXM2-16GB", "V100" },   { "Tesla T4", "T4" },
        { "T4", "T4" },              { "B200", "B200" },             { "NVIDIA B200", "B200" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = gpd_gpu_model_normalise(cases[i][0]);
        cr_assert_not_null(got, "%s -> NULL", cases[i][0]);
        cr_assert_str_eq(got, cases[i][1], "%s -> %s", cases[i][0], got);
    }
    static const char *const unknown[] = { "GH200", "L40", "RTX 6000 Ada", "A40", "MI300X", "", "NVIDIA", "A1000" };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        cr_assert_null(gpd_gpu_model_normalise(unknown[i]), "%s should be unknown", unknown[i]);
    cr_assert_null(gpd_gpu_model_normalise(NULL));
    size_t n = 0;
    for (; gpd_gpu_models[n]; n++)
        cr_assert_str_eq(gpd_gpu_model_normalise(gpd_gpu_models[n]), gpd_gpu_models[n]);
    cr_assert_eq(n, 13);
}

Test(provider, runtime_recipe_helpers)
{
    char out[128];
    cr_assert_eq(gpd__fill_template("--model {model} --port {port} -tp {gpus}", "m/x", 8000, 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "--model m/x --port 8000 -tp 2");
    cr_assert_eq(gpd__fill_template("{model}{model}", "abcdef", 1, 1, out, 8), -1);
    gpd_runtime rt = { .name = "vllm", .image = "img", .port = 8000,
                       .args = "--model {model} --served-model-name 'my model' \"--x=a b\"" };
    json_t *a = gpd__runtime_args(&rt, "org/m", 1);
    char *s = json_dumps(a, JSON_COMPACT);
    cr_assert_str_eq(s, "[\"--model\",\"org/m\",\"--served-model-name\",\"my model\",\"--x=a b\"]");
    free(s);
    json_decref(a);
    rt.args = NULL;
    a = gpd__runtime_args(&rt, "m", 1);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    char q[64] = "x=";
    cr_assert_eq(gpd__shell_quote("it's", q, sizeof(q)), 0);
    cr_assert_str_eq(q, "x='it'\\''s'");
}

Test(provider, port_memo)
{
    static gpd__port_memo m;
    memset(&m, 0, sizeof(m));
    cr_assert_eq(gpd__port_memo_get(&m, "1"), 0);
    gpd__port_memo_put(&m, "1", 8000);
    gpd__port_memo_put(&m, "2", 9000);
    gpd__port_memo_put(&m, "1", 8001);
    cr_assert_eq(gpd__port_memo_get(&m, "1"), 8001);
    cr_assert_eq(gpd__port_memo_get(&m, "2"), 9000);
    for (int i = 0; i < GPD__PORT_MEMO + 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "x%d", i);
        gpd__port_memo_put(&m, id, i + 1);
    }
    cr_assert_eq(gpd__port_memo_get(&m, "x0"), 0); /* oldest forgotten */
    cr_assert_eq(gpd__port_memo_get(&m, "x260"), 261);
}

/* ---- http_call: mapping and messages ---- */

Test(http_call, classify)
{
    cr_assert_eq(gpd_http_classify(200, "", 0), GPD_PROV_OK);
    cr_assert_eq(gpd_http_classify(204, NULL, 0), GPD_PROV_OK);
    cr_assert_eq(gpd_http_classify(401, "", 0), GPD_PROV_AUTH);
    cr_assert_eq(gpd_http_classify(403, "{}", 2), GPD_PROV_AUTH);
    const char *quota = "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"reason\":\"quotaExceeded\"}]}}";
    cr_assert_eq(gpd_http_classify(429, quota, strlen(quota)), GPD_PROV_QUOTA);
    cr_assert_eq(gpd_http_classify(403, quota, strlen(quota)), GPD_PROV_QUOTA);
    const char *legacy = "{\"error\":{\"errors\":[{\"reason\":\"quotaExceeded\"}]}}";
    cr_assert_eq(gpd_http_classify(403, legacy, strlen(legacy)), GPD_PROV_QUOTA);
    const char *rate = "{\"error\":{\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"reason\":\"RATE_LIMIT_EXCEEDED\"}]}}";
    cr_assert_eq(gpd_http_classify(429, rate, strlen(rate)), GPD_PROV_RATE_LIMITED);
    const char *bare = "{\"error\":{\"status\":\"RESOURCE_EXHAUSTED\"}}";
    cr_assert_eq(gpd_http_classify(429, bare, strlen(bare)), GPD_PROV_QUOTA);
    cr_assert_eq(gpd_http_classify(429, "{\"detail\":\"Too Many Requests\"}", 30), GPD_PROV_RATE_LIMITED);
    cr_assert_eq(gpd_http_classify(400, "", 0), GPD_PROV_BAD_REQUEST);
    cr_assert_eq(gpd_http_classify(422, "", 0), GPD_PROV_BAD_REQUEST);
    cr_assert_eq(gpd_http_classify(404, "", 0), GPD_PROV_NOT_FOUND);
    cr_assert_eq(gpd_http_classify(410, "", 0), GPD_PROV_NOT_FOUND);
    cr_assert_eq(gpd_http_classify(408, "", 0), GPD_PROV_TRANSIENT);
    cr_assert_eq(gpd_http_classify(500, "", 0), GPD_PROV_TRANSIENT);
    cr_assert_eq(gpd_http_classify(503, "", 0), GPD_PROV_TRANSIENT);
    cr_assert_eq(gpd_http_classify(409, "", 0), GPD_PROV_FAILED);
    cr_assert_eq(gpd_http_classify(302, "", 0), GPD_PROV_FAILED);
}

static void msg_of(const char *body, char *out, size_t outlen)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    gpd_http_error_message(j, body, strlen(body), out, outlen);
    json_decref(j);
}

Test(http_call, error_messages)
{
    char m[256];
    msg_of("{\"detail\":\"no capacity\"}", m, sizeof(m));
    cr_assert_str_eq(m, "no capacity");
    msg_of("{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\",\"hardware_id\"],\"msg\":\"Field required\"}]}", m,
           sizeof(m));
    cr_assert_str_eq(m, "Field required (body.hardware_id)");
    msg_of("{\"detail\":[{\"loc\":[\"query\",\"location_ids\",0],\"msg\":\"bad\"}]}", m, sizeof(m));
    cr_assert_str_eq(m, "bad (query.location_ids.0)");
    msg_of("{\"error\":{\"code\":404,\"message\":\"Resource 'x' was not found\",\"status\":\"NOT_FOUND\"}}", m,
           sizeof(m));
    cr_assert_str_eq(m, "Resource 'x' was not found");
    msg_of("{\"success\":false,\"error\":\"no_such_ask\",\"msg\":\"Instance type no longer available.\"}", m,
           sizeof(m));
    cr_assert_str_eq(m, "no_such_ask: Instance type no longer available.");
    msg_of("{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}", m, sizeof(m));
    cr_assert_str_eq(m, "invalid_grant: Invalid JWT Signature.");
    msg_of("{\"message\":\"boom\"}", m, sizeof(m));
    cr_assert_str_eq(m, "boom");
    msg_of("<html>\nBad Gateway</html>", m, sizeof(m));
    cr_assert_str_eq(m, "<html> Bad Gateway</html>");
    char tiny[6];
    msg_of("{\"detail\":\"a long message\"}", tiny, sizeof(tiny));
    cr_assert_str_eq(tiny, "a lon");
}

Test(http_call, backoff_retry_after_escape)
{
    cr_assert_eq(gpd_http_backoff_ms(1), 200);
    cr_assert_eq(gpd_http_backoff_ms(2), 300);
    cr_assert_eq(gpd_http_backoff_ms(3), 450);
    cr_assert_eq(gpd_http_backoff_ms(4), 675);
    cr_assert_eq(gpd_http_parse_retry_after("2", 1, 0), 2000);
    cr_assert_eq(gpd_http_parse_retry_after(" 0", 2, 0), 0);
    cr_assert_eq(gpd_http_parse_retry_after("soon", 4, 0), -1);
    cr_assert_eq(gpd_http_parse_retry_after("", 0, 0), -1);
    const char *date = "Wed, 21 Oct 2015 07:28:05 GMT";
    time_t t = curl_getdate(date, NULL);
    cr_assert_eq(gpd_http_parse_retry_after(date, strlen(date), t - 3), 3000);
    cr_assert_eq(gpd_http_parse_retry_after(date, strlen(date), t + 10), 0);
    char e[32];
    cr_assert_str_eq(gpd_http_escape("a b/c:1~_.-", e, sizeof(e)), "a%20b%2Fc%3A1~_.-");
    cr_assert_str_eq(gpd_http_escape("abc/def", e, 6), "abc"); /* never half an escape */
}

/* ---- Vast.ai ---- */

Test(vastai, search_body)
{
    gpd_offer_query q = { .compute_type = "gpu", .gpu_model = "H100", .count = 2, .region = "us",
                          .max_cost_per_hr = 5.5, .limit = 10 };
    json_t *b = gpd__vast_search_body(&q);
    cr_assert_not_null(b);
    json_t *want = J("{\"rentable\":{\"eq\":true},\"rented\":{\"eq\":false},\"verified\":{\"eq\":true},"
                     "\"gpu_name\":{\"in\":[\"H100 SXM\",\"H100 PCIE\",\"H100 NVL\"]},\"num_gpus\":{\"eq\":2},"
                     "\"geolocation\":{\"in\":[\"US\"]},\"dph_total\":{\"lte\":5.5},"
                     "\"order\":[[\"dph_total\",\"asc\"]],\"type\":\"on-demand\",\"limit\":10}");
    cr_assert(json_equal(b, want), "%s", json_dumps(b, JSON_COMPACT));
    json_decref(b);
    json_decref(want);
    gpd_offer_query any = { .compute_type = "gpu", .count = 0 };
    b = gpd__vast_search_body(&any);
    cr_assert_null(json_object_get(b, "gpu_name"));
    cr_assert_null(json_object_get(b, "dph_total"));
    cr_assert_null(json_object_get(b, "geolocation"));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(b, "num_gpus"), "eq")), 1);
    json_decref(b);
    gpd_offer_query tpu = { .compute_type = "tpu", .tpu_type = "v5litepod-8" };
    cr_assert_null(gpd__vast_search_body(&tpu));
    gpd_offer_query odd = { .compute_type = "gpu", .gpu_model = "MI300X" };
    cr_assert_null(gpd__vast_search_body(&odd));
    const char *const *names = gpd__vast_gpu_names("RTX4090");
    cr_assert_str_eq(names[0], "RTX 4090");
    for (size_t i = 0; gpd_gpu_models[i]; i++) {
        names = gpd__vast_gpu_names(gpd_gpu_models[i]);
        cr_assert_not_null(names, "%s", gpd_gpu_models[i]);
        /* every spelling we ask Vast for normalises back to the model */
        for (size_t k = 0; names[k]; k++)
            cr_assert_str_eq(gpd_gpu_model_normalise(names[k]), gpd_gpu_models[i], "%s", names[k]);
    }
}

static const char *vast_offers =
    "{\"offers\":["
    "{\"id\":14230587,\"gpu_name\":\"H100 SXM\",\"num_gpus\":1,\"dph_total\":2.9,\"min_bid\":1.1,"
    "\"geolocation\":\"Texas, US\",\"reliability2\":0.99},"
    "{\"id\":14230511,\"gpu_name\":\"H100 PCIE\",\"num_gpus\":1,\"dph_total\":2.35,\"min_bid\":1.0,"
    "\"geolocation\":\"Washington, US\",\"reliability\":0.995},"
    "{\"id\":14231002,\"gpu_name\":\"H100 SXM\",\"num_gpus\":1,\"dph_total\":1.95,\"geolocation\":\"Quebec, CA\"},"
    "{\"id\":13998120,\"gpu_name\":\"A100 PCIE\",\"num_gpus\":1,\"dph_total\":1.6,\"geolocation\":\"Oregon, US\"},"
    "{\"id\":1,\"gpu_name\":\"H100 SXM\",\"num_gpus\":1,\"dph_total\":9.0,\"geolocation\":\"US\"},"
    "{\"gpu_name\":\"H100 SXM\",\"num_gpus\":1,\"dph_total\":1.0},"
    "{\"id\":\"77\",\"gpu_name\":\"H100 NVL\",\"num_gpus\":1,\"dph_total\":\"2.50\",\"geolocation\":\"Utah,US\"}"
    "]}";

Test(vastai, parse_offers)
{
    json_t *root = J(vast_offers);
    gpd_offer out[16];
    gpd_offer_query q = { .compute_type = "gpu", .gpu_model = "H100", .count = 1, .region = "US", .max_cost_per_hr = 5 };
    size_t n = gpd__vast_parse_offers(root, &q, out, 16);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(out[0].id, "14230511"); /* cheapest first */
    cr_assert_str_eq(out[0].provider, "vastai");
    cr_assert_str_eq(out[0].compute_type, "gpu");
    cr_assert_str_eq(out[0].gpu_model, "H100");
    cr_assert_str_eq(out[0].region, "US");
    cr_assert_float_eq(out[0].price_per_hr, 2.35, 1e-9);
    cr_assert_float_eq(out[0].spot_price_per_hr, 1.0, 1e-9);
    cr_assert_float_eq(out[0].reliability, 0.995, 1e-9); /* reliability when reliability2 is absent */
    cr_assert_eq(out[0].count, 1);
    cr_assert_eq(out[0].available, 1);
    cr_assert_str_eq(out[1].id, "77"); /* string id and price accepted */
    cr_assert_float_eq(out[1].spot_price_per_hr, -1, 1e-9);
    cr_assert_str_eq(out[2].id, "14230587");
    q.region = NULL;
    q.limit = 2;
    n = gpd__vast_parse_offers(root, &q, out, 16);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(out[0].id, "14231002");
    cr_assert_str_eq(out[0].region, "CA");
    gpd_offer_query any = { .compute_type = "gpu" };
    n = gpd__vast_parse_offers(root, &any, out, 16);
    cr_assert_eq(n, 6);
    json_decref(root);
}

static gpd_offer test_offer(const char *id, const char *model, int count, double spot)
{
    gpd_offer o;
    memset(&o, 0, sizeof(o));
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.gpu_model, sizeof(o.gpu_model), "%s", model);
    o.count = count;
    o.price_per_hr = 2;
    o.spot_price_per_hr = spot;
    return o;
}

Test(vastai, create_body)
{
    gpd_runtime rt = { .name = "vllm", .image = "vllm/vllm-openai:latest", .port = 8000, .args = "--model {model}" };
    gpd_offer o = test_offer("14230511", "H100", 1, 0.9);
    gpd_instance_spec spec = { .reservation_id = "res-1", .label = "gpd-res-1", .offer = &o, .runtime = &rt,
                               .model = "meta/llama", .duration_hours = 2 };
    json_t *b = gpd__vast_create_body(&spec, 80);
    json_t *env = json_object_get(b, "env");
    cr_assert_str_eq(json_string_value(json_object_get(env, "-p 8000:8000")), "1");
    cr_assert_str_eq(json_string_value(json_object_get(env, "MODEL")), "meta/llama");
    cr_assert_str_eq(json_string_value(json_object_get(env, "GPD_RUNTIME_PORT")), "8000");
    cr_assert_str_eq(json_string_value(json_object_get(b, "label")), "gpd-res-1");
    cr_assert_str_eq(json_string_value(json_object_get(b, "image")), "vllm/vllm-openai:latest");
    cr_assert_str_eq(json_string_value(json_object_get(b, "client_id")), "me");
    cr_assert_str_eq(json_string_value(json_object_get(b, "runtype")), "args");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(b, "args"), 1)), "meta/llama");
    cr_assert_eq(json_integer_value(json_object_get(b, "disk")), 80);
    cr_assert(json_is_true(json_object_get(b, "cancel_unavail")));
    cr_assert_str_eq(json_string_value(json_object_get(b, "target_state")), "running");
    cr_assert(json_is_null(json_object_get(b, "price"))); /* on-demand */
    json_decref(b);
    spec.spot = true;
    b = gpd__vast_create_body(&spec, 80);
    cr_assert_float_eq(json_real_value(json_object_get(b, "price")), 0.9, 1e-9); /* a bid at min_bid */
    json_decref(b);
}

static enum gpd_prov_err vast_create(int status, const char *body, char *id, char *msg)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    enum gpd_prov_err err = gpd__vast_create_result(status, j, body, strlen(body), id, 128, msg, 320);
    json_decref(j);
    return err;
}

Test(vastai, create_result)
{
    char id[128], msg[320];
    cr_assert_eq(vast_create(200, "{\"success\":true,\"new_contract\":7835610}", id, msg), GPD_PROV_OK);
    cr_assert_str_eq(id, "7835610");
    /* THE LEAK: an error that still made an instance reports both. */
    cr_assert_eq(vast_create(400,
                             "{\"success\":false,\"error\":\"insufficient_bid\",\"msg\":\"below minimum\","
                             "\"new_contract\":7835611}",
                             id, msg),
                 GPD_PROV_NO_CAPACITY);
    cr_assert_str_eq(id, "7835611");
    cr_assert_not_null(strstr(msg, "insufficient_bid"));
    cr_assert_eq(vast_create(200, "{\"success\":false,\"error\":\"bad_thing\",\"new_contract\":\"42\"}", id, msg),
                 GPD_PROV_FAILED);
    cr_assert_str_eq(id, "42");
    cr_assert_eq(vast_create(400,
                             "{\"success\":false,\"error\":\"no_such_ask\",\"msg\":\"Instance type no longer "
                             "available.\"}",
                             id, msg),
                 GPD_PROV_NO_CAPACITY);
    cr_assert_str_eq(id, "");
    cr_assert_eq(vast_create(404, "{\"error\":\"not_found\"}", id, msg), GPD_PROV_NO_CAPACITY);
    cr_assert_eq(vast_create(401, "{\"success\":false,\"error\":\"invalid_user_key\"}", id, msg), GPD_PROV_AUTH);
    cr_assert_eq(vast_create(429, "{\"error\":\"too_many_requests\"}", id, msg), GPD_PROV_RATE_LIMITED);
    cr_assert_eq(vast_create(500, "oops", id, msg), GPD_PROV_TRANSIENT);
    cr_assert_eq(vast_create(200, "{\"success\":true}", id, msg), GPD_PROV_FAILED);
    cr_assert_eq(vast_create(200, "{\"success\":true,\"new_contract\":null}", id, msg), GPD_PROV_FAILED);
    cr_assert_str_eq(id, "");
}

static gpd_instance_status vast_status(const char *inst_json, int hint)
{
    json_t *j = J(inst_json);
    gpd_instance_status st;
    gpd__vast_instance_status(gpd__vast_one_instance(j), hint, &st);
    json_decref(j);
    return st;
}

#define VAST_INST(fields) "{\"instances\":{\"id\":7835610,\"label\":\"gpd-res-1\",\"dph_total\":2.35," fields "}}"

Test(vastai, instance_states)
{
    gpd_instance_status st;
    st = vast_status(VAST_INST("\"actual_status\":null,\"intended_status\":\"running\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    cr_assert_str_eq(st.id, "7835610");
    cr_assert_str_eq(st.label, "gpd-res-1");
    cr_assert_float_eq(st.cost_per_hr, 2.35, 1e-9);
    st = vast_status(VAST_INST("\"actual_status\":\"loading\",\"status_msg\":\"Pulling image\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    cr_assert_str_eq(st.message, "Pulling image");
    st = vast_status(VAST_INST("\"actual_status\":\"created\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    st = vast_status(VAST_INST("\"actual_status\":\"restarting\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    st = vast_status(VAST_INST("\"actual_status\":\"something new\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    /* the image failed */
    st = vast_status(VAST_INST("\"actual_status\":\"created\",\"status_msg\":\"Error response from daemon: failed to "
                               "create shim task: OCI runtime create failed: runc create failed\""),
                     0);
    cr_assert_eq(st.state, GPD_INSTANCE_FAILED);
    cr_assert_not_null(strstr(st.message, "OCI runtime create failed"));
    /* terminal states */
    const char *failed[] = { "exited", "unknown", "offline" };
    for (size_t i = 0; i < 3; i++) {
        char buf[256];
        snprintf(buf, sizeof(buf), VAST_INST("\"actual_status\":\"%s\""), failed[i]);
        st = vast_status(buf, 0);
        cr_assert_eq(st.state, GPD_INSTANCE_FAILED, "%s", failed[i]);
    }
    st = vast_status(VAST_INST("\"actual_status\":\"stopped\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_STOPPED);
    st = vast_status(VAST_INST("\"actual_status\":\"frozen\""), 0);
    cr_assert_eq(st.state, GPD_INSTANCE_STOPPED);
    /* outbid: cur_state == intended_status == next_state == "stopped" on a bid */
    st = vast_status(VAST_INST("\"actual_status\":\"exited\",\"is_bid\":true,\"cur_state\":\"stopped\","
                               "\"intended_status\":\"stopped\",\"next_state\":\"stopped\",\"status_msg\":\"x\""),
                     0);
    cr_assert_eq(st.state, GPD_INSTANCE_STOPPED);
    cr_assert_str_eq(st.message, "outbid: x");
    st = vast_status(VAST_INST("\"actual_status\":\"loading\",\"is_bid\":true,\"cur_state\":\"stopped\","
                               "\"intended_status\":\"stopped\",\"next_state\":\"stopped\""),
                     0);
    cr_assert_eq(st.state, GPD_INSTANCE_STOPPED);
    cr_assert_str_eq(st.message, "outbid");
}

Test(vastai, endpoint_from_port_mapping)
{
    gpd_instance_status st;
    const char *ports = "\"ports\":{\"22/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\"41000\"}],"
                        "\"8000/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\"41022\"},{\"HostIp\":\"::\","
                        "\"HostPort\":\"41022\"}]}";
    char buf[1024];
    snprintf(buf, sizeof(buf), VAST_INST("\"actual_status\":\"running\",\"public_ipaddr\":\"203.0.113.7\\n\",%s"),
             ports);
    st = vast_status(buf, 8000);
    cr_assert_eq(st.state, GPD_INSTANCE_RUNNING);
    cr_assert_str_eq(st.endpoint, "http://203.0.113.7:41022");
    /* no hint: the one mapped port besides ssh */
    st = vast_status(buf, 0);
    cr_assert_str_eq(st.endpoint, "http://203.0.113.7:41022");
    /* a hint for a port that is not mapped yet: pending */
    st = vast_status(buf, 9000);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    /* the port out of extra_env when several are mapped */
    snprintf(buf, sizeof(buf),
             VAST_INST("\"actual_status\":\"running\",\"public_ipaddr\":\"1.2.3.4\",\"extra_env\":[[\"MODEL\",\"m\"],"
                       "[\"-p 9000:9000\",\"1\"]],\"ports\":{\"8080/tcp\":[{\"HostPort\":\"1\"}],\"9000/tcp\":"
                       "[{\"HostPort\":40001}]}"));
    st = vast_status(buf, 0);
    cr_assert_eq(st.state, GPD_INSTANCE_RUNNING);
    cr_assert_str_eq(st.endpoint, "http://1.2.3.4:40001");
    snprintf(buf, sizeof(buf),
             VAST_INST("\"actual_status\":\"running\",\"public_ipaddr\":\"1.2.3.4\",\"extra_env\":{"
                       "\"GPD_RUNTIME_PORT\":\"8080\"},\"ports\":{\"8080/tcp\":[{\"HostPort\":\"1\"}],\"9000/tcp\":"
                       "[{\"HostPort\":40001}]}"));
    st = vast_status(buf, 0);
    cr_assert_str_eq(st.endpoint, "http://1.2.3.4:1");
    /* running, but nothing published yet */
    st = vast_status(VAST_INST("\"actual_status\":\"running\",\"public_ipaddr\":\"1.2.3.4\",\"ports\":{}"), 8000);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    cr_assert_str_eq(st.endpoint, "");
}

Test(vastai, get_shapes_and_destroy)
{
    /* GET /instances/{id}/ answers an object; a list and a bare instance are accepted too */
    json_t *obj = J("{\"instances\":{\"id\":1,\"actual_status\":\"running\"}}");
    json_t *list = J("{\"instances\":[{\"id\":2,\"actual_status\":\"running\"}]}");
    json_t *bare = J("{\"id\":3,\"actual_status\":\"loading\"}");
    json_t *none = J("{\"instances\":null}");
    json_t *empty = J("{\"instances\":[]}");
    cr_assert_eq(json_integer_value(json_object_get(gpd__vast_one_instance(obj), "id")), 1);
    cr_assert_eq(json_integer_value(json_object_get(gpd__vast_one_instance(list), "id")), 2);
    cr_assert_eq(json_integer_value(json_object_get(gpd__vast_one_instance(bare), "id")), 3);
    cr_assert_null(gpd__vast_one_instance(none));
    cr_assert_null(gpd__vast_one_instance(empty));
    json_decref(obj);
    json_decref(list);
    json_decref(bare);
    json_decref(none);
    json_decref(empty);
    const char *gone = "{\"success\":false,\"error\":\"no_such_instance\",\"msg\":\"Instance 5 not found.\"}";
    cr_assert_eq(gpd__vast_destroy_result(200, "{\"success\":true}", strlen("{\"success\":true}")), GPD_PROV_OK);
    cr_assert_eq(gpd__vast_destroy_result(200, gone, strlen(gone)), GPD_PROV_OK);
    cr_assert_eq(gpd__vast_destroy_result(404, gone, strlen(gone)), GPD_PROV_OK);
    cr_assert_eq(gpd__vast_destroy_result(400, gone, strlen(gone)), GPD_PROV_OK);
    cr_assert_eq(gpd__vast_destroy_result(404, "", 0), GPD_PROV_OK);
    const char *refused = "{\"success\": false, \"error\": \"x\"}";
    cr_assert_eq(gpd__vast_destroy_result(200, refused, strlen(refused)), GPD_PROV_FAILED);
    cr_assert_eq(gpd__vast_destroy_result(500, "", 0), GPD_PROV_TRANSIENT);
    cr_assert_eq(gpd__vast_destroy_result(401, "", 0), GPD_PROV_AUTH);
}

/* ---- IO.net ---- */

Test(ionet, hardware_and_locations)
{
    json_t *hw = J("{\"data\":{\"hardware\":["
                   "{\"hardware_id\":203,\"hardware_name\":\"H100\",\"brand_name\":\"NVIDIA\",\"max_gpus_per_container\":8,"
                   "\"available\":12},"
                   "{\"hardware_id\":187,\"hardware_name\":\"A100 SXM4 80GB\",\"max_gpus_per_container\":8,\"available\":16},"
                   "{\"hardware_id\":204,\"hardware_name\":\"H100 NVL\",\"max_gpus_per_container\":2,\"available\":0},"
                   "{\"hardware_id\":205,\"hardware_name\":\"H100 PCIe\",\"max_gpus_per_container\":1,\"available\":9},"
                   "{\"hardware_id\":\"x\",\"hardware_name\":\"H100\"}],\"total\":5}}");
    gpd__ionet_hw out[8];
    gpd_offer_query q = { .compute_type = "gpu", .gpu_model = "H100", .count = 2 };
    size_t n = gpd__ionet_parse_hardware(hw, &q, out, 8);
    cr_assert_eq(n, 1); /* 204: none available; 205: one GPU per container at most */
    cr_assert_eq(out[0].id, 203);
    cr_assert_str_eq(out[0].model, "H100");
    q.gpu_model = "A100";
    q.count = 1;
    n = gpd__ionet_parse_hardware(hw, &q, out, 8);
    cr_assert_eq(n, 1);
    cr_assert_eq(out[0].id, 187);
    cr_assert_str_eq(out[0].model, "A100");
    q.gpu_model = NULL;
    cr_assert_eq(gpd__ionet_parse_hardware(hw, &q, out, 8), 3);
    json_decref(hw);

    json_t *locs = J("{\"data\":[{\"id\":1,\"iso2\":\"US\",\"name\":\"United States\",\"available_replicas\":4},"
                     "{\"id\":2,\"iso2\":\"de\",\"name\":\"Germany\",\"available_replicas\":1},"
                     "{\"id\":3,\"iso2\":\"SG\",\"available_replicas\":0}]}");
    gpd__ionet_loc l[8];
    n = gpd__ionet_parse_locations(locs, NULL, l, 8);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(l[1].iso2, "DE");
    cr_assert_eq(l[0].replicas, 4);
    n = gpd__ionet_parse_locations(locs, "de", l, 8);
    cr_assert_eq(n, 1);
    cr_assert_eq(l[0].id, 2);
    json_decref(locs);
}

Test(ionet, price_is_a_total)
{
    json_t *p = J("{\"data\":{\"replica_count\":1,\"gpus_per_container\":1,\"total_cost_usdc\":5.2}}");
    cr_assert_float_eq(gpd__ionet_parse_price(p, 2), 2.6, 1e-9);
    cr_assert_float_eq(gpd__ionet_parse_price(p, 1), 5.2, 1e-9);
    cr_assert_lt(gpd__ionet_parse_price(p, 0), 0);
    json_decref(p);
    p = J("{\"data\":{\"total_cost_usdc\":\"7.5\"}}");
    cr_assert_float_eq(gpd__ionet_parse_price(p, 3), 2.5, 1e-9);
    json_decref(p);
    p = J("{\"data\":{}}");
    cr_assert_lt(gpd__ionet_parse_price(p, 3), 0);
    json_decref(p);
}

Test(ionet, deploy_body)
{
    gpd_runtime rt = { .name = "vllm", .image = "vllm/vllm-openai:latest", .port = 8000, .args = "--model {model}" };
    gpd_offer o = test_offer("203:1", "H100", 2, -1);
    gpd_instance_spec spec = { .reservation_id = "res-1", .label = "gpd-res-1", .offer = &o, .runtime = &rt,
                               .model = "m", .duration_hours = 3 };
    json_t *b = gpd__ionet_deploy_body(&spec);
    cr_assert_not_null(b);
    cr_assert_str_eq(json_string_value(json_object_get(b, "resource_private_name")), "gpd-res-1");
    cr_assert_eq(json_integer_value(json_object_get(b, "duration_hours")), 3);
    cr_assert_eq(json_integer_value(json_object_get(b, "gpus_per_container")), 2);
    cr_assert_eq(json_integer_value(json_object_get(b, "hardware_id")), 203);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(b, "location_ids"), 0)), 1);
    json_t *cc = json_object_get(b, "container_config");
    cr_assert_eq(json_integer_value(json_object_get(cc, "replica_count")), 1);
    cr_assert_eq(json_integer_value(json_object_get(cc, "traffic_port")), 8000);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(cc, "env_variables"), "MODEL")), "m");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(cc, "env_variables"), "PORT")), "8000");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(cc, "args"), 1)), "m");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(b, "registry_config"), "image_url")),
                     "vllm/vllm-openai:latest");
    json_decref(b);
    gpd_offer bad = test_offer("203", "H100", 1, -1);
    spec.offer = &bad;
    cr_assert_null(gpd__ionet_deploy_body(&spec));
    snprintf(bad.id, sizeof(bad.id), "203:1x");
    cr_assert_null(gpd__ionet_deploy_body(&spec));

    char id[64];
    json_t *r = J("{\"status\":\"success\",\"deployment_id\":\"0b1e-uuid\"}");
    cr_assert(gpd__ionet_deployment_id(r, id, sizeof(id)));
    cr_assert_str_eq(id, "0b1e-uuid");
    json_decref(r);
    r = J("{\"data\":{\"deployment_id\":\"abc\"}}");
    cr_assert(gpd__ionet_deployment_id(r, id, sizeof(id)));
    cr_assert_str_eq(id, "abc");
    json_decref(r);
    r = J("{\"status\":\"success\"}");
    cr_assert_not(gpd__ionet_deployment_id(r, id, sizeof(id)));
    json_decref(r);
}

Test(ionet, status_mapping)
{
    json_t *d = J("{\"data\":{\"id\":\"dep-1\",\"status\":\"running\",\"name\":\"gpd-res-1\",\"duration_hours\":2,"
                  "\"amount_paid\":5.2}}");
    json_t *c = J("{\"data\":{\"total\":1,\"workers\":[{\"container_id\":\"c1\",\"status\":\"running\","
                  "\"public_url\":\"https://abc.io.net/\",\"container_events\":[{\"time\":\"t\",\"message\":\"Pulling\"},"
                  "{\"time\":\"t\",\"message\":\"Container started\"}]}]}}");
    gpd_instance_status st;
    gpd__ionet_status(d, c, &st);
    cr_assert_eq(st.state, GPD_INSTANCE_RUNNING);
    cr_assert_str_eq(st.endpoint, "https://abc.io.net");
    cr_assert_str_eq(st.id, "dep-1");
    cr_assert_str_eq(st.label, "gpd-res-1");
    cr_assert_str_eq(st.message, "running: Container started");
    cr_assert_float_eq(st.cost_per_hr, 2.6, 1e-9);
    /* running without a worker URL yet: pending */
    json_t *c2 = J("{\"data\":{\"workers\":[{\"status\":\"pending\",\"public_url\":\"\"}]}}");
    gpd__ionet_status(d, c2, &st);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    gpd__ionet_status(d, NULL, &st);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    json_decref(c2);
    json_decref(c);
    json_decref(d);
    cr_assert_eq(gpd__ionet_state_name("deployment requested", false), GPD_INSTANCE_PENDING);
    cr_assert_eq(gpd__ionet_state_name("running", true), GPD_INSTANCE_RUNNING);
    cr_assert_eq(gpd__ionet_state_name("failed", true), GPD_INSTANCE_FAILED);
    cr_assert_eq(gpd__ionet_state_name("destroyed", true), GPD_INSTANCE_GONE);
    cr_assert_eq(gpd__ionet_state_name("completed", true), GPD_INSTANCE_STOPPED);
    cr_assert_eq(gpd__ionet_state_name("terminated", true), GPD_INSTANCE_STOPPED);
    cr_assert_eq(gpd__ionet_state_name("Some New State", true), GPD_INSTANCE_PENDING);
    cr_assert_eq(gpd__ionet_state_name(NULL, true), GPD_INSTANCE_PENDING);
}

Test(ionet, deployments_shapes_and_errors)
{
    json_t *a = J("{\"data\":{\"deployments\":[{\"id\":\"1\",\"status\":\"running\",\"name\":\"gpd-x\"}],\"total\":1}}");
    json_t *b = J("[{\"id\":\"1\"}]");
    json_t *c = J("{\"data\":[{\"id\":\"1\"}]}");
    json_t *d = J("{\"deployments\":[{\"id\":\"1\"}]}");
    json_t *e = J("{\"data\":{}}");
    cr_assert_eq(json_array_size(gpd__ionet_deployments(a)), 1);
    cr_assert_eq(json_array_size(gpd__ionet_deployments(b)), 1);
    cr_assert_eq(json_array_size(gpd__ionet_deployments(c)), 1);
    cr_assert_eq(json_array_size(gpd__ionet_deployments(d)), 1);
    cr_assert_null(gpd__ionet_deployments(e));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
    json_decref(e);
    const char *nc = "{\"detail\":\"no capacity\"}";
    json_t *j = J(nc);
    cr_assert_eq(gpd__ionet_error(400, j, nc, strlen(nc)), GPD_PROV_NO_CAPACITY);
    json_decref(j);
    const char *v = "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\",\"hardware_id\"],\"msg\":\"Field required\"}]}";
    j = J(v);
    cr_assert_eq(gpd__ionet_error(422, j, v, strlen(v)), GPD_PROV_BAD_REQUEST);
    json_decref(j);
    const char *au = "{\"detail\":\"Invalid API key\"}";
    j = J(au);
    cr_assert_eq(gpd__ionet_error(401, j, au, strlen(au)), GPD_PROV_AUTH);
    json_decref(j);
}

/* ---- Google Cloud TPU ---- */

Test(gcp_tpu, types_prices_zones)
{
    cr_assert_eq(gpd__tpu_chips("v5litepod-8"), 8);
    cr_assert_eq(gpd__tpu_chips("v5litepod-1"), 1);
    cr_assert_eq(gpd__tpu_chips("v6e-4"), 4);
    cr_assert_eq(gpd__tpu_chips("v4-8"), 4);   /* TensorCores: two per chip */
    cr_assert_eq(gpd__tpu_chips("v5p-16"), 8);
    cr_assert_eq(gpd__tpu_chips("v3-8"), 4);
    cr_assert_eq(gpd__tpu_chips("v9-8"), 0);
    cr_assert_eq(gpd__tpu_chips("v5litepod"), 0);
    cr_assert_eq(gpd__tpu_chips("v5litepod-x"), 0);
    cr_assert_eq(gpd__tpu_chips(NULL), 0);
    double od, spot;
    cr_assert(gpd__tpu_price("v5litepod-8", &od, &spot));
    cr_assert_gt(od, 0);
    cr_assert_lt(spot, od);
    cr_assert_not(gpd__tpu_price("v9-8", &od, &spot));
    cr_assert_str_eq(gpd__tpu_runtime_version("v5litepod-8"), "v2-alpha-tpuv5-lite");
    cr_assert_str_eq(gpd__tpu_runtime_version("v6e-8"), "v2-alpha-tpuv6e");
    cr_assert_str_eq(gpd__tpu_runtime_version("v4-8"), "tpu-ubuntu2204-base");
    cr_assert(gpd__tpu_zone_matches("us-central1-a", NULL));
    cr_assert(gpd__tpu_zone_matches("us-central1-a", "US"));
    cr_assert(gpd__tpu_zone_matches("us-central1-a", "us-central1"));
    cr_assert(gpd__tpu_zone_matches("us-central1-a", "us-central1-a"));
    cr_assert_not(gpd__tpu_zone_matches("us-central1-a", "us-central"));
    cr_assert_not(gpd__tpu_zone_matches("europe-west4-a", "US"));
    char id[64];
    gpd__tpu_node_id("gpd-res-1", id, sizeof(id));
    cr_assert_str_eq(id, "gpd-res-1");
    gpd__tpu_node_id("GPD_Res_1-", id, sizeof(id));
    cr_assert_str_eq(id, "gpd-res-1");
    gpd__tpu_node_id("9abc", id, sizeof(id));
    cr_assert_str_eq(id, "gpd-9abc");
}

Test(gcp_tpu, create_body)
{
    gpd_runtime rt = { .name = "vllm", .image = "vllm/vllm-tpu:latest", .port = 8000, .args = "--model {model}" };
    gpd_offer o = test_offer("us-central1-a", "v5litepod-8", 8, -1);
    gpd_instance_spec spec = { .reservation_id = "res-1", .label = "gpd-res-1", .offer = &o, .runtime = &rt,
                               .model = "it's/model", .spot = true };
    json_t *b = gpd__tpu_create_body(&spec, NULL);
    cr_assert_str_eq(json_string_value(json_object_get(b, "acceleratorType")), "v5litepod-8");
    cr_assert_str_eq(json_string_value(json_object_get(b, "runtimeVersion")), "v2-alpha-tpuv5-lite");
    cr_assert(json_is_true(json_object_get(json_object_get(b, "networkConfig"), "enableExternalIps")));
    cr_assert(json_is_true(json_object_get(json_object_get(b, "schedulingConfig"), "spot")));
    json_t *labels = json_object_get(b, "labels");
    cr_assert_str_eq(json_string_value(json_object_get(labels, "gpd-res")), "res-1");
    cr_assert_str_eq(json_string_value(json_object_get(labels, "gpd-port")), "8000");
    const char *script = json_string_value(json_object_get(json_object_get(b, "metadata"), "startup-script"));
    cr_assert_not_null(script);
    cr_assert_not_null(strstr(script, "#!/bin/bash"));
    cr_assert_not_null(strstr(script, "'vllm/vllm-tpu:latest' '--model' 'it'\\''s/model'"), "%s", script);
    cr_assert_not_null(strstr(script, "-e PORT=8000"));
    json_decref(b);
    b = gpd__tpu_create_body(&spec, "custom-rt");
    cr_assert_str_eq(json_string_value(json_object_get(b, "runtimeVersion")), "custom-rt");
    json_decref(b);
}

static gpd__gcp_op_result op_of(const char *text)
{
    json_t *j = J(text);
    gpd__gcp_op_result r;
    gpd__gcp_parse_operation(j, &r);
    json_decref(j);
    return r;
}

Test(gcp_tpu, operations)
{
    gpd__gcp_op_result r = op_of("{\"name\":\"projects/p/locations/z/operations/op-1\",\"done\":false}");
    cr_assert_not(r.done);
    cr_assert_str_eq(r.name, "projects/p/locations/z/operations/op-1");
    r = op_of("{\"name\":\"projects/p/locations/z/operations/op-1\",\"metadata\":{}}"); /* proto3: done left out */
    cr_assert_not(r.done);
    r = op_of("{\"name\":\"op\",\"done\":true,\"response\":{\"name\":\"projects/p/locations/z/nodes/n\"}}");
    cr_assert(r.done);
    cr_assert_eq(r.err, GPD_PROV_OK);
    r = op_of("{\"name\":\"op\",\"done\":true,\"error\":{\"code\":8,\"message\":\"There is no more capacity in the "
              "zone \\\"us-central1-a\\\"; you can try in another zone\"}}");
    cr_assert(r.done);
    cr_assert_eq(r.err, GPD_PROV_NO_CAPACITY);
    cr_assert_not_null(strstr(r.msg, "no more capacity"));
    r = op_of("{\"name\":\"op\",\"error\":{\"code\":8,\"message\":\"Quota limit 'TPUV5' has been exceeded\"}}");
    cr_assert(r.done);
    cr_assert_eq(r.err, GPD_PROV_QUOTA);
    r = op_of("{\"done\":true,\"error\":{\"code\":13,\"message\":\"Internal error\"}}");
    cr_assert_eq(r.err, GPD_PROV_FAILED);
    r = op_of("{\"done\":true,\"error\":{\"code\":3,\"message\":\"bad\"}}");
    cr_assert_eq(r.err, GPD_PROV_BAD_REQUEST);
    r = op_of("{\"done\":true,\"error\":{\"code\":7,\"message\":\"denied\"}}");
    cr_assert_eq(r.err, GPD_PROV_AUTH);
    r = op_of("{\"done\":true,\"error\":{\"code\":14,\"message\":\"unavailable\"}}");
    cr_assert_eq(r.err, GPD_PROV_TRANSIENT);
}

static gpd_instance_status node_status(const char *text, int port)
{
    json_t *j = J(text);
    gpd_instance_status st;
    gpd__tpu_node_status(j, port, &st);
    json_decref(j);
    return st;
}

Test(gcp_tpu, node_states)
{
    gpd_instance_status st;
    st = node_status("{\"name\":\"projects/p/locations/z/nodes/gpd-res-1\",\"state\":\"READY\",\"acceleratorType\":"
                     "\"v5litepod-8\",\"labels\":{\"gpd-res\":\"res-1\"},\"networkEndpoints\":[{\"ipAddress\":"
                     "\"10.0.0.2\",\"port\":41234,\"accessConfig\":{\"externalIp\":\"34.1.2.3\"}}]}",
                     8000);
    cr_assert_eq(st.state, GPD_INSTANCE_RUNNING);
    cr_assert_str_eq(st.endpoint, "http://34.1.2.3:41234");
    cr_assert_str_eq(st.id, "gpd-res-1");
    cr_assert_str_eq(st.label, "gpd-res-1");
    cr_assert_float_eq(st.cost_per_hr, 8 * 1.20, 1e-9);
    /* 8470 is the TPU runtime's gRPC port: ours is the recipe's */
    st = node_status("{\"name\":\"n\",\"state\":\"READY\",\"networkEndpoints\":[{\"ipAddress\":\"10.0.0.2\",\"port\":"
                     "8470}]}",
                     8000);
    cr_assert_str_eq(st.endpoint, "http://10.0.0.2:8000");
    st = node_status("{\"name\":\"n\",\"state\":\"READY\",\"labels\":{\"gpd-port\":\"9001\"},\"networkEndpoints\":[{"
                     "\"ipAddress\":\"10.0.0.2\"}]}",
                     8000);
    cr_assert_str_eq(st.endpoint, "http://10.0.0.2:9001");
    st = node_status("{\"name\":\"n\",\"state\":\"READY\"}", 8000);
    cr_assert_eq(st.state, GPD_INSTANCE_PENDING);
    const char *pending[] = { "CREATING", "STARTING", "RESTARTING", "REIMAGING", "REPAIRING", "UNKNOWN" };
    for (size_t i = 0; i < 6; i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"name\":\"n\",\"state\":\"%s\"}", pending[i]);
        cr_assert_eq(node_status(buf, 8000).state, GPD_INSTANCE_PENDING, "%s", pending[i]);
    }
    const char *stopped[] = { "PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "DELETING" };
    for (size_t i = 0; i < 5; i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"name\":\"n\",\"state\":\"%s\"}", stopped[i]);
        cr_assert_eq(node_status(buf, 8000).state, GPD_INSTANCE_STOPPED, "%s", stopped[i]);
    }
    st = node_status("{\"name\":\"n\",\"state\":\"FAILED_TO_START\",\"healthDescription\":\"boom\"}", 8000);
    cr_assert_eq(st.state, GPD_INSTANCE_FAILED);
    cr_assert_str_eq(st.message, "FAILED_TO_START: boom");
    /* a node named otherwise but labelled by us */
    st = node_status("{\"name\":\"projects/p/locations/z/nodes/orphan\",\"state\":\"READY\",\"labels\":{\"gpd-res\":"
                     "\"res-dead\"}}",
                     8000);
    cr_assert_str_eq(st.id, "orphan");
    cr_assert_str_eq(st.label, "gpd-res-dead");
}

/* ---- the JWT assertion ---- */

static size_t b64url_decode(const char *in, size_t n, unsigned char *out)
{
    size_t k = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = strchr(tbl, in[i]);
        cr_assert_not_null(p, "not base64url: %c", in[i]);
        v = v << 6 | (unsigned)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)(v >> bits & 0xff);
        }
    }
    return k;
}

Test(jwt, base64url)
{
    char out[32];
    cr_assert_eq(gpd__base64url((const unsigned char *)"", 0, out), 0);
    gpd__base64url((const unsigned char *)"f", 1, out);
    cr_assert_str_eq(out, "Zg");
    gpd__base64url((const unsigned char *)"fo", 2, out);
    cr_assert_str_eq(out, "Zm8");
    gpd__base64url((const unsigned char *)"foo", 3, out);
    cr_assert_str_eq(out, "Zm9v");
    const unsigned char bin[] = { 0xfb, 0xff, 0xbf };
    gpd__base64url(bin, 3, out);
    cr_assert_str_eq(out, "-_-_"); /* not "+/+/" */
}

Test(jwt, rs256_assertion_verifies)
{
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
    EVP_PKEY *key = NULL;
    cr_assert_eq(EVP_PKEY_keygen_init(kctx), 1);
    cr_assert_eq(EVP_PKEY_CTX_set_rsa_keygen_bits(kctx, 2048), 1);
    cr_assert_eq(EVP_PKEY_keygen(kctx, &key), 1);
    EVP_PKEY_CTX_free(kctx);

    const char *aud = "https://oauth2.googleapis.com/token";
    char *jwt = gpd__gcp_jwt_assertion(key, "kid-1", "sa@p.iam.gserviceaccount.com",
                                       "https://www.googleapis.com/auth/cloud-platform", aud, 1700000000);
    cr_assert_not_null(jwt);
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    cr_assert_not_null(d2);
    cr_assert_null(strchr(d2 + 1, '.'));
    cr_assert_null(strpbrk(jwt, "+/="), "not base64url without padding: %s", jwt);

    unsigned char buf[1024];
    size_t n = b64url_decode(jwt, (size_t)(d1 - jwt), buf);
    json_t *h = json_loadb((const char *)buf, n, 0, NULL);
    cr_assert_not_null(h);
    cr_assert_str_eq(json_string_value(json_object_get(h, "alg")), "RS256");
    cr_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    cr_assert_str_eq(json_string_value(json_object_get(h, "kid")), "kid-1");
    json_decref(h);
    n = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf);
    json_t *c = json_loadb((const char *)buf, n, 0, NULL);
    cr_assert_not_null(c);
    cr_assert_str_eq(json_string_value(json_object_get(c, "iss")), "sa@p.iam.gserviceaccount.com");
    cr_assert_str_eq(json_string_value(json_object_get(c, "scope")), "https://www.googleapis.com/auth/cloud-platform");
    cr_assert_str_eq(json_string_value(json_object_get(c, "aud")), aud);
    cr_assert_eq(json_integer_value(json_object_get(c, "iat")), 1700000000);
    cr_assert_eq(json_integer_value(json_object_get(c, "exp")), 1700000000 + 3600);
    json_decref(c);

    unsigned char sig[512];
    size_t siglen = b64url_decode(d2 + 1, strlen(d2 + 1), sig);
    cr_assert_eq(siglen, 256);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    cr_assert_eq(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    cr_assert_eq(EVP_DigestVerify(md, sig, siglen, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    /* and a changed claim does not */
    EVP_MD_CTX_free(md);
    md = EVP_MD_CTX_new();
    jwt[(d1 - jwt) + 3] ^= 1;
    cr_assert_eq(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    cr_assert_neq(EVP_DigestVerify(md, sig, siglen, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    EVP_MD_CTX_free(md);
    free(jwt);
    cr_assert_null(gpd__gcp_jwt_assertion(NULL, NULL, "a", NULL, aud, 0));
    EVP_PKEY_free(key);
}

Test(jwt, token_answer)
{
    char tok[64];
    long long exp;
    json_t *j = J("{\"access_token\":\"ya29.x\",\"expires_in\":3599,\"token_type\":\"Bearer\"}");
    cr_assert(gpd__gcp_parse_token(j, tok, sizeof(tok), &exp));
    cr_assert_str_eq(tok, "ya29.x");
    cr_assert_eq(exp, 3599);
    json_decref(j);
    j = J("{\"error\":\"invalid_grant\"}");
    cr_assert_not(gpd__gcp_parse_token(j, tok, sizeof(tok), &exp));
    json_decref(j);
}

/* ---- http_call against a scripted server on the same loop ---- */

typedef struct script_server {
    uv_tcp_t tcp;
    int port;
    const char *const *answers; /* one full HTTP response per request, in order */
    size_t next;
    int requests;
    char last_method[8];
} script_server;

typedef struct script_conn {
    uv_tcp_t tcp;
    script_server *s;
    char buf[8192];
    size_t len;
    bool answered;
} script_conn;

static void conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void wrote(uv_write_t *w, int status)
{
    script_conn *c = w->data;
    free(w);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    script_conn *c = h->data;
    b->base = c->buf + c->len;
    b->len = sizeof(c->buf) - c->len - 1;
}

static void conn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    script_conn *c = st->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end || c->answered)
        return;
    const char *cl = strcasestr(c->buf, "Content-Length:");
    size_t body = cl && cl < end ? (size_t)atoi(cl + 15) : 0;
    if (c->len < (size_t)(end + 4 - c->buf) + body)
        return;
    c->answered = true;
    script_server *s = c->s;
    s->requests++;
    sscanf(c->buf, "%7s", s->last_method);
    const char *ans = s->answers[s->next] ? s->answers[s->next++] : "HTTP/1.1 599 Script Ended\r\nContent-Length: 0\r\n\r\n";
    uv_write_t *w = malloc(sizeof(*w));
    w->data = c;
    uv_buf_t out = uv_buf_init((char *)ans, (unsigned)strlen(ans));
    uv_read_stop(st);
    uv_write(w, st, &out, 1, wrote);
}

static void on_conn(uv_stream_t *srv, int status)
{
    script_server *s = srv->data;
    script_conn *c = calloc(1, sizeof(*c));
    c->s = s;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    cr_assert_eq(uv_accept(srv, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

static void server_start(uv_loop_t *loop, script_server *s, const char *const *answers)
{
    struct sockaddr_in a;
    memset(s, 0, sizeof(*s));
    s->answers = answers;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    cr_assert_eq(uv_tcp_bind(&s->tcp, (const struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&s->tcp, 16, on_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)[0].sin_port);
}

typedef struct call_result {
    bool done;
    bool inside_start;
    int status;
    enum gpd_prov_err err;
    char msg[256];
    char body[256];
    int tries;
    uint64_t at;
    uv_loop_t *loop;
} call_result;

static void call_cb(void *ctx, const gpd_http_reply *r)
{
    call_result *res = ctx;
    res->done = true;
    res->status = r->status;
    res->err = r->err;
    res->tries = r->tries;
    res->at = uv_now(res->loop);
    snprintf(res->msg, sizeof(res->msg), "%s", r->msg);
    snprintf(res->body, sizeof(res->body), "%s", r->body);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Run one call against answers; returns the result and the server's counts. */
static call_result run_call(const char *method, bool idempotent, const char *const *answers, script_server *s)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    gpd_curl *curl = gpd_curl_new(&loop, NULL);
    server_start(&loop, s, answers);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s->port);
    call_result res = { .loop = &loop };
    gpd_http_call_opts o = { .method = method, .url = url, .headers = { "x-api-key: K" }, .idempotent = idempotent };
    if (strcmp(method, "GET") != 0) {
        o.body = "{}";
        o.body_len = 2;
    }
    uint64_t t0 = uv_now(&loop);
    cr_assert_not_null(gpd_http_call_start(&loop, curl, &o, call_cb, &res));
    res.inside_start = res.done;
    while (!res.done)
        uv_run(&loop, UV_RUN_ONCE);
    res.at -= t0;
    gpd_curl_free(curl);
    uv_close((uv_handle_t *)&s->tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return res;
}

#define R429 "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 30\r\n\r\n{\"detail\":\"Too Many Requests\"}"
#define R500 "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
#define R200 "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"

Test(http_call, retries_429_with_backoff)
{
    static const char *const answers[] = { R429, R429, R200, NULL };
    script_server s;
    call_result r = run_call("POST", false, answers, &s);
    cr_assert_not(r.inside_start);
    cr_assert_eq(r.err, GPD_PROV_OK, "%s", r.msg);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"ok\":true}");
    cr_assert_eq(s.requests, 3); /* a 429 is safe to repeat even for a create */
    cr_assert_eq(r.tries, 3);
    cr_assert_geq(r.at, 200 + 300 - 20, "waited %llu ms", (unsigned long long)r.at);
}

Test(http_call, gives_up_after_5_tries_on_429)
{
    static const char *const answers[] = { R429, R429, R429, R429, R429, R200, NULL };
    script_server s;
    call_result r = run_call("GET", true, answers, &s);
    cr_assert_eq(r.err, GPD_PROV_RATE_LIMITED);
    cr_assert_eq(s.requests, 5);
    cr_assert_str_eq(r.msg, "HTTP 429: Too Many Requests");
}

Test(http_call, honours_retry_after)
{
    static const char *const answers[] = {
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", R200, NULL
    };
    script_server s;
    call_result r = run_call("GET", true, answers, &s);
    cr_assert_eq(r.err, GPD_PROV_OK);
    cr_assert_geq(r.at, 980, "waited %llu ms", (unsigned long long)r.at);
    static const char *const too_long[] = {
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", R200, NULL
    };
    r = run_call("GET", true, too_long, &s);
    cr_assert_eq(r.err, GPD_PROV_RATE_LIMITED);
    cr_assert_eq(s.requests, 1);
}

Test(http_call, retries_5xx_twice_when_idempotent)
{
    static const char *const answers[] = { R500, R500, R500, R200, NULL };
    script_server s;
    call_result r = run_call("GET", true, answers, &s);
    cr_assert_eq(r.err, GPD_PROV_TRANSIENT);
    cr_assert_eq(s.requests, 3);
    static const char *const then_ok[] = { R500, R200, NULL };
    r = run_call("DELETE", true, then_ok, &s);
    cr_assert_eq(r.err, GPD_PROV_OK);
    cr_assert_eq(s.requests, 2);
    cr_assert_str_eq(s.last_method, "DELETE");
}

Test(http_call, never_repeats_a_create_after_5xx)
{
    static const char *const answers[] = { R500, R200, NULL };
    script_server s;
    call_result r = run_call("PUT", false, answers, &s);
    cr_assert_eq(r.err, GPD_PROV_TRANSIENT);
    cr_assert_eq(r.status, 500);
    cr_assert_eq(s.requests, 1);
}

Test(http_call, connection_refused_is_transient_and_async)
{
    /* A port nobody listens on: the call fails after its retries, later. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    gpd_curl *curl = gpd_curl_new(&loop, NULL);
    uv_tcp_t t;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &t);
    uv_tcp_bind(&t, (const struct sockaddr *)&a, 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL); /* bound, never listening, then closed */
    uv_run(&loop, UV_RUN_DEFAULT);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    call_result res = { .loop = &loop };
    gpd_http_call_opts o = { .method = "PUT", .url = url, .body = "{}", .body_len = 2 };
    gpd_http_call_start(&loop, curl, &o, call_cb, &res);
    cr_assert_not(res.done);
    while (!res.done)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(res.err, GPD_PROV_TRANSIENT);
    cr_assert_eq(res.status, 0);
    cr_assert_eq(res.tries, 3); /* never connected: safe to repeat even a create */
    /* fail_later and cancel */
    call_result f = { .loop = &loop };
    gpd_http_call_fail_later(&loop, GPD_PROV_AUTH, "no key", call_cb, &f);
    cr_assert_not(f.done);
    call_result never = { .loop = &loop };
    gpd_http_call *c = gpd_http_call_fail_later(&loop, GPD_PROV_AUTH, "x", call_cb, &never);
    gpd_http_call_cancel(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert(f.done);
    cr_assert_eq(f.err, GPD_PROV_AUTH);
    cr_assert_str_eq(f.msg, "no key");
    cr_assert_not(never.done);
    gpd_curl_free(curl);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

/* ---- the providers without credentials: asynchronous AUTH, and free cancels ---- */

typedef struct cb_count {
    int calls;
    enum gpd_prov_err err;
    bool inside;
} cb_count;

static bool in_start;

static void count_offers(void *ctx, enum gpd_prov_err err, const char *msg, gpd_offer *o, size_t n)
{
    cb_count *c = ctx;
    c->calls++;
    c->err = err;
    c->inside |= in_start;
    cr_assert_not_null(msg);
}

static void count_list(void *ctx, enum gpd_prov_err err, const char *msg, gpd_instance_status *l, size_t n)
{
    cb_count *c = ctx;
    c->calls++;
    c->err = err;
    c->inside |= in_start;
}

static void count_status(void *ctx, enum gpd_prov_err err, const char *msg, const gpd_instance_status *st)
{
    cb_count *c = ctx;
    c->calls++;
    c->err = err;
    c->inside |= in_start;
}

Test(providers, no_credentials_fail_later_and_free_cancels)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    gpd_curl *curl = gpd_curl_new(&loop, NULL);
    gpd_provider *ps[3] = {
        gpd_vastai_new(&loop, curl, "http://127.0.0.1:9/", NULL),
        gpd_ionet_new(&loop, curl, "http://127.0.0.1:9", ""),
        gpd_gcp_tpu_new(&loop, curl, "http://127.0.0.1:9", "p", "us-central1-a", NULL, NULL),
    };
    cr_assert_str_eq(ps[0]->base_url, "http://127.0.0.1:9");
    cb_count c[3][3];
    memset(c, 0, sizeof(c));
    gpd_offer_query gq = { .compute_type = "gpu", .gpu_model = "H100", .count = 1 };
    gpd_offer_query tq = { .compute_type = "tpu", .tpu_type = "v5litepod-8", .count = 8 };
    in_start = true;
    for (int i = 0; i < 3; i++) {
        ps[i]->ops->search(ps[i], i == 2 ? &tq : &gq, count_offers, &c[i][0]);
        ps[i]->ops->list_ours(ps[i], count_list, &c[i][1]);
        ps[i]->ops->status(ps[i], "x", count_status, &c[i][2]);
    }
    in_start = false;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(c[i][0].calls + c[i][1].calls + c[i][2].calls, 0, "called back inside the call");
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 3; k++) {
            cr_assert_eq(c[i][k].calls, 1, "provider %d op %d", i, k);
            cr_assert_eq(c[i][k].err, GPD_PROV_AUTH, "provider %d op %d: %s", i, k, gpd_prov_err_name(c[i][k].err));
        }
    }
    /* Operations in flight when the provider goes: no callback ever. */
    cb_count late[3];
    memset(late, 0, sizeof(late));
    for (int i = 0; i < 3; i++) {
        ps[i]->ops->list_ours(ps[i], count_list, &late[i]);
        ps[i]->ops->free(ps[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(late[i].calls, 0);
    gpd_curl_free(curl);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
