package main

// The benchmark subcommands: each runs go-plugin's host against a plugin
// many times and prints one JSON object with timings in milliseconds.

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
)

// stats summarises a set of durations in milliseconds.
type stats struct {
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	P50    float64 `json:"p50"` // the median, under the name benchmarks use
	Mean   float64 `json:"mean"`
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
}

func summarize(values []float64) stats {
	if len(values) == 0 {
		return stats{}
	}
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	pct := func(p float64) float64 {
		// nearest rank
		i := int(math.Ceil(p*float64(len(v)))) - 1
		if i < 0 {
			i = 0
		}
		return v[i]
	}
	median := v[len(v)/2]
	if len(v)%2 == 0 {
		median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stats{N: len(v), Min: v[0], Median: median, P50: median, Mean: sum / float64(len(v)), P95: pct(0.95), P99: pct(0.99), Max: v[len(v)-1]}
}

// cycle is one plugin run: start, first ping, kill.
type cycle struct {
	StartMs    float64  `json:"start_ms"`
	PingMs     float64  `json:"ping_ms"`
	KillMs     float64  `json:"kill_ms"`
	PingOK     bool     `json:"ping_ok"`
	Graceful   bool     `json:"graceful"`
	ExitStatus string   `json:"exit_status"`
	Error      string   `json:"error,omitempty"`
	Log        []string `json:"log,omitempty"`
	// HealthyMs is Client() plus the first Ping: spawn to healthy.
	HealthyMs float64 `json:"healthy_ms"`
	Pid       int     `json:"pid"`
	// Wall clock just before Client() and just after the first Ping
	// returned, to set beside the time the plugin says it printed its
	// handshake (bench/).
	SpawnUnixNs int64 `json:"spawn_unix_ns"`
	ReadyUnixNs int64 `json:"ready_unix_ns"`
	hostLog     *hostLog
	client      *plugin.Client
	cmd         *exec.Cmd
	protocolCli plugin.ClientProtocol
	killed      bool
}

// startCycle starts a plugin and pings it once; the caller kills it.
func (hf *hostFlags) startCycle(argv []string, stderr io.Writer) *cycle {
	c := &cycle{}
	hl, logger, err := hf.newLog(stderr)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.hostLog = hl
	c.client, c.cmd = hf.newClient(argv, logger)
	c.SpawnUnixNs = time.Now().UnixNano()
	t0 := time.Now()
	cp, err := c.client.Client()
	c.StartMs = ms(time.Since(t0))
	if c.cmd.Process != nil {
		c.Pid = c.cmd.Process.Pid
	}
	if err == nil {
		err = hf.checkNetwork(c.client)
	}
	if err != nil {
		c.Error = "start: " + err.Error()
		return c
	}
	c.protocolCli = cp
	t1 := time.Now()
	if err := cp.Ping(); err != nil {
		c.Error = "ping: " + err.Error()
	} else {
		c.PingOK = true
	}
	c.PingMs = ms(time.Since(t1))
	c.HealthyMs = ms(time.Since(t0))
	c.ReadyUnixNs = time.Now().UnixNano()
	return c
}

// sigkill SIGKILLs the plugin process (not Kill(): go-plugin is not told).
func (c *cycle) sigkill() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// finish ends a one-cycle subcommand: err into errField, the plugin killed
// (its log kept when asked or on failure), res printed; 1 on any failure.
func (c *cycle) finish(stdout io.Writer, keepLog bool, res any, errField *string, err error) int {
	if err != nil {
		*errField = err.Error()
	}
	c.kill(keepLog || err != nil)
	if werr := writeJSON(stdout, res); werr != nil || err != nil {
		return 1
	}
	return 0
}

func (c *cycle) kill(keepLog bool) {
	if c.client == nil || c.killed {
		return
	}
	c.killed = true
	t := time.Now()
	c.client.Kill()
	c.KillMs = ms(time.Since(t))
	c.Graceful = c.Error == "" && !c.hostLog.Contains(gracefulFailureMessage)
	c.ExitStatus, _ = exitOf(c.cmd)
	if keepLog || c.Error != "" {
		c.Log = c.hostLog.Lines()
	}
}

// benchFlags adds --count and --log to the shared flags.
type benchFlags struct {
	hostFlags
	count int
	log   bool
}

func newBenchFlagSet(name, synopsis, summary string, stderr io.Writer, bf *benchFlags, defaultCount int) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	bf.register(fs)
	fs.IntVar(&bf.count, "count", defaultCount, "how many times to repeat")
	fs.BoolVar(&bf.log, "log", false, "include every run's host log (runs that failed always include theirs)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gohost %s [flags] -- CMD [ARGS...]\n%s\n", synopsis, summary)
		fs.PrintDefaults()
	}
	return fs
}

