"""NCI Gadi's queue rules, kept as data, and the check a ``profile = "gadi"`` target runs before submitting.

Gadi's ``qsub`` refuses a request that breaks a queue limit with exit code 32
and no message, so rx_magic checks the request first and says what to change.

Source: NCI's public Gadi documentation, the "Queue Limits" and "Queue
Structure" pages (https://opus.nci.org.au/display/Help/Queue+Limits,
https://opus.nci.org.au/display/Help/Queue+Structure), as best known on
2026-11-23; written from that documentation, not read from a live Gadi. Sizes
are what a job may ask for (``qsub -l mem=``), in PBS's binary GB. When NCI
changes a limit, change it here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..resources import Resources, format_size, format_walltime

GB = 2**30
HOUR = 3600


@dataclass(frozen=True)
class GadiQueue:
    """One queue's limits; ``walltime_limits`` is (up to this many cores, longest walltime in seconds), ascending."""

    name: str
    cores_per_node: int
    mem_per_node: int
    jobfs_per_node: int
    max_cores: int
    walltime_limits: tuple[tuple[int, int], ...]
    gpus_per_node: int = 0
    cores_per_gpu: int = 0          # GPU queues: ncpus must be exactly this many per gpu


def _hours(*bands: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple((cores, hours * HOUR) for cores, hours in bands)


QUEUES: dict[str, GadiQueue] = {queue.name: queue for queue in (
    GadiQueue("normal", 48, 190 * GB, 400 * GB, 20736, _hours((672, 48), (1440, 24), (2976, 10), (20736, 5))),
    GadiQueue("express", 48, 190 * GB, 400 * GB, 3200, _hours((480, 24), (3200, 5))),
    GadiQueue("hugemem", 48, 1470 * GB, 1400 * GB, 192, _hours((48, 48), (96, 24), (192, 5))),
    GadiQueue("megamem", 48, 2990 * GB, 1400 * GB, 96, _hours((48, 48), (96, 24))),
    GadiQueue("gpuvolta", 48, 382 * GB, 400 * GB, 960, _hours((96, 48), (192, 24), (960, 5)),
              gpus_per_node=4, cores_per_gpu=12),
    GadiQueue("normalbw", 28, 256 * GB, 400 * GB, 10080, _hours((336, 48), (840, 24), (1736, 10), (10080, 5))),
    GadiQueue("expressbw", 28, 256 * GB, 400 * GB, 1848, _hours((280, 24), (1848, 5))),
    GadiQueue("normalsr", 104, 500 * GB, 400 * GB, 10400, _hours((1040, 48), (2080, 24), (4160, 10), (10400, 5))),
    GadiQueue("expresssr", 104, 500 * GB, 400 * GB, 2080, _hours((1040, 24), (2080, 5))),
    GadiQueue("copyq", 48, 190 * GB, 400 * GB, 1, _hours((1, 10))),
    # dgxa100's local disk (jobfs) is the figure here least sure to match NCI's page: check it there first
    GadiQueue("dgxa100", 128, 2000 * GB, 28000 * GB, 256, _hours((128, 48), (256, 5)),
              gpus_per_node=8, cores_per_gpu=16),
)}

#: The queue a job without ``-q`` lands in.
DEFAULT_QUEUE = "normal"
GPU_QUEUES = tuple(name for name, queue in QUEUES.items() if queue.gpus_per_node)


def describe_queue(name: str) -> str:
    """One line of a queue's rules, for messages: cores, memory, jobfs, walltime by core count."""
    queue = QUEUES.get(name)
    if queue is None:
        return f"rx_magic keeps no rules for queue {name!r}; Gadi's queues are {', '.join(QUEUES)}"
    bands, low = [], 1
    for cores, seconds in queue.walltime_limits:
        bands.append(f"{format_walltime(seconds)} for {low}-{cores} cores" if cores > low
                     else f"{format_walltime(seconds)} for {cores} core{'' if cores == 1 else 's'}")
        low = cores + 1
    gpus = (f", {queue.gpus_per_node} gpus per node with ncpus = {queue.cores_per_gpu} x ngpus"
            if queue.gpus_per_node else ", no gpus")
    return (f"queue {queue.name}: {queue.cores_per_node} cores, {format_size(queue.mem_per_node)} memory and "
            f"{format_size(queue.jobfs_per_node)} jobfs per node, at most {queue.max_cores} "
            f"core{'' if queue.max_cores == 1 else 's'}{gpus}; walltime up to {', '.join(bands)}")


def check_request(resources: Resources) -> list[str]:
    """Each way ``resources`` breaks Gadi's queue rules, one line each naming the rule and the fix; [] when none."""
    name = resources.queue or DEFAULT_QUEUE
    queue = QUEUES.get(name)
    if queue is None:
        return []   # a queue rx_magic keeps no rules for (Gadi has special-access ones): qsub will judge it
    ncpus, ngpus = resources.ncpus or 1, resources.ngpus or 0
    problems: list[str] = []

    if ngpus and not queue.gpus_per_node:
        problems.append(f"queue {name} has no gpus but --ngpus {ngpus} was asked for: "
                        f"use --queue {' or '.join(GPU_QUEUES)}, or drop --ngpus")
    if queue.gpus_per_node:
        if not ngpus:
            problems.append(f"queue {name} is for gpu jobs: ask for --ngpus N with --ncpus {queue.cores_per_gpu}*N "
                            f"(e.g. --ngpus 1 --ncpus {queue.cores_per_gpu}), or use a cpu queue such as normal")
        elif ncpus != queue.cores_per_gpu * ngpus:
            problems.append(f"queue {name} needs ncpus = {queue.cores_per_gpu} x ngpus: with --ngpus {ngpus} ask for "
                            f"--ncpus {queue.cores_per_gpu * ngpus}, not {ncpus}")
        if ngpus > queue.gpus_per_node and ngpus % queue.gpus_per_node:
            whole = _round_to(ngpus, queue.gpus_per_node)
            problems.append(f"queue {name} has {queue.gpus_per_node} gpus per node, so a job on more than one node "
                            f"takes whole nodes: ask for --ngpus {whole} --ncpus {whole * queue.cores_per_gpu}, "
                            f"or {queue.gpus_per_node} gpus or fewer")

    if ncpus > queue.max_cores:
        problems.append(f"queue {name} allows at most {queue.max_cores} core{'' if queue.max_cores == 1 else 's'} "
                        f"per job, not {ncpus}: ask for --ncpus {queue.max_cores} or fewer")
    elif ncpus > queue.cores_per_node and ncpus % queue.cores_per_node and not (queue.gpus_per_node and ngpus):
        problems.append(f"queue {name} has {queue.cores_per_node} cores per node, so a job on more than one node "
                        f"takes whole nodes: ask for --ncpus {_round_to(ncpus, queue.cores_per_node)} "
                        f"or {queue.cores_per_node} or fewer")

    nodes = max(1, math.ceil(ncpus / queue.cores_per_node))
    span = f"{nodes} node{'' if nodes == 1 else 's'} ({ncpus} core{'' if ncpus == 1 else 's'})"
    if resources.mem is not None and resources.mem > nodes * queue.mem_per_node:
        fits = sorted((other for other in QUEUES.values() if other.mem_per_node * nodes >= resources.mem
                       and not other.gpus_per_node and other.max_cores > 1 and not other.name.startswith("express")),
                      key=lambda other: other.mem_per_node)
        bigger = [other.name for other in fits]
        problems.append(f"queue {name} has {format_size(queue.mem_per_node)} memory per node, so {span} can have at "
                        f"most {format_size(nodes * queue.mem_per_node)}, not {format_size(resources.mem)}: ask for "
                        f"less --mem, more --ncpus"
                        + (f", or a bigger-memory queue ({', '.join(bigger)})" if bigger else ""))
    if resources.jobfs is not None and resources.jobfs > nodes * queue.jobfs_per_node:
        problems.append(f"queue {name} has {format_size(queue.jobfs_per_node)} jobfs per node, so {span} can have at "
                        f"most {format_size(nodes * queue.jobfs_per_node)}, not {format_size(resources.jobfs)}: ask "
                        f"for --jobfs {format_size(nodes * queue.jobfs_per_node)} or less, or use /scratch")
    if resources.walltime is not None:
        low = 1
        for cores, longest in queue.walltime_limits:
            if ncpus <= cores:
                if resources.walltime > longest:
                    problems.append(
                        f"queue {name} allows at most {format_walltime(longest)} of walltime for {low}-{cores} cores, "
                        f"not {format_walltime(resources.walltime)}: ask for --walltime {format_walltime(longest)} "
                        "or less" + (", or fewer cores" if low > 1 else ""))
                break
            low = cores + 1
    return problems


def _round_to(count: int, unit: int) -> int:
    return math.ceil(count / unit) * unit
