package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpcws/grpcws/internal/v1wire"
	"google.golang.org/grpc/codes"
)

// soak is one run: the load, the faults, the bridge's figures and the
// tally of what the clients saw.
type soak struct {
	e       *env
	o       options
	probe   *probe
	dialers *dialers
	url     string
	out     io.Writer
	pool    *muxPool // multiplexed mode only

	nextID  atomic.Int64
	began   time.Time
	loadEnd time.Time // when the last RPC ended

	baseline, final, peak snapshot
	settled               time.Duration // how long the bridge took to return to its baseline
	settleErr             error
	killErr               error
	bridgeCrashed         bool

	mu    sync.Mutex
	t     tally
	kills []downtime
}

// downtime is one kill of the backend and its restart.
type downtime struct{ killed, restarted time.Time }

// tally counts what the clients saw.
type tally struct {
	started, ok int
	byKind      [kinds]struct{ started, ok int }
	failed      map[codes.Code]int // with a status: from the end frame or the close code
	closeOnly   int                // of those, how many had only the close code
	examples    map[codes.Code]string
	noStatus    []string // what the failed RPCs without a status got
	noStatusN   int
	dropped     [dropModes + 1]int
	hung        int
	sent, recvd int64

	okLost, okDup, okReordered int
	failDup, failReordered     int
	mismatched                 int // the end frame's code and the close code disagree
	mismatchExamples           []string
	protocolN                  int
	protocol                   []string

	unavailable []span  // RPCs that failed with UNAVAILABLE
	okStarts    []int64 // when RPCs that ended OK started, in Unix nanoseconds
}

type span struct{ started, ended time.Time }

func newSoak(ctx context.Context, e *env, o options, out io.Writer) (*soak, error) {
	s := &soak{
		e:       e,
		o:       o,
		probe:   newProbe(e),
		dialers: newDialers(o.sources),
		url:     "ws://" + e.bridge.Addr + "/",
		out:     out,
	}
	if o.muxSockets > 0 {
		s.pool = newMuxPool(s.dialers, s.url, o.muxSockets)
	}
	s.t.failed = map[codes.Code]int{}
	s.t.examples = map[codes.Code]string{}
	// Every source address must be usable: 127.0.0.0/8 is loopback on
	// Linux, but not everywhere.
	for i, c := range s.dialers.clients {
		if err := s.waitReady(ctx, c); err != nil {
			return nil, fmt.Errorf("source address 127.0.0.%d: %w", 2+i, err)
		}
	}
	return s, nil
}

// waitReady polls the bridge's /readyz, through the source address of c,
// until it answers 200.
func (s *soak) waitReady(ctx context.Context, c *http.Client) error {
	var last error
	for range 300 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.probe.bridge.Admin+"/readyz", nil)
		if err != nil {
			return err
		}
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", res.Status)
		}
		last = err
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("bridge not ready after 30s: %w", last)
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *soak) run(ctx context.Context) error {
	if err := s.warmUp(ctx); err != nil {
		return err
	}
	if s.pool != nil {
		s.pool.close() // no socket open in the baseline; the load dials them again
	}
	if !sleep(ctx, time.Second) {
		return ctx.Err()
	}
	_ = s.probe.gc(ctx)
	var err error
	if s.baseline, err = s.probe.snapshot(ctx, true); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	s.peak = s.baseline

	s.began = time.Now()
	end := s.began.Add(s.o.duration)
	samplerCtx, stopSampler := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s.sample(samplerCtx)
	}()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		s.killer(ctx, end)
	}()
	dropped := make(chan struct{})
	go func() {
		defer close(dropped)
		if s.pool != nil {
			s.pool.dropper(ctx, s.o.seed, s.o.muxDropEvery, end)
		}
	}()

	var wg sync.WaitGroup
	ramp := min(s.o.duration/6, 20*time.Second)
	for i := range s.o.streams {
		startAt := s.began.Add(ramp * time.Duration(i) / time.Duration(s.o.streams))
		wg.Go(func() { s.slot(ctx, i, startAt, end) })
	}
	wg.Wait()
	s.loadEnd = time.Now()
	<-dropped
	if s.pool != nil {
		s.pool.close()
	}
	<-killed
	stopSampler()
	<-sampled
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !s.e.bridge.Running() {
		s.bridgeCrashed = true
		return nil
	}
	s.settle(ctx)
	return nil
}

