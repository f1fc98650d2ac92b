"""The PBS Pro scheduler: golden-file rendering, and qsub/qstat/qdel against recorded outputs.

Real OpenPBS is tested in test_pbs_real.py. Here the commands are answered by a
scripted transport, for what that server cannot show: Gadi's ids and refusals,
other PBS releases' JSON, Slurm's Torque-style qstat (tests/fixtures/pbs/README.md
says which output each file copies). Set RX_REGENERATE_GOLDEN=1 to rewrite the
golden files, then read the diff.
"""

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from scripted import ScriptedCommands

from rx_magic.errors import ConfigError, ResourceError, SchedulerError
from rx_magic.model.resources import Resources
from rx_magic.schedulers import SCHEDULERS, JobScript, PBSScheduler, scheduler_named
from rx_magic.schedulers.pbs import (
    clean_pbs_json,
    directive_settings,
    job_state,
    parse_qstat_brief,
    parse_qstat_full,
    parse_qstat_json,
    parse_tracejob,
)
from rx_magic.model.states import State

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
FIXTURES = HERE / "fixtures" / "pbs"
JOB_ID = "rx-20261123-141502-3fa9"
HOME_WORKDIR = "/home/123/abc123/rx_jobs"
GADI_WORKDIR = "/scratch/ab12/abc123/rx_jobs"
RUNTIME = ".rx/runtime-0123456789abcdef/runner.py"


def job_script(workdir=HOME_WORKDIR, job_id=JOB_ID, **keys):
    return JobScript(job_id=job_id, folder=f"{workdir}/{job_id}", runner=f"{workdir}/{RUNTIME}",
                     cwd=f"{workdir}/{job_id}/work", **keys)


def fixture(name):
    return (FIXTURES / name).read_text()


class ScriptedTransport(ScriptedCommands):
    """Answers each command from (argv prefix, (code, stdout, stderr)) pairs; has no files.

    The scheduler runs its commands through a login shell (``bash -lc 'exec qstat ...'``): the words
    inside are what is matched and recorded, and ``shells`` keeps the commands as sent.
    """

    description = "gadi (ssh)"

    def __init__(self, *answers):
        super().__init__(*answers)
        self.shells = []

    def run(self, argv, *, input=None, timeout=120, check=True):
        argv = tuple(argv)
        self.shells.append(argv)
        if argv[:2] in (("bash", "-lc"), ("bash", "-c")) and argv[2].startswith("exec "):
            argv = tuple(shlex.split(argv[2].removeprefix("exec ")))
        return super().run(argv, input=input, timeout=timeout, check=check)

    def _files_are_not_used(self, *args, **kwargs):
        raise NotImplementedError("the PBS scheduler only runs commands")

    exists = read_bytes = open_read = open_atomic = makedirs = rename = remove_tree = listdir = expand_home = (
        _files_are_not_used)


JSON_FORM = ("qstat", "-x", "-f", "-F", "json")
# what Slurm's qstat (slurm-wlm-torque 22.05) says to -x and -F, with exit code 2
USAGE = ("Unknown option: x\nUnknown option: F\nUsage:\n"
         "    qstat [-f] [-a|-i|-r] [-n [-1]] [-G|-M] [-u user_list] [-? | --help]\n    [--man] [job_id...]\n")


# -- rendering ------------------------------------------------------------------------------------------------

GOLDEN_CASES = {
    "minimal": (None, job_script()),
    "gadi_full": ("gadi", job_script(
        GADI_WORKDIR, setup=("module use /g/data/hh5/public/modules", "module load conda/analysis3-24.07"),
        resources=Resources.parse(mem="8GB", ncpus=4, walltime="2:00:00", queue="normal", project="ab12",
                                  jobfs="10GB", name="fit_model_ensemble"))),
    "extra": (None, job_script(resources=Resources.parse(
        queue="workq", walltime="30m", extra=["-m abe", "-M someone@example.org", "#PBS -W umask=027"]))),
    "gpu": ("gadi", job_script(
        GADI_WORKDIR, python="/g/data/xy11/apps/python/3.11.7/bin/python3",
        resources=Resources.parse(queue="gpuvolta", ngpus=2, ncpus=24, mem="190GB", walltime="12:00:00",
                                  project="ab12", storage="gdata/ab12"))),
}


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_rendered_script_matches_its_golden_file(case):
    profile, script = GOLDEN_CASES[case]
    text = PBSScheduler(profile).render(script)
    golden = GOLDEN / f"pbs_{case}.sh"
    if os.environ.get("RX_REGENERATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def directives(text):
    return [line.removeprefix("#PBS ") for line in text.splitlines() if line.startswith("#PBS ")]


def test_each_resource_is_on_its_own_l_line():
    lines = directives(PBSScheduler("gadi").render(GOLDEN_CASES["gadi_full"][1]))
    resource_lines = [line for line in lines if line.startswith("-l ")]
    assert [line.split()[1].split("=")[0] for line in resource_lines] == [
        "ncpus", "mem", "walltime", "jobfs", "wd", "storage"]
    assert not any("," in line for line in resource_lines)


def test_directives_come_before_the_first_command():
    text = PBSScheduler("gadi").render(GOLDEN_CASES["gadi_full"][1])
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(text.splitlines()) if line.startswith("#PBS"))


