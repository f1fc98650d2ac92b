"""Pawsey Setonix's partition rules, kept as data, and the check a ``profile = "setonix"`` target runs before submitting.

Setonix runs Slurm, with Pawsey's own rules on top: GPU partitions take the
project's ``-gpu`` account, and a GPU job asks for whole "allocation packs"
(``--gres=gpu:N``: each is one GCD with the 8 cores and 29.44 GB next to it),
never for cores or memory. rx_magic checks a request against these rules
first and says what to change. When Pawsey changes a limit, change it in
``PARTITIONS`` and nowhere else. Sizes are binary, as Slurm reads them
(Pawsey's "230 GB" is the 235520M its examples ask for; its "29.44 GB" is 29440M).

Sources, each read on 2026-12-03 from the stored copies in the reference
library:

[RJ] Pawsey, "Running Jobs on Setonix", with its subpages "Example Slurm Batch
     Scripts for Setonix on CPU Compute Nodes" and "... on GPU Compute Nodes",
     https://pawsey.atlassian.net/wiki/spaces/US/pages/51929056/Example+Slurm+Batch+Scripts+for+Setonix+on+GPU+Compute+Nodes
     and its parent "Running Jobs on Setonix" page (read from a public
     repository's copy of the pages, the CPU subpage signed Sept 25, 2025).
     Table 1 and Table 2 (partitions: nodes, cores, node RAM for jobs, GPUs,
     max nodes per job, max walltime); "-gpu" suffix for all GPU partitions;
     the allocation pack (1 GCD, 8 cores, 29.44 GB; MemPerTres=gpu:29440);
     "users should not use --ntasks, --cpus-per-task, --mem" on GPU nodes;
     ``--gres=gpu:N`` is packs per node, ``--gpus-per-node`` "not recommended";
     ``--exclusive`` takes the whole node (8 packs, 235 GB, 512 SU/h) and needs
     no ``--gres``; the charge per hour of 1 to 5 packs (64 SU each).
     The CPU subpage: ``--mem=1840M`` is one core's share of a node (235520M / 128).
[AC] Pawsey, Setonix accounting model (a stored version comparison of
     https://pawsey.atlassian.net/wiki/pages/viewpage.action?pageId=51929028,
     versions 38 and 39): node overview (CPU nodes 2 x 64 cores and 256GB,
     highmem nodes 1TB, GPU nodes 1 x 64 cores and 8 GCDs); GPU nodes charged
     512 SU per node hour, requests in GCDs; CPU jobs charged partition rate
     (128 SU per node hour) x max(core proportion, memory proportion) x nodes
     x hours, memory proportion against the node's total memory (256GB on a
     normal CPU node: "128 x 0.5 x 1 x 4 = 256SU").

Not confirmed: the allocation pack of gpu-highmem (Pawsey gives the pack only
for "a GPU node"; here it is 1/8 of gpu-highmem's 460 GB, as [RJ] says a pack
is "1/8 of the total available RAM"), the charge of highmem (the rate of 128 SU
per node hour against its 1TB is read from [AC]'s "not the highmem nodes"
remark) and of copy (no rate found: no estimate). Partitions of particular
projects (askaprt, casda, mwa*, quantum) are passed to sbatch unchecked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model.resources import Resources, format_size, format_walltime

GB = 2**30
MB = 2**20
HOUR = 3600

#: [RJ]: "add the postfix -gpu to their project name ... This applies for all GPU partitions".
GPU_ACCOUNT_SUFFIX = "-gpu"


@dataclass(frozen=True)
class SetonixPartition:
    """One partition's limits. ``max_nodes`` 0 means Pawsey sets none; ``pack_mem`` is a GPU pack's memory."""

    name: str
    cores_per_node: int
    mem_per_node: int               # what jobs may use ("Available node-RAM for jobs")
    max_walltime: int               # seconds
    max_nodes: int = 0
    gpus_per_node: int = 0
    pack_mem: int = 0
    su_per_node_hour: float | None = None     # None: no documented rate, no estimate
    charged_mem_per_node: int = 0             # [AC]'s "total memory" the memory proportion is taken of


#: The partition a job without ``--partition`` lands in ([RJ]: work is the CPU production partition).
DEFAULT_PARTITION = "work"

PARTITIONS: dict[str, SetonixPartition] = {partition.name: partition for partition in (
    # [RJ] Table 1 and 2; [AC] 128 SU per node hour against 256GB.
    SetonixPartition("work", 128, 230 * GB, 24 * HOUR, su_per_node_hour=128, charged_mem_per_node=256 * GB),
    SetonixPartition("long", 128, 230 * GB, 96 * HOUR, max_nodes=1, su_per_node_hour=128,
                     charged_mem_per_node=256 * GB),
    SetonixPartition("debug", 128, 230 * GB, 1 * HOUR, max_nodes=4, su_per_node_hour=128,
                     charged_mem_per_node=256 * GB),
    # [RJ]; charge unconfirmed (see the module docstring): 128 SU per node hour against [AC]'s 1TB.
    SetonixPartition("highmem", 128, 980 * GB, 96 * HOUR, max_nodes=1, su_per_node_hour=128,
                     charged_mem_per_node=1024 * GB),
    # [RJ]; no rate found.
    SetonixPartition("copy", 32, 115 * GB, 48 * HOUR),
    # [RJ]: 8 GCDs, packs of 29440M; [AC] 512 SU per node hour.
    SetonixPartition("gpu", 64, 230 * GB, 24 * HOUR, gpus_per_node=8, pack_mem=29440 * MB, su_per_node_hour=512),
    SetonixPartition("gpu-dev", 64, 230 * GB, 4 * HOUR, max_nodes=2, gpus_per_node=8, pack_mem=29440 * MB,
                     su_per_node_hour=512),
    # [RJ]: 460 GB. Pack memory unconfirmed (1/8 of 460 GB); [AC]'s 512 SU per GPU node hour.
    SetonixPartition("gpu-highmem", 64, 460 * GB, 24 * HOUR, gpus_per_node=8, pack_mem=460 * GB // 8,
                     su_per_node_hour=512),
)}

GPU_PARTITIONS = tuple(name for name, partition in PARTITIONS.items() if partition.gpus_per_node)
CPU_PARTITIONS = tuple(name for name, partition in PARTITIONS.items() if not partition.gpus_per_node)


def pack_size(partition: SetonixPartition) -> str:
    """A GPU pack as Pawsey words it: "8 cores and 29.44 GB" (Pawsey's GB of 1000 MB, for its 29440M)."""
    cores = partition.cores_per_node // partition.gpus_per_node
    return f"{cores} cores and {partition.pack_mem / MB / 1000:g} GB"


def account(partition_name: str | None, project: str | None) -> str | None:
    """The ``--account`` for a job in this partition: the project, with ``-gpu`` on GPU partitions only."""
    if not project:
        return project
    base = project.removesuffix(GPU_ACCOUNT_SUFFIX)
    return base + GPU_ACCOUNT_SUFFIX if (partition_name or DEFAULT_PARTITION) in GPU_PARTITIONS else base


def gpu_nodes(resources: Resources) -> int:
    """How many GPU nodes a GPU job spans (packs are per node: more than 8 GPUs is whole nodes)."""
    return max(1, math.ceil((resources.ngpus or 0) / 8))


def is_exclusive(resources: Resources) -> bool:
    """Whether the job takes whole nodes: ``--exclusive`` in its extra lines."""
    return any(extra.removeprefix("#SBATCH").strip().split("=")[0] == "--exclusive" for extra in resources.extra)


def describe_partition(name: str) -> str:
    """One line of a partition's rules, for messages."""
    partition = PARTITIONS.get(name)
    if partition is None:
        return f"rx_magic keeps no rules for partition {name!r}, only for {', '.join(PARTITIONS)}"
    nodes = f"at most {partition.max_nodes} node{'' if partition.max_nodes == 1 else 's'} a job" \
        if partition.max_nodes else "no node limit"
    gpus = (f", {partition.gpus_per_node} GPUs per node in packs of {pack_size(partition)} (account <project>-gpu)"
            if partition.gpus_per_node else "")
    return (f"partition {name}: {partition.cores_per_node} cores and {format_size(partition.mem_per_node)} per node"
            f"{gpus}, {nodes}, walltime up to {format_walltime(partition.max_walltime)}")


def check_request(resources: Resources) -> list[str]:
    """Each way ``resources`` breaks Setonix's partition rules, one line each naming the rule and the fix."""
    name = resources.queue or DEFAULT_PARTITION
    partition = PARTITIONS.get(name)
    if partition is None:
        return []   # a project's own partition (askaprt, mwa, ...): sbatch will judge it
    where = f"on Setonix partition {name}"
    problems = _gpu_problems(resources, partition, where) if partition.gpus_per_node else \
        _cpu_problems(resources, partition, where)
    if resources.walltime is not None and resources.walltime > partition.max_walltime:
        # the partitions of the same kind that allow it; the highmem ones only for jobs already there (they are
        # for memory, [RJ]), copy never (it is for copying)
        longer = [other.name for other in PARTITIONS.values()
                  if other.max_walltime >= resources.walltime and bool(other.gpus_per_node) == bool(
                      partition.gpus_per_node) and other.name != "copy"
                  and (not other.name.endswith("highmem") or partition.name.endswith("highmem"))]
        problems.append(f"--walltime {format_walltime(resources.walltime)} {where}: it allows at most "
                        f"{format_walltime(partition.max_walltime)}; ask for --walltime "
                        f"{format_walltime(partition.max_walltime)} or less"
                        + (f", or --queue {' or '.join(longer)}" if longer else ""))
    return problems


def _cpu_problems(resources: Resources, partition: SetonixPartition, where: str) -> list[str]:
    problems = []
    if resources.ngpus:
        problems.append(f"--ngpus {resources.ngpus} {where}: it has no GPUs; use --queue "
                        f"{' or '.join(GPU_PARTITIONS)} (rx_magic charges the project's -gpu account), "
                        "or drop --ngpus")
    # rx_magic's job is one task (--cpus-per-task), and one task's cores are on one node
    if resources.ncpus and resources.ncpus > partition.cores_per_node:
        problems.append(f"--ncpus {resources.ncpus} {where}: a job's cores are one task's, all on one "
                        f"{partition.cores_per_node}-core node; ask for --ncpus {partition.cores_per_node} or fewer")
    if resources.mem and resources.mem > partition.mem_per_node:
        bigger = [other.name for other in PARTITIONS.values()
                  if not other.gpus_per_node and other.mem_per_node >= resources.mem]
        problems.append(f"--mem {format_size(resources.mem)} {where}: a node has "
                        f"{format_size(partition.mem_per_node)} for jobs; ask for --mem "
                        f"{format_size(partition.mem_per_node)} or less"
                        + (f", or --queue {' or '.join(bigger)}" if bigger else ""))
    return problems


def _gpu_problems(resources: Resources, partition: SetonixPartition, where: str) -> list[str]:
    problems = []
    per_node, pack_cores = partition.gpus_per_node, partition.cores_per_node // partition.gpus_per_node
    packs = resources.ngpus or 0
    # what the asked-for cores and memory need, in whole packs: Pawsey gives cores and memory only with GPUs
    needed = max(math.ceil((resources.ncpus or 0) / pack_cores),
                 math.ceil((resources.mem or 0) / partition.pack_mem), 1)
    fix = f"ask for --ngpus N instead: each GPU comes with {pack_size(partition)}"
    if not packs:
        asked = " ".join(part for part in (resources.ncpus and f"--ncpus {resources.ncpus}",
                                           resources.mem and f"--mem {format_size(resources.mem)}") if part)
        problems.append(f"{asked or 'no --ngpus'} {where}: a GPU partition gives cores and memory only with "
                        f"GPUs (Pawsey's allocation packs); {fix}"
                        + (f" (here --ngpus {needed})" if needed <= per_node else "")
                        + f", or use a CPU partition such as {DEFAULT_PARTITION}")
        return problems
    if needed > packs:
        asked = " ".join(part for part in (
            resources.ncpus and resources.ncpus > packs * pack_cores and f"--ncpus {resources.ncpus}",
            resources.mem and resources.mem > packs * partition.pack_mem and f"--mem {format_size(resources.mem)}")
            if part)
        more = f"--ngpus {needed}" if needed <= per_node else f"more GPUs (at most {per_node} a node)"
        problems.append(f"{asked} {where}: {packs} GPU{'' if packs == 1 else 's'} come{'s' if packs == 1 else ''} "
                        f"with {packs * pack_cores} cores and {packs * partition.pack_mem / MB / 1000:g} GB; ask for "
                        f"{more} instead (each GPU comes with {pack_size(partition)})"
                        + ("" if not resources.mem or partition.name == "gpu-highmem"
                           else ", or --queue gpu-highmem for more memory per GPU"))
    if packs > per_node and packs % per_node:
        lower, upper = packs // per_node * per_node, math.ceil(packs / per_node) * per_node
        problems.append(f"--ngpus {packs} {where}: more than one {per_node}-GPU node is whole nodes; "
                        f"ask for --ngpus {lower} or {upper}")
    if partition.max_nodes and gpu_nodes(resources) > partition.max_nodes:
        most = partition.max_nodes * per_node
        problems.append(f"--ngpus {packs} {where}: it allows at most {partition.max_nodes} "
                        f"node{'' if partition.max_nodes == 1 else 's'} ({most} GPUs) a job; ask for --ngpus {most} "
                        "or fewer, or --queue gpu")
    for extra in resources.extra:
        option = extra.removeprefix("#SBATCH").strip().split("=")[0].split()[0] if extra.strip() else ""
        if option in ("--mem", "--mem-per-cpu", "--mem-per-gpu", "--cpus-per-task", "-c", "--ntasks", "-n"):
            problems.append(f"--extra '{extra}' {where}: Pawsey asks for no {option} on GPU partitions, only "
                            f"--ngpus (packs of {pack_size(partition)}); drop it")
    return problems


def estimate_cost(resources: Resources) -> str | None:
    """The most a job can cost, in SU, as Pawsey charges it ([AC], [RJ]), with the sum shown; None without a
    walltime or for a partition without a documented rate."""
    name = resources.queue or DEFAULT_PARTITION
    partition = PARTITIONS.get(name)
    if partition is None or partition.su_per_node_hour is None or resources.walltime is None:
        return None
    hours = resources.walltime / HOUR
    span = format_walltime(resources.walltime)
    if partition.gpus_per_node:
        per_pack = partition.su_per_node_hour / partition.gpus_per_node
        packs = gpu_nodes(resources) * partition.gpus_per_node if is_exclusive(resources) or (
            resources.ngpus or 0) > partition.gpus_per_node else (resources.ngpus or 1)
        return (f"at most {per_pack * packs * hours:.4g} SU: {per_pack:g} SU/h x {packs} GPU "
                f"pack{'' if packs == 1 else 's'} x {span} in {name}")
    per_core = partition.su_per_node_hour / partition.cores_per_node
    if is_exclusive(resources):
        return (f"at most {partition.su_per_node_hour * hours:.4g} SU: {partition.su_per_node_hour:g} SU/h x 1 "
                f"whole node (--exclusive) x {span} in {name}")
    cores = resources.ncpus or 1
    share = resources.mem * partition.cores_per_node / partition.charged_mem_per_node if resources.mem else 0.0
    charged = max(cores, share)
    basis = f"{cores} core{'' if cores == 1 else 's'}" if charged == cores else (
        f"{charged:.4g} cores' share of memory ({format_size(resources.mem)})")
    return f"at most {per_core * charged * hours:.4g} SU: {per_core:g} SU/h x {basis} x {span} in {name}"