type cyclesResult struct {
	Runs       []*cycle `json:"runs"`
	StartMs    stats    `json:"start_ms"`
	PingMs     stats    `json:"ping_ms"`
	HealthyMs  stats    `json:"healthy_ms"`
	KillMs     stats    `json:"kill_ms"`
	Failures   int      `json:"failures"`
	Ungraceful int      `json:"ungraceful"`
}

func summarizeCycles(runs []*cycle) cyclesResult {
	res := cyclesResult{Runs: runs}
	var start, ping, healthy, kill []float64
	for _, c := range runs {
		if c.Error != "" {
			res.Failures++
			continue
		}
		if !c.Graceful {
			res.Ungraceful++
		}
		start = append(start, c.StartMs)
		ping = append(ping, c.PingMs)
		healthy = append(healthy, c.HealthyMs)
		kill = append(kill, c.KillMs)
	}
	res.StartMs, res.PingMs, res.KillMs = summarize(start), summarize(ping), summarize(kill)
	res.HealthyMs = summarize(healthy)
	return res
}

// cmdCycles is "start" and "stop": the same sequential start/ping/kill
// cycles, reported the same way; the names say which number one reads.
func cmdCycles(name string) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		var bf benchFlags
		fs := newBenchFlagSet(name, name, "Run --count sequential start, Ping, Kill cycles; print per-run and summary timings (ms).", stderr, &bf, 10)
		sigkill := fs.Bool("sigkill", false, "SIGKILL the plugin before Kill(), for runs that measure only the start: a plugin\n"+
			"without GRPCController then costs no 2 s wait (kill_ms and graceful mean nothing)")
		argv, code := bf.parse(fs, args, stderr)
		if argv == nil {
			return code
		}
		runs := make([]*cycle, 0, bf.count)
		for i := 0; i < bf.count; i++ {
			c := bf.startCycle(argv, stderr)
			if *sigkill {
				c.sigkill()
			}
			c.kill(bf.log)
			runs = append(runs, c)
		}
		res := summarizeCycles(runs)
		if err := writeJSON(stdout, res); err != nil {
			return 1
		}
		if res.Failures > 0 {
			return 1
		}
		return 0
	}
}

// cmdPing starts one plugin and pings it --count times.
func cmdPing(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("ping", "ping", "Start the plugin once, call Ping --count times in a row, Kill; print Ping latencies (ms).", stderr, &bf, 1000)
	argv, code := bf.parse(fs, args, stderr)
	if argv == nil {
		return code
	}
	type pingResult struct {
		Run      *cycle `json:"run"`
		PingMs   stats  `json:"ping_ms"`
		Failures int    `json:"failures"`
		Error    string `json:"error,omitempty"`
	}
	c := bf.startCycle(argv, stderr)
	var res pingResult
	res.Run = c
	if c.Error == "" {
		lat := make([]float64, 0, bf.count)
		for i := 0; i < bf.count; i++ {
			t := time.Now()
			err := c.protocolCli.Ping()
			if err != nil {
				res.Failures++
				if res.Error == "" {
					res.Error = err.Error()
				}
				continue
			}
			lat = append(lat, ms(time.Since(t)))
		}
		res.PingMs = summarize(lat)
	}
	c.kill(bf.log || res.Failures > 0)
	if err := writeJSON(stdout, res); err != nil {
		return 1
	}
	if c.Error != "" || res.Failures > 0 {
		return 1
	}
	return 0
}

