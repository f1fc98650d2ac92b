"""``profile = "setonix"``: Pawsey's partition rules checked before anything is sent, its GPU accounts and packs
rendered as Pawsey asks, and the most a job can cost on the script."""

import pytest

from rx_magic.errors import ConfigError, ResourceError
from rx_magic.flow.submit import plan_cell
from rx_magic.model.resources import Resources
from rx_magic.schedulers import JobScript, SlurmScheduler
from rx_magic.schedulers.setonix import (CPU_PARTITIONS, GPU_PARTITIONS, PARTITIONS, account, check_request,
                                         describe_partition, estimate_cost)
from rx_magic.targets import get_target


def problems(**request):
    return check_request(Resources.parse(**request))


def directives(**request):
    script = JobScript(job_id="rx-1", folder="/scratch/pawsey0001/abc123/rx/rx-1", runner="/r/runner.py",
                       resources=Resources.parse(**request))
    return [line.removeprefix("#SBATCH ") for line in SlurmScheduler("setonix").render(script).splitlines()
            if line.startswith("#SBATCH ")]


def test_the_partitions_pawsey_lists_are_data_with_its_figures():
    assert set(PARTITIONS) >= {"work", "long", "debug", "highmem", "gpu", "gpu-highmem", "gpu-dev"}
    assert GPU_PARTITIONS == ("gpu", "gpu-dev", "gpu-highmem")
    work, gpu = PARTITIONS["work"], PARTITIONS["gpu"]
    assert (work.cores_per_node, work.mem_per_node, work.max_walltime) == (128, 230 * 2**30, 24 * 3600)
    assert (gpu.cores_per_node, gpu.gpus_per_node, gpu.pack_mem) == (64, 8, 29440 * 2**20)
    assert (PARTITIONS["long"].max_nodes, PARTITIONS["long"].max_walltime) == (1, 96 * 3600)
    assert (PARTITIONS["debug"].max_nodes, PARTITIONS["gpu-dev"].max_nodes) == (4, 2)
    assert PARTITIONS["highmem"].mem_per_node == 980 * 2**30
    assert all(PARTITIONS[name].gpus_per_node == 0 for name in CPU_PARTITIONS)


@pytest.mark.parametrize("request_", [
    {},
    {"mem": "8GB", "ncpus": 4, "walltime": "2:00:00"},
    {"queue": "work", "ncpus": 128, "mem": "230GB", "walltime": "24:00:00"},
    {"queue": "long", "walltime": "96:00:00"},
    {"queue": "highmem", "mem": "980GB", "walltime": "96:00:00"},
    {"queue": "gpu", "ngpus": 1},
    {"queue": "gpu", "ngpus": 2, "ncpus": 16, "mem": "50GB"},      # cores and memory that fit in the packs
    {"queue": "gpu", "ngpus": 16, "walltime": "24:00:00"},
    {"queue": "gpu-dev", "ngpus": 16, "walltime": "4:00:00"},
    {"queue": "gpu-highmem", "ngpus": 1, "mem": "57GB"},
    {"queue": "askaprt", "ncpus": 100000},                          # a project's own partition: sbatch judges it
], ids=lambda request: ",".join(f"{k}={v}" for k, v in request.items()) or "nothing")
def test_a_request_within_setonixs_rules_passes(request_):
    assert problems(**request_) == []


