"""``profile = "gadi"``: a request is checked against Gadi's queue rules before anything is sent."""

import pytest

from rx_magic.errors import ConfigError, ResourceError
from rx_magic.model.resources import Resources
from rx_magic.schedulers import PBSScheduler
from rx_magic.schedulers.gadi import (CHARGE_RATES, GPU_QUEUES, QUEUES, UNCONFIRMED_RATES, check_request,
                                     describe_queue, estimate_cost)
from rx_magic.flow.submit import plan_cell
from rx_magic.targets import get_target


def problems(**request):
    return check_request(Resources.parse(**request))


@pytest.mark.parametrize("request_", [
    {},
    {"mem": "8GB", "ncpus": 4, "walltime": "2:00:00"},
    {"queue": "normal", "ncpus": 48, "mem": "190GB", "walltime": "48:00:00", "jobfs": "400GB"},
    {"queue": "normal", "ncpus": 96, "mem": "380GB", "walltime": "48:00:00"},
    {"queue": "normal", "ncpus": 1440, "walltime": "24:00:00"},
    {"queue": "express", "ncpus": 480, "walltime": "24:00:00"},
    {"queue": "hugemem", "ncpus": 48, "mem": "1470GB"},
    {"queue": "gpuvolta", "ngpus": 1, "ncpus": 12, "mem": "90GB"},
    {"queue": "gpuvolta", "ngpus": 8, "ncpus": 96, "walltime": "48:00:00"},
    {"queue": "dgxa100", "ngpus": 2, "ncpus": 32},
    {"queue": "normalsr", "ncpus": 104, "mem": "500GB"},
    {"queue": "copyq", "walltime": "10:00:00"},
    {"queue": "express", "ncpus": 3168, "walltime": "5:00:00"},
    {"queue": "hugemembw", "ncpus": 7, "mem": "1000GB"},
    {"queue": "somebody-special", "ncpus": 100000},
], ids=lambda request: ",".join(f"{k}={v}" for k, v in request.items()) or "nothing")
def test_a_request_within_gadis_rules_passes(request_):
    assert problems(**request_) == []


