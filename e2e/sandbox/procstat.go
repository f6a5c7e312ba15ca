package sandbox

import "github.com/etcd-backup/etcdbackup/pkg/procstat"

// PeakRSS returns the process's peak resident set size in bytes (VmHWM from /proc).
func (p *Process) PeakRSS() (int64, error) { return procstat.PeakRSS(p.Pid()) }
