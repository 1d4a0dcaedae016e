package ledgerd

import (
	"bufio"
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer is a small in-process daemon for the client's own tests: it speaks the frame
// protocol, applies create_transfers idempotently (a repeated id answers exists; amount 0
// fails with amount_must_not_be_zero) and can misbehave on demand: answer busy, drop the
// connection after applying a request, never answer, answer an unknown status.
type fakeServer struct {
	t     *testing.T
	ln    net.Listener
	token string

	mu             sync.Mutex
	eventsMax      uint32
	applied        map[Uint128]int  // applications per transfer id (must stay 1)
	requests       [][]Transfer     // every create_transfers request received
	busyAll        bool             // answer busy to the first attempt of every request
	busied         map[Uint128]bool // first ids of the requests answered busy
	dropEvery      int              // apply every Nth create request, then drop the connection
	creates        int
	silent         bool   // never answer creates
	acceptAll      bool   // answer every create ok at once, without bookkeeping (benchmarks)
	shutdownOnce   bool   // answer the next create shutting_down and close the connection
	status         Status // answer creates with this status, if not ok
	statusBody     []byte // and this body
	conns          []net.Conn
	connectionsMax int
	wg             sync.WaitGroup
}

func newFakeServer(t *testing.T, token string) *fakeServer {
	return newFakeServerAt(t, token, "127.0.0.1:0")
}

func newFakeServerAt(t *testing.T, token, addr string) *fakeServer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, token: token, eventsMax: EventsPerRequestMax,
		applied: map[Uint128]int{}, busied: map[Uint128]bool{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, conn)
		s.connectionsMax++
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(conn)
	}
}

func (s *fakeServer) serve(conn net.Conn) {
	defer s.wg.Done()
	defer conn.Close()
	r := bufio.NewReader(conn)
	var head [HeaderSize]byte
	var frame []byte
	reply := func(h header, status Status, body []byte) {
		frame = append(beginFrame(frame), body...)
		finishFrame(frame, h.operation, status, h.requestID)
		conn.Write(frame)
	}
	for {
		h, body, err := readFrame(r, head[:], nil)
		if err != nil {
			return
		}
		switch h.operation {
		case OpHello:
			token := string(body[8 : 8+le.Uint16(body[2:])])
			if token != s.token {
				reply(h, StatusAuthFailed, nil)
				return
			}
			hello := make([]byte, helloReplySize)
			le.PutUint16(hello[0:], 1)
			le.PutUint32(hello[4:], RequestsInFlightMaxDefault)
			le.PutUint32(hello[8:], FrameBodyMax)
			s.mu.Lock()
			le.PutUint32(hello[12:], s.eventsMax)
			s.mu.Unlock()
			le.PutUint32(hello[16:], ChangeEventsPerReplyMax)
			reply(h, StatusOK, hello)
		case OpCreateTransfers:
			if s.acceptAll {
				reply(h, StatusOK, nil)
				continue
			}
			ts := make([]Transfer, len(body)/transferSize)
			for i := range ts {
				ts[i] = getTransfer(body[i*transferSize:])
			}
			s.mu.Lock()
			if s.status != StatusOK {
				st, sb := s.status, s.statusBody
				s.mu.Unlock()
				reply(h, st, sb)
				continue
			}
			if s.silent {
				s.mu.Unlock()
				continue
			}
			if s.shutdownOnce {
				s.shutdownOnce = false
				s.mu.Unlock()
				reply(h, StatusShuttingDown, nil)
				return
			}
			if s.busyAll && !s.busied[ts[0].ID] {
				s.busied[ts[0].ID] = true
				s.mu.Unlock()
				reply(h, StatusBusy, nil)
				continue
			}
			s.requests = append(s.requests, ts)
			var out []byte
			for i, tr := range ts {
				code := ResultOK
				switch {
				case tr.Amount.IsZero():
					code = ResultAmountMustNotBeZero
				case s.applied[tr.ID] > 0:
					code = ResultExists
				default:
					s.applied[tr.ID]++
				}
				if code != ResultOK {
					out = le.AppendUint32(le.AppendUint32(out, uint32(i)), uint32(code))
				}
			}
			s.creates++
			drop := s.dropEvery > 0 && s.creates%s.dropEvery == 0
			s.mu.Unlock()
			if drop {
				return // applied, never answered: the client cannot know
			}
			reply(h, StatusOK, out)
		case OpStatus:
			reply(h, StatusOK, make([]byte, statusReplySize))
		default:
			reply(h, StatusUnknownOperation, nil)
		}
	}
}