# One case per rule a user can break: the request, and the whole line that says what was wrong and what to change.
VIOLATIONS = {
    "memory over one node": (
        {"mem": "200GB", "ncpus": 4},
        ("queue normal has 190GB memory per node, so 1 node (4 cores) can have at most 190GB, not 200GB: ask for "
         "--mem 190GB or less, or --ncpus 96 (2 nodes), or a queue with more memory per node "
         "(normalbw, normalsr, hugemembw, hugemem, megamem, megamembw)")),
    "memory over several nodes": (
        {"queue": "hugemem", "ncpus": 96, "mem": "3000GB"},
        ("queue hugemem has 1470GB memory per node, so 2 nodes (96 cores) can have at most 2940GB, not 3000GB: "
         "ask for --mem 2940GB or less, or --ncpus 144 (3 nodes), or a queue with more memory per node "
         "(megamem, megamembw)")),
    "memory over the most nodes the queue has": (
        {"queue": "megamem", "ncpus": 96, "mem": "7000GB"},
        ("queue megamem has 2990GB memory per node, so 2 nodes (96 cores) can have at most 5980GB, not 7000GB: "
         "ask for --mem 5980GB or less")),
    "memory over a gpu node": (
        {"queue": "gpuvolta", "ngpus": 1, "ncpus": 12, "mem": "400GB"},
        ("queue gpuvolta has 382GB memory per node, so 1 node (12 cores) can have at most 382GB, not 400GB: ask for "
         "--mem 382GB or less, or --ngpus 8 --ncpus 96 (2 nodes), or a queue with more memory per node "
         "(normalsr, hugemembw, hugemem, megamem, megamembw)")),
    "cores above one node not whole nodes": (
        {"ncpus": 64},
        ("queue normal: 64 cores is more than one 48-core node, so it must be a multiple of 48: "
         "ask for --ncpus 96, or 48 or fewer")),
    "cores between whole nodes": (
        {"queue": "normalsr", "ncpus": 300},
        ("queue normalsr: 300 cores is more than one 104-core node, so it must be a multiple of 104: "
         "ask for --ncpus 208 or 312, or 104 or fewer")),
    "express's core limit is not whole nodes": (
        {"queue": "express", "ncpus": 3200},
        ("queue express: 3200 cores is more than one 48-core node, so it must be a multiple of 48: "
         "ask for --ncpus 3168, or 48 or fewer")),
    "too many cores": (
        {"queue": "express", "ncpus": 4800},
        "queue express allows at most 3200 cores per job, not 4800: ask for --ncpus 3168 or fewer"),
    "too many gpu cores": (
        {"queue": "gpuvolta", "ngpus": 100, "ncpus": 1200},
        "queue gpuvolta allows at most 960 cores per job, not 1200: ask for --ngpus 80 --ncpus 960 or fewer"),
    "copyq takes one core": (
        {"queue": "copyq", "ncpus": 2},
        ("queue copyq allows at most 1 core per job, not 2: ask for --ncpus 1 "
         "(copyq is for copying data: compute in another queue)")),
    "walltime over the band": (
        {"ncpus": 720, "walltime": "30:00:00"},
        ("queue normal allows at most 24:00:00 of walltime for 673-1440 cores, not 30:00:00: "
         "ask for --walltime 24:00:00 or less, or --ncpus 672 or fewer")),
    "walltime over the queue's longest": (
        {"ncpus": 48, "walltime": "50:00:00"},
        ("queue normal allows at most 48:00:00 of walltime for 1-672 cores, not 50:00:00: "
         "ask for --walltime 48:00:00 or less")),
    "walltime over copyq's": (
        {"queue": "copyq", "walltime": "11:00:00"},
        ("queue copyq allows at most 10:00:00 of walltime for 1 core, not 11:00:00: "
         "ask for --walltime 10:00:00 or less")),
    "walltime over a gpu band": (
        {"queue": "gpuvolta", "ngpus": 16, "ncpus": 192, "walltime": "30:00:00"},
        ("queue gpuvolta allows at most 24:00:00 of walltime for 97-192 cores, not 30:00:00: "
         "ask for --walltime 24:00:00 or less, or --ngpus 8 --ncpus 96 or fewer")),
    "gpuvolta cpus per gpu": (
        {"queue": "gpuvolta", "ngpus": 2, "ncpus": 4},
        "queue gpuvolta needs ncpus = 12 x ngpus: with --ngpus 2 ask for --ncpus 24, not 4"),
    "dgxa100 cpus per gpu": (
        {"queue": "dgxa100", "ngpus": 2, "ncpus": 24},
        "queue dgxa100 needs ncpus = 16 x ngpus: with --ngpus 2 ask for --ncpus 32, not 24"),
    "gpu queue without gpus": (
        {"queue": "gpuvolta", "ncpus": 24},
        ("queue gpuvolta is for gpu jobs but no --ngpus was asked for: ask for --ngpus 2 to go with --ncpus 24, "
         "or use a cpu queue such as normal")),
    "gpu queue without gpus, cores not per gpu": (
        {"queue": "gpuvolta", "ncpus": 10},
        ("queue gpuvolta is for gpu jobs but no --ngpus was asked for: ask for --ngpus N with --ncpus 12*N "
         "(e.g. --ngpus 1 --ncpus 12), or use a cpu queue such as normal")),
    "gpus on a cpu queue": (
        {"ngpus": 1},
        ("queue normal has no gpus but --ngpus 1 was asked for: use --queue gpuvolta or dgxa100 or gpuhopper, "
         "or drop --ngpus")),
    "gpus above one node not whole nodes": (
        {"queue": "gpuvolta", "ngpus": 6, "ncpus": 72},
        ("queue gpuvolta: 6 gpus is more than one 4-gpu node, so it must be a multiple of 4: "
         "ask for --ngpus 4 --ncpus 48 or --ngpus 8 --ncpus 96")),
    "jobfs over one node": (
        {"jobfs": "500GB"},
        ("queue normal has 400GB jobfs per node, so 1 node (1 core) can have at most 400GB, not 500GB: ask for "
         "--jobfs 400GB or less, or --ncpus 96 (2 nodes), or keep big files on /scratch instead")),
    "jobfs over the most nodes the queue has": (
        {"queue": "megamem", "ncpus": 96, "jobfs": "3000GB"},
        ("queue megamem has 1400GB jobfs per node, so 2 nodes (96 cores) can have at most 2800GB, not 3000GB: "
         "ask for --jobfs 2800GB or less, or keep big files on /scratch instead")),
}


@pytest.mark.parametrize("case", VIOLATIONS)
def test_each_broken_rule_is_one_line_naming_what_was_asked_and_what_to_ask_instead(case):
    request, expected = VIOLATIONS[case]
    assert problems(**request) == [expected]


def test_walltime_limit_depends_on_the_core_count():
    assert problems(ncpus=672, walltime="48:00:00") == []
    assert problems(ncpus=720, walltime="24:00:00") == []
    assert problems(ncpus=2976, walltime="10:00:00") == []
    [line] = problems(ncpus=3024, walltime="10:00:00")
    assert line.startswith("queue normal allows at most 5:00:00 of walltime for 2977-20736 cores, not 10:00:00")
    assert line.endswith("or --ncpus 2976 or fewer")


