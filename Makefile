# mriot — make run (the product, locally), make test (every test tier).
SHELL := /bin/bash
GO    ?= go
FUNCTIONS := jitr replicate ingest

GOOS_LAMBDA   := linux
GOARCH_LAMBDA := arm64
LAMBDA_FLAGS  := -trimpath -tags lambda.norpc -ldflags='-s -w' -buildvcs=false

.PHONY: run test build lint unit vet fmt staticcheck clean

run:
	$(GO) run ./cmd/mriot local

## build: one linux/arm64 bootstrap per function under bin/<function>/bootstrap.
build: $(addprefix bin/,$(addsuffix /bootstrap,$(FUNCTIONS)))

bin/%/bootstrap: FORCE
	CGO_ENABLED=0 GOOS=$(GOOS_LAMBDA) GOARCH=$(GOARCH_LAMBDA) $(GO) build $(LAMBDA_FLAGS) -o $@ ./functions/$*

.PHONY: FORCE
FORCE:

lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

test: lint
	$(GO) test -count=1 ./...

clean:
	rm -rf bin .aws-sam
