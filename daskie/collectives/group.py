"""A communicator for tasks that run at the same time on different workers.

:class:`Group` wraps one gloo process group (torch's ``ProcessGroupGloo``, created directly,
so a worker process can hold several in turn without torch's global default group) and
implements on its point-to-point ``send``/``recv``:

* ``"ring"`` — reduce-scatter then all-gather around the ring: each rank sends
  ``2 (n - 1) / n`` of the payload, whatever n (the bandwidth-optimal all-reduce);
* ``"ps"`` — a parameter server: rank 0 receives every contribution, sums and sends back;
* ``"tree"`` — a binomial tree reduce to rank 0 and a broadcast back down;
* ``"gloo"`` — gloo's own ``allreduce``.

Every operation waits at most ``timeout`` seconds: a peer that died or never came makes
the others raise :class:`GroupError` instead of hanging. Every operation is timed and
recorded in :attr:`Group.log`. Payloads are float32 or float64 tensors; ``compress="fp16"``
sends half-precision payloads with error feedback (the rounding error of one call is added
to the next call's input under the same ``key``), accumulating in the tensor's own dtype.
Small tensors are fused into buckets of ``bucket_mb`` (:meth:`Group.allreduce_many`), and
large messages go out in pieces of ``chunk_mb`` (one 50 MB gloo message ran at half the
speed of the same bytes in pieces).

Ranks call the same operations in the same order (SPMD); tags are derived from an operation
counter, so messages of different operations never mix.

Devices: tensors stay where they are. At the first operation on a tensor the ranks tell each
other where theirs live, and :func:`backend_for` picks the transport once for the group: NCCL
(a ``ProcessGroupNCCL`` on the same store, the tensors never leave the GPU; every all-reduce
is NCCL's own, recorded as method ``"nccl"``) when every rank is on CUDA, gloo otherwise (a
rank's CUDA tensor then goes through a host copy). Timeouts, retries and errors are the
same on both.
"""

from __future__ import annotations

import datetime
import math
import os
import threading
import time
from contextlib import contextmanager

import torch

from daskie.errors import DaskieError, SpecError

__all__ = ["Group", "GroupError", "METHODS", "local_groups", "free_port", "backend_for"]

#: All-reduce methods.
METHODS = ("gloo", "ring", "ps", "tree")

#: Default all-reduce method. Measured on loopback (benchmarks/collectives.py): gloo's own
#: all-reduce was the fastest at every size among 2 and 4 processes; the ring wins between
#: hosts with per-link bandwidth, where it moves the least data per link.
DEFAULT_METHOD = "gloo"


