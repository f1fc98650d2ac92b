"""Whether a value the cell would send looks like a credential, and why, never quoting it.

Three signs, each found in the value itself, in the items of its containers
(dicts, lists, tuples, sets, nested) and in its objects' attributes
(``__dict__``, dataclass fields), so ``cfg.api_key`` and
``settings['db']['url']`` are found as well as ``api_key``:

- a *name* that says credential: the variable's own name (``api_token``,
  ``db_password``) holds it back whatever it holds; a key or attribute of
  that name holds it back when it holds text (for ``token``, text that looks
  generated: a word in an NLP pipeline's ``{'token': 'the'}`` is not one);
- a *shape* that the common scanners (gitleaks, detect-secrets) flag wherever
  it appears: private keys, URLs with a password, ``Authorization: Bearer``,
  JWTs, and the cloud and API tokens with a known prefix;
- a pydantic ``SecretStr``/``SecretBytes``, which says so itself.

The scan is bounded (``SCAN_TEXT`` characters of text, ``SCAN_ITEMS`` items,
``SCAN_DEPTH`` levels), and skips what cannot hold text: numbers, numpy arrays,
modules, functions and classes. The reason it gives names where it found the
sign (``its attribute .api_key``, ``its item ['db']['url']``), never the value.
"""

from __future__ import annotations

import dataclasses
import dis
import itertools
import math
import re
import types
from collections import Counter

SCAN_TEXT = 1 << 20       # characters of text looked at in one value, all its parts together
SCAN_ITEMS = 10_000       # items and attributes looked at in one value
SCAN_DEPTH = 6            # levels of containers and attributes

# A name that says it holds a credential. "tokens", "tokenizer", "tokenize" are everyday words in text
# processing, not credentials (the keyword lists of gitleaks' generic-api-key rule and detect-secrets'
# KeywordDetector, less their bare "key", "pass" and "auth", which name too much ordinary data).
CREDENTIAL_NAME = re.compile(
    r"token(?!s|i[sz])|secret|passw(?:or)?d|passphrase|api_?key|credential|private_?key|access_?key"
    r"|auth(?:orization)?_?header", re.IGNORECASE)
_WEAK_NAME = re.compile(r"token", re.IGNORECASE)     # in data, only with text that looks generated

