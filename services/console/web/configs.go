package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/schedule"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A config's page with its backups, and the form that adds or edits a config.

// Presets are the schedules the form offers, as in KKP's dashboard; "custom" takes any cron
// expression or @every interval. Daily is the seed document's 1:00 AM.
var Presets = []Preset{
	{ID: "daily", Label: "Daily (01:00)", Schedule: "0 1 * * *", Keep: 7},
	{ID: "weekly", Label: "Weekly (Sunday 01:00)", Schedule: "0 1 * * 0", Keep: 4},
	{ID: "monthly", Label: "Monthly (1st, 01:00)", Schedule: "0 1 1 * *", Keep: 3},
}

// Preset is one schedule choice.
type Preset struct {
	ID, Label, Schedule string
	Keep                int
}

func presetOf(sched string) string {
	for _, p := range Presets {
		if p.Schedule == sched {
			return p.ID
		}
	}
	return "custom"
}

type configData struct {
	Cluster, Namespace string
	Config             *kubermaticv1.EtcdBackupConfig
	Backups            []kubermaticv1.BackupStatus
	Conditions         []conditionRow
	// PointInTime is the config's ContinuousBackup condition when it is journaled: the window
	// it can be restored to.
	PointInTime *kubermaticv1.EtcdBackupConfigCondition
	// Retention is the tiered retention annotation as parsed ("" for none), RetentionError
	// why it does not parse; KeptBy says, per backup name, what keeps it: "keep" for the
	// newest spec.keep completed backups, and each tier that keeps it.
	Retention, RetentionError string
	KeptBy                    map[string]string
	// Timeline draws the backups over time (SVG; empty: nothing to draw).
	Timeline template.HTML
}

type conditionRow struct {
	Type string
	kubermaticv1.EtcdBackupConfigCondition
}

func (s *Server) config(w http.ResponseWriter, r *http.Request, sess *session) error {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return err
	}
	cfg, err := s.getConfig(r, sess, ns)
	if err != nil {
		return err
	}
	d := configData{Cluster: r.PathValue("cluster"), Namespace: ns, Config: cfg}
	d.Backups = append(slices.Clone(cfg.Status.CurrentBackups), cfg.Status.LastBackups...)
	d.Backups = dedupe(d.Backups)
	slices.SortStableFunc(d.Backups, func(a,
		b kubermaticv1.BackupStatus) int {
		return b.ScheduledTime.Compare(a.ScheduledTime.Time)
	})
	for t, c := range cfg.Status.Conditions {
		d.Conditions = append(d.Conditions, conditionRow{Type: t, EtcdBackupConfigCondition: c})
	}
	slices.SortFunc(d.Conditions, func(a, b conditionRow) int { return strings.Compare(a.Type, b.Type) })
	d.PointInTime = pointInTime(cfg)
	d.Retention, d.RetentionError, d.KeptBy = keptBy(cfg, d.Backups, time.Now())
	d.Timeline = timeline(cfg, d.Backups, time.Now())
	s.render(w, r, http.StatusOK, "config", view{Title: "Backups of " + cfg.Name, Session: sess, Live: ns, Data: d})
	return nil
}

// keptBy says what keeps each of backups (newest first) of a scheduled config, as the pruner
// decides it: the newest spec.keep completed ones, and those its tiered retention keeps at
// now, ranked by their scheduled time.
func keptBy(cfg *kubermaticv1.EtcdBackupConfig, backups []kubermaticv1.BackupStatus,
	now time.Time) (policy, invalid string, kept map[string]string) {
	if cfg.Spec.Schedule == "" {
		return "", "", nil
	}
	tiers, err := cfg.Retention()
	if err != nil {
		return "", err.Error(), nil
	}
	var dated []kubermaticv1.Dated
	for _, b := range backups {
		if b.BackupPhase == kubermaticv1.PhaseCompleted && b.DeletePhase == "" {
			dated = append(dated, kubermaticv1.Dated{Name: b.BackupName, At: b.ScheduledTime.Time})
		}
	}
	byTier := tiers.Keeps(dated, now)
	kept = map[string]string{}
	for i, b := range dated {
		var why []string
		if i < cfg.KeepCount() {
			why = append(why, "keep")
		}
		for _, t := range byTier[b.Name] {
			why = append(why, string(t))
		}
		kept[b.Name] = strings.Join(why, ", ")
	}
	return tiers.String(), "", kept
}

