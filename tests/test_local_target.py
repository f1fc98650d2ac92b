"""``%%remote local`` end to end: a real IPython shell, real job processes, no fakes.

Each test runs cells the way a user would and checks what the user would
notice: the namespace, what was printed and displayed, what was raised, and
what was (or was not) left on the target.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from helpers import newest_job, process_is_gone, run_remote, usage_error, wait_for
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import rx_magic
from rx_magic.errors import RemoteTraceback
from rx_magic.model.local_dirs import cache_home, data_home
from rx_magic.model.states import State

# ----------------------------------------------------------------------------- helpers

def local_workdir():
    return data_home() / "local-jobs"


def job_folders(workdir=None):
    workdir = Path(workdir or local_workdir())
    return sorted(path.name for path in workdir.glob("rx-*")) if workdir.is_dir() else []


def assert_nothing_submitted(workdir=None):
    assert job_folders(workdir) == []
    assert rx_magic.jobs() == []


def status_of(job):
    try:
        return json.loads((Path(job.paths.folder) / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


# ----------------------------------------------------------------------------- variables out and back

def test_cell_reads_notebook_variables_and_its_assignments_come_back(ip):
    ip.user_ns.update(x=20, words=["a", "b"])
    result = run_remote(ip, "local", """
        y = x + 1
        joined = "-".join(words)
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 21
    assert ip.user_ns["joined"] == "a-b"
    assert ip.user_ns["x"] == 20


def test_target_defaults_to_local(ip):
    ip.user_ns["x"] = 1
    result = ip.run_cell("%%remote\ny = x + 1\n")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 2
    assert newest_job().record.target == "local"


def test_cell_runs_in_another_process(ip):
    result = run_remote(ip, "local", """
        import os
        remote_pid = os.getpid()
    """)
    assert result.error_in_exec is None
    assert isinstance(ip.user_ns["remote_pid"], int)
    assert ip.user_ns["remote_pid"] != os.getpid()


