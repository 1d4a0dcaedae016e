package ledgerd

import (
	"reflect"
	"testing"
)

// transferCall is a queued create_transfers call of n transfers; linkedLast opens a chain.
func transferCall(n int, linkedLast bool) *call {
	cl := newCall(OpCreateTransfers, 1<<62)
	cl.transfers = make([]Transfer, n)
	for i := range cl.transfers {
		cl.transfers[i] = Transfer{ID: U128(uint64(i + 1)), Amount: U128(1), Ledger: 1, Code: 1}
	}
	if linkedLast {
		cl.transfers[n-1].Flags = TransferLinked
	}
	cl.events = n
	cl.openChain = linkedLast
	return cl
}

func accountCall(n int) *call {
	cl := newCall(OpCreateAccounts, 1<<62)
	cl.accounts = make([]Account, n)
	cl.events = n
	return cl
}

func lookupCall() *call {
	cl := newCall(OpLookupAccounts, 1<<62)
	cl.body = encodeIDs([]Uint128{U128(1)})
	return cl
}

// requests drains the queue into requests and returns each request's call sizes.
func requests(q *callQueue, eventsMax int) [][]int {
	var out [][]int
	for q.len() > 0 {
		calls, events := q.take(eventsMax, nil)
		var sizes []int
		total := 0
		for _, cl := range calls {
			sizes = append(sizes, cl.events)
			total += cl.events
		}
		if total != events {
			panic("take miscounted events")
		}
		if len(calls) > 0 {
			out = append(out, sizes)
		}
	}
	return out
}

func TestTakeCoalescesUpToTheLimit(t *testing.T) {
	var q callQueue
	for _, n := range []int{3, 4, 2, 5, 1} {
		q.push(transferCall(n, false))
	}
	// 3+4+2 = 9 fits in 10; 5 does not fit after them; 5+1 fit together.
	if got, want := requests(&q, 10), [][]int{{3, 4, 2}, {5, 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
	if q.events != 0 {
		t.Fatalf("queue counts %d events when empty", q.events)
	}
}

func TestTakeNeverSplitsACall(t *testing.T) {
	var q callQueue
	q.push(transferCall(6, false))
	q.push(transferCall(6, false))
	if got, want := requests(&q, 10), [][]int{{6}, {6}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

// The trap: a call whose last event is linked (an open chain) must end its request, or its
// chain would extend into the next caller's events.
func TestTakeOpenChainEndsTheRequest(t *testing.T) {
	var q callQueue
	q.push(transferCall(2, false))
	q.push(transferCall(3, true)) // open chain
	q.push(transferCall(1, false))
	q.push(transferCall(2, true)) // open chain first in its request
	q.push(transferCall(1, false))
	got := requests(&q, 100)
	want := [][]int{{2, 3}, {1, 2}, {1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

func TestTakeSeparatesOperations(t *testing.T) {
	var q callQueue
	q.push(transferCall(1, false))
	q.push(transferCall(1, false))
	q.push(accountCall(2))
	q.push(accountCall(1))
	q.push(lookupCall())
	q.push(lookupCall())
	q.push(transferCall(1, false))
	var ops []Operation
	var sizes []int
	for q.len() > 0 {
		calls, _ := q.take(100, nil)
		ops = append(ops, calls[0].op)
		sizes = append(sizes, len(calls))
		for _, cl := range calls {
			if cl.op != calls[0].op {
				t.Fatalf("operations mixed in one request")
			}
		}
	}
	wantOps := []Operation{OpCreateTransfers, OpCreateAccounts, OpLookupAccounts, OpLookupAccounts, OpCreateTransfers}
	if !reflect.DeepEqual(ops, wantOps) || !reflect.DeepEqual(sizes, []int{2, 2, 1, 1, 1}) {
		t.Fatalf("ops %v sizes %v", ops, sizes)
	}
}

func TestTakeDropsAnsweredCalls(t *testing.T) {
	var q callQueue
	a, b, c := transferCall(1, false), transferCall(2, false), transferCall(3, false)
	q.push(a)
	q.push(b)
	q.push(c)
	a.abandon()
	c.answer(nil, nil, ErrTimeout)
	calls, events := q.take(100, nil)
	if len(calls) != 1 || calls[0] != b || events != 2 || q.len() != 0 {
		t.Fatalf("took %d calls, %d events, %d left", len(calls), events, q.len())
	}
}

// Results come back with request-wide indexes; each caller gets its own, re-based.
func TestSplitResultsMapsIndexes(t *testing.T) {
	calls := []*call{transferCall(2, false), transferCall(3, false), transferCall(1, false), transferCall(4, false)}
	req := &request{op: OpCreateTransfers, calls: calls}
	if !req.encode(1, 10) || req.events != 10 {
		t.Fatalf("encode: %d events", req.events)
	}
	results := []CreateResult{
		{1, ResultExists},              // call 0, its index 1
		{2, ResultExceedsCredits},      // call 1, index 0
		{4, ResultLinkedEventFailed},   // call 1, index 2
		{9, ResultAmountMustNotBeZero}, // call 3, index 3
	}
	splitResults(req.calls, results)
	want := [][]CreateResult{
		{{1, ResultExists}},
		{{0, ResultExceedsCredits}, {2, ResultLinkedEventFailed}},
		nil,
		{{3, ResultAmountMustNotBeZero}},
	}
	for i, cl := range calls {
		<-cl.done
		if !reflect.DeepEqual(cl.results, want[i]) || cl.err != nil {
			t.Errorf("call %d got %v %v, want %v", i, cl.results, cl.err, want[i])
		}
	}
}

// encode copies records straight into the frame, leaves out calls answered meanwhile, and
// numbers the remaining events from 0.
func TestEncodeSkipsAnsweredCalls(t *testing.T) {
	a, b, c := transferCall(2, false), transferCall(1, false), transferCall(3, false)
	b.abandon()
	req := &request{op: OpCreateTransfers, calls: []*call{a, b, c}}
	if !req.encode(42, 6) {
		t.Fatal("encode dropped everything")
	}
	if len(req.calls) != 2 || req.events != 5 || a.first != 0 || c.first != 2 {
		t.Fatalf("calls %d events %d firsts %d %d", len(req.calls), req.events, a.first, c.first)
	}
	h, body, err := decodeFrame(req.frame)
	if err != nil || h.requestID != 42 || len(body) != 5*transferSize {
		t.Fatalf("frame: %+v %d %v", h, len(body), err)
	}
	if got := getTransfer(body[2*transferSize:]); got != c.transfers[0] {
		t.Fatalf("third record is %+v, want call c's first", got)
	}
	all := &request{op: OpCreateTransfers, calls: []*call{b}}
	if all.encode(43, 1) {
		t.Fatal("a request of abandoned calls only was encoded")
	}
}
