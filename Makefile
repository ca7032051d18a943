# quotagate — build, demo and tests.
#
#   make            build build/quotagate (optimised)
#   make run        install missing Debian packages, build, start the demo (sim + gateway)
#   make test       install missing packages, then unit + end-to-end tests on the normal build
#                   and on an ASan+UBSan build, and a short run of every fuzz target
#   make bench      the nginx-relative benchmark (bench/run.sh; not part of make test)
#
# Dependencies come from Debian packages through pkg-config only (scripts/deps.sh).

PKGS      := openssl yaml-0.1 sqlite3
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
WARN      := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-missing-field-initializers
CFLAGS_COMMON = -std=gnu11 -g -D_GNU_SOURCE $(WARN) $(PKG_CFLAGS) -Isrc
LDLIBS    = $(PKG_LIBS) -lpthread -lm

SRC       := $(sort $(wildcard src/*.c))
LIB_SRC   := $(filter-out src/main.c,$(SRC))
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 8

# Three flavours of the same sources, each in its own object directory.
REL_DIR  := build/obj
ASAN_DIR := build/asan
FUZZ_DIR := build/fuzz
REL_CFLAGS  = $(CFLAGS_COMMON) -O2
ASAN_CFLAGS = $(CFLAGS_COMMON) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS = $(CFLAGS_COMMON) -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -DQG_FUZZING

REL_OBJ  := $(LIB_SRC:src/%.c=$(REL_DIR)/%.o)
ASAN_OBJ := $(LIB_SRC:src/%.c=$(ASAN_DIR)/%.o)
FUZZ_OBJ := $(LIB_SRC:src/%.c=$(FUZZ_DIR)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/unit/%)
UNIT_ASAN_BIN := $(UNIT_SRC:tests/unit/%.c=build/unit-asan/%)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build/fuzzers/%)

# Object files are not intermediates to delete: the fuzz build would redo them every run.
.SECONDARY:

.PHONY: all run test test-all unit unit-asan e2e e2e-asan fuzz deps deps-test bench clean

all: build/quotagate

deps:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test

run: deps
	@$(MAKE) --no-print-directory build/quotagate
	@scripts/demo.sh

test: deps-test
	@$(MAKE) --no-print-directory test-all

# Every stage runs even if an earlier one failed; the summary says which failed.
test-all: build/quotagate build/quotagate-asan $(UNIT_BIN) $(UNIT_ASAN_BIN) $(FUZZ_BIN)
	@scripts/run-tests.sh "$(UNIT_BIN)" "$(UNIT_ASAN_BIN)" "$(FUZZ_BIN)" $(FUZZ_SECONDS)

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do $$t || exit 1; done
e2e: build/quotagate
	@python3 tests/e2e/run.py --bin build/quotagate
fuzz: $(FUZZ_BIN)

bench: deps
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory build/quotagate build/qgload
	@bench/run.sh

build/quotagate: $(REL_OBJ) $(REL_DIR)/main.o
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LDLIBS)
build/quotagate-asan: $(ASAN_OBJ) $(ASAN_DIR)/main.o
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)
build/qgload: bench/qgload.c $(REL_OBJ)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LDLIBS)

$(REL_DIR)/%.o: src/%.c src/*.h | $(REL_DIR)
	$(CC) $(REL_CFLAGS) -c -o $@ $<
$(ASAN_DIR)/%.o: src/%.c src/*.h | $(ASAN_DIR)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<
$(FUZZ_DIR)/%.o: src/%.c src/*.h | $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -c -o $@ $<

build/unit/%: tests/unit/%.c tests/unit/*.h $(REL_OBJ) | build/unit
	$(CC) $(REL_CFLAGS) -Itests/unit -o $@ $< $(REL_OBJ) $(LDLIBS) $(shell pkg-config --libs cmocka)
build/unit-asan/%: tests/unit/%.c tests/unit/*.h $(ASAN_OBJ) | build/unit-asan
	$(CC) $(ASAN_CFLAGS) -Itests/unit -o $@ $< $(ASAN_OBJ) $(LDLIBS) $(shell pkg-config --libs cmocka)
build/fuzzers/%: fuzz/%.c $(FUZZ_OBJ) | build/fuzzers
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)

$(REL_DIR) $(ASAN_DIR) $(FUZZ_DIR) build/unit build/unit-asan build/fuzzers:
	@mkdir -p $@

clean:
	rm -rf build