@pytest.mark.parametrize("name, expected", [
    (None, "rx-141502-3fa9"),
    ("fit_model_ensemble", "fit_model_ensem"),
    ("short", "short"),
])
def test_job_name_is_at_most_15_characters(name, expected):
    text = PBSScheduler().render(job_script(resources=Resources.parse(name=name)))
    assert directives(text)[0] == f"-N {expected}"


def test_a_job_name_that_would_not_start_with_a_letter_gets_one():
    text = PBSScheduler().render(job_script(job_id="20261123_job"))
    assert directives(text)[0] == "-N rx20261123_job"


@pytest.mark.parametrize("walltime, expected", [("90m", "01:30:00"), ("2:00:00", "02:00:00"), ("50h", "50:00:00"),
                                                ("1-12:00:00", "36:00:00")])
def test_walltime_is_hh_mm_ss_with_hours_past_24(walltime, expected):
    text = PBSScheduler().render(job_script(resources=Resources.parse(walltime=walltime)))
    assert f"-l walltime={expected}" in directives(text)


def storage_line(text):
    return next((line for line in directives(text) if line.startswith("-l storage=")), None)


def test_gadi_storage_is_derived_from_the_scratch_and_gdata_paths_the_job_uses():
    script = job_script(GADI_WORKDIR, python="/g/data/xy11/apps/bin/python3",
                        setup=("source /g/data/hh5/public/apps/miniconda3/etc/profile.d/conda.sh",))
    assert storage_line(PBSScheduler("gadi").render(script)) == "-l storage=gdata/hh5+gdata/xy11+scratch/ab12"


def test_storage_asked_for_comes_first_and_what_the_job_needs_is_added():
    script = job_script(GADI_WORKDIR, resources=Resources.parse(storage="gdata/ab12+scratch/ab12"))
    assert storage_line(PBSScheduler("gadi").render(script)) == "-l storage=gdata/ab12+scratch/ab12"
    script = job_script(GADI_WORKDIR, resources=Resources.parse(storage="gdata/qq99"))
    assert storage_line(PBSScheduler("gadi").render(script)) == "-l storage=gdata/qq99+scratch/ab12"


def test_without_the_gadi_profile_there_is_no_wd_and_no_derived_storage():
    text = PBSScheduler().render(job_script(GADI_WORKDIR))
    assert "-l wd" not in directives(text)
    assert storage_line(text) is None
    asked = PBSScheduler().render(job_script(GADI_WORKDIR, resources=Resources.parse(storage="gdata/ab12")))
    assert storage_line(asked) == "-l storage=gdata/ab12"


def test_stdout_and_stderr_go_apart_into_the_job_folder():
    script = job_script()
    lines = directives(PBSScheduler().render(script))
    assert "-j n" in lines
    assert f"-o {script.folder}/scheduler.log" in lines
    assert f"-e {script.folder}/scheduler.err" in lines


def test_a_job_folder_with_spaces_or_quotes_keeps_o_and_e_out_of_the_script():
    script = job_script("/home/123/abc123/my \"rx\" jobs")
    text = PBSScheduler().render(script)
    assert not [line for line in directives(text) if line.startswith(("-o", "-e"))]
    assert f"cd {shlex.quote(script.cwd)} || exit 96" in text


def test_a_job_folder_with_a_colon_is_refused_since_pbs_reads_host_colon_path():
    with pytest.raises(ConfigError, match="':'"):
        PBSScheduler().render(job_script("/home/abc123/rx:jobs"))


