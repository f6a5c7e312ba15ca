package v1

import "testing"

// The control plane's namespace is where KKP records it, else KKP's convention.
func TestClusterNamespaceName(t *testing.T) {
	c := &Cluster{}
	c.Name = "zvc78xnnz7"
	if got := c.NamespaceName(); got != "cluster-zvc78xnnz7" {
		t.Errorf("without status.namespaceName: %q", got)
	}
	c.Status.NamespaceName = "cp-zvc78xnnz7"
	if got := c.NamespaceName(); got != "cp-zvc78xnnz7" {
		t.Errorf("with status.namespaceName: %q", got)
	}
}
