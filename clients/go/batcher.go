package ledgerd

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// A call is one caller's operation, from the moment it is queued until the caller has its
// answer. Create calls of the same operation from different goroutines share requests; every
// other call is a request of its own.
//
// Ownership: the caller's record slice is read only by the writer goroutine, only while the
// call's state is callEncoding, and a caller never returns while it is: so the slice is never
// read after the call returned, even when the caller gives up early.
type call struct {
	op        Operation
	accounts  []Account      // OpCreateAccounts
	transfers []Transfer     // OpCreateTransfers
	limits    []AccountLimit // OpSetAccountLimits
	body      []byte         // any other operation: the encoded request body
	events    int            // records of a create call; 0 for any other call
	openChain bool           // the last event is linked: nothing may follow it in a request
	deadline  int64          // nanoseconds on the client's clock (Client.sinceStart)

	// first is the index of the call's first event in the request that carries it.
	first int

	state uint32 // callWaiting, callEncoding or callAnswered; atomic

	// Set once by answer, before done is signalled.
	results []CreateResult
	reply   []byte
	err     error
	// reusable: the answer came with the request's reply, after which nothing refers to the
	// call any more, so its caller may put it back in callPool. Calls answered otherwise
	// (timeout, abandoned, closed) may still be in a request and are left to the GC.
	reusable bool
	done     chan struct{}
}

// callPool keeps calls and their channels between calls: with thousands of goroutines each
// making a call per round trip, that is most of what the client would allocate.
var callPool = sync.Pool{New: func() interface{} { return &call{done: make(chan struct{}, 1)} }}

const (
	callWaiting  uint32 = iota // queued or in flight, not answered
	callEncoding               // the writer is copying its records into a frame
	callAnswered               // answered, or abandoned by its caller: never touched again
)

func newCall(op Operation, deadline int64) *call {
	cl := callPool.Get().(*call)
	cl.op, cl.deadline = op, deadline
	return cl
}

// release puts a call answered with its reply back in the pool.
func (cl *call) release() {
	if cl.reusable {
		*cl = call{done: cl.done} // done is empty: its caller received the answer
		callPool.Put(cl)
	}
}

// answer hands the call its outcome, once: later answers (a timeout racing a reply, a reply
// to a request re-sent after a timeout) are dropped. It never blocks.
func (cl *call) answer(results []CreateResult, reply []byte, err error) {
	cl.answerWith(results, reply, err, false)
}

// answerFinal is answer from the reader, for a request that is then forgotten.
func (cl *call) answerFinal(results []CreateResult, reply []byte, err error) {
	cl.answerWith(results, reply, err, true)
}

func (cl *call) answerWith(results []CreateResult, reply []byte, err error, reusable bool) {
	if !atomic.CompareAndSwapUint32(&cl.state, callWaiting, callAnswered) {
		return
	}
	cl.results, cl.reply, cl.err, cl.reusable = results, reply, err, reusable
	cl.done <- struct{}{}
}

func (cl *call) answered() bool { return atomic.LoadUint32(&cl.state) == callAnswered }

// abandon is how a caller whose context ended gives up. It reports false when an answer won
// the race: the caller must then take it from done.
func (cl *call) abandon() bool {
	for {
		if atomic.CompareAndSwapUint32(&cl.state, callWaiting, callAnswered) {
			return true
		}
		if atomic.LoadUint32(&cl.state) == callAnswered {
			return false
		}
		// callEncoding: the writer is copying this call's records, for a few microseconds.
		// Returning now would let the caller reuse the slice while it is read.
		runtime.Gosched()
	}
}

// callQueue is the FIFO of calls not yet in a request. Guarded by Client.mu.
type callQueue struct {
	calls  []*call
	head   int
	events int // events of the queued create calls (answered ones included until taken)
}

func (q *callQueue) len() int { return len(q.calls) - q.head }

func (q *callQueue) push(cl *call) {
	if q.head > 0 && q.head == len(q.calls) {
		// Empty: reuse the array from its start.
		q.calls, q.head = q.calls[:0], 0
	} else if q.head >= 1024 && q.head*2 >= len(q.calls) {
		n := copy(q.calls, q.calls[q.head:])
		for i := n; i < len(q.calls); i++ {
			q.calls[i] = nil
		}
		q.calls, q.head = q.calls[:n], 0
	}
	q.calls = append(q.calls, cl)
	q.events += cl.events
}

func (q *callQueue) front() *call { return q.calls[q.head] }

func (q *callQueue) pop() *call {
	cl := q.calls[q.head]
	q.calls[q.head] = nil
	q.head++
	q.events -= cl.events
	return cl
}

// each calls f on every queued call.
func (q *callQueue) each(f func(*call)) {
	for _, cl := range q.calls[q.head:] {
		f(cl)
	}
}

