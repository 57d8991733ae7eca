# mriot — make run (the product, locally), make test (every test tier).
SHELL := /bin/bash
GO    ?= go
FUNCTIONS := jitr replicate reconcile ingest api setup presence commands

GOOS_LAMBDA   := linux
GOARCH_LAMBDA := arm64
LAMBDA_FLAGS  := -trimpath -tags lambda.norpc -ldflags='-s -w' -buildvcs=false

.PHONY: run test race soak build lint vet fmt staticcheck clean bench-cold bench-local bench-storm scale-curve

## run: the whole system on this machine (mriot local); Ctrl-C stops it.
run:
	$(GO) build -buildvcs=auto -o bin/mriot ./cmd/mriot
	./bin/mriot local

## build: one linux/arm64 bootstrap per function under bin/<function>/bootstrap.
build: $(addprefix bin/,$(addsuffix /bootstrap,$(FUNCTIONS)))

bin/%/bootstrap: FORCE
	CGO_ENABLED=0 GOOS=$(GOOS_LAMBDA) GOARCH=$(GOARCH_LAMBDA) $(GO) build $(LAMBDA_FLAGS) -o $@ ./functions/$*

.PHONY: FORCE
FORCE:

## lint: gofmt, go vet, staticcheck, go.mod tidy, nothing left for go fix's
## modernizers, and govulncheck (skipped when vuln.go.dev is unreachable).
.PHONY: modtidy gofix vuln
lint: fmt vet staticcheck modtidy gofix vuln

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

modtidy:
	$(GO) mod tidy -diff

# go fix -diff prints the changes its modernizers suggest; any is a failure.
gofix:
	@out=$$($(GO) fix -diff ./...); rc=$$?; \
	if [ -n "$$out" ] || [ $$rc -ne 0 ]; then echo "$$out"; echo "go fix suggests changes: review them, then go fix ./..."; exit 1; fi

# govulncheck reads the Go vulnerability database at vuln.go.dev; where that
# cannot be reached (this workplace's machines and CI), the step says so and
# passes.
VULN_DB := https://vuln.go.dev/index/db.json.gz
vuln:
	@if curl -sfI --max-time 10 $(VULN_DB) >/dev/null 2>&1; then \
		$(GO) tool govulncheck ./...; \
	else \
		echo "govulncheck skipped: $(VULN_DB) is unreachable from this machine"; \
	fi

## test: lint, then every test tier (integration tiers skip when their tool is
## missing, and are required when CI=true), then the packages again under the
## race detector (the 200-device load test is skipped there: -short).
## RACE_PKGS is every package: no list to keep, and nothing concurrent left
## out (even deploytest runs the RIE's log writer and an HTTP handler beside
## its test). 74 s on 2 cores, against 49 s for the hand-kept list it replaces.
RACE_PKGS := ./...

test: lint
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -short $(RACE_PKGS)

race:
	$(GO) test -count=1 -race -short $(RACE_PKGS)

## soak: the deterministic simulation's scenarios (convergence, presence,
## commands, rotation) over SEEDS seeds each (default 5000) from FIRST
## (default 0); a failing seed prints how to replay it.
SEEDS ?= 5000
FIRST ?= 0
soak:
	set -o pipefail; DST_SEEDS=$(SEEDS) DST_FIRST=$(FIRST) $(GO) test -count=1 -timeout 2h -run 'TestSimulation$$|TestPresenceSimulation$$|TestCommandSimulation$$|TestRotationSimulation$$' -v ./internal/testkit/dst | \
		{ grep -v -e '^=== ' -e '--- PASS' || true; }

## bench-cold: every bootstrap's cold start under the RIE beside a bare
## aws-lambda-go handler and one with the SDK clients and X-Ray SDK, in one
## run (ROUNDS, default 10; COLD_FN=jitr,api for some). See docs/performance.md.
ROUNDS ?= 10
COLD_FN ?= jitr,replicate,reconcile,ingest,api,setup,presence,commands
bench-cold:
	$(GO) run ./scripts/coldstart -rounds $(ROUNDS) -fn $(COLD_FN)