def test_an_extra_directive_is_passed_through_once():
    lines = directives(PBSScheduler().render(GOLDEN_CASES["extra"][1]))
    assert lines[-3:] == ["-m abe", "-M someone@example.org", "-W umask=027"]


def test_a_queue_that_cannot_be_written_bare_in_a_pbs_line_is_refused():
    with pytest.raises(ResourceError, match="--queue"):
        PBSScheduler().render(job_script(resources=Resources(queue="normal express")))


def test_pbs_is_registered_enforces_limits_and_knows_the_gadi_profile():
    assert SCHEDULERS["pbs"] is PBSScheduler
    assert PBSScheduler.enforces_limits
    assert scheduler_named("pbs", "gadi").profile == "gadi"
    with pytest.raises(ConfigError, match="choose one of gadi"):
        scheduler_named("pbs", "setonix")
    with pytest.raises(ConfigError, match="no profile"):
        scheduler_named("direct", "gadi")


# -- submitting -----------------------------------------------------------------------------------------------

def test_qsub_gets_the_output_paths_and_the_script_as_separate_words_and_the_full_id_is_kept():
    transport = ScriptedTransport((("qsub",), (0, "80005196.gadi-pbs\n", "")))
    script = job_script("/home/123/abc123/my jobs")
    assert PBSScheduler().submit(transport, script) == "80005196.gadi-pbs"
    assert transport.calls == [("qsub", "-o", f"{script.folder}/scheduler.log",
                                "-e", f"{script.folder}/scheduler.err", script.job_sh)]


def test_a_bare_id_from_a_torque_style_qsub_is_kept():
    transport = ScriptedTransport((("qsub",), (0, "42\n", "")))
    assert PBSScheduler().submit(transport, job_script()) == "42"


def test_a_rejected_submission_shows_qsubs_own_message_and_exit_code():
    message = "qsub: Error: The project ab99 does not exist or you are not a member of it."
    transport = ScriptedTransport((("qsub",), (38, "", message + "\n")))
    with pytest.raises(SchedulerError) as caught:
        PBSScheduler("gadi").submit(transport, job_script())
    assert f"qsub refused job {JOB_ID} on gadi (ssh) (exit code 38):\n{message}" == str(caught.value)


def test_qsub_exit_32_without_a_message_explains_queue_limits_and_gadis_rules():
    transport = ScriptedTransport((("qsub",), (32, "", "")))
    script = job_script(resources=Resources.parse(queue="hugemem"))
    with pytest.raises(SchedulerError) as caught:
        PBSScheduler("gadi").submit(transport, script)
    message = str(caught.value)
    assert "exit code 32 is PBS's hook error" in message and "queue's limits" in message
    assert "queue hugemem: 48 cores, 1470GB memory" in message


def test_qsub_exit_32_without_a_profile_points_at_the_queues_limits():
    transport = ScriptedTransport((("qsub",), (32, "", "")))
    with pytest.raises(SchedulerError, match=r"qstat -Qf workq"):
        PBSScheduler().submit(transport, job_script(resources=Resources.parse(queue="workq")))


def test_qsub_that_prints_no_job_id_is_an_error_not_a_job():
    transport = ScriptedTransport((("qsub",), (0, "", "")))
    with pytest.raises(SchedulerError, match="no job id"):
        PBSScheduler().submit(transport, job_script())


# -- polling --------------------------------------------------------------------------------------------------

STATES_IDS = [f"800051{n}.gadi-pbs" for n in range(90, 96)]


def test_one_qstat_reads_every_job_at_once():
    transport = ScriptedTransport((JSON_FORM, (0, fixture("qstat_x_f_json_states.json"), "")))
    PBSScheduler().query(transport, {job_id: "/folder" for job_id in STATES_IDS})
    assert transport.calls == [JSON_FORM + tuple(STATES_IDS)]


def test_json_states_read_as_people_say_them():
    transport = ScriptedTransport((JSON_FORM, (0, fixture("qstat_x_f_json_states.json"), "")))
    states = PBSScheduler().query(transport, {job_id: "/folder" for job_id in STATES_IDS})
    assert [(s.state, s.reason) for s in states.values()] == [
        (State.QUEUED, "Insufficient amount of resource: ncpus (R: 4 A: 0 T: 145152)"),
        (State.QUEUED, "held: job held, too many failed attempts to run"),
        (State.RUNNING, None),
        (State.DONE, None),
        (State.FAILED, "walltime exceeded (2:00:00)"),
        (State.FAILED, "out of memory (8 GB)"),
    ]


