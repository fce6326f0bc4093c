# make test = typecheck + vitest + csi-sanity + deploy-check + the real-kernel tier (vm-test). `make deps` installs what a fresh Debian machine lacks.
SHELL := /bin/bash
CSI_SANITY_VERSION := v5.5.0
GOBIN ?= $(shell go env GOPATH)/bin
HELM_VERSION := v3.22.0
KUSTOMIZE_VERSION := v5.8.2
HELM ?= $(GOBIN)/helm
KUSTOMIZE ?= $(GOBIN)/kustomize
CHART := charts/iscsi-csi
CHART_VALUES := $(wildcard $(CHART)/ci/*-values.yaml)
# the oldest Kubernetes the chart supports (a go-installed helm templates for v1.20.0 otherwise)
KUBE_VERSION := 1.34.0

.PHONY: deps build typecheck unit sanity deploy-check vm-test test demo bench

deps:
	GOBIN=$(GOBIN) CSI_SANITY_VERSION=$(CSI_SANITY_VERSION) HELM_VERSION=$(HELM_VERSION) \
	  KUSTOMIZE_VERSION=$(KUSTOMIZE_VERSION) scripts/install-deps.sh

# tsc, then the bundle the image runs (scripts/bundle.mjs → dist/bundle/cli.js)
build:
	npx tsc -p tsconfig.json
	node scripts/bundle.mjs

typecheck:
	npx tsc -p tsconfig.json --noEmit

unit: build
	npx vitest run

# the whole suite, no skip and no focus, against the simulated host (controller on its tgtd + node),
# once with filesystem and once with raw block volumes
sanity: build
	CSI_SANITY=$(GOBIN)/csi-sanity SANITY_TARGET=sim SANITY_ACCESS_TYPES="mount block" \
	  scripts/csi-sanity.sh --csi.testvolumesize 33554432

test: typecheck unit sanity deploy-check vm-test

# the Helm chart and the kustomize manifests: helm lint and helm template with the default values and
# every charts/iscsi-csi/ci/*-values.yaml, kustomize build deploy/, then test/unit/chart.test.ts (the
# default render must equal the kustomize render: images, args, mounts, volumes, RBAC, CSIDriver,
# driver configs) and test/unit/deploy.test.ts (sidecar flags and tags against their releases)
deploy-check:
	@for tool in $(HELM) $(KUSTOMIZE); do \
	  test -x $$tool || { echo "deploy-check: $$tool is missing: make deps installs it" >&2; exit 1; }; \
	done
	$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART)
	@set -e; for values in $(CHART_VALUES); do echo "$(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART) -f $$values"; $(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART) -f $$values; done
	$(HELM) template iscsi-csi $(CHART) --namespace iscsi-csi --kube-version $(KUBE_VERSION) > /dev/null
	@set -e; for values in $(CHART_VALUES); do echo "$(HELM) template iscsi-csi $(CHART) --namespace iscsi-csi --kube-version $(KUBE_VERSION) -f $$values"; \
	  $(HELM) template iscsi-csi $(CHART) --namespace iscsi-csi --kube-version $(KUBE_VERSION) -f $$values > /dev/null; done
	$(KUSTOMIZE) build deploy/ > /dev/null
	HELM=$(HELM) KUSTOMIZE=$(KUSTOMIZE) npx vitest run test/unit/chart.test.ts test/unit/deploy.test.ts

demo: build
	node dist/test/sim/demo.js

# stage latency and storms with the driver in this process (bench/stage.ts), then the driver's own cost
# in its own process against issue 13's budgets (bench/cost.ts; exit 1 when one is missed)
bench: build
	node dist/bench/stage.js
	node dist/bench/cost.js

# the real-kernel tier: the Debian kernel under QEMU (TCG) with the real iscsid, udev, multipathd and
# tgtd; prints one line per scenario and "N passed, N failed"
vm-test: build
	VNG=$(CURDIR)/.vm/venv/bin/vng CSI_SANITY=$(GOBIN)/csi-sanity test/vm/run.sh
