"""picklewire.futures: a ProcessPoolExecutor whose large arguments and results travel through shared memory.

    from picklewire.futures import ProcessPoolExecutor      # instead of concurrent.futures
    with ProcessPoolExecutor(max_workers=4) as ex:
        out = ex.submit(np.fft.fft2, image).result()        # `out` lives in shared memory

A drop-in for `concurrent.futures.ProcessPoolExecutor`: same constructor (plus keyword-only
`inband_threshold` and `capacity`), `submit`, `map(chunksize=)`, `shutdown(wait, cancel_futures)`,
futures, remote tracebacks, `BrokenProcessPool`, every start method. It subclasses the standard
executor, so its scheduling, worker management and failure detection are CPython's own; what
changes is how a task's call and its result are pickled.

How a task travels
------------------
The standard executor pickles `(fn, args, kwargs)` in the call queue's feeder thread and the
result in the worker, at the default protocol, and pushes all bytes through a pipe. Here both are
pickled at protocol 5 with a `buffer_callback` (by multiprocessing's ForkingPickler, so the same
objects pickle as before). Buffers smaller than `inband_threshold` stay in the stream; when the
others total less than MIN_OOB_MESSAGE_BYTES (128 KiB), they are attached as bytes and everything
rides the pipe as before. A task of scalars is submitted as it is (the executor's own worker
initializer tells each worker which executor it serves), and a scalar result skips the protocol-5
pass too: tiny tasks cost what they cost in the standard executor. When they total more:

* results (worker -> caller): the caller binds one results channel `shm://<key>-r` that every
  worker connects to. The worker sends `(tag, stream) + buffers` there (one copy into pre-faulted,
  reused slots; none for arrays made with `picklewire.futures.empty()`), and only a small ticket
  naming the tag goes through the pipe. The caller's result thread, unpickling the ticket, takes
  the message with that tag from the channel and rebuilds the objects on the received memory:
  zero copies, writable arrays that stay valid as long as they are referenced.
* arguments (caller -> worker): the call queue is shared, so when the caller pickles a task it
  does not know which worker will run it. The ticket therefore names the task, and the worker that
  unpickles it *pulls* the payload: it binds its own channel `shm://<key>-a<pid>-<generation>`
  (once, at its first large task), asks the caller over the small request channel
  `shm://<key>-q`, and the caller's service thread sends the payload into the worker's channel
  (one copy). The worker's arrays are views of its own slots.

Fallbacks never lose a task: a result that does not fit the results channel (it is full, or the
result is larger than `capacity`, or the channel is not bound yet) travels in-band through the
pipe and is counted in `stats()` with its reason; a worker whose argument channel is full binds a
fresh, larger generation (arrays it still holds keep the old one alive).

Lifetimes and names: `<key>` is `pwfut-<caller pid>-<caller start time>-<n>`. The caller unlinks
every channel of the executor when it shuts down (after its workers exited); workers unlink their
own at exit. If the caller is SIGKILLed, every channel's creator is dead, so `picklewire shm clean`
removes them, and the next executor started on this host removes every `pwfut-*` channel whose
caller process is gone.
"""

import atexit
import collections
import copyreg
import io
import itertools
import os
import pickle
import threading
import time
import types
import weakref
from concurrent.futures import process as _cf_process
from multiprocessing import util as _mp_util
from multiprocessing.reduction import ForkingPickler

import picklewire

__all__ = ["ProcessPoolExecutor", "empty", "DEFAULT_INBAND_THRESHOLD", "MIN_OOB_MESSAGE_BYTES", "DEFAULT_CAPACITY"]

# Buffers smaller than this stay in the pickle stream (as with picklewire.Sender).
DEFAULT_INBAND_THRESHOLD = 4096
# A task or result goes through shared memory only when its out-of-band buffers total at least
# this: below it, the pipe beats a trip through shared memory (measured by bench/futures_bench.py
# `sizes`: std 0.26 ms vs 0.35 ms at 64 KiB, 1.1 ms vs 0.31 ms at 256 KiB).
MIN_OOB_MESSAGE_BYTES = 128 * 1024
# Per channel (the caller's results channel, each worker's argument channel), pre-faulted at bind.
DEFAULT_CAPACITY = 256 * 1024 * 1024

