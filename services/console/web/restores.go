package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Restores: confirming one from a completed backup, creating it, and following it.

type restoreRow struct {
	Restore kubermaticv1.EtcdRestore
	Status  kubermaticv1.EtcdRestoreStatus
}

func (s *Server) restoreRows(r *http.Request, sess *session, ns, cluster string) ([]restoreRow, error) {
	var list kubermaticv1.EtcdRestoreList
	if err := sess.Client.List(r.Context(), &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var rows []restoreRow
	for i := range list.Items {
		rs := &list.Items[i]
		if rs.Spec.Cluster.Name == cluster {
			rows = append(rows, restoreRow{Restore: *rs, Status: rs.EffectiveStatus()})
		}
	}
	slices.SortFunc(rows, func(a, b restoreRow) int {
		return b.Restore.CreationTimestamp.Compare(a.Restore.CreationTimestamp.Time)
	})
	return rows, nil
}

type confirmData struct {
	Cluster, Namespace string
	Config             string
	Backup             kubermaticv1.BackupStatus
	// Confirm is what the user typed; Mismatch says it was not the cluster's name.
	Confirm  string
	Mismatch string
}

// completedBackup finds backup among the config's Completed backups: a restore is offered
// only from a backup the API says was stored.
func (s *Server) completedBackup(r *http.Request, sess *session, ns, config,
	backup string) (kubermaticv1.BackupStatus, error) {
	if errs := validation.IsDNS1123Subdomain(config); len(errs) > 0 {
		return kubermaticv1.BackupStatus{}, refuse("%q is not a backup config name.", config)
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := sess.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: config}, &cfg); err != nil {
		return kubermaticv1.BackupStatus{}, err
	}
	if cfg.Spec.Cluster.Name != r.PathValue("cluster") {
		return kubermaticv1.BackupStatus{}, refuse("Backup config %s is for cluster %s, not %s.", config,
			cfg.Spec.Cluster.Name, r.PathValue("cluster"))
	}
	for _, b := range cfg.Status.LastBackups {
		if b.BackupName == backup {
			if b.BackupPhase != kubermaticv1.PhaseCompleted || b.DeletePhase != "" {
				return b, refuse("Backup %s is %s%s: only a Completed backup that is not being deleted can be restored.", backup,
					b.BackupPhase, deleting(b))
			}
			return b, nil
		}
	}
	return kubermaticv1.BackupStatus{}, refuse("Backup config %s has no backup %q.", config, backup)
}

func deleting(b kubermaticv1.BackupStatus) string {
	if b.DeletePhase != "" {
		return ", deletion " + b.DeletePhase
	}
	return ""
}

func (s *Server) confirmRestore(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	b, err := s.completedBackup(r, sess, ns, q.Get("config"), q.Get("backup"))
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "confirmrestore", view{Title: "Restore " + r.PathValue("cluster"), Session: sess,
		Data: confirmData{Cluster: r.PathValue("cluster"), Namespace: ns, Config: q.Get("config"), Backup: b}})
	return nil
}

func (s *Server) createRestore(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	cluster := r.PathValue("cluster")
	config, backup := r.PostForm.Get("config"), r.PostForm.Get("backup")
	b, err := s.completedBackup(r, sess, ns, config, backup)
	if err != nil {
		return err
	}
	// Typing the cluster's name is the guard against restoring the wrong cluster's etcd.
	if confirm := strings.TrimSpace(r.PostForm.Get("confirm")); confirm != cluster {
		s.render(w, r, http.StatusUnprocessableEntity, "confirmrestore", view{Title: "Restore " + cluster, Session: sess,
			Data: confirmData{Cluster: cluster, Namespace: ns, Config: config, Backup: b, Confirm: confirm,
				Mismatch: fmt.Sprintf("Type %s, the name of the cluster whose etcd will be replaced.", cluster)}})
		return nil
	}
	rs := &kubermaticv1.EtcdRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "restore-"},
		Spec: kubermaticv1.EtcdRestoreSpec{Cluster: clusterRef(cluster), BackupName: b.BackupName,
			Destination: b.Destination},
	}
	if err := sess.Client.Create(r.Context(), rs); err != nil {
		return err
	}
	http.Redirect(w, r, "/clusters/"+url.PathEscape(cluster)+"/restores/"+url.PathEscape(rs.Name), http.StatusSeeOther)
	return nil
}

type restoresData struct {
	Cluster, Namespace string
	Restores           []restoreRow
}

func (s *Server) restores(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	rows, err := s.restoreRows(r, sess, ns, r.PathValue("cluster"))
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "restores", view{Title: "Restores of " + r.PathValue("cluster"), Session: sess, Live: ns,
		Data: restoresData{Cluster: r.PathValue("cluster"), Namespace: ns, Restores: rows}})
	return nil
}

type restoreData struct {
	Cluster, Namespace string
	Row                restoreRow
	// Phases are the steps of a restore, for the timeline.
	Phases []string
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	name := r.PathValue("restore")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return refuse("%q is not a restore name.", name)
	}
	var rs kubermaticv1.EtcdRestore
	if err := sess.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, &rs); err != nil {
		return err
	}
	if rs.Spec.Cluster.Name != r.PathValue("cluster") {
		return refuse("Restore %s is of cluster %s, not %s.", name, rs.Spec.Cluster.Name, r.PathValue("cluster"))
	}
	s.render(w, r, http.StatusOK, "restore", view{Title: "Restore " + name, Session: sess, Live: ns,
		Data: restoreData{Cluster: r.PathValue("cluster"), Namespace: ns, Row: restoreRow{Restore: rs,
			Status: rs.EffectiveStatus()},
			Phases: []string{kubermaticv1.RestorePhaseStarted, kubermaticv1.RestorePhaseStsRebuilding,
				kubermaticv1.RestorePhaseCompleted}}})
	return nil
}
