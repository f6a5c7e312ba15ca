package main

import (
	"flag"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the scheduler's configuration.
type Config struct {
	service.Common
	// StatusWriters is how many status events one replica applies at once.
	StatusWriters int
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.StatusWriters, "status-writers", 4, "status events applied at once by one replica")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return c, nil
}