_SHM_DIR = "/dev/shm"
_SHM_FILE_PREFIX = "picklewire."  # transport/shm/segment.cpp: kNamePrefix
_KEY_PREFIX = "pwfut-"
_REQUEST_CAPACITY = 1 << 20  # pull requests are a few dozen bytes and travel inline in lanes
_HEADER = 8  # little-endian tag in front of every stream we send through a channel
# Status byte after the tag of a reply on a worker's argument channel.
_REPLY_PAYLOAD, _REPLY_NO_ROOM, _REPLY_UNKNOWN = 0, 1, 2
# Room kept free beyond a message's bytes: slot headers and 64-byte granularity of the heap.
_SLACK = 64 * 1024
# Waits are sliced so that a dead peer is noticed.
_POLL = 0.5


# --------------------------------------------------------------------------------------------
# Processes and names


def _start_time(pid):
    """Field 22 of /proc/PID/stat (0 when the process does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
    except OSError:
        return 0
    fields = line[line.rfind(b")") + 2:].split()  # the command name may contain spaces
    return int(fields[19])


def _alive(pid, start):
    return pid > 0 and _start_time(pid) == start


def _parse_key_owner(name):
    """'pwfut-<pid>-<start>-...' -> (pid, start), or None."""
    if not name.startswith(_KEY_PREFIX):
        return None
    parts = name[len(_KEY_PREFIX):].split("-")
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _unlink_channels(prefix):
    """Removes /dev/shm/picklewire.<prefix>* (channels whose receivers are gone or done)."""
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return
    for file in names:
        if file.startswith(_SHM_FILE_PREFIX + prefix):
            try:
                os.unlink(os.path.join(_SHM_DIR, file))
            except OSError:
                pass


_stale_swept = False


def _sweep_stale_channels():
    """Unlinks the channels of executors whose caller process died (once per process)."""
    global _stale_swept
    if _stale_swept:
        return
    _stale_swept = True
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return
    for file in names:
        if not file.startswith(_SHM_FILE_PREFIX + _KEY_PREFIX):
            continue
        owner = _parse_key_owner(file[len(_SHM_FILE_PREFIX):])
        if owner is not None and not _alive(*owner):
            try:
                os.unlink(os.path.join(_SHM_DIR, file))
            except OSError:
                pass


_own_start = None
_key_counter = itertools.count()


def _new_key():
    global _own_start
    if _own_start is None:
        _own_start = _start_time(os.getpid())
    return f"{_KEY_PREFIX}{os.getpid()}-{_own_start}-{next(_key_counter)}"


# --------------------------------------------------------------------------------------------
# Pickling with out-of-band buffers


# Objects that never carry an out-of-band buffer: a task made of these only (the common tiny task)
# is handed to the standard pickling as is, with no probing pickle pass.
_PLAIN = frozenset({int, float, bool, type(None), complex, str, bytes})
_PLAIN_FUNCTIONS = frozenset({types.FunctionType, types.BuiltinFunctionType})


def _plain_call(fn, args, kwargs):
    if type(fn) not in _PLAIN_FUNCTIONS:
        return False
    for a in args:
        if type(a) not in _PLAIN:
            return False
    for a in kwargs.values():
        if type(a) not in _PLAIN:
            return False
    return True


_dispatch = [None, None]  # (sizes of the two tables it was built from, the table)


def _dispatch_table():
    """ForkingPickler's reducers over copyreg's, rebuilt only when either table grew.

    ForkingPickler itself copies both tables on every construction, which costs more than
    pickling a small task."""
    key = (len(copyreg.dispatch_table), len(ForkingPickler._extra_reducers))
    if _dispatch[0] != key:
        table = dict(copyreg.dispatch_table)
        table.update(ForkingPickler._extra_reducers)
        _dispatch[:] = [key, table]
    return _dispatch[1]


def _pickle_oob(obj, threshold, ledger_small):
    """(stream, [PickleBuffer >= threshold], their total bytes), by multiprocessing's ForkingPickler."""
    large = []
    sizes = [0, 0]  # large bytes, small bytes

    def route(pb):
        try:
            n = pb.raw().nbytes
        except BufferError:  # not contiguous: let the pickler decide (it copies in-band)
            return True
        if n >= threshold:
            large.append(pb)
            sizes[0] += n
            return False
        sizes[1] += n
        return True

    f = io.BytesIO()
    pickler = pickle.Pickler(f, 5, buffer_callback=route)
    pickler.dispatch_table = _dispatch_table()  # what multiprocessing's ForkingPickler pickles with
    pickler.dump(obj)
    ledger_small[0] += sizes[1]
    return f.getvalue(), large, sizes[0]


