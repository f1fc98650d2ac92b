"""NCI Gadi's queue rules, kept as data, and the check a ``profile = "gadi"`` target runs before submitting.

Gadi's ``qsub`` refuses a request that breaks a queue limit with exit code 32
(PBS's hook error, PBSE_HOOKERROR: Gadi's submission hooks do the checking) and
no message, so rx_magic checks the request first and says what to change.
Sizes are what a job may ask for (``qsub -l mem=``), in PBS's binary GB. When
NCI changes a limit, change it in ``QUEUES`` and nowhere else.

Sources, each read on 2026-11-23 from the stored copy in the reference
library (the copies show no page date):

[QS] NCI Help, "Queue Structure",
     https://opus.nci.org.au/pages/viewpage.action?pageId=236880996
     Only the opening of the stored copy can be read: express and normal are
     2 x 24-core Cascade Lake nodes with 192 GiB of RAM and 400 GiB of local
     SSD (jobfs) each, at most 3200 and 20736 cores a job; copyq is 6 nodes of
     2 x 24 cores; gpuvolta and dgxa100 are the only queues with GPUs.
[JC] NCI Help, "Job Costs",
     https://opus.nci.org.au/spaces/Help/pages/236880942/Job+Costs...
     gpuvolta requests must have ``ncpus = 12 x ngpus``; its cost formula
     uses 48 cores and 382 GB per node. Also the charge formula (rate x
     max(cores, memory proportion) x walltime hours) and the rates of
     normal (2), express (6) and gpuvolta (3) SU per core-hour, with a worked
     table that tests/test_gadi.py checks ``estimate_cost`` against.
[QL] NCI Help, "Queue Limits",
     https://opus.nci.org.au/spaces/Help/pages/236881198/Queue+Limits
     (formerly https://opus.nci.org.au/display/Help/Queue+Limits).
     NOT in the library. The figures marked "unchecked" below belong to it
     and were written from memory; no NCI page in the library confirms them.
     Third-party tools that cite [QL] (nf-core's NCI Gadi config,
     AcademicClusters.jl) use the same cores and memory per node, but
     nothing corroborates the walltime bands, core limits or jobfs figures.
     Check them against [QL] before relying on them.

[SIH] Sydney Informatics Hub, "nci-su-calculator", queues.js (commit 10e0b62,
     2026-01-16), https://github.com/Sydney-Informatics-Hub/nci-su-calculator
     ("See NCI Queue Limits for details"; read 2026-12-03). A third-party SU
     calculator, NOT NCI: it agrees with every walltime band, core limit and
     cores per node above, and is the only source here for normalsl,
     hugemembw, megamembw and gpuhopper (whose commit says "guessing the
     walltime/ disk. mem is approx") and for the charge rates [JC] does not
     give. Each such figure is marked "[SIH] only"; a cost worked out with an
     [SIH] rate says so on its line.

Special-access queues are passed to qsub unchecked rather than guessed at.
Rules [SIH]'s neighbours state but no source here confirms (hugemembw taking
ncpus in steps of 7, megamembw only 32 or 64) are not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model.resources import Resources, format_size, format_walltime

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


#: SU per core-hour, and the node memory a core's share of is charged as one core ("Memory Proportion" [JC]).
#: [JC] gives normal, express and gpuvolta; the rest are [SIH] only (see UNCONFIRMED_RATES). Where [SIH] gives
#: a node memory below what a job may ask for, the smaller is used: the estimate is "at most", so it errs high.
CHARGE_RATES: dict[str, tuple[float, int]] = {
    "normal": (2.0, 192 * GB),      # [JC] "2SU to run 1 CPU with 4 GiB of memory for one hour"
    "express": (6.0, 192 * GB),     # [JC] "Express charge rate is 6.0"
    "gpuvolta": (3.0, 382 * GB),    # [JC] "12 x 5 x 3 = 180 SU"; memory proportion (48/382) x mem
    "copyq": (2.0, 190 * GB),       # [SIH] only
    "hugemem": (3.0, 1470 * GB),    # [SIH] only (rate; its memory 1472GB, here the 1470GB a job may ask for)
    "megamem": (5.0, 2990 * GB),    # [SIH] only (rate; its memory 2992GB, here the 2990GB a job may ask for)
    "normalbw": (1.25, 128 * GB),   # [SIH] only; 128GB, the smaller of the two node sizes
    "expressbw": (3.75, 128 * GB),  # [SIH] only
    "normalsl": (1.5, 192 * GB),    # [SIH] only
    "hugemembw": (1.25, 1020 * GB),  # [SIH] only
    "megamembw": (1.25, 3000 * GB),  # [SIH] only
    "normalsr": (2.0, 500 * GB),    # [SIH] only (rate; its memory 512GB, here the 500GB a job may ask for)
    "expresssr": (6.0, 500 * GB),   # [SIH] only (likewise)
    "dgxa100": (4.5, 2000 * GB),    # [SIH] only
    "gpuhopper": (7.5, 1000 * GB),  # [SIH] only; its memory "approx"
}
#: Queues whose rate comes from [SIH] alone: their cost line says the rate is unconfirmed.
UNCONFIRMED_RATES = frozenset(CHARGE_RATES) - {"normal", "express", "gpuvolta"}


def estimate_cost(resources: Resources) -> str | None:
    """The most a job can cost, in SU, as NCI charges it ([JC]: rate x max(cores, memory proportion) x
    walltime hours), with the sum shown; None without a walltime or for a queue without a known rate."""
    name = resources.queue or DEFAULT_QUEUE
    queue, rate = QUEUES.get(name), CHARGE_RATES.get(name)
    if queue is None or rate is None or resources.walltime is None:
        return None
    su_per_hour, node_mem = rate
    cores = resources.ncpus or 1
    share = resources.mem * queue.cores_per_node / node_mem if resources.mem else 0.0
    charged = max(cores, share)
    hours = resources.walltime / HOUR
    basis = f"{cores} core{'' if cores == 1 else 's'}" if charged == cores else (
        f"{charged:.4g} cores' share of memory ({format_size(resources.mem)})")
    return (f"at most {su_per_hour * charged * hours:.4g} SU: {su_per_hour:g} SU/h x {basis} x "
            f"{format_walltime(resources.walltime)} in {name}"
            + (" (rate from a third-party calculator, not confirmed by NCI)" if name in UNCONFIRMED_RATES else ""))


def su_per_hour(resources: Resources) -> float | None:
    """Service units an hour of ``resources`` costs as NCI charges it (rate x max(cores, memory proportion));
    None for a queue without a known rate. What a hold costs for each hour it is held, busy or idle."""
    name = resources.queue or DEFAULT_QUEUE
    queue, rate = QUEUES.get(name), CHARGE_RATES.get(name)
    if queue is None or rate is None:
        return None
    su_per_core_hour, node_mem = rate
    share = resources.mem * queue.cores_per_node / node_mem if resources.mem else 0.0
    return su_per_core_hour * max(resources.ncpus or 1, share)


def _hours(*bands: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple((cores, hours * HOUR) for cores, hours in bands)


# Every multi-node request must be whole nodes (a multiple of cores_per_node; on GPU queues, of gpus_per_node).
QUEUES: dict[str, GadiQueue] = {queue.name: queue for queue in (
    # [QS]: 48 cores, 400GB jobfs, 20736 cores. [QS] gives 192 GiB of RAM per node; the 190GB a job may ask
    # for is unchecked ([JC] even prices a 192GB request). Walltime bands unchecked.
    GadiQueue("normal", 48, 190 * GB, 400 * GB, 20736, _hours((672, 48), (1440, 24), (2976, 10), (20736, 5))),
    # [QS]: 48 cores, 400GB jobfs, 3200 cores (not whole nodes: 3168 is the most a multi-node job can use).
    # 190GB as for normal; walltime bands unchecked.
    GadiQueue("express", 48, 190 * GB, 400 * GB, 3200, _hours((480, 24), (3200, 5))),
    # [QS]: 48 cores. Memory, jobfs, one core and 10 hours unchecked.
    GadiQueue("copyq", 48, 190 * GB, 400 * GB, 1, _hours((1, 10))),
    # unchecked: all figures.
    GadiQueue("hugemem", 48, 1470 * GB, 1400 * GB, 192, _hours((48, 48), (96, 24), (192, 5))),
    # unchecked: all figures.
    GadiQueue("megamem", 48, 2990 * GB, 1400 * GB, 96, _hours((48, 48), (96, 24))),
    # [JC]: 48 cores, 382GB, ncpus = 12 x ngpus. [QS]: a GPU queue. Unchecked: 4 gpus per node, jobfs,
    # 960 cores, walltime bands.
    GadiQueue("gpuvolta", 48, 382 * GB, 400 * GB, 960, _hours((96, 48), (192, 24), (960, 5)),
              gpus_per_node=4, cores_per_gpu=12),
    # unchecked: all figures. Nodes have 128GB or 256GB; 256GB lets a job that needs the bigger nodes through.
    GadiQueue("normalbw", 28, 256 * GB, 400 * GB, 10080, _hours((336, 48), (840, 24), (1736, 10), (10080, 5))),
    # unchecked: all figures; memory as for normalbw.
    GadiQueue("expressbw", 28, 256 * GB, 400 * GB, 1848, _hours((280, 24), (1848, 5))),
    # unchecked: all figures.
    GadiQueue("normalsr", 104, 500 * GB, 400 * GB, 10400, _hours((1040, 48), (2080, 24), (4160, 10), (10400, 5))),
    # unchecked: all figures.
    GadiQueue("expresssr", 104, 500 * GB, 400 * GB, 2080, _hours((1040, 24), (2080, 5))),
    # [QS]: a GPU queue. Unchecked: all figures. jobfs is the least sure.
    GadiQueue("dgxa100", 128, 2000 * GB, 28000 * GB, 256, _hours((128, 48), (256, 5)),
              gpus_per_node=8, cores_per_gpu=16),
    # [SIH] only: 32 cores, 192GB, 400GB jobfs, 3200 cores, the walltime bands. Memory a job may ask for unknown.
    GadiQueue("normalsl", 32, 192 * GB, 400 * GB, 3200, _hours((288, 48), (608, 24), (1984, 10), (3200, 5))),
    # [SIH] only: 28 cores, 1020GB, 390GB jobfs, 5 nodes (140 cores), 48 hours for one node and 12 for more.
    GadiQueue("hugemembw", 28, 1020 * GB, 390 * GB, 140, _hours((28, 48), (140, 12))),
    # [SIH] only: 64 cores, 3000GB, 800GB jobfs, one node, 48 hours for 32 cores and 12 for 64.
    GadiQueue("megamembw", 64, 3000 * GB, 800 * GB, 64, _hours((32, 48), (64, 12))),
    # [SIH] only, and [SIH] marks memory "approx" and jobfs a guess: 48 cores, 4 H200 GPUs, one node, 48 hours.
    # 12 cores a GPU as in gpuvolta: every gpuhopper job script found asks for ncpus=12 with ngpus=1.
    GadiQueue("gpuhopper", 48, 1000 * GB, 1700 * GB, 48, _hours((48, 48)), gpus_per_node=4, cores_per_gpu=12),
)}

#: The queue a job without ``-q`` lands in.
DEFAULT_QUEUE = "normal"
GPU_QUEUES = tuple(name for name, queue in QUEUES.items() if queue.gpus_per_node)


def describe_queue(name: str) -> str:
    """One line of a queue's rules, for messages: cores, memory, jobfs, walltime by core count."""
    queue = QUEUES.get(name)
    if queue is None:
        return f"rx_magic keeps no rules for queue {name!r}, only for {', '.join(QUEUES)}: see NCI's Queue Limits page"
    bands, low = [], 1
    for cores, seconds in queue.walltime_limits:
        bands.append(f"{format_walltime(seconds)} for {_band(low, cores)}")
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
        return []   # a queue rx_magic keeps no rules for (see the module docstring): qsub will judge it
    ncpus, ngpus = resources.ncpus or 1, resources.ngpus or 0
    per_node = queue.cores_per_node
    problems: list[str] = []

    if ngpus and not queue.gpus_per_node:
        problems.append(f"queue {name} has no gpus but --ngpus {ngpus} was asked for: "
                        f"use --queue {' or '.join(GPU_QUEUES)}, or drop --ngpus")
    if queue.gpus_per_node:
        per_gpu = queue.cores_per_gpu
        if not ngpus:
            fix = (f"--ngpus {ncpus // per_gpu} to go with --ncpus {ncpus}" if ncpus % per_gpu == 0
                   else f"--ngpus N with --ncpus {per_gpu}*N (e.g. --ngpus 1 --ncpus {per_gpu})")
            problems.append(f"queue {name} is for gpu jobs but no --ngpus was asked for: ask for {fix}, "
                            "or use a cpu queue such as normal")
        elif ncpus != per_gpu * ngpus:
            problems.append(f"queue {name} needs ncpus = {per_gpu} x ngpus: with --ngpus {ngpus} ask for "
                            f"--ncpus {per_gpu * ngpus}, not {ncpus}")
        if ngpus > queue.gpus_per_node and ngpus % queue.gpus_per_node:
            choices = [f"--ngpus {gpus} --ncpus {gpus * per_gpu}" for gpus in
                       _whole_nodes(ngpus, queue.gpus_per_node, queue.max_cores // per_gpu) if gpus]
            problems.append(f"queue {name}: {ngpus} gpus is more than one {queue.gpus_per_node}-gpu node, so it must "
                            f"be a multiple of {queue.gpus_per_node}: ask for {' or '.join(choices)}")

    if ncpus > queue.max_cores:
        most = queue.max_cores if queue.max_cores <= per_node else queue.max_cores // per_node * per_node
        fix = "--ncpus 1 (copyq is for copying data: compute in another queue)" if most == 1 else (
            f"{_cores_option(queue, most)} or fewer")
        problems.append(f"queue {name} allows at most {queue.max_cores} core{'' if queue.max_cores == 1 else 's'} "
                        f"per job, not {ncpus}: ask for {fix}")
    elif ncpus > per_node and ncpus % per_node and not (queue.gpus_per_node and ngpus):
        whole = " or ".join(str(cores) for cores in _whole_nodes(ncpus, per_node, queue.max_cores) if cores > per_node)
        problems.append(f"queue {name}: {ncpus} cores is more than one {per_node}-core node, so it must be a "
                        f"multiple of {per_node}: ask for --ncpus {_either([whole, f'{per_node} or fewer'])}")

    nodes = max(1, math.ceil(ncpus / per_node))
    span = f"{nodes} node{'' if nodes == 1 else 's'} ({ncpus} core{'' if ncpus == 1 else 's'})"
    if resources.mem is not None and resources.mem > nodes * queue.mem_per_node:
        most = nodes * queue.mem_per_node
        bigger = [other.name for other in sorted(QUEUES.values(), key=lambda other: other.mem_per_node)
                  if other.mem_per_node * nodes >= resources.mem and not other.gpus_per_node
                  and other.max_cores > 1 and not other.name.startswith("express")]
        fixes = [f"--mem {format_size(most)} or less",
                 _more_nodes(queue, math.ceil(resources.mem / queue.mem_per_node)),
                 bigger and f"a queue with more memory per node ({', '.join(bigger)})"]
        problems.append(f"queue {name} has {format_size(queue.mem_per_node)} memory per node, so {span} can have at "
                        f"most {format_size(most)}, not {format_size(resources.mem)}: ask for {_either(fixes)}")
    if resources.jobfs is not None and resources.jobfs > nodes * queue.jobfs_per_node:
        most = nodes * queue.jobfs_per_node
        fixes = [f"--jobfs {format_size(most)} or less",
                 _more_nodes(queue, math.ceil(resources.jobfs / queue.jobfs_per_node))]
        problems.append(f"queue {name} has {format_size(queue.jobfs_per_node)} jobfs per node, so {span} can have at "
                        f"most {format_size(most)}, not {format_size(resources.jobfs)}: ask for {_either(fixes)}, "
                        "or keep big files on /scratch instead")
    if resources.walltime is not None:
        low = 1
        for cores, longest in queue.walltime_limits:
            if ncpus <= cores:
                if resources.walltime > longest:
                    fewer = [top for top, limit in queue.walltime_limits if limit >= resources.walltime]
                    problems.append(
                        f"queue {name} allows at most {format_walltime(longest)} of walltime for {_band(low, cores)}, "
                        f"not {format_walltime(resources.walltime)}: ask for --walltime {format_walltime(longest)} "
                        "or less" + (f", or {_cores_option(queue, fewer[-1])} or fewer" if fewer else ""))
                break
            low = cores + 1
    return problems


def _band(low: int, high: int) -> str:
    return f"{low}-{high} cores" if high > low else f"{high} core{'' if high == 1 else 's'}"


def _either(options: list[str]) -> str:
    """The options that are not empty, as "a, b, or c"."""
    return ", or ".join(option for option in options if option)


def _whole_nodes(count: int, unit: int, most: int) -> tuple[int, int]:
    """The whole-node counts either side of ``count`` (0 where none fits under ``most``)."""
    lower, upper = count // unit * unit, math.ceil(count / unit) * unit
    return lower, upper if upper <= most else 0


def _cores_option(queue: GadiQueue, cores: int) -> str:
    if queue.gpus_per_node:
        return f"--ngpus {cores // queue.cores_per_gpu} --ncpus {cores}"
    return f"--ncpus {cores}"


def _more_nodes(queue: GadiQueue, nodes: int) -> str:
    """The option that spreads the job over ``nodes`` whole nodes ("--ncpus 96 (2 nodes)"); "" if not allowed."""
    cores = nodes * queue.cores_per_node
    if nodes < 2 or cores > queue.max_cores:
        return ""
    return f"{_cores_option(queue, cores)} ({nodes} nodes)"
