package main

// More plugvisor.v1 scenarios for bench/:
//
//   activate: start → first Ping → Dispense → Implemented (→ host API on a
//             broker id → OnActivate, for a plugvisor.v1 plugin): what a
//             Mattermost-like host does before a plugin is usable, the peer
//             of plugvisor's activate → Running.
//   httphook: --count plugvisor.v1.Http calls on the plugin's connection, no
//             HTTP server in between: what the plugin's side of a request costs.
//   fanout:   --count plugins started and activated at once, then one hook
//             (OnConfigurationChange) on all of them: concurrently (one
//             goroutine a plugin) and in turn (Mattermost's
//             RunMultiPluginHook), against the same call on one plugin.

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/plugvisor/plugvisor/sdk/go/proto/plugvisorv1"
)

func cmdActivate(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("activate", "activate", "Run --count cycles of: start (Client), first Ping, Dispense, Implemented and, when the plugin serves\n"+
		"plugvisor.v1.Lifecycle, an in-memory host API on a broker id and OnActivate; then Kill. Print the times (ms).", stderr, &bf, 10)
	config := fs.String("config", `{"greeting": "bench"}`, "the configuration JSON sent with OnActivate")
	argv, code := bf.parse(fs, args, stderr)
	if argv == nil {
		return code
	}
	type activateRun struct {
		*cycle
		// Client() + first Ping (the cycle's healthy_ms) + ActivateMs.
		RunningMs     float64 `json:"running_ms"`
		ActivateMs    float64 `json:"activate_ms"`
		ImplementedMs float64 `json:"implemented_ms"`
		OnActivateMs  float64 `json:"on_activate_ms"`
		Lifecycle     bool    `json:"lifecycle"`
	}
	type activateResult struct {
		Runs       []*activateRun `json:"runs"`
		HealthyMs  stats          `json:"healthy_ms"`
		RunningMs  stats          `json:"running_ms"`
		ActivateMs stats          `json:"activate_ms"`
		Failures   int            `json:"failures"`
	}
	var res activateResult
	var healthy, running, act []float64
	for i := 0; i < bf.count; i++ {
		c := bf.startCycle(argv, stderr)
		r := &activateRun{cycle: c}
		if c.Error == "" {
			a, err := activateAny(c.protocolCli, *config)
			if err != nil {
				c.Error = err.Error()
			} else {
				r.ActivateMs, r.ImplementedMs, r.OnActivateMs, r.Lifecycle = a.activateMs, a.implementedMs, a.onActivateMs, a.lifecycle
				r.RunningMs = c.HealthyMs + a.activateMs
			}
		}
		c.kill(bf.log)
		if c.Error != "" {
			res.Failures++
		} else {
			healthy = append(healthy, c.HealthyMs)
			running = append(running, r.RunningMs)
			act = append(act, r.ActivateMs)
		}
		res.Runs = append(res.Runs, r)
	}
	res.HealthyMs, res.RunningMs, res.ActivateMs = summarize(healthy), summarize(running), summarize(act)
	if err := writeJSON(stdout, res); err != nil || res.Failures > 0 {
		return 1
	}
	return 0
}