def test_walltime_kill_reported_as_exit_271_reads_as_walltime_exceeded():
    transport = ScriptedTransport((JSON_FORM, (0, fixture("qstat_x_f_json_exit_271.json"), "")))
    state = PBSScheduler().query(transport, {"80005196.gadi-pbs": "/folder"})["80005196.gadi-pbs"]
    assert (state.state, state.reason) == (State.FAILED, "walltime exceeded (2:00:00)")


def test_json_with_unescaped_quotes_and_control_characters_is_cleaned_and_read():
    text = fixture("qstat_x_f_json_unescaped.json")
    with pytest.raises(ValueError):
        json.loads(text, strict=False)
    jobs = parse_qstat_json(text)
    finished = jobs["80005197.gadi-pbs"]
    assert finished["Variable_List.GREETING"] == "say \"hello\" to 'them'"
    assert finished["Variable_List.QUOTED_SINGLE"] == "'\"asads\"'"
    assert finished["Variable_List.WITH_COMMA"] == "ab,c"
    assert finished["Variable_List.ZERO_PADDED"] == "005"
    assert finished["Variable_List.WITH_TAB"] == "a\tb\x01c"
    assert finished["Variable_List.BASH_FUNC_module()"] == "() {  eval `/usr/bin/modulecmd bash $*`\n}"
    assert finished["Variable_List.WINDOWS_PATH"] == "C:\\Users\\abc"
    assert finished["comment"].endswith('note "look here"')
    assert job_state(jobs["80005198.gadi-pbs"]).state is State.RUNNING


def test_cleaning_leaves_valid_json_as_it_reads():
    text = fixture("qstat_x_f_json_states.json")
    assert json.loads(clean_pbs_json(text)) == json.loads(text)


def test_the_scripts_own_exit_code_is_failed_without_a_reason_so_the_folder_explains_it():
    jobs = parse_qstat_json(fixture("qstat_x_f_json_unescaped.json"))
    state = job_state(jobs["80005197.gadi-pbs"])
    assert (state.state, state.reason, state.exit_code) == (State.FAILED, None, 1)


def ended(code, *, used="00:10:00", walltime="02:00:00", mem="8gb", comment=None):
    attributes = {"job_state": "F", "Exit_status": code, "Resource_List.walltime": walltime,
                  "Resource_List.mem": mem, "resources_used.walltime": used}
    if comment:
        attributes["comment"] = comment
    return job_state(attributes)


@pytest.mark.parametrize("code, expected", [
    (0, (State.DONE, None, 0)),
    (3, (State.FAILED, None, 3)),
    (143, (State.FAILED, None, 143)),
    (262, (State.FAILED, "killed by signal 6 (SIGABRT)", None)),
    (265, (State.FAILED, "killed", None)),
    # real OpenPBS 23.06 (smoke-facts.md): qdel of a running job ends it with 271 = 256 + SIGTERM
    (271, (State.CANCELLED, "deleted with qdel (PBS ended it with SIGTERM, Exit_status 271)", None)),
    (-27, (State.FAILED, "out of memory (8 GB)", None)),
    (-29, (State.FAILED, "walltime exceeded (2:00:00)", None)),
    (-1, (State.FAILED, "PBS could not start the job", None)),
    (-99, (State.FAILED, "PBS could not run the job (Exit_status -99)", None)),
])
def test_exit_status_decides_how_an_ended_job_ended(code, expected):
    state = ended(code)
    assert (state.state, state.reason, state.exit_code) == expected


def test_exit_271_is_a_walltime_kill_only_when_the_time_used_reached_the_limit():
    # older PBS Pro ended walltime kills with SIGTERM; OpenPBS 23.06 uses -29 and keeps 271 for qdel
    assert ended(271, used="02:00:03").reason == "walltime exceeded (2:00:00)"
    assert ended("271", used=None).state is State.CANCELLED


def test_a_signal_exit_at_the_walltime_limit_is_walltime_exceeded():
    assert ended(143, used="02:00:01").reason == "walltime exceeded (2:00:00)"


def test_a_comment_naming_an_exceeded_limit_gives_the_reason():
    assert ended(265, comment="job killed: mem 9437184kb exceeded limit 8388608kb").reason == "out of memory (8 GB)"


