"""picklewire.wire: the picklewire ZeroMQ wire format in pure Python.

Needs only pyzmq and the standard library (the ``lz4`` package is optional). It proves the
format is simple, and lets a Python process without the C++ extension exchange messages with
picklewire peers: objects are pickled by CPython itself (protocol 5, ``buffer_callback``), and
every out-of-band buffer travels as its own ZeroMQ frame, zero-copy in both directions.

One message is one multipart message (docs/wire-format.md, "ZeroMQ framing"), in wire version 1
or 2; ``decode`` reads both, ``encode`` writes version 2 unless asked for 1 (for older peers)::

    version 1
    frame 0    header, little-endian: "PWZM", version u8 = 1, flags u8, reserved u16 = 0,
               buffer count u32, then per buffer: raw size u64, wire size u64, codec u8
               (0 raw, 1 lz4 chunks), buffer flags u8 (1 readonly, 2 shuffled), reserved u16,
               item size u32
    frame 1    the pickle stream
    frame 2+i  buffer i

    version 2
    frame 0    "PWZM", version u8 = 2, flags u8 (1 accepts lz4, 2 stream in its own frame),
               reserved u16 = 0, buffer count u32, stream size u64, the descriptors as in
               version 1 (buffer flag 4: inline), then the inline area: the stream (unless flag
               2), then each inline buffer at the next multiple of 8 from the frame's start
               (zero padding); the frame ends with the last inline item
    frames 1.. the stream when header flag 2, then every buffer not inline, in order

Version 2 puts the stream and each uncompressed buffer of at most ``inline_max_bytes`` (4096)
bytes inside frame 0: one frame for a small message instead of three.

Control messages (version 2, header flag 4; docs/wire-format.md "Same host"): a picklewire
Sender with the C++ extension says *hello* once per connection, offering to move large buffers
through shared memory when its receiver is on the same host. This peer does not take that path:
``recv`` skips hellos (the sender, hearing no answer, keeps sending frames), and a *doorbell*
(which only follows an accepted hello) is a ``WireError``. This peer never sends either.

Compression: without the ``lz4`` module this peer clears the "accepts lz4" header flag and
refuses compressed messages with ``WireError`` (ask the sender to set compress off). With it,
it decodes lz4 buffers (shuffled or not) and can send plain (unshuffled) lz4 buffers.

Received buffers are read-only views of the ZeroMQ frames (``recv_multipart(copy=False)``), so
arrays loaded from them are read-only even when the sender's buffer was writable.

Command line (used by the interop tests)::

    python3 wire.py send URL [--bind] [--count N] [--compress] [--wire-version 1|2] --expr 'numpy.arange(10)'
    python3 wire.py recv URL [--connect] [--count N] [--timeout MS] [--expect EXPR]
"""

import pickle
import struct

import zmq

try:  # optional: Debian packages it as python3-lz4
    import lz4.block as _lz4
except ImportError:  # pragma: no cover - depends on the host
    _lz4 = None

MAGIC = b"PWZM"
VERSION = 2  # written by default; decode reads 1 and 2
VERSIONS = (1, 2)
ACCEPTS_LZ4 = 0x01
STREAM_OWN_FRAME = 0x02  # version 2 header flag
CONTROL = 0x04  # version 2 header flag: a control message, not an object
CONTROL_HELLO = 1
CONTROL_DOORBELL = 2
_CONTROL_SIZES = {CONTROL_HELLO: 48, CONTROL_DOORBELL: 24}
READONLY = 0x01
SHUFFLED = 0x02
INLINE = 0x04  # version 2 buffer flag
INLINE_ALIGNMENT = 8
INLINE_MAX_BYTES = 4096
CODEC_RAW = 0
CODEC_LZ4 = 1
CHUNK_BYTES = 1 << 20
FIXED = struct.Struct("<4sBBHI")
_STREAM_SIZE = struct.Struct("<Q")  # version 2: follows FIXED
PER_BUFFER = struct.Struct("<QQBBHI")
_U32 = struct.Struct("<I")


class WireError(Exception):
    """The peer sent something this format does not allow (or this peer cannot decode)."""


def lz4_available():
    return _lz4 is not None


def _item_size(pickle_buffer):
    try:
        return memoryview(pickle_buffer).itemsize
    except (TypeError, ValueError):
        return 0


