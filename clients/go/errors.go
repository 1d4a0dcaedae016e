package ledgerd

import (
	"context"
	"errors"
	"fmt"
)

// StatusError is a request the daemon refused as a whole: the reply's status was not ok
// (docs/protocol.md section 5). Nothing of the request was applied, except possibly for
// StatusNotLeader: a write accepted before a leadership change may have been, and retrying
// it with the same ids (at the leader) is safe either way. Use errors.As to get it:
//
//	var se *ledgerd.StatusError
//	if errors.As(err, &se) && se.Status == ledgerd.StatusAuthFailed { ... }
//
// Per-event outcomes of create calls are not errors: they are the CreateResults returned.
type StatusError struct {
	Operation Operation // the refused request's operation
	Status    Status    // never StatusOK; possibly a number this client does not know
	// Detail is set when the client refused the call itself, before sending it (an empty call,
	// or more events than one request holds), with the status the daemon would have answered.
	Detail string
	// LeaderHint is set for StatusNotLeader: the position, in the cluster's address list, of
	// the replica the daemon believes leads, or LeaderUnknown. Zero for other statuses.
	LeaderHint uint32
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("ledgerd: %s refused: %s (status %d)", e.Operation, e.Status, uint16(e.Status))
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Status == StatusNotLeader {
		if e.LeaderHint == LeaderUnknown {
			s += ": leader unknown"
		} else {
			s += fmt.Sprintf(": leader is replica %d", e.LeaderHint)
		}
	}
	return s
}

// replyError is the error of a reply whose status is not ok: a *StatusError, with the leader
// hint of a not_leader reply's body, or a *ProtocolError when that body is malformed.
func replyError(op Operation, status Status, body []byte) error {
	se := &StatusError{Operation: op, Status: status}
	if status == StatusNotLeader {
		leader, err := decodeNotLeaderReply(body)
		if err != nil {
			return err
		}
		se.LeaderHint = leader
	}
	return se
}

// ProtocolError means the daemon's bytes do not follow the protocol (a bad header, checksum
// or body), or the client was misused in a way it cannot send (e.g. a token too long).
type ProtocolError struct {
	Msg string
}

func (e *ProtocolError) Error() string { return "ledgerd: protocol: " + e.Msg }

func protocolErrorf(format string, args ...interface{}) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// ErrTimeout is returned when a call's deadline (Options.RequestTimeout, for a context without
// its own deadline) passes before its reply. The call's outcome is unknown: calling again with
// the same events (same ids) is safe and tells it. errors.Is(ErrTimeout,
// context.DeadlineExceeded) holds.
var ErrTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string {
	return "ledgerd: deadline passed before the reply; the outcome is unknown (retrying with the same ids is safe)"
}

func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// ErrClosed is returned by calls on a closed Client, and by calls still waiting when it closes.
var ErrClosed = errors.New("ledgerd: client closed")
