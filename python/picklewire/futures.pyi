"""Typing stubs for picklewire.futures (a ProcessPoolExecutor over shared memory)."""

import concurrent.futures
from multiprocessing.context import BaseContext
from typing import Any, Callable, Optional, Sequence, SupportsIndex, Union

import numpy as np
from numpy.typing import DTypeLike

DEFAULT_INBAND_THRESHOLD: int
MIN_OOB_MESSAGE_BYTES: int
DEFAULT_CAPACITY: int

class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    def __init__(self, max_workers: Optional[int] = None, mp_context: Optional[BaseContext] = None,
                 initializer: Optional[Callable[..., object]] = None, initargs: tuple[Any, ...] = (),
                 max_tasks_per_child: Optional[int] = None, *, inband_threshold: int = 4096,
                 capacity: int = 268435456) -> None: ...
    def stats(self) -> dict[str, dict[str, Any]]: ...

def empty(shape: Union[SupportsIndex, Sequence[SupportsIndex]], dtype: DTypeLike = "float64",
          order: str = "C") -> np.ndarray: ...