def _lz4_encode(view):
    parts = []
    for pos in range(0, len(view), CHUNK_BYTES):
        block = _lz4.compress(view[pos:pos + CHUNK_BYTES], store_size=False)
        parts.append(_U32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _unshuffle(data, item_size):
    n = len(data) // item_size
    out = bytearray(len(data))
    for j in range(item_size):
        out[j:n * item_size:item_size] = data[j * n:(j + 1) * n]
    out[n * item_size:] = data[n * item_size:]
    return out


def _lz4_decode(frame, raw_size, item_size):
    if _lz4 is None:
        raise WireError("message holds lz4-compressed buffers but this Python has no lz4 module "
                        "(install python3-lz4, or have the sender turn compression off)")
    data = memoryview(frame)
    out = bytearray(raw_size)
    src = 0
    for pos in range(0, raw_size, CHUNK_BYTES):
        length = min(CHUNK_BYTES, raw_size - pos)
        if len(data) - src < 4:
            raise WireError("bad lz4 data: truncated before chunk at raw offset %d" % pos)
        (c,) = _U32.unpack_from(data, src)
        src += 4
        if c == 0 or c > len(data) - src:
            raise WireError("bad lz4 data: chunk at raw offset %d claims %d bytes" % (pos, c))
        try:
            chunk = _lz4.decompress(data[src:src + c], uncompressed_size=length)
        except Exception as e:  # lz4.block.LZ4BlockError
            raise WireError("bad lz4 data at raw offset %d: %s" % (pos, e)) from None
        if len(chunk) != length:
            raise WireError("bad lz4 data: chunk at raw offset %d decodes to %d bytes, not %d" % (pos, len(chunk), length))
        if item_size:
            chunk = _unshuffle(chunk, item_size)
        out[pos:pos + length] = chunk
        src += c
    if src != len(data):
        raise WireError("bad lz4 data: %d trailing bytes" % (len(data) - src))
    return out


def encode(obj, inband_threshold=4096, compress=False, version=VERSION, inline_max_bytes=INLINE_MAX_BYTES):
    """Pickles ``obj`` (protocol 5) into the frames of one message.

    Buffers of at least ``inband_threshold`` bytes go out-of-band. Version 2 (the default) copies
    the stream and each uncompressed buffer of at most ``inline_max_bytes`` bytes into frame 0;
    every other buffer travels as its own frame that shares the object's memory (no copy).
    ``compress`` lz4-compresses each out-of-band buffer (needs lz4). ``version=1`` writes the
    three-frame format older peers read.
    """
    if compress and _lz4 is None:
        raise WireError("compress=True needs the lz4 module (python3-lz4)")
    if version not in VERSIONS:
        raise ValueError("wire version %r is not 1 or 2" % (version,))
    buffers = []

    def out_of_band(pb):
        raw = pb.raw()
        if raw.nbytes < inband_threshold:
            return True  # in-band
        buffers.append((pb, raw))
        return False

    stream = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    v2 = version == 2
    descriptors, frames, inline = [], [], []
    for pb, raw in buffers:
        flags = READONLY if raw.readonly else 0
        item = _item_size(pb)
        if v2 and raw.nbytes <= inline_max_bytes:  # small: inline, never worth compressing
            descriptors.append(PER_BUFFER.pack(raw.nbytes, raw.nbytes, CODEC_RAW, flags | INLINE, 0, item))
            inline.append(raw)
        elif compress and raw.nbytes:
            wire = _lz4_encode(raw)
            descriptors.append(PER_BUFFER.pack(raw.nbytes, len(wire), CODEC_LZ4, flags, 0, item))
            frames.append(wire)
        else:
            descriptors.append(PER_BUFFER.pack(raw.nbytes, raw.nbytes, CODEC_RAW, flags, 0, item))
            frames.append(raw)
    hflags = ACCEPTS_LZ4 if _lz4 else 0
    if not v2:
        header = FIXED.pack(MAGIC, 1, hflags, 0, len(buffers)) + b"".join(descriptors)
        return [header, stream] + frames
    stream_inline = len(stream) <= inline_max_bytes
    if not stream_inline:
        hflags |= STREAM_OWN_FRAME
        frames.insert(0, stream)
    parts = [FIXED.pack(MAGIC, 2, hflags, 0, len(buffers)), _STREAM_SIZE.pack(len(stream))] + descriptors
    pos = FIXED.size + _STREAM_SIZE.size + PER_BUFFER.size * len(buffers)
    if stream_inline:
        parts.append(stream)
        pos += len(stream)
    for raw in inline:
        pad = -pos % INLINE_ALIGNMENT
        parts.append(bytes(pad))
        parts.append(raw)
        pos += pad + raw.nbytes
    return [b"".join(parts)] + frames


def _check_buffer(i, raw_size, wire_size, codec, bflags, breserved, item, version):
    known = READONLY | SHUFFLED | (INLINE if version == 2 else 0)
    if bflags & ~known or breserved or codec not in (CODEC_RAW, CODEC_LZ4):
        raise WireError("buffer %d: unknown codec %d or flags 0x%x" % (i, codec, bflags))
    if codec == CODEC_RAW and (raw_size != wire_size or bflags & SHUFFLED):
        raise WireError("buffer %d: raw buffer with raw size %d != wire size %d" % (i, raw_size, wire_size))
    if bflags & INLINE and codec != CODEC_RAW:
        raise WireError("buffer %d: inline buffer is not raw" % i)
    if codec == CODEC_LZ4:
        if bflags & SHUFFLED and not 2 <= item <= 64:
            raise WireError("buffer %d: shuffle item size %d outside 2..64" % (i, item))
        if raw_size > (wire_size // 5) * CHUNK_BYTES:
            raise WireError("buffer %d: %d lz4 bytes cannot decode to %d" % (i, wire_size, raw_size))


def _payload(i, view, raw_size, codec, bflags, item):
    if codec == CODEC_RAW:
        return view
    return _lz4_decode(view, raw_size, item if bflags & SHUFFLED else 0)


def control_kind(frames):
    """The kind of a control message (CONTROL_HELLO, CONTROL_DOORBELL), or None for any other
    message. Raises WireError for a malformed control message."""
    head = frames[0].buffer if frames and isinstance(frames[0], zmq.Frame) else (memoryview(frames[0]) if frames else b"")
    start = FIXED.size + _STREAM_SIZE.size
    if len(head) < start:
        return None
    magic, version, flags, reserved, count = FIXED.unpack_from(head)
    if magic != MAGIC or version != 2 or not flags & CONTROL:
        return None
    (size,) = _STREAM_SIZE.unpack_from(head, FIXED.size)
    if len(frames) != 1 or count or reserved or flags != CONTROL or len(head) != start + size or size < 4:
        raise WireError("malformed control message")
    kind = head[start]
    if _CONTROL_SIZES.get(kind) != size or any(head[start + 1:start + 4]):
        raise WireError("control message of unknown kind %d or size %d" % (kind, size))
    return kind


def decode_frames(frames):
    """Validates one received multipart message (version 1 or 2); returns (stream, [buffers]).

    Buffers are views of the frames (inline ones: of frame 0), except lz4 ones, decoded anew. A
    control message is not an object: WireError (``recv`` skips hellos before decoding).
    """
    views = [f.buffer if isinstance(f, zmq.Frame) else memoryview(f) for f in frames]
    if not views or len(views[0]) < FIXED.size:
        raise WireError("header frame shorter than %d bytes (not a picklewire peer?)" % FIXED.size)
    head = views[0]
    magic, version, flags, reserved, count = FIXED.unpack_from(head)
    if magic != MAGIC:
        raise WireError("bad magic %r (not a picklewire peer?)" % bytes(magic))
    if version not in VERSIONS:
        raise WireError("wire format version %d is not supported (this peer reads 1 and 2)" % version)
    if version == 2 and flags & CONTROL:
        raise WireError("a control message (same-host negotiation), not an object")
    known = ACCEPTS_LZ4 | (STREAM_OWN_FRAME if version == 2 else 0)
    if flags & ~known or reserved:
        raise WireError("unknown header flags 0x%x or nonzero reserved field" % flags)
    if version == 1:
        if len(head) != FIXED.size + count * PER_BUFFER.size:
            raise WireError("header announces %d buffers but its frame holds %d bytes" % (count, len(head)))
        if len(views) != count + 2:
            raise WireError("header announces %d buffers (%d frames) but %d frames arrived" % (count, count + 2, len(views)))
        buffers = []
        for i in range(count):
            fields = PER_BUFFER.unpack_from(head, FIXED.size + i * PER_BUFFER.size)
            raw_size, wire_size, codec, bflags, breserved, item = fields
            _check_buffer(i, *fields, version)
            frame = views[i + 2]
            if len(frame) != wire_size:
                raise WireError("buffer %d: header says %d wire bytes, frame has %d" % (i, wire_size, len(frame)))
            buffers.append(_payload(i, frame, raw_size, codec, bflags, item))
        return views[1], buffers
    start = FIXED.size + _STREAM_SIZE.size
    if len(head) < start + count * PER_BUFFER.size:
        raise WireError("header announces %d buffers but its frame holds %d bytes" % (count, len(head)))
    (stream_size,) = _STREAM_SIZE.unpack_from(head, FIXED.size)
    descs = [PER_BUFFER.unpack_from(head, start + i * PER_BUFFER.size) for i in range(count)]
    for i, fields in enumerate(descs):
        _check_buffer(i, *fields, version)
    own_frames = (1 if flags & STREAM_OWN_FRAME else 0) + sum(1 for d in descs if not d[3] & INLINE)
    if len(views) != 1 + own_frames:
        raise WireError("header announces %d buffers (%d frames) but %d frames arrived" % (count, 1 + own_frames, len(views)))
    pos = start + count * PER_BUFFER.size
    nxt = 1
    if flags & STREAM_OWN_FRAME:
        stream = views[1]
        if len(stream) != stream_size:
            raise WireError("header says the stream has %d bytes, its frame has %d" % (stream_size, len(stream)))
        nxt = 2
    else:
        if stream_size > len(head) - pos:
            raise WireError("the stream of %d inline bytes overruns the header frame" % stream_size)
        stream = head[pos:pos + stream_size]
        pos += stream_size
    buffers = []
    for i, (raw_size, wire_size, codec, bflags, _, item) in enumerate(descs):
        if bflags & INLINE:
            pad = -pos % INLINE_ALIGNMENT
            if pad + wire_size > len(head) - pos or any(head[pos:pos + pad]):
                raise WireError("buffer %d: inline bytes overrun the header frame or padding is not zero" % i)
            pos += pad
            buffers.append(head[pos:pos + wire_size])
            pos += wire_size
            continue
        frame = views[nxt]
        nxt += 1
        if len(frame) != wire_size:
            raise WireError("buffer %d: header says %d wire bytes, frame has %d" % (i, wire_size, len(frame)))
        buffers.append(_payload(i, frame, raw_size, codec, bflags, item))
    if pos != len(head):
        raise WireError("header frame holds %d bytes beyond its inline items" % (len(head) - pos))
    return stream, buffers


def decode(frames):
    """Unpickles one received message. Runs CPython's pickle: only for trusted peers."""
    stream, buffers = decode_frames(frames)
    return pickle.loads(stream, buffers=buffers)


def send(socket, obj, inband_threshold=4096, compress=False, flags=0, version=VERSION):
    """Sends ``obj`` as one message; buffers that are not inline leave zero-copy (``copy=False``)."""
    return socket.send_multipart(encode(obj, inband_threshold, compress, version), flags=flags, copy=False)


def recv(socket, flags=0):
    """Receives and unpickles one message (zero-copy frames), skipping a picklewire Sender's hellos.
    Raises WireError when malformed (a doorbell included: this peer never accepts a hello)."""
    while True:
        frames = socket.recv_multipart(flags=flags, copy=False)
        kind = control_kind(frames)
        if kind == CONTROL_HELLO:
            continue
        if kind == CONTROL_DOORBELL:
            raise WireError("a same-host doorbell, but this peer accepted no hello")
        return decode(frames)


def _main(argv=None):
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="wire.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["send", "recv"])
    parser.add_argument("url")
    parser.add_argument("--bind", action="store_true", help="send: bind instead of connect")
    parser.add_argument("--connect", action="store_true", help="recv: connect instead of bind")
    parser.add_argument("--count", type=int, default=1, help="messages (send: 0 = until killed)")
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--wire-version", type=int, default=VERSION, choices=VERSIONS, help="send: 1 or 2")
    parser.add_argument("--expr", help="send: the Python expression to send (numpy is imported)")
    parser.add_argument("--expect", help="recv: exit 1 unless every message equals this expression")
    parser.add_argument("--timeout", type=int, default=10000, help="recv: ms to wait per message")
    args = parser.parse_args(argv)
    import numpy  # noqa: F401  (available to --expr / --expect)

    env = {"numpy": numpy, "np": numpy}
    ctx = zmq.Context()
    if args.command == "send":
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 10000)
        (sock.bind if args.bind else sock.connect)(args.url)
        obj = eval(args.expr, env)
        i = 0
        while args.count == 0 or i < args.count:
            send(sock, obj, compress=args.compress, version=args.wire_version)
            i += 1
        sock.close()
        ctx.term()  # waits (up to LINGER) until queued messages are on the wire; exit alone drops them
        return 0
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, args.timeout)
    sock.setsockopt(zmq.LINGER, 0)
    (sock.connect if args.connect else sock.bind)(args.url)
    expected = eval(args.expect, env) if args.expect else None
    for _ in range(args.count):
        try:
            obj = recv(sock)
        except zmq.Again:
            print("timed out", file=sys.stderr)
            return 2
        except WireError as e:
            print("WireError: %s" % e, file=sys.stderr)
            return 3
        if args.expect is not None and not _equal(obj, expected):
            print("mismatch: got %r" % (obj,), file=sys.stderr)
            return 1
        print(type(obj).__name__, flush=True)
    sock.close()
    return 0


def _equal(a, b):
    import numpy
    if isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and numpy.array_equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


if __name__ == "__main__":
    raise SystemExit(_main())
