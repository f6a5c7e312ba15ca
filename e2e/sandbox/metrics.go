package sandbox

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

func httpOK(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK, nil
}

// Metric returns the sum of a counter or gauge's samples whose labels include match, or of a
// histogram's sample sums, as scraped from a service's /metrics now.
func (s *Service) Metric(ctx context.Context, name string, match map[string]string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("parse metrics of %s: %w", s.Name, err)
	}
	f, ok := families[name]
	if !ok {
		return 0, nil
	}
	var sum float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		matched := true
		for k, v := range match {
			if labels[k] != v {
				matched = false
			}
		}
		if !matched {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return sum, nil
}

// Requests returns kube-apiserver's count of requests so far by "verb resource[/subresource]"
// (apiserver_request_total, summed over codes and scopes).
func (a *APIServer) Requests(ctx context.Context) (map[string]float64, error) {
	resp, err := a.get(ctx, "/metrics", 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse kube-apiserver metrics: %w", err)
	}
	out := map[string]float64{}
	for _, m := range families["apiserver_request_total"].GetMetric() {
		var verb, resource, sub string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "verb":
				verb = l.GetValue()
			case "resource":
				resource = l.GetValue()
			case "subresource":
				sub = l.GetValue()
			}
		}
		if sub != "" {
			resource += "/" + sub
		}
		out[verb+" "+resource] += m.GetCounter().GetValue()
	}
	return out, nil
}

// CPUProfile is a CPU profile of kube-apiserver over the next d (its /debug/pprof, on by
// default), in pprof's format.
func (a *APIServer) CPUProfile(ctx context.Context, d time.Duration) ([]byte, error) {
	resp, err := a.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), d+30*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// get is a GET of path on kube-apiserver as the sandbox's admin; a status other than 200 is
// an error.
func (a *APIServer) get(ctx context.Context, path string, timeout time.Duration) (*http.Response, error) {
	rt, err := rest.TransportFor(a.Config)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(a.Config.Host, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: rt, Timeout: timeout}).Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("kube-apiserver %s: %s", path, resp.Status)
	}
	return resp, nil
}
