// Package ledgerd is the Go client of ledgerd, an event-sourced double-entry ledger daemon.
//
// It speaks the binary TCP protocol of docs/protocol.md: a 64-byte frame header, then
// fixed-size little-endian records. One *Client is one connection, safe for any number of
// goroutines.
//
// Concurrent CreateAccounts, CreateTransfers and SetAccountLimits calls are coalesced into one
// request per round trip (up to the daemon's events_per_request_max events), several requests
// are pipelined, and each caller gets exactly its own results, indexed into its own slice.
// When the connection breaks, the client reconnects and sends the same events (same ids)
// again: ids are idempotent, so an event the lost attempt applied answers ResultExists.
//
// Files, by concern:
//
//	uint128.go    Uint128: the protocol's 128-bit integers (ids, amounts)
//	codes.go      limits, the number types (Operation, Status, ...) and the flags
//	names.go      every operation, status, result code and change-event kind, with its name
//	frame.go      the frame header and its CRC-32C checksum
//	records.go    typed records and their 128/64/480-byte encodings
//	errors.go     StatusError, ProtocolError, ErrTimeout, ErrClosed
//	client.go     Dial, Options and one method per operation
//	batcher.go    the call queue, how calls are grouped into requests, result splitting
//	conn.go       the writer and reader goroutines, reconnection and retries
package ledgerd