// warmUp runs one short RPC of each kind, which must all end OK, so that
// the baseline includes what the first RPCs set up once.
func (s *soak) warmUp(ctx context.Context) error {
	for k := range kinds {
		p := plan{id: s.nextID.Add(1), kind: k, life: 500 * time.Millisecond, msgs: 3, interval: 100 * time.Millisecond, payload: 16}
		r := s.runRPC(ctx, int(k), p)
		if r.dialErr != nil || r.end == nil || r.end.GetCode() != 0 || r.lost+r.dup+r.reordered > 0 || len(r.protocol) > 0 {
			return fmt.Errorf("warm-up %s RPC failed: %s", kindNames[k], describe(r))
		}
	}
	return nil
}

// slot keeps one RPC open from startAt until end: when one ends it starts
// the next, after a pause when the last one failed or was dropped.
func (s *soak) slot(ctx context.Context, i int, startAt, end time.Time) {
	rng := rand.New(rand.NewPCG(s.o.seed, uint64(i)))
	if !sleep(ctx, time.Until(startAt)) {
		return
	}
	// Each round takes at least 100 ms (an RPC lives at least minLife, a
	// failed or dropped one is followed by a pause), which bounds the count.
	rounds := int(s.o.duration/(100*time.Millisecond)) + 1
	for range rounds {
		if !time.Now().Before(end) || ctx.Err() != nil {
			return
		}
		p := newPlan(rng, s.nextID.Add(1), s.o.maxLife, s.o.drop)
		r := s.runRPC(ctx, i, p)
		if ok := s.record(r); !ok {
			// A client backs off before it tries again.
			if !sleep(ctx, 100*time.Millisecond+time.Duration(rng.Int64N(int64(900*time.Millisecond)))) {
				return
			}
		}
	}
}

// runRPC runs one RPC of slot i: a WebSocket of its own, or a stream of
// the slot's multiplexed socket.
func (s *soak) runRPC(ctx context.Context, i int, p plan) result {
	if s.pool != nil {
		return runMuxStream(ctx, s.pool, i, p)
	}
	return runStream(ctx, s.dialers, s.url, p)
}

func describe(r result) string {
	if r.dialErr != nil {
		return "dial: " + r.dialErr.Error()
	}
	end := "no end frame"
	if r.end != nil {
		end = fmt.Sprintf("end %s %q", codes.Code(r.end.GetCode()), r.end.GetMessage())
	}
	return fmt.Sprintf("%s RPC %d: %s, close %d %q, sent %d, received %d, lost %d, duplicated %d, reordered %d, protocol %q",
		kindNames[r.kind], r.id, end, r.close, r.reason, r.sent, r.received, r.lost, r.dup, r.reordered, r.protocol)
}

const maxExamples = 5

