"""rx_magic in real Jupyter kernels: reattaching after a kernel restart, and the widget's buttons while a cell waits."""

import re
import time

import nbformat
import pytest
from helpers import run_notebook, text_of

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def write_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))
    return path


def test_a_background_job_outlives_its_kernel_and_a_new_kernel_attaches_to_it(tmp_path):
    first = run_notebook(write_notebook(
        tmp_path / "submit.ipynb",
        "%load_ext rx_magic\nbase = 21",
        "%%remote local --bg\nimport time\ntime.sleep(4)\nprint('computed', flush=True)\nanswer = base * 2",
        "import rx_magic\nprint('submitted', rx_magic.jobs(1)[0].id, rx_magic.jobs(1)[0].state)",
    ))
    widget = first.cells[1].outputs[0]
    assert WIDGET_VIEW in widget.data                        # the --bg cell shows the widget at once
    submitted = text_of(first.cells[2]).split()
    job_id, state_then = submitted[1], submitted[2]
    assert state_then in ("submitted", "queued", "running")  # the first kernel ended before the job did

    second = run_notebook(write_notebook(
        tmp_path / "attach.ipynb",
        "%load_ext rx_magic",
        "%rx jobs",
        f"%rx attach {job_id}",
        "print('answer is', answer)",
    ))
    listed = text_of(second.cells[1])
    assert job_id in listed and "(from another kernel)" in listed
    attach = second.cells[2]
    assert "computed" in text_of(attach)
    # the widget, replaced (update_display) by the job's static record once its values are in
    shown = [output for output in attach.outputs if output.output_type == "display_data"
             and "rx-job-static" in output.data.get("text/html", "")]
    assert shown and WIDGET_VIEW not in shown[0].data
    assert f"{job_id} on local: done" in shown[0].data["text/plain"]
    assert "pulled: answer" in shown[0].data["text/plain"]
    assert "answer is 42" in text_of(second.cells[3])


@pytest.fixture
def kernel(isolated):
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(isolated / "work"))
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_cancel_button_works_while_a_blocking_cell_waits(kernel):
    kernel.execute_interactive("%load_ext rx_magic", timeout=60)
    msg_id = kernel.execute("%%remote local\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)\nnever = 1")
    comm_id, states = None, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "running" not in states:
        message = kernel.get_iopub_msg(timeout=60)
        content = message["content"]
        if message["msg_type"] == "comm_open" and content["data"]["state"].get("view") == "job":
            comm_id = content["comm_id"]
            states.append(content["data"]["state"]["state"])
        elif message["msg_type"] == "comm_msg" and content["comm_id"] == comm_id:
            states.append(content["data"].get("state", {}).get("state"))
    assert comm_id and "running" in states          # the widget updates while the cell waits

    pressed = time.monotonic()
    kernel.shell_channel.send(kernel.session.msg("comm_msg", {
        "comm_id": comm_id, "data": {"method": "custom", "content": {"action": "cancel"}}}))
    while True:
        reply = kernel.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "JobCancelled"
    assert time.monotonic() - pressed < 15          # long before the job's 60 s sleep would end

    # ipykernel aborts requests queued behind one that raised (what stops "Run all"), for a moment after its
    # reply; on a loaded machine the next request can land in that moment, and is answered "aborted"
    for _ in range(10):
        after = kernel.execute_interactive("print('kernel still answers')", timeout=30)
        if after["content"]["status"] != "aborted":
            break
        time.sleep(0.5)
    assert after["content"]["status"] == "ok"


def _replies_and_errors(kernel, msg_ids, timeout=120):
    """The execute replies to ``msg_ids`` and, for each, the error outputs IOPub carried, once all are answered."""
    replies, errors, streams = {}, {msg_id: [] for msg_id in msg_ids}, {msg_id: "" for msg_id in msg_ids}
    deadline = time.monotonic() + timeout
    while len(replies) < len(msg_ids) and time.monotonic() < deadline:
        try:
            reply = kernel.get_shell_msg(timeout=1)
        except Exception:   # nothing yet: read IOPub meanwhile
            reply = None
        if reply is not None and reply["parent_header"].get("msg_id") in errors:
            replies[reply["parent_header"]["msg_id"]] = reply["content"]
        while True:
            try:
                message = kernel.get_iopub_msg(timeout=0.1)
            except Exception:
                break
            parent = message["parent_header"].get("msg_id")
            if parent in errors and message["msg_type"] == "error":
                errors[parent].append(message["content"])
            elif parent in errors and message["msg_type"] == "stream":
                streams[parent] += message["content"]["text"]
    assert len(replies) == len(msg_ids), "the kernel did not answer every cell"
    return replies, errors, streams


def test_a_failing_remote_cell_shows_ipythons_traceback_once_with_the_notebooks_line_numbers(kernel):
    kernel.execute_interactive("%load_ext rx_magic", timeout=60)
    kernel.execute_interactive("def calibrate(reading):\n    scale = 10\n    return scale / reading\n", timeout=60)
    failing = kernel.execute("%%remote local\nfirst = 1\nvalue = calibrate(0)\n")
    replies, errors, _ = _replies_and_errors(kernel, [failing])
    assert replies[failing]["status"] == "error" and replies[failing]["ename"] == "ZeroDivisionError"
    number = replies[failing]["execution_count"]
    assert len(errors[failing]) == 1                                # one error output
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[failing][0]["traceback"]))
    assert text.count("Traceback (most recent call last)") == 1     # IPython's header, once: no local one on top
    assert re.search(r"^ZeroDivisionError\s+Traceback \(most recent call last\)$", text, re.MULTILINE)
    assert f"Cell In[{number}], line 3" in text                     # the cell's own lines: %%remote is line 1
    assert "----> 3 value = calibrate(0)" in text
    assert f"Cell In[{number - 1}], line 3, in calibrate(reading)" in text   # as the notebook names it
    assert "----> 3     return scale / reading" in text
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "rx_magic" not in text and "runner.py" not in text      # none of rx_magic's frames, here or there


def test_a_cancelled_cell_ends_with_one_calm_line_and_the_cells_after_it_do_not_run(kernel):
    kernel.execute_interactive("%load_ext rx_magic", timeout=60)
    # what the Cancel button or `%rx cancel` in another kernel does, from a thread, once the job runs
    kernel.execute_interactive(
        "import threading, time, rx_magic\n"
        "def cancel_when_running():\n"
        "    for _ in range(1200):\n"
        "        jobs = rx_magic.jobs(1)\n"
        "        if jobs and jobs[0].state.value == 'running':\n"
        "            jobs[0].cancel()\n"
        "            return\n"
        "        time.sleep(0.1)\n"
        "threading.Thread(target=cancel_when_running, daemon=True).start()\n", timeout=60)
    # "Run all": every cell is queued at once, and an error stops those after it
    cancelled = kernel.execute("%%remote local --name fit\nimport time\ntime.sleep(120)\nnever = 1\n")
    after = kernel.execute("print('the next cell ran')")
    replies, errors, streams = _replies_and_errors(kernel, [cancelled, after])
    assert replies[cancelled]["status"] == "error" and replies[cancelled]["ename"] == "JobCancelled"
    [error] = errors[cancelled]
    assert len(error["traceback"]) == 1                             # one line, no traceback
    assert re.fullmatch(r"cancelled: job 'fit' \(rx-\S+\) on local was cancelled by you; nothing was pulled",
                        error["traceback"][0])
    assert "\x1b[" not in error["traceback"][0]                      # not painted red: you asked for it
    assert replies[after]["status"] == "aborted" and "the next cell ran" not in streams[after]
