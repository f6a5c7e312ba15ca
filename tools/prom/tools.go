//go:build tools

// Package prom pins promtool (Prometheus's rule checker and rule unit tester), built from the
// module proxy like the other tools: make builds it into $(BIN).
package prom

import _ "github.com/prometheus/prometheus/cmd/promtool"