def _inline_buffers(large):
    """The buffers, copied to travel in-band (counted by the callers). bytearray, not bytes: the
    arrays rebuilt on them must stay writable, as with the standard executor (a buffer pickled
    read-only still arrives read-only: its READONLY_BUFFER marker says so)."""
    return [bytearray(pb.raw()) for pb in large]


class _Ledger:
    """One direction's accounting: what went in-band, out-of-band, and every copy with its reason."""

    def __init__(self):
        self.lock = threading.Lock()
        # Messages of scalars only, pickled by the standard machinery (no stream of ours). The
        # result thread alone counts results, without the lock (the tiny tasks' hot path).
        self.plain_messages = 0
        self.messages = 0
        self.inband_messages = 0
        self.oob_messages = 0
        self.inband_bytes = 0
        self.oob_buffers = 0
        self.oob_bytes = 0
        self.zero_copy_bytes = 0
        self.copies = collections.Counter()
        self.copied_bytes = collections.Counter()

    def inband(self, stream_bytes, small_bytes, fallback_reason=None, fallback_bytes=0, fallback_buffers=0):
        with self.lock:
            self.messages += 1
            self.inband_messages += 1
            self.inband_bytes += stream_bytes
            if small_bytes:
                self.copies["inband_below_threshold"] += 1
                self.copied_bytes["inband_below_threshold"] += small_bytes
            if fallback_reason:
                self.copies[fallback_reason] += fallback_buffers
                self.copied_bytes[fallback_reason] += fallback_bytes

    def oob(self, stream_bytes, small_bytes, buffers, nbytes, copied, zero_copy):
        with self.lock:
            self.messages += 1
            self.oob_messages += 1
            self.inband_bytes += stream_bytes
            self.oob_buffers += buffers
            self.oob_bytes += nbytes
            self.zero_copy_bytes += zero_copy
            if small_bytes:
                self.copies["inband_below_threshold"] += 1
                self.copied_bytes["inband_below_threshold"] += small_bytes
            if copied:
                self.copies["copied_into_segment"] += 1
                self.copied_bytes["copied_into_segment"] += copied

    def as_dict(self):
        with self.lock:
            return {
                "messages": self.messages + self.plain_messages,
                "inband_messages": self.inband_messages + self.plain_messages,
                "oob_messages": self.oob_messages,
                "inband_bytes": self.inband_bytes,
                "oob_buffers": self.oob_buffers,
                "oob_bytes": self.oob_bytes,
                "zero_copy_bytes": self.zero_copy_bytes,
                "copies": dict(self.copies),
                "copied_bytes": dict(self.copied_bytes),
                "total_copied_bytes": sum(self.copied_bytes.values()),
            }


# --------------------------------------------------------------------------------------------
# Caller side


_callers = {}  # key -> _CallerChannels, for result tickets unpickled by the executor's result thread
_callers_lock = threading.Lock()


