package ledgerd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sort"
	"time"
)

// The connection machinery: one writer goroutine for the life of the Client, which builds
// requests from the queue, writes them and reconnects; one reader goroutine per connection,
// which matches replies to requests by request id and answers their callers; one janitor
// that answers calls whose deadline passed.
//
// Everything shared is guarded by Client.mu, which is held only for queue and map updates,
// never during I/O or encoding.

const (
	reconnectBackoffMin = 5 * time.Millisecond
	reconnectBackoffMax = 500 * time.Millisecond
	busyBackoffMin      = 2 * time.Millisecond
	busyBackoffMax      = 200 * time.Millisecond
	janitorPeriod       = 20 * time.Millisecond
	readBufferSize      = 256 << 10
)

// writeLoop is the writer goroutine.
func (c *Client) writeLoop(conn net.Conn) {
	defer c.wg.Done()
	backoff := reconnectBackoffMin
	for {
		c.mu.Lock()
		if c.closed {
			c.failAllLocked(ErrClosed)
			c.mu.Unlock()
			if conn != nil {
				conn.Close()
			}
			return
		}
		if c.broken || conn == nil {
			if conn != nil {
				conn.Close()
				conn = nil
				c.conn = nil
			}
			c.requeueInFlightLocked()
			c.pruneAnsweredLocked()
			if c.queue.len() == 0 && len(c.retry) == 0 {
				// Reconnect only when there is something to send.
				c.writerWaiting = true
				c.mu.Unlock()
				c.waitForWork(0)
				continue
			}
			c.mu.Unlock()
			newConn, hello, err := c.connect(c.ctx)
			if err != nil {
				var se *StatusError
				if errors.As(err, &se) && !se.Status.Retryable() {
					// The daemon refuses this client (auth_failed, ...): waiting cannot help.
					// Fail what waits; the next call tries again.
					c.mu.Lock()
					c.failAllLocked(err)
					c.mu.Unlock()
					continue
				}
				c.waitForWork(backoff)
				backoff *= 2
				if backoff > reconnectBackoffMax {
					backoff = reconnectBackoffMax
				}
				continue
			}
			backoff = reconnectBackoffMin
			c.stats.reconnects.Add(1)
			c.mu.Lock()
			c.setHelloLocked(hello)
			c.broken = false
			c.conn = newConn
			gen := c.gen
			closed := c.closed
			c.mu.Unlock()
			if closed {
				newConn.Close()
				continue
			}
			conn = newConn
			c.wg.Add(1)
			go c.readLoop(conn, gen)
			continue
		}

		// Pick the next request: one to send again first, else new calls from the queue.
		var req *request
		fresh := false
		if len(c.inFlight) < c.window {
			for req == nil && len(c.retry) > 0 {
				req = c.retry[0]
				c.retry[0] = nil
				c.retry = c.retry[1:]
				if !req.live() {
					c.freeRequestLocked(req)
					req = nil
				}
			}
			// A request that is not full waits while partialInFlight requests are in
			// flight: meanwhile more calls queue up, so batches grow with the load.
			if req == nil && c.queue.len() > 0 &&
				(len(c.inFlight) < c.partialInFlight || c.queue.events >= c.eventsMax) {
				req = c.newRequestLocked()
				req.calls, req.events = c.queue.take(c.eventsMax, req.calls)
				if len(req.calls) > 0 {
					req.op = req.calls[0].op
					fresh = true
				} else {
					c.freeRequestLocked(req)
					req = nil
				}
			}
		}
		if req == nil {
			c.writerWaiting = true
			c.mu.Unlock()
			c.waitForWork(0)
			continue
		}
		req.id = c.nextRequestID
		c.nextRequestID++
		c.mu.Unlock()

		if fresh {
			if !req.encode(req.id, req.events) {
				c.mu.Lock()
				c.freeRequestLocked(req)
				c.mu.Unlock()
				continue
			}
		} else {
			setRequestID(req.frame, req.id)
			c.stats.resent.Add(1)
		}
		c.mu.Lock()
		c.inFlight[req.id] = req
		c.mu.Unlock()
		c.stats.requests.Add(1)
		c.stats.events.Add(uint64(req.events))
		if _, err := conn.Write(req.frame); err != nil {
			c.mu.Lock()
			c.broken = true
			c.mu.Unlock()
		}
	}
}

// waitForWork parks the writer until a call is queued, a reply frees a slot, the client
// closes, or (d > 0) d passes.
func (c *Client) waitForWork(d time.Duration) {
	if d <= 0 {
		// Close wakes the writer too, so the wake channel alone is enough here; a plain
		// receive is cheaper than a select, and the writer parks once per request.
		<-c.wake
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.wake:
	case <-c.ctx.Done():
	case <-t.C:
	}
}