// cmdCrash measures how go-plugin's host learns that a plugin died and,
// with --restart, how soon a host that watches for it has the plugin healthy
// again.
func cmdCrash(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("crash", "crash", "Start a plugin that will exit by itself (for the Go test plugin: --crash-after-ms),\n"+
		"then poll: when does Client.Exited() turn true, and when does Ping first fail (ms after Client() returned)?\n"+
		"With --kill the host SIGKILLs the plugin once it is healthy; with --restart it starts a new one as soon as\n"+
		"Exited() is true and times crash -> healthy again (go-plugin has no exit notification: Exited() is polled).", stderr, &bf, 1)
	crashAfter := fs.Int("crash-after-ms", -1, "put PLUGVISOR_TEST_CRASH_AFTER_MS=N in the plugin's environment (tests/goplugins/healthy honours it)")
	poll := fs.Duration("poll", time.Millisecond, "polling interval for Exited() and Ping")
	timeout := fs.Duration("timeout", 30*time.Second, "give up waiting for the crash after this long")
	killIt := fs.Bool("kill", false, "SIGKILL the plugin as soon as it is healthy (times count from the signal)")
	restart := fs.Bool("restart", false, "when Exited() turns true, Kill() the old client and start and Ping a new one at once\n"+
		"(Ping failures are then not polled); the new one is SIGKILLed and Kill()ed afterwards, untimed")
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 || *poll <= 0 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
	}
	if *crashAfter >= 0 {
		bf.env = append(bf.env, fmt.Sprintf("PLUGVISOR_TEST_CRASH_AFTER_MS=%d", *crashAfter))
	}
	type crashRun struct {
		*cycle
		ExitedMs   float64 `json:"exited_ms"`
		PingFailMs float64 `json:"ping_fail_ms"`
		TimedOut   bool    `json:"timed_out"`
		// With --restart: from Exited() to the new plugin's first Ping, and
		// from the crash (the SIGKILL with --kill) to it.
		RestartMs    float64 `json:"restart_ms,omitempty"`
		RecoverMs    float64 `json:"recover_ms,omitempty"`
		RestartedPid int     `json:"restarted_pid,omitempty"`
	}
	type crashResult struct {
		Runs       []*crashRun `json:"runs"`
		ExitedMs   stats       `json:"exited_ms"`
		PingFailMs stats       `json:"ping_fail_ms"`
		RestartMs  stats       `json:"restart_ms"`
		RecoverMs  stats       `json:"recover_ms"`
		Failures   int         `json:"failures"`
	}
	var res crashResult
	var exited, pingFail, restartMs, recoverMs []float64
	for i := 0; i < bf.count; i++ {
		hl, logger, _ := bf.newLog(stderr)
		r := &crashRun{cycle: &cycle{hostLog: hl}, ExitedMs: -1, PingFailMs: -1}
		r.client, r.cmd = bf.newClient(argv, logger)
		t0 := time.Now()
		cp, err := r.client.Client()
		r.StartMs = ms(time.Since(t0))
		var next *cycle
		if err == nil && *killIt {
			if err = cp.Ping(); err != nil {
				err = fmt.Errorf("ping before the kill: %w", err)
			}
		}
		if err != nil {
			// A plugin that dies before its handshake is a start failure here.
			r.Error = "start: " + err.Error()
		} else {
			ready := time.Now()
			if *killIt {
				r.sigkill()
			}
			deadline := ready.Add(*timeout)
			watchPing := !*restart
			for (r.ExitedMs < 0 || (watchPing && r.PingFailMs < 0)) && time.Now().Before(deadline) {
				if r.ExitedMs < 0 && r.client.Exited() {
					r.ExitedMs = ms(time.Since(ready))
					if *restart {
						break
					}
				}
				if watchPing && r.PingFailMs < 0 && cp.Ping() != nil {
					r.PingFailMs = ms(time.Since(ready))
				}
				time.Sleep(*poll)
			}
			r.TimedOut = r.ExitedMs < 0 || (watchPing && r.PingFailMs < 0)
			if r.TimedOut {
				r.Error = "the plugin was still up after --timeout"
			} else if *restart {
				detected := time.Now()
				r.kill(bf.log)
				next = bf.startCycle(argv, stderr)
				r.RestartMs = ms(time.Since(detected))
				r.RecoverMs = ms(time.Since(ready))
				r.RestartedPid = next.Pid
				if next.Error != "" {
					r.Error = "restart: " + next.Error
				}
			}
		}
		r.kill(bf.log)
		if next != nil {
			next.sigkill()
			next.kill(false)
		}
		if r.Error != "" {
			res.Failures++
		} else {
			exited = append(exited, r.ExitedMs)
			if !*restart {
				pingFail = append(pingFail, r.PingFailMs)
			} else {
				restartMs = append(restartMs, r.RestartMs)
				recoverMs = append(recoverMs, r.RecoverMs)
			}
		}
		res.Runs = append(res.Runs, r)
	}
	res.ExitedMs, res.PingFailMs = summarize(exited), summarize(pingFail)
	res.RestartMs, res.RecoverMs = summarize(restartMs), summarize(recoverMs)
	if err := writeJSON(stdout, res); err != nil {
		return 1
	}
	if res.Failures > 0 {
		return 1
	}
	return 0
}