def test_memory_in_bytes_reads_as_gb():
    assert ended(-27, mem="8589934592b").reason == "out of memory (8 GB)"
    assert ended(-27, mem="1536mb").reason == "out of memory (1536 MB)"


def test_an_ended_job_without_an_exit_status_is_left_to_its_folder():
    assert job_state({"job_state": "C"}).state is None


def test_a_job_qstat_does_not_know_is_gone_and_the_others_are_still_read():
    # as OpenPBS 23.06 answers (smoke-facts.md): exit 153, the known job's JSON, "Unknown Job Id" on stderr
    known = fixture("qstat_x_f_json_exit_271.json")
    transport = ScriptedTransport((JSON_FORM, (153, known, "qstat: Unknown Job Id 80001234.gadi-pbs\n")))
    states = PBSScheduler().query(transport, {"80001234.gadi-pbs": "/a", "80005196.gadi-pbs": "/b"})
    assert states["80001234.gadi-pbs"].state is None
    assert states["80005196.gadi-pbs"].state is State.FAILED
    assert len(transport.calls) == 1


def test_when_every_job_is_unknown_all_are_gone():
    unknown = "qstat: Unknown Job Id 1.gadi-pbs\nqstat: Unknown Job Id 2.gadi-pbs\n"
    transport = ScriptedTransport((JSON_FORM, (153, "", unknown)))
    states = PBSScheduler().query(transport, {"1.gadi-pbs": "/a", "2.gadi-pbs": "/b"})
    assert [state.state for state in states.values()] == [None, None]


def test_a_qstat_failure_that_is_not_about_unknown_jobs_raises_rather_than_losing_jobs():
    down = "Connection refused\nqstat: cannot connect to server gadi-pbs-01 (errno=15010)\n"
    transport = ScriptedTransport((JSON_FORM, (2, "", down)))
    with pytest.raises(SchedulerError, match="cannot connect to server"):
        PBSScheduler().query(transport, {"1.gadi-pbs": "/a"})


def test_jobs_dropped_from_json_without_a_word_are_asked_again_in_text():
    # some PBS releases print only the first of several jobs in JSON
    only_first = fixture("qstat_x_f_json_exit_271.json")
    transport = ScriptedTransport((JSON_FORM, (0, only_first, "")),
                                  (("qstat", "-x", "-f"), (0, fixture("qstat_x_f_wrapped.txt"), "")))
    states = PBSScheduler().query(transport, {"80005196.gadi-pbs": "/a", "80005188.gadi-pbs": "/b"})
    assert states["80005188.gadi-pbs"].state is State.RUNNING
    assert transport.calls[1] == ("qstat", "-x", "-f", "80005188.gadi-pbs")


def test_when_json_is_refused_the_text_form_is_used_and_remembered():
    transport = ScriptedTransport((JSON_FORM, (2, "", USAGE)),
                                  (("qstat", "-f"), (0, fixture("slurm_torque_qstat_f.txt"), "")))
    scheduler = PBSScheduler()
    jobs = {"42": "/a", "43": "/b", "44": "/c", "45": "/d"}
    states = scheduler.query(transport, jobs)
    assert [state.state for state in states.values()] == [State.RUNNING, None, State.QUEUED, None]
    scheduler.query(transport, jobs)
    assert transport.calls == [JSON_FORM + tuple(jobs), ("qstat", "-f", *jobs), ("qstat", "-f", *jobs)]


def test_when_qstat_f_is_refused_too_plain_qstat_is_used():
    transport = ScriptedTransport((JSON_FORM, (2, "", USAGE)), (("qstat", "-f"), (2, "", "Usage: qstat ...\n")),
                                  (("qstat",), (0, fixture("slurm_torque_qstat.txt"), "")))
    states = PBSScheduler().query(transport, {"42": "/a", "43": "/b", "44": "/c"})
    assert [state.state for state in states.values()] == [State.RUNNING, None, State.QUEUED]


def test_slurms_qstat_exits_153_silently_when_it_knows_none_of_the_jobs():
    transport = ScriptedTransport((JSON_FORM, (2, "", USAGE)), (("qstat", "-f"), (153, "", "")))
    assert PBSScheduler().query(transport, {"77": "/a"})["77"].state is None


