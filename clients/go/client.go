package ledgerd

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Client. The zero value is usable: no token, 30 s per call.
type Options struct {
	// Token is the daemon's auth token, if it is started with one (at most HelloTokenMax bytes).
	Token string
	// RequestTimeout bounds a call whose context has no deadline, reconnections and retries
	// included (default 30 s). Such a call then fails with ErrTimeout.
	RequestTimeout time.Duration
	// DialTimeout bounds one connection attempt, hello included (default 5 s).
	DialTimeout time.Duration
	// MaxInFlight caps the requests in flight on the connection (default and upper bound:
	// the daemon's requests_in_flight_max from its hello).
	MaxInFlight int
	// PartialInFlight is how many requests may be in flight before the client stops sending
	// requests that are not full and lets the next one grow instead (default 1: while one
	// request is on its way, the next accumulates every call made meanwhile). Higher sends
	// smaller requests sooner; under load, 1 measured best (README, Benchmark).
	PartialInFlight int
}

const (
	defaultRequestTimeout  = 30 * time.Second
	defaultDialTimeout     = 5 * time.Second
	defaultPartialInFlight = 1
)

// Client is a connection to ledgerd, shared by any number of goroutines. Every method takes a
// context: its deadline (or Options.RequestTimeout) bounds the call, reconnections included.
// Concurrent create calls are coalesced into shared requests; see the package documentation.
type Client struct {
	addr   string
	opts   Options
	ctx    context.Context // done when the client closes; bounds reconnections
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// wake tells the parked writer there is work (capacity 1: a pending wake is enough).
	wake chan struct{}

	// start is the origin of the client's clock; coarseNow is sinceStart as of the janitor's
	// last tick, which is precise enough for RequestTimeout deadlines and saves a clock read
	// per call.
	start     time.Time
	coarseNow atomic.Int64
	// eventsMaxAtomic mirrors eventsMax for the callers' checks, without the lock.
	eventsMaxAtomic atomic.Int64

	mu              sync.Mutex
	queue           callQueue
	inFlight        map[uint64]*request // sent, not answered, by request id
	retry           []*request          // to send again as they are, first first
	freeRequests    []*request          // reused requests and their frame buffers
	nextRequestID   uint64
	hello           HelloReply
	eventsMax       int // events per request: the smaller of the daemon's and the protocol's
	window          int // requests in flight at most
	partialInFlight int
	conn            net.Conn // the current connection, closed by Close to unblock the writer
	gen             uint64   // connection generation: a stale reader delivers nothing
	broken          bool     // the current connection failed: the writer reconnects
	writerWaiting   bool
	closed          bool

	stats struct {
		requests, events, resent, reconnects atomic.Uint64
	}
}

// Stats are counters of a Client's traffic since Dial.
type Stats struct {
	Requests   uint64 // requests written (re-sends included)
	Events     uint64 // create events written (re-sends included)
	Resent     uint64 // requests sent again after a broken connection or a busy answer
	Reconnects uint64 // connections opened after the first
}

// Dial connects to the daemon at addr ("host:port") and says hello. A daemon that refuses
// the hello gives a *StatusError (e.g. StatusAuthFailed for a wrong token). ctx bounds the
// connection attempt only.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if len(opts.Token) > HelloTokenMax {
		return nil, protocolErrorf("token of %d bytes, at most %d", len(opts.Token), HelloTokenMax)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = defaultRequestTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.PartialInFlight <= 0 {
		opts.PartialInFlight = defaultPartialInFlight
	}
	c := &Client{
		addr:          addr,
		opts:          opts,
		wake:          make(chan struct{}, 1),
		inFlight:      make(map[uint64]*request),
		nextRequestID: 1,
		start:         time.Now(),
	}
	conn, hello, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.setHelloLocked(hello)
	c.conn = conn
	c.wg.Add(3)
	go c.writeLoop(conn)
	go c.readLoop(conn, c.gen)
	go c.janitor()
	return c, nil
}

// setHelloLocked takes the daemon's limits from a hello reply.
func (c *Client) setHelloLocked(h HelloReply) {
	c.hello = h
	c.eventsMax = EventsPerRequestMax
	if n := int(h.EventsPerRequestMax); n > 0 && n < c.eventsMax {
		c.eventsMax = n
	}
	c.eventsMaxAtomic.Store(int64(c.eventsMax))
	c.window = int(h.RequestsInFlightMax)
	if c.window < 1 {
		c.window = 1
	}
	if c.opts.MaxInFlight > 0 && c.opts.MaxInFlight < c.window {
		c.window = c.opts.MaxInFlight
	}
	c.partialInFlight = c.opts.PartialInFlight
	if c.partialInFlight > c.window {
		c.partialInFlight = c.window
	}
}

