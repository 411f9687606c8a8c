package main

// The benchmark subcommands: each runs go-plugin's host against a plugin
// many times and prints one JSON object with timings in milliseconds.

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os/exec"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
)

// stats summarises a set of durations in milliseconds.
type stats struct {
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Mean   float64 `json:"mean"`
	P95    float64 `json:"p95"`
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
	return stats{N: len(v), Min: v[0], Median: median, Mean: sum / float64(len(v)), P95: pct(0.95), Max: v[len(v)-1]}
}

// cycle is one plugin run: start, first ping, kill.
type cycle struct {
	StartMs     float64  `json:"start_ms"`
	PingMs      float64  `json:"ping_ms"`
	KillMs      float64  `json:"kill_ms"`
	PingOK      bool     `json:"ping_ok"`
	Graceful    bool     `json:"graceful"`
	ExitStatus  string   `json:"exit_status"`
	Error       string   `json:"error,omitempty"`
	Log         []string `json:"log,omitempty"`
	hostLog     *hostLog
	client      *plugin.Client
	cmd         *exec.Cmd
	protocolCli plugin.ClientProtocol
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
	t0 := time.Now()
	cp, err := c.client.Client()
	c.StartMs = ms(time.Since(t0))
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
	return c
}

func (c *cycle) kill(keepLog bool) {
	if c.client == nil {
		return
	}
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
	KillMs     stats    `json:"kill_ms"`
	Failures   int      `json:"failures"`
	Ungraceful int      `json:"ungraceful"`
}

func summarizeCycles(runs []*cycle) cyclesResult {
	res := cyclesResult{Runs: runs}
	var start, ping, kill []float64
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
		kill = append(kill, c.KillMs)
	}
	res.StartMs, res.PingMs, res.KillMs = summarize(start), summarize(ping), summarize(kill)
	return res
}

// cmdCycles is "start" and "stop": the same sequential start/ping/kill
// cycles, reported the same way; the names say which number one reads.
func cmdCycles(name string) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		var bf benchFlags
		fs := newBenchFlagSet(name, name, "Run --count sequential start, Ping, Kill cycles; print per-run and summary timings (ms).", stderr, &bf, 10)
		argv, code := parse(fs, args)
		if argv == nil {
			return code
		}
		if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 {
			fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
			return 2
		}
		runs := make([]*cycle, 0, bf.count)
		for i := 0; i < bf.count; i++ {
			c := bf.startCycle(argv, stderr)
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
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
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

// cmdCrash measures how go-plugin's host learns that a plugin died.
func cmdCrash(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("crash", "crash", "Start a plugin that will exit by itself (for the Go test plugin: --crash-after-ms),\n"+
		"then poll: when does Client.Exited() turn true, and when does Ping first fail (ms after Client() returned)?", stderr, &bf, 1)
	crashAfter := fs.Int("crash-after-ms", -1, "put PLUGVISOR_TEST_CRASH_AFTER_MS=N in the plugin's environment (tests/goplugins/healthy honours it)")
	poll := fs.Duration("poll", time.Millisecond, "polling interval for Exited() and Ping")
	timeout := fs.Duration("timeout", 30*time.Second, "give up waiting for the crash after this long")
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
	}
	type crashResult struct {
		Runs       []*crashRun `json:"runs"`
		ExitedMs   stats       `json:"exited_ms"`
		PingFailMs stats       `json:"ping_fail_ms"`
		Failures   int         `json:"failures"`
	}
	var res crashResult
	var exited, pingFail []float64
	for i := 0; i < bf.count; i++ {
		hl, logger, _ := bf.newLog(stderr)
		r := &crashRun{cycle: &cycle{hostLog: hl}, ExitedMs: -1, PingFailMs: -1}
		r.client, r.cmd = bf.newClient(argv, logger)
		t0 := time.Now()
		cp, err := r.client.Client()
		r.StartMs = ms(time.Since(t0))
		if err != nil {
			// A plugin that dies before its handshake is a start failure here.
			r.Error = "start: " + err.Error()
		} else {
			ready := time.Now()
			deadline := ready.Add(*timeout)
			for (r.ExitedMs < 0 || r.PingFailMs < 0) && time.Now().Before(deadline) {
				if r.ExitedMs < 0 && r.client.Exited() {
					r.ExitedMs = ms(time.Since(ready))
				}
				if r.PingFailMs < 0 && cp.Ping() != nil {
					r.PingFailMs = ms(time.Since(ready))
				}
				time.Sleep(*poll)
			}
			r.TimedOut = r.ExitedMs < 0 || r.PingFailMs < 0
			if r.TimedOut {
				r.Error = "the plugin was still up after --timeout"
			}
		}
		r.kill(bf.log)
		if r.Error != "" {
			res.Failures++
		} else {
			exited = append(exited, r.ExitedMs)
			pingFail = append(pingFail, r.PingFailMs)
		}
		res.Runs = append(res.Runs, r)
	}
	res.ExitedMs, res.PingFailMs = summarize(exited), summarize(pingFail)
	if err := writeJSON(stdout, res); err != nil {
		return 1
	}
	if res.Failures > 0 {
		return 1
	}
	return 0
}

// cmdScale starts --count plugins at once and stops them all at once.
func cmdScale(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("scale", "scale", "Start --count plugins concurrently (one go-plugin Client each), Ping each, then Kill all concurrently.", stderr, &bf, 10)
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
	}
	type scaleResult struct {
		Count int `json:"count"`
		cyclesResult
		AllReadyMs  float64 `json:"all_ready_ms"`
		AllKilledMs float64 `json:"all_killed_ms"`
	}
	runs := make([]*cycle, bf.count)
	var wg sync.WaitGroup
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
	t1 := time.Now()
	for _, c := range runs {
		wg.Add(1)
		go func(c *cycle) {
			defer wg.Done()
			c.kill(bf.log)
		}(c)
	}
	wg.Wait()
	res := scaleResult{Count: bf.count, cyclesResult: summarizeCycles(runs), AllReadyMs: allReady, AllKilledMs: ms(time.Since(t1))}
	if err := writeJSON(stdout, res); err != nil {
		return 1
	}
	if res.Failures > 0 {
		return 1
	}
	return 0
}

func init() {
	subcommands["start"] = subcommand{"repeat start, Ping, Kill --count times; summary of start_ms (and the rest)", cmdCycles("start")}
	subcommands["stop"] = subcommand{"the same cycles as start; read kill_ms and ungraceful", cmdCycles("stop")}
	subcommands["ping"] = subcommand{"start once, Ping --count times, Kill; Ping latency summary", cmdPing}
	subcommands["crash"] = subcommand{"start a self-crashing plugin; when do Exited() and Ping notice?", cmdCrash}
	subcommands["scale"] = subcommand{"start --count plugins at once, Ping each, Kill all at once", cmdScale}
}
