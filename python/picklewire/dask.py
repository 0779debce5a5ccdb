"""Dask distributed comm backend ``pw://``: same-host peers move large frames through shared memory.

Registered under the scheme ``pw`` through the entry point group ``distributed.comm.backends``
(``picklewire.dask:PicklewireBackend``), so ``LocalCluster(protocol="pw")``, ``pw://host:port``
addresses and spawned worker processes find it with no preload. See docs/dask.md.

How a message travels
---------------------
A ``pw`` comm is Dask's own tornado TCP comm (``distributed.comm.tcp.TCP``) plus one extra step
after the TCP connection opens and before Dask's handshake: both ends exchange a *hello* (boot id,
IPC namespace, uid, and, if the process receives through shared memory, the name and capacity of
its picklewire channel and the id the peer must tag its shared-memory messages with). Peers with
the same boot id, IPC namespace and uid are on the same host; a writer to such a peer whose
channel is known sends every frame of at least ``threshold`` bytes as one picklewire ``shm://``
message into the peer's channel, then writes the usual length-prefixed message on the socket with
those frames left out and named. The socket is the doorbell: the reader, woken by the event loop
as for any TCP comm, reads the control message and then takes the already queued shared-memory
message without waiting (``recv_message(timeout=0)``). Nothing blocks the loop: the copy into the
segment runs in a helper thread with the GIL released; receiving copies nothing.

One channel per receiving process serves all its incoming comms; a per-process ``_Inbox`` routes
each shared-memory message to its comm by the (comm id, sequence number) tag in the message's
stream. Frames that do not fit the peer's channel, a full channel, a dead or closed channel, or a
peer on another host: the frames go on the socket instead (counted in the ledger, see
``ledger()``).

Socket message format (``pw`` comms only; both ends are this module)::

    u64 total_bytes                       # of everything below
    u64 nframes, u64 n_shm                # all frames; frames that came through shared memory
    u64 frame_nbytes[nframes]
    u64 shm_frame_index[n_shm], u64 seq   # (these and the two below only when n_shm > 0)
    u64 n_buffers, u64 frames_in_buffer[n_buffers]
    in-band frames, concatenated (the shared-memory frames are left out)

Shared-memory message: stream = ``<u64 comm_id, u64 seq>``, buffers = the left-out frames in order,
where consecutive frames that are adjacent pieces of one memory block (the shards Dask cut one
frame into, e.g. data relayed from a tcp hop) travel as one buffer: the reader slices it back, so
the shards are views of one object and Dask's ``merge_memoryviews`` joins them without a copy.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import glob
import itertools
import json
import logging
import os
import re
import secrets
import struct
import sys
import threading
from collections import defaultdict, deque

import numpy as np
from tornado.iostream import StreamClosedError

import dask
from dask.utils import parse_bytes, parse_timedelta
from distributed.comm import tcp as _tcp
from distributed.comm.core import CommClosedError
from distributed.comm.utils import from_frames, host_array, to_frames
from distributed.protocol.utils import address_of_memoryview, merge_memoryviews
from distributed.utils import ensure_memoryview, nbytes

import picklewire

logger = logging.getLogger(__name__)

__all__ = ["PicklewireBackend", "PicklewireComm", "ledger", "clean_stale_segments", "channel_name", "shutdown"]

# Segment names: /dev/shm/picklewire.dask-<pid>-<token> ("picklewire shm list" shows them; the pid
# lets any pw process remove the segment of a worker that was SIGKILLed).
SEGMENT_PREFIX = "dask-"
_SHM_DIR = "/dev/shm"

_HELLO_MAGIC = b"PWDASK1\0"
_CHANNEL_NAME = re.compile(re.escape(SEGMENT_PREFIX) + r"[0-9]+-[0-9a-f]+")  # what _Inbox names
_HELLO_MAX = 64 * 1024  # a hello is ~300 bytes; anything bigger is not a pw peer
_TAG = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
# Frames are never split into shards on a pw comm: a shared-memory frame arrives as one view, and
# the socket path writes a frame in chunks anyway (Dask's `distributed.comm.shard` exists for the
# socket's buffers and OpenSSL's 2 GiB limit, neither of which applies here).
_NO_SPLIT = 1 << 62
# How long a reader waits for a shared-memory message its control message names. It was published
# before the control message was written, so it is normally there at once; this only bounds a
# broken peer.
_SHM_MISSING_TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------------
# Configuration: dask config `distributed.comm.pw.*` (environment: DASK_DISTRIBUTED__COMM__PW__*)

_DEFAULTS = {
    # Heap bytes of this process's receive channel (pre-faulted: it costs that much memory, in
    # /dev/shm, for the life of the process). A message larger than the peer's capacity goes on
    # the socket.
    "capacity": "512 MiB",
    # Frames of at least this many bytes go through shared memory; smaller ones stay on the socket.
    "threshold": "256 KiB",
    # Which processes bind a receive channel: "auto" = processes running a dask Worker (they
    # receive the data); True = every process using pw (clients, schedulers too); False = none.
    "receive": "auto",
}


def _config(key):
    value = dask.config.get(f"distributed.comm.pw.{key}", default=None)
    return _DEFAULTS[key] if value is None else value


def _capacity():
    value = _config("capacity")
    return int(parse_bytes(value) if isinstance(value, str) else value)


def _threshold():
    value = _config("threshold")
    return max(1, int(parse_bytes(value) if isinstance(value, str) else value))


def _wants_channel():
    receive = _config("receive")
    if isinstance(receive, str):
        lowered = receive.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            receive = True
        elif lowered in ("false", "0", "no", "off"):
            receive = False
        elif lowered != "auto":
            raise ValueError(f"distributed.comm.pw.receive must be auto, true or false, got {receive!r}")
    if receive == "auto" or receive is None:
        worker_module = sys.modules.get("distributed.worker")
        return worker_module is not None and len(worker_module.Worker._instances) > 0
    return bool(receive) and _capacity() > 0


# ---------------------------------------------------------------------------------------------
# Host identity: same boot, same IPC namespace (shared memory is per IPC namespace), same uid
# (a segment is created 0600 and connect refuses another owner's).

def _read_boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _ipc_namespace():
    try:
        return os.readlink("/proc/self/ns/ipc")
    except OSError:
        return None


_BOOT_ID = _read_boot_id()


# ---------------------------------------------------------------------------------------------
# The ledger: what went where, per process (`ledger()`; per worker via `client.run(ledger)`).

class _Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = defaultdict(int)

    def add(self, **amounts):
        with self.lock:
            for key, value in amounts.items():
                self.counts[key] += value

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


_ledger = _Ledger()


# ---------------------------------------------------------------------------------------------
# The receive side: one channel per process, shared by every incoming pw comm.

class _Inbox:
    """This process's picklewire channel and the per-comm queues its messages are routed to.

    Only ever polled (``recv_message(timeout=0)``), never waited on: the control message on the
    socket says a message is there."""

    def __init__(self, capacity):
        clean_stale_segments()
        self.name = f"{SEGMENT_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.capacity = capacity
        self.receiver = picklewire.Receiver.bind("shm://" + self.name, capacity=capacity)
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.queues: dict[int, deque] = {}
        self.ids = itertools.count(1)

    def register(self):
        with self.lock:
            comm_id = next(self.ids)
            self.queues[comm_id] = deque()
            return comm_id

    def unregister(self, comm_id):
        with self.lock:
            dropped = self.queues.pop(comm_id, None)
        if dropped:
            _ledger.add(shm_messages_dropped=len(dropped))
        self.drain()  # leases of messages for comms that are gone return to the segment

    def _route_one(self):
        """Takes one queued message (caller holds the lock); False when none is queued."""
        try:
            stream, buffers = self.receiver.recv_message(timeout=0)
        except picklewire.TimeoutError:
            return False
        if stream.nbytes != _TAG.size:
            _ledger.add(shm_messages_malformed=1)
            return True
        comm_id, seq = _TAG.unpack(stream)
        queue = self.queues.get(comm_id)
        if queue is None:  # its comm closed (or its writer died) before reading it
            _ledger.add(shm_messages_dropped=1)
        else:
            queue.append((seq, buffers))
        return True

    def drain(self):
        with self.lock:
            if self.receiver.closed:
                return
            while self._route_one():
                pass

    def take(self, comm_id, seq):
        """The buffers of message `seq` for comm `comm_id`, or None if it is not queued yet."""
        with self.lock:
            queue = self.queues.get(comm_id)
            if queue is None:
                raise CommClosedError("pw: comm unregistered from its shared-memory channel")
            while not queue:
                if self.receiver.closed or not self._route_one():
                    return None
            got_seq, buffers = queue.popleft()
        if got_seq != seq:
            raise CommClosedError(f"pw: shared-memory message {got_seq} arrived where {seq} was expected")
        return buffers

    def close(self):
        with self.lock:
            self.queues.clear()
            self.receiver.close()


_inbox: _Inbox | None = None
_inbox_lock = threading.Lock()
_inbox_failed = False


def _get_inbox():
    """This process's channel, bound on first use (in a helper thread: binding pre-faults it)."""
    global _inbox, _inbox_failed
    with _inbox_lock:
        if _inbox is not None and _inbox.pid != os.getpid():  # inherited through fork: not ours
            _inbox = None
        if _inbox is None and not _inbox_failed:
            try:
                _inbox = _Inbox(_capacity())
            except picklewire.Error as e:
                # e.g. /dev/shm too small: this process keeps receiving through the socket.
                _inbox_failed = True
                logger.warning("pw: no shared-memory channel for this process, using TCP only: %s", e)
        return _inbox


