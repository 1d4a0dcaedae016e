package ledgerd

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// Integration tests: they talk to a real daemon at LEDGERD_ADDR (with LEDGERD_TOKEN, if set)
// and FAIL when it is not set. Every test uses fresh random ids, so that many runs can share
// one daemon.

func daemonAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("LEDGERD_ADDR")
	if addr == "" {
		t.Fatal("LEDGERD_ADDR is not set: start a daemon (e.g. /work/ledgerd-bin/ledgerd --listen 127.0.0.1:7400) and set LEDGERD_ADDR=host:port (and LEDGERD_TOKEN if it has a token)")
	}
	return addr
}

func daemonClient(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, daemonAddr(t), Options{Token: os.Getenv("LEDGERD_TOKEN")})
	if err != nil {
		t.Fatalf("dial %s: %v", os.Getenv("LEDGERD_ADDR"), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx bounds every call of a test.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// freshIDs returns a random base: ids base+1, base+2, ... are this test's own.
func freshIDs(t *testing.T) Uint128 {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// Keep the low half small so that base+n never wraps, and the high half non-zero.
	return Uint128{Hi: binary.LittleEndian.Uint64(b[:8]) | 1, Lo: uint64(binary.LittleEndian.Uint32(b[8:])) << 20}
}

func mustCreateAccounts(t *testing.T, c *Client, accounts ...Account) {
	t.Helper()
	res, err := c.CreateAccounts(testCtx(t), accounts)
	if err != nil || len(res) != 0 {
		t.Fatalf("create accounts: %v %v", resultsString(res), err)
	}
}

func lookupOne(t *testing.T, c *Client, id Uint128) Account {
	t.Helper()
	got, err := c.LookupAccounts(testCtx(t), []Uint128{id})
	if err != nil || len(got) != 1 {
		t.Fatalf("lookup %v: %v %v", id, got, err)
	}
	return got[0]
}

func wantResults(t *testing.T, what string, got []CreateResult, err error, want ...CreateResult) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: results %v, want %v", what, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: results %v, want %v", what, got, want)
		}
	}
}

func TestDaemonHelloAndStatus(t *testing.T) {
	c := daemonClient(t)
	h := c.Hello()
	if h.Version != 1 || h.EventsPerRequestMax != EventsPerRequestMax || h.RequestsInFlightMax == 0 ||
		h.FrameBodyMax != FrameBodyMax || h.ChangeEventsPerReplyMax != ChangeEventsPerReplyMax {
		t.Fatalf("hello reply %+v", h)
	}
	st, err := c.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Connections < 1 || st.UptimeNs == 0 || len(st.StateHash.Hex()) != 32 {
		t.Fatalf("status %+v", st)
	}
}

func TestDaemonWrongTokenIsAuthFailed(t *testing.T) {
	token := os.Getenv("LEDGERD_TOKEN")
	if token == "" {
		t.Skip("LEDGERD_TOKEN is not set: a daemon without a token accepts any")
	}
	_, err := Dial(testCtx(t), daemonAddr(t), Options{Token: token + "-wrong"})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != StatusAuthFailed {
		t.Fatalf("wrong token: got %v, want auth_failed", err)
	}
	_, err = Dial(testCtx(t), daemonAddr(t), Options{})
	if !errors.As(err, &se) || se.Status != StatusAuthFailed {
		t.Fatalf("no token: got %v, want auth_failed", err)
	}
}