def test_text_form_joins_values_wrapped_onto_tab_lines():
    jobs = parse_qstat_full(fixture("qstat_x_f_wrapped.txt"))
    job = jobs["80005196.gadi-pbs"]
    assert job["comment"] == ("Job run at Mon Nov 23 at 09:11 on (gadi-cpu-clx-0412:ncpus=4:mem=8388608kb:"
                              "jobfs=104857600kb) and finished")
    assert job["Variable_List"].endswith("PBS_NCI_STORAGE=scratch/ab12+gdata/hh5,PBS_NCI_WD=1")
    assert job["Error_Path"].endswith("/rx-20261123-091036-96a9/scheduler.err")
    assert job["Exit_status"] == "271"


def test_text_exit_271_is_walltime_only_when_the_walltime_was_reached():
    jobs = parse_qstat_full(fixture("qstat_x_f_wrapped.txt"))
    assert job_state(jobs["80005196.gadi-pbs"]).reason == "walltime exceeded (2:00:00)"
    assert job_state(jobs["80005199.gadi-pbs"]).state is State.CANCELLED
    assert job_state(jobs["80005188.gadi-pbs"]).state is State.RUNNING


def test_slurms_qstat_f_with_tab_indented_attributes_is_read():
    jobs = parse_qstat_full(fixture("slurm_torque_qstat_f.txt"))
    assert {job_id: job["job_state"] for job_id, job in jobs.items()} == {"42": "R", "43": "C", "44": "Q"}
    assert jobs["42"]["Resource_List.walltime"] == "00:10:00"


def test_plain_qstat_columns_are_read():
    assert parse_qstat_brief(fixture("slurm_torque_qstat.txt")) == {
        "42": {"job_state": "R"}, "43": {"job_state": "C"}, "44": {"job_state": "Q"}}


def test_a_job_shown_under_another_server_suffix_is_matched_by_its_number():
    transport = ScriptedTransport((JSON_FORM, (0, fixture("qstat_x_f_json_exit_271.json"), "")))
    state = PBSScheduler().query(transport, {"80005196.gadi-pbs.gadi.nci.org.au": "/a"})
    assert state["80005196.gadi-pbs.gadi.nci.org.au"].state is State.FAILED


def test_no_jobs_no_command():
    transport = ScriptedTransport()
    assert PBSScheduler().query(transport, {}) == {}
    assert transport.calls == []


# -- cancelling -----------------------------------------------------------------------------------------------

def test_cancel_runs_qdel_with_the_job_id():
    transport = ScriptedTransport((("qdel",), (0, "", "")))
    PBSScheduler().cancel(transport, "80005196.gadi-pbs", "/folder")
    assert transport.calls == [("qdel", "80005196.gadi-pbs")]


@pytest.mark.parametrize("rc, stderr", [
    (153, "qdel: Unknown Job Id 80005196.gadi-pbs\n"),
    (35, "qdel: Job has finished 80005196.gadi-pbs\n"),
    (168, "qdel: Request invalid for state of job 80005196.gadi-pbs\n"),
    (1, ""),    # Slurm's qdel: a job that already ended
])
def test_cancelling_a_finished_or_unknown_job_is_not_an_error(rc, stderr):
    transport = ScriptedTransport((("qdel",), (rc, "", stderr)))
    PBSScheduler().cancel(transport, "80005196.gadi-pbs", "/folder")


def test_a_cancel_that_fails_for_another_reason_raises_with_qdels_message():
    transport = ScriptedTransport((("qdel",), (15007, "", "qdel: Unauthorized Request  80005196.gadi-pbs\n")))
    with pytest.raises(SchedulerError, match=re.escape("qdel: Unauthorized Request")):
        PBSScheduler().cancel(transport, "80005196.gadi-pbs", "/folder")


def test_dry_run_for_an_ssh_target_shows_the_gadi_script_without_connecting(ip, configure_targets):
    configure_targets(gadi={"host": "gadi.nci.org.au", "user": "abc123", "scheduler": "pbs", "profile": "gadi",
                            "project": "ab12", "workdir": "/scratch/ab12/{user}/rx"})
    ip.user_ns["alpha"] = 0.5
    from IPython.utils.capture import capture_output
    with capture_output() as shown:
        ip.run_cell_magic("remote", "gadi --dry-run --mem 8GB --ncpus 4 --walltime 2:00:00", "model = alpha * 2\n")
    report = shown.stdout
    assert "#PBS -l mem=8GB" in report and "#PBS -l ncpus=4" in report and "#PBS -l walltime=02:00:00" in report
    assert "#PBS -l storage=scratch/ab12" in report
    assert "job folder /scratch/ab12/abc123/rx/rx-" in report
    assert "not connected to 'gadi'" in report
    from rx_magic.targets import get_target
    assert not get_target("gadi").transport.connected       # no connection was opened