def test_a_request_breaking_several_rules_gets_one_line_for_each():
    found = problems(queue="gpuvolta", ngpus=6, ncpus=60, mem="1000GB", walltime="50:00:00")
    assert len(found) == 4 and all(line.startswith("queue gpuvolta") for line in found), found
    assert "with --ngpus 6 ask for --ncpus 72, not 60" in found[0]
    assert "6 gpus is more than one 4-gpu node" in found[1]
    assert "2 nodes (60 cores) can have at most 764GB, not 1000GB" in found[2]
    assert "not 50:00:00: ask for --walltime 48:00:00 or less" in found[3]


def test_every_broken_rule_is_listed_in_one_resource_error():
    scheduler = PBSScheduler("gadi")
    with pytest.raises(ResourceError) as caught:
        scheduler.check_request(Resources.parse(queue="gpuvolta", ngpus=1, ncpus=4, mem="400GB"))
    lines = str(caught.value).splitlines()
    assert lines[0] == "the request breaks Gadi's queue rules (the target has profile = \"gadi\"):"
    assert len(lines) == 3 and all(line.startswith("  - queue gpuvolta") for line in lines[1:])


def test_without_a_profile_nothing_is_checked():
    PBSScheduler().check_request(Resources.parse(mem="5000GB", ncpus=7))


def test_every_queue_is_data_with_walltime_bands_ascending_up_to_its_core_limit():
    assert set(QUEUES) >= {"normal", "express", "hugemem", "megamem", "gpuvolta", "normalbw", "expressbw",
                           "normalsr", "expresssr", "copyq", "dgxa100", "normalsl", "hugemembw", "megamembw",
                           "gpuhopper"}
    for queue in QUEUES.values():
        cores = [cores for cores, _ in queue.walltime_limits]
        hours = [seconds for _, seconds in queue.walltime_limits]
        assert cores == sorted(cores) and cores[-1] == queue.max_cores, queue.name
        assert hours == sorted(hours, reverse=True), queue.name


def test_the_figures_nci_publishes_in_the_stored_queue_structure_and_job_costs_pages_are_kept():
    normal, express, gpuvolta = QUEUES["normal"], QUEUES["express"], QUEUES["gpuvolta"]
    assert (normal.cores_per_node, normal.jobfs_per_node, normal.max_cores) == (48, 400 * 2**30, 20736)
    assert (express.cores_per_node, express.jobfs_per_node, express.max_cores) == (48, 400 * 2**30, 3200)
    assert QUEUES["copyq"].cores_per_node == 48
    assert (gpuvolta.cores_per_node, gpuvolta.mem_per_node, gpuvolta.cores_per_gpu) == (48, 382 * 2**30, 12)
    assert GPU_QUEUES == ("gpuvolta", "dgxa100", "gpuhopper")


def test_describing_a_queue_names_cores_memory_jobfs_gpus_and_walltime():
    assert describe_queue("gpuvolta") == (
        "queue gpuvolta: 48 cores, 382GB memory and 400GB jobfs per node, at most 960 cores, 4 gpus per node with "
        "ncpus = 12 x ngpus; walltime up to 48:00:00 for 1-96 cores, 24:00:00 for 97-192 cores, "
        "5:00:00 for 193-960 cores")
    assert describe_queue("copyq").endswith("at most 1 core, no gpus; walltime up to 10:00:00 for 1 core")
    assert describe_queue("special") == (
        "rx_magic keeps no rules for queue 'special', only for normal, express, copyq, hugemem, megamem, "
        "gpuvolta, normalbw, expressbw, normalsr, expresssr, dgxa100, normalsl, hugemembw, megamembw, gpuhopper: "
        "see NCI's Queue Limits page")


# -- the target's profile key ---------------------------------------------------------------------------------

def test_a_targets_profile_reaches_its_scheduler(configure_targets, tmp_path):
    configure_targets(gadi={"scheduler": "pbs", "profile": "gadi", "workdir": str(tmp_path)})
    assert get_target("gadi").scheduler.profile == "gadi"


