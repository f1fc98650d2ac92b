"""``job.json`` across releases: a job folder written by 0.1.0 is attached, watched and pulled by this one.

``tests/fixtures/jobfolder-0.1.0/`` is what rx_magic 0.1.0 left on a ``local``
target (``workdir/``: the shared ``.rx`` folder, a finished single job and a
finished ``--map n=[1, 2, 3]`` array, their ``job.json`` in format 1) and in
its registry (``registry_rows.json``). The tests put both where today's code
looks for them and attach the jobs in a real IPython shell. ``model.jobspec``,
which reads and upgrades ``job.json``, is tested on its own below, and the
runner of this release is shown to refuse a ``job.json`` in another format.
"""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import rx_magic
from rx_magic.flow.registry import default_registry
from rx_magic.model import jobspec
from rx_magic.model.jobspec import JobSpecError, new_spec, read_spec, validate
from rx_magic.model.local_dirs import data_home
from rx_magic.model.record import JobRecord
from rx_magic.model.states import State
from rx_magic.runtime import runtime_version
from rx_magic.runtime.layout import SPEC_FORMAT, JobPaths

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "jobfolder-0.1.0"
SINGLE = "rx-20261203-061744-b66800"    # y = x * 2 ... print('hello from', x) ... y, with x = 21
ARRAY = "rx-20261203-061744-8c3658"     # --map n=[1, 2, 3]: square = n * n


# ----------------------------------------------------------------------------- helpers

def install_old_workdir() -> Path:
    """Copy the 0.1.0 workdir to where the ``local`` target keeps its jobs; return it."""
    workdir = data_home() / "local-jobs"
    shutil.copytree(FIXTURE / "workdir", workdir)
    return workdir


def old_records(workdir: Path) -> dict[str, JobRecord]:
    """The registry rows 0.1.0 wrote, as records, with the workdir filled in."""
    rows = json.loads((FIXTURE / "registry_rows.json").read_text())["registry_rows"]
    records = {}
    for row in rows:
        row = {**row, "workdir": row["workdir"].replace("{workdir}", str(workdir))}
        records[row["id"]] = JobRecord(**{
            **row, "state": State(row["state"]), "pull": tuple(json.loads(row["pull"])),
            "cancel_requested": bool(row["cancel_requested"]), "pulled": bool(row["pulled"])})
    return records


def pid_not_running() -> str:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return str(process.pid)


def spec_fields(**changes) -> dict:
    """Every field of a format-2 spec, for ``new_spec``."""
    fields = {
        "job_id": "rx-20261123-141502-3fa9b1", "target": "local", "source": "y = x * 2", "code": "y = x * 2",
        "header": [], "first_line": 1, "push": {"x": "ab" * 32}, "imports": {}, "pull": ["y"],
        "limits": {"walltime": None, "mem": None}, "resources": {}, "files": {}, "pythonpath": [],
        "use_ipython": False, "sources": {}, "client": {"rx_magic": "test"},
    }
    fields.update(changes)
    return fields


def old_spec_bytes(job_id: str = SINGLE) -> bytes:
    return (FIXTURE / "workdir" / job_id / "job.json").read_bytes()


# ----------------------------------------------------------------------------- 0.1.0 job folders, attached today

def register(record: JobRecord, row: str) -> None:
    """Add ``record`` to the registry as 0.1.0 left it, or as a kernel that died while the job ran left it."""
    if row == "submitted-by-a-dead-kernel":
        # the kernel that submitted it died before it saw the job end: the row still says submitted,
        # and the job's process is gone
        record = replace(record, state=State.SUBMITTED, ended_at=None, scheduler_id=pid_not_running())
    default_registry().add(record)


ROWS = ["ended-as-written", "submitted-by-a-dead-kernel"]


@pytest.mark.parametrize("row", ROWS)
def test_a_0_1_0_job_is_watched_to_its_end_and_pulled_by_attach(ip, capsys, row):
    workdir = install_old_workdir()
    register(old_records(workdir)[SINGLE], row)
    ip.user_ns["x"] = 21

    result = ip.run_cell(f"%rx attach {SINGLE}")

    assert result.error_in_exec is None, result.error_in_exec
    assert ip.user_ns["y"] == 42
    assert "hello from 21" in capsys.readouterr().out
    record = default_registry().get(SINGLE)
    assert record.state is State.DONE
    assert record.pulled
    assert record.ended_at == pytest.approx(1796278665.0025525)    # when its status.json says it ended


@pytest.mark.parametrize("row", ROWS)
def test_a_0_1_0_job_array_is_watched_to_its_end_and_each_elements_value_pulled_by_attach(ip, capsys, row):
    workdir = install_old_workdir()
    register(old_records(workdir)[ARRAY], row)

    result = ip.run_cell(f"%rx attach {ARRAY}")

    assert result.error_in_exec is None, result.error_in_exec
    assert ip.user_ns["square"] == [1, 4, 9]
    assert "── n=1 ──\n1\n── n=2 ──\n2\n── n=3 ──\n3\n" in capsys.readouterr().out
    record = default_registry().get(ARRAY)
    assert record.state is State.DONE
    assert record.pulled


