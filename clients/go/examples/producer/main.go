// A producer that must not lose or double anything while the daemon crashes under it.
//
// It sends -n transfers in calls of -batch from -workers goroutines, paced at -rate
// transfers/s. Every id is derived from -seed (or LEDGERD_PRODUCER_SEED), so a rerun sends
// the very same transfers. When the daemon dies (connection refused or reset), the client
// reconnects with back-off and re-sends what was in flight; a call that still fails (its
// attempt deadline passed) is sent again with the same ids, until the overall -deadline.
// Ids make every re-send safe: a transfer a lost attempt applied answers exists, which counts
// as acknowledged.
//
// At the end it reads everything back: every transfer exists exactly once (lookups by id,
// and the receiving account's transfer list), and the balances equal exactly the sum sent.
// Its last line is
//
//	producer: sent=N acknowledged=N lost=0 duplicated=0
//
// and it exits non-zero on any loss or double. Run it, and kill and restart the daemon
// (same address, same data) while it runs:
//
//	LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... go run ./examples/producer
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ledgerd "github.com/ledgerd/ledgerd/clients/go"
)

const ledger, code = 1, 1

func main() {
	n := flag.Int("n", 20000, "transfers to send")
	batch := flag.Int("batch", 100, "transfers per call (at most 8190)")
	workers := flag.Int("workers", 4, "goroutines sending calls")
	rate := flag.Int("rate", 5000, "transfers per second, paced (0: as fast as possible)")
	seed := flag.Uint64("seed", envUint("LEDGERD_PRODUCER_SEED", 1), "derives every id: a rerun with the same seed sends the same transfers")
	deadline := flag.Duration("deadline", 120*time.Second, "give up after this long")
	flag.Parse()
	p := &producer{n: *n, batch: *batch, rate: *rate, base: ledgerd.Uint128{Hi: mix(*seed), Lo: 0}}
	if err := p.run(*workers, *deadline); err != nil {
		fmt.Fprintln(os.Stderr, "producer: FAILED:", err)
		os.Exit(1)
	}
}

type producer struct {
	n, batch, rate int
	base           ledgerd.Uint128
	client         *ledgerd.Client
	acknowledged   int64 // atomic
	callRetries    int64 // atomic
}

func (p *producer) source() ledgerd.Uint128 { return p.base.Add64(1) }
func (p *producer) sink() ledgerd.Uint128   { return p.base.Add64(2) }

// transfer is the i-th transfer: always the same for the same seed.
func (p *producer) transfer(i int) ledgerd.Transfer {
	return ledgerd.Transfer{ID: p.base.Add64(1000 + uint64(i)), DebitAccountID: p.source(), CreditAccountID: p.sink(),
		Amount: ledgerd.U128(amount(i)), Ledger: ledger, Code: code}
}

func amount(i int) uint64 { return 1 + uint64(i%7) }