// Close stops the client: calls still waiting fail with ErrClosed. It waits for the
// client's goroutines to end.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.conn != nil {
		c.conn.Close() // unblocks a writer stuck in a write
	}
	c.wakeWriterLocked()
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Hello returns the daemon's latest hello reply: its protocol version and limits.
func (c *Client) Hello() HelloReply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

// Stats returns the client's traffic counters.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:   c.stats.requests.Load(),
		Events:     c.stats.events.Load(),
		Resent:     c.stats.resent.Load(),
		Reconnects: c.stats.reconnects.Load(),
	}
}

// CreateAccounts creates accounts and returns this call's failed events only (empty: all
// created), with Index into accounts. Concurrent calls share requests; a call is never split,
// so it holds at most Hello().EventsPerRequestMax accounts. On a retry after a lost
// connection, ResultExists means the account was created by the lost attempt.
func (c *Client) CreateAccounts(ctx context.Context, accounts []Account) ([]CreateResult, error) {
	cl, err := c.newCreateCall(ctx, OpCreateAccounts, len(accounts))
	if err != nil {
		return nil, err
	}
	cl.accounts = accounts
	cl.openChain = accounts[len(accounts)-1].Flags&AccountLinked != 0
	return c.runCreate(ctx, cl)
}

// CreateTransfers creates transfers and returns this call's failed events only (empty: all
// applied), with Index into transfers. Concurrent calls share requests; a call is never
// split. ResultExists on a transfer whose id this caller chose fresh means a lost attempt
// (re-sent by the client after a reconnect) applied it: success. ResultIDAlreadyFailed means
// the first attempt failed for a reason that could have changed since, and stays failed.
func (c *Client) CreateTransfers(ctx context.Context, transfers []Transfer) ([]CreateResult, error) {
	cl, err := c.newCreateCall(ctx, OpCreateTransfers, len(transfers))
	if err != nil {
		return nil, err
	}
	cl.transfers = transfers
	cl.openChain = transfers[len(transfers)-1].Flags&TransferLinked != 0
	return c.runCreate(ctx, cl)
}

// SetAccountLimits sets accounts' overdraft or credit limits and returns the failed ones
// only, with Index into limits. Concurrent calls share requests.
func (c *Client) SetAccountLimits(ctx context.Context, limits []AccountLimit) ([]CreateResult, error) {
	cl, err := c.newCreateCall(ctx, OpSetAccountLimits, len(limits))
	if err != nil {
		return nil, err
	}
	cl.limits = limits
	return c.runCreate(ctx, cl)
}

func (c *Client) newCreateCall(ctx context.Context, op Operation, n int) (*call, error) {
	if n == 0 {
		return nil, &StatusError{Operation: op, Status: StatusEmptyBatch, Detail: "no events"}
	}
	if err := c.checkCount(op, n); err != nil {
		return nil, err
	}
	cl := newCall(op, c.deadline(ctx))
	cl.events = n
	return cl, nil
}

func (c *Client) checkCount(op Operation, n int) error {
	if max := int(c.eventsMaxAtomic.Load()); n > max {
		return &StatusError{Operation: op, Status: StatusTooManyEvents,
			Detail: fmt.Sprintf("%d records in one call, at most %d (calls are never split)", n, max)}
	}
	return nil
}

func (c *Client) runCreate(ctx context.Context, cl *call) ([]CreateResult, error) {
	err := c.run(ctx, cl)
	results := cl.results
	cl.release()
	if err != nil {
		return nil, err
	}
	return results, nil
}

// sinceStart reads the client's clock.
func (c *Client) sinceStart() int64 { return int64(time.Since(c.start)) }

// deadline is the call's deadline on the client's clock: its context's, else
// RequestTimeout from now.
func (c *Client) deadline(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return int64(d.Sub(c.start))
	}
	return c.coarseNow.Load() + int64(c.opts.RequestTimeout)
}

// run queues a call and waits for its answer or the end of ctx.
func (c *Client) run(ctx context.Context, cl *call) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.queue.push(cl)
	if c.writerHasWorkLocked() {
		c.wakeWriterLocked()
	}
	c.mu.Unlock()

	done := ctx.Done()
	if done == nil {
		<-cl.done // the janitor answers it at the deadline
		return cl.err
	}
	select {
	case <-cl.done:
		return cl.err
	case <-done:
		if cl.abandon() {
			// If the call was sent, its outcome is unknown: calling again with the same
			// events (same ids) is safe and tells it.
			return ctx.Err()
		}
		<-cl.done
		return cl.err
	}
}

// call runs a one-request operation with an encoded body and returns the reply body.
func (c *Client) call(ctx context.Context, op Operation, body []byte) ([]byte, error) {
	cl := newCall(op, c.deadline(ctx))
	cl.body = body
	err := c.run(ctx, cl)
	reply := cl.reply
	cl.release()
	if err != nil {
		return nil, err
	}
	return reply, nil
}