## bench-local: telemetry through the local stack's endpoint (memory and
## state file) beside mosquitto, same paho client, mutual TLS and QoS 1, in
## one run (LOCAL_DEVICES × LOCAL_MESSAGES per round, LOCAL_ROUNDS rounds;
## defaults 20 × 200, 3; LOCAL_ROUNDS=10 LOCAL_MESSAGES=500: 100,000
## messages in 10,000-message windows).
## See docs/performance.md.
LOCAL_DEVICES ?= 20
LOCAL_MESSAGES ?= 200
LOCAL_ROUNDS ?= 3
bench-local:
	$(GO) run ./scripts/benchlocal -devices $(LOCAL_DEVICES) -messages $(LOCAL_MESSAGES) -rounds $(LOCAL_ROUNDS)

## bench-storm: DEVICES (default 200) onboarding at once under AWS's quotas in
## REGIONS (default 2,3) regions, with this project's retry policy and the
## seed article's, in one run. See docs/performance.md.
DEVICES ?= 200
REGIONS ?= 2,3
bench-storm:
	$(GO) run ./cmd/mriot bench storm --devices $(DEVICES) --regions $(REGIONS)

## scale-curve: the storm on the virtual clock at 1,000 and 10,000 devices in
## 2, 3 and 6 regions; prints the table and writes docs/scale.svg.
scale-curve:
	SCALE_CURVE=1 $(GO) test -count=1 -timeout 1h -run 'TestScaleCurve$$' -v ./internal/testkit/dst

clean:
	rm -rf bin .aws-sam

## ---- SAM (issue #3) -------------------------------------------------------
## sam build (BuildMethod: makefile) runs `make build-<LogicalId>` with
## ARTIFACTS_DIR set; each target writes the linux/arm64 bootstrap there.
.PHONY: build-JitrFunction build-ReplicateFunction build-ReconcileFunction build-IngestFunction build-ApiFunction build-SetupFunction build-PresenceFunction build-CommandsFunction invoke rie template-test

define sam_build
	CGO_ENABLED=0 GOOS=$(GOOS_LAMBDA) GOARCH=$(GOARCH_LAMBDA) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/$(1)
endef

build-JitrFunction:
	$(call sam_build,jitr)
build-ReplicateFunction:
	$(call sam_build,replicate)
build-ReconcileFunction:
	$(call sam_build,reconcile)
build-IngestFunction:
	$(call sam_build,ingest)
build-ApiFunction:
	$(call sam_build,api)
build-SetupFunction:
	$(call sam_build,setup)
build-PresenceFunction:
	$(call sam_build,presence)
build-CommandsFunction:
	$(call sam_build,commands)

## rie: install the Lambda Runtime Interface Emulator into bin/tools.
RIE_MODULE := github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d
rie: bin/tools/aws-lambda-rie
bin/tools/aws-lambda-rie:
	GOBIN=$(CURDIR)/bin/tools CGO_ENABLED=0 $(GO) install $(RIE_MODULE)

## invoke: make invoke FN=jitr EVENT=events/jitr-registered.json
## Builds the function for this machine and runs its bootstrap under the RIE
## with the variables of events/env.json; AWS_ENDPOINT_URL passes through.
invoke: rie
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=jitr EVENT=events/jitr-registered.json"; exit 2; }
	$(GO) run ./scripts/invoke -fn $(FN) -event $(EVENT) -env events/env.json -gobin bin/tools

## template-test: cfn-lint, the SAM transform, the IAM/runtime/destination
## checks, the event fixtures and the RIE-against-moto tests.
template-test:
	$(GO) test -count=1 ./internal/testkit/deploytest/... ./internal/workflow/setup/...