// record counts one RPC's outcome and reports whether it ended OK.
func (s *soak) record(r result) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.t
	t.started++
	t.byKind[r.kind].started++
	t.sent += int64(r.sent)
	t.recvd += int64(r.received)
	if len(r.protocol) > 0 {
		t.protocolN++
		if len(t.protocol) < maxExamples {
			t.protocol = append(t.protocol, describe(r))
		}
	}
	ok := false
	switch {
	case r.dropped:
		t.dropped[r.drop]++
		t.failDup += r.dup
		t.failReordered += r.reordered
		return false
	case r.hung:
		t.hung++
		t.noStatusN++
		if len(t.noStatus) < maxExamples {
			t.noStatus = append(t.noStatus, "hung: "+describe(r))
		}
	case r.dialErr != nil:
		t.noStatusN++
		if len(t.noStatus) < maxExamples {
			t.noStatus = append(t.noStatus, describe(r))
		}
	case r.end != nil:
		code := codes.Code(r.end.GetCode())
		if !r.mux && !v1wire.CloseAgrees(code, r.close) {
			t.mismatched++
			if len(t.mismatchExamples) < maxExamples {
				t.mismatchExamples = append(t.mismatchExamples, describe(r))
			}
		}
		if code == codes.OK {
			ok = true
			break
		}
		s.failed(r, code, r.end.GetMessage())
	default:
		code, has := v1wire.CloseStatus(r.close, "").Code(), v1wire.CloseCarriesStatus(r.close)
		if !has {
			t.noStatusN++
			if len(t.noStatus) < maxExamples {
				t.noStatus = append(t.noStatus, describe(r))
			}
			break
		}
		t.closeOnly++
		s.failed(r, code, r.reason)
	}
	if ok {
		t.ok++
		t.byKind[r.kind].ok++
		t.okLost += r.lost
		t.okDup += r.dup
		t.okReordered += r.reordered
		t.okStarts = append(t.okStarts, r.started.UnixNano())
	} else {
		t.failDup += r.dup
		t.failReordered += r.reordered
	}
	return ok
}

// failed counts a failed RPC with a status; s.mu is held.
func (s *soak) failed(r result, code codes.Code, msg string) {
	s.t.failed[code]++
	if _, ok := s.t.examples[code]; !ok {
		s.t.examples[code] = msg
	}
	if code == codes.Unavailable {
		ended := r.ended
		if !r.endAt.IsZero() {
			ended = r.endAt // the status came: the RPC has ended for its client
		}
		s.t.unavailable = append(s.t.unavailable, span{r.started, ended})
	}
}

