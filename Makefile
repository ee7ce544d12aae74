# gpuproxyd build.  `make` builds the daemon and the CLI; `make run` and
# `make test` are the README's two set-up commands (both install missing
# Debian packages first, see scripts/deps.sh).

CC      ?= cc
BUILD   ?= build
PKGS    := libuv libcurl jansson openssl sqlite3 libpq
VERSION := 0.1.0

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wundef -Wno-unused-parameter
ifeq ($(CI),true)
WARN    += -Werror
endif
OPT     ?= -O2 -g
CFLAGS  += -std=gnu17 -D_GNU_SOURCE $(OPT) $(WARN) -pthread -Isrc -DGPD_VERSION='"$(VERSION)"' \
           $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -pthread -lm

# SAN=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer.
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DGPD_ASSERTS=1
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC  := $(shell find src -name '*.c' ! -path src/main.c | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: all deps run test unit integration sdk fuzz bench clean check-config

all: $(BUILD)/gpuproxyd $(BUILD)/gpuproxyctl $(BUILD)/gpd-runtime-exec

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libgpd.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/gpuproxyd: $(BUILD)/obj/src/main.o $(BUILD)/libgpd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gpuproxyctl: $(BUILD)/obj/tools/gpuproxyctl.o $(BUILD)/libgpd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gpd-runtime-exec: tools/gpd-runtime-exec.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libgpd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libgpd.a $(LDLIBS) -lcriterion

deps:
	@bash scripts/deps.sh

run: deps all
	$(BUILD)/gpuproxyd --config examples/gpuproxyd.toml

check-config: all
	$(BUILD)/gpuproxyd --config examples/gpuproxyd.toml --check-config

# Every test: unit, integration, SDK, then the same under ASan+UBSan, then
# the fuzzers for a bounded time (when clang is present).
test: deps
	@bash scripts/test.sh

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t --jobs 1; done

fuzz:
	@bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),20)

bench: all
	@bash bench/proxy.sh

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/src/main.d $(BUILD)/obj/tools/gpuproxyctl.d