func TestDaemonAccountsTransfersAndQueries(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	a, b := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c,
		Account{ID: a, Ledger: 7, Code: 1, UserData64: 42, Flags: AccountHistory},
		Account{ID: b, Ledger: 7, Code: 2, UserData128: U128(9)})

	// Validation failures, each with its own code, indexed into this call's slice.
	res, err := c.CreateAccounts(ctx, []Account{
		{ID: base.Add64(3), Ledger: 7, Code: 1},
		{ID: Uint128{}, Ledger: 7, Code: 1},
		{ID: base.Add64(4), Ledger: 0, Code: 1},
		{ID: a, Ledger: 7, Code: 1, UserData64: 42, Flags: AccountHistory},
		{ID: a, Ledger: 7, Code: 1, UserData64: 43, Flags: AccountHistory},
	})
	wantResults(t, "accounts", res, err,
		CreateResult{1, ResultIDMustNotBeZero}, CreateResult{2, ResultLedgerMustNotBeZero},
		CreateResult{3, ResultExists}, CreateResult{4, ResultExistsWithDifferentUserData64})

	transfers := []Transfer{
		{ID: base.Add64(100), DebitAccountID: a, CreditAccountID: b, Amount: U128(10), Ledger: 7, Code: 1},
		{ID: base.Add64(101), DebitAccountID: a, CreditAccountID: a, Amount: U128(10), Ledger: 7, Code: 1},
		{ID: base.Add64(102), DebitAccountID: b, CreditAccountID: a, Amount: U128(3), Ledger: 7, Code: 1, UserData32: 5},
		{ID: base.Add64(103), DebitAccountID: a, CreditAccountID: base.Add64(99), Amount: U128(1), Ledger: 7, Code: 1},
	}
	res, err = c.CreateTransfers(ctx, transfers)
	wantResults(t, "transfers", res, err,
		CreateResult{1, ResultAccountsMustBeDifferent}, CreateResult{3, ResultCreditAccountNotFound})

	accounts, err := c.LookupAccounts(ctx, []Uint128{b, base.Add64(98), a})
	if err != nil || len(accounts) != 2 || accounts[0].ID != b || accounts[1].ID != a {
		t.Fatalf("lookup accounts: %v %v", accounts, err)
	}
	if accounts[1].DebitsPosted != U128(10) || accounts[1].CreditsPosted != U128(3) ||
		accounts[0].CreditsPosted != U128(10) || accounts[0].DebitsPosted != U128(3) ||
		accounts[1].UserData64 != 42 || accounts[0].UserData128 != U128(9) || accounts[1].Timestamp == 0 {
		t.Fatalf("balances: %+v", accounts)
	}

	got, err := c.LookupTransfers(ctx, []Uint128{base.Add64(102), base.Add64(101), base.Add64(100)})
	if err != nil || len(got) != 2 || got[0].ID != base.Add64(102) || got[1].ID != base.Add64(100) {
		t.Fatalf("lookup transfers: %v %v", got, err)
	}
	if got[0].UserData32 != 5 || got[0].Amount != U128(3) || got[0].Timestamp == 0 {
		t.Fatalf("transfer %+v", got[0])
	}

	// get_account_transfers: both directions, newest first, paging by timestamp.
	all, err := c.GetAccountTransfers(ctx, AccountFilter{AccountID: a, Limit: 10, Flags: FilterDebits | FilterCredits})
	if err != nil || len(all) != 2 || all[0].ID != base.Add64(100) || all[1].ID != base.Add64(102) {
		t.Fatalf("account transfers: %v %v", all, err)
	}
	rev, err := c.GetAccountTransfers(ctx, AccountFilter{AccountID: a, Limit: 1, Flags: FilterDebits | FilterCredits | FilterReversed})
	if err != nil || len(rev) != 1 || rev[0].ID != base.Add64(102) {
		t.Fatalf("reversed: %v %v", rev, err)
	}
	page2, err := c.GetAccountTransfers(ctx, AccountFilter{AccountID: a, Limit: 10, Flags: FilterDebits | FilterCredits,
		TimestampMin: all[0].Timestamp + 1})
	if err != nil || len(page2) != 1 || page2[0].ID != base.Add64(102) {
		t.Fatalf("second page: %v %v", page2, err)
	}
	debits, err := c.GetAccountTransfers(ctx, AccountFilter{AccountID: a, Limit: 10, Flags: FilterDebits})
	if err != nil || len(debits) != 1 || debits[0].ID != base.Add64(100) {
		t.Fatalf("debits only: %v %v", debits, err)
	}

	// get_account_balances: a history account has one row per transfer.
	balances, err := c.GetAccountBalances(ctx, AccountFilter{AccountID: a, Limit: 10, Flags: FilterDebits | FilterCredits})
	if err != nil || len(balances) != 2 {
		t.Fatalf("balances: %v %v", balances, err)
	}
	if balances[0].DebitsPosted != U128(10) || !balances[0].CreditsPosted.IsZero() ||
		balances[1].CreditsPosted != U128(3) || balances[1].Timestamp != all[1].Timestamp {
		t.Fatalf("balance rows: %+v", balances)
	}
}