# -- whose lines win ------------------------------------------------------------------------------------------

def configured(profile=None, **defaults):
    scheduler = PBSScheduler(profile)
    scheduler.configure(defaults=Resources.parse(**defaults))
    return scheduler


def test_an_extra_directive_replaces_rx_magics_own_line_for_the_same_setting():
    script = job_script(GADI_WORKDIR, resources=Resources.parse(extra=["-j oe", "-l storage=gdata/xy11", "-N mine"]))
    lines = directives(PBSScheduler("gadi").render(script))
    assert "-j oe" in lines and "-j n" not in lines
    assert "-l storage=gdata/xy11" in lines and not [line for line in lines if line.startswith("-l storage=scratch")]
    assert "-N mine" in lines and len([line for line in lines if line.startswith("-N")]) == 1


def test_an_extra_directive_wins_over_a_target_default_and_a_typed_option_over_a_target_extra():
    scheduler = configured(walltime="1:00:00", extra=["-l mem=4GB"])
    resources = Resources.parse(mem="8GB", extra=["-l walltime=02:00:00"]).over(scheduler.defaults)
    scheduler.check_request(resources)      # nothing the user typed disagrees with itself
    lines = directives(scheduler.render(job_script(resources=resources)))
    assert "-l walltime=02:00:00" in lines and "-l walltime=01:00:00" not in lines
    assert "-l mem=8GB" in lines and "-l mem=4GB" not in lines


def test_select_in_an_extra_directive_replaces_the_ncpus_and_mem_lines():
    scheduler = configured(ncpus=2, mem="4GB")
    resources = Resources.parse(extra=["-l select=1:ncpus=8:mem=16gb"]).over(scheduler.defaults)
    lines = directives(scheduler.render(job_script(resources=resources)))
    assert "-l select=1:ncpus=8:mem=16gb" in lines
    assert not [line for line in lines if line.startswith(("-l ncpus", "-l mem"))]


def test_an_option_and_an_extra_directive_that_disagree_are_refused_with_one_message():
    resources = Resources.parse(mem="8GB", walltime="1:00:00", extra=["-l mem=16GB", "-l walltime=01:00:00"])
    with pytest.raises(ResourceError) as caught:
        PBSScheduler().check_request(resources)
    message = str(caught.value)
    assert "--mem 8GB and --extra '-l mem=16GB'" in message and "Keep one of each pair" in message
    assert "walltime" not in message        # the same walltime twice is no conflict


def test_directive_settings_read_each_resource_of_a_combined_l_line():
    assert [key for key, _, _ in directive_settings("#PBS -l ncpus=4,mem=8GB")] == ["ncpus", "mem"]
    assert directive_settings("-lwalltime=1:00:00") == [("walltime", "1:00:00", "-l walltime=1:00:00")]
    assert directive_settings("-W umask=027")[0][0] == "-W umask"


# -- --map on PBS ---------------------------------------------------------------------------------------------

def test_an_array_is_marked_rerunnable_and_numbered_from_zero():
    lines = directives(PBSScheduler().render(job_script(elements=3)))
    assert "-J 0-2" in lines and "-r y" in lines


def test_a_map_of_one_value_is_a_plain_job_not_an_array_of_one():
    rendered = PBSScheduler().render(job_script(elements=1))
    assert not [line for line in directives(rendered) if line.startswith(("-J", "-r"))]
    assert "element=0" in rendered


def test_a_map_in_one_job_has_no_array_and_runs_the_runners_pool_over_the_jobs_cores():
    scheduler = PBSScheduler()
    scheduler.configure(map_in_one_job=True)
    rendered = scheduler.render(job_script(elements=5, resources=Resources.parse(ncpus=4)))
    assert not [line for line in directives(rendered) if line.startswith(("-J", "-r"))]
    assert "export RX_MAGIC_POOL_CORES=4\n" in rendered and rendered.rstrip().splitlines()[-4].endswith(" --pool")
    assert "^array_index^" not in rendered