class _CallerChannels:
    """The caller's half of one executor: its channels, the pull service, the ledgers."""

    def __init__(self, key, threshold, capacity):
        self.key = key
        self.threshold = threshold
        self.capacity = capacity
        self.lock = threading.Lock()
        self.to_workers = _Ledger()
        self.from_workers = _Ledger()
        self.results_rx = None
        self.results_binding = False
        self.requests_rx = None
        self.service = None
        self.pending = {}  # tag -> (stream, large buffers, nbytes): payloads not pulled yet
        self.stash = {}  # tag -> (stream, buffers): results received before their ticket
        self.senders = {}  # worker pid -> (channel name, Sender)
        self.tags = itertools.count(1)
        self.manager_thread = None
        self.closing = False
        self.closed = False
        self.owner_pid = os.getpid()
        self._ctx = (key, threshold, capacity)

    # ---- channels

    def bind_results(self):
        """Binds the results channel (idempotent); False if it cannot be bound (then results go in-band)."""
        with self.lock:
            if self.results_rx is not None or self.closing:
                return self.results_rx is not None
            try:
                self.results_rx = picklewire.Receiver.bind(f"shm://{self.key}-r", capacity=self.capacity)
            except picklewire.Error:
                return False
            return True

    def bind_results_in_background(self):
        with self.lock:
            if self.results_rx is not None or self.results_binding or self.closing:
                return
            self.results_binding = True
        threading.Thread(target=self.bind_results, name="picklewire-futures-bind", daemon=True).start()

    def start_service(self):
        """Binds the request channel and starts the thread that serves pulls (idempotent)."""
        with self.lock:
            if self.service is not None:
                return True
            if self.closing:
                return False
            try:
                self.requests_rx = picklewire.Receiver.bind(f"shm://{self.key}-q", capacity=_REQUEST_CAPACITY)
            except picklewire.Error:
                return False
            self.service = threading.Thread(target=self._serve, name="picklewire-futures-pull", daemon=True)
            self.service.start()
            return True

    def ctx(self):
        """What a worker needs to know of its executor (the initializer and every ticket carry it)."""
        return self._ctx

    # ---- arguments: the pull service

    def _serve(self):
        rx = self.requests_rx
        while True:
            try:
                tag, pid, name = rx.recv(timeout=_POLL)
            except picklewire.TimeoutError:
                if self.closing:
                    return
                continue
            except Exception:  # a request we cannot read: no worker can be told, serve the others
                if self.closing:
                    return
                continue
            try:
                self._answer(tag, pid, name)
            except picklewire.PeerGone:
                pass  # the worker died: the executor notices through its sentinel
            except Exception:
                # Whatever went wrong, the worker must not wait for a reply forever: it gives up
                # on the task, which breaks the pool as an unreadable task does.
                try:
                    self._sender_for(pid, name).send_message(tag.to_bytes(_HEADER, "little") + bytes([_REPLY_UNKNOWN]))
                except Exception:
                    pass

    def _sender_for(self, pid, name):
        known = self.senders.get(pid)
        if known is not None and known[0] == name:
            return known[1]
        if known is not None:
            known[1].close()
        tx = picklewire.Sender.connect(f"shm://{name}")
        self.senders[pid] = (name, tx)
        return tx

    def _answer(self, tag, pid, name):
        tx = self._sender_for(pid, name)
        entry = self.pending.get(tag)
        if entry is None:
            tx.send_message(tag.to_bytes(_HEADER, "little") + bytes([_REPLY_UNKNOWN]))
            return
        stream, large, nbytes = entry
        st = tx.stats()
        if st["capacity"] - st["bytes_in_use"] < nbytes + len(stream) + _SLACK:
            tx.send_message(tag.to_bytes(_HEADER, "little") + bytes([_REPLY_NO_ROOM]))
            return
        before = st["copied_bytes"]["copied_into_segment"]
        try:
            # The room was checked: the timeout only guards against fragmentation.
            tx.send_message(tag.to_bytes(_HEADER, "little") + bytes([_REPLY_PAYLOAD]) + stream, large, timeout=2.0)
        except picklewire.TimeoutError:
            tx.send_message(tag.to_bytes(_HEADER, "little") + bytes([_REPLY_NO_ROOM]))
            return
        copied = tx.stats()["copied_bytes"]["copied_into_segment"] - before
        del self.pending[tag]
        self.to_workers.oob(len(stream), 0, len(large), nbytes, copied, nbytes - copied)

    # ---- results

    def take_result(self, tag):
        """The result message `tag` (its ticket arrived, so the message is already queued)."""
        item = self.stash.pop(tag, None)
        deadline = time.monotonic() + 60
        while item is None:
            try:
                stream, buffers = self.results_rx.recv_message(timeout=_POLL)
            except picklewire.TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"picklewire.futures: result {tag} announced but not in shm://{self.key}-r")
                continue
            got = int.from_bytes(stream[:_HEADER], "little")
            if got == tag:
                item = (stream[_HEADER:], buffers)
            else:
                self.stash[got] = (stream[_HEADER:], buffers)
        return item

    # ---- teardown

    def close(self):
        """Stops the service, closes the channels, unlinks every channel of this executor.

        Called once the executor's workers have exited. Objects already received stay valid: a
        closed receiver's memory is released when the last view of it is gone."""
        if os.getpid() != self.owner_pid:
            return  # a forked child's copy (its atexit, a finalizer): the channels are the parent's
        with self.lock:
            if self.closed:
                return
            self.closing = True
        if self.service is not None and self.service is not threading.current_thread():
            self.service.join()
        with self.lock:
            self.closed = True
            for _, tx in self.senders.values():
                tx.close()
            self.senders.clear()
            self.pending.clear()
            self.stash.clear()
            for rx in (self.requests_rx, self.results_rx):
                if rx is not None:
                    rx.close()
        _unlink_channels(self.key + "-")  # argument channels of workers that died
        with _callers_lock:
            _callers.pop(self.key, None)

    def close_after(self, manager_thread):
        """close() once `manager_thread` (which joins the workers) is done."""
        if manager_thread is None or not manager_thread.is_alive() or manager_thread is threading.current_thread():
            self.close()
            return

        def wait_then_close():
            manager_thread.join()
            self.close()

        threading.Thread(target=wait_then_close, name="picklewire-futures-close", daemon=True).start()


