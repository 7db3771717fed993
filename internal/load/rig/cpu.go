package rig

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU is the processor time each party used during a run, in seconds.
type CPU struct {
	Server   float64 `json:"server_seconds"`   // diamondd
	Postgres float64 `json:"postgres_seconds"` // the postmaster and its backends
	Driver   float64 `json:"driver_seconds"`   // the load tool or pgbench
	Wall     float64 `json:"wall_seconds"`
}

// clock ticks per second of /proc/<pid>/stat; 100 on every Linux we run on.
const clkTck = 100

// procCPU is utime+stime of a process.
func procCPU(pid int) time.Duration { return statCPU(pid, false) }

// statCPU reads /proc/<pid>/stat; reaped adds the time of the children the
// process has waited for (the backends that exited).
func statCPU(pid int, reaped bool) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	if reaped {
		cu, _ := strconv.ParseInt(f[13], 10, 64)
		ck, _ := strconv.ParseInt(f[14], 10, 64)
		u, k = u+cu, k+ck
	}
	return time.Duration(u+k) * time.Second / clkTck
}

// treeCPU is the CPU of a process and its direct children, live or exited
// (the postmaster and its backends).
func treeCPU(root int) time.Duration {
	if root <= 0 {
		return 0
	}
	total := statCPU(root, true)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(root) {
			total += procCPU(pid)
		}
	}
	return total
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures CPU between start and stop.
type cpuMeter struct {
	serverPID, pgPID int
	s, p, d          time.Duration
	t                time.Time
}

func startCPU(serverPID, pgPID int) *cpuMeter {
	return &cpuMeter{serverPID: serverPID, pgPID: pgPID, s: procCPU(serverPID), p: treeCPU(pgPID), d: selfCPU(), t: time.Now()}
}

func (m *cpuMeter) stop() CPU {
	var c CPU
	if m.serverPID > 0 {
		c.Server = (procCPU(m.serverPID) - m.s).Seconds()
	}
	c.Postgres = (treeCPU(m.pgPID) - m.p).Seconds()
	c.Driver = (selfCPU() - m.d).Seconds()
	c.Wall = time.Since(m.t).Seconds()
	return c
}