func dialFake(t *testing.T, s *fakeServer, opts Options) *Client {
	t.Helper()
	opts.Token = s.token
	c, err := Dial(context.Background(), s.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Many goroutines, each with its own mix of good and bad transfers: each gets exactly its
// own failures, indexed into its own slice, and the calls share requests.
func TestFakeConcurrentCallersGetTheirOwnResults(t *testing.T) {
	s := newFakeServer(t, "tok")
	c := dialFake(t, s, Options{})
	const goroutines, rounds = 200, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				n := 1 + (g+r)%4
				ts := make([]Transfer, n)
				for i := range ts {
					ts[i] = Transfer{ID: Uint128{Hi: uint64(g + 1), Lo: uint64(r*10 + i)}, Amount: U128(1)}
				}
				bad := (g + r) % n // this caller's invalid event
				ts[bad].Amount = Uint128{}
				res, err := c.CreateTransfers(context.Background(), ts)
				if err != nil {
					errs <- err
					return
				}
				if len(res) != 1 || res[0] != (CreateResult{uint32(bad), ResultAmountMustNotBeZero}) {
					errs <- errors.New("wrong results: " + resultsString(res))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) >= goroutines*rounds {
		t.Errorf("%d calls took %d requests: no coalescing", goroutines*rounds, len(s.requests))
	}
	t.Logf("%d calls in %d requests", goroutines*rounds, len(s.requests))
}

func resultsString(rs []CreateResult) string {
	s := "["
	for _, r := range rs {
		s += " " + r.Result.String()
	}
	return s + " ]"
}

// No request ever holds an open chain followed by another caller's events.
func TestFakeOpenChainsNeverCrossCallers(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialFake(t, s, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < 20; r++ {
				ts := make([]Transfer, 1+r%3)
				for i := range ts {
					ts[i] = Transfer{ID: Uint128{Hi: uint64(g + 1), Lo: uint64(r*10 + i)}, Amount: U128(1),
						UserData64: uint64(g), Flags: TransferLinked}
				}
				if r%2 == 0 {
					ts[len(ts)-1].Flags = 0 // a closed chain; odd rounds leave it open
				}
				if _, err := c.CreateTransfers(context.Background(), ts); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, req := range s.requests {
		for i := 0; i+1 < len(req); i++ {
			if req[i].Flags&TransferLinked != 0 && req[i+1].UserData64 != req[i].UserData64 {
				t.Fatalf("a linked event of caller %d is followed by caller %d's event in one request",
					req[i].UserData64, req[i+1].UserData64)
			}
		}
	}
}

// The connection drops after requests were applied but before their replies: the client
// reconnects and sends the same events; those applied answer exists, none is applied twice.
func TestFakeReconnectResendsTheSameEvents(t *testing.T) {
	s := newFakeServer(t, "")
	s.dropEvery = 7
	c := dialFake(t, s, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	exists := 0
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < 20; r++ {
				ts := []Transfer{{ID: Uint128{Hi: uint64(g + 1), Lo: uint64(r)}, Amount: U128(1)}}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := c.CreateTransfers(ctx, ts)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				for _, r := range res {
					if r.Result != ResultExists {
						t.Errorf("result %s", r.Result)
					}
					mu.Lock()
					exists++
					mu.Unlock()
				}
			}
		}(g)
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.applied) != 50*20 {
		t.Fatalf("%d transfers applied, want %d", len(s.applied), 50*20)
	}
	for id, n := range s.applied {
		if n != 1 {
			t.Fatalf("transfer %v applied %d times", id, n)
		}
	}
	if st := c.Stats(); st.Reconnects == 0 || exists == 0 {
		t.Fatalf("no reconnection exercised: %+v, %d exists", st, exists)
	}
	t.Logf("%+v, %d events answered exists on a re-send", c.Stats(), exists)
}

func TestFakeBusyIsRetried(t *testing.T) {
	s := newFakeServer(t, "")
	s.busyAll = true
	c := dialFake(t, s, Options{})
	for i := 0; i < 5; i++ {
		res, err := c.CreateTransfers(context.Background(), []Transfer{{ID: U128(uint64(i + 1)), Amount: U128(1)}})
		if err != nil || len(res) != 0 {
			t.Fatalf("call %d: %v %v", i, res, err)
		}
	}
	if st := c.Stats(); st.Resent != 5 {
		t.Fatalf("%d re-sends, want 5", st.Resent)
	}
}

// shutting_down: nothing was applied and the connection closes; the client sends the same
// request again on a new connection.
func TestFakeShuttingDownIsRetriedOnANewConnection(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialFake(t, s, Options{})
	s.mu.Lock()
	s.shutdownOnce = true
	s.mu.Unlock()
	res, err := c.CreateTransfers(context.Background(), []Transfer{{ID: U128(1), Amount: U128(1)}})
	if err != nil || len(res) != 0 {
		t.Fatalf("got %v %v", res, err)
	}
	if st := c.Stats(); st.Reconnects != 1 || st.Resent != 1 {
		t.Fatalf("stats %+v, want one reconnection and one re-send", st)
	}
}

func TestFakeDeadlines(t *testing.T) {
	s := newFakeServer(t, "")
	s.silent = true
	c := dialFake(t, s, Options{RequestTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ts := []Transfer{{ID: U128(1), Amount: U128(1)}}
	if _, err := c.CreateTransfers(ctx, ts); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("context deadline: got %v", err)
	}
	start := time.Now()
	_, err := c.CreateTransfers(context.Background(), ts)
	if err != ErrTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RequestTimeout: got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("RequestTimeout of 100ms took %v", d)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.CreateTransfers(cancelled, ts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: got %v", err)
	}
}

func TestFakeStatusErrors(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialFake(t, s, Options{})
	s.mu.Lock()
	s.status = Status(99) // a status this client does not know
	s.mu.Unlock()
	_, err := c.CreateTransfers(context.Background(), []Transfer{{ID: U128(1), Amount: U128(1)}})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 99 || se.Operation != OpCreateTransfers || se.Status.String() != "status(99)" {
		t.Fatalf("unknown status: got %v", err)
	}
	s.mu.Lock()
	s.status = StatusInternalError
	s.mu.Unlock()
	_, err = c.CreateTransfers(context.Background(), []Transfer{{ID: U128(2), Amount: U128(1)}})
	if !errors.As(err, &se) || se.Status != StatusInternalError {
		t.Fatalf("internal_error: got %v", err)
	}
	s.mu.Lock()
	s.status = StatusNotLeader
	s.statusBody = []byte{2, 0, 0, 0, 0, 0, 0, 0}
	s.mu.Unlock()
	_, err = c.CreateTransfers(context.Background(), []Transfer{{ID: U128(3), Amount: U128(1)}})
	if !errors.As(err, &se) || se.Status != StatusNotLeader || se.LeaderHint != 2 {
		t.Fatalf("not_leader: got %v", err)
	}
	// The connection is still usable.
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFakeAuthFailed(t *testing.T) {
	s := newFakeServer(t, "right")
	_, err := Dial(context.Background(), s.addr(), Options{Token: "wrong"})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != StatusAuthFailed || se.Operation != OpHello {
		t.Fatalf("got %v, want auth_failed", err)
	}
}

func TestFakeCallLimits(t *testing.T) {
	s := newFakeServer(t, "")
	s.eventsMax = 10
	c := dialFake(t, s, Options{})
	var se *StatusError
	if _, err := c.CreateTransfers(context.Background(), make([]Transfer, 11)); !errors.As(err, &se) || se.Status != StatusTooManyEvents {
		t.Fatalf("11 events with a limit of 10: %v", err)
	}
	if _, err := c.CreateTransfers(context.Background(), nil); !errors.As(err, &se) || se.Status != StatusEmptyBatch {
		t.Fatalf("no events: %v", err)
	}
	if _, err := c.LookupAccounts(context.Background(), make([]Uint128, 11)); !errors.As(err, &se) || se.Status != StatusTooManyEvents {
		t.Fatalf("11 ids: %v", err)
	}
	if _, err := Dial(context.Background(), s.addr(), Options{Token: string(make([]byte, HelloTokenMax+1))}); err == nil {
		t.Fatal("a token of 257 bytes was accepted")
	}
	s.mu.Lock()
	n := len(s.requests)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused calls reached the daemon: %d requests", n)
	}
}

func TestFakeCloseAnswersWaitingCalls(t *testing.T) {
	s := newFakeServer(t, "")
	s.silent = true
	c := dialFake(t, s, Options{})
	done := make(chan error, 1)
	go func() {
		_, err := c.CreateTransfers(context.Background(), []Transfer{{ID: U128(1), Amount: U128(1)}})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting call was not answered by Close")
	}
	if _, err := c.Status(context.Background()); err != ErrClosed {
		t.Fatalf("call after Close: %v", err)
	}
}

// The daemon goes away: calls fail at their deadline, and once it is back the next call
// reconnects by itself.
func TestFakeDaemonDownThenBack(t *testing.T) {
	s := newFakeServer(t, "")
	addr := s.addr()
	c := dialFake(t, s, Options{})
	s.close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("daemon down: got %v", err)
	}
	newFakeServerAt(t, "", addr)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	res, err := c.CreateTransfers(ctx2, []Transfer{{ID: U128(1), Amount: U128(1)}})
	if err != nil || len(res) != 0 {
		t.Fatalf("after the daemon came back: %v %v", res, err)
	}
	if c.Stats().Reconnects == 0 {
		t.Fatal("no reconnection counted")
	}
}

// BenchmarkCreateTransfersFake measures the client's own cost per call: 1,000 goroutines,
// each with one one-transfer call in flight, against a fake daemon that answers at once.
//
//	go test -run - -bench CreateTransfersFake -benchtime 2000000x
func BenchmarkCreateTransfersFake(b *testing.B) {
	s := newFakeServer(&testing.T{}, "")
	s.acceptAll = true
	c, err := Dial(context.Background(), s.addr(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((1000 + procs - 1) / procs)
	var next uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ts := []Transfer{{Amount: U128(1), Ledger: 1, Code: 1}}
		for pb.Next() {
			ts[0].ID = U128(atomic.AddUint64(&next, 1))
			if _, err := c.CreateTransfers(context.Background(), ts); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := c.Stats()
	b.ReportMetric(float64(st.Events)/float64(st.Requests), "events/request")
}