def test_the_spec_of_a_0_1_0_job_is_read_in_todays_format():
    workdir = install_old_workdir()
    records = old_records(workdir)

    single, array = rx_magic.Job(records[SINGLE]).spec(), rx_magic.Job(records[ARRAY]).spec()

    for spec in (single, array):
        assert spec["format"] == SPEC_FORMAT == 2
        assert "blobs_dir" not in spec and "files_dir" not in spec
    assert single["push"] == json.loads(old_spec_bytes())["push"]
    assert array["map"]["labels"] == ["1", "2", "3"]


def test_the_log_of_a_0_1_0_job_is_read():
    workdir = install_old_workdir()
    records = old_records(workdir)

    assert rx_magic.Job(records[SINGLE]).log() == "hello from 21\n"
    assert "── n=2 ──\n2\n" in rx_magic.Job(records[ARRAY]).log()


# ----------------------------------------------------------------------------- model.jobspec

def test_read_spec_upgrades_format_1_dropping_the_stores_absolute_paths():
    old = json.loads(old_spec_bytes())

    spec = read_spec(old_spec_bytes())

    assert spec["format"] == 2
    assert spec["submitted_at"] is None         # 0.1.0 did not record it in job.json
    assert {key: value for key, value in old.items() if key not in ("format", "blobs_dir", "files_dir")} \
        == {key: value for key, value in spec.items() if key not in ("format", "submitted_at")}
    validate(spec)


def test_a_job_json_from_a_newer_release_says_so_and_to_upgrade():
    newer = json.loads(old_spec_bytes())
    newer["format"] = 99

    with pytest.raises(JobSpecError) as caught:
        read_spec(json.dumps(newer), "/jobs/rx-20261203-061744-b66800/job.json")

    message = str(caught.value)
    assert "/jobs/rx-20261203-061744-b66800/job.json" in message
    assert "format 99" in message
    assert "newer rx_magic" in message
    assert "upgrade rx_magic" in message


@pytest.mark.parametrize("data, problem", [
    (b'{"format": 2, "job_id": ', "is not JSON"),
    (b"[1, 2]", "holds a list"),
    (b'{"job_id": "rx-20261123-141502-3fa9b1"}', "no valid format number"),
    (b'{"format": "2"}', "no valid format number"),
], ids=["truncated", "not-an-object", "no-format", "format-not-a-number"])
def test_a_damaged_job_json_is_refused_saying_what_is_wrong(data, problem):
    with pytest.raises(JobSpecError, match=problem) as caught:
        read_spec(data, "somewhere/job.json")
    assert "somewhere/job.json" in str(caught.value)
    assert "damaged" in str(caught.value)


def test_a_job_json_missing_keys_is_refused_naming_each_one():
    spec = new_spec(**spec_fields())
    del spec["code"], spec["pull"]

    with pytest.raises(JobSpecError) as caught:
        read_spec(jobspec.dumps(spec))

    message = str(caught.value)
    assert "code missing or not a str" in message
    assert "pull missing or not a list" in message


def test_a_push_digest_that_is_not_a_hash_is_refused_naming_the_variable():
    spec = new_spec(**spec_fields())
    spec["push"]["x"] = "../../etc/passwd"

    with pytest.raises(JobSpecError, match=r"push\['x'\] is not a content hash"):
        read_spec(jobspec.dumps(spec))


def test_a_job_id_that_is_not_one_and_a_broken_map_are_refused():
    spec = new_spec(**spec_fields())
    spec["job_id"] = "../elsewhere"
    spec["map"] = {"name": "n", "size": 0, "values": "ab" * 32}

    with pytest.raises(JobSpecError) as caught:
        read_spec(jobspec.dumps(spec))

    assert "job_id '../elsewhere' is not an rx_magic job id" in str(caught.value)
    assert "map is not" in str(caught.value)


def test_new_spec_writes_the_current_format_and_round_trips_through_read_spec():
    array = {"name": "n", "expr": "[1, 2]", "size": 2, "values": "cd" * 32, "labels": ["1", "2"]}
    for fields in (spec_fields(), spec_fields(map=array)):
        spec = new_spec(**fields)

        assert spec["format"] == SPEC_FORMAT
        assert isinstance(spec["submitted_at"], float)
        validate(spec)
        assert read_spec(jobspec.dumps(spec)) == spec


def test_new_spec_refuses_fields_that_would_not_validate():
    with pytest.raises(JobSpecError, match="use_ipython missing or not a bool"):
        new_spec(**spec_fields(use_ipython="yes"))


# ----------------------------------------------------------------------------- today's job.json and runner