def test_gadi_runs_a_map_in_one_job_unless_the_target_says_otherwise():
    assert PBSScheduler("gadi").map_in_one_job and not PBSScheduler().map_in_one_job
    scheduler = PBSScheduler("gadi")
    scheduler.configure(map_in_one_job=False)
    assert "-J 0-2" in directives(scheduler.render(job_script(GADI_WORKDIR, elements=3)))


# -- finding the commands -------------------------------------------------------------------------------------

def test_commands_run_in_a_login_shell_with_every_word_quoted():
    transport = ScriptedTransport((("qsub",), (0, "7.gadi-pbs\n", "")))
    script = job_script("/home/123/abc123/it's here")
    PBSScheduler().submit(transport, script)
    (argv,) = transport.shells
    assert argv[:2] == ("bash", "-lc") and shlex.split(argv[2]) == [
        "exec", "qsub", "-o", script.scheduler_log, "-e", script.scheduler_err, script.job_sh]


def test_a_configured_scheduler_path_is_used_instead_of_the_login_shell():
    transport = ScriptedTransport((("/opt/pbs/bin/qdel",), (0, "", "")))
    scheduler = PBSScheduler()
    scheduler.configure(command_path="/opt/pbs/bin")
    scheduler.cancel(transport, "7.gadi-pbs", "/folder")
    assert transport.shells == [("bash", "-c", "exec /opt/pbs/bin/qdel 7.gadi-pbs")]


def test_a_command_the_login_shell_cannot_find_is_named_with_the_path_searched():
    # bash's own words for a missing command (exit 127); the PATH is a Gadi login's, less PBS's folder
    transport = ScriptedTransport((("qsub",), (127, "", "bash: line 1: qsub: command not found\n")),
                                  (("bash", "-lc", 'printf %s "$PATH"'), (0, "/usr/local/bin:/usr/bin:/bin", "")))
    with pytest.raises(SchedulerError) as caught:
        PBSScheduler().submit(transport, job_script())
    message = str(caught.value)
    assert message.startswith("qsub was not found on gadi (ssh) for the pbs scheduler")
    assert "/usr/local/bin:/usr/bin:/bin" in message and "scheduler_path" in message


# -- {user} ---------------------------------------------------------------------------------------------------

def test_user_in_the_workdir_is_the_login_user_from_ssh_config(ip, configure_targets, isolated, monkeypatch):
    home = isolated / "laptop-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host gadi\n    HostName gadi.nci.org.au\n    User abc123\n")
    monkeypatch.setenv("HOME", str(home))
    configure_targets(gadi={"host": "gadi", "scheduler": "pbs", "profile": "gadi", "project": "ab12",
                            "workdir": "/scratch/{project}/{user}/rx"})
    from rx_magic.targets import get_target
    target = get_target("gadi")
    assert target.workdir_path(expand_home=False) == "/scratch/ab12/abc123/rx"
    assert target.login_user() == ("abc123", "User in ~/.ssh/config for gadi")
    assert not target.transport.connected


# -- PBS's own words, as OpenPBS 23.06 printed them (../shared/openpbs/smoke-facts.md) -------------------------

def test_a_can_never_run_comment_is_a_failure_with_pbss_reason():
    state = job_state({"job_state": "Q", "comment": "Can Never Run: Insufficient amount of resource: ncpus "
                                                    "(R: 64 A: 2 T: 2)"})
    assert (state.state, state.reason) == (
        State.FAILED, "PBS says it can never run: Insufficient amount of resource: ncpus (R: 64 A: 2 T: 2)")


def test_a_job_deleted_before_it_ran_is_cancelled():
    # qdel of a queued job, then qstat -x -f: job_state = F, substate = 91, no Exit_status, no comment
    assert job_state({"job_state": "F", "substate": 91}).state is State.CANCELLED


def test_tracejob_gives_the_exit_status_of_a_job_qstat_has_forgotten():
    text = ("12/03/2026 03:48:02 S Exit_status=-29 resources_used.cpupercent=0 resources_used.cput=00:00:00 "
            "resources_used.mem=0kb resources_used.ncpus=1 resources_used.vmem=0kb "
            "resources_used.walltime=00:00:21\n12/03/2026 03:48:02 S dequeuing from normal, state E\n")
    attributes = parse_tracejob(text)
    assert attributes["Exit_status"] == "-29" and attributes["resources_used.walltime"] == "00:00:21"
    assert job_state(attributes).reason == "walltime exceeded"
    assert parse_tracejob("12/03/2026 03:48:02 S Job Queued at request of rxpbs@localhost\n") is None
