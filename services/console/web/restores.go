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
	// To is a point-in-time target (AnnotationRestoreTo) instead of Backup; Window what the
	// config can be restored to, as the journal last reported it.
	To, Window string
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

// pointInTimeConfig checks a point-in-time target against config, which must be the cluster's
// and journaled; it returns the config and the window its condition reports. Whether the
// target is inside the window, the restorer decides from the bucket (TargetNotRestorable).
func (s *Server) pointInTimeConfig(r *http.Request, sess *session, ns, config,
	to string) (*kubermaticv1.EtcdBackupConfig, string, error) {
	if errs := validation.IsDNS1123Subdomain(config); len(errs) > 0 {
		return nil, "", refuse("%q is not a backup config name.", config)
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := sess.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: config}, &cfg); err != nil {
		return nil, "", err
	}
	if cfg.Spec.Cluster.Name != r.PathValue("cluster") {
		return nil, "", refuse("Backup config %s is for cluster %s, not %s.", config, cfg.Spec.Cluster.Name,
			r.PathValue("cluster"))
	}
	pit := pointInTime(&cfg)
	if pit == nil {
		return nil, "", refuse("Backup config %s has no continuous backup: it can be restored only to one of its backups.",
			config)
	}
	if _, _, err := kubermaticv1.ParseRestoreTo(strings.TrimSpace(to)); err != nil {
		return nil, "", refuse("Restore to: %s.", err)
	}
	return &cfg, pit.Message, nil
}

func (s *Server) confirmRestore(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Has("to") {
		_, window, err := s.pointInTimeConfig(r, sess, ns, q.Get("config"), q.Get("to"))
		if err != nil {
			return err
		}
		s.render(w, r, http.StatusOK, "confirmrestore", view{Title: "Restore " + r.PathValue("cluster"), Session: sess,
			Data: confirmData{Cluster: r.PathValue("cluster"), Namespace: ns, Config: q.Get("config"),
				To: strings.TrimSpace(q.Get("to")), Window: window}})
		return nil
	}
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
	config, backup, to := r.PostForm.Get("config"), r.PostForm.Get("backup"), strings.TrimSpace(r.PostForm.Get("to"))
	rs := &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "restore-"}}
	d := confirmData{Cluster: cluster, Namespace: ns, Config: config, To: to}
	if r.PostForm.Has("to") {
		// A point-in-time restore names the config: the restorer picks the full backup.
		cfg, window, err := s.pointInTimeConfig(r, sess, ns, config, to)
		if err != nil {
			return err
		}
		d.Window = window
		rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: to}
		rs.Spec = kubermaticv1.EtcdRestoreSpec{Cluster: clusterRef(cluster), BackupName: cfg.Name,
			Destination: cfg.Spec.Destination}
	} else {
		b, err := s.completedBackup(r, sess, ns, config, backup)
		if err != nil {
			return err
		}
		d.Backup = b
		rs.Spec = kubermaticv1.EtcdRestoreSpec{Cluster: clusterRef(cluster), BackupName: b.BackupName,
			Destination: b.Destination}
	}
	// Typing the cluster's name is the guard against restoring the wrong cluster's etcd.
	if confirm := strings.TrimSpace(r.PostForm.Get("confirm")); confirm != cluster {
		d.Confirm = confirm
		d.Mismatch = fmt.Sprintf("Type %s, the name of the cluster whose etcd will be replaced.", cluster)
		s.render(w, r, http.StatusUnprocessableEntity, "confirmrestore", view{Title: "Restore " + cluster, Session: sess,
			Data: d})
		return nil
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