def test_an_unknown_profile_names_the_target_and_the_choices(configure_targets, tmp_path):
    configure_targets(gadi={"scheduler": "pbs", "profile": "setonix", "workdir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"target 'gadi' .*no profile 'setonix': choose one of gadi"):
        get_target("gadi")


def test_planning_a_cell_refuses_a_request_that_breaks_gadis_rules_before_anything_is_written(
        configure_targets, tmp_path):
    configure_targets(gadi={"scheduler": "pbs", "profile": "gadi", "workdir": str(tmp_path / "jobs")})
    with pytest.raises(ResourceError, match="queue normal has 190GB memory per node"):
        plan_cell("x = 1", "gadi", resources=Resources.parse(mem="500GB", ncpus=4))
    assert not (tmp_path / "jobs").exists()
    plan = plan_cell("x = 1", "gadi", resources=Resources.parse(mem="8GB", ncpus=4))
    assert "#PBS -l mem=8GB" in plan.script_text


# NCI's "Job Costs" page [JC], each row of its table: the request, and the SU it works out
@pytest.mark.parametrize("request_, su", [
    ({"ncpus": 4, "mem": "16GB", "walltime": "5:00:00"}, "40"),
    ({"ncpus": 8, "mem": "16GB", "walltime": "5:00:00"}, "80"),
    ({"ncpus": 8, "mem": "128GB", "walltime": "5:00:00"}, "320"),
    ({"ncpus": 8, "mem": "192GB", "walltime": "5:00:00"}, "480"),
    ({"queue": "express", "ncpus": 8, "mem": "16GB", "walltime": "5:00:00"}, "240"),
    ({"queue": "gpuvolta", "ngpus": 1, "ncpus": 12, "mem": "90GB", "walltime": "5:00:00"}, "180"),
    ({"queue": "gpuvolta", "ngpus": 1, "ncpus": 12, "mem": "380GB", "walltime": "5:00:00"}, "716.2"),
])
def test_the_most_a_job_can_cost_is_worked_out_as_nci_charges_it(request_, su):
    assert estimate_cost(Resources.parse(**request_)).startswith(f"at most {su} SU: ")


def test_no_cost_is_guessed_without_a_walltime_or_a_known_rate():
    assert estimate_cost(Resources.parse(ncpus=4)) is None
    assert estimate_cost(Resources.parse(queue="somebody-special", walltime="1:00:00")) is None


def test_dry_run_shows_the_cost_in_the_gadi_script(ip, configure_targets):
    configure_targets(gadi={"host": "gadi.nci.org.au", "user": "abc123", "scheduler": "pbs", "profile": "gadi",
                            "project": "ab12", "workdir": "/scratch/ab12/{user}/rx"})
    from IPython.utils.capture import capture_output
    with capture_output() as shown:
        ip.run_cell_magic("remote", "gadi --dry-run --ncpus 4 --mem 16GB --walltime 5:00:00", "y = 1\n")
    assert "# Gadi cost at most 40 SU: 2 SU/h x 4 cores x 5:00:00 in normal" in shown.stdout


# -- the queues [SIH] alone describes, and the rates it alone gives ------------------------------------------------

@pytest.mark.parametrize("request_, expected", [
    ({"queue": "hugemembw", "ncpus": 28, "mem": "1100GB"},
     "queue hugemembw has 1020GB memory per node, so 1 node (28 cores) can have at most 1020GB, not 1100GB: "
     "ask for --mem 1020GB or less, or --ncpus 56 (2 nodes), or a queue with more memory per node (hugemem, megamem, "
     "megamembw)"),
    ({"queue": "megamembw", "ncpus": 64, "walltime": "24:00:00"},
     "queue megamembw allows at most 12:00:00 of walltime for 33-64 cores, not 24:00:00: "
     "ask for --walltime 12:00:00 or less, or --ncpus 32 or fewer"),
    ({"queue": "gpuhopper", "ngpus": 1, "ncpus": 16},
     "queue gpuhopper needs ncpus = 12 x ngpus: with --ngpus 1 ask for --ncpus 12, not 16"),
    ({"queue": "normalsl", "ncpus": 40},
     "queue normalsl: 40 cores is more than one 32-core node, so it must be a multiple of 32: "
     "ask for --ncpus 64, or 32 or fewer"),
])
def test_the_queues_the_profile_did_not_know_are_checked_too(request_, expected):
    assert problems(**request_) == [expected]


def test_gpuhopper_takes_one_h200_with_its_twelve_cores_as_gadi_job_scripts_ask():
    assert problems(queue="gpuhopper", ngpus=1, ncpus=12, mem="256GB", walltime="48:00:00") == []


def test_every_queue_has_a_rate_and_only_job_costs_rates_go_unmarked():
    assert set(CHARGE_RATES) == set(QUEUES)
    assert UNCONFIRMED_RATES == set(QUEUES) - {"normal", "express", "gpuvolta"}
    assert "not confirmed" not in estimate_cost(Resources.parse(ncpus=4, walltime="1:00:00"))
    assert estimate_cost(Resources.parse(queue="normalbw", ncpus=28, walltime="2:00:00")) == (
        "at most 70 SU: 1.25 SU/h x 28 cores x 2:00:00 in normalbw "
        "(rate from a third-party calculator, not confirmed by NCI)")


def test_a_cost_from_an_unconfirmed_node_size_errs_high():
    # normalbw nodes have 128GB or 256GB: the memory share is taken of the smaller
    assert estimate_cost(Resources.parse(queue="normalbw", ncpus=1, mem="128GB", walltime="1:00:00")).startswith(
        "at most 35 SU: 1.25 SU/h x 28 cores' share of memory (128GB)")
