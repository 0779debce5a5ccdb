"""Typing stubs for picklewire._picklewire (the C++ extension behind `import picklewire`)."""

import builtins
import os
import pickle
from types import TracebackType
from typing import Any, Iterable, Optional, Sequence, SupportsIndex, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

_Path = Union[str, os.PathLike[str]]
_BufferLike = Union[bytes, bytearray, memoryview, Any]  # any object exporting the buffer protocol

class Error(Exception): ...

class TransportError(Error, OSError):
    """A transport failed; `errno` says which kind of failure (errno.ENOENT, EADDRINUSE, ...)."""
    errno: int

class PeerGone(TransportError): ...
class TimeoutError(TransportError, builtins.TimeoutError): ...
class UnpicklingError(Error, pickle.UnpicklingError): ...

class BufferView:
    """Memory received by (or allocated from) an endpoint; valid while any view of it is alive.
    Not constructible: recv(), Sender.buffer() and Sender.empty() make them."""
    @property
    def readonly(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def address(self) -> int: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

_Shape = Union[SupportsIndex, Sequence[SupportsIndex]]

class Sender:
    """Not constructible: use Sender.connect(url, ...) or Sender.bind(url, ...)."""
    @staticmethod
    def connect(url: str, *, inband_threshold: int = 4096, send_timeout: Optional[float] = None,
        capacity: int = 268435456, slot_count: int = 4096, ring_capacity: int = 1024, lane_count: int = 64,
        spin: float = 5e-05, prefault: bool = True,
        compress: bool = False, compress_min_bytes: int = 65536, shuffle: bool = True,
        send_hwm: int = 1000, recv_hwm: int = 1000, max_message_bytes: int = -1,
        heartbeat: float = 1.0, heartbeat_timeout: float = 0.0, linger: Optional[float] = 1.0, immediate: bool = True,
        same_host: bool = True, same_host_min_bytes: int = 65536, same_host_capacity: int = 536870912,
        curve_server_secret_key_file: Optional[_Path] = None, curve_server_public_key_file: Optional[_Path] = None,
        curve_client_secret_key_file: Optional[_Path] = None, curve_client_public_key_file: Optional[_Path] = None,
        curve_authorized_clients_file: Optional[_Path] = None) -> Sender: ...
    @staticmethod
    def bind(url: str, *, inband_threshold: int = 4096, send_timeout: Optional[float] = None,
        capacity: int = 268435456, slot_count: int = 4096, ring_capacity: int = 1024, lane_count: int = 64,
        spin: float = 5e-05, prefault: bool = True,
        compress: bool = False, compress_min_bytes: int = 65536, shuffle: bool = True,
        send_hwm: int = 1000, recv_hwm: int = 1000, max_message_bytes: int = -1,
        heartbeat: float = 1.0, heartbeat_timeout: float = 0.0, linger: Optional[float] = 1.0, immediate: bool = True,
        same_host: bool = True, same_host_min_bytes: int = 65536, same_host_capacity: int = 536870912,
        curve_server_secret_key_file: Optional[_Path] = None, curve_server_public_key_file: Optional[_Path] = None,
        curve_client_secret_key_file: Optional[_Path] = None, curve_client_public_key_file: Optional[_Path] = None,
        curve_authorized_clients_file: Optional[_Path] = None) -> Sender: ...
    def send(self, obj: Any, timeout: Optional[float] = None) -> None: ...
    def send_message(self, stream: _BufferLike, buffers: Iterable[_BufferLike] = (),
                     timeout: Optional[float] = None) -> None: ...
    def buffer(self, nbytes: int) -> memoryview: ...
    def empty(self, shape: _Shape, dtype: DTypeLike = "float64", order: str = "C") -> np.ndarray: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def url(self) -> str: ...
    def __enter__(self) -> Sender: ...
    def __exit__(self, *exc: object) -> bool: ...

class Receiver:
    """Not constructible: use Receiver.bind(url, ...) or Receiver.connect(url, ...)."""
    @staticmethod
    def bind(url: str, *, inband_threshold: int = 4096, send_timeout: Optional[float] = None,
        capacity: int = 268435456, slot_count: int = 4096, ring_capacity: int = 1024, lane_count: int = 64,
        spin: float = 5e-05, prefault: bool = True,
        compress: bool = False, compress_min_bytes: int = 65536, shuffle: bool = True,
        send_hwm: int = 1000, recv_hwm: int = 1000, max_message_bytes: int = -1,
        heartbeat: float = 1.0, heartbeat_timeout: float = 0.0, linger: Optional[float] = 1.0, immediate: bool = True,
        same_host: bool = True, same_host_min_bytes: int = 65536, same_host_capacity: int = 536870912,
        curve_server_secret_key_file: Optional[_Path] = None, curve_server_public_key_file: Optional[_Path] = None,
        curve_client_secret_key_file: Optional[_Path] = None, curve_client_public_key_file: Optional[_Path] = None,
        curve_authorized_clients_file: Optional[_Path] = None) -> Receiver: ...
    @staticmethod
    def connect(url: str, *, inband_threshold: int = 4096, send_timeout: Optional[float] = None,
        capacity: int = 268435456, slot_count: int = 4096, ring_capacity: int = 1024, lane_count: int = 64,
        spin: float = 5e-05, prefault: bool = True,
        compress: bool = False, compress_min_bytes: int = 65536, shuffle: bool = True,
        send_hwm: int = 1000, recv_hwm: int = 1000, max_message_bytes: int = -1,
        heartbeat: float = 1.0, heartbeat_timeout: float = 0.0, linger: Optional[float] = 1.0, immediate: bool = True,
        same_host: bool = True, same_host_min_bytes: int = 65536, same_host_capacity: int = 536870912,
        curve_server_secret_key_file: Optional[_Path] = None, curve_server_public_key_file: Optional[_Path] = None,
        curve_client_secret_key_file: Optional[_Path] = None, curve_client_public_key_file: Optional[_Path] = None,
        curve_authorized_clients_file: Optional[_Path] = None) -> Receiver: ...
    def recv(self, timeout: Optional[float] = None) -> Any: ...
    def recv_message(self, timeout: Optional[float] = None) -> Tuple[memoryview, list[memoryview]]: ...
    def stats(self) -> dict[str, Any]: ...
    def segment_range(self, obj: Any) -> Optional[Tuple[int, int]]: ...
    def owns(self, obj: Any) -> bool: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def url(self) -> str: ...
    def __enter__(self) -> Receiver: ...
    def __exit__(self, *exc: object) -> bool: ...

def loads_safe(data: _BufferLike, buffers: Iterable[_BufferLike] = (),
               allowed: Iterable[Union[str, type, Any]] = ()) -> Any: ...
