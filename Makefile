# Fresh-machine entry points (see README.md).
SHELL := /bin/bash
SWIFT ?= swift
BIN := .build/release/cvm-cli

.PHONY: demo demo-formats demo-deps demo-image-deps test build deps test-deps bench bench-aws bench-upload-azure clean

## demo: install what is needed, build cvm-cli + cvm-agent, build the base image, update-disk the
## sample workload, predict its PCRs, boot it locally (QEMU+OVMF+swtpm), fetch the golden
## measurement over pinned TLS, verify a fresh TPM quote against the prediction, stop.
demo: demo-image-deps
	$(SWIFT) build -c release --product cvm-cli
	$(SWIFT) build -c release --product cvm-agent
	./scripts/demo.sh $(BIN)

## demo-formats: build a sample GPT disk and take it through every cloud format and update-disk.
demo-formats: demo-deps
	$(SWIFT) build -c release --product cvm-cli
	./scripts/demo-formats.sh $(BIN)

## test: install build + oracle tools, build, run every test.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-swift-testing

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --with-test-tools

build: deps
	$(SWIFT) build -c release

## bench: ours vs the peer tools on a 4 GiB disk (prints ratios).
bench: test-deps
	$(SWIFT) build -c release --product cvm-cli
	./bench/formats.sh $(BIN)

## bench-aws: deploy-aws's inline disk digest vs upload + a second hashing pass, against moto.
bench-aws: test-deps
	$(SWIFT) build -c release --product cvm-cli
	./bench/deploy-aws.sh $(BIN)

## bench-upload-azure: page blob upload, ours vs the azure-storage-blob SDK (local endpoint).
bench-upload-azure: test-deps
	$(SWIFT) build -c release --product cvm-cli
	./bench/upload-azure.sh $(BIN)

clean:
	rm -rf .build

demo-deps:
	./scripts/install-deps.sh --with-test-tools

demo-image-deps:
	./scripts/install-deps.sh --with-image-tools