@atexit.register
def _close_all_callers():
    # atexit runs after threading's exit hooks, which joined the executors' manager threads.
    with _callers_lock:
        states = list(_callers.values())
    for state in states:
        state.close()


class _Task:
    """What `submit` hands the standard executor: pickles as an in-band stream or as a pull ticket."""

    __slots__ = ("state", "fn", "args", "kwargs")

    def __init__(self, state, fn, args, kwargs):
        self.state = state
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self):  # runs in the call queue's feeder thread, in the caller
        st = self.state
        small = [0]
        stream, large, nbytes = _pickle_oob((self.fn, self.args, self.kwargs), st.threshold, small)
        if not large:
            st.to_workers.inband(len(stream), small[0])
            return _load_inline_task, (st.ctx(), stream)
        if nbytes < MIN_OOB_MESSAGE_BYTES:
            st.to_workers.inband(len(stream) + nbytes, small[0] + nbytes)
            return _load_inline_task, (st.ctx(), stream, _inline_buffers(large))
        # A large argument usually means a large result: have the results channel ready.
        st.bind_results()
        if st.start_service():
            tag = next(st.tags)
            st.pending[tag] = (stream, large, nbytes)
            # The pull service counts the message once it is sent; the small buffers count now.
            if small[0]:
                with st.to_workers.lock:
                    st.to_workers.copies["inband_below_threshold"] += 1
                    st.to_workers.copied_bytes["inband_below_threshold"] += small[0]
            return _load_pulled_task, (st.ctx(), tag, nbytes + len(stream))
        buffers = _inline_buffers(large)
        st.to_workers.inband(len(stream) + nbytes, small[0], "inband_no_channel", nbytes, len(large))
        return _load_inline_task, (st.ctx(), stream, buffers)


def _load_shm_result(key, tag, nbytes, nbuffers, copied, stream_bytes, small=0):
    """Unpickled by the executor's result thread: the result travelled through the results channel."""
    with _callers_lock:
        st = _callers.get(key)
    if st is None or st.results_rx is None:
        raise RuntimeError(f"picklewire.futures: result for an executor that is closed ({key})")
    stream, buffers = st.take_result(tag)
    st.from_workers.oob(stream_bytes, small, nbuffers, nbytes, copied, nbytes - copied)
    return pickle.loads(stream, buffers=buffers)


def _load_plain_result(key, value):
    """Unpickled by the executor's result thread: a scalar result, pickled by the standard machinery."""
    st = _callers.get(key)
    if st is not None:
        st.from_workers.plain_messages += 1
    return value