def channel_name():
    """The name of this process's receive channel (``shm://NAME``), or None if it has none."""
    return _inbox.name if _inbox is not None and _inbox.pid == os.getpid() else None


# ---------------------------------------------------------------------------------------------
# The send side: one picklewire Sender per peer channel, shared by all comms to that peer.

_senders: dict[str, picklewire.Sender] = {}
_dead_channels: set[str] = set()
_senders_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_pid = None


def _copy_executor():
    """Threads that run the copies into a peer's segment (GIL released), off the event loop."""
    global _executor, _executor_pid
    with _senders_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="picklewire-dask-copy")
            _executor_pid = os.getpid()
        return _executor


def _sender_for(channel):
    with _senders_lock:
        sender = _senders.get(channel)
        if sender is not None or channel in _dead_channels:
            return sender
    # Connecting maps (and pre-faults) the peer's segment: done outside the lock, in a copy thread.
    try:
        # send_timeout=0: a loan (Sender.buffer) that finds the heap full fails at once instead of
        # waiting, possibly for good, for a worker to release the data it holds.
        sender = picklewire.Sender.connect("shm://" + channel, send_timeout=0)
    except picklewire.Error as e:
        logger.info("pw: cannot connect to shared-memory channel %s, using TCP: %s", channel, e)
        with _senders_lock:
            _dead_channels.add(channel)
        return None
    with _senders_lock:
        existing = _senders.get(channel)
        if existing is not None:
            sender.close()
            return existing
        _senders[channel] = sender
        return sender


