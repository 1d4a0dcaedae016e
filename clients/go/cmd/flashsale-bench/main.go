// Command flashsale-bench measures the Go client under a flash sale: many goroutines, each
// with one purchase (a one-transfer CreateTransfers) in flight at a time, all through ONE
// Client, so that the client's batching is what turns them into large requests.
//
// It creates fresh accounts (random ids): a supplier, a stock account that may never go
// below zero (debits_must_not_exceed_credits) holding -stock items, and one buyer account
// per goroutine. Each goroutine buys one item per call, in a loop, for -duration. By default
// the stock (1,000,000,000) is far more than a run can sell, so that nearly every attempt
// succeeds and the figure measures purchases, not refusals; a smaller -stock sells out and
// the rest of the attempts fail with exceeds_credits.
//
// At the end it checks, by lookups, that the stock account's debits equal the successes
// counted by the goroutines (sold == min(stock, successes)), that the buyers' credits add up
// to the same number, and that nothing was oversold. It prints:
//
//	clients.go.flash_sale.attempts_per_s <number>
//	clients.go.flash_sale.us_p50 <number>
//	clients.go.flash_sale.us_p99 <number>
//
// and a few other clients.go.* lines. LEDGERD_ADDR and LEDGERD_TOKEN say where the daemon is.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ledgerd "github.com/ledgerd/ledgerd/clients/go"
)

func main() {
	goroutines := flag.Int("goroutines", 1000, "buyers, each with one purchase in flight")
	duration := flag.Duration("duration", 10*time.Second, "how long the sale runs")
	stock := flag.Uint64("stock", 1_000_000_000, "items in stock")
	partial := flag.Int("partial-in-flight", 0, "Options.PartialInFlight (0: the client's default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "flashsale-bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*goroutines, *duration, *stock, *partial); err != nil {
		fmt.Fprintln(os.Stderr, "flashsale-bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

const ledger, code = 1, 1

func run(goroutines int, duration time.Duration, stock uint64, partial int) error {
	addr := os.Getenv("LEDGERD_ADDR")
	if addr == "" {
		return fmt.Errorf("set LEDGERD_ADDR (host:port of the daemon)")
	}
	ctx := context.Background()
	client, err := ledgerd.Dial(ctx, addr, ledgerd.Options{Token: os.Getenv("LEDGERD_TOKEN"), PartialInFlight: partial})
	if err != nil {
		return err
	}
	defer client.Close()

	// Fresh ids: a random 64-bit base in the high half, counters in the low half.
	base := ledgerd.Uint128{Hi: randomUint64() | 1}
	supplier, stockID := base.Add64(1), base.Add64(2)
	buyer := func(g int) ledgerd.Uint128 { return base.Add64(1000 + uint64(g)) }
	accounts := []ledgerd.Account{
		{ID: supplier, Ledger: ledger, Code: code},
		{ID: stockID, Ledger: ledger, Code: code, Flags: ledgerd.AccountDebitsMustNotExceedCredits},
	}
	for g := 0; g < goroutines; g++ {
		accounts = append(accounts, ledgerd.Account{ID: buyer(g), Ledger: ledger, Code: code})
	}
	for len(accounts) > 0 {
		n := len(accounts)
		if n > 8000 {
			n = 8000
		}
		if res, err := client.CreateAccounts(ctx, accounts[:n]); err != nil || len(res) > 0 {
			return fmt.Errorf("create accounts: %v %v", err, res)
		}
		accounts = accounts[n:]
	}
	restock := ledgerd.Transfer{ID: base.Add64(3), DebitAccountID: supplier, CreditAccountID: stockID,
		Amount: ledgerd.U128(stock), Ledger: ledger, Code: code}
	if res, err := client.CreateTransfers(ctx, []ledgerd.Transfer{restock}); err != nil || len(res) > 0 {
		return fmt.Errorf("stock the shelf: %v %v", err, res)
	}

	var successes, refusals uint64
	latencies := make([][]uint32, goroutines)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(duration)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			// Transfer ids: the buyer's number in bits 32..63 of the low half, a counter below.
			idBase := base.Add64(uint64(g+1) << 32)
			lat := make([]uint32, 0, 4096)
			t := []ledgerd.Transfer{{DebitAccountID: stockID, CreditAccountID: buyer(g),
				Amount: ledgerd.U128(1), Ledger: ledger, Code: code}}
			for k := uint64(0); ; k++ {
				before := time.Now()
				if before.After(end) {
					break
				}
				t[0].ID = idBase.Add64(k)
				res, err := client.CreateTransfers(ctx, t)
				lat = append(lat, uint32(time.Since(before)/time.Microsecond))
				switch {
				case err != nil:
					firstErr.Store(err)
					return
				case len(res) == 0:
					atomic.AddUint64(&successes, 1)
				case res[0].Result == ledgerd.ResultExceedsCredits:
					atomic.AddUint64(&refusals, 1)
				default:
					firstErr.Store(fmt.Errorf("purchase: %v", res[0].Result))
					return
				}
			}
			latencies[g] = lat
		}(g)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := firstErr.Load().(error); ok {
		return err
	}

	// The audit: the stock account's debits and the buyers' credits equal the successes.
	got, err := client.LookupAccounts(ctx, []ledgerd.Uint128{stockID})
	if err != nil || len(got) != 1 {
		return fmt.Errorf("lookup stock: %v", err)
	}
	sold, _ := got[0].DebitsPosted.Uint64()
	want := successes
	if stock < want {
		want = stock
	}
	if sold != want || sold != successes || sold > stock {
		return fmt.Errorf("sold %d, successes %d, stock %d: oversold or miscounted", sold, successes, stock)
	}
	var credited uint64
	for g := 0; g < goroutines; g += 8000 {
		ids := make([]ledgerd.Uint128, 0, 8000)
		for i := g; i < goroutines && i < g+8000; i++ {
			ids = append(ids, buyer(i))
		}
		bs, err := client.LookupAccounts(ctx, ids)
		if err != nil {
			return err
		}
		for _, b := range bs {
			c, _ := b.CreditsPosted.Uint64()
			credited += c
		}
	}
	if credited != sold {
		return fmt.Errorf("buyers credited %d, stock sold %d", credited, sold)
	}

	var all []uint32
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) uint32 {
		if len(all) == 0 {
			return 0
		}
		return all[int(p*float64(len(all)-1))]
	}
	attempts := successes + refusals
	stats := client.Stats()
	fmt.Printf("clients.go.flash_sale.attempts_per_s %.0f\n", float64(attempts)/elapsed.Seconds())
	fmt.Printf("clients.go.flash_sale.us_p50 %d\n", pct(0.50))
	fmt.Printf("clients.go.flash_sale.us_p99 %d\n", pct(0.99))
	fmt.Printf("clients.go.flash_sale.us_p999 %d\n", pct(0.999))
	fmt.Printf("clients.go.flash_sale.us_max %d\n", pct(1))
	fmt.Printf("clients.go.flash_sale.attempts %d\n", attempts)
	fmt.Printf("clients.go.flash_sale.sold %d\n", sold)
	fmt.Printf("clients.go.flash_sale.refused %d\n", refusals)
	fmt.Printf("clients.go.flash_sale.goroutines %d\n", goroutines)
	fmt.Printf("clients.go.flash_sale.requests %d\n", stats.Requests)
	if stats.Requests > 0 {
		fmt.Printf("clients.go.flash_sale.events_per_request %.1f\n", float64(stats.Events)/float64(stats.Requests))
	}
	return nil
}

func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}
