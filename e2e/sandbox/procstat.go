package sandbox

import "github.com/etcd-backup/etcdbackup/pkg/procstat"

// PeakRSS returns the process's peak resident set size in bytes (VmHWM from /proc).
func (p *Process) PeakRSS() (int64, error) { return procstat.PeakRSS(p.Pid()) }

// Pid is kube-apiserver's process id.
func (a *APIServer) Pid() int { return a.proc.Pid() }

// Pid is the S3 server's process id.
func (s *S3) Pid() int { return s.proc.Pid() }
