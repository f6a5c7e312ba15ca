// Package kkp holds CRDs generated from types that mirror KKP's own schema for the four
// resources these services share with KKP (kubermatic/kubermatic, sdk/apis/kubermatic/v1 and
// pkg/crd/k8c.io): the same field names, shapes, required fields and enums, written here, not
// copied. The end-to-end test TestKKPSchema installs them instead of this project's CRDs and
// runs backup, retention and restore on them. Fields of KKP's that these services neither
// read nor write are left out: KKP's CRDs prune unknown fields, and so do these.
package kkp
