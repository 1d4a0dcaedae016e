// An order as one linked chain, all or nothing: the customer is debited and the merchant
// credited (one double-entry transfer), one item leaves the warehouse's stock for the
// customer, and the merchant pays the platform its fee. The three transfers are linked: if
// any fails, none applies, so there is never a paid order without stock, or stock sent
// without payment, and no compensation code to write. Money and items live on two ledgers; the stock account may
// not go below zero (debits_must_not_exceed_credits).
//
// The first order succeeds; the second fails because the stock is out, and the balances
// show that its payment and fee were undone with it.
//
//	LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... go run ./examples/order
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	ledgerd "github.com/ledgerd/ledgerd/clients/go"
)

const (
	money, items = 1, 2 // ledgers
	code         = 1
	price, fee   = 30, 3
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "order: FAILED:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	base := freshBase()
	bank, customer, merchant, platform := base.Add64(1), base.Add64(2), base.Add64(3), base.Add64(4)
	supplier, warehouse, customerItems := base.Add64(5), base.Add64(6), base.Add64(7)
	limited := ledgerd.AccountDebitsMustNotExceedCredits
	results, err := client.CreateAccounts(ctx, []ledgerd.Account{
		{ID: bank, Ledger: money, Code: code},
		{ID: customer, Ledger: money, Code: code, Flags: limited},
		{ID: merchant, Ledger: money, Code: code},
		{ID: platform, Ledger: money, Code: code},
		{ID: supplier, Ledger: items, Code: code},
		{ID: warehouse, Ledger: items, Code: code, Flags: limited},
		{ID: customerItems, Ledger: items, Code: code},
	})
	if err != nil || len(results) > 0 {
		return fmt.Errorf("accounts: %v %v", results, err)
	}
	// The customer has 100; the warehouse holds one item.
	results, err = client.CreateTransfers(ctx, []ledgerd.Transfer{
		{ID: base.Add64(10), DebitAccountID: bank, CreditAccountID: customer, Amount: ledgerd.U128(100), Ledger: money, Code: code},
		{ID: base.Add64(11), DebitAccountID: supplier, CreditAccountID: warehouse, Amount: ledgerd.U128(1), Ledger: items, Code: code},
	})
	if err != nil || len(results) > 0 {
		return fmt.Errorf("top up and stock: %v %v", results, err)
	}

	// order returns the chain of one order; every leg but the last is linked.
	order := func(n uint64) []ledgerd.Transfer {
		id := base.Add64(1000 * n)
		leg := func(i uint64, from, to ledgerd.Uint128, amount uint64, ledger uint32) ledgerd.Transfer {
			return ledgerd.Transfer{ID: id.Add64(i), DebitAccountID: from, CreditAccountID: to,
				Amount: ledgerd.U128(amount), Ledger: ledger, Code: code, Flags: ledgerd.TransferLinked}
		}
		chain := []ledgerd.Transfer{
			leg(1, customer, merchant, price, money),   // the customer pays
			leg(2, warehouse, customerItems, 1, items), // one item leaves the stock
			leg(3, merchant, platform, fee, money),     // the platform's fee
		}
		chain[len(chain)-1].Flags = 0 // closes the chain
		return chain
	}

	first, err := client.CreateTransfers(ctx, order(1))
	if err != nil || len(first) > 0 {
		return fmt.Errorf("order 1 should succeed: %v %v", first, err)
	}
	second, err := client.CreateTransfers(ctx, order(2))
	if err != nil {
		return err
	}
	// The stock leg fails on its own code; the others are undone with linked_event_failed.
	want := []ledgerd.CreateResult{
		{Index: 0, Result: ledgerd.ResultLinkedEventFailed},
		{Index: 1, Result: ledgerd.ResultExceedsCredits},
		{Index: 2, Result: ledgerd.ResultLinkedEventFailed},
	}
	if fmt.Sprint(second) != fmt.Sprint(want) {
		return fmt.Errorf("order 2: %v, want %v", second, want)
	}

	// The balances hold exactly order 1: nothing of order 2.
	accounts, err := client.LookupAccounts(ctx, []ledgerd.Uint128{customer, merchant, platform, warehouse, customerItems})
	if err != nil || len(accounts) != 5 {
		return fmt.Errorf("lookup: %v %v", accounts, err)
	}
	net := func(a ledgerd.Account) int64 {
		credits, _ := a.CreditsPosted.Uint64()
		debits, _ := a.DebitsPosted.Uint64()
		return int64(credits) - int64(debits)
	}
	got := []int64{net(accounts[0]), net(accounts[1]), net(accounts[2]), net(accounts[3]), net(accounts[4])}
	wantNet := []int64{100 - price, price - fee, fee, 0, 1}
	if fmt.Sprint(got) != fmt.Sprint(wantNet) {
		return fmt.Errorf("balances (customer, merchant, platform, stock, customer's items) %v, want %v", got, wantNet)
	}
	fmt.Printf("order: order 1 applied (pay %d, take 1 item, fee %d); order 2 refused with %s on the stock leg, "+
		"its payment and fee undone; customer has %d, stock %d\n", price, fee, second[1].Result, got[0], got[3])
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