// cmdScale starts --count plugins at once and stops them all at once; with
// --idle it first keeps them up that long with a health check job running,
// measuring its own CPU time and RSS.
func cmdScale(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("scale", "scale", "Start --count plugins concurrently (one go-plugin Client each), Ping each, then Kill all concurrently.\n"+
		"With --idle, stay up that long in between while a job Pings every plugin, one after the other, every\n"+
		"--health-interval (Mattermost's health check job does this every 30 s), and report this process's\n"+
		"CPU use (utime+stime from /proc/self/stat) and RSS (VmRSS from /proc/self/status; children excluded).", stderr, &bf, 10)
	idle := fs.Duration("idle", 0, "how long to stay up once all are healthy (0: no idle phase)")
	interval := fs.Duration("health-interval", 30*time.Second, "health check job interval during --idle (Mattermost: 30s)")
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 || *interval <= 0 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
	}
	type idleResult struct {
		Seconds         float64 `json:"seconds"`
		CPUTicks        int64   `json:"cpu_ticks"`
		CPUPercent      float64 `json:"cpu_percent"`
		RSSEndKB        int64   `json:"rss_end_kb"`
		HealthIntervalS float64 `json:"health_interval_s"`
		Pings           int     `json:"pings"`
		PingFailures    int     `json:"ping_failures"`
	}
	type scaleResult struct {
		Count int `json:"count"`
		cyclesResult
		AllReadyMs  float64 `json:"all_ready_ms"`
		AllKilledMs float64 `json:"all_killed_ms"`
		// This process's CPU time (every thread) while stopping them all.
		StopCPUMs  float64 `json:"stop_cpu_ms"`
		HostPid    int     `json:"host_pid"`
		RSSReadyKB int64   `json:"rss_ready_kb"`
		HWMReadyKB int64   `json:"hwm_ready_kb"`
		Running    int     `json:"running"`
		// This process's CPU while starting them, in % of one core: the
		// busiest 200 ms window and the mean.
		StartCPUPeak float64     `json:"start_cpu_peak_percent"`
		StartCPUMean float64     `json:"start_cpu_mean_percent"`
		RSSKB        int64       `json:"rss_kb"`
		HWMKB        int64       `json:"hwm_kb"`
		Idle         *idleResult `json:"idle"`
	}
	runs := make([]*cycle, bf.count)
	var wg sync.WaitGroup
	sampler := startCPUSampler()
	t0 := time.Now()
	for i := range runs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runs[i] = bf.startCycle(argv, stderr)
		}(i)
	}
	wg.Wait()
	allReady := ms(time.Since(t0))
	cpuPeak, cpuMean := sampler.finish()
	rssReady, hwmReady := memoryKB()
	var idleRes *idleResult
	if *idle > 0 {
		idleRes = &idleResult{HealthIntervalS: interval.Seconds()}
		done := make(chan struct{})
		jobDone := make(chan struct{})
		go func() {
			defer close(jobDone)
			ticker := time.NewTicker(*interval)
			defer ticker.Stop()
			for {
				select {
				case <-done:
					return
				case <-ticker.C:
					for _, c := range runs {
						if c.protocolCli == nil {
							continue
						}
						idleRes.Pings++
						if c.protocolCli.Ping() != nil {
							idleRes.PingFailures++
						}
					}
				}
			}
		}()
		cpu0 := cpuTicks()
		w0 := time.Now()
		time.Sleep(*idle)
		cpu1 := cpuTicks()
		wall := time.Since(w0).Seconds()
		close(done)
		<-jobDone
		idleRes.Seconds = wall
		idleRes.CPUTicks = cpu1 - cpu0
		idleRes.CPUPercent = float64(cpu1-cpu0) / clockTicksPerSecond / wall * 100
		idleRes.RSSEndKB, _ = memoryKB()
	}
	rss, hwm := memoryKB()
	t1, cpuBeforeStop := time.Now(), cpuTime()
	for _, c := range runs {
		wg.Add(1)
		go func(c *cycle) {
			defer wg.Done()
			c.kill(bf.log)
		}(c)
	}
	wg.Wait()
	allKilled, stopCPU := ms(time.Since(t1)), ms(cpuTime()-cpuBeforeStop)
	res := scaleResult{Count: bf.count, cyclesResult: summarizeCycles(runs), AllReadyMs: allReady, AllKilledMs: allKilled, StopCPUMs: stopCPU,
		HostPid: os.Getpid(), RSSReadyKB: rssReady, HWMReadyKB: hwmReady, RSSKB: rss, HWMKB: hwm, Idle: idleRes,
		StartCPUPeak: cpuPeak, StartCPUMean: cpuMean}
	res.Running = res.Count - res.Failures
	if err := writeJSON(stdout, res); err != nil {
		return 1
	}
	if res.Failures > 0 {
		return 1
	}
	return 0
}