func TestDaemonTwoPhaseTransfers(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	payer, payee := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: payer, Ledger: 1, Code: 1}, Account{ID: payee, Ledger: 1, Code: 1})
	pend := func(id uint64, amount uint64) Transfer {
		return Transfer{ID: base.Add64(id), DebitAccountID: payer, CreditAccountID: payee, Amount: U128(amount),
			Ledger: 1, Code: 1, Flags: TransferPending}
	}
	res, err := c.CreateTransfers(ctx, []Transfer{pend(10, 100), pend(11, 50)})
	wantResults(t, "pending", res, err)
	acc := lookupOne(t, c, payer)
	if acc.DebitsPending != U128(150) || !acc.DebitsPosted.IsZero() {
		t.Fatalf("reserved: %+v", acc)
	}
	// Post 60 of the first (partial), void the second; a post may leave accounts at zero.
	res, err = c.CreateTransfers(ctx, []Transfer{
		{ID: base.Add64(20), PendingID: base.Add64(10), Amount: U128(60), Flags: TransferPostPendingTransfer},
		{ID: base.Add64(21), PendingID: base.Add64(11), Flags: TransferVoidPendingTransfer},
		{ID: base.Add64(22), PendingID: base.Add64(10), Flags: TransferVoidPendingTransfer},
		{ID: base.Add64(23), PendingID: base.Add64(99), Flags: TransferPostPendingTransfer},
	})
	wantResults(t, "post/void", res, err,
		CreateResult{2, ResultPendingTransferAlreadyPosted}, CreateResult{3, ResultPendingTransferNotFound})
	acc = lookupOne(t, c, payer)
	if !acc.DebitsPending.IsZero() || acc.DebitsPosted != U128(60) {
		t.Fatalf("after post and void: %+v", acc)
	}
	// Retrying the not-found post: its failure is remembered.
	res, err = c.CreateTransfers(ctx, []Transfer{
		{ID: base.Add64(23), PendingID: base.Add64(99), Flags: TransferPostPendingTransfer},
	})
	wantResults(t, "retry of a remembered failure", res, err, CreateResult{0, ResultIDAlreadyFailed})
}

func TestDaemonLinkedChains(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	x, y := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: x, Ledger: 1, Code: 1, Flags: AccountDebitsMustNotExceedCredits},
		Account{ID: y, Ledger: 1, Code: 1})
	tr := func(id uint64, from, to Uint128, amount uint64, flags TransferFlags) Transfer {
		return Transfer{ID: base.Add64(id), DebitAccountID: from, CreditAccountID: to, Amount: U128(amount),
			Ledger: 1, Code: 1, Flags: flags}
	}
	// y -> x 5, then x -> y 10 fails (x holds 5): the chain fails as a whole.
	res, err := c.CreateTransfers(ctx, []Transfer{
		tr(10, y, x, 5, TransferLinked), tr(11, x, y, 10, 0), tr(12, y, x, 1, 0)})
	wantResults(t, "failed chain", res, err,
		CreateResult{0, ResultLinkedEventFailed}, CreateResult{1, ResultExceedsCredits})
	if acc := lookupOne(t, c, x); !acc.CreditsPosted.Equal(U128(1)) {
		t.Fatalf("the failed chain left traces: %+v", acc)
	}
	// A chain left open at the end of the call fails as a whole.
	res, err = c.CreateTransfers(ctx, []Transfer{tr(20, y, x, 1, TransferLinked), tr(21, y, x, 1, TransferLinked)})
	if err != nil || len(res) != 2 || res[1].Result != ResultLinkedEventChainOpen {
		t.Fatalf("open chain: %v %v", resultsString(res), err)
	}
}

