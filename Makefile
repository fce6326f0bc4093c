# make test = typecheck + vitest + csi-sanity + the real-kernel tier (vm-test). `make deps` installs what a fresh Debian machine lacks.
SHELL := /bin/bash
CSI_SANITY_VERSION := v5.5.0
GOBIN ?= $(shell go env GOPATH)/bin

.PHONY: deps build typecheck unit sanity vm-test test demo bench

deps:
	GOBIN=$(GOBIN) CSI_SANITY_VERSION=$(CSI_SANITY_VERSION) scripts/install-deps.sh

build:
	npx tsc -p tsconfig.json

typecheck:
	npx tsc -p tsconfig.json --noEmit

unit: build
	npx vitest run

# the whole suite, no skip and no focus, against the simulated host (controller on its tgtd + node),
# once with filesystem and once with raw block volumes
sanity: build
	CSI_SANITY=$(GOBIN)/csi-sanity SANITY_TARGET=sim SANITY_ACCESS_TYPES="mount block" \
	  scripts/csi-sanity.sh --csi.testvolumesize 33554432

test: typecheck unit sanity vm-test

demo: build
	node dist/test/sim/demo.js

bench: build
	node dist/bench/stage.js

# the real-kernel tier: the Debian kernel under QEMU (TCG) with the real iscsid, udev, multipathd and
# tgtd; prints one line per scenario and "N passed, N failed"
vm-test: build
	VNG=$(CURDIR)/.vm/venv/bin/vng CSI_SANITY=$(GOBIN)/csi-sanity test/vm/run.sh
