package ledgerd

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Header field offsets (docs/protocol.md section 3).
const (
	offMagic      = 0
	offVersion    = 4
	offOperation  = 6
	offStatus     = 8
	offBodyLength = 12
	offRequestID  = 16
	offChecksum   = 24
)

var magic = [4]byte{'L', 'D', 'G', 'R'}

// castagnoli is CRC-32C; hash/crc32 uses the CPU's crc32 instruction for it where there is one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded frame header.
type header struct {
	operation  Operation
	status     Status
	bodyLength uint32
	requestID  uint64
	checksum   uint32
}

// beginFrame resets buf to a zeroed header, ready for the body to be appended.
func beginFrame(buf []byte) []byte {
	if cap(buf) < HeaderSize {
		buf = make([]byte, HeaderSize, 64<<10)
	}
	buf = buf[:HeaderSize]
	for i := range buf {
		buf[i] = 0
	}
	return buf
}

// finishFrame fills in the header of a frame whose body follows it in buf, checksum included.
func finishFrame(buf []byte, op Operation, status Status, requestID uint64) {
	copy(buf[offMagic:], magic[:])
	binary.LittleEndian.PutUint16(buf[offVersion:], ProtocolVersion)
	binary.LittleEndian.PutUint16(buf[offOperation:], uint16(op))
	binary.LittleEndian.PutUint16(buf[offStatus:], uint16(status))
	binary.LittleEndian.PutUint32(buf[offBodyLength:], uint32(len(buf)-HeaderSize))
	setRequestID(buf, requestID)
}

// setRequestID writes the request id and recomputes the checksum, which covers it.
func setRequestID(frame []byte, requestID uint64) {
	binary.LittleEndian.PutUint64(frame[offRequestID:], requestID)
	binary.LittleEndian.PutUint32(frame[offChecksum:], 0)
	// The checksum covers the header with its own field zero, then the body: since the body
	// follows the header in the buffer, that is one pass over the whole frame.
	binary.LittleEndian.PutUint32(frame[offChecksum:], crc32.Checksum(frame, castagnoli))
}

// parseHeader decodes and checks a header: magic, version, zero reserved bytes and
// body_length within FrameBodyMax. A client that receives a wrong header must close the
// connection: the position of the next frame is unknown.
func parseHeader(b []byte) (header, error) {
	if len(b) < HeaderSize {
		return header{}, protocolErrorf("short header: %d bytes", len(b))
	}
	if b[0] != magic[0] || b[1] != magic[1] || b[2] != magic[2] || b[3] != magic[3] {
		return header{}, protocolErrorf("bad magic % x", b[:4])
	}
	if v := binary.LittleEndian.Uint16(b[offVersion:]); v != ProtocolVersion {
		return header{}, protocolErrorf("unsupported protocol version %d", v)
	}
	if b[10] != 0 || b[11] != 0 {
		return header{}, protocolErrorf("non-zero reserved header bytes")
	}
	for _, c := range b[28:HeaderSize] {
		if c != 0 {
			return header{}, protocolErrorf("non-zero reserved header bytes")
		}
	}
	h := header{
		operation:  Operation(binary.LittleEndian.Uint16(b[offOperation:])),
		status:     Status(binary.LittleEndian.Uint16(b[offStatus:])),
		bodyLength: binary.LittleEndian.Uint32(b[offBodyLength:]),
		requestID:  binary.LittleEndian.Uint64(b[offRequestID:]),
		checksum:   binary.LittleEndian.Uint32(b[offChecksum:]),
	}
	if h.bodyLength > FrameBodyMax {
		return header{}, protocolErrorf("body_length %d above %d", h.bodyLength, FrameBodyMax)
	}
	return h, nil
}

// verifyChecksum checks a received frame's checksum (head: its 64 header bytes).
func verifyChecksum(head []byte, h header, body []byte) error {
	var zeroed [HeaderSize]byte
	copy(zeroed[:], head[:HeaderSize])
	binary.LittleEndian.PutUint32(zeroed[offChecksum:], 0)
	sum := crc32.Update(crc32.Checksum(zeroed[:], castagnoli), castagnoli, body)
	if sum != h.checksum {
		return protocolErrorf("checksum mismatch: header says %#08x, frame gives %#08x", h.checksum, sum)
	}
	return nil
}

// decodeFrame splits one whole frame (header and body) and checks it; for tests and tools.
func decodeFrame(frame []byte) (header, []byte, error) {
	h, err := parseHeader(frame)
	if err != nil {
		return header{}, nil, err
	}
	if int(h.bodyLength) != len(frame)-HeaderSize {
		return header{}, nil, fmt.Errorf("ledgerd: frame of %d bytes, header says body %d", len(frame), h.bodyLength)
	}
	body := frame[HeaderSize:]
	return h, body, verifyChecksum(frame, h, body)
}