def _close_sender(sender):
    """Closes a Sender, keeping its copies in the process ledger."""
    try:
        s = sender.stats()
        _ledger.add(retired_copies_into_segment=s["copies"]["copied_into_segment"],
                    retired_copied_into_segment_bytes=s["copied_bytes"]["copied_into_segment"])
    except picklewire.Error:
        pass
    sender.close()


def _forget_sender(channel):
    with _senders_lock:
        sender = _senders.pop(channel, None)
        _dead_channels.add(channel)
    if sender is not None:
        _close_sender(sender)


def _channel_pid(channel):
    pid_text = channel[len(SEGMENT_PREFIX):].split("-", 1)[0] if channel.startswith(SEGMENT_PREFIX) else ""
    return int(pid_text) if pid_text.isdigit() else None


def _forget_sender_if_peer_died(channel, recheck_after=0.25):
    """Unmaps a dead peer's channel: its name is already gone from /dev/shm, but the mapping would
    keep its memory alive for as long as this process lives. A killed process's sockets close
    before the kernel marks it dead, so a comm that closes may see its peer still "alive": then
    look again a few times, later (0.25 s, 0.5 s, ... up to 4 s), off the event loop."""
    pid = _channel_pid(channel)
    if pid is None:
        return
    with _senders_lock:
        known = channel in _senders
    if not known:
        return
    if not _pid_alive(pid):
        _forget_sender(channel)
    elif recheck_after <= 4.0:
        timer = threading.Timer(recheck_after, _forget_sender_if_peer_died, (channel, recheck_after * 2))
        timer.daemon = True
        timer.start()