// take moves the calls of the next request from the queue into calls (reused) and returns
// them with their total events. The rules (docs/protocol.md and the batching contract):
//   - calls are taken in queue order, and answered (abandoned, timed out) ones are dropped;
//   - only create calls of one operation share a request, up to eventsMax events: a call is
//     never split, and a call that does not fit waits for the next request;
//   - a call whose last event is linked (an open chain) ends its request, so its chain can
//     never extend into the next caller's events (the daemon fails that call as a whole with
//     linked_event_chain_open, and only that call).
func (q *callQueue) take(eventsMax int, calls []*call) ([]*call, int) {
	calls = calls[:0]
	for q.len() > 0 && q.front().answered() {
		q.pop()
	}
	if q.len() == 0 {
		return calls, 0
	}
	first := q.pop()
	calls = append(calls, first)
	events := first.events
	if first.events == 0 || first.openChain {
		return calls, events
	}
	for q.len() > 0 {
		next := q.front()
		if next.answered() {
			q.pop()
			continue
		}
		if next.op != first.op || events+next.events > eventsMax {
			break
		}
		calls = append(calls, q.pop())
		events += next.events
		if next.openChain {
			break
		}
	}
	return calls, events
}

// A request is one frame sent (or to be sent again) with the calls it carries, in order.
type request struct {
	id     uint64
	op     Operation
	calls  []*call
	events int    // create requests: events in the frame; 0 otherwise
	frame  []byte // header and body, ready to write
	// retries counts busy / journal_unavailable answers, for the back-off.
	retries int
}

// live reports whether any caller still waits for this request.
func (r *request) live() bool {
	for _, cl := range r.calls {
		if !cl.answered() {
			return true
		}
	}
	return false
}

// encode builds the request's frame from its calls, straight from the callers' records into
// the frame buffer. Calls answered meanwhile are left out; it reports false when none is left.
func (r *request) encode(requestID uint64, events int) bool {
	size := 0
	switch r.op {
	case OpCreateAccounts, OpCreateTransfers:
		size = accountSize
	case OpSetAccountLimits:
		size = accountLimitSize
	}
	need := HeaderSize + events*size
	if size == 0 {
		need = HeaderSize + len(r.calls[0].body)
	}
	if cap(r.frame) < need {
		r.frame = make([]byte, 0, roundUpFrame(need))
	}
	buf := beginFrame(r.frame)[:need]
	off := HeaderSize
	kept := r.calls[:0]
	r.events = 0
	for _, cl := range r.calls {
		if !atomic.CompareAndSwapUint32(&cl.state, callWaiting, callEncoding) {
			continue // answered: its caller is gone
		}
		switch r.op {
		case OpCreateAccounts:
			for i := range cl.accounts {
				putAccount(buf[off:], &cl.accounts[i])
				off += accountSize
			}
		case OpCreateTransfers:
			for i := range cl.transfers {
				putTransfer(buf[off:], &cl.transfers[i])
				off += transferSize
			}
		case OpSetAccountLimits:
			for i := range cl.limits {
				putAccountLimit(buf[off:], &cl.limits[i])
				off += accountLimitSize
			}
		default:
			off += copy(buf[off:], cl.body)
		}
		atomic.StoreUint32(&cl.state, callWaiting)
		cl.first = r.events
		r.events += cl.events
		kept = append(kept, cl)
	}
	for i := len(kept); i < len(r.calls); i++ {
		r.calls[i] = nil
	}
	r.calls = kept
	if len(kept) == 0 {
		return false
	}
	r.frame = buf[:off]
	finishFrame(r.frame, r.op, StatusOK, requestID)
	return true
}

// roundUpFrame sizes a frame buffer so that a few sizes serve every request.
func roundUpFrame(n int) int {
	c := 16 << 10
	for c < n {
		c *= 2
	}
	if c > HeaderSize+FrameBodyMax {
		c = HeaderSize + FrameBodyMax
	}
	if c < n {
		c = n
	}
	return c
}

// splitResults hands each call of a create request its own failed events, with indexes
// relative to its own records. results are the reply's, in ascending index.
func splitResults(calls []*call, results []CreateResult) {
	j := 0
	for _, cl := range calls {
		end := cl.first + cl.events
		k := j
		for k < len(results) && int(results[k].Index) < end {
			k++
		}
		var own []CreateResult
		if k > j {
			// The only allocation per caller, and only for callers with failed events.
			own = make([]CreateResult, k-j)
			for i := range own {
				own[i] = CreateResult{Index: results[j+i].Index - uint32(cl.first), Result: results[j+i].Result}
			}
		}
		j = k
		cl.answerFinal(own, nil, nil)
	}
}