def _load_inline_result(key, stream, small=0, buffers=(), reason=None, nbytes=0):
    """Unpickled by the executor's result thread: the result came through the pipe."""
    with _callers_lock:
        st = _callers.get(key)
    if st is not None:
        st.from_workers.inband(len(stream) + nbytes, small, reason, nbytes, len(buffers))
        if reason == "inband_no_channel":
            st.bind_results_in_background()  # large results are coming: the next ones go through shm
    return pickle.loads(stream, buffers=buffers)


# --------------------------------------------------------------------------------------------
# Worker side


_workers = {}  # key -> _WorkerChannels (a worker serves one executor, but stay general)
_current = None  # the _WorkerChannels of the task running in this process (for empty())
_this_worker = None  # set by _init_worker in every worker process


class _WorkerChannels:
    def __init__(self, key, threshold, capacity):
        self.key = key
        self.threshold = threshold
        self.capacity = capacity
        self.caller = _parse_key_owner(key)
        self.results_tx = None
        self.requests_tx = None
        self.arg_rx = None
        self.arg_name = None
        self.generation = 0
        self.tags = itertools.count(1)
        self.pid = os.getpid()
        # Workers leave through os._exit: multiprocessing's exit finalizers are the hook that runs.
        _mp_util.Finalize(None, self.close, exitpriority=100)

    def close(self):
        if os.getpid() != self.pid:
            return  # a copy inherited by a process this worker forked: the channels are the worker's
        for endpoint in (self.arg_rx, self.results_tx, self.requests_tx):
            if endpoint is not None:
                endpoint.close()
        self.arg_rx = self.results_tx = self.requests_tx = None

    def results_sender(self):
        """The Sender of the caller's results channel, or None while the caller has not bound it.

        The caller binds it on first need (a large argument, or a first large result that had to
        travel in-band); a failed attempt costs one failed shm_open, so the worker just tries again
        at its next large result."""
        if self.results_tx is None:
            try:
                # send_timeout bounds allocate() (empty()) on a full channel; sends pass their own.
                self.results_tx = picklewire.Sender.connect(f"shm://{self.key}-r", send_timeout=2.0)
            except picklewire.Error:
                return None
        return self.results_tx

    def caller_alive(self):
        return self.caller is not None and _alive(*self.caller)

    # ---- arguments

    def _arg_receiver(self, nbytes, force_new=False):
        rx = self.arg_rx
        if rx is not None and not force_new:
            st = rx.stats()
            if st["capacity"] - st["bytes_in_use"] >= nbytes + _SLACK:
                return rx
        if rx is not None:
            rx.close()  # arrays received from it stay valid; its memory goes with the last of them
        self.generation += 1
        self.arg_name = f"{self.key}-a{self.pid}-{self.generation}"
        self.arg_rx = picklewire.Receiver.bind(f"shm://{self.arg_name}", capacity=max(self.capacity, nbytes + 2 * _SLACK))
        return self.arg_rx

    def pull(self, tag, nbytes):
        if self.requests_tx is None:
            self.requests_tx = picklewire.Sender.connect(f"shm://{self.key}-q")
        force_new = False
        for _attempt in range(3):
            rx = self._arg_receiver(nbytes, force_new)
            self.requests_tx.send((tag, self.pid, self.arg_name))
            while True:
                try:
                    stream, buffers = rx.recv_message(timeout=_POLL)
                except picklewire.TimeoutError:
                    if not self.caller_alive():
                        raise picklewire.PeerGone(f"picklewire.futures: the caller of task {tag} is gone")
                    continue
                if int.from_bytes(stream[:_HEADER], "little") == tag:
                    break
            status = stream[_HEADER]
            if status == _REPLY_PAYLOAD:
                return stream[_HEADER + 1:], buffers
            if status == _REPLY_UNKNOWN:
                raise RuntimeError(f"picklewire.futures: the caller no longer holds the arguments of task {tag}")
            force_new = True  # no room in our channel: a fresh generation
        raise picklewire.TransportError(f"picklewire.futures: no room for the arguments of task {tag}")


def _worker_for(ctx):
    key, threshold, capacity = ctx
    w = _workers.get(key)
    if w is None:
        w = _workers[key] = _WorkerChannels(key, threshold, capacity)
    return w


