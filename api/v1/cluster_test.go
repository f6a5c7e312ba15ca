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

// Only the lock holder's own pre-restore config backs up a locked cluster, and only until the
// restore has verified its backup (and paused the cluster).
func TestPreRestoreBackupDue(t *testing.T) {
	locked := func(holder, verified string) *Cluster {
		c := &Cluster{}
		c.Annotations = map[string]string{AnnotationActiveRestore: holder}
		if verified != "" {
			c.Annotations[AnnotationRestoreVerified] = verified
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		c          *Cluster
		ns, config string
		want       bool
	}{
		{"the holder's pre-restore config", locked("cluster-a/undo", ""), "cluster-a", "pre-restore-undo", true},
		{"another config", locked("cluster-a/undo", ""), "cluster-a", "daily", false},
		{"another restore's pre-restore config", locked("cluster-a/undo", ""), "cluster-a", "pre-restore-other", false},
		{"another namespace", locked("cluster-a/undo", ""), "cluster-b", "pre-restore-undo", false},
		{"not locked", locked("", ""), "cluster-a", "pre-restore-undo", false},
		{"verified and paused", locked("cluster-a/undo", `{"restore":"cluster-a/undo"}`), "cluster-a",
			"pre-restore-undo", false},
		{"an earlier restore's record", locked("cluster-a/undo", `{"restore":"cluster-a/before"}`), "cluster-a",
			"pre-restore-undo", true},
	} {
		if got := tc.c.PreRestoreBackupDue(tc.ns, tc.config); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