// cpuSampler samples this process's CPU time (getrusage, every thread)
// every 200 ms until finish.
type cpuSampler struct {
	stop chan struct{}
	done chan [2]float64
}

func startCPUSampler() *cpuSampler {
	s := &cpuSampler{stop: make(chan struct{}), done: make(chan [2]float64, 1)}
	cpu := func() float64 {
		var u syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
			return 0
		}
		return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e3
	}
	go func() {
		firstCPU, firstWall := cpu(), time.Now()
		lastCPU, lastWall := firstCPU, firstWall
		peak := 0.0
		ticker := time.NewTicker(200 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-s.stop:
				wall := float64(lastWall.Sub(firstWall).Microseconds())
				mean := 0.0
				if wall > 0 {
					mean = (lastCPU - firstCPU) / wall * 100
				}
				s.done <- [2]float64{peak, mean}
				return
			case <-ticker.C:
				nowCPU, nowWall := cpu(), time.Now()
				// A tick that queued behind a late one comes at once: too
				// short a window to say anything; it joins the next.
				if nowWall.Sub(lastWall) < 100*time.Millisecond {
					continue
				}
				wall := float64(nowWall.Sub(lastWall).Microseconds())
				peak = max(peak, (nowCPU-lastCPU)/wall*100)
				lastCPU, lastWall = nowCPU, nowWall
			}
		}
	}()
	return s
}

// finish returns the busiest window's and the mean CPU, in % of one core.
func (s *cpuSampler) finish() (peak, mean float64) {
	close(s.stop)
	r := <-s.done
	return r[0], r[1]
}

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/PID/stat: 100 on Linux (sysconf needs cgo, and this is static).
const clockTicksPerSecond = 100.0

// memoryKB returns this process's VmRSS and VmHWM in kB (0 off Linux).
func memoryKB() (rss, hwm int64) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// cpuTicks returns utime+stime of this process (every thread, no children).
func cpuTicks() int64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	text := string(data)
	i := strings.LastIndexByte(text, ')')
	if i < 0 || i+2 > len(text) {
		return 0
	}
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	fields := strings.Fields(text[i+2:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

func init() {
	subcommands["start"] = subcommand{"repeat start, Ping, Kill --count times; summary of start_ms (and the rest)", cmdCycles("start")}
	subcommands["stop"] = subcommand{"the same cycles as start; read kill_ms and ungraceful", cmdCycles("stop")}
	subcommands["ping"] = subcommand{"start once, Ping --count times, Kill; Ping latency summary", cmdPing}
	subcommands["crash"] = subcommand{"start a self-crashing (or --kill: SIGKILLed) plugin; when do Exited() and Ping notice? --restart: time to healthy again", cmdCrash}
	subcommands["scale"] = subcommand{"start --count plugins at once, Ping each, [--idle with a health job: CPU, RSS], Kill all at once", cmdScale}
}