def _init_worker(ctx, initializer, initargs):
    """The initializer the standard executor runs in every worker: ours, then the user's."""
    global _this_worker
    _this_worker = _worker_for(ctx)
    if initializer is not None:
        initializer(*initargs)


class _LoadedTask:
    __slots__ = ("worker", "fn", "args", "kwargs")

    def __init__(self, worker, call):
        self.worker = worker
        self.fn, self.args, self.kwargs = call


def _load_inline_task(ctx, stream, buffers=()):
    return _LoadedTask(_worker_for(ctx), pickle.loads(stream, buffers=buffers))


def _load_pulled_task(ctx, tag, nbytes):
    # Runs while the worker unpickles its call item, like the standard executor's own unpickling:
    # a failure here breaks the pool exactly as an unpicklable task does there.
    w = _worker_for(ctx)
    stream, buffers = w.pull(tag, nbytes)
    return _LoadedTask(w, pickle.loads(stream, buffers=buffers))


def _run_plain(fn, /, *args, **kwargs):
    """What the worker runs for a task of scalars: submitted as is; a result that is a scalar too goes
    back as is (not counted in the ledger: wrapping it measurably slowed 2000-tiny-task runs), any
    other result is wrapped for the trip through shared memory."""
    global _current
    worker = _this_worker
    previous, _current = _current, worker
    try:
        result = fn(*args, **kwargs)
    finally:
        _current = previous
    if type(result) in _PLAIN:
        return result
    return _Result(result, worker)


def _run_task(task):
    """The function the standard worker loop calls; returns the result wrapped for the trip back."""
    global _current
    previous, _current = _current, task.worker
    try:
        result = task.fn(*task.args, **task.kwargs)
    finally:
        _current = previous
    return _Result(result, task.worker)


class _Result:
    """A worker's result: pickles in-band, or sends itself through the results channel."""

    __slots__ = ("value", "worker")

    def __init__(self, value, worker):
        self.value = value
        self.worker = worker

    def __reduce__(self):  # runs in the worker, inside result_queue.put
        w = self.worker
        if type(self.value) in _PLAIN:
            return _load_plain_result, (w.key, self.value)
        small = [0]
        stream, large, nbytes = _pickle_oob(self.value, w.threshold, small)
        if not large:
            return _load_inline_result, (w.key, stream, small[0]) if small[0] else (w.key, stream)
        if nbytes < MIN_OOB_MESSAGE_BYTES:
            return _load_inline_result, (w.key, stream, small[0] + nbytes, _inline_buffers(large), None, nbytes)
        reason = self._send(stream, large, nbytes, small[0])
        if isinstance(reason, tuple):
            return reason
        return _load_inline_result, (w.key, stream, small[0], _inline_buffers(large), reason, nbytes)

    def _send(self, stream, large, nbytes, small):
        """The ticket of the result sent through shm, or the reason it must go in-band."""
        w = self.worker
        total = nbytes + len(stream) + _HEADER
        if total + _SLACK > w.capacity:
            return "inband_exceeds_capacity"
        tx = w.results_sender()
        if tx is None:
            return "inband_no_channel"
        try:
            st = tx.stats()
            if st["capacity"] - st["bytes_in_use"] < total + _SLACK:
                return "inband_segment_full"
            before = st["copied_bytes"]["copied_into_segment"]
            tag = (w.pid << 40) | next(w.tags)
            # The room was checked: the timeout only guards against other workers racing for it.
            tx.send_message(tag.to_bytes(_HEADER, "little") + stream, large, timeout=1.0)
            copied = tx.stats()["copied_bytes"]["copied_into_segment"] - before
        except picklewire.TimeoutError:
            return "inband_segment_full"
        except picklewire.Error:
            return "inband_transport_error"
        return _load_shm_result, (w.key, tag, nbytes, len(large), copied, len(stream), small)


def empty(shape, dtype="float64", order="C"):
    """An uninitialised array for a task's result: returned from the task, it travels with zero copies.

    Inside a worker of a picklewire ProcessPoolExecutor whose results channel is bound, the array
    is allocated in that channel; elsewhere (in the caller, or before the first large transfer
    bound the channel) it is an ordinary `numpy.empty`."""
    import numpy as np

    w = _current
    tx = w.results_sender() if w is not None else None
    if tx is not None:
        try:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            st = tx.stats()
            if st["capacity"] - st["bytes_in_use"] >= nbytes + _SLACK:
                return tx.empty(shape, dtype, order)
        except picklewire.Error:
            pass
    return np.empty(shape, dtype, order)