// killer kills the backend with SIGKILL at random intervals until end, and
// restarts it on the same address after a random downtime.
func (s *soak) killer(ctx context.Context, end time.Time) {
	if s.o.killEvery <= 0 {
		return
	}
	rng := rand.New(rand.NewPCG(s.o.seed, 1<<62))
	maxKills := int(s.o.duration/(s.o.killEvery/2)) + 1
	for range maxKills {
		wait := time.Duration(float64(s.o.killEvery) * (0.5 + rng.Float64()))
		// Leave time for RPCs after the last restart.
		if time.Now().Add(wait + 5*time.Second).After(end) {
			return
		}
		if !sleep(ctx, wait) {
			return
		}
		d := downtime{killed: time.Now()}
		s.e.killBackend()
		if !sleep(ctx, 200*time.Millisecond+time.Duration(rng.Int64N(int64(1800*time.Millisecond)))) {
			return
		}
		s.e.mu.Lock()
		addr := s.e.backendAddr
		s.e.mu.Unlock()
		err := s.e.startBackend(addr)
		d.restarted = time.Now()
		s.mu.Lock()
		s.kills = append(s.kills, d)
		if err != nil {
			s.killErr = fmt.Errorf("restarting the backend on %s: %w", addr, err)
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// sample reads the bridge's figures every second, keeps the peaks, and
// prints progress.
func (s *soak) sample(ctx context.Context) {
	every := max(10*time.Second, s.o.duration/20)
	nextPrint := time.Now().Add(every)
	lastCPU, lastAt := s.baseline.cpu, time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		snap, err := s.probe.snapshot(ctx, false)
		if err != nil {
			continue // the bridge is busy; the next sample will do
		}
		s.mu.Lock()
		s.peak.goroutines = max(s.peak.goroutines, snap.goroutines)
		s.peak.fds = max(s.peak.fds, snap.fds)
		s.peak.rss = max(s.peak.rss, snap.rss)
		s.peak.open = max(s.peak.open, snap.open)
		started, ok, kills := s.t.started, s.t.ok, len(s.kills)
		s.mu.Unlock()
		if now := time.Now(); now.After(nextPrint) {
			cpu := float64(snap.cpu-lastCPU) / float64(now.Sub(lastAt))
			lastCPU, lastAt = snap.cpu, now
			nextPrint = nextPrint.Add(every)
			fmt.Fprintf(s.out, "%6v: %6d RPCs open at the bridge; %7d ended (%d OK); %d backend kills; bridge: %d goroutines, %d fds, RSS %s, CPU %.0f%%\n",
				now.Sub(s.began).Round(time.Second), snap.open, started, ok, kills, snap.goroutines, snap.fds, mib(snap.rss), 100*cpu)
		}
	}
}

// settle waits for the bridge to close its last RPC and return to its
// baseline: goroutines, file descriptors and RSS, collecting garbage
// between looks.
func (s *soak) settle(ctx context.Context) {
	began := time.Now()
	deadline := began.Add(s.o.settle)
	for {
		snap, err := s.probe.snapshot(ctx, false)
		if err == nil && snap.open == 0 {
			break
		}
		if time.Now().After(deadline) || !sleep(ctx, 500*time.Millisecond) {
			s.settleErr = fmt.Errorf("RPCs still open at the bridge after %v", s.o.settle)
			break
		}
	}
	nextPrint := time.Now().Add(10 * time.Second)
	for {
		_ = s.probe.gc(ctx)
		snap, err := s.probe.snapshot(ctx, true)
		if err == nil {
			s.final = snap
			if s.checkFinal() == nil {
				break
			}
		} else {
			s.settleErr = err
		}
		if now := time.Now(); err == nil && now.After(nextPrint) {
			nextPrint = nextPrint.Add(10 * time.Second)
			fmt.Fprintf(s.out, "settling %v: %d goroutines, %d fds, RSS %s (heap spans %s holding %s, stacks %s, free but not yet returned %s)\n",
				now.Sub(began).Round(time.Second), snap.goroutines, snap.fds, mib(snap.rss), mib(snap.heap), mib(snap.live), mib(snap.stacks), mib(snap.unreturned))
		}
		if time.Now().After(deadline) || !sleep(ctx, 2*time.Second) {
			break
		}
	}
	s.settled = time.Since(began)
}

// Tolerances of the return to the baseline.
const (
	goroutineSlack = 10
	fdSlack        = 5
	rssSlack       = 50 << 20
)

// rssLimit is the most RSS the settled bridge may have: its baseline plus
// the most of 50 MiB, the baseline again (twice the baseline), and a tenth
// of its peak RSS.
//
// The tenth of the peak is what the Go runtime keeps for good after a peak:
// it never frees a goroutine's descriptor (about 0.5 KiB each, kept for
// reuse: 15 MiB after 30,000 goroutines at once) nor its bookkeeping for the
// largest heap it had. Those grow with the peak, not with time or with the
// RPCs served, which is how a leak grows.
func rssLimit(baseline, peak int64) int64 { return baseline + max(rssSlack, baseline, peak/10) }

type check struct {
	name string
	ok   bool
	got  string
}

// checkFinal returns the failed checks of the settled bridge.
func (s *soak) checkFinal() []check {
	var failed []check
	for _, c := range s.finalChecks() {
		if !c.ok {
			failed = append(failed, c)
		}
	}
	return failed
}

func (s *soak) finalChecks() []check {
	b, f := s.baseline, s.final
	return []check{
		{"no RPC open at the bridge", f.open == 0, fmt.Sprintf("%d", f.open)},
		{fmt.Sprintf("goroutines back to baseline (at most %d + %d)", b.goroutines, goroutineSlack),
			f.goroutines <= b.goroutines+goroutineSlack, fmt.Sprintf("%d → %d", b.goroutines, f.goroutines)},
		{fmt.Sprintf("file descriptors back to baseline (at most %d + %d)", b.fds, fdSlack),
			f.fds <= b.fds+fdSlack, fmt.Sprintf("%d → %d", b.fds, f.fds)},
		{fmt.Sprintf("RSS near baseline (at most baseline + max(50 MiB, baseline, peak/10) = %s)", mib(rssLimit(b.rss, s.peak.rss))),
			f.rss <= rssLimit(b.rss, s.peak.rss), fmt.Sprintf("%s → %s", mib(b.rss), mib(f.rss))},
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// report prints the outcome and returns whether every check passed.
func (s *soak) report(w io.Writer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &s.t
	failedTotal := 0
	for _, n := range t.failed {
		failedTotal += n
	}
	droppedTotal := 0
	for _, n := range t.dropped {
		droppedTotal += n
	}

	fmt.Fprintf(w, "\nRPCs started            %8d in %v\n", t.started, s.loadEnd.Sub(s.began).Round(time.Second))
	for k := range kinds {
		fmt.Fprintf(w, "  %-22s %8d started, %d OK\n", kindNames[k], t.byKind[k].started, t.byKind[k].ok)
	}
	fmt.Fprintf(w, "ended OK                %8d\n", t.ok)
	fmt.Fprintf(w, "failed with a status    %8d (%d from the close code alone)\n", failedTotal, t.closeOnly)
	codesSeen := make([]codes.Code, 0, len(t.failed))
	for c := range t.failed {
		codesSeen = append(codesSeen, c)
	}
	slices.Sort(codesSeen)
	for _, c := range codesSeen {
		fmt.Fprintf(w, "  %-22s %8d e.g. %q\n", c, t.failed[c], t.examples[c])
	}
	fmt.Fprintf(w, "failed without a status %8d\n", t.noStatusN)
	for _, e := range t.noStatus {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "dropped by the client   %8d (", droppedTotal)
	if s.pool != nil {
		fmt.Fprint(w, "with their socket: ")
	}
	for m := dropReset; m < dropModes; m++ {
		if m > dropReset {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %d", dropNames[m], t.dropped[m])
	}
	if s.pool != nil {
		fmt.Fprintf(w, "; cancelled %d", t.dropped[dropCancel])
	}
	fmt.Fprintln(w, ")")
	brokenN := 0
	if p := s.pool; p != nil {
		p.mu.Lock()
		fmt.Fprintf(w, "multiplexed sockets     %8d dialled, %d dropped by the client (%s %d, %s %d, %s %d)\n", p.dials,
			p.dropped[dropReset]+p.dropped[dropFIN]+p.dropped[dropClose],
			dropNames[dropReset], p.dropped[dropReset], dropNames[dropFIN], p.dropped[dropFIN], dropNames[dropClose], p.dropped[dropClose])
		brokenN = p.brokenN
		for _, b := range p.broken {
			fmt.Fprintf(w, "  bridge breached the protocol: %s\n", b)
		}
		p.mu.Unlock()
	}
	fmt.Fprintf(w, "messages sent           %8d\n", t.sent)
	fmt.Fprintf(w, "messages received       %8d\n", t.recvd)

	// Backend kills: how long the RPCs open at each kill took to end, and
	// whether new RPCs worked after each restart.
	var cut []time.Duration
	refused := 0
	for _, u := range t.unavailable {
		i, found := slices.BinarySearchFunc(s.kills, u.ended, func(d downtime, t time.Time) int { return d.killed.Compare(t) })
		if !found {
			i-- // the last kill before the end
		}
		switch {
		case i < 0:
		case u.started.Before(s.kills[i].killed):
			cut = append(cut, u.ended.Sub(s.kills[i].killed))
		case u.started.Before(s.kills[i].restarted.Add(5 * time.Second)):
			refused++
		}
	}
	slices.Sort(cut)
	okStarts := slices.Clone(t.okStarts)
	slices.Sort(okStarts)
	recovered := 0
	for i, d := range s.kills {
		until := s.loadEnd
		if i+1 < len(s.kills) {
			until = s.kills[i+1].killed
		}
		j, _ := slices.BinarySearch(okStarts, d.restarted.UnixNano())
		if j < len(okStarts) && okStarts[j] < until.UnixNano() {
			recovered++
		}
	}
	downs := make([]time.Duration, len(s.kills))
	for i, d := range s.kills {
		downs[i] = d.restarted.Sub(d.killed).Round(10 * time.Millisecond)
	}
	fmt.Fprintf(w, "backend kills           %8d (down %v)\n", len(s.kills), downs)
	if len(cut) > 0 {
		fmt.Fprintf(w, "  RPCs cut by a kill    %8d, ended after the kill: median %v, p99 %v, max %v\n", len(cut),
			cut[len(cut)/2].Round(time.Millisecond), cut[len(cut)*99/100].Round(time.Millisecond), cut[len(cut)-1].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "  refused while down    %8d (UNAVAILABLE)\n", refused)
	fmt.Fprintf(w, "  new RPCs OK after     %8d of %d restarts\n", recovered, len(s.kills))

	fmt.Fprintf(w, "\nbridge at its peak: %d RPCs open, %d goroutines, %d fds, RSS %s; CPU %.1f s in all\n",
		s.peak.open, s.peak.goroutines, s.peak.fds, mib(s.peak.rss), (s.final.cpu - s.baseline.cpu).Seconds())
	n, lines := s.e.logLines(5)
	fmt.Fprintf(w, "bridge log (warn and above): %d lines\n", n)
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}

	checks := []check{
		{"the bridge kept running", !s.bridgeCrashed, fmt.Sprint(!s.bridgeCrashed)},
		{"the backend restarted after every kill", s.killErr == nil, fmt.Sprint(s.killErr)},
		{"RPCs of every kind ended OK", func() bool {
			for k := range kinds {
				if t.byKind[k].ok == 0 {
					return false
				}
			}
			return true
		}(), fmt.Sprint(t.ok)},
		{"new RPCs OK after every restart", recovered == len(s.kills), fmt.Sprintf("%d of %d", recovered, len(s.kills))},
		{"no message lost, duplicated or reordered on OK RPCs", t.okLost+t.okDup+t.okReordered == 0,
			fmt.Sprintf("%d, %d, %d", t.okLost, t.okDup, t.okReordered)},
		{"no message duplicated or reordered on the others", t.failDup+t.failReordered == 0, fmt.Sprintf("%d, %d", t.failDup, t.failReordered)},
		{"every failed RPC got a status", t.noStatusN == 0, fmt.Sprintf("%d without", t.noStatusN)},
	}
	if s.pool == nil { // a stream of grpcws.mux.v1 has no close code of its own
		checks = append(checks, check{"end frame and close code agree", t.mismatched == 0, fmt.Sprintf("%d disagree", t.mismatched)})
	}
	checks = append(checks,
		check{"no breach of the protocol", t.protocolN+brokenN == 0, fmt.Sprintf("%d RPCs, %d sockets", t.protocolN, brokenN)},
		check{"no RPC outlived its life by 30s", t.hung == 0, fmt.Sprintf("%d", t.hung)},
	)
	if !s.bridgeCrashed {
		settle := check{"the bridge settled", s.settleErr == nil, fmt.Sprint(s.settleErr)}
		checks = append(checks, settle)
		checks = append(checks, s.finalChecks()...)
	}
	for _, x := range []struct {
		name string
		s    snapshot
	}{{"baseline", s.baseline}, {"settled", s.final}} {
		fmt.Fprintf(w, "bridge %-8s RSS %s (heap spans %s holding %s, stacks %s, free but not yet returned %s)\n",
			x.name, mib(x.s.rss), mib(x.s.heap), mib(x.s.live), mib(x.s.stacks), mib(x.s.unreturned))
	}
	fmt.Fprintf(w, "\nchecks (the bridge settled for %v):\n", s.settled.Round(time.Second))
	pass := true
	for _, c := range checks {
		mark := "ok  "
		if !c.ok {
			mark, pass = "FAIL", false
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, c.name, c.got)
	}
	for _, e := range t.mismatchExamples {
		fmt.Fprintf(w, "  disagree: %s\n", e)
	}
	for _, e := range t.protocol {
		fmt.Fprintf(w, "  protocol: %s\n", e)
	}
	if pass {
		fmt.Fprintln(w, "PASS")
	} else {
		fmt.Fprintln(w, "FAIL")
	}
	return pass
}