# Shapes of secrets, each copying a rule of gitleaks (config/gitleaks.toml, by rule id) or a plugin of
# detect-secrets (detect_secrets/plugins/, by class), so what they flag in a repository stays home here.
SECRET_SHAPES = {
    # gitleaks "private-key"; detect-secrets PrivateKeyDetector (its BEGIN ... PRIVATE KEY and PuTTY lines)
    "a private key": re.compile(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d"),
    # gitleaks "aws-access-token"; detect-secrets AWSKeyDetector (first pattern)
    "an AWS access key id": re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    # detect-secrets AWSKeyDetector (second pattern): 40 characters after a secret-key word
    "an AWS secret access key": re.compile(
        r"aws.{0,20}?secret.{0,20}?['\"]?\s*[:=]\s*['\"]?[0-9A-Za-z/+]{40}(?![0-9A-Za-z/+])", re.IGNORECASE),
    # gitleaks "github-pat", "github-oauth", "github-app-token", "github-refresh-token",
    # "github-fine-grained-pat"; detect-secrets GitHubTokenDetector
    "a GitHub token": re.compile(r"\b(?:gh[opsur]_[0-9A-Za-z]{36}|github_pat_\w{22,})"),
    # gitleaks "gitlab-pat"
    "a GitLab token": re.compile(r"\bglpat-[\w-]{20}"),
    # gitleaks "slack-bot-token", "slack-user-token", "slack-legacy-*"; detect-secrets SlackDetector
    "a Slack token": re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}"),
    # detect-secrets SlackDetector (webhook); gitleaks "slack-webhook-url"
    "a Slack webhook": re.compile(r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{43,}"),
    # gitleaks "gcp-api-key"
    "a Google API key": re.compile(r"\bAIza[\w-]{35}"),
    # gitleaks "huggingface-access-token"
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z]{34}\b"),
    # gitleaks "openai-api-key" (the T3BlbkFJ marker) and its sk-proj-/sk-svcacct- forms
    "an OpenAI API key": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[\w-]{20,}T3BlbkFJ[\w-]{20,}"),
    # gitleaks "stripe-access-token"; detect-secrets StripeDetector
    "a Stripe key": re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,99}"),
    # gitleaks "jwt"; detect-secrets JwtTokenDetector (header and payload both base64url JSON: "eyJ")
    "a JSON web token": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]*"),
    # detect-secrets BasicAuthDetector: scheme://user:password@host (reserved characters excluded)
    "a URL with a password": re.compile(r"://[^:/?#\[\]@!$&'()*+,;=\s{}]+:[^:/?#\[\]@!$&'()*+,;=\s{}]+@"),
    # gitleaks "generic-api-key": a credential word, = or :, then a generated-looking value (checked by
    # looks_generated, at gitleaks' entropy of 3.5), as in the text of a config file or a command line
    "a credential assigned in text": re.compile(
        r"(?:passw(?:or)?d|secret|api_?key|access_?key|token|credential)s?['\"]?\s*[:=]\s*['\"]?([\w./+=-]{16,150})",
        re.IGNORECASE),
    # gitleaks "curl-auth-header" (its Bearer and Basic forms); detect-secrets has none
    "an Authorization header": re.compile(r"\b(?:Authorization\s*[:=]\s*['\"]?\s*)?(?:Bearer|Basic)\s+"
                                          r"[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE),
}
# Text each shape cannot match without (lower case: looked for in the lowered text), found far faster than any
# pattern runs: a megabyte of prose is searched by none of them.
_NEEDLES = {
    "a private key": ("PRIVATE KEY", "PuTTY-User-Key-File"),
    "an AWS access key id": ("A3T", "AKIA", "ASIA", "ABIA", "ACCA"),
    "an AWS secret access key": ("aws",),
    "a GitHub token": ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
    "a GitLab token": ("glpat-",),
    "a Slack token": ("xox",),
    "a Slack webhook": ("hooks.slack.com",),
    "a Google API key": ("AIza",),
    "a Hugging Face token": ("hf_",),
    "an OpenAI API key": ("T3BlbkFJ",),
    "a Stripe key": ("_live_", "_test_"),
    "a JSON web token": ("eyJ",),
    "a URL with a password": ("://",),
    "a credential assigned in text": ("passw", "secret", "key", "token", "credential"),
    "an Authorization header": ("bearer", "basic"),
}
_LOWERED = frozenset({"an AWS secret access key", "a credential assigned in text", "an Authorization header"})
# "Basic" or "Bearer" before a long word can be prose: without the word Authorization, only a run with digits.
_HEADER_WORD = re.compile(r"authorization", re.IGNORECASE)
_DIGIT = re.compile(r"\d")

_NOT_SCANNED = (int, float, complex, bool, type(None), range, types.ModuleType, types.BuiltinFunctionType,
                types.MethodType, types.CodeType)


def looks_secret(name: str, value: object) -> str | None:
    """Why ``name = value`` looks like a credential, or None. The reason never quotes the value."""
    if CREDENTIAL_NAME.search(name):
        return "its name looks like a credential"
    found = _Scan().run(value)
    if found is None:
        return None
    where, why = found
    return f"its value {why}" if not where else f"its {where} {why}"


def secret_shape(text: str) -> str | None:
    """Which secret ``text`` contains the shape of (``"a GitHub token"``), or None."""
    lowered = None
    for kind, pattern in SECRET_SHAPES.items():
        if kind in _LOWERED:
            lowered = text.lower() if lowered is None else lowered
            if not any(needle in lowered for needle in _NEEDLES[kind]):
                continue
        elif not any(needle in text for needle in _NEEDLES[kind]):
            continue
        if kind == "a credential assigned in text":
            if any(looks_generated(match[1], entropy=3.5) for match in itertools.islice(pattern.finditer(text), 100)):
                return kind
            continue
        match = pattern.search(text)
        if match is None:
            continue
        if kind == "an Authorization header" and not (_HEADER_WORD.search(match[0]) or _DIGIT.search(match[0])):
            continue
        return kind
    return None