def test_notebook_functions_lambdas_and_classes_travel_and_work_remotely(ip):
    ip.run_cell(textwrap.dedent("""
        OFFSET = 100
        def shifted(v):
            return v + OFFSET
        square = lambda v: v * v
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm1(self):
                return abs(self.x) + abs(self.y)
    """))
    result = run_remote(ip, "local", """
        total = shifted(1) + square(3) + Point(-2, 5).norm1()
        far = Point(3, -4)
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["total"] == 101 + 9 + 7
    assert ip.user_ns["far"].norm1() == 7


def test_functions_and_classes_defined_in_the_cell_come_back_and_work_here(ip):
    result = run_remote(ip, "local", """
        def triple(v):
            return 3 * v
        class Counter:
            def __init__(self):
                self.count = 0
            def bump(self):
                self.count += 1
                return self.count
    """)
    assert result.error_in_exec is None
    ip.run_cell("t = triple(4)\nc = Counter()\nc.bump()\nn = c.bump()")
    assert ip.user_ns["t"] == 12
    assert ip.user_ns["n"] == 2


def test_modules_travel_as_imports(ip):
    ip.run_cell("import numpy as np")
    result = run_remote(ip, "local", "total = float(np.arange(5).sum())")
    assert result.error_in_exec is None
    assert ip.user_ns["total"] == 10.0
    spec = json.loads((Path(newest_job().paths.folder) / "job.json").read_text())
    assert spec["imports"] == {"np": "import numpy as np"}
    assert spec["push"] == {}


def test_unchanged_input_is_not_written_again():
    namespace = {"data": np.arange(100_000, dtype=np.float64)}
    first = rx_magic.submit("total = float(data.sum())", "local", namespace)
    assert first.blobs_sent == 1
    assert first.bytes_sent >= namespace["data"].nbytes
    assert first.wait(timeout=60) is State.DONE

    second = rx_magic.submit("total = float(data.sum())", "local", namespace)
    assert second.blobs_sent == 0
    assert second.bytes_sent == 0
    assert second.wait(timeout=60) is State.DONE
    pulled = {}
    second.pull(pulled)
    assert pulled == {"total": float(namespace["data"].sum())}


def test_a_changed_input_is_written_again():
    first = rx_magic.submit("n = len(items)", "local", {"items": [1, 2, 3]})
    second = rx_magic.submit("n = len(items)", "local", {"items": [1, 2, 3, 4]})
    assert (first.blobs_sent, second.blobs_sent) == (1, 1)
    for job, expected in ((first, 3), (second, 4)):
        assert job.wait(timeout=60) is State.DONE
        pulled = {}
        job.pull(pulled)
        assert pulled == {"n": expected}


# ----------------------------------------------------------------------------- output

def test_printed_output_is_shown_while_the_cell_runs(ip, tmp_path, monkeypatch):
    # The cell waits for a file that this side creates only once it has seen
    # the cell's first line printed: if output were shown only at the end, the
    # cell would never see the file and would fail.
    go = tmp_path / "go"

    class Terminal:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text
            if "waiting for go" in self.text:
                go.touch()
            return len(text)

        def flush(self):
            pass

    terminal = Terminal()
    ip.user_ns["go_file"] = str(go)
    with monkeypatch.context() as patched:
        patched.setattr(sys, "stdout", terminal)
        result = run_remote(ip, "local", """
            import os, time
            print("waiting for go", flush=True)
            for _ in range(600):
                if os.path.exists(go_file):
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("the notebook never showed the first line")
            print("got go")
        """)
    assert result.error_in_exec is None, terminal.text
    assert terminal.text.index("waiting for go") < terminal.text.index("got go")


def test_stdout_and_stderr_of_the_cell_are_printed(ip, capsys):
    result = run_remote(ip, "local", """
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
    """)
    assert result.error_in_exec is None
    out, err = capsys.readouterr()
    assert "to stdout" in out
    assert "to stderr" in err


def test_trailing_expression_is_the_cells_result(ip):
    ip.user_ns["x"] = 6
    result = run_remote(ip, "local", "x * 7")
    assert result.error_in_exec is None
    assert repr(result.result) == "42"


def test_display_of_an_object_with_html_comes_back_as_html(ip):
    with capture_output() as captured:
        result = run_remote(ip, "local", """
            class Badge:
                def _repr_html_(self):
                    return "<b>remote badge</b>"
            display(Badge())
        """)
    assert result.error_in_exec is None
    assert {"text/html": "<b>remote badge</b>"}.items() <= captured.outputs[0].data.items()


def test_matplotlib_figure_comes_back_as_png(ip):
    with capture_output() as captured:
        result = run_remote(ip, "local --no-pull", """
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            ax.plot([1, 3, 2])
        """)
    assert result.error_in_exec is None
    images = [output.data["image/png"] for output in captured.outputs if "image/png" in output.data]
    assert len(images) == 1
    assert images[0].startswith("iVBORw0KGgo")  # base64 of the PNG signature


# ----------------------------------------------------------------------------- errors

def test_remote_exception_is_raised_here_with_the_remote_traceback(ip, capsys):
    result = run_remote(ip, "local", """
        def check(v):
            if v < 0:
                raise ValueError(f"negative: {v}")
        check(-1)
    """)
    error = result.error_in_exec
    assert type(error) is ValueError
    assert str(error) == "negative: -1"
    assert isinstance(error.__cause__, RemoteTraceback)
    remote = error.__cause__.text
    # line numbers count the %%remote line as line 1, as the notebook shows the cell
    assert 'line 5, in <module>' in remote
    assert 'line 4, in check' in remote
    assert 'raise ValueError(f"negative: {v}")' in remote
    assert "line 4, in check" in capsys.readouterr().out


def test_exception_of_a_class_defined_in_the_cell_is_raised_here(ip):
    result = run_remote(ip, "local", """
        class KettleTooHot(Exception):
            pass
        raise KettleTooHot("120 C")
    """)
    error = result.error_in_exec
    assert type(error).__name__ == "KettleTooHot"
    assert isinstance(error, Exception)
    assert str(error) == "120 C"
    assert "KettleTooHot: 120 C" in error.__cause__.text


def test_exception_that_cannot_be_pickled_becomes_remote_error(ip):
    result = run_remote(ip, "local", """
        import threading
        class Stuck(Exception):
            def __init__(self):
                super().__init__("holding a lock")
                self.lock = threading.Lock()
        raise Stuck()
    """)
    error = result.error_in_exec
    assert isinstance(error, rx_magic.RemoteError)
    assert "Stuck" in str(error)
    assert "holding a lock" in str(error)
    assert error.remote_type.endswith("Stuck")
    assert "line 7, in <module>" in error.remote_traceback


def test_failed_cell_leaves_the_namespace_untouched(ip):
    ip.user_ns["before"] = 1
    result = run_remote(ip, "local", """
        before = 2
        assigned_then_failed = 3
        raise RuntimeError("stop")
    """)
    assert isinstance(result.error_in_exec, RuntimeError)
    assert ip.user_ns["before"] == 1
    assert "assigned_then_failed" not in ip.user_ns


def test_finished_job_has_a_notebook_with_the_cell_and_its_error(ip):
    run_remote(ip, "local", """
        print("about to fail")
        raise ValueError("kept in the notebook")
    """)
    job = newest_job()
    notebook = nbformat.read(cache_home() / "jobs" / job.id / "job.ipynb", as_version=4)
    nbformat.validate(notebook)     # rx_magic writes it without nbformat
    (only,) = notebook.cells
    assert only.source.startswith("%%remote local\n")
    assert 'raise ValueError("kept in the notebook")' in only.source
    kinds = {output.output_type: output for output in only.outputs}
    assert "about to fail" in kinds["stream"].text
    assert kinds["error"].ename == "ValueError"
    assert kinds["error"].evalue == "kept in the notebook"


def test_a_jobs_notebook_holds_its_rich_outputs_as_nbformat_would_write_them(ip):
    ip.run_cell("from IPython.display import HTML, SVG, Markdown, display")
    run_remote(ip, "local", """
        print("line one\\nline two")
        display(HTML("<b>bold</b>\\n<i>and more</i>"), Markdown("# Title"))
        display(SVG('<svg xmlns="http://www.w3.org/2000/svg">\\n<rect width="1" height="1"/>\\n</svg>'))
        {"shown": "last"}
    """)
    path = cache_home() / "jobs" / newest_job().id / "job.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert path.read_text() == nbformat.writes(notebook) + "\n"     # laid out as nbformat lays it out
    (only,) = notebook.cells
    assert [output.output_type for output in only.outputs] == ["stream", "display_data", "display_data",
                                                               "display_data", "execute_result"]
    assert only.outputs[0].text == "line one\nline two\n"
    assert only.outputs[1].data["text/html"] == "<b>bold</b>\n<i>and more</i>"
    assert only.outputs[2].data["text/markdown"] == "# Title"
    assert "<rect" in only.outputs[3].data["image/svg+xml"]
    assert only.outputs[4].data["text/plain"] == "{'shown': 'last'}"


# ----------------------------------------------------------------------------- limits

def test_walltime_stops_the_job_and_says_so(ip):
    result = run_remote(ip, "local --walltime 2s", """
        import time
        time.sleep(30)
        never = 1
    """)
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    assert "walltime exceeded" in str(result.error_in_exec)
    assert "never" not in ip.user_ns
    assert newest_job().state is State.FAILED


def test_memory_limit_stops_the_job_and_says_so(ip):
    result = run_remote(ip, "local --mem 100MB", """
        import time
        import numpy as np
        big = np.ones(50_000_000)
        time.sleep(30)
    """)
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    assert "memory limit exceeded" in str(result.error_in_exec)
    assert "big" not in ip.user_ns


def test_cell_runs_with_pythons_default_signal_handling(ip):
    # the job's supervisor catches SIGTERM to record how the job ended; the
    # cell must not inherit that, or the SIGTERM that stops it is ignored
    result = run_remote(ip, "local", """
        import signal
        on_term = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        on_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    """)
    assert result.error_in_exec is None
    assert (ip.user_ns["on_term"], ip.user_ns["on_int"]) == (True, True)


# ----------------------------------------------------------------------------- bad input

def test_unknown_target_lists_the_known_ones_and_the_config_file(ip):
    message = usage_error(run_remote(ip, "nowhere", "x = 1"))
    assert "'nowhere'" in message
    assert "local" in message
    assert os.path.join(os.environ["XDG_CONFIG_HOME"], "rx_magic", "targets.toml") in message
    assert_nothing_submitted()


@pytest.mark.parametrize("line, expected", [
    ("local --mem 8XB", "'8XB' is not a size"),
    ("local --walltime 99:99", "'99:99'"),
])
def test_malformed_resources_are_refused(ip, line, expected):
    message = usage_error(run_remote(ip, line, "x = 1"))
    assert expected in message
    assert_nothing_submitted()


def test_syntax_error_names_the_cell_line(ip):
    message = usage_error(run_remote(ip, "local", """
        x = 1
        y = = 2
    """))
    assert "line 3" in message  # the %%remote line is line 1
    assert "y = = 2" in message
    assert_nothing_submitted()


def test_empty_cell_is_refused(ip):
    message = usage_error(ip.run_cell("%%remote local\n\n   \n"))
    assert "empty" in message
    assert_nothing_submitted()


def test_unpicklable_variable_is_named_with_its_type(ip):
    ip.user_ns["guard"] = threading.Lock()
    message = usage_error(run_remote(ip, "local", "held = guard.locked()"))
    assert "'guard' (_thread.lock) read on line 2 of the cell: cannot pickle" in message
    assert_nothing_submitted()


def test_payload_over_the_targets_limit_is_refused(ip, tmp_path, configure_targets):
    workdir = tmp_path / "small-jobs"
    configure_targets(small={"workdir": str(workdir), "python": sys.executable, "max_payload": "1KB"})
    ip.user_ns["blob"] = b"x" * 10_240
    message = usage_error(run_remote(ip, "small", "n = len(blob)"))
    assert "limit" in message
    assert "'blob'" in message
    assert_nothing_submitted(workdir)


def test_push_of_an_undefined_name_is_refused(ip):
    message = usage_error(run_remote(ip, "local --push ghost", "x = 1"))
    assert "'ghost'" in message
    assert "not defined" in message
    assert_nothing_submitted()


def test_pull_of_a_name_never_bound_warns_but_runs(ip, capsys):
    result = run_remote(ip, "local --pull y,never", "y = 1")
    assert result.error_in_exec is None
    assert "'never'" in capsys.readouterr().err
    assert ip.user_ns["y"] == 1
    assert "never" not in ip.user_ns
    assert newest_job().state is State.DONE


def test_secret_looking_variable_is_held_back_unless_pushed(ip, capsys):
    ip.user_ns["api_token"] = "abc123-not-a-real-token"
    result = run_remote(ip, "local", "sent = api_token")
    assert isinstance(result.error_in_exec, NameError)
    err = capsys.readouterr().err
    assert "held back 'api_token'" in err
    assert "--push api_token" in err
    assert "sent" not in ip.user_ns

    result = run_remote(ip, "local --push api_token", "sent = api_token")
    assert result.error_in_exec is None
    assert ip.user_ns["sent"] == "abc123-not-a-real-token"


# ----------------------------------------------------------------------------- what comes back

def test_dry_run_shows_the_script_and_pushed_names_and_submits_nothing(ip, capsys):
    ip.user_ns.update(x=21, table=list(range(1000)))
    result = run_remote(ip, "local --dry-run --walltime 1h", "y = x * len(table)")
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    assert re.search(r"^\s*table\s+list\s+\d+(\.\d+)? (B|KiB)", out, re.MULTILINE)
    assert re.search(r"^\s*x\s+int\s+\d+ B", out, re.MULTILINE)
    assert "walltime 1:00:00" in out
    assert "pull: y" in out
    assert "#!/bin/bash" in out
    assert "runner.py" in out
    assert "y" not in ip.user_ns
    assert_nothing_submitted()


def test_no_pull_brings_nothing_back(ip):
    result = run_remote(ip, "local --no-pull", """
        y = 1
        print("ran")
    """)
    assert result.error_in_exec is None
    assert "y" not in ip.user_ns
    assert newest_job().state is State.DONE


def test_pull_brings_back_only_the_names_given(ip):
    result = run_remote(ip, "local --pull y", """
        y = 1
        z = 2
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 1
    assert "z" not in ip.user_ns


# ----------------------------------------------------------------------------- detachment

def test_job_survives_the_kernel_that_submitted_it_being_killed(ip, capsys):
    kernel = textwrap.dedent("""
        import os, signal, rx_magic
        job = rx_magic.submit("import time\\ntime.sleep(3)\\nanswer = base + 1", "local", {"base": 41})
        print(job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", kernel], capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    job_id = killed.stdout.strip()
    capsys.readouterr()
    ip.run_cell("%rx jobs")
    listed = next(line for line in capsys.readouterr().out.splitlines() if job_id in line)
    assert "another kernel" in listed

    result = ip.run_cell(f"%rx attach {job_id}")
    assert result.error_in_exec is None
    assert ip.user_ns["answer"] == 42
    assert newest_job().state is State.DONE


def test_interrupting_a_waiting_cell_stops_waiting_not_the_job(ip, capsys, tmp_path, sigint_interrupts):
    go = tmp_path / "go"

    def interrupt_once_the_cell_runs():
        # a kernel interrupt, as Jupyter sends it (SIGINT), once the cell is surely waiting on the job,
        # which goes on until the test lets it end
        wait_for(lambda: any("started" in path.read_text() for path in local_workdir().glob("rx-*/stdout.log")),
                 "the cell to start")
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_the_cell_runs)
    interrupter.start()
    try:
        result = run_remote(ip, "local", f"""
            import os, time
            print("started", flush=True)
            for _ in range(6000):       # at most 2 minutes: a lost interrupt fails the test, never hangs it
                if os.path.exists({str(go)!r}):
                    break
                time.sleep(0.02)
            answer = 42
        """)
    finally:
        interrupter.join()
    go.touch()
    assert result.error_in_exec is None
    assert "answer" not in ip.user_ns
    job = newest_job()
    err = capsys.readouterr().err
    assert f"%rx attach {job.id}" in err
    assert f"%rx cancel {job.id}" in err

    result = ip.run_cell(f"%rx attach {job.id}")
    assert result.error_in_exec is None
    assert ip.user_ns["answer"] == 42
    assert job.refresh() is State.DONE


def test_cancel_stops_the_job_and_its_process(ip, capsys):
    job = rx_magic.submit("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)", "local")
    wait_for(lambda: job.log().strip(), "the cell to start")
    supervisor_pid = status_of(job)["pid"]
    cell_pid = int(job.log().strip())

    result = ip.run_cell(f"%rx cancel {job.id}")
    assert result.error_in_exec is None
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert newest_job().state is State.CANCELLED
    wait_for(lambda: process_is_gone(supervisor_pid), "the job's process to end")
    wait_for(lambda: process_is_gone(cell_pid), "the cell's process to end")
    with pytest.raises(ProcessLookupError):
        os.kill(supervisor_pid, 0)


# ----------------------------------------------------------------------------- %rx and the Python API

def test_rx_jobs_lists_jobs_newest_first_with_their_state(ip, capsys):
    run_remote(ip, "local", "first = 1")
    older = newest_job().id
    run_remote(ip, "local", "raise ValueError('second fails')")
    newer = newest_job().id
    capsys.readouterr()
    ip.run_cell("%rx jobs")
    out = capsys.readouterr().out
    newer_line = next(line for line in out.splitlines() if newer in line)
    older_line = next(line for line in out.splitlines() if older in line)
    assert "failed" in newer_line
    assert "done" in older_line and "first = 1" in older_line
    assert out.index(newer) < out.index("second fails") < out.index(older)


def test_rx_log_prints_the_jobs_output(ip, capsys):
    run_remote(ip, "local", "print('line one')\nprint('line two')")
    job = newest_job()
    capsys.readouterr()
    ip.run_cell(f"%rx log {job.id}")
    assert capsys.readouterr().out == "line one\nline two\n"


def test_rx_clean_removes_finished_jobs_and_unused_blobs_and_says_what_it_freed(ip, capsys):
    ip.user_ns["payload"] = list(range(5000))
    run_remote(ip, "local", "n = len(payload)")
    run_remote(ip, "local", "m = 2")
    live = rx_magic.submit("import time\ntime.sleep(60)\nk = len(kept)", "local", {"kept": "still needed"})
    blobs = local_workdir() / ".rx" / "blobs"
    assert len(list(blobs.glob("*.dill"))) == 2
    an_hour_ago = time.time() - 3700        # an unused input younger than that may belong to a submission under way
    for blob in blobs.glob("*.dill"):
        os.utime(blob, (an_hour_ago, an_hour_ago))
    finished = [name for name in job_folders() if name != live.id]
    capsys.readouterr()

    result = ip.run_cell("%rx clean --older-than 0")
    assert result.error_in_exec is None
    said = capsys.readouterr().out
    assert re.search(r"removed 2 job folders and 1 stored input, freeing \d+(\.\d+)? (B|KiB|MiB)", said), said
    assert job_folders() == [live.id]
    assert [job.id for job in rx_magic.jobs()] == [live.id]
    assert len(list(blobs.glob("*.dill"))) == 1  # the live job's input stays
    for name in finished:
        assert not (cache_home() / "jobs" / name).exists()
    live.cancel()


def test_api_jobs_are_newest_first():
    submitted = [rx_magic.submit(f"v = {n}", "local") for n in range(3)]
    for job in submitted:
        job.wait(timeout=60)
    assert [job.id for job in rx_magic.jobs()] == [job.id for job in reversed(submitted)]


# ----------------------------------------------------------------------------- runner-side failures

def test_missing_python_on_the_target_fails_the_job_with_the_reason(ip, tmp_path, configure_targets):
    configure_targets(broken={"workdir": str(tmp_path / "broken-jobs"), "python": str(tmp_path / "no-such-python")})
    result = run_remote(ip, "broken", "y = 1")
    error = result.error_in_exec
    assert isinstance(error, rx_magic.JobFailed)
    assert "127" in str(error) or "not found" in str(error)
    assert newest_job().state is State.FAILED
    assert "y" not in ip.user_ns


def test_target_python_without_dill_runs_plain_values_and_fails_naming_dill_for_a_function(
        ip, tmp_path, configure_targets):
    wrapper = tmp_path / "python-without-site"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S -I "$@"\n')
    wrapper.chmod(0o755)
    configure_targets(bare={"workdir": str(tmp_path / "bare-jobs"), "python": str(wrapper)})
    ip.user_ns["x"] = {"a": [1, 2]}
    result = run_remote(ip, "bare", "y = len(x['a'])")     # nothing here needs dill: the job does without it
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 2
    ip.run_cell("def double(v):\n    return 2 * v\n")     # a notebook function travels pickled by dill
    result = run_remote(ip, "bare", "z = double(3)")
    error = result.error_in_exec
    assert isinstance(error, rx_magic.JobFailed)
    assert "dill is not importable" in str(error) and "pip install dill" in str(error)
    assert newest_job().state is State.FAILED


def test_workdir_with_a_space_and_a_quote_works(ip, tmp_path, configure_targets):
    workdir = tmp_path / "it's a folder" / "with space" / "jobs"
    configure_targets(odd={"workdir": str(workdir), "python": sys.executable})
    ip.user_ns["x"] = 4
    result = run_remote(ip, "odd", """
        print("printed from an odd place")
        y = x * 10
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 40
    assert job_folders(workdir) == [newest_job().id]


def test_a_remote_traceback_through_a_notebook_function_shows_its_cell_and_line(ip):
    ip.run_cell("def calibrate(reading):\n    scale = 10\n    return scale / reading\n", store_history=True)
    result = ip.run_cell("%%remote local\nvalue = calibrate(0)\n")
    error = result.error_in_exec
    assert isinstance(error, ZeroDivisionError)
    text = str(error.__cause__)
    assert "return scale / reading" in text                 # the function's own line, from the notebook
    assert re.search(r"Cell In\[\d+\], line 3, in calibrate", text)


def test_a_remote_traceback_is_formatted_by_ipython_on_the_target_as_the_notebook_numbers_it(ip):
    ip.run_cell("def normalise(total):\n    count = 0\n    return total / count\n", store_history=True)
    defined_in = ip.execution_count - 1
    result = ip.run_cell("%%remote local\nvalue = normalise(10)\n", store_history=True)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(result.error_in_exec._render_traceback_()))
    assert shown.count("Traceback (most recent call last)") == 1
    assert f"Cell In[{defined_in + 1}], line 2" in shown and "----> 2 value = normalise(10)" in shown
    assert f"Cell In[{defined_in}], line 3, in normalise(total)" in shown
    assert "----> 3     return total / count" in shown
    assert "rx_magic" not in shown and "runner.py" not in shown


def test_without_ipython_on_the_target_the_remote_traceback_is_pythons_own(ip, tmp_path, configure_targets):
    import dill
    bare = tmp_path / "env-without-ipython"     # a real environment with dill and not IPython
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    site = next((bare / "lib").glob("python3*/site-packages"))
    (site / "dill").symlink_to(Path(dill.__file__).parent)
    configure_targets(bare={"workdir": str(tmp_path / "bare-jobs"), "python": str(bare / "bin" / "python")})
    ip.run_cell("def rescale(level):\n    zero = 0\n    return level / zero\n", store_history=True)
    result = ip.run_cell("%%remote bare\nvalue = rescale(5)\n", store_history=True)
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(result.error_in_exec._render_traceback_()))
    assert "Traceback on the target (most recent call last)" in shown
    assert 'File "<remote cell>", line 2, in <module>' in shown and "value = rescale(5)" in shown
    assert re.search(r"Cell In\[\d+\], line 3, in rescale", shown)
    assert shown.rstrip().endswith("ZeroDivisionError: division by zero")


