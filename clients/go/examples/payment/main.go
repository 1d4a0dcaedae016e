// Payment in two phases, as a payment service runs it: freeze the buyer's funds when the
// order is placed (a pending transfer, with a timeout), then, when the payment provider's
// callback arrives, confirm (post the pending transfer, possibly for less) or roll back
// (void it). Callbacks can arrive twice: the confirmation's transfer id is derived from the
// order, so the second delivery answers exists and changes nothing; no lock, no "already
// processed" table. A freeze whose callback never comes is released by the ledger itself
// when its timeout passes; confirming it afterwards answers pending_transfer_expired.
//
//	LEDGERD_ADDR=127.0.0.1:7400 LEDGERD_TOKEN=... go run ./examples/payment
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

const ledger, code = 1, 1

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "payment: FAILED:", err)
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
	bank, buyer, merchant := base.Add64(1), base.Add64(2), base.Add64(3)
	if err := create(ctx, client, []ledgerd.Account{
		{ID: bank, Ledger: ledger, Code: code},
		{ID: buyer, Ledger: ledger, Code: code, Flags: ledgerd.AccountDebitsMustNotExceedCredits},
		{ID: merchant, Ledger: ledger, Code: code},
	}); err != nil {
		return err
	}
	// The buyer tops up 1,000.
	if err := transfer(ctx, client, ledgerd.Transfer{ID: base.Add64(10), DebitAccountID: bank,
		CreditAccountID: buyer, Amount: ledgerd.U128(1000), Ledger: ledger, Code: code}, ledgerd.ResultOK); err != nil {
		return err
	}

	// Order 1: freeze 300, the provider confirms 250 (a partial capture), twice.
	freeze := func(id uint64, amount uint64, timeoutS uint32) ledgerd.Transfer {
		return ledgerd.Transfer{ID: base.Add64(id), DebitAccountID: buyer, CreditAccountID: merchant,
			Amount: ledgerd.U128(amount), Timeout: timeoutS, Ledger: ledger, Code: code, Flags: ledgerd.TransferPending}
	}
	settle := func(id, pendingID uint64, amount uint64, flags ledgerd.TransferFlags) ledgerd.Transfer {
		// Accounts, ledger and code may stay zero: they are taken from the pending transfer.
		return ledgerd.Transfer{ID: base.Add64(id), PendingID: base.Add64(pendingID), Amount: ledgerd.U128(amount), Flags: flags}
	}
	if err := transfer(ctx, client, freeze(100, 300, 60), ledgerd.ResultOK); err != nil {
		return err
	}
	if err := expectBalance(ctx, client, buyer, 300, 0); err != nil {
		return err
	}
	confirm := settle(101, 100, 250, ledgerd.TransferPostPendingTransfer)
	if err := transfer(ctx, client, confirm, ledgerd.ResultOK); err != nil {
		return err
	}
	if err := transfer(ctx, client, confirm, ledgerd.ResultExists); err != nil { // the duplicate callback
		return err
	}
	if err := expectBalance(ctx, client, buyer, 0, 250); err != nil {
		return err
	}

	// Order 2: freeze 200, the provider reports a failure: roll back (twice, too).
	if err := transfer(ctx, client, freeze(200, 200, 60), ledgerd.ResultOK); err != nil {
		return err
	}
	rollback := settle(201, 200, 0, ledgerd.TransferVoidPendingTransfer)
	if err := transfer(ctx, client, rollback, ledgerd.ResultOK); err != nil {
		return err
	}
	if err := transfer(ctx, client, rollback, ledgerd.ResultExists); err != nil {
		return err
	}
	// A confirmation that arrives after the rollback is refused.
	if err := transfer(ctx, client, settle(202, 200, 200, ledgerd.TransferPostPendingTransfer),
		ledgerd.ResultPendingTransferAlreadyVoided); err != nil {
		return err
	}

	// Order 3: freeze 100 for 1 second; no callback comes. The ledger releases it by itself.
	if err := transfer(ctx, client, freeze(300, 100, 1), ledgerd.ResultOK); err != nil {
		return err
	}
	waited, err := waitReleased(ctx, client, buyer, 5*time.Second)
	if err != nil {
		return err
	}
	if err := transfer(ctx, client, settle(301, 300, 100, ledgerd.TransferPostPendingTransfer),
		ledgerd.ResultPendingTransferExpired); err != nil {
		return err
	}

	// Over the balance: 1,000 - 250 = 750 left, so freezing 800 is refused.
	if err := transfer(ctx, client, freeze(400, 800, 60), ledgerd.ResultExceedsCredits); err != nil {
		return err
	}
	if err := expectBalance(ctx, client, buyer, 0, 250); err != nil {
		return err
	}
	fmt.Printf("payment: confirmed 250 of 300 (duplicate callback: exists), rolled back 200 (duplicate: exists), "+
		"100 expired after %.1fs (late confirm: pending_transfer_expired), buyer has 750 left\n", waited.Seconds())
	return nil
}

// transfer sends one transfer and checks its outcome.
func transfer(ctx context.Context, c *ledgerd.Client, t ledgerd.Transfer, want ledgerd.ResultCode) error {
	results, err := c.CreateTransfers(ctx, []ledgerd.Transfer{t})
	if err != nil {
		return err
	}
	got := ledgerd.ResultOK
	if len(results) > 0 {
		got = results[0].Result
	}
	if got != want {
		return fmt.Errorf("transfer %v: %s, want %s", t.ID, got, want)
	}
	return nil
}

func create(ctx context.Context, c *ledgerd.Client, accounts []ledgerd.Account) error {
	results, err := c.CreateAccounts(ctx, accounts)
	if err == nil && len(results) > 0 {
		err = fmt.Errorf("account %d: %s", results[0].Index, results[0].Result)
	}
	return err
}

// expectBalance checks the buyer's frozen (pending) and paid (posted) debits.
func expectBalance(ctx context.Context, c *ledgerd.Client, id ledgerd.Uint128, pending, posted uint64) error {
	accounts, err := c.LookupAccounts(ctx, []ledgerd.Uint128{id})
	if err != nil {
		return err
	}
	if len(accounts) != 1 || accounts[0].DebitsPending != ledgerd.U128(pending) || accounts[0].DebitsPosted != ledgerd.U128(posted) {
		return fmt.Errorf("account %v: %+v, want %d frozen and %d paid", id, accounts, pending, posted)
	}
	return nil
}

// waitReleased polls (bounded) until nothing is frozen on the account any more.
func waitReleased(ctx context.Context, c *ledgerd.Client, id ledgerd.Uint128, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		time.Sleep(200 * time.Millisecond)
		accounts, err := c.LookupAccounts(ctx, []ledgerd.Uint128{id})
		if err != nil {
			return 0, err
		}
		if len(accounts) == 1 && accounts[0].DebitsPending.IsZero() {
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("the pending transfer did not expire within %v", limit)
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