def _coalesce_shards(frames, big):
    """The shared-memory buffers for frames[big]: runs of consecutive frames that are adjacent
    pieces of one exporter's memory (shards of one Dask frame) become one view, so they land
    contiguously in one slot. Returns (buffers, frames per buffer)."""
    buffers, counts, run = [], [], []

    def flush():
        if len(run) > 1:
            try:
                buffers.append(merge_memoryviews(run))  # a view of the same memory: no copy
                counts.append(len(run))
                return
            except (ValueError, TypeError):
                pass
        for view in run:
            buffers.append(view)
            counts.append(1)

    previous = None
    for i in big:
        # Dask's shards are memoryviews of the frame's exporter: kept as they are, since a cast
        # (ensure_memoryview) would make each one the sole view of a new object.
        view = frames[i] if isinstance(frames[i], memoryview) else ensure_memoryview(frames[i])
        if run and i == previous + 1 and view.obj is not None and view.obj is run[-1].obj and view.contiguous:
            try:
                adjacent = address_of_memoryview(run[-1]) + run[-1].nbytes == address_of_memoryview(view)
            except (TypeError, ValueError):
                adjacent = False
            if adjacent:
                run.append(view)
                previous = i
                continue
        flush()
        run = [view]
        previous = i
    flush()
    return buffers, counts


def _send_shm(channel, comm_id, seq, frames):
    """Runs in a copy thread: one picklewire message into the peer's channel. Returns None on
    success, else why the frames must go on the socket."""
    sender = _sender_for(channel)
    if sender is None:
        return "fallback_no_channel"
    buffers = []
    loan_bytes = 0
    try:
        for frame in frames:
            view = ensure_memoryview(frame)
            if view.readonly:
                # A read-only frame (e.g. a pickled `bytes`) would arrive read-only and numpy
                # would copy it again to make it writable: copy it once into a writable loan in
                # the peer's segment instead (numpy's copy releases the GIL).
                loan = sender.buffer(view.nbytes)
                np.copyto(np.frombuffer(loan, np.uint8), np.frombuffer(view.cast("B"), np.uint8))
                buffers.append(loan)
                loan_bytes += view.nbytes
            else:
                buffers.append(view)
        sender.send_message(_TAG.pack(comm_id, seq), buffers, timeout=0)
    except picklewire.TimeoutError:
        # No room for the message or a loan: the receiver still holds what it got (Worker.data).
        return "fallback_channel_full"
    except picklewire.PeerGone:
        _forget_sender(channel)
        return "fallback_peer_gone"
    except (picklewire.TransportError, ValueError, TypeError, BufferError) as e:
        # a closed segment, a frame that is not one contiguous block, ...
        logger.debug("pw: shared-memory send to %s failed, using TCP: %s", channel, e)
        return "fallback_error"
    if loan_bytes:
        _ledger.add(copies_into_loan=1, copied_into_loan_bytes=loan_bytes)
    return None


# ---------------------------------------------------------------------------------------------
# Stale segments: a SIGKILLed process cannot unlink its channel; any pw process removes it.

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes (its parent has not reaped it yet)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def clean_stale_segments():
    """Removes /dev/shm/picklewire.dask-PID-* segments whose process is gone; returns their names."""
    removed = []
    for path in glob.glob(os.path.join(_SHM_DIR, "picklewire." + SEGMENT_PREFIX + "*")):
        rest = os.path.basename(path)[len("picklewire." + SEGMENT_PREFIX):]
        pid_text = rest.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.unlink(path)
            removed.append(os.path.basename(path))
        except OSError:
            pass
    return removed


def shutdown():
    """Closes this process's channel (removing its /dev/shm file) and its senders, and removes
    stale segments of dead processes. Runs at exit; a later pw comm binds a new channel."""
    global _inbox
    with _senders_lock:
        senders = list(_senders.values())
        _senders.clear()
    for sender in senders:
        _close_sender(sender)
    inbox = _inbox
    if inbox is not None and inbox.pid == os.getpid():
        inbox.close()
        _inbox = None
    clean_stale_segments()


atexit.register(shutdown)


