# Make rules of the pinned e2e toolchain and pod images (see e2e/tools/README.md).
# The top-level Makefile includes this file; including it leaves the default
# goal as it was.

_tools_default_goal := $(.DEFAULT_GOAL)

TOOLS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
include $(TOOLS_DIR)/versions.env

MEMBRANE_CACHE ?= $(HOME)/.cache/membrane
# Where the pinned binaries (kube-apiserver, etcd, helm, envoy, ...) are linked.
TOOLS_BIN := $(MEMBRANE_CACHE)/bin
# The image store of package e2e/images.
TOOLS_IMAGES := $(MEMBRANE_CACHE)/images

.PHONY: tools tools-check

## tools: build, verify and link the pinned toolchain and pod images (fast when cached)
tools:
	MEMBRANE_CACHE='$(MEMBRANE_CACHE)' bash $(TOOLS_DIR)/install.sh

## tools-check: build nothing; fail unless every pinned tool and image is in place
tools-check:
	MEMBRANE_CACHE='$(MEMBRANE_CACHE)' bash $(TOOLS_DIR)/install.sh --check

.DEFAULT_GOAL := $(_tools_default_goal)
