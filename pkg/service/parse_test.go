package service

import (
	"errors"
	"flag"
	"testing"
	"time"
)

// Environment values set flags not given on the command line; a value that does not parse, and
// a duration that is not positive, are errors at start rather than silent defaults.
func TestParse(t *testing.T) {
	type cfg struct {
		n int
		d time.Duration
		b bool
	}
	parse := func(t *testing.T, env map[string]string, args ...string) (cfg, error) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var c cfg
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		IntVar(fs, &c.n, "max-attempts", 3, "")
		DurationVar(fs, &c.d, "retry-delay", time.Second, "")
		BoolVar(fs, &c.b, "leader-elect", true, "")
		return c, Parse(fs, args)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want cfg
		bad  bool
	}{
		{"defaults", nil, nil, cfg{3, time.Second, true}, false},
		{"the environment sets a flag", map[string]string{"ETCDBACKUP_MAX_ATTEMPTS": "5",
			"ETCDBACKUP_LEADER_ELECT": "false"}, nil, cfg{5, time.Second, false}, false},
		{"the command line wins over the environment", map[string]string{"ETCDBACKUP_MAX_ATTEMPTS": "5"},
			[]string{"--max-attempts=7"}, cfg{7, time.Second, true}, false},
		{"an unparsable environment value", map[string]string{"ETCDBACKUP_MAX_ATTEMPTS": "three"}, nil, cfg{}, true},
		{"an unparsable environment duration", map[string]string{"ETCDBACKUP_RETRY_DELAY": "soon"}, nil, cfg{}, true},
		{"a zero duration", nil, []string{"--retry-delay=0s"}, cfg{}, true},
		{"a negative duration from the environment", map[string]string{"ETCDBACKUP_RETRY_DELAY": "-1s"}, nil, cfg{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(t, tc.env, tc.args...)
			if tc.bad {
				if !errors.Is(err, ErrInvalidOption) {
					t.Fatalf("err = %v, want ErrInvalidOption", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCommonValidate(t *testing.T) {
	c := Common{StreamReplicas: 2, LogLevel: "info", LogFormat: "json", NATS: NATS{URL: "nats://x:4222", Plaintext: true}}
	if err := c.Validate(); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("--stream-replicas=2: %v", err)
	}
	c.StreamReplicas = 3
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.LogFormat = "xml"
	if err := c.Validate(); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("--log-format=xml: %v", err)
	}
}