func (p *producer) run(workers int, deadline time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	if err := p.connect(ctx); err != nil {
		return err
	}
	defer p.client.Close()

	if err := retry(ctx, &p.callRetries, func(ctx context.Context) error {
		results, err := p.client.CreateAccounts(ctx, []ledgerd.Account{
			{ID: p.source(), Ledger: ledger, Code: code}, {ID: p.sink(), Ledger: ledger, Code: code}})
		return firstFailure(results, err) // exists: created by an earlier attempt or run
	}); err != nil {
		return err
	}

	// Send: call k holds transfers [k*batch, (k+1)*batch); workers take calls in turn.
	calls := (p.n + p.batch - 1) / p.batch
	var next int64 = -1
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int(atomic.AddInt64(&next, 1)); k < calls; k = int(atomic.AddInt64(&next, 1)) {
				if p.rate > 0 { // pace: call k starts at its slot of the schedule
					time.Sleep(time.Until(start.Add(time.Duration(k*p.batch) * time.Second / time.Duration(p.rate))))
				}
				if err := p.send(ctx, k); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	lost, duplicated, err := p.verify(ctx)
	if err != nil {
		return err
	}
	st := p.client.Stats()
	fmt.Printf("producer: %.1fs, reconnects=%d resent_requests=%d call_retries=%d\n",
		time.Since(start).Seconds(), st.Reconnects, st.Resent, atomic.LoadInt64(&p.callRetries))
	fmt.Printf("producer: sent=%d acknowledged=%d lost=%d duplicated=%d\n", p.n, atomic.LoadInt64(&p.acknowledged), lost, duplicated)
	if lost != 0 || duplicated != 0 || int(atomic.LoadInt64(&p.acknowledged)) != p.n {
		return errors.New("transfers lost, doubled or unacknowledged")
	}
	return nil
}

// send sends call k until every transfer of it is acknowledged: applied now, or exists
// (applied by an attempt whose reply was lost).
func (p *producer) send(ctx context.Context, k int) error {
	end := (k + 1) * p.batch
	if end > p.n {
		end = p.n
	}
	transfers := make([]ledgerd.Transfer, 0, end-k*p.batch)
	for i := k * p.batch; i < end; i++ {
		transfers = append(transfers, p.transfer(i))
	}
	err := retry(ctx, &p.callRetries, func(ctx context.Context) error {
		return firstFailure(p.client.CreateTransfers(ctx, transfers))
	})
	if err == nil {
		atomic.AddInt64(&p.acknowledged, int64(len(transfers)))
	}
	return err
}

// verify reads everything back: lost = transfers missing, duplicated = transfers listed on
// the sink beyond those sent; the balances must equal the sum exactly.
func (p *producer) verify(ctx context.Context) (lost, duplicated int, err error) {
	found := 0
	var sum uint64
	for from := 0; from < p.n; from += ledgerd.EventsPerRequestMax {
		ids := make([]ledgerd.Uint128, 0, ledgerd.EventsPerRequestMax)
		for i := from; i < p.n && i < from+ledgerd.EventsPerRequestMax; i++ {
			ids = append(ids, p.transfer(i).ID)
			sum += amount(i)
		}
		var got []ledgerd.Transfer
		if err := retry(ctx, &p.callRetries, func(ctx context.Context) (err error) {
			got, err = p.client.LookupTransfers(ctx, ids)
			return err
		}); err != nil {
			return 0, 0, err
		}
		for _, t := range got {
			i := int(t.ID.Lo - 1000) // base.Lo is 0; a foreign high half fails the comparison below
			want := p.transfer(i)
			want.Timestamp = t.Timestamp
			if t != want {
				return 0, 0, fmt.Errorf("transfer %v differs from what was sent: %+v", t.ID, t)
			}
		}
		found += len(got)
	}
	// Everything the sink received, page by page: exactly the transfers sent, once each.
	listed := 0
	filter := ledgerd.AccountFilter{AccountID: p.sink(), Limit: ledgerd.EventsPerRequestMax, Flags: ledgerd.FilterCredits}
	for page := 0; page <= p.n/ledgerd.EventsPerRequestMax+2; page++ {
		var got []ledgerd.Transfer
		if err := retry(ctx, &p.callRetries, func(ctx context.Context) (err error) {
			got, err = p.client.GetAccountTransfers(ctx, filter)
			return err
		}); err != nil {
			return 0, 0, err
		}
		listed += len(got)
		if len(got) < int(filter.Limit) {
			break
		}
		filter.TimestampMin = got[len(got)-1].Timestamp + 1
	}
	var accounts []ledgerd.Account
	if err := retry(ctx, &p.callRetries, func(ctx context.Context) (err error) {
		accounts, err = p.client.LookupAccounts(ctx, []ledgerd.Uint128{p.source(), p.sink()})
		return err
	}); err != nil {
		return 0, 0, err
	}
	if len(accounts) != 2 || accounts[0].DebitsPosted != ledgerd.U128(sum) || accounts[1].CreditsPosted != ledgerd.U128(sum) {
		return 0, 0, fmt.Errorf("balances %v / %v, want exactly %d", accounts[0].DebitsPosted, accounts[1].CreditsPosted, sum)
	}
	if listed > p.n {
		duplicated = listed - p.n
	}
	return p.n - found, duplicated, nil
}

// connect dials LEDGERD_ADDR (default 127.0.0.1:7400), waiting for a daemon that is down.
func (p *producer) connect(ctx context.Context) error {
	addr := os.Getenv("LEDGERD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7400"
	}
	return retry(ctx, &p.callRetries, func(ctx context.Context) (err error) {
		p.client, err = ledgerd.Dial(ctx, addr, ledgerd.Options{Token: os.Getenv("LEDGERD_TOKEN")})
		return err
	})
}

// retry runs f, each attempt bounded by 10 s, until it succeeds, fails for good, or ctx ends.
// The client already reconnects and re-sends within an attempt; this covers attempts that
// ran out of time or could not connect.
func retry(ctx context.Context, retries *int64, f func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(attempt)
		cancel()
		var se *ledgerd.StatusError
		var failed failure
		switch {
		case err == nil:
			return nil
		case errors.As(err, &failed), errors.As(err, &se) && !se.Status.Retryable():
			return err // a refusal: sending the same again cannot help
		case ctx.Err() != nil:
			return fmt.Errorf("deadline passed: %w", err)
		}
		atomic.AddInt64(retries, 1)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		if backoff *= 2; backoff > time.Second {
			backoff = time.Second
		}
	}
}

// failure is an event the ledger refused: not retried.
type failure struct{ r ledgerd.CreateResult }

func (f failure) Error() string { return fmt.Sprintf("event %d: %s", f.r.Index, f.r.Result) }

// firstFailure treats exists as success (a re-sent event that an earlier attempt applied).
func firstFailure(results []ledgerd.CreateResult, err error) error {
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.Result != ledgerd.ResultExists {
			return failure{r}
		}
	}
	return nil
}

// mix spreads a small seed over 64 bits (splitmix64), never 0.
func mix(seed uint64) uint64 {
	z := seed + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return (z ^ (z >> 31)) | 1
}

func envUint(name string, def uint64) uint64 {
	if v, err := strconv.ParseUint(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}