func (c *Client) lookup(ctx context.Context, op Operation, ids []Uint128) ([]byte, error) {
	if len(ids) == 0 {
		return nil, &StatusError{Operation: op, Status: StatusEmptyBatch, Detail: "no ids"}
	}
	if err := c.checkCount(op, len(ids)); err != nil {
		return nil, err
	}
	return c.call(ctx, op, encodeIDs(ids))
}

// encodeIDs is the body of a lookup: 16 bytes per id.
func encodeIDs(ids []Uint128) []byte {
	body := make([]byte, len(ids)*idSize)
	for i, id := range ids {
		putU128(body[i*idSize:], id)
	}
	return body
}

// LookupAccounts returns the accounts that exist among ids, in request order; ids that do
// not exist are absent.
func (c *Client) LookupAccounts(ctx context.Context, ids []Uint128) ([]Account, error) {
	body, err := c.lookup(ctx, OpLookupAccounts, ids)
	if err != nil {
		return nil, err
	}
	return decodeRecords(body, accountSize, len(ids), getAccount)
}

// LookupTransfers returns the transfers that exist among ids, in request order.
func (c *Client) LookupTransfers(ctx context.Context, ids []Uint128) ([]Transfer, error) {
	body, err := c.lookup(ctx, OpLookupTransfers, ids)
	if err != nil {
		return nil, err
	}
	return decodeRecords(body, transferSize, len(ids), getTransfer)
}

// LookupAccountLimits returns the limits of the accounts among accountIDs that exist, in
// request order.
func (c *Client) LookupAccountLimits(ctx context.Context, accountIDs []Uint128) ([]AccountLimit, error) {
	body, err := c.lookup(ctx, OpLookupAccountLimits, accountIDs)
	if err != nil {
		return nil, err
	}
	return decodeRecords(body, accountLimitSize, len(accountIDs), getAccountLimit)
}

// GetAccountTransfers returns up to filter.Limit transfers of an account. An invalid filter
// is refused with a *StatusError of StatusInvalidBody.
func (c *Client) GetAccountTransfers(ctx context.Context, filter AccountFilter) ([]Transfer, error) {
	body := make([]byte, accountFilterSize)
	putAccountFilter(body, &filter)
	reply, err := c.call(ctx, OpGetAccountTransfers, body)
	if err != nil {
		return nil, err
	}
	return decodeRecords(reply, transferSize, int(filter.Limit), getTransfer)
}

// GetAccountBalances returns up to filter.Limit balance rows of a history account.
func (c *Client) GetAccountBalances(ctx context.Context, filter AccountFilter) ([]AccountBalance, error) {
	body := make([]byte, accountFilterSize)
	putAccountFilter(body, &filter)
	reply, err := c.call(ctx, OpGetAccountBalances, body)
	if err != nil {
		return nil, err
	}
	return decodeRecords(reply, accountBalanceSize, int(filter.Limit), getAccountBalance)
}

// ChangeEvents returns up to req.Limit change events from (req.FromSequence, req.FromIndex).
func (c *Client) ChangeEvents(ctx context.Context, req ChangeEventsRequest) (ChangeEventsReply, error) {
	body := make([]byte, changeEventsRequestSize)
	putChangeEventsRequest(body, &req)
	reply, err := c.call(ctx, OpChangeEvents, body)
	if err != nil {
		return ChangeEventsReply{}, err
	}
	r, err := decodeChangeEventsReply(reply)
	if err == nil && len(r.Events) > int(req.Limit) {
		err = protocolErrorf("change_events: %d events, at most %d asked", len(r.Events), req.Limit)
	}
	return r, err
}

// Status returns the daemon's counters and state hash.
func (c *Client) Status(ctx context.Context) (StatusReply, error) {
	reply, err := c.call(ctx, OpStatus, []byte{})
	if err != nil {
		return StatusReply{}, err
	}
	return decodeStatusReply(reply)
}

// newRequestLocked returns a request from the free list, or a new one.
func (c *Client) newRequestLocked() *request {
	if n := len(c.freeRequests); n > 0 {
		req := c.freeRequests[n-1]
		c.freeRequests[n-1] = nil
		c.freeRequests = c.freeRequests[:n-1]
		return req
	}
	return &request{}
}

// freeRequestLocked keeps a finished request's buffers for reuse (a few: each may hold 1 MiB).
func (c *Client) freeRequestLocked(req *request) {
	for i := range req.calls {
		req.calls[i] = nil
	}
	req.calls = req.calls[:0]
	req.retries = 0
	if len(c.freeRequests) < 2*RequestsInFlightMaxDefault {
		c.freeRequests = append(c.freeRequests, req)
	}
}