# --------------------------------------------------------------------------------------------
# The executor


class ProcessPoolExecutor(_cf_process.ProcessPoolExecutor):
    """concurrent.futures.ProcessPoolExecutor whose large arguments and results go through shared memory.

    inband_threshold: buffers (numpy array data, PickleBuffer) smaller than this many bytes are
        pickled in-band. The others go through shared memory when they total at least
        MIN_OOB_MESSAGE_BYTES (128 KiB) in one task or result; below that, the pipe is faster.
    capacity: bytes of each shared-memory channel (the caller's results channel and, once a
        worker received a large argument, that worker's argument channel). Channels are bound on
        first need and pre-faulted then. A result larger than `capacity`, or one that finds the
        results channel full because the caller still holds earlier results, travels in-band.
    """

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                 max_tasks_per_child=None, *, inband_threshold=DEFAULT_INBAND_THRESHOLD,
                 capacity=DEFAULT_CAPACITY):
        if not isinstance(inband_threshold, int) or isinstance(inband_threshold, bool) or inband_threshold < 0:
            raise ValueError(f"inband_threshold must be an int >= 0, got {inband_threshold!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 4 * _SLACK:
            raise ValueError(f"capacity must be an int >= {4 * _SLACK}, got {capacity!r}")
        super().__init__(max_workers, mp_context, initializer, initargs, max_tasks_per_child=max_tasks_per_child)
        _sweep_stale_channels()
        state = _CallerChannels(_new_key(), inband_threshold, capacity)
        with _callers_lock:
            _callers[state.key] = state
        self._picklewire = state
        # The standard executor validated the user's initializer and passes these two attributes
        # to every worker it starts: ours runs first and tells the worker which executor it serves.
        self._initializer = _init_worker
        self._initargs = (state.ctx(), initializer, initargs)
        # Dropped without shutdown(): the standard manager thread shuts the workers down; close
        # our channels after it.
        weakref.finalize(self, _close_when_collected, state)

    def submit(self, fn, /, *args, **kwargs):
        st = self._picklewire
        if _plain_call(fn, args, kwargs):
            # Nothing to send out-of-band: the standard pickling as is (the tiny tasks' hot path).
            with st.to_workers.lock:
                st.to_workers.plain_messages += 1
            future = super().submit(_run_plain, fn, *args, **kwargs)
        else:
            future = super().submit(_run_task, _Task(st, fn, args, kwargs))
        if self._picklewire.manager_thread is None:
            self._picklewire.manager_thread = self._executor_manager_thread
        return future

    def shutdown(self, wait=True, *, cancel_futures=False):
        # The standard shutdown forgets its manager thread; a second shutdown() must still wait for it.
        manager_thread = self._executor_manager_thread or self._picklewire.manager_thread
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._picklewire.close_after(manager_thread)

    def stats(self):
        """The copy ledgers: {'to_workers': {...}, 'from_workers': {...}, 'channels': {...}}.

        Per direction: messages (tasks / results; a scalar result of a task whose arguments are all
        scalars goes back as the standard executor sends it and is not counted), how many went
        in-band (through the pipe) or
        out-of-band (through shared memory), bytes of pickle streams (`inband_bytes`), out-of-band
        buffers and bytes, bytes sent without a copy (`zero_copy_bytes`), and copies by reason:
        `copied_into_segment` (one copy into a channel), `inband_below_threshold` (small buffers
        pickled into the stream), `inband_no_channel` / `inband_segment_full` /
        `inband_exceeds_capacity` / `inband_transport_error` (large buffers that had to travel
        in-band, and why)."""
        st = self._picklewire
        channels = {}
        with st.lock:
            if st.results_rx is not None and not st.closed:
                channels["results"] = st.results_rx.stats()
        return {"to_workers": st.to_workers.as_dict(), "from_workers": st.from_workers.as_dict(),
                "channels": channels}


def _close_when_collected(state):
    state.close_after(state.manager_thread)
