# The two commands the README gives: `make demo` and `make test`. Each sets up everything
# it needs (packages, QEMU 10, virtiofsd, the guest kernel, the build, the test guest).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
# End-to-end tests one at a time: each boots TCG guests that need a core of their own. Two at
# once on a 2-core machine made rare guest faults after a restore (an init crash after vCPU
# hot-plug, a virtio-fs request that never completed) that no serial run showed.
E2E_JOBS   ?= 1
CMAKE_TYPE ?= RelWithDebInfo
# libFuzzer targets (clang): `make fuzz` runs each FUZZ_SECONDS; `make test` a short smoke.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 300
FUZZ_SMOKE   ?= 15
MAKEFLAGS  += --no-print-directory

# make install PREFIX=/usr/local DESTDIR=...; make deb: a Debian package (Release build).
PREFIX     ?= /usr/local
DEB_BUILD  ?= build-deb

.PHONY: all deps build guest test unit e2e demo bench lint clean fuzz fuzz-build install deb

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE) -DKSNAP_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

guest: build
	@bash scripts/build-guest.sh $(BUILD)/kata-snapshot-helper $(BUILD)/ctr-counter

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKSNAP_SANITIZE=ON -DKSNAP_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) --target unit_tests

fuzz-build: deps
	@CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DKSNAP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKSNAP_WERROR=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz: fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Unit tests under ASan+UBSan, a fuzz smoke of every target, the Debian package (a Release
# build with default options, installed, used and removed), then every test (unit and
# end-to-end) in the normal build.
test: guest asan fuzz-build
	@cd $(ASAN_BUILD) && ctest --output-on-failure -L unit -j $(JOBS)
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SMOKE)
	@bash tests/package/deb.sh $(DEB_BUILD)
	@cd $(BUILD) && ctest --output-on-failure -L unit -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -L e2e -j $(E2E_JOBS)

unit: build
	@cd $(BUILD) && ctest --output-on-failure -L unit -j $(JOBS)

e2e: guest
	@cd $(BUILD) && ctest --output-on-failure -L e2e -j $(E2E_JOBS)

demo: guest
	@bash examples/demo/demo.sh $(BUILD)/kata-snapshot

bench: guest
	@bash bench/run.sh $(BUILD)

install: build
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target kata-snapshot kata-snapshot-helper manpage
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

# A Release build with the default options (no -Werror: a packager's build), packaged by CPack.
deb: deps
	@bash scripts/deb.sh $(DEB_BUILD)

lint: build
	@bash scripts/lint.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
