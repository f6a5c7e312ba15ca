//go:build tools

// Package krew pins krew, kubectl's plugin manager, built from the module proxy like the other
// tools: the end-to-end suite installs the plugin from its krew manifest and archive with it.
package krew

import _ "sigs.k8s.io/krew/cmd/krew"
