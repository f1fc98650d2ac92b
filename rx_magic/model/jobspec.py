"""``job.json``: the versioned spec of a job, written by the notebook and read by both sides.

Like nbformat, every spec says which format it is in, one module builds and
validates it, and older formats are upgraded when read, so a job folder
written by an earlier release is attached, watched and pulled by this one.
The runner (``runtime/runner.py``) reads the format its own release wrote.

Formats:

- 1 (rx_magic 0.1.0): as 2, plus ``blobs_dir`` and ``files_dir``, absolute
  paths of the shared stores, which 2 derives from the folder's place
  (``runtime.layout``).
- 2: ``job_id``, ``target``, ``source`` (the cell as typed), ``code`` (after
  IPython's transforms), ``header``, ``first_line``, ``push`` (name -> blob
  hash), ``imports``, ``pull``, ``limits``, ``resources``, ``files``
  (relative path -> content hash), ``pythonpath``, ``use_ipython``,
  ``sources`` (code file -> ``lines``, ``label``: the lines of the notebook
  functions the cell uses, every other line of their cells empty; earlier
  releases wrote whole cells, read the same way), ``client``,
  ``submitted_at``, optionally ``traceback`` (``colors``: the notebook's
  IPython colours, ``cell``: the cell's number, so that the target formats
  an error as the notebook would), and for a job array ``map``
  (``name``, ``expr``, ``size``, ``values`` blob hash, ``labels``).
"""

from __future__ import annotations

import json
import re
import time

from ..errors import RxError
from ..runtime.layout import SPEC_FORMAT, is_job_id

_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")


class JobSpecError(RxError):
    """A ``job.json`` that this release cannot read: malformed, or written by a newer release."""


def new_spec(**fields) -> dict:
    """A spec in the current format; ``fields`` as format 2 lists them."""
    spec = {"format": SPEC_FORMAT, "submitted_at": time.time(), **fields}
    validate(spec)
    return spec


def dumps(spec: dict) -> bytes:
    return json.dumps(spec, indent=1).encode()


def read_spec(data: bytes | str, where: str = "job.json") -> dict:
    """Parse, upgrade to the current format and validate a ``job.json``; raise ``JobSpecError`` naming ``where``."""
    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise JobSpecError(f"{where} is not JSON ({exc}): the job folder is damaged") from None
    if not isinstance(spec, dict):
        raise JobSpecError(f"{where} holds a {type(spec).__name__}, not a job spec: the job folder is damaged")
    version = spec.get("format")
    if not isinstance(version, int) or version < 1:
        raise JobSpecError(f"{where} has no valid format number ({version!r}): the job folder is damaged")
    if version > SPEC_FORMAT:
        raise JobSpecError(f"{where} is in format {version}, written by a newer rx_magic than this one "
                           f"(which reads formats 1 to {SPEC_FORMAT}): upgrade rx_magic in this kernel to attach it")
    for upgrade in _UPGRADES[version - 1:]:
        spec = upgrade(spec)
    validate(spec, where)
    return spec


def _from_1(spec: dict) -> dict:
    """1 -> 2: the stores' paths are derived from the folder's place; the submission time is unknown."""
    upgraded = {key: value for key, value in spec.items() if key not in ("blobs_dir", "files_dir")}
    upgraded.update(format=2, submitted_at=None)
    return upgraded


_UPGRADES = [_from_1]     # _UPGRADES[n - 1] turns format n into n + 1

_TYPES = {
    "job_id": str, "target": str, "source": str, "code": str, "header": list, "first_line": int,
    "push": dict, "imports": dict, "pull": list, "limits": dict, "resources": dict, "files": dict,
    "pythonpath": list, "use_ipython": bool, "sources": dict, "client": dict,
}


def validate(spec: dict, where: str = "job.json") -> None:
    """Raise ``JobSpecError`` unless ``spec`` is a well-formed spec of the current format."""
    problems = []
    if spec.get("format") != SPEC_FORMAT:
        problems.append(f"format {spec.get('format')!r}, expected {SPEC_FORMAT}")
    for key, kind in _TYPES.items():
        if not isinstance(spec.get(key), kind):
            problems.append(f"{key} missing or not a {kind.__name__}")
    if isinstance(spec.get("job_id"), str) and not is_job_id(spec["job_id"]):
        problems.append(f"job_id {spec['job_id']!r} is not an rx_magic job id")
    for name, digest in (spec.get("push") or {}).items() if isinstance(spec.get("push"), dict) else ():
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            problems.append(f"push[{name!r}] is not a content hash")
    array = spec.get("map")
    if array is not None:
        if not isinstance(array, dict) or not isinstance(array.get("size"), int) or array["size"] < 1 \
                or not isinstance(array.get("name"), str) or not _DIGEST.match(str(array.get("values", ""))):
            problems.append("map is not {name, expr, size, values, labels}")
    if problems:
        raise JobSpecError(f"{where} is not a job spec this rx_magic can read: {'; '.join(problems)}")