def test_instances_of_a_notebook_class_come_back_as_that_class(ip):
    ip.run_cell("class Point:\n    def __init__(self, x):\n        self.x = x\n\n"
                "class BadData(Exception):\n    pass\n\norigin = Point(0)\n")
    result = ip.run_cell("%%remote local\nsame_class_there = isinstance(origin, Point)\nmoved = Point(origin.x + 1)\n")
    assert result.error_in_exec is None
    assert ip.user_ns["same_class_there"] is True
    assert isinstance(ip.user_ns["moved"], ip.user_ns["Point"]) and ip.user_ns["moved"].x == 1
    failed = ip.run_cell("%%remote local\nraise BadData('reading 3 is negative')\n")
    assert isinstance(failed.error_in_exec, ip.user_ns["BadData"])        # `except BadData` catches it here


def test_a_class_redefined_in_the_cell_comes_back_as_the_new_definition(ip):
    ip.run_cell("class Unit:\n    name = 'old'\n")
    result = ip.run_cell("%%remote local\nclass Unit:\n    name = 'new'\nthing = Unit()\n")
    assert result.error_in_exec is None
    assert ip.user_ns["thing"].name == "new" and ip.user_ns["Unit"].name == "new"


def test_a_remote_exception_is_shown_without_rx_magic_frames(ip, capsys):
    result = run_remote(ip, "local", """
        def check(v):
            raise ValueError(f"negative: {v}")
        check(-1)
    """)
    assert type(result.error_in_exec) is ValueError
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)     # without its colours
    assert shown.count("Traceback (most recent call last)") == 1 and "line 3, in check(v)" in shown  # IPython's look
    assert shown.rstrip().endswith("ValueError: negative: -1")
    assert "rx_magic" not in shown.replace("rx_magic:", "")       # no frame of rx_magic's own waiting and pulling