def ledger():
    """This process's pw ledger: what went through shared memory and the socket, and the copies.

    Keys: ``shm_messages``/``shm_frames``/``shm_bytes`` (written by this process into peers'
    channels), ``shm_received_messages``/``shm_received_bytes`` (read from its own channel, zero
    copy), ``socket_messages``/``socket_frames``/``socket_bytes`` (frames written on sockets; a
    frame below the threshold is not a copy the backend adds), ``fallback_*`` (messages whose large
    frames went on the socket, and why), ``copies`` / ``copied_bytes`` (per reason: the sender's
    copy into the peer segment, ``copied_into_segment``; a read-only frame copied into a writable
    loan, ``copied_into_loan``; receive copies, which are 0), and ``channel`` (this process's
    channel: name, capacity, ``bytes_in_use``, ``slots_in_use``, ``peak_bytes_in_use``, or None).
    """
    counts = _ledger.snapshot()
    copied_into_segment = counts.get("retired_copied_into_segment_bytes", 0)
    copies_into_segment = counts.get("retired_copies_into_segment", 0)
    with _senders_lock:
        senders = list(_senders.values())
    for sender in senders:
        try:
            s = sender.stats()
        except picklewire.Error:
            continue
        copied_into_segment += s["copied_bytes"]["copied_into_segment"]
        copies_into_segment += s["copies"]["copied_into_segment"]
    out = {key: counts.get(key, 0) for key in (
        "shm_messages", "shm_frames", "shm_bytes", "shm_received_messages", "shm_received_bytes",
        "socket_messages", "socket_frames", "socket_bytes", "shm_messages_dropped")}
    out.update({k: v for k, v in counts.items() if k.startswith("fallback_")})
    receive_copies = 0
    receive_copied = 0
    channel = None
    inbox = _inbox
    if inbox is not None and inbox.pid == os.getpid() and not inbox.receiver.closed:
        s = inbox.receiver.stats()
        receive_copies = sum(s["copies"].values())
        receive_copied = s["total_copied_bytes"]
        channel = {"name": inbox.name, "capacity": s["capacity"], "bytes_in_use": s["bytes_in_use"],
                   "slots_in_use": s["slots_in_use"], "peak_bytes_in_use": s["peak_bytes_in_use"]}
    out["copies"] = {"copied_into_segment": copies_into_segment,
                     "copied_into_loan": counts.get("copies_into_loan", 0),
                     "received": receive_copies}
    out["copied_bytes"] = {"copied_into_segment": copied_into_segment,
                           "copied_into_loan": counts.get("copied_into_loan_bytes", 0),
                           "received": receive_copied}
    out["channel"] = channel
    return out


# ---------------------------------------------------------------------------------------------
# The comm

def _hello():
    inbox = _get_inbox() if _wants_channel() else None
    comm_id = inbox.register() if inbox is not None else None
    return comm_id, {
        "boot": _BOOT_ID, "ipc": _ipc_namespace(), "uid": os.getuid(), "pid": os.getpid(),
        "channel": inbox.name if inbox is not None else None,
        "capacity": inbox.capacity if inbox is not None else 0,
        "comm_id": comm_id,
    }


def _unregister_when_done(hello_future):
    """Releases the comm id a cancelled hello registered."""
    if hello_future.cancelled() or hello_future.exception() is not None:
        return
    comm_id = hello_future.result()[0]
    if comm_id is not None and _inbox is not None:
        _inbox.unregister(comm_id)