def test_todays_job_json_is_format_2_and_the_runner_refuses_another_format(tmp_path):
    job = rx_magic.submit("z = 1", "local", {})
    assert job.wait(timeout=60) is State.DONE
    written = json.loads(Path(job.paths.job_json).read_text())
    assert written["format"] == 2
    assert "blobs_dir" not in written and "files_dir" not in written

    # the same job folder, its job.json turned back to format 1, beside the workdir's .rx so the layout holds
    copy = JobPaths(job.record.workdir, "rx-20261203-061744-0ddf00")
    shutil.copytree(job.paths.folder, copy.folder)
    for name in ("status.json", "exit_code", "stdout.log", "stderr.log", "outputs.dill", "display.json"):
        Path(copy.folder, name).unlink(missing_ok=True)
    Path(copy.job_json).write_text(json.dumps({**written, "format": 1, "job_id": copy.job_id}))
    runner = Path(copy.runtime_dir(runtime_version())) / "runner.py"

    ran = subprocess.run([sys.executable, str(runner), copy.folder], capture_output=True, text=True, timeout=60,
                         check=False)

    assert ran.returncode == 2, ran.stderr
    assert f"{copy.job_json} is in format 1" in ran.stderr
    assert f"this runner reads format {SPEC_FORMAT}" in ran.stderr
    assert not Path(copy.status_json).exists()     # nothing ran


# ----------------------------------------------------------------------------- the runner's own JSON and ids

JSON_VALUES = [
    {"state": "done", "reason": None, "elapsed": 0.0165, "exit_code": 0, "peak_memory": 10256384, "ok": True},
    {"lines": ["print('é')\n", "x = \"\\t\"\n", "\u2028\x00\x1f"], "nested": {"a": [[], {}, [1, [2.5e-7]]]}},
    [float("inf"), -float("inf"), 1e308, -0.0, 10**40, -(2**63)], "text", 3, None,
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_the_runners_json_is_jsons_text_and_values(value):
    from rx_magic.runtime import jsontext
    assert jsontext._scan is not None and jsontext._encode is not None     # the fast path, not the fallback
    text = json.dumps(value)
    assert jsontext.dumps(value) == text
    assert repr(jsontext.loads(text)) == repr(json.loads(text))
    assert repr(jsontext.loads(f" \n{json.dumps(value, indent=2)}\n ")) == repr(value)
    assert repr(jsontext.loads(text.encode())) == repr(json.loads(text.encode()))     # a file read as bytes
    nan = jsontext.loads(jsontext.dumps([float("nan")]))[0]
    assert nan != nan


@pytest.mark.parametrize("text", ["", "  ", "{", "[1,]", "1 2", "{'a': 1}", "[1] x", '"\x01"', "nan"])
def test_the_runners_json_refuses_what_json_refuses(text):
    from rx_magic.runtime import jsontext
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_the_runners_json_refuses_what_json_cannot_hold():
    from rx_magic.runtime import jsontext
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsontext.dumps(loop)


@pytest.mark.parametrize("name, job, hold", [
    ("rx-20261203-153904-b4f68e", True, False), ("rx-20261203-153904-b4f6", True, False),
    ("hold-20261203-153904-b4f68e12", False, True), ("rx-20261203-153904-b4f", False, False),
    ("rx-20261203-153904-b4f68e123", False, False), ("rx-20261203-153904-B4F68E", False, False),
    ("rx-2026120-153904-b4f68e", False, False), ("rx-20261203-153904-b4f68e\n", False, False),
    ("rx-20261203-15390x-b4f68e", False, False), ("rx-٢٠٢٦١٢٠٣-153904-b4f68e", False, False),
    ("rx-20261203-153904-b4f68e.part", False, False), ("../rx-20261203-153904-b4f68e", False, False),
    ("rx-20261203-153904-b4f68e-", False, False), ("", False, False),
])
def test_job_and_hold_ids_are_recognised_exactly(name, job, hold):
    from rx_magic.runtime.layout import is_hold_id, is_job_id
    assert (is_job_id(name), is_hold_id(name)) == (job, hold)


def test_a_trivial_job_imports_neither_json_nor_re_nor_hashlib(ip):
    """What a job imports is what it pays for at every start: json, re, enum and hashlib's OpenSSL cost a
    trivial job ~15 ms together, and its small values need none of them."""
    import warnings

    from helpers import newest_job, run_remote
    ip.user_ns["x"] = 20
    # as numpy's import leaves in nearly every notebook: filters with patterns, which warnings compiles with re
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="numpy.ndarray size changed")
        warnings.filterwarnings("error", message="rx test: .*fails", category=UserWarning)
        result = run_remote(ip, "local", "import sys\ny = x + 1\nseen = sorted(set(sys.modules) & "
                                         "{'json', 're', 'enum', 'hashlib', 'pickle', 'signal', 'dill'})")
        assert result.error_in_exec is None
        assert ip.user_ns["y"] == 21
        assert ip.user_ns["seen"] == []
        assert newest_job().record.state is State.DONE
        # the filters still act as in the notebook once a warning comes
        result = run_remote(ip, "local", "import warnings\nwarnings.warn('numpy.ndarray size changed, ok')\n"
                                         "warnings.warn('RX TEST: this fails')")
    assert isinstance(result.error_in_exec, UserWarning)
    assert "RX TEST: this fails" in str(result.error_in_exec)