class GroupError(DaskieError):
    """A collective failed: a peer died, never came, or the operation timed out."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for the group's rendezvous store)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def backend_for(devices) -> str:
    """The ``torch.distributed`` backend of a group whose ranks hold their tensors on
    ``devices`` (one per rank: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, torch devices).

    ``"nccl"`` when every rank is on a CUDA device, ``"gloo"`` for CPU and mixed groups
    (NCCL carries only CUDA tensors). NCCL also needs each rank on its own GPU: give every
    rank's worker one GPU (``CUDA_VISIBLE_DEVICES``; :func:`daskie.cluster.local_cluster`).
    """
    kinds = [torch.device(d).type for d in devices]
    if not kinds:
        raise SpecError("backend_for needs the device of at least one rank")
    return "nccl" if all(k == "cuda" for k in kinds) else "gloo"


#: Device kinds as the ranks exchange them when they agree on a backend.
_KINDS = ("cpu", "cuda", "meta")


def _flat_views(tensors, flat):
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


class Group:
    """One rank of a communicator of ``size`` ranks.

    Parameters
    ----------
    rank, size : int
        This rank and the number of ranks.
    host, port : str, int
        Address of the rendezvous store, served by rank 0 (``host`` must be rank 0's address).
    timeout : float
        Seconds any operation (and the rendezvous) may take before :class:`GroupError`.
    local_host : str, optional
        Address this rank's gloo device binds to (default: ``host`` when it is a loopback
        address, else the interface named by ``GLOO_SOCKET_IFNAME``, else the host name).
    method : str
        Default all-reduce method, one of :data:`METHODS`.
    compress : str or None
        Default compression of all-reduce payloads (``"fp16"`` or None).
    bucket_mb, chunk_mb : float
        Bucket size for fusing small tensors; piece size of large point-to-point messages.
    spin_s : float
        Seconds a rank waiting for a collective (gloo's all-reduce, all-gather, broadcast)
        polls it, yielding the CPU, before it blocks. A blocked waiter on a virtual machine
        wakes up a timer tick late, which cost a few ms per step; 0 blocks at once.
    nccl : bool
        Let a group whose ranks are all on CUDA use NCCL (:func:`backend_for`); False: gloo
        always (ranks that are threads of one process share one GPU, which NCCL refuses).
    """

    def __init__(self, rank: int, size: int, host: str, port: int, *, timeout: float = 60.0,
                 local_host: str | None = None, method: str = DEFAULT_METHOD,
                 compress: str | None = None, bucket_mb: float = 16.0, chunk_mb: float = 4.0,
                 spin_s: float = 0.05, nccl: bool = True):
        from torch.distributed import ProcessGroupGloo, TCPStore

        if method not in METHODS:
            raise SpecError(f"method must be one of {METHODS}, got {method!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise SpecError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if compress not in (None, "fp16"):
            raise SpecError(f"compress must be None or 'fp16', got {compress!r}")
        self.rank, self.size, self.method, self.compress = int(rank), int(size), method, compress
        self.timeout = float(timeout)
        if not (isinstance(spin_s, (int, float)) and spin_s >= 0):
            raise SpecError(f"spin_s must be a non-negative number of seconds, got {spin_s!r}")
        self.spin_s = float(spin_s)
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.chunk_bytes = max(1024, int(chunk_mb * 2**20))
        self.log: list[dict] = []
        self._ops = 0
        self._feedback: dict = {}
        self.backend = None  # agreed at the first operation on a tensor (backend_for)
        self.allow_nccl = bool(nccl)
        self._nccl = None
        td = datetime.timedelta(seconds=self.timeout)
        try:
            self._store = TCPStore(host, int(port), self.size, self.rank == 0, timeout=td,
                                   wait_for_workers=False)
            opts = ProcessGroupGloo._Options()
            opts._timeout = td
            opts._devices = [self._device(host, local_host)]
            self._pg = ProcessGroupGloo(self._store, self.rank, self.size, opts)
        except RuntimeError as exc:
            raise GroupError(f"rank {rank} of {size} could not join the group at {host}:{port} "
                             f"within {timeout} s: {exc}") from exc

    @staticmethod
    def _device(host, local_host):
        from torch.distributed import ProcessGroupGloo

        if local_host is not None:
            return ProcessGroupGloo.create_device(hostname=local_host)
        if os.environ.get("GLOO_SOCKET_IFNAME"):
            return ProcessGroupGloo.create_device(interface=os.environ["GLOO_SOCKET_IFNAME"])
        if host.startswith("127.") or host == "localhost":
            return ProcessGroupGloo.create_device(hostname="127.0.0.1")
        return ProcessGroupGloo.create_default_device()

    # --- plumbing ----------------------------------------------------------------------
    def _agree(self, tensor) -> str:
        """The group's backend, agreed by all ranks at their first operation on a tensor
        (the ranks call operations in the same order, so they all agree here at once)."""
        if self.backend is None:
            kind = torch.zeros(self.size, dtype=torch.float64, device="cpu")
            kind[self.rank] = _KINDS.index(tensor.device.type) if tensor.device.type in _KINDS else 0
            if self.size > 1:
                self._wait(self._pg.allreduce([kind]), "backend agreement")
            self.backend = backend_for([_KINDS[int(k)] for k in kind.tolist()])
            if not self.allow_nccl:
                self.backend = "gloo"
            if self.backend == "nccl" and self.size > 1:
                self._nccl = self._make_nccl(tensor.device)
        return self.backend

    def _make_nccl(self, device):
        from torch.distributed import PrefixStore

        try:
            from torch.distributed import ProcessGroupNCCL
        except ImportError as exc:  # a torch build without NCCL
            raise GroupError(f"rank {self.rank}: every rank is on CUDA but this torch has no "
                             "NCCL") from exc
        torch.cuda.set_device(device)
        opts = ProcessGroupNCCL.Options()
        opts._timeout = datetime.timedelta(seconds=self.timeout)
        try:
            return ProcessGroupNCCL(PrefixStore("nccl", self._store), self.rank, self.size, opts)
        except RuntimeError as exc:
            raise GroupError(f"rank {self.rank} of {self.size} could not start NCCL: {exc}") from exc

    def _transport(self, tensor):
        """``(process group, host copy needed)`` for an operation on ``tensor``: NCCL for a
        group agreed on it; gloo otherwise, through a CPU copy for a tensor off the CPU."""
        if self._agree(tensor) == "nccl" and self._nccl is not None:
            return self._nccl, False
        return self._pg, tensor.device.type != "cpu"

    def _wait(self, work, what, poll=True):
        # Poll before blocking: a blocked waiter sleeps, and on a virtual machine an idle
        # vCPU is woken a timer tick later (measured with plain gloo processes on this 2-vCPU
        # host: a 64 KB all-reduce took 3.6-4.0 ms when waited on, 0.3 ms when polled).
        # gloo's send/recv works report completion only from wait(): those block at once.
        if poll and self.spin_s > 0 and not work.is_completed():
            deadline = time.perf_counter() + self.spin_s
            while not work.is_completed() and time.perf_counter() < deadline:
                os.sched_yield()
        t0 = time.perf_counter()
        try:
            work.wait(datetime.timedelta(seconds=self.timeout))
        except RuntimeError as exc:
            waited = time.perf_counter() - t0
            # say what happened: a peer that went away fails at once, one that never answers
            # runs into the timeout
            how = (f"timed out after {self.timeout:g} s (a peer died or never came)"
                   if waited >= 0.9 * self.timeout else
                   f"failed after {waited:.1f} s (a peer went away)")
            raise GroupError(f"rank {self.rank} of {self.size}: {what} {how}: {exc}") from exc

    def _next_tag(self) -> int:
        self._ops += 1
        return (self._ops % 20_000) * 100_000

    def _pieces(self, t):
        n = max(1, self.chunk_bytes // t.element_size())
        return [t[s:s + n] for s in range(0, t.numel(), n)] or [t]

    def _exchange(self, send, dst, recv, src, tag):
        """Send ``send`` to ``dst`` while receiving ``recv`` from ``src`` (both may be None)."""
        pg, host = self._transport(send if send is not None else recv)
        if host:  # gloo carries CPU tensors: through host copies
            h_send = None if send is None else send.cpu()
            h_recv = None if recv is None else torch.empty(recv.shape, dtype=recv.dtype)
            self._exchange_on(pg, h_send, dst, h_recv, src, tag)
            if recv is not None:
                recv.copy_(h_recv)
            return
        self._exchange_on(pg, send, dst, recv, src, tag)

    def _exchange_on(self, pg, send, dst, recv, src, tag):
        works = []
        if recv is not None:
            works += [pg.recv([p], src, tag + i) for i, p in enumerate(self._pieces(recv))]
        if send is not None:
            works += [pg.send([p.contiguous()], dst, tag + i)
                      for i, p in enumerate(self._pieces(send))]
        for w in works:
            self._wait(w, f"exchange with ranks {src}/{dst}", poll=False)

    def _record(self, op, method, nbytes, t0, **extra):
        self.log.append({"op": op, "method": method, "bytes": int(nbytes),
                         "seconds": time.perf_counter() - t0, "ranks": self.size, **extra})

    @property
    def sync_s(self) -> float:
        """Seconds spent in this group's operations so far."""
        return float(sum(r["seconds"] for r in self.log))

    # --- point to point ----------------------------------------------------------------
    def send(self, tensor, dst: int, tag: int = 0):
        """Send ``tensor`` to rank ``dst`` (blocks until sent or the timeout)."""
        t0 = time.perf_counter()
        self._exchange(tensor.contiguous(), dst, None, None, 10_000 * (1 + tag))
        self._record("send", "p2p", tensor.numel() * tensor.element_size(), t0)

    def recv(self, tensor, src: int, tag: int = 0):
        """Receive into ``tensor`` from rank ``src`` (blocks until received or the timeout)."""
        t0 = time.perf_counter()
        self._exchange(None, None, tensor, src, 10_000 * (1 + tag))
        self._record("recv", "p2p", tensor.numel() * tensor.element_size(), t0)
        return tensor

    def barrier(self):
        """Wait for every rank."""
        t0 = time.perf_counter()
        self.allreduce(torch.zeros(1, dtype=torch.float32, device="cpu"), method="gloo", compress=None,
                       record=False)
        self._record("barrier", "gloo", 0, t0)

    # --- all-reduce --------------------------------------------------------------------
    def allreduce(self, tensor, *, op: str = "sum", method: str | None = None,
                  compress: str | None = "group", key: str = "default", record: bool = True):
        """Sum (or average, ``op="mean"``) ``tensor`` over the ranks, in place; returns it.

        Parameters
        ----------
        tensor : torch.Tensor
            float32 or float64, any shape (contiguous).
        op : str
            ``"sum"`` or ``"mean"``.
        method : str, optional
            One of :data:`METHODS` (default: the group's).
        compress : str or None
            ``"fp16"``: half-precision payloads with error feedback under ``key``; None: full
            precision; default: the group's ``compress``.
        """
        if compress == "group":
            compress = self.compress
        if tensor.dtype not in (torch.float32, torch.float64):
            raise SpecError(f"allreduce needs a float32 or float64 tensor, got {tensor.dtype}")
        if op not in ("sum", "mean"):
            raise SpecError(f"op must be 'sum' or 'mean', got {op!r}")
        method = self.method if method is None else method
        if method not in METHODS:
            raise SpecError(f"method must be one of {METHODS}, got {method!r}")
        if compress not in (None, "fp16"):
            raise SpecError(f"compress must be None or 'fp16', got {compress!r}")
        t0 = time.perf_counter()
        flat = tensor.view(-1)
        self._err = None
        if compress == "fp16":
            fb = self._feedback.get(key)
            if fb is not None and fb.shape == flat.shape:
                flat += fb
            half = flat.to(torch.float16)
            # Every rounding this rank makes of what enters the sum (its input here, partial
            # sums it forwards, the reduced chunk it owns) is added to its next input.
            self._err = flat - half.to(flat.dtype)
            flat.copy_(half.to(flat.dtype))
        if self.size > 1:
            if self._agree(flat) == "nccl":
                # NCCL's own all-reduce is the ring on the GPUs' links; the hand-written
                # methods' simultaneous send/recv pairs can deadlock under NCCL
                method = "nccl"
            payload = torch.float16 if compress == "fp16" else flat.dtype
            getattr(self, f"_allreduce_{'gloo' if method == 'nccl' else method}")(flat, payload)
        if compress == "fp16":
            self._feedback[key] = self._err
        if op == "mean":
            flat /= self.size
        if record:
            self._record("allreduce", method, flat.numel() * flat.element_size(), t0,
                         compress=compress or "none")
        return tensor

    def allreduce_many(self, tensors, *, key: str = "bucket", **kwargs):
        """All-reduce a list of tensors in place, fused into buckets of ``bucket_mb`` per dtype
        (one message per bucket instead of one per tensor); ``kwargs`` as :meth:`allreduce`."""
        by_dtype: dict = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        buckets = []
        for dtype, group in by_dtype.items():
            bucket, nbytes = [], 0
            for t in group:
                size = t.numel() * t.element_size()
                if bucket and nbytes + size > self.bucket_bytes:
                    buckets.append(bucket)
                    bucket, nbytes = [], 0
                bucket.append(t)
                nbytes += size
            buckets.append(bucket)
        for i, bucket in enumerate(buckets):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            self.allreduce(flat, key=f"{key}.{i}", **kwargs)
            for b, v in zip(bucket, _flat_views(bucket, flat)):
                b.copy_(v)
        return tensors

    def _allreduce_gloo(self, flat, payload):
        """The backend's own all-reduce (gloo's, or NCCL's in a group agreed on it)."""
        pg, host = self._transport(flat)
        buf = flat if payload == flat.dtype else flat.to(payload)
        buf = buf.cpu() if host else buf
        self._wait(pg.allreduce([buf]), "allreduce")
        if buf is not flat:
            flat.copy_(buf.to(flat.dtype))

    def _round(self, t, payload, where=None):
        """``t`` as ``payload`` for sending; the rounding error goes to the feedback buffer
        (``where``: the slice of the flat tensor ``t`` occupies, default all)."""
        out = t.to(payload)
        if payload != t.dtype and self._err is not None:
            err = self._err if where is None else self._err[where]
            err += t - out.to(t.dtype)
        return out

    def _chunks(self, flat):
        n, p = flat.numel(), self.size
        bounds = [n * i // p for i in range(p + 1)]
        return [flat[bounds[i]:bounds[i + 1]] for i in range(p)]

    def _allreduce_ring(self, flat, payload):
        p, r = self.size, self.rank
        right, left = (r + 1) % p, (r - 1) % p
        chunks = self._chunks(flat)
        n = flat.numel()
        spans = [slice(n * i // p, n * (i + 1) // p) for i in range(p)]
        tag = self._next_tag()
        for s in range(p - 1):  # reduce-scatter
            c_out, c_in = (r - s) % p, (r - s - 1) % p
            out, inc = chunks[c_out], chunks[c_in]
            buf = torch.empty(inc.numel(), dtype=payload, device=inc.device)
            send = self._round(out, payload, spans[c_out]) if s else out.to(payload)
            self._exchange(send, right, buf, left, tag + s * 1000)
            inc += buf.to(inc.dtype)
        c_own = (r + 1) % p
        own = chunks[c_own]
        if payload != flat.dtype:  # every rank ends with the same (rounded) numbers
            own.copy_(self._round(own, payload, spans[c_own]).to(flat.dtype))
        for s in range(p - 1):  # all-gather
            out, inc = chunks[(r + 1 - s) % p], chunks[(r - s) % p]
            buf = torch.empty(inc.numel(), dtype=payload, device=inc.device)
            self._exchange(out.to(payload), right, buf, left, tag + (p + s) * 1000)
            inc.copy_(buf.to(inc.dtype))

    def _allreduce_ps(self, flat, payload):
        tag = self._next_tag()
        if self.rank == 0:
            buf = torch.empty(flat.numel(), dtype=payload, device=flat.device)
            for src in range(1, self.size):  # receive, then sum
                self._exchange(None, None, buf, src, tag)
                flat += buf.to(flat.dtype)
            if payload != flat.dtype:
                flat.copy_(self._round(flat, payload).to(flat.dtype))
            out = flat.to(payload)
            for dst in range(1, self.size):
                self._exchange(out, dst, None, None, tag + 1000)
        else:
            self._exchange(flat.to(payload), 0, None, None, tag)
            buf = torch.empty(flat.numel(), dtype=payload, device=flat.device)
            self._exchange(None, None, buf, 0, tag + 1000)
            flat.copy_(buf.to(flat.dtype))

    def _allreduce_tree(self, flat, payload):
        p, r = self.size, self.rank
        tag = self._next_tag()
        buf = torch.empty(flat.numel(), dtype=payload, device=flat.device)
        mask = 1
        while mask < p:  # binomial reduce to rank 0
            if r & mask:
                send = self._round(flat, payload) if mask > 1 else flat.to(payload)
                self._exchange(send, r - mask, None, None, tag + mask * 10)
                break
            if r + mask < p:
                self._exchange(None, None, buf, r + mask, tag + mask * 10)
                flat += buf.to(flat.dtype)
            mask <<= 1
        if r == 0 and payload != flat.dtype:
            flat.copy_(self._round(flat, payload).to(flat.dtype))
        top = 1 << max(0, math.ceil(math.log2(p)) - 1) if p > 1 else 0
        mask = top
        while mask >= 1:  # broadcast back down the same tree
            if r % (2 * mask) == 0 and r + mask < p:
                self._exchange(flat.to(payload), r + mask, None, None, tag + 5_000 + mask * 10)
            elif r % (2 * mask) == mask:
                self._exchange(None, None, buf, r - mask, tag + 5_000 + mask * 10)
                flat.copy_(buf.to(flat.dtype))
            mask >>= 1

    # --- gathers -------------------------------------------------------------------------
    def allgather(self, tensor, sizes=None) -> list:
        """Every rank's ``tensor`` (flattened; any length per rank), in rank order.

        ``sizes`` (the length of every rank's tensor), when the caller knows them, saves
        the exchange of the lengths.
        """
        t0 = time.perf_counter()
        flat = tensor.reshape(-1).contiguous()
        if sizes is None:
            sizes = torch.zeros(self.size, dtype=torch.float64, device="cpu")
            sizes[self.rank] = flat.numel()
            if self.size > 1:
                self._wait(self._pg.allreduce([sizes]), "allgather sizes")
            sizes = [int(n) for n in sizes.tolist()]
        if len(sizes) != self.size or sizes[self.rank] != flat.numel():
            raise SpecError(f"allgather sizes {sizes} do not match {self.size} ranks with "
                            f"{flat.numel()} values on rank {self.rank}")
        n_max = max(sizes)
        pg, host = self._transport(flat)
        where = torch.device("cpu") if host else flat.device
        padded = torch.zeros(n_max, dtype=flat.dtype, device=where)
        padded[:flat.numel()] = flat
        outs = [torch.empty(n_max, dtype=flat.dtype, device=where) for _ in range(self.size)]
        if self.size > 1:
            self._wait(pg.allgather([outs], [padded]), "allgather")
        else:
            outs[0] = padded
        if host:
            outs = [o.to(flat.device) for o in outs]
        self._record("allgather", "gloo", n_max * flat.element_size() * self.size, t0)
        return [o[:int(n)] for o, n in zip(outs, sizes)]

    def broadcast(self, tensor, root: int = 0):
        """Copy ``tensor`` of rank ``root`` to every rank, in place; returns it."""
        t0 = time.perf_counter()
        if self.size > 1:
            pg, host = self._transport(tensor)
            buf = tensor.cpu() if host else tensor
            self._wait(pg.broadcast(buf, root), "broadcast")
            if host:
                tensor.copy_(buf)
        self._record("broadcast", "gloo", tensor.numel() * tensor.element_size(), t0)
        return tensor

    def reset(self):
        """Forget the operation log and the fp16 error feedback: the group behaves as a
        fresh one (for a group reused by the next window of a run)."""
        self.log.clear()
        self._feedback.clear()

    def close(self):
        """Release the process groups and the store."""
        self._pg = None
        self._nccl = None
        self._store = None


@contextmanager
def local_groups(size: int, *, timeout: float = 30.0, **kwargs):
    """``size`` ranks of one group in this process (one per thread), for tests and for the
    in-process path of the SPMD strategies. Yields the list of groups (rank order)."""
    port = free_port()
    groups: list = [None] * size
    errors = []

    def join(r):
        try:
            # threads of one process share its GPU: NCCL refuses two ranks on one device
            groups[r] = Group(r, size, "127.0.0.1", port, timeout=timeout,
                              **{"nccl": False, **kwargs})
        except Exception as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    try:
        yield groups
    finally:
        for g in groups:
            g.close()


def run_threads(groups, fn, rank_args):
    """Run ``fn(group, *args)`` for every rank in its own thread; results in rank order.

    The first exception of any rank is re-raised after all threads finish (a rank that fails
    makes its peers fail within the group's timeout).
    """
    results: list = [None] * len(groups)
    errors: list = []

    def main(r):
        try:
            results[r] = fn(groups[r], *rank_args[r])
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append((r, exc))

    threads = [threading.Thread(target=main, args=(r,)) for r in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        errors.sort(key=lambda e: isinstance(e[1], GroupError))  # the root cause first
        raise errors[0][1]
    return results