// dedupe keeps the first entry of each backup name.
func dedupe(in []kubermaticv1.BackupStatus) []kubermaticv1.BackupStatus {
	seen := map[string]bool{}
	var out []kubermaticv1.BackupStatus
	for _, b := range in {
		if b.BackupName == "" || seen[b.BackupName] {
			continue
		}
		seen[b.BackupName] = true
		out = append(out, b)
	}
	return out
}

func (s *Server) getConfig(r *http.Request, sess *session, ns string) (*kubermaticv1.EtcdBackupConfig, error) {
	name := r.PathValue("config")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, refuse("%q is not a backup config name: %s", name, strings.Join(errs, "; "))
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := sess.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, &cfg); err != nil {
		return nil, err
	}
	if cfg.Spec.Cluster.Name != r.PathValue("cluster") {
		return nil, refuse("Backup config %s/%s is for cluster %s, not %s.", ns, name, cfg.Spec.Cluster.Name,
			r.PathValue("cluster"))
	}
	return &cfg, nil
}

// ---- add or edit a config

type configForm struct {
	Cluster, Namespace string
	Editing            bool
	Name               string
	Preset             string
	Schedule           string
	Keep               string
	Destination        string
	Presets            []Preset
	Destinations       []string
	Default            string
	// Errors maps a field (name, schedule, keep, destination) to what is wrong with it.
	Errors map[string]string
}

// configForm prepares the add or edit form of the request's cluster: its namespace, the
// Seed's destinations and, when editing, the config (nil when adding).
func (s *Server) configForm(r *http.Request, sess *session,
	editing bool) (configForm, *kubermaticv1.EtcdBackupConfig, error) {
	_, ns, err := clusterOf(r.Context(), r, sess)
	if err != nil {
		return configForm{}, nil, err
	}
	f := configForm{Cluster: r.PathValue("cluster"), Namespace: ns, Editing: editing, Presets: Presets,
		Errors: map[string]string{}}
	var cfg *kubermaticv1.EtcdBackupConfig
	if editing {
		if cfg, err = s.getConfig(r, sess, ns); err != nil {
			return f, nil, err
		}
		f.Name = cfg.Name
	}
	names, def, err := s.Destinations(r.Context())
	if err != nil {
		return f, nil, refuse("The Seed configures no backup destinations: %v", err)
	}
	f.Destinations, f.Default = names, def
	return f, cfg, nil
}

func (f *configForm) title() string {
	if f.Editing {
		return "Edit " + f.Name
	}
	return "Add automatic backup"
}

func (s *Server) newConfig(w http.ResponseWriter, r *http.Request, sess *session) error {
	f, _, err := s.configForm(r, sess, false)
	if err != nil {
		return err
	}
	f.Preset, f.Schedule, f.Keep, f.Destination = "daily", Presets[0].Schedule, strconv.Itoa(Presets[0].Keep), f.Default
	s.render(w, r, http.StatusOK, "configform", view{Title: f.title(), Session: sess, Data: f})
	return nil
}

func (s *Server) editConfig(w http.ResponseWriter, r *http.Request, sess *session) error {
	f, cfg, err := s.configForm(r, sess, true)
	if err != nil {
		return err
	}
	f.Schedule, f.Preset, f.Destination = cfg.Spec.Schedule, presetOf(cfg.Spec.Schedule), cfg.Spec.Destination
	if cfg.Spec.Keep != nil {
		f.Keep = strconv.Itoa(*cfg.Spec.Keep)
	}
	s.render(w, r, http.StatusOK, "configform", view{Title: f.title(), Session: sess, Data: f})
	return nil
}

// read fills f from the posted form and checks what the console can check before the API
// server does: a name, a schedule the scheduler can parse, a keep of at least 1, a
// destination of the Seed's.
func (f *configForm) read(form url.Values) {
	if !f.Editing {
		f.Name = strings.TrimSpace(form.Get("name"))
		if errs := validation.IsDNS1123Subdomain(f.Name); len(errs) > 0 {
			f.Errors["name"] = "A name of lower-case letters, digits and '-': " + strings.Join(errs, "; ")
		}
	}
	f.Preset = form.Get("preset")
	f.Schedule = strings.TrimSpace(form.Get("schedule"))
	for _, p := range Presets {
		if p.ID == f.Preset {
			f.Schedule = p.Schedule
		}
	}
	if f.Preset != "custom" && presetOf(f.Schedule) != f.Preset {
		f.Errors["schedule"] = fmt.Sprintf("Unknown preset %q.", f.Preset)
	} else if f.Schedule == "" {
		f.Errors["schedule"] = "A custom schedule needs a cron expression (5 fields) or @every <interval>."
	} else if _, err := schedule.Parse(f.Schedule); err != nil {
		f.Errors["schedule"] = "Not a schedule: " + err.Error()
	}
	f.Keep = strings.TrimSpace(form.Get("keep"))
	if k, err := strconv.Atoi(f.Keep); err != nil || k < 1 {
		f.Errors["keep"] = "Keep is a whole number of backups, at least 1."
	}
	f.Destination = form.Get("destination")
	if !slices.Contains(f.Destinations, f.Destination) {
		f.Errors["destination"] = fmt.Sprintf("%q is not one of the Seed's destinations.", f.Destination)
	}
}

