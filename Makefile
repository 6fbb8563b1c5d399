# hsmd - top-level entry points.  `make run` and `make test` are the two
# commands a newcomer needs; both install missing Debian packages first.
BUILD      ?= build
BENCH_BUILD ?= build-bench
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
JOBS       ?= $(shell nproc)
# ctest runs three tests a core, of which one keeps the core busy and the
# others mostly wait (the `cpus` resource of tests/CMakeLists.txt).
TEST_JOBS  ?= $(shell echo $$((3 * $(JOBS))))
# ctest over the build directory $(1), with that build's resource spec.
run_ctest = ctest --test-dir $(1) --resource-spec-file $(abspath $(1))/tests/cpus.json \
	--output-on-failure -j $(TEST_JOBS)
CMAKE_ARGS ?=

.PHONY: all deps build run install test test-unit test-integration asan-build test-asan \
	test-asan-integration lint bench bench-build \
	bench-scale bench-store bench-profile bench-instructions fuzz coverage clean

all: build

deps:
	@scripts/install-deps.sh

# The bench programs are built too (not run), so a change that breaks them fails here.
build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHSM_BENCH=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/hsmd --dev

# hsmd, hsmctl and libhsm_pkcs11.so into PREFIX (bin/, lib/); docs/hsmd.service runs it.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Everything CI runs: lint, unit and integration tests, then the unit tests
# again under AddressSanitizer and UndefinedBehaviorSanitizer.
test: build lint
	$(call run_ctest,$(BUILD))
	$(MAKE) --no-print-directory test-asan

test-unit: build
	$(call run_ctest,$(BUILD)) -L unit

test-integration: build
	$(call run_ctest,$(BUILD)) -L integration

asan-build: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DHSM_SANITIZE=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

test-asan: asan-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(call run_ctest,$(ASAN_BUILD)) -L unit

# The integration suite again, against hsmd, hsmctl and the PKCS#11 module
# built under AddressSanitizer and UndefinedBehaviorSanitizer: about 20
# minutes on 2 cores, not part of `make test`.  Fails on a failed test or on
# any report any process wrote.
test-asan-integration: asan-build
	/usr/bin/python3 scripts/asan_integration.py --build $(ASAN_BUILD)

lint:
	@HSM_LINT_BUILD=$(BUILD) scripts/lint.sh

# libFuzzer targets (tests/fuzz), built with clang under ASan and UBSan, each
# run for FUZZ_SECONDS from its seed corpus; FUZZ_TARGETS picks some of them.
fuzz: deps
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_C_FLAGS_DEBUG="-g -O1" -DHSM_FUZZ=ON -DHSM_INTEGRATION=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Which lines of src/ no test runs: the whole suite in an unoptimized --coverage
# build of its own (about 20 minutes on 2 cores), then a list by file.
COV_BUILD ?= build-cov
coverage: deps
	/usr/bin/python3 scripts/coverage.py --build $(COV_BUILD) --jobs $(JOBS)

# Benchmarks (not part of `make test`; see the README's "Benchmarks").  They
# build hsmd and the bench programs in their own directory, then measure.
BENCH_TARGETS = hsmd hsmctl loadgen limit hostcost softhsm bulkkeys hsmd-noaudit
BENCH_ARGS ?=

bench-build: deps
	@cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHSM_BENCH=ON \
		-DHSM_INTEGRATION=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BENCH_BUILD) -j $(JOBS) --target $(BENCH_TARGETS)

# About 14 minutes on 2 cores; writes bench/results/results.{md,csv,png}.
bench: bench-build
	/usr/bin/python3 bench/run.py --build $(BENCH_BUILD) $(BENCH_ARGS)

# 1,000 and 1,000,000 keys, start-up with 100,000: about 10 minutes; bench/results/scale.*.
bench-scale: bench-build
	/usr/bin/python3 bench/scale.py --build $(BENCH_BUILD) $(BENCH_ARGS)

# One node on SQLite against one on a local PostgreSQL, side by side.
bench-store: bench-build
	/usr/bin/python3 bench/store.py --build $(BENCH_BUILD) $(BENCH_ARGS)

# perf profiles of hsmd under load (Encrypt 64 B, Sign RSA-2048) into a scratch directory.
bench-profile: bench-build
	@command -v perf >/dev/null || { echo "bench-profile needs perf (apt-get install linux-perf)"; exit 1; }
	/usr/bin/python3 bench/profile.py --build $(BENCH_BUILD) $(BENCH_ARGS)

# Instructions per request under callgrind (deterministic, unlike throughput): about 3 minutes.
bench-instructions: bench-build
	/usr/bin/python3 bench/instructions.py --build $(BENCH_BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(BENCH_BUILD) $(COV_BUILD)