func TestDaemonAccountLimits(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	wallet, shop, plain := base.Add64(1), base.Add64(2), base.Add64(3)
	mustCreateAccounts(t, c,
		Account{ID: wallet, Ledger: 1, Code: 1, Flags: AccountDebitsMustNotExceedCredits},
		Account{ID: shop, Ledger: 1, Code: 1}, Account{ID: plain, Ledger: 1, Code: 1})
	res, err := c.SetAccountLimits(ctx, []AccountLimit{
		{AccountID: wallet, Limit: U128(50)}, {AccountID: plain, Limit: U128(5)}, {AccountID: base.Add64(9), Limit: U128(1)}})
	wantResults(t, "limits", res, err,
		CreateResult{1, ResultAccountHasNoBalanceLimitFlag}, CreateResult{2, ResultAccountNotFound})
	limits, err := c.LookupAccountLimits(ctx, []Uint128{wallet, base.Add64(9)})
	if err != nil || len(limits) != 1 || limits[0].AccountID != wallet || limits[0].Limit != U128(50) || limits[0].Timestamp == 0 {
		t.Fatalf("lookup limits: %+v %v", limits, err)
	}
	// An overdraft of 50: 50 passes, 1 more does not.
	res, err = c.CreateTransfers(ctx, []Transfer{
		{ID: base.Add64(10), DebitAccountID: wallet, CreditAccountID: shop, Amount: U128(50), Ledger: 1, Code: 1},
		{ID: base.Add64(11), DebitAccountID: wallet, CreditAccountID: shop, Amount: U128(1), Ledger: 1, Code: 1}})
	wantResults(t, "overdraft", res, err, CreateResult{1, ResultExceedsCredits})
	res, err = c.SetAccountLimits(ctx, []AccountLimit{{AccountID: wallet, Limit: U128(10)}})
	wantResults(t, "lower limit", res, err, CreateResult{0, ResultLimitBelowCurrentBalance})
}

func TestDaemonRetrySemantics(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	src, dst := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: src, Ledger: 1, Code: 1, Flags: AccountDebitsMustNotExceedCredits},
		Account{ID: dst, Ledger: 1, Code: 1})
	fund := Transfer{ID: base.Add64(10), DebitAccountID: dst, CreditAccountID: src, Amount: U128(5), Ledger: 1, Code: 1}
	res, err := c.CreateTransfers(ctx, []Transfer{fund})
	wantResults(t, "fund", res, err)
	// The same transfer again: exists, and nothing changes.
	res, err = c.CreateTransfers(ctx, []Transfer{fund})
	wantResults(t, "re-send", res, err, CreateResult{0, ResultExists})
	if acc := lookupOne(t, c, src); acc.CreditsPosted != U128(5) {
		t.Fatalf("a re-send changed the balance: %+v", acc)
	}
	changed := fund
	changed.Amount = U128(6)
	res, err = c.CreateTransfers(ctx, []Transfer{changed})
	wantResults(t, "same id, other amount", res, err, CreateResult{0, ResultExistsWithDifferentAmount})
	// A failure that could change later is remembered: the retry does not succeed behind
	// the caller's back even once the account could pay.
	tooMuch := Transfer{ID: base.Add64(11), DebitAccountID: src, CreditAccountID: dst, Amount: U128(8), Ledger: 1, Code: 1}
	res, err = c.CreateTransfers(ctx, []Transfer{tooMuch})
	wantResults(t, "too much", res, err, CreateResult{0, ResultExceedsCredits})
	more := Transfer{ID: base.Add64(12), DebitAccountID: dst, CreditAccountID: src, Amount: U128(5), Ledger: 1, Code: 1}
	res, err = c.CreateTransfers(ctx, []Transfer{more})
	wantResults(t, "more funds", res, err)
	res, err = c.CreateTransfers(ctx, []Transfer{tooMuch})
	wantResults(t, "retry of a remembered failure", res, err, CreateResult{0, ResultIDAlreadyFailed})
}