// writerHasWorkLocked reports whether a newly queued call gives the writer something to do
// now. While a partial request is in flight the answer is mostly no: the call waits for the
// next request, and waking the writer for every call would cost a context switch per call.
func (c *Client) writerHasWorkLocked() bool {
	if c.broken || c.conn == nil {
		return true // to reconnect
	}
	if len(c.inFlight) >= c.window {
		return false
	}
	return len(c.retry) > 0 || len(c.inFlight) < c.partialInFlight || c.queue.events >= c.eventsMax
}

// wakeWriterLocked wakes the writer if it is parked.
func (c *Client) wakeWriterLocked() {
	if c.writerWaiting {
		c.writerWaiting = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// requeueInFlightLocked moves the requests of a broken connection to the retry list, oldest
// first: their outcome is unknown, and sending the same events again is safe (an event the
// lost attempt applied answers exists). It also retires the connection's reader.
func (c *Client) requeueInFlightLocked() {
	c.gen++ // the old reader, if still running, delivers nothing more
	if len(c.inFlight) == 0 {
		return
	}
	lost := make([]*request, 0, len(c.inFlight))
	for id, req := range c.inFlight {
		lost = append(lost, req)
		delete(c.inFlight, id)
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i].id < lost[j].id })
	c.retry = append(lost, c.retry...)
}

// pruneAnsweredLocked drops calls and re-sends no caller waits for any more (timed out or
// abandoned while the connection was down), so that the writer does not reconnect for them.
func (c *Client) pruneAnsweredLocked() {
	q := c.queue.calls[c.queue.head:]
	kept := q[:0]
	for _, cl := range q {
		if cl.answered() {
			c.queue.events -= cl.events
		} else {
			kept = append(kept, cl)
		}
	}
	for i := len(kept); i < len(q); i++ {
		q[i] = nil
	}
	c.queue.calls = c.queue.calls[:c.queue.head+len(kept)]
	live := c.retry[:0]
	for _, req := range c.retry {
		if req.live() {
			live = append(live, req)
		} else {
			c.freeRequestLocked(req)
		}
	}
	for i := len(live); i < len(c.retry); i++ {
		c.retry[i] = nil
	}
	c.retry = live
}

// failAllLocked answers every queued, in-flight and to-be-resent call with err.
func (c *Client) failAllLocked(err error) {
	c.queue.each(func(cl *call) { cl.answer(nil, nil, err) })
	for c.queue.len() > 0 {
		c.queue.pop()
	}
	for id, req := range c.inFlight {
		for _, cl := range req.calls {
			cl.answer(nil, nil, err)
		}
		delete(c.inFlight, id)
	}
	for _, req := range c.retry {
		for _, cl := range req.calls {
			cl.answer(nil, nil, err)
		}
	}
	c.retry = c.retry[:0]
}

// readLoop is the reader goroutine of the connection of generation gen.
func (c *Client) readLoop(conn net.Conn, gen uint64) {
	defer c.wg.Done()
	br := bufio.NewReaderSize(conn, readBufferSize)
	var head [HeaderSize]byte
	body := make([]byte, 0, readBufferSize)
	var results []CreateResult
	for {
		h, b, err := readFrame(br, head[:], body)
		if b != nil {
			body = b[:0]
		}
		c.mu.Lock()
		if c.gen != gen || c.closed {
			c.mu.Unlock()
			return
		}
		if err != nil {
			c.brokenLocked()
			c.mu.Unlock()
			conn.Close()
			return
		}
		req := c.inFlight[h.requestID]
		if req == nil || (h.status == StatusOK && h.operation != req.op) {
			// A reply to no request: the stream cannot be trusted any more.
			c.brokenLocked()
			c.mu.Unlock()
			conn.Close()
			return
		}
		delete(c.inFlight, h.requestID)
		c.wakeWriterLocked()

		switch {
		case h.status == StatusOK:
			c.mu.Unlock()
			results = c.deliver(req, b, results)
			c.mu.Lock()
			c.freeRequestLocked(req)
			c.mu.Unlock()
		case h.status == StatusBusy || h.status == StatusJournalUnavailable:
			// Not applied: send the same frame again after a pause.
			c.mu.Unlock()
			c.retryLater(req)
		case h.status.Retryable():
			// shutting_down: not applied, and the daemon closes the connection; send it
			// again on the next one.
			c.retry = append([]*request{req}, c.retry...)
			c.brokenLocked()
			c.mu.Unlock()
			conn.Close()
			return
		default:
			c.mu.Unlock()
			err := replyError(req.op, h.status, b)
			for _, cl := range req.calls {
				cl.answerFinal(nil, nil, err)
			}
			if h.status.Closes() {
				c.mu.Lock()
				if c.gen == gen {
					c.brokenLocked()
				}
				c.freeRequestLocked(req)
				c.mu.Unlock()
				conn.Close()
				return
			}
			c.mu.Lock()
			c.freeRequestLocked(req)
			c.mu.Unlock()
		}
	}
}