func cmdFanout(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("fanout", "fanout", "Start and activate --count copies of a plugvisor.v1 plugin at once, then --rounds times: OnConfigurationChange\n"+
		"on every plugin at once (a goroutine each), on every plugin in turn (Mattermost's RunMultiPluginHook), and on\n"+
		"one plugin; print the wall time of each (ms). Then Kill all at once.", stderr, &bf, 100)
	rounds := fs.Int("rounds", 50, "rounds of calls")
	config := fs.String("config", `{"greeting": "bench"}`, "the configuration JSON sent with every call")
	argv, code := parse(fs, args)
	if argv == nil {
		return code
	}
	if _, _, err := bf.newLog(stderr); err != nil || bf.count < 1 || *rounds < 1 {
		fmt.Fprintln(stderr, "gohost: bad flags:", err, "count", bf.count)
		return 2
	}
	type fanoutResult struct {
		Count        int     `json:"count"`
		Rounds       int     `json:"rounds"`
		AllReadyMs   float64 `json:"all_ready_ms"`
		ConcurrentMs stats   `json:"concurrent_ms"`
		InTurnMs     stats   `json:"in_turn_ms"`
		OneMs        stats   `json:"one_ms"`
		Failures     int     `json:"failures"`
		Error        string  `json:"error,omitempty"`
	}
	res := fanoutResult{Count: bf.count, Rounds: *rounds}
	runs := make([]*cycle, bf.count)
	clients := make([]plugvisorv1.LifecycleClient, bf.count)
	errs := make([]error, bf.count)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range runs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runs[i] = bf.startCycle(argv, stderr)
			if runs[i].Error != "" {
				errs[i] = fmt.Errorf("%s", runs[i].Error)
				return
			}
			a, err := activate(runs[i].protocolCli, *config)
			if err != nil {
				errs[i] = err
				return
			}
			clients[i] = plugvisorv1.NewLifecycleClient(a.session.conn)
		}(i)
	}
	wg.Wait()
	res.AllReadyMs = ms(time.Since(t0))
	for _, err := range errs {
		if err != nil {
			res.Failures++
			if res.Error == "" {
				res.Error = err.Error()
			}
		}
	}
	req := &plugvisorv1.OnConfigurationChangeRequest{ConfigurationJson: *config}
	call := func(c plugvisorv1.LifecycleClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.OnConfigurationChange(ctx, req)
		if err == nil && resp.GetRefused() != nil {
			err = fmt.Errorf("refused: %s", resp.GetRefused().GetMessage())
		}
		return err
	}
	if res.Failures == 0 {
		var conc, turn, one []float64
		var mu sync.Mutex
		var firstErr error
		note := func(err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}
		for r := 0; r < *rounds && firstErr == nil; r++ {
			t := time.Now()
			for _, c := range clients {
				wg.Add(1)
				go func(c plugvisorv1.LifecycleClient) {
					defer wg.Done()
					note(call(c))
				}(c)
			}
			wg.Wait()
			conc = append(conc, ms(time.Since(t)))
			t = time.Now()
			for _, c := range clients {
				note(call(c))
			}
			turn = append(turn, ms(time.Since(t)))
			t = time.Now()
			note(call(clients[r%len(clients)]))
			one = append(one, ms(time.Since(t)))
		}
		res.ConcurrentMs, res.InTurnMs, res.OneMs = summarize(conc), summarize(turn), summarize(one)
		if firstErr != nil {
			res.Failures++
			res.Error = firstErr.Error()
		}
	}
	for _, c := range runs {
		wg.Add(1)
		go func(c *cycle) {
			defer wg.Done()
			c.kill(false)
		}(c)
	}
	wg.Wait()
	if err := writeJSON(stdout, res); err != nil || res.Failures > 0 {
		return 1
	}
	return 0
}

func init() {
	subcommands["activate"] = subcommand{"start, Ping, Dispense, Implemented (+ host API and OnActivate for plugvisor.v1 plugins), Kill; --count times", cmdActivate}
	subcommands["fanout"] = subcommand{"--count plugvisor.v1 plugins at once, one hook on all of them (concurrently and in turn) against one", cmdFanout}
}

func cmdHTTPHook(args []string, stdout, stderr io.Writer) int {
	var bf benchFlags
	fs := newBenchFlagSet("httphook", "httphook", "Start and activate a plugvisor.v1 plugin, then make --count plugvisor.v1.Http calls (GET --path, no body)\n"+
		"one after the other, straight on the plugin's connection, with no HTTP server in between; print their latencies (ms).", stderr, &bf, 1000)
	path := fs.String("path", "/small", "the path (after the mount path) to GET")
	argv, code := bf.parse(fs, args, stderr)
	if argv == nil {
		return code
	}
	type httpHookResult struct {
		Run    *cycle `json:"run"`
		Count  int    `json:"count"`
		Path   string `json:"path"`
		CallMs stats  `json:"call_ms"`
		Error  string `json:"error,omitempty"`
	}
	c := bf.startCycle(argv, stderr)
	res := httpHookResult{Run: c, Count: bf.count, Path: *path}
	var err error
	if c.Error != "" {
		err = fmt.Errorf("%s", c.Error)
	} else {
		err = func() error {
			a, err := activate(c.protocolCli, "{}")
			if err != nil {
				return err
			}
			lat := make([]float64, 0, bf.count)
			for i := 0; i < bf.count; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t := time.Now()
				code, body, err := serveHTTP(ctx, a.session.conn, "GET", *path, "")
				d := ms(time.Since(t))
				cancel()
				if err != nil {
					return err
				}
				if code != 200 {
					return fmt.Errorf("GET %s: status %d: %s", *path, code, body)
				}
				lat = append(lat, d)
			}
			res.CallMs = summarize(lat)
			return nil
		}()
	}
	return c.finish(stdout, bf.log, &res, &res.Error, err)
}

func init() {
	subcommands["httphook"] = subcommand{"plugvisor.v1.Http calls straight on the plugin's connection: --count GETs of --path, timed", cmdHTTPHook}
}
