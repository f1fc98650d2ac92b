"""Execute notebooks with a real kernel and print what each cell showed.

    python notebooks/run.py [NOTEBOOK ...]      (default: 01-quickstart.ipynb)

Cells tagged ``raises-exception`` may fail; any other failure stops the run
with exit code 1. Executed copies are written next to nothing: the notebooks
in the repository stay without outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
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


def run(path: Path, timeout: int = 120) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
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
