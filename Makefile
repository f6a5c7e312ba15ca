# Targets: run (sandbox), test, build, images, tools, generate, lint, verify, bench, bench-targets, screenshots.
SHELL := /bin/bash
export GOTOOLCHAIN := local

# Third-party binaries built from the Go module proxy, cached under a stable path so a second
# run (or a second clone) only relinks them.
CACHE ?= $(HOME)/.cache/etcdbackup
BIN ?= $(CACHE)/bin
export ETCDBACKUP_BIN := $(BIN)

# One set of build flags for every go command make runs: the tests, the services the
# end-to-end suite starts, the images (static and reproducible: no cgo, -trimpath) and the
# tools built from the module proxy. A package is then compiled once and its build cached for
# every later build that imports it at the same version; hack/shared-builds.sh (make verify)
# keeps the tools' versions of shared modules equal to the workspace's.
export CGO_ENABLED := 0
export GOFLAGS := $(strip $(GOFLAGS) -trimpath)

SERVICES := scheduler snapshotter uploader pruner restorer journal console
MODULES := api pkg proto cli e2e $(addprefix services/,$(SERVICES))
TOOLS := $(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/kube-controller-manager $(BIN)/versitygw $(BIN)/nats $(BIN)/promtool \
	$(BIN)/dex $(BIN)/kubectl-krew
GENERATORS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/controller-gen
LINT := $(BIN)/golangci-lint

.PHONY: all build images tools generate verify lint test test-unit test-e2e run bench bench-targets clean chromium screenshots krew

all: build

build:
	@mkdir -p bin
	cd services && for s in $(SERVICES); do (cd $$s && go build -o ../../bin/$$s .) || exit 1; done
	cd services/restorer && go build -o ../../bin/restore-step ./cmd/restore-step
	cd cli && go build -o ../bin/kubectl-etcdbackup ./cmd/kubectl-etcdbackup

# A release of the kubectl plugin for krew (docs/cli.md): an archive per platform and the krew
# manifest etcdbackup.yaml with their URLs and sha256, in bin/krew. make krew VERSION=v0.1.0
krew:
	cd cli && go run ./cmd/krew-release --version $(VERSION) --out ../bin/krew --readme ../docs/cli.md

# One OCI image archive per service in bin/images (no container engine, no base image), and
# deploy/k8s/kustomization.yaml pointed at their digests. Reproducible: commit the result.
images:
	cd tools/images && GOWORK=off go run . --repo ../.. --out ../../bin/images --kustomization ../../deploy/k8s/kustomization.yaml

tools: $(TOOLS) $(GENERATORS) $(LINT)

$(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/kube-controller-manager &: tools/kube/go.mod tools/kube/go.sum
	@mkdir -p $(BIN)
	@echo "building kube-apiserver, kube-controller-manager and kubectl v1.37.2 (about 10 minutes on 2 cores the first time)"
	cd tools/kube && GOWORK=off go build -o $(BIN)/ ./cmd/kube-apiserver ./cmd/kubectl ./cmd/kube-controller-manager
	@touch $(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/kube-controller-manager

$(BIN)/versitygw $(BIN)/nats &: tools/go.mod tools/go.sum
	@mkdir -p $(BIN)
	cd tools && GOWORK=off go build -o $(BIN)/ github.com/versity/versitygw/cmd/versitygw github.com/nats-io/natscli/nats
	@touch $(BIN)/versitygw $(BIN)/nats

# Dex, the OIDC provider KKP ships: the sandbox signs console users in through it. Without cgo,
# as every build here (no SQLite storage; the sandbox's Dex keeps its state in memory): 28 s on
# 2 cores after kube-apiserver's build, whose gRPC and protobuf it shares.
$(BIN)/dex: tools/dex/go.mod tools/dex/go.sum
	@mkdir -p $(BIN)
	cd tools/dex && GOWORK=off go build -o $(BIN)/ github.com/dexidp/dex/cmd/dex
	@touch $(BIN)/dex

# krew, kubectl's plugin manager: the end-to-end suite installs the plugin's release with it.
$(BIN)/kubectl-krew: tools/krew/go.mod tools/krew/go.sum
	@mkdir -p $(BIN)
	cd tools/krew && GOWORK=off go build -o $(BIN)/kubectl-krew sigs.k8s.io/krew/cmd/krew
	@touch $(BIN)/kubectl-krew

# promtool checks and unit-tests the alerting rules (deploy/k8s/monitoring): Debian's, from a
# pinned package, else built from the module proxy (hack/promtool.sh).
$(BIN)/promtool: hack/promtool.sh tools/prom/go.mod tools/prom/go.sum
	@mkdir -p $(BIN)
	./hack/promtool.sh $(BIN)
	@touch $(BIN)/promtool

# golangci-lint, pinned in its own module so its dependencies meet no other build list.
$(LINT): tools/lint/go.mod tools/lint/go.sum
	@mkdir -p $(BIN)
	@echo "building golangci-lint v2.15.0 (about 3 minutes on 2 cores the first time)"
	cd tools/lint && GOWORK=off go build -o $(BIN)/ github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	@touch $(LINT)

$(GENERATORS) &: tools/go.mod tools/go.sum
	@mkdir -p $(BIN)
	cd tools && GOWORK=off go build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go sigs.k8s.io/controller-tools/cmd/controller-gen
	@touch $(GENERATORS)

generate: $(GENERATORS)
	cd proto && PATH=$(BIN):$$PATH buf generate
	cd api && $(BIN)/controller-gen object paths=./...
	cd api && $(BIN)/controller-gen crd paths=./v1/... output:crd:artifacts:config=../deploy/k8s/crds
	cd api && $(BIN)/controller-gen crd paths=./etcdbackup/... output:crd:artifacts:config=../deploy/k8s/crds/etcdbackup
	cd e2e && $(BIN)/controller-gen crd paths=./kkp/... output:crd:artifacts:config=kkp/crds
	./hack/gen-gowork.sh

# The linter (.golangci.yaml) over every module: the workspace's, and tools/images on its own.
lint: $(LINT)
	for m in $(MODULES); do (cd $$m && $(LINT) run ./...) || exit 1; done
	cd tools/images && GOWORK=off $(LINT) run ./...

verify: generate lint
	./hack/shared-builds.sh
	@git diff --exit-code -- proto api deploy/k8s/crds e2e/kkp/crds go.work || { echo "generated files are stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto api deploy/k8s/crds e2e/kkp/crds go.work)" || { git status --porcelain; echo "untracked generated files"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt: $$out"; exit 1; }
	for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	for m in $(MODULES) tools tools/kube tools/images tools/prom tools/lint tools/dex tools/krew; do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "$$m: go.mod is not tidy"; exit 1; }; done
	for m in $(MODULES); do (cd $$m && GOWORK=off go build ./... ) || { echo "$$m does not build without go.work"; exit 1; }; done

# Unit and component tests (embedded NATS and etcd, in-process S3), then the end-to-end suite
# (real kube-apiserver, versitygw S3 server, service binaries as processes) in E2E_SHARDS
# sandboxes side by side (hack/test.sh, hack/e2e.sh).
E2E_SHARDS ?= 4
test: $(TOOLS) chromium
	E2E_SHARDS=$(E2E_SHARDS) ./hack/test.sh

test-unit:
	go test -count=1 -timeout 20m $$(go list github.com/etcd-backup/etcdbackup/... | grep -v '/e2e')

test-e2e: $(TOOLS) chromium
	./hack/e2e.sh $(E2E_SHARDS) -test.v

# The console's screenshots in docs/console, taken by its browser test.
screenshots: $(TOOLS) chromium
	mkdir -p docs/console
	cd e2e && ETCDBACKUP_SCREENSHOTS=$(CURDIR)/docs/console go test -count=1 \
		-run '^(TestConsoleFlowsInABrowser|TestConsoleSignInThroughOIDC)$$' .

# Debian's Chromium for the console's browser tests: installed as root when missing, else a
# one-line failure saying what to install.
chromium:
	@./hack/chromium.sh

# The sandbox: NATS, kube-apiserver and its etcd, an S3 server, a demo etcd, all services.
run: $(TOOLS)
	@mkdir -p bin
	cd e2e && go build -o ../bin/sandbox ./cmd/sandbox
	./bin/sandbox

# The whole pipeline on ETCDBACKUP_BENCH_MIB (default 256) MiB of etcd data, then the
# snapshotter's hot path alone (etcd stream -> verifier -> staging) against io.Discard.
bench: $(TOOLS)
	cd e2e && go test -run '^$$' -bench . -benchtime 1x -timeout 90m ./bench/...
	cd pkg && go test -run '^$$' -bench . -benchtime 3x ./staging/... ./backupformat/...
	cd pkg && go test -run '^$$' -bench . -benchtime 2x ./journal/...
	cd services/journal && go test -run '^$$' -bench . -benchtime 1x -timeout 10m ./follow/...
	cd services/restorer && go test -run '^$$' -bench PointInTimeBuild -benchtime 1x -timeout 60m ./restore/

# Issue 24's targets side by side in one run (about 25 minutes on 2 cores): B1, B2 and B4 on a
# 1.1 GB etcd of kube-apiserver-like data, R1 restoring it, B5 with 1,000 configs due at once
# every minute for 3 minutes; a table of the targets at the end. PROFILES=dir keeps the CPU
# profiles (snapshotter and uploader across the backup; every replica, kube-apiserver and the
# benchmark's process, which embeds NATS and the etcds, in the burst's second minute).
bench-targets: $(TOOLS)
	$(if $(PROFILES),mkdir -p $(abspath $(PROFILES)))
	cd e2e && ETCDBACKUP_BENCH_MIB=1100 ETCDBACKUP_BENCH_CONFIGS=1000 ETCDBACKUP_BENCH_MINUTES=3 \
		ETCDBACKUP_BENCH_PROFILE_DIR=$(if $(PROFILES),$(abspath $(PROFILES))) go test -run '^$$' \
		-bench '^(BenchmarkBackup|BenchmarkRestore|BenchmarkScale)$$' -benchtime 1x -timeout 90m ./bench/

clean:
	rm -rf bin