func TestDaemonInvalidRequestsAreStatusErrors(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	var se *StatusError
	cases := map[string]AccountFilter{
		"limit 0":          {AccountID: base, Limit: 0, Flags: FilterDebits},
		"no direction":     {AccountID: base, Limit: 1},
		"unknown flag":     {AccountID: base, Limit: 1, Flags: FilterDebits | 0x80},
		"zero account":     {Limit: 1, Flags: FilterDebits},
		"min above max":    {AccountID: base, Limit: 1, Flags: FilterDebits, TimestampMin: 10, TimestampMax: 5},
		"limit above 8190": {AccountID: base, Limit: EventsPerRequestMax + 1, Flags: FilterDebits},
	}
	for name, f := range cases {
		if _, err := c.GetAccountTransfers(ctx, f); !errors.As(err, &se) || se.Status != StatusInvalidBody || se.Operation != OpGetAccountTransfers {
			t.Errorf("%s: got %v, want invalid_body", name, err)
		}
	}
	if _, err := c.GetAccountBalances(ctx, cases["limit 0"]); !errors.As(err, &se) || se.Status != StatusInvalidBody {
		t.Errorf("balances with limit 0: got %v, want invalid_body", err)
	}
	if _, err := c.ChangeEvents(ctx, ChangeEventsRequest{Limit: 0}); !errors.As(err, &se) || se.Status != StatusInvalidBody {
		t.Errorf("change_events with limit 0: got %v, want invalid_body", err)
	}
	// The connection survives refused requests.
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDaemonChangeEvents(t *testing.T) {
	c := daemonClient(t)
	ctx := testCtx(t)
	base := freshIDs(t)
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, b := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: a, Ledger: 3, Code: 1}, Account{ID: b, Ledger: 3, Code: 1})
	tr := Transfer{ID: base.Add64(10), DebitAccountID: a, CreditAccountID: b, Amount: U128(4), Ledger: 3, Code: 1}
	res, err := c.CreateTransfers(ctx, []Transfer{tr})
	wantResults(t, "transfer", res, err)

	// Follow the stream from just after the status, a few events per page, until our
	// transfer shows up (other tests may be writing too: bounded by the head).
	pos := ChangeEventsRequest{FromSequence: before.Sequence + 1, Limit: 3}
	var created, moved int
	for page := 0; page < 10000; page++ {
		reply, err := c.ChangeEvents(ctx, pos)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range reply.Events {
			switch {
			case e.Kind == ChangeEventAccountCreated && (e.DebitAccount.ID == a || e.DebitAccount.ID == b):
				created++
			case e.Kind == ChangeEventTransferSinglePhase && e.Transfer.ID == tr.ID:
				moved++
				if e.DebitAccount.ID != a || e.DebitAccount.DebitsPosted != U128(4) ||
					e.CreditAccount.ID != b || e.CreditAccount.CreditsPosted != U128(4) || e.Timestamp == 0 {
					t.Fatalf("transfer event without the post-state: %+v", e)
				}
			}
		}
		if moved > 0 || (len(reply.Events) == 0 && reply.NextSequence > reply.HeadSequence) {
			break
		}
		pos.FromSequence, pos.FromIndex = reply.NextSequence, reply.NextIndex
	}
	if created != 2 || moved != 1 {
		t.Fatalf("saw %d account_created and %d transfer events, want 2 and 1", created, moved)
	}
}