def looks_generated(text: str, entropy: float = 3.0) -> bool:
    """Whether ``text`` looks like a generated key rather than a word: 16 or more characters, no spaces,
    letters and digits mixed, and a Shannon entropy of at least ``entropy`` bits a character (3:
    detect-secrets' HexHighEntropyString limit; its base64 limit, 4.5, needs longer strings than keys
    often are)."""
    if len(text) < 16 or len(text) > 4096 or any(c.isspace() for c in text):
        return False
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return False
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values()) >= entropy


class _Scan:
    """One bounded walk over a value, its items and its attributes.

    A place is a path of steps, ``(parent, step)``, written out only for the message. Short texts are
    searched together, joined by NULs, and one by one only when the joined text holds a shape.
    """

    BATCH = 1 << 18

    def __init__(self):
        self.text_left = SCAN_TEXT
        self.items_left = SCAN_ITEMS
        self.seen: set[int] = set()
        self.batch: list[tuple[tuple, str]] = []
        self.batch_size = 0

    def run(self, value: object) -> tuple[str, str] | None:
        return self.value(value, (), 0) or self.flush()

    def value(self, value: object, where: tuple, depth: int) -> tuple[str, str] | None:
        if isinstance(value, (str, bytes, bytearray)):
            return self.text(value, where)
        if isinstance(value, _NOT_SCANNED) or depth > SCAN_DEPTH or self.items_left <= 0 or self.text_left <= 0:
            return None
        if id(value) in self.seen:
            return None
        self.seen.add(id(value))
        kind = type(value).__name__
        if kind in ("SecretStr", "SecretBytes"):
            return _place(where), f"is a pydantic {kind}"
        if hasattr(type(value), "__array_interface__") or kind in ("DataFrame", "Series", "Index", "Tensor"):
            return None     # numbers (an array of strings is data, not a place for one key)
        if isinstance(value, dict):
            return self.named_items(((key, item, ("item", key)) for key, item in value.items()), where, depth)
        if isinstance(value, (list, tuple, set, frozenset)):
            unordered = isinstance(value, (set, frozenset))
            for index, item in enumerate(value):
                self.items_left -= 1
                if self.items_left <= 0:
                    return None
                found = self.value(item, (where, ("set", None) if unordered else ("index", index)), depth + 1)
                if found:
                    return found
            return None
        if isinstance(value, types.FunctionType):     # a closure or lambda carries what it closed over
            return self.named_items(_carried_by(value), where, depth) or self.code(value.__code__, where)
        if isinstance(value, type):     # a notebook class travels with its class attributes
            if value.__module__ != "__main__":
                return None
            return self.named_items(((key, item, ("attribute", key)) for key, item in vars(value).items()
                                     if not key.startswith("__")), where, depth)
        return self.named_items(((key, item, ("attribute", key)) for key, item in _attributes(value)), where, depth)

    def named_items(self, pairs, where: tuple, depth: int) -> tuple[str, str] | None:
        for key, item, step in pairs:
            self.items_left -= 1
            if self.items_left <= 0:
                return None
            if isinstance(key, str) and CREDENTIAL_NAME.search(key) and _credential_text(key, item):
                return _place((where, step)), "has a credential's name"
            found = self.value(item, (where, step), depth + 1)
            if found:
                return found
        return None

    def code(self, code: types.CodeType, where: tuple) -> tuple[str, str] | None:
        """The texts a function's code holds: a literal travels in its pickled code object even when
        ``job.json`` blanks its line. Two kinds: a text with a secret's shape anywhere in it or in a nested
        function, and a text stored into a credential-named local (``token = "..."``)."""
        for name, text in _code_texts(code):
            self.items_left -= 1
            if self.items_left <= 0:
                return None
            if name is not None and CREDENTIAL_NAME.search(name) and _credential_text(name, text):
                return _place((where, ("local variable", name))), "has a credential's name"
            found = self.text(text, (where, ("code", None)))
            if found:
                return found
        return None

    def text(self, value, where: tuple) -> tuple[str, str] | None:
        if self.text_left <= 0:
            return None
        piece = value[: self.text_left]
        self.text_left -= len(piece)
        text = bytes(piece).decode("latin-1") if isinstance(piece, (bytes, bytearray)) else piece
        self.batch.append((where, text))
        self.batch_size += len(text) + 1
        return self.flush() if self.batch_size >= self.BATCH else None

    def flush(self) -> tuple[str, str] | None:
        batch, self.batch, self.batch_size = self.batch, [], 0
        if not batch or (len(batch) > 1 and secret_shape("\0".join(text for _, text in batch)) is None):
            return None
        for where, text in batch:
            kind = secret_shape(text)
            if kind is not None:
                return _place(where), f"looks like {kind}"
        return None