VIOLATIONS = {
    "cores without gpus on a gpu partition": (
        {"queue": "gpu", "ncpus": 300},
        ("--ncpus 300 on Setonix partition gpu: a GPU partition gives cores and memory only with GPUs (Pawsey's "
         "allocation packs); ask for --ngpus N instead: each GPU comes with 8 cores and 29.44 GB, or use a CPU "
         "partition such as work")),
    "cores a few packs hold": (
        {"queue": "gpu", "ncpus": 16},
        ("--ncpus 16 on Setonix partition gpu: a GPU partition gives cores and memory only with GPUs (Pawsey's "
         "allocation packs); ask for --ngpus N instead: each GPU comes with 8 cores and 29.44 GB (here --ngpus 2), "
         "or use a CPU partition such as work")),
    "memory over the packs asked for": (
        {"queue": "gpu", "ngpus": 1, "mem": "100GB"},
        ("--mem 100GB on Setonix partition gpu: 1 GPU comes with 8 cores and 29.44 GB; ask for --ngpus 4 instead "
         "(each GPU comes with 8 cores and 29.44 GB), or --queue gpu-highmem for more memory per GPU")),
    "gpus over one node not whole nodes": (
        {"queue": "gpu", "ngpus": 12},
        "--ngpus 12 on Setonix partition gpu: more than one 8-GPU node is whole nodes; ask for --ngpus 8 or 16"),
    "gpu-dev's node limit": (
        {"queue": "gpu-dev", "ngpus": 24},
        ("--ngpus 24 on Setonix partition gpu-dev: it allows at most 2 nodes (16 GPUs) a job; ask for --ngpus 16 "
         "or fewer, or --queue gpu")),
    "gpus on a cpu partition": (
        {"ngpus": 1},
        ("--ngpus 1 on Setonix partition work: it has no GPUs; use --queue gpu or gpu-dev or gpu-highmem "
         "(rx_magic charges the project's -gpu account), or drop --ngpus")),
    "cores over one node": (
        {"ncpus": 300},
        ("--ncpus 300 on Setonix partition work: a job's cores are one task's, all on one 128-core node; "
         "ask for --ncpus 128 or fewer")),
    "memory over a node": (
        {"mem": "500GB"},
        ("--mem 500GB on Setonix partition work: a node has 230GB for jobs; ask for --mem 230GB or less, "
         "or --queue highmem")),
    "walltime over work's": (
        {"walltime": "30:00:00"},
        ("--walltime 30:00:00 on Setonix partition work: it allows at most 24:00:00; ask for --walltime 24:00:00 "
         "or less, or --queue long")),
    "walltime over debug's": (
        {"queue": "debug", "walltime": "2:00:00"},
        ("--walltime 2:00:00 on Setonix partition debug: it allows at most 1:00:00; ask for --walltime 1:00:00 "
         "or less, or --queue work or long")),
    "walltime over gpu-dev's": (
        {"queue": "gpu-dev", "ngpus": 1, "walltime": "5:00:00"},
        ("--walltime 5:00:00 on Setonix partition gpu-dev: it allows at most 4:00:00; ask for --walltime 4:00:00 "
         "or less, or --queue gpu")),
    "--mem as an extra line on a gpu partition": (
        {"queue": "gpu", "ngpus": 1, "extra": ["--mem=10G"]},
        ("--extra '--mem=10G' on Setonix partition gpu: Pawsey asks for no --mem on GPU partitions, only --ngpus "
         "(packs of 8 cores and 29.44 GB); drop it")),
}


@pytest.mark.parametrize("case", VIOLATIONS)
def test_each_broken_rule_is_one_line_naming_what_was_asked_and_what_to_ask_instead(case):
    request, expected = VIOLATIONS[case]
    assert problems(**request) == [expected]


def test_every_broken_rule_is_listed_in_one_resource_error():
    with pytest.raises(ResourceError) as caught:
        SlurmScheduler("setonix").check_request(Resources.parse(ngpus=1, ncpus=300, walltime="30:00:00"))
    lines = str(caught.value).splitlines()
    assert lines[0] == "the request breaks Setonix's partition rules (the target has profile = \"setonix\"):"
    assert len(lines) == 4 and all(line.startswith("  - --") for line in lines[1:])


def test_without_a_profile_nothing_is_checked_and_nothing_is_rendered_differently():
    SlurmScheduler().check_request(Resources.parse(queue="gpu", ncpus=300, mem="5000GB"))
    script = JobScript(job_id="rx-1", folder="/f", runner="/r.py",
                       resources=Resources.parse(queue="gpu", project="p1", ngpus=1, mem="8GB", walltime="1:00:00"))
    text = SlurmScheduler().render(script)
    assert "--account=p1\n" in text and "--mem=8G" in text and "cost" not in text


# -- rendering ---------------------------------------------------------------------------------------------------

def test_a_gpu_job_is_charged_to_the_gpu_account_and_asks_only_for_packs():
    lines = directives(queue="gpu", project="pawsey0001", ngpus=2, ncpus=16, mem="50GB", walltime="2:00:00")
    assert "--account=pawsey0001-gpu" in lines and "--nodes=1" in lines and "--gres=gpu:2" in lines
    assert not [line for line in lines if line.startswith(("--mem", "--cpus-per-task", "--ntasks", "--gpus"))]


def test_a_cpu_job_keeps_the_plain_account_even_when_the_target_names_the_gpu_one():
    lines = directives(queue="work", project="pawsey0001-gpu", ncpus=4, mem="8GB")
    assert "--account=pawsey0001" in lines and "--cpus-per-task=4" in lines and "--mem=8G" in lines
    assert account("gpu-dev", "pawsey0001") == account("gpu", "pawsey0001-gpu") == "pawsey0001-gpu"
    assert account(None, "pawsey0001-gpu") == "pawsey0001"


def test_whole_gpu_nodes_are_exclusive_without_gres_as_pawsey_asks():
    one = directives(queue="gpu", project="p1", ngpus=8)
    assert "--nodes=1" in one and "--exclusive" in one and not [line for line in one if line.startswith("--gres")]
    two = directives(queue="gpu", project="p1", ngpus=16)
    assert "--nodes=2" in two and two.count("--exclusive") == 1
    asked = directives(queue="gpu", project="p1", ngpus=1, extra=["--exclusive"])
    assert asked.count("--exclusive") == 1 and "--gres=gpu:1" not in asked