// Many goroutines through one client: their calls are coalesced, and each checks its own
// results exactly (good and bad events mixed, indexes into its own slice).
func TestDaemonConcurrentCallersAreBatched(t *testing.T) {
	c := daemonClient(t)
	base := freshIDs(t)
	const goroutines, rounds = 500, 4
	shop, stock := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: shop, Ledger: 1, Code: 1},
		Account{ID: stock, Ledger: 1, Code: 1, Flags: AccountDebitsMustNotExceedCredits})
	res, err := c.CreateTransfers(testCtx(t), []Transfer{{ID: base.Add64(3), DebitAccountID: shop, CreditAccountID: stock,
		Amount: U128(1 << 40), Ledger: 1, Code: 1}})
	wantResults(t, "stock", res, err)
	before := c.Stats()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	fail := func(s string) {
		mu.Lock()
		failures = append(failures, s)
		mu.Unlock()
	}
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				n := 1 + (g+r)%3
				ts := make([]Transfer, n)
				for i := range ts {
					ts[i] = Transfer{ID: base.Add64(uint64(1000 + (g*rounds+r)*4 + i)), DebitAccountID: stock,
						CreditAccountID: shop, Amount: U128(1), Ledger: 1, Code: 1}
				}
				var want []CreateResult
				if (g+r)%5 == 0 { // one bad event, at a position of this caller's own
					bad := (g + r) % n
					ts[bad].CreditAccountID = stock
					want = []CreateResult{{uint32(bad), ResultAccountsMustBeDifferent}}
				}
				got, err := c.CreateTransfers(testCtx(t), ts)
				if err != nil {
					fail(err.Error())
					return
				}
				if len(got) != len(want) || (len(want) == 1 && got[0] != want[0]) {
					fail("goroutine results " + resultsString(got))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d callers failed, first: %s", len(failures), failures[0])
	}
	after := c.Stats()
	if requests := after.Requests - before.Requests; requests >= goroutines*rounds {
		t.Fatalf("%d calls took %d requests: not coalesced", goroutines*rounds, requests)
	}
	t.Logf("%d calls in %d requests", goroutines*rounds, after.Requests-before.Requests)
}

// Callers whose chains are open must fail alone (linked_event_chain_open): if their chain
// were joined with the next caller's events, it would be closed by them and succeed.
func TestDaemonOpenChainsDoNotJoinOtherCallers(t *testing.T) {
	c := daemonClient(t)
	base := freshIDs(t)
	x, y := base.Add64(1), base.Add64(2)
	mustCreateAccounts(t, c, Account{ID: x, Ledger: 1, Code: 1}, Account{ID: y, Ledger: 1, Code: 1})
	var wg sync.WaitGroup
	errs := make(chan string, 400)
	for g := 0; g < 400; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			open := g%2 == 0
			ts := []Transfer{{ID: base.Add64(uint64(100 + 2*g)), DebitAccountID: x, CreditAccountID: y, Amount: U128(1), Ledger: 1, Code: 1}}
			if open {
				ts[0].Flags = TransferLinked
			}
			res, err := c.CreateTransfers(testCtx(t), ts)
			switch {
			case err != nil:
				errs <- err.Error()
			case open && (len(res) != 1 || res[0].Result != ResultLinkedEventChainOpen):
				errs <- "an open chain did not fail alone: " + resultsString(res)
			case !open && len(res) != 0:
				errs <- "a closed call failed: " + resultsString(res)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if acc := lookupOne(t, c, x); acc.DebitsPosted != U128(200) {
		t.Fatalf("x debited %v, want 200 (the closed calls only)", acc.DebitsPosted)
	}
}
