"""Execute notebooks with a real kernel and print what each cell showed.

    python notebooks/run.py [NOTEBOOK ...]      (default: 01-quickstart.ipynb)

Cells tagged ``raises-exception`` may fail; any other failure stops the run
with exit code 1. Before a cell tagged ``restart-kernel-before`` the kernel is
restarted, where the notebook asks its reader to restart it. Executed copies are written next to nothing: the notebooks
in the repository stay without outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).parent


def describe(output: dict) -> str:
    kind = output["output_type"]
    if kind == "stream":
        return output["text"].rstrip()
    if kind == "error":
        return f"{output['ename']}: {output['evalue']}"
    data = output.get("data", {})
    shown = [mime for mime in data if mime != "text/plain"]
    text = data.get("text/plain", "")
    return (text + (f"  [{', '.join(shown)}]" if shown else "")).rstrip()


RESTART_TAG = "restart-kernel-before"


def run(path: Path, timeout: int = 120) -> nbformat.NotebookNode:
    """Execute ``path`` in a new kernel; before a cell tagged ``restart-kernel-before``, restart it,
    as the notebook's text asks a person to do at that point."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if RESTART_TAG in cell.get("metadata", {}).get("tags", []):
                run_sync(client.km.restart_kernel)(now=True)
                run_sync(client.kc.wait_for_ready)(timeout=timeout)
            client.execute_cell(cell, index)
    return notebook


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [HERE / "01-quickstart.ipynb"]
    for path in paths:
        print(f"=== {path}")
        try:
            notebook = run(path)
        except CellExecutionError as exc:
            print(exc, file=sys.stderr)
            return 1
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            print(f"\n>>> {cell.source.splitlines()[0] if cell.source else ''}")
            for output in cell.outputs:
                text = describe(output)
                if text:
                    print("    " + text.replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
