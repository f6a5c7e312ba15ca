package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The clusters a user may see, one cluster's page, and a one-time backup of it.

type clustersData struct {
	Clusters []kubermaticv1.Cluster
	// Forbidden is the API server's answer when the user may not list Clusters.
	Forbidden string
	// Deleted are the backups of deleted configs (DeletedBackupSets) when the user may list
	// them (the Seed's operators: they are cluster-scoped), soonest expiry first.
	Deleted       []backupv1.DeletedBackupSet
	MaySeeDeleted bool
}

func (s *Server) clusters(w http.ResponseWriter, r *http.Request, sess *session) error {
	var list kubermaticv1.ClusterList
	d := clustersData{}
	if err := sess.Client.List(r.Context(), &list); err != nil {
		if !apierrors.IsForbidden(err) {
			return err
		}
		d.Forbidden = err.Error()
	}
	d.Clusters = list.Items
	slices.SortFunc(d.Clusters, func(a, b kubermaticv1.Cluster) int { return strings.Compare(a.Name, b.Name) })
	var sets backupv1.DeletedBackupSetList
	switch err := sess.Client.List(r.Context(), &sets); {
	case err == nil:
		d.Deleted, d.MaySeeDeleted = sets.Items, true
		slices.SortFunc(d.Deleted, func(a, b backupv1.DeletedBackupSet) int {
			return a.Spec.Expires.Compare(b.Spec.Expires.Time)
		})
	case !apierrors.IsForbidden(err):
		return err
	}
	s.render(w, r, http.StatusOK, "clusters", view{Title: "Clusters", Session: sess, Data: d})
	return nil
}

func (s *Server) goToCluster(w http.ResponseWriter, r *http.Request, _ *session) error {
	name := strings.TrimSpace(r.URL.Query().Get("cluster"))
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return refuse("%q is not a cluster name: %s", name, strings.Join(errs, "; "))
	}
	http.Redirect(w, r, "/clusters/"+url.PathEscape(name), http.StatusSeeOther)
	return nil
}

type clusterData struct {
	Name, Namespace string
	Cluster         *kubermaticv1.Cluster
	Configs         []kubermaticv1.EtcdBackupConfig
	Restores        []restoreRow
	Destinations    []string
	Default         string
	// DestinationsError says why there is no dropdown.
	DestinationsError string
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request, sess *session) error {
	c, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	d := clusterData{Name: r.PathValue("cluster"), Namespace: ns, Cluster: c}
	var configs kubermaticv1.EtcdBackupConfigList
	if err := sess.Client.List(r.Context(), &configs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, cfg := range configs.Items {
		if cfg.Spec.Cluster.Name == d.Name {
			d.Configs = append(d.Configs, cfg)
		}
	}
	slices.SortFunc(d.Configs, func(a, b kubermaticv1.EtcdBackupConfig) int { return strings.Compare(a.Name, b.Name) })
	if d.Restores, err = s.restoreRows(r, sess, ns, d.Name); err != nil {
		return err
	}
	d.Destinations, d.Default, err = s.Destinations(r.Context())
	if err != nil {
		d.DestinationsError = err.Error()
	}
	s.render(w, r, http.StatusOK, "cluster", view{Title: "Cluster " + d.Name, Session: sess, Live: ns, Data: d})
	return nil
}

// ---- one-time backup: a config without a schedule, as the seed document describes

func (s *Server) oneTimeBackup(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	cluster := r.PathValue("cluster")
	names, _, err := s.Destinations(r.Context())
	if err != nil {
		return refuse("The Seed configures no backup destinations: %v", err)
	}
	dest := r.PostForm.Get("destination")
	if !slices.Contains(names, dest) {
		return refuse("%q is not one of the Seed's destinations (%s).", dest, strings.Join(names, ", "))
	}
	name := "snapshot-" + s.now().UTC().Format("20060102-150405")
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Name: name, Cluster: clusterRef(cluster), Destination: dest},
	}
	if err := sess.Client.Create(r.Context(), cfg); err != nil {
		return err
	}
	http.Redirect(w, r, configURL(cluster, name), http.StatusSeeOther)
	return nil
}
