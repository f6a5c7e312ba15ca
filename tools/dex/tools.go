//go:build tools

// Package dex pins Dex, the OIDC provider KKP ships, built from the module proxy like the other
// tools: the sandbox signs console users in through it and kube-apiserver accepts its ID tokens.
// Dex tags v2 releases without a /v2 module path, so the proxy serves it by pseudo-version only:
// this is v2.45.1 (2026-03-03), whose static passwords carry groups.
package dex

import _ "github.com/dexidp/dex/cmd/dex"