def _credential_text(key: str, item: object) -> bool:
    """Whether ``item``, under a credential-like key, is the credential itself (text), not data about it."""
    if isinstance(item, (bytes, bytearray)):
        item = bytes(item[:4096]).decode("latin-1")
    if not isinstance(item, str) or not item.strip():
        return type(item).__name__ in ("SecretStr", "SecretBytes")
    if _WEAK_NAME.search(key) and not CREDENTIAL_NAME.search(_WEAK_NAME.sub("", key)):
        return looks_generated(item.strip())
    return True


def _carried_by(function: types.FunctionType) -> list[tuple[str, object, str]]:
    """What a function carries besides its code: the variables it closed over, and its defaults."""
    found = []
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
        try:
            found.append((name, cell.cell_contents, ("closure variable", name)))
        except ValueError:      # not bound yet
            pass
    for index, default in enumerate(function.__defaults__ or ()):
        found.append(("", default, ("default", index + 1)))
    found.extend((name, default, ("default", name)) for name, default in (function.__kwdefaults__ or {}).items())
    return found


def _code_texts(code: types.CodeType) -> list[tuple[str | None, str | bytes]]:
    """The text constants of ``code`` and the code nested in it, each with the name it is stored into
    straight away (``name = "text"``), if any."""
    found, stack = [], [code]
    while stack:
        code = stack.pop()
        stored = {}
        instructions = list(dis.get_instructions(code))
        for load, store in zip(instructions, instructions[1:]):
            if load.opname == "LOAD_CONST" and store.opname in ("STORE_FAST", "STORE_NAME", "STORE_GLOBAL",
                                                                "STORE_DEREF") \
                    and isinstance(load.argval, (str, bytes)):
                stored[id(load.argval)] = store.argval
        for constant in code.co_consts:
            if isinstance(constant, (str, bytes)):
                found.append((stored.get(id(constant)), constant))
            elif isinstance(constant, types.CodeType):
                stack.append(constant)
    return found


def _attributes(value: object) -> list[tuple[str, object]]:
    """An object's own attributes: its ``__dict__``, or a slotted dataclass's fields; nothing it computes."""
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return [(f.name, object.__getattribute__(value, f.name)) for f in dataclasses.fields(value)
                    if hasattr(value, f.name)]
        state = object.__getattribute__(value, "__dict__")
    except Exception:
        return []
    return list(state.items()) if isinstance(state, dict) else []


def _key_label(key: object) -> str:
    """A dict key as the message shows it: short names quoted, anything else (a key may be a secret) as ``...``."""
    if isinstance(key, str) and re.fullmatch(r"[\w .-]{1,40}", key) and secret_shape(key) is None \
            and not looks_generated(key):
        return repr(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return "..."


def _place(where: tuple) -> str:
    """A path of steps as the message names it: ``item ['db']['url']``, ``attribute .api_key``,
    ``closure variable password``; empty for the value itself."""
    steps = []
    while where:
        where, step = where
        steps.append(step)
    steps.reverse()
    if not steps:
        return ""
    written = {"item": lambda key: f"[{_key_label(key)}]", "index": lambda index: f"[{index}]",
               "set": lambda _: "[...]", "attribute": lambda name: f".{name}",
               "closure variable": lambda name: f" closure variable {name}", "default": lambda which: f" default {which}",
               "local variable": lambda name: f" local variable {name}", "code": lambda _: " code"}
    text = "".join(written[kind](key) for kind, key in steps)
    if text.startswith(" "):
        return text.strip()
    return f"attribute {text}" if text.startswith(".") else f"item {text}"
