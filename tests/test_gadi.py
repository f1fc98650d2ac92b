"""``profile = "gadi"``: a request is checked against Gadi's queue rules before anything is sent."""

import pytest

from rx_magic.errors import ConfigError, ResourceError
from rx_magic.resources import Resources
from rx_magic.schedulers import PBSScheduler
from rx_magic.schedulers.gadi import QUEUES, check_request, describe_queue
from rx_magic.submission import plan_cell
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
    {"queue": "somebody-special", "ncpus": 100000},
], ids=lambda request: ",".join(f"{k}={v}" for k, v in request.items()) or "nothing")
def test_a_request_within_gadis_rules_passes(request_):
    assert problems(**request_) == []


VIOLATIONS = {
    "memory over one node": ({"mem": "200GB", "ncpus": 4},
                             ("queue normal has 190GB memory per node, so 1 node (4 cores) can have at most 190GB, "
                              "not 200GB: ask for less --mem, more --ncpus, or a bigger-memory queue "
                              "(normalbw, normalsr, hugemem, megamem)")),
    "cores not whole nodes": ({"ncpus": 60},
                              ("queue normal has 48 cores per node, so a job on more than one node takes whole "
                               "nodes: ask for --ncpus 96 or 48 or fewer")),
    "walltime over the band": ({"ncpus": 720, "walltime": "30:00:00"}, None),
    "too many cores": ({"queue": "express", "ncpus": 4800},
                       "queue express allows at most 3200 cores per job, not 4800: ask for --ncpus 3200 or fewer"),
    "gpuvolta cpus per gpu": ({"queue": "gpuvolta", "ngpus": 2, "ncpus": 4},
                              "queue gpuvolta needs ncpus = 12 x ngpus: with --ngpus 2 ask for --ncpus 24, not 4"),
    "gpuvolta without gpus": ({"queue": "gpuvolta", "ncpus": 12}, None),
    "gpus on a cpu queue": ({"ngpus": 1}, ("queue normal has no gpus but --ngpus 1 was asked for: "
                                           "use --queue gpuvolta or dgxa100, or drop --ngpus")),
    "jobfs over one node": ({"jobfs": "500GB"}, None),
    "copyq takes one core": ({"queue": "copyq", "ncpus": 2}, None),
    "gpus over one node not whole nodes": ({"queue": "gpuvolta", "ngpus": 6, "ncpus": 72}, None),
}


@pytest.mark.parametrize("case", VIOLATIONS)
def test_each_broken_rule_is_one_line_naming_the_queue_and_the_fix(case):
    request, expected = VIOLATIONS[case]
    found = problems(**request)
    assert len(found) == 1, found
    [line] = found
    assert "\n" not in line and line.startswith("queue ") and ("ask for" in line or "use --queue" in line)
    if expected:
        assert line == expected


def test_walltime_limit_depends_on_the_core_count():
    assert problems(ncpus=672, walltime="48:00:00") == []
    [line] = problems(ncpus=720, walltime="30:00:00")
    assert line == ("queue normal allows at most 24:00:00 of walltime for 673-1440 cores, not 30:00:00: "
                    "ask for --walltime 24:00:00 or less, or fewer cores")


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
                           "normalsr", "expresssr", "copyq", "dgxa100"}
    for queue in QUEUES.values():
        cores = [cores for cores, _ in queue.walltime_limits]
        hours = [seconds for _, seconds in queue.walltime_limits]
        assert cores == sorted(cores) and cores[-1] == queue.max_cores, queue.name
        assert hours == sorted(hours, reverse=True), queue.name


def test_describing_a_queue_names_cores_memory_jobfs_gpus_and_walltime():
    assert describe_queue("gpuvolta") == (
        "queue gpuvolta: 48 cores, 382GB memory and 400GB jobfs per node, at most 960 cores, 4 gpus per node with "
        "ncpus = 12 x ngpus; walltime up to 48:00:00 for 1-96 cores, 24:00:00 for 97-192 cores, "
        "5:00:00 for 193-960 cores")
    assert describe_queue("copyq").endswith("at most 1 core, no gpus; walltime up to 10:00:00 for 1 core")


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
