"""JSON text for the job's own files (``job.json`` in, ``status.json`` and the others out), read and written
with the ``json`` package's C accelerator ``_json`` directly.

``import json`` costs a job about 8 ms of its start, nearly all of it ``re`` and ``enum``, which the
package's decoder and encoder import for their pure-Python fallbacks. ``_json`` itself imports nothing.
What it gives is what ``json.loads`` and ``json.dumps`` give (same text, same values; a test compares
them): objects as dicts, numbers as int and float, NaN and the infinities as ``json`` writes and reads
them. Where ``_json`` is missing or its interface differs (another Python), ``json`` does the work.
"""

from __future__ import annotations

_NAN = float("nan")
_INF = float("inf")
_CONSTANTS = {"NaN": _NAN, "Infinity": _INF, "-Infinity": -_INF}
_WHITESPACE = " \t\n\r"


class _Context:
    """What ``_json.make_scanner`` reads off ``json.JSONDecoder``: the decoder's settings, json's defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _fail(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:
    import _json

    _scan = _json.make_scanner(_Context())
    # json.dumps' defaults: ensure_ascii, check_circular, allow_nan, separators (", ", ": ")
    _encode = _json.make_encoder({}, _fail, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
except (ImportError, AttributeError, TypeError):
    _scan = _encode = None


def loads(text: str | bytes):
    """``json.loads(text)``; raises ``ValueError`` for text that is not one JSON value (bytes: UTF-8 text)."""
    if _scan is None:
        import json
        return json.loads(text)
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    text = text.strip(_WHITESPACE)      # JSON's whitespace only, as json.loads skips it
    try:
        value, stop = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at character {exc.value}") from None
    if stop != len(text):
        raise ValueError(f"extra data after the JSON value at character {stop}")
    return value


def dumps(value) -> str:
    """``json.dumps(value)``: raises ``TypeError`` for a value JSON cannot hold, ``ValueError`` for a cycle."""
    if _encode is None:
        import json
        return json.dumps(value)
    return "".join(_encode(value, 0))
