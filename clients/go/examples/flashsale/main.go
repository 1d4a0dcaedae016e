// A flash sale: 10,000 buyers (goroutines) rush for 1,000 items through one client. The
// stock is an account that may not go below zero (debits_must_not_exceed_credits), so the
// ledger itself refuses the 1,001st sale with exceeds_credits: no lock, no Redis counter, no
// oversell. The client coalesces the concurrent purchases into a few large requests.
//
// It checks exactly 1,000 sold, 9,000 refused, each successful buyer holding exactly one
// item, and the stock account at zero.
//
//	LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... go run ./examples/flashsale
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"

	ledgerd "github.com/ledgerd/ledgerd/clients/go"
)

const (
	buyers, stock = 10_000, 1_000
	ledger, code  = 1, 1
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flashsale: FAILED:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	base := freshBase()
	supplier, shelf := base.Add64(1), base.Add64(2)
	buyer := func(i int) ledgerd.Uint128 { return base.Add64(100 + uint64(i)) }
	accounts := []ledgerd.Account{
		{ID: supplier, Ledger: ledger, Code: code},
		{ID: shelf, Ledger: ledger, Code: code, Flags: ledgerd.AccountDebitsMustNotExceedCredits},
	}
	for i := 0; i < buyers; i++ {
		accounts = append(accounts, ledgerd.Account{ID: buyer(i), Ledger: ledger, Code: code})
	}
	// Two calls: one request holds at most 8,190 events.
	for _, part := range [][]ledgerd.Account{accounts[:5000], accounts[5000:]} {
		if results, err := client.CreateAccounts(ctx, part); err != nil || len(results) > 0 {
			return fmt.Errorf("accounts: %v %v", results, err)
		}
	}
	restock := ledgerd.Transfer{ID: base.Add64(3), DebitAccountID: supplier, CreditAccountID: shelf,
		Amount: ledgerd.U128(stock), Ledger: ledger, Code: code}
	if results, err := client.CreateTransfers(ctx, []ledgerd.Transfer{restock}); err != nil || len(results) > 0 {
		return fmt.Errorf("restock: %v %v", results, err)
	}

	// The rush: every buyer tries to buy one item, all at once.
	bought := make([]bool, buyers)
	errs := make(chan error, buyers)
	before := client.Stats()
	var wg sync.WaitGroup
	for i := 0; i < buyers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			purchase := ledgerd.Transfer{ID: base.Add64(100_000 + uint64(i)), DebitAccountID: shelf,
				CreditAccountID: buyer(i), Amount: ledgerd.U128(1), Ledger: ledger, Code: code}
			results, err := client.CreateTransfers(ctx, []ledgerd.Transfer{purchase})
			switch {
			case err != nil:
				errs <- err
			case len(results) == 0:
				bought[i] = true
			case results[0].Result != ledgerd.ResultExceedsCredits:
				errs <- fmt.Errorf("buyer %d: %s", i, results[0].Result)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	requests := client.Stats().Requests - before.Requests

	// The audit, from the ledger: each buyer holds what the client was told, the shelf is empty.
	sold := 0
	for _, b := range bought {
		if b {
			sold++
		}
	}
	ids := make([]ledgerd.Uint128, 0, buyers+1)
	ids = append(ids, shelf)
	for i := 0; i < buyers; i++ {
		ids = append(ids, buyer(i))
	}
	var found []ledgerd.Account
	for _, part := range [][]ledgerd.Uint128{ids[:5000], ids[5000:]} {
		got, err := client.LookupAccounts(ctx, part)
		if err != nil {
			return err
		}
		found = append(found, got...)
	}
	if len(found) != buyers+1 {
		return fmt.Errorf("lookup found %d accounts, want %d", len(found), buyers+1)
	}
	for i, b := range bought {
		want := ledgerd.Uint128{}
		if b {
			want = ledgerd.U128(1)
		}
		if found[1+i].CreditsPosted != want {
			return fmt.Errorf("buyer %d holds %v items, the client said bought=%v", i, found[1+i].CreditsPosted, b)
		}
	}
	shelfDebits, _ := found[0].DebitsPosted.Uint64()
	if sold != stock || shelfDebits != stock || found[0].CreditsPosted != ledgerd.U128(stock) {
		return fmt.Errorf("sold %d, shelf debited %d, stock %d: oversold or undersold", sold, shelfDebits, stock)
	}
	fmt.Printf("flashsale: %d buyers, %d sold, %d refused (exceeds_credits), stock left 0, never oversold; %d requests\n",
		buyers, sold, buyers-sold, requests)
	return nil
}

// connect dials LEDGERD_ADDR (default 127.0.0.1:7400) with LEDGERD_TOKEN.
func connect(ctx context.Context) (*ledgerd.Client, error) {
	addr := os.Getenv("LEDGERD_ADDR")
	if addr == "" {
		addr = "127.0.0.1:7400"
	}
	return ledgerd.Dial(ctx, addr, ledgerd.Options{Token: os.Getenv("LEDGERD_TOKEN")})
}

// freshBase returns a random id base, so that every run uses ids of its own.
func freshBase() ledgerd.Uint128 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return ledgerd.Uint128{Hi: binary.LittleEndian.Uint64(b[:]) | 1}
}
