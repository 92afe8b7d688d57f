# realip — see README.md. `make check` is what CI runs (with REALIP_STRICT=1).
SHELL    := /bin/bash
GO       ?= go
BIN      := bin
FUZZTIME ?= 10s
# Debian packages the tests use as real peers and the VM bench needs;
# installed by `make deps` (root). groff-base, man-db and bash-completion:
# the manual pages are checked with groff and man, the completions run in
# bash with bash-completion (internal/cmddoc). dkms: `realip-agent doctor`
# reads `dkms status toa` (agent/doctor_test.go, on trees of its own).
# make, bc, bison, flex, libelf-dev: the sanitizer kernel's build
# (vmtest/debug-kernel.sh; libelf for objtool). python3 and curl: the
# unmodified servers and clients of the unwrap tests (http.server);
# go-mmproxy: bench/unwrap.sh's baseline.
TEST_DEBS := haproxy nginx-core libnginx-mod-stream iproute2 \
	busybox-static qemu-system-x86 cpio debootstrap pahole xz-utils zstd prometheus \
	gcc-aarch64-linux-gnu binutils kmod gcc libc6-dev \
	groff-base man-db bash-completion dkms qemu-system-arm libc6-dev-arm64-cross \
	make bc bison flex libelf-dev python3 curl go-mmproxy
# Kernels toa.ko is tested on in `make check`; `make vmtest KVERS=all` for the
# whole matrix (5.10 6.1 6.12 sid), `make vmtest KVER=6.12` for one.
KVERS ?= $(or $(KVER),6.1 sid)
# The sanitizer kernel (KASAN, lockdep, kmemleak, ...; vmtest/debug-kernel.sh
# builds it from bookworm's linux-source-6.1 once per machine): part of
# `make vmtest`; `make vmtest DEBUG_KERNEL=` leaves it out.
DEBUG_KERNEL ?= debug
# Kernel packages and the sid build chroot are cached outside the clone, so
# CI runs on the same machine reuse them.
export REALIP_CACHE ?= /var/cache/realip/vmtest

COMMANDS := $(notdir $(wildcard cmd/*)) $(addprefix example-,$(notdir $(wildcard examples/*)))

.PHONY: all build test race vet portable fuzz deps check bench demo vmtest vmtest-packages packages packages-test clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build ./...
	@for d in cmd/*/ examples/*/; do \
	  [ -f "$$d/main.go" ] || continue; \
	  name=$$(basename $$d); [[ $$d == examples/* ]] && name=example-$$name; \
	  echo "$(GO) build -o $(BIN)/$$name ./$$d"; $(GO) build -o $(BIN)/$$name ./$$d || exit 1; \
	done

vet:
	$(GO) vet ./...
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

# The packages that claim to build off Linux (wire, listener, exporter,
# toactl, edge/rules, the examples) must, tests included; the Linux-only
# ones (agent, edge and its engines, the commands, the test harnesses) say
# so with a linux build constraint, so ./... is exactly the portable set.
portable:
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	GOOS=windows GOARCH=amd64 $(GO) vet ./...

test:
	$(GO) test -count=1 ./...

race:
	$(GO) test -count=1 -race ./...

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

deps:
	scripts/deps.sh $(TEST_DEBS)

# Everything CI runs: dependencies, static checks, unit and integration
# tests under the race detector, and a short run of every fuzz target.
# vmtest-packages is vmtest and packages-test in one.
check: deps vet portable build race fuzz vmtest-packages

# toa.ko on real Debian kernels in QEMU (root; see vmtest/README.md), on
# amd64 and arm64, the two architectures' guests side by side (--parallel:
# one host thread each, so two cores; "arm64 guests" there has the times),
# and the sanitizer kernel's boots in a chain of their own beside them.
VMTEST_SELFTEST = REALIP_VMTEST=6.1 $(GO) test -count=1 -timeout 20m -run TestSelftest ./vmtest/
TOA_KERNELS = $(if $(filter all,$(KVERS)),5.10 6.1 6.12 sid,$(KVERS)) $(DEBUG_KERNEL)
vmtest:
	$(VMTEST_SELFTEST)
	vmtest/toa.sh --arm64 --parallel $(TOA_KERNELS)

# `make check`'s vmtest: the packages test runs beside the sanitizer
# kernel's chain, from the moment the amd64 and arm64 chains end (the
# sanitizer boots are the longest; alone they leave a core idle): a warm
# make check on 2 cores took 20.1 min so, against 24.4 and 26.5 before.
vmtest-packages:
	$(VMTEST_SELFTEST)
	vmtest/toa.sh --arm64 --parallel --meanwhile test/packaging/run.sh $(TOA_KERNELS)

# deb and rpm packages (toa-dkms, realip-agent, realip-edge; amd64 and arm64)
# into dist/, built with nfpm from packaging/ (its own Go module).
packages:
	cd packaging && $(GO) run ./build -out ../dist

# Build, inspect, lintian, rpm into a scratch root, install here with DKMS
# building toa.ko for the 6.1 headers, then under systemd in QEMU (root).
packages-test:
	test/packaging/run.sh

bench:
	bench/listener.sh
	bench/edge.sh

# The main job: client -> realip-edge -> origin in network namespaces, one
# rule per IP passing mode, and what the origin saw; TOA through the eBPF
# receiver where the kernel runs it, with python3's http.server and curl
# (not in a minimal Debian 12). Root on Linux.
demo: build
	scripts/deps.sh iproute2 curl python3
	scripts/demo.sh $(BIN)

clean:
	rm -rf $(BIN)