def test_local_disk_on_a_gpu_node_rides_on_gres():
    assert "--gres=gpu:2,tmp:100G" in directives(queue="gpu", project="p1", ngpus=2, jobfs="100GB")


def test_describing_a_partition_names_cores_memory_gpus_nodes_and_walltime():
    assert describe_partition("gpu-dev") == (
        "partition gpu-dev: 64 cores and 230GB per node, 8 GPUs per node in packs of 8 cores and 29.44 GB "
        "(account <project>-gpu), at most 2 nodes a job, walltime up to 4:00:00")
    assert describe_partition("long") == (
        "partition long: 128 cores and 230GB per node, at most 1 node a job, walltime up to 96:00:00")


# -- cost ([AC] and [RJ] in setonix.py) ----------------------------------------------------------------------------

@pytest.mark.parametrize("request_, expected", [
    # [AC]'s worked example 1: 32 cores, 128GB, 4 hours: "128 x 0.5 x 1 x 4 = 256SU"
    ({"ncpus": 32, "mem": "128GB", "walltime": "4:00:00"},
     "at most 256 SU: 1 SU/h x 64 cores' share of memory (128GB) x 4:00:00 in work"),
    ({"ncpus": 4, "mem": "8GB", "walltime": "2:00:00"}, "at most 8 SU: 1 SU/h x 4 cores x 2:00:00 in work"),
    ({"ncpus": 4, "walltime": "2:00:00", "extra": ["--exclusive"]},
     "at most 256 SU: 128 SU/h x 1 whole node (--exclusive) x 2:00:00 in work"),
    # [RJ]'s table: 1, 3 and 5 packs charge 64, 192 and 320 SU an hour; --exclusive 512
    ({"queue": "gpu", "ngpus": 1, "walltime": "1:00:00"}, "at most 64 SU: 64 SU/h x 1 GPU pack x 1:00:00 in gpu"),
    ({"queue": "gpu", "ngpus": 3, "walltime": "1:00:00"}, "at most 192 SU: 64 SU/h x 3 GPU packs x 1:00:00 in gpu"),
    ({"queue": "gpu", "ngpus": 5, "walltime": "1:00:00"}, "at most 320 SU: 64 SU/h x 5 GPU packs x 1:00:00 in gpu"),
    ({"queue": "gpu", "ngpus": 1, "walltime": "1:00:00", "extra": ["--exclusive"]},
     "at most 512 SU: 64 SU/h x 8 GPU packs x 1:00:00 in gpu"),
    ({"queue": "gpu", "ngpus": 32, "walltime": "1:00:00"},
     "at most 2048 SU: 64 SU/h x 32 GPU packs x 1:00:00 in gpu"),
])
def test_the_most_a_job_can_cost_is_worked_out_as_pawsey_charges_it(request_, expected):
    assert estimate_cost(Resources.parse(**request_)) == expected


def test_no_cost_is_guessed_without_a_walltime_or_a_documented_rate():
    assert estimate_cost(Resources.parse(ncpus=4)) is None
    assert estimate_cost(Resources.parse(queue="copy", walltime="1:00:00")) is None
    assert estimate_cost(Resources.parse(queue="askaprt", walltime="1:00:00")) is None


# -- through a target ----------------------------------------------------------------------------------------------

def test_a_slurm_target_takes_the_setonix_profile_and_pbs_does_not(configure_targets, tmp_path):
    configure_targets(setonix={"scheduler": "slurm", "profile": "setonix", "workdir": str(tmp_path)},
                      wrong={"scheduler": "pbs", "profile": "setonix", "workdir": str(tmp_path)})
    assert get_target("setonix").scheduler.profile == "setonix"
    with pytest.raises(ConfigError, match=r"no profile 'setonix': choose one of gadi"):
        get_target("wrong")


def test_planning_refuses_a_request_that_breaks_setonixs_rules_before_anything_is_written(configure_targets,
                                                                                           tmp_path):
    configure_targets(setonix={"scheduler": "slurm", "profile": "setonix", "project": "pawsey0001",
                               "workdir": str(tmp_path / "jobs")})
    with pytest.raises(ResourceError, match="--ncpus 300 on Setonix partition gpu"):
        plan_cell("x = 1", "setonix", resources=Resources.parse(queue="gpu", ncpus=300))
    assert not (tmp_path / "jobs").exists()
    plan = plan_cell("x = 1", "setonix", resources=Resources.parse(queue="gpu", ngpus=1, walltime="1:00:00"))
    assert "#SBATCH --account=pawsey0001-gpu" in plan.script_text
    assert "# Setonix cost at most 64 SU: 64 SU/h x 1 GPU pack x 1:00:00 in gpu" in plan.script_text
