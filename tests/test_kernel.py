"""rx_magic in real Jupyter kernels: reattaching after a kernel restart, and the widget's buttons while a cell waits."""

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
    shown = [output for output in attach.outputs if output.output_type == "display_data" and WIDGET_VIEW in output.data]
    assert shown and f"{job_id} on local: done" in shown[0].data["text/plain"]
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
