//go:build tools

// Package tools pins golangci-lint, which `make verify` runs over every module (.golangci.yaml).
// It is its own module, outside go.work, so that the linter's dependencies never meet the
// services' build list; `make tools` builds it into the tool cache.
package tools

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