func (s *Server) createConfig(w http.ResponseWriter, r *http.Request, sess *session) error {
	return s.saveConfig(w, r, sess, false)
}

func (s *Server) updateConfig(w http.ResponseWriter, r *http.Request, sess *session) error {
	return s.saveConfig(w, r, sess, true)
}

// saveConfig creates the posted config, or updates the spec of the one being edited.
func (s *Server) saveConfig(w http.ResponseWriter, r *http.Request, sess *session, editing bool) error {
	f, cfg, err := s.configForm(r, sess, editing)
	if err != nil {
		return err
	}
	f.read(r.PostForm)
	if len(f.Errors) > 0 {
		s.render(w, r, http.StatusUnprocessableEntity, "configform", view{Title: f.title(), Session: sess, Data: f})
		return nil
	}
	keep, _ := strconv.Atoi(f.Keep)
	if editing {
		cfg.Spec.Schedule, cfg.Spec.Keep, cfg.Spec.Destination = f.Schedule, &keep, f.Destination
		err = sess.Client.Update(r.Context(), cfg)
	} else {
		err = sess.Client.Create(r.Context(), &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: f.Name},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Name: f.Name, Cluster: clusterRef(f.Cluster),
				Schedule: f.Schedule, Keep: &keep, Destination: f.Destination},
		})
	}
	if err != nil {
		return s.formAPIError(w, r, sess, &f, err)
	}
	http.Redirect(w, r, configURL(f.Cluster, f.Name), http.StatusSeeOther)
	return nil
}

// formAPIError shows the API server's refusal next to the field it names (its causes), or
// above the form.
func (s *Server) formAPIError(w http.ResponseWriter, r *http.Request, sess *session, f *configForm, err error) error {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Code == 0 {
		return err
	}
	status := st.Status()
	placed := false
	if status.Details != nil {
		for _, c := range status.Details.Causes {
			if field := formField(c.Field); field != "" {
				f.Errors[field] = strings.TrimSpace(f.Errors[field] + " " + c.Message)
				placed = true
			}
		}
	}
	v := view{Title: f.title(), Session: sess, Data: *f}
	if !placed {
		v.Error = "The API server says: " + status.Message
	}
	s.render(w, r, int(status.Code), "configform", v)
	return nil
}

func formField(path string) string {
	switch {
	case path == "metadata.name" || path == "spec.name":
		return "name"
	case strings.HasPrefix(path, "spec.schedule"):
		return "schedule"
	case strings.HasPrefix(path, "spec.keep"):
		return "keep"
	case strings.HasPrefix(path, "spec.destination"):
		return "destination"
	}
	return ""
}

func clusterRef(name string) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: name}
}

func configURL(cluster, config string) string {
	return "/clusters/" + url.PathEscape(cluster) + "/configs/" + url.PathEscape(config)
}

// pointInTime is cfg's ContinuousBackup condition, which the journal writes on every config it
// follows (nil: not journaled). The annotation alone is not enough: the journal's
// --continuous-default journals configs without it.
func pointInTime(cfg *kubermaticv1.EtcdBackupConfig) *kubermaticv1.EtcdBackupConfigCondition {
	if cfg.Annotations[kubermaticv1.AnnotationContinuous] == kubermaticv1.ContinuousOff {
		return nil
	}
	if c, ok := cfg.Status.Conditions[kubermaticv1.ConditionContinuousBackup]; ok {
		return &c
	}
	if cfg.Annotations[kubermaticv1.AnnotationContinuous] == kubermaticv1.ContinuousOn {
		return &kubermaticv1.EtcdBackupConfigCondition{Status: "Unknown",
			Message: "continuous backup is on; the journal has not reported a window yet"}
	}
	return nil
}