// brokenLocked marks the current connection broken; the writer reconnects.
func (c *Client) brokenLocked() {
	c.broken = true
	c.wakeWriterLocked()
}

// retryLater queues req to be sent again as it is after a back-off that grows with its
// retries; its callers' deadlines bound it (a request no caller waits for is dropped).
func (c *Client) retryLater(req *request) {
	d := busyBackoffMin << uint(req.retries)
	if d > busyBackoffMax || d <= 0 {
		d = busyBackoffMax
	}
	req.retries++
	time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			for _, cl := range req.calls {
				cl.answer(nil, nil, ErrClosed)
			}
			return
		}
		c.retry = append(c.retry, req)
		c.wakeWriterLocked()
	})
}

// deliver answers the callers of an ok reply. results is scratch space, returned for reuse.
func (c *Client) deliver(req *request, body []byte, results []CreateResult) []CreateResult {
	if req.events == 0 && !isCreate(req.op) {
		// One call; its caller decodes the body.
		reply := make([]byte, len(body))
		copy(reply, body)
		req.calls[0].answerFinal(nil, reply, nil)
		return results
	}
	rs, err := decodeCreateResults(body, req.events, results)
	if err != nil {
		for _, cl := range req.calls {
			cl.answerFinal(nil, nil, err)
		}
		return results
	}
	splitResults(req.calls, rs)
	return rs
}

func isCreate(op Operation) bool {
	return op == OpCreateAccounts || op == OpCreateTransfers || op == OpSetAccountLimits
}

// readFrame reads one whole frame; body is reused when it is large enough.
func readFrame(r io.Reader, head []byte, body []byte) (header, []byte, error) {
	if _, err := io.ReadFull(r, head); err != nil {
		return header{}, nil, err
	}
	h, err := parseHeader(head)
	if err != nil {
		return header{}, nil, err
	}
	n := int(h.bodyLength)
	if cap(body) < n {
		body = make([]byte, n)
	}
	body = body[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return header{}, nil, err
	}
	if err := verifyChecksum(head, h, body); err != nil {
		return header{}, nil, err
	}
	return h, body, nil
}

// connect opens a connection and says hello. A refusal is a *StatusError.
func (c *Client) connect(ctx context.Context) (net.Conn, HelloReply, error) {
	d := net.Dialer{Timeout: c.opts.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, HelloReply{}, err
	}
	deadline := time.Now().Add(c.opts.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	hello, err := sayHello(conn, c.opts.Token, deadline)
	if err != nil {
		conn.Close()
		return nil, HelloReply{}, err
	}
	return conn, hello, nil
}

func sayHello(conn net.Conn, token string, deadline time.Time) (HelloReply, error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return HelloReply{}, err
	}
	frame := make([]byte, HeaderSize+helloRequestSize)
	putHelloRequest(frame[HeaderSize:], token)
	finishFrame(frame, OpHello, StatusOK, 0)
	if _, err := conn.Write(frame); err != nil {
		return HelloReply{}, err
	}
	var head [HeaderSize]byte
	h, body, err := readFrame(conn, head[:], nil)
	if err != nil {
		return HelloReply{}, err
	}
	if h.status != StatusOK {
		return HelloReply{}, replyError(OpHello, h.status, body)
	}
	if h.operation != OpHello || h.requestID != 0 {
		return HelloReply{}, protocolErrorf("hello answered with operation %s, request id %d", h.operation, h.requestID)
	}
	hello, err := decodeHelloReply(body)
	if err != nil {
		return HelloReply{}, err
	}
	if hello.Version != ProtocolVersion {
		return HelloReply{}, protocolErrorf("daemon speaks protocol version %d, this client %d", hello.Version, ProtocolVersion)
	}
	return hello, conn.SetDeadline(time.Time{})
}

// janitor answers calls whose deadline passed with ErrTimeout. A caller whose context has a
// deadline also stops waiting on its own; this covers Options.RequestTimeout.
func (c *Client) janitor() {
	defer c.wg.Done()
	t := time.NewTicker(janitorPeriod)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			now := c.sinceStart()
			c.coarseNow.Store(now)
			c.mu.Lock()
			expire := func(cl *call) {
				if now >= cl.deadline {
					cl.answer(nil, nil, ErrTimeout)
				}
			}
			c.queue.each(expire)
			for _, req := range c.inFlight {
				for _, cl := range req.calls {
					expire(cl)
				}
			}
			for _, req := range c.retry {
				for _, cl := range req.calls {
					expire(cl)
				}
			}
			c.mu.Unlock()
		}
	}
}