class PicklewireComm(_tcp.TCP):
    """A Dask TCP comm whose large frames go through the peer's picklewire channel when the peer
    is on this host (see the module docstring)."""

    def __init__(self, stream, local_addr, peer_addr, deserialize=True):
        super().__init__(stream, local_addr, peer_addr, deserialize)
        self._rx_comm_id = None  # id our channel's messages for this comm are tagged with
        self._rx_seq = 0
        self._peer_channel = None  # (name, capacity, comm id) of the peer's channel, same host only
        self._tx_seq = 0
        self._write_lock = None
        self._extra["pw"] = {"same_host": False, "peer_channel": None, "channel": None}

    async def _pw_handshake(self):
        """Exchanges hellos on the raw stream (before Dask's handshake)."""
        stream = self.stream
        if stream is None:
            raise CommClosedError("pw: stream closed before the hello")
        loop = asyncio.get_running_loop()
        # Binding this process's channel pre-faults it: not on the loop.
        registered = loop.run_in_executor(_copy_executor(), _hello)
        try:
            comm_id, mine = await asyncio.shield(registered)
        except asyncio.CancelledError:
            # The hello may still register a comm id: release it once it is done.
            registered.add_done_callback(_unregister_when_done)
            raise
        self._rx_comm_id = comm_id
        payload = json.dumps(mine).encode()
        try:
            await stream.write(_HELLO_MAGIC + _U64.pack(len(payload)) + payload)
            head = await stream.read_bytes(len(_HELLO_MAGIC) + _U64.size)
            if head[: len(_HELLO_MAGIC)] != _HELLO_MAGIC:
                raise CommClosedError(f"pw: peer {self.peer_address} is not a picklewire dask comm")
            (length,) = _U64.unpack(head[len(_HELLO_MAGIC):])
            if length > _HELLO_MAX:
                raise CommClosedError(f"pw: hello of {length} bytes from {self.peer_address} refused")
            theirs = json.loads(await stream.read_bytes(length))
        except StreamClosedError as e:
            self._release_inbox()
            self.stream = None
            self._closed = True
            _tcp.convert_stream_closed_error(self, e)
        except (ValueError, TypeError) as e:
            self._release_inbox()
            raise CommClosedError(f"pw: malformed hello from {self.peer_address}: {e}") from e
        except BaseException:
            self._release_inbox()
            raise
        if not isinstance(theirs, dict):
            self._release_inbox()
            raise CommClosedError(f"pw: malformed hello from {self.peer_address}")
        same_host = (mine["boot"] is not None and theirs.get("boot") == mine["boot"]
                     and theirs.get("ipc") == mine["ipc"] and theirs.get("uid") == mine["uid"])
        channel, capacity, peer_comm_id = theirs.get("channel"), theirs.get("capacity"), theirs.get("comm_id")
        if channel is not None and not (isinstance(channel, str) and _CHANNEL_NAME.fullmatch(channel)
                                        and type(capacity) is int and capacity > 0
                                        and type(peer_comm_id) is int and peer_comm_id > 0):
            self._release_inbox()
            raise CommClosedError(f"pw: malformed channel in the hello from {self.peer_address}")
        if same_host and channel is not None:
            self._peer_channel = (channel, capacity, peer_comm_id)
        self._extra["pw"] = {"same_host": same_host, "peer_channel": channel if self._peer_channel else None,
                             "channel": mine["channel"]}

    def _release_inbox(self):
        comm_id, self._rx_comm_id = self._rx_comm_id, None
        if comm_id is not None and _inbox is not None:
            _inbox.unregister(comm_id)

    # -- write

    async def write(self, msg, serializers=None, on_error="message"):
        stream = self.stream
        if stream is None:
            raise CommClosedError()
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        shm = self._peer_channel is not None
        context = {"sender": self.local_info, "recipient": self.remote_info, **self.handshake_options}
        if shm:
            context["compression"] = None  # compressing memory for a memcpy only costs time
        frames = await to_frames(msg, allow_offload=self.allow_offload, serializers=serializers,
                                 on_error=on_error, context=context,
                                 frame_split_size=_NO_SPLIT if shm else self.max_shard_size)
        sizes = [nbytes(f) for f in frames]
        async with self._write_lock:  # the shm message and its control message stay in order
            shm_index, seq, counts = [], 0, []
            if shm:
                threshold = _threshold()
                big = [i for i, n in enumerate(sizes) if n >= threshold]
                if big:
                    shm_index, seq, counts = await self._send_big(frames, sizes, big)
            return self._write_socket(stream, frames, sizes, shm_index, seq, counts)

    async def _send_big(self, frames, sizes, big):
        channel, capacity, comm_id = self._peer_channel
        total = sum(sizes[i] for i in big)
        if total + 64 * 1024 > capacity:  # cannot fit the peer's heap even when it is empty
            _ledger.add(fallback_too_large=1)
            return [], 0, []
        buffers, counts = _coalesce_shards(frames, big)
        self._tx_seq += 1
        seq = self._tx_seq
        loop = asyncio.get_running_loop()
        try:
            why = await loop.run_in_executor(_copy_executor(), _send_shm, channel, comm_id, seq, buffers)
        except BaseException:
            # Cancelled or failed while the copy may have been published: the peer would see a
            # message without its control message, so this comm cannot go on (as Dask's TCP comm
            # aborts on a write interrupted half way).
            self.abort()
            raise
        if why is not None:
            self._tx_seq -= 1  # nothing was published under this number
            _ledger.add(**{why: 1})
            return [], 0, []
        _ledger.add(shm_messages=1, shm_frames=len(big), shm_bytes=total)
        return big, seq, counts

    def _write_socket(self, stream, frames, sizes, shm_index, seq, counts):
        skip = set(shm_index)
        inband = [(f, n) for i, (f, n) in enumerate(zip(frames, sizes)) if i not in skip]
        header = struct.pack(f"<QQ{len(sizes)}Q", len(sizes), len(shm_index), *sizes)
        if shm_index:
            header += struct.pack(f"<{len(shm_index)}QQQ{len(counts)}Q", *shm_index, seq, len(counts), *counts)
        body_nbytes = sum(n for _, n in inband)
        header = _U64.pack(len(header) + body_nbytes) + header
        pieces = [header] + [f for f, n in inband if n]
        total = len(header) + body_nbytes
        if total < 2**17:  # small enough to join: one write, one segment (as Dask's TCP comm does)
            pieces = [b"".join(pieces)]
        _ledger.add(socket_messages=1, socket_frames=len(inband), socket_bytes=body_nbytes)
        try:
            for piece in pieces:
                piece = ensure_memoryview(piece)
                for start in range(0, piece.nbytes, _tcp.OPENSSL_MAX_CHUNKSIZE):
                    if stream._write_buffer is None:
                        raise StreamClosedError()
                    chunk = piece[start:start + _tcp.OPENSSL_MAX_CHUNKSIZE]
                    stream._write_buffer.append(chunk)
                    stream._total_write_index += chunk.nbytes
            stream.write(b"")
        except StreamClosedError as e:
            self._stream_closed(e)
        except BaseException:
            self.abort()
            raise
        return total + sum(sizes[i] for i in shm_index)

    def _stream_closed(self, e):
        """The socket closed under a read or write: this comm is closed; raises CommClosedError."""
        self.stream = None
        self._closed = True
        self._release()
        if not sys.is_finalizing():
            _tcp.convert_stream_closed_error(self, e)

    # -- read

    async def read(self, deserializers=None):
        stream = self.stream
        if stream is None:
            raise CommClosedError()
        try:
            (total,) = _U64.unpack(await stream.read_bytes(_U64.size))
            data = host_array(total)
            for start in range(0, total, _tcp.OPENSSL_MAX_CHUNKSIZE):
                chunk = data[start:start + _tcp.OPENSSL_MAX_CHUNKSIZE]
                n = await stream.read_into(chunk)
                assert n == chunk.nbytes, (n, chunk.nbytes)
        except StreamClosedError as e:
            self._stream_closed(e)
        except BaseException:
            # Cancelled or failed half way: what is left on the socket cannot be trusted (Dask's
            # TCP comm does the same, GitHub dask/distributed#4133).
            self.abort()
            raise
        try:
            frames = await self._frames_of(data)
        except CommClosedError:
            self.abort()
            raise
        except BaseException:
            self.abort()
            raise
        try:
            return await from_frames(frames, deserialize=self.deserialize, deserializers=deserializers,
                                     allow_offload=self.allow_offload)
        except EOFError:
            self.abort()
            raise CommClosedError("aborted stream on truncated data")

    async def _frames_of(self, data):
        view = data
        if view.nbytes < 16:
            raise CommClosedError("pw: truncated message header")
        nframes, n_shm = struct.unpack_from("<QQ", view, 0)
        if nframes > view.nbytes // 8 or n_shm > nframes:
            raise CommClosedError(f"pw: bad message header ({nframes} frames, {n_shm} in shared memory)")
        offset = 16
        header_words = nframes + (n_shm + 2 if n_shm else 0)
        if offset + 8 * header_words > view.nbytes:
            raise CommClosedError("pw: truncated message header")
        sizes = struct.unpack_from(f"<{nframes}Q", view, offset)
        offset += 8 * nframes
        shm_index, seq, counts = [], 0, []
        if n_shm:
            *shm_index, seq, n_buffers = struct.unpack_from(f"<{n_shm}QQQ", view, offset)
            offset += 8 * (n_shm + 2)
            if n_buffers > n_shm or offset + 8 * n_buffers > view.nbytes:
                raise CommClosedError(f"pw: bad message header ({n_buffers} shared-memory buffers)")
            counts = struct.unpack_from(f"<{n_buffers}Q", view, offset)
            offset += 8 * n_buffers
        if (any(i >= nframes for i in shm_index) or len(set(shm_index)) != len(shm_index)
                or sum(counts) != n_shm or not all(counts)):
            raise CommClosedError("pw: bad shared-memory frame index")
        shm_frames = {}
        if shm_index:
            buffers = await self._take_shm(seq)
            if len(buffers) != len(counts):
                raise CommClosedError(f"pw: {len(buffers)} shared-memory buffers where {len(counts)} were named")
            frame_indices = iter(shm_index)
            for buffer, count in zip(buffers, counts):
                start = 0
                for _ in range(count):
                    i = next(frame_indices)
                    if start + sizes[i] > buffer.nbytes:
                        raise CommClosedError(f"pw: shared-memory buffer of {buffer.nbytes} bytes too small")
                    # One frame, or a slice: shards of one buffer stay views of the same object.
                    shm_frames[i] = buffer if count == 1 else buffer[start:start + sizes[i]]
                    start += sizes[i]
                if start != buffer.nbytes:
                    raise CommClosedError(f"pw: shared-memory buffer of {buffer.nbytes} bytes, frames of {start}")
            _ledger.add(shm_received_messages=1, shm_received_bytes=sum(b.nbytes for b in buffers))
        frames = []
        for i, n in enumerate(sizes):
            if i in shm_frames:
                frames.append(shm_frames[i])
            else:
                if offset + n > view.nbytes:
                    raise CommClosedError("pw: truncated message")
                frames.append(view[offset:offset + n])
                offset += n
        if offset != view.nbytes:
            raise CommClosedError("pw: message longer than its frames")
        return frames

    async def _take_shm(self, seq):
        inbox = _inbox
        if self._rx_comm_id is None or inbox is None:
            raise CommClosedError("pw: peer sent through shared memory but this comm has no channel")
        if seq != self._rx_seq + 1:
            raise CommClosedError(f"pw: shared-memory sequence {seq} after {self._rx_seq}")
        buffers = inbox.take(self._rx_comm_id, seq)
        if buffers is None:
            # Published before the control message was written, so normally already queued;
            # poll with growing pauses (never blocking the loop) in case it is not visible yet.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _SHM_MISSING_TIMEOUT
            pause = 0.0001
            while buffers is None:
                if loop.time() > deadline:
                    raise CommClosedError(f"pw: shared-memory message {seq} never arrived")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                buffers = inbox.take(self._rx_comm_id, seq)
        self._rx_seq = seq
        return buffers

    # -- close

    def _release(self):
        self._release_inbox()
        if self._peer_channel is not None:
            _forget_sender_if_peer_died(self._peer_channel[0])

    async def close(self):
        try:
            await super().close()
        finally:
            self._release()

    def abort(self):
        super().abort()
        self._release()


class PicklewireConnector(_tcp.TCPConnector):
    prefix = "pw://"
    comm_class = PicklewireComm
    encrypted = False

    async def connect(self, address, deserialize=True, **connection_args):
        comm = await super().connect(address, deserialize=deserialize, **connection_args)
        try:
            await comm._pw_handshake()
        except BaseException:
            comm.abort()
            raise
        return comm


class PicklewireListener(_tcp.TCPListener):
    prefix = "pw://"
    comm_class = PicklewireComm
    encrypted = False

    async def on_connection(self, comm, handshake_overrides=None):
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
        try:
            await asyncio.wait_for(comm._pw_handshake(), timeout=timeout)
        except Exception as e:
            comm.abort()
            raise CommClosedError(f"pw: hello with {comm.peer_address} failed: {e}") from e
        await super().on_connection(comm, handshake_overrides)

    def stop(self):
        super().stop()
        clean_stale_segments()


class PicklewireBackend(_tcp.BaseTCPBackend):
    """The ``pw`` scheme: addresses are ``host:port`` as for ``tcp``."""

    _connector_class = PicklewireConnector
    _listener_class = PicklewireListener