def test_a_job_error_is_shown_as_its_message_alone(ip, capsys):
    result = run_remote(ip, "local --walltime 1s", "import time\ntime.sleep(30)")
    assert isinstance(result.error_in_exec, rx_magic.JobFailed)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)     # without its colours
    assert re.search(r"JobFailed: job rx-\S+ failed: walltime exceeded", shown)
    assert "Traceback" not in shown and "jobs.py" not in shown


def test_rx_cancel_without_an_id_stops_this_notebooks_only_unfinished_job(ip, capsys):
    job = rx_magic.submit("import time\ntime.sleep(60)", "local")
    result = ip.run_cell("%rx cancel")
    assert result.error_in_exec is None
    assert f"{job.id}: cancelled" in capsys.readouterr().out
    assert job.refresh() is State.CANCELLED


def test_rx_cancel_without_an_id_names_the_jobs_when_there_are_several(ip):
    first = rx_magic.submit("import time\ntime.sleep(60)", "local")
    second = rx_magic.submit("import time\ntime.sleep(60)", "local")
    message = usage_error(ip.run_cell("%rx cancel"))
    assert "2 unfinished jobs" in message and first.id in message and second.id in message
    assert "%rx cancel ID" in message
    assert first.refresh() is not State.CANCELLED and second.refresh() is not State.CANCELLED


def test_rx_cancel_without_an_id_and_nothing_running_says_so(ip):
    rx_magic.submit("x = 1", "local").wait(timeout=60)
    message = usage_error(ip.run_cell("%rx cancel"))
    assert "no job this notebook submitted is still running" in message


def test_an_unknown_rx_command_is_named_with_the_list_of_commands(ip):
    result = ip.run_cell("%rx cancle")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "invalid choice: 'cancle'" in message
    assert "%rx cancel [ID]" in message and "usage: usage" not in message
