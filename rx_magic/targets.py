"""Targets: named places to run cells, read from TOML, plus the built-in ``local``.

A target is a transport (how to reach the submit host) times a scheduler (how
a job folder becomes a running job). Configuration lives in
``$XDG_CONFIG_HOME/rx_magic/targets.toml`` (``RX_MAGIC_CONFIG`` names another
file), merged with ``rx_targets.toml`` in the working directory::

    [targets.gadi]
    host = "gadi"
    scheduler = "pbs"
    project = "a56"
    workdir = "/scratch/{project}/{user}/rx_jobs"
    setup = ["module load python3/3.11.7"]
    [targets.gadi.defaults]
    mem = "4GB"
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError, InputError
from .registry import data_home
from .resources import Resources, parse_size
from .schedulers import SCHEDULERS, Scheduler, scheduler_named
from .transport import LocalTransport, Transport

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MAX_PAYLOAD = 2 * 2**30
DEFAULT_POLL_INTERVAL = 30.0
HOST_KEY_POLICIES = ("strict", "accept-new")


@dataclass(frozen=True)
class TargetConfig:
    """One ``[targets.NAME]`` table, validated."""

    name: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    scheduler: str = "direct"
    profile: str | None = None      # a site's rules for the scheduler, e.g. "gadi" for pbs
    workdir: str = "~/rx_jobs"
    python: str = "python3"
    setup: tuple[str, ...] = ()
    project: str | None = None
    defaults: Resources = Resources()
    host_key_policy: str = "strict"
    max_payload: int = DEFAULT_MAX_PAYLOAD
    allow_version_mismatch: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL   # seconds between scheduler queries once jobs are quiet
    source: str = "built in"

    @property
    def transport_name(self) -> str:
        return "ssh" if self.host else "local"


VALID_KEYS = sorted(name for name in TargetConfig.__dataclass_fields__ if name not in ("name", "source"))


def builtin_local() -> TargetConfig:
    """The ``local`` target: this machine, a detached process, the kernel's own Python."""
    return TargetConfig(name="local", workdir=str(data_home() / "local-jobs"), python=sys.executable)


def config_paths() -> list[Path]:
    """The files read, in order; later ones win."""
    if os.environ.get("RX_MAGIC_CONFIG"):
        user_file = Path(os.environ["RX_MAGIC_CONFIG"]).expanduser()
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        user_file = Path(base) / "rx_magic" / "targets.toml"
    return [user_file, Path.cwd() / "rx_targets.toml"]


def load_configs() -> dict[str, TargetConfig]:
    """Every configured target by name, ``local`` included."""
    configs = {"local": builtin_local()}
    for path in config_paths():
        if not path.is_file():
            continue
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        tables = document.get("targets", {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: 'targets' must be a table of [targets.NAME] tables")
        for name, table in tables.items():
            base = configs.get(name, TargetConfig(name=name))
            configs[name] = parse_target(name, table, str(path), base)
    return configs


def parse_target(name: str, table: dict, source: str, base: TargetConfig) -> TargetConfig:
    where = f"{source} [targets.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(VALID_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"valid keys are {', '.join(VALID_KEYS)}")
    values: dict = {}
    try:
        for key, value in table.items():
            if key == "defaults":
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: defaults must be a table of resources (mem, ncpus, walltime, ...)")
                values[key] = Resources.parse(**value)
            elif key == "setup":
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
                    raise ConfigError(f"{where}: setup must be a list of shell lines")
                values[key] = tuple(value)
            elif key == "port":
                if not isinstance(value, int) or not 0 < value < 65536:
                    raise ConfigError(f"{where}: port must be a number from 1 to 65535, not {value!r}")
                values[key] = value
            elif key == "max_payload":
                values[key] = parse_size(value, "max_payload")
            elif key == "poll_interval":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                    raise ConfigError(f"{where}: poll_interval must be a positive number of seconds between "
                                      f"scheduler queries once jobs are quiet (default 30), not {value!r}")
                values[key] = float(value)
            elif key == "allow_version_mismatch":
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: allow_version_mismatch must be true or false")
                values[key] = value
            elif key == "scheduler" and value not in SCHEDULERS:
                raise ConfigError(f"{where}: unknown scheduler {value!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
            elif key == "host_key_policy" and value not in HOST_KEY_POLICIES:
                raise ConfigError(f"{where}: host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}")
            elif not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string, not {value!r}")
            elif any(ch in value for ch in "\n\r\0"):
                raise ConfigError(f"{where}: {key} must be one line")
            else:
                values[key] = value
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except InputError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc
    return replace(base, source=source, **values)


@dataclass
class Target:
    """A configured target, with its transport opened on first use."""

    config: TargetConfig
    scheduler: Scheduler = field(init=False)
    _transport: Transport | None = field(default=None, init=False, repr=False)
    _environment: tuple | None = field(default=None, init=False, repr=False)
    packages_present: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.scheduler = scheduler_named(self.config.scheduler, self.config.profile)
        except ConfigError as exc:
            raise ConfigError(f"target {self.name!r} ({self.config.source}): {exc}") from None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_local(self) -> bool:
        return self.config.host is None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            if self.config.host:
                from .transport.ssh import SSHTransport
                self._transport = SSHTransport(
                    self.config.host, user=self.config.user, port=self.config.port,
                    identity_file=self.config.identity_file, host_key_policy=self.config.host_key_policy,
                    python=self.config.python, setup=self.config.setup)
            else:
                self._transport = LocalTransport()
        return self._transport

    def environment(self) -> dict:
        """The target's Python, after its setup lines: versions of Python, dill, IPython, matplotlib.

        Asked once per connection. Raises ``ConfigError`` when Python's major.minor
        differs from this kernel's (unless ``allow_version_mismatch``) or dill is missing.
        """
        key = id(self.transport), getattr(self.transport, "info", None) and id(self.transport.info)
        if self._environment is None or self._environment[0] != key:
            self._environment = key, probe_environment(self)
        found = self._environment[1]
        check_environment(self, found)
        return found

    @property
    def workdir(self) -> str:
        return self.workdir_path(expand_home=True)

    def workdir_path(self, expand_home: bool) -> str:
        """The job folders' parent; a leading ``~`` is left as it is unless ``expand_home`` (which may connect)."""
        user = self.config.user or getpass.getuser()
        try:
            path = self.config.workdir.format(user=user, project=self.config.project or "")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"target {self.name!r}: workdir {self.config.workdir!r} may use only "
                              "{user} and {project}") from exc
        if expand_home:
            path = self.transport.expand_home(path)
        if not path.startswith(("/", "~")) or (expand_home and not path.startswith("/")):
            raise ConfigError(f"target {self.name!r}: workdir {path!r} must be an absolute path or start with ~")
        return path

    def close(self) -> None:
        self._environment = None
        self.packages_present = set()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


PROBE = """
import json, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except Exception:
        return None
try:
    import dill
    dill_version = dill.__version__
except Exception as exc:
    dill_version = None
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
                  "dill": dill_version, "ipython": version("ipython"), "matplotlib": version("matplotlib"),
                  "numpy": version("numpy")}))
"""


def probe_environment(target: Target) -> dict:
    """Run the target's Python after its setup lines and report what it has."""
    script = "\n".join([*target.config.setup, f"exec {shlex.quote(target.config.python)} -c {shlex.quote(PROBE)}"])
    result = target.transport.run(["bash", "-c", script], check=False, timeout=120)
    lines = result.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ConfigError(
            f"target {target.name!r}: could not run {target.config.python!r} on {target.transport.description} "
            f"after the setup lines (exit code {result.returncode}): {result.tail(5) or 'no output'}. "
            "Check `python` and `setup` in the target's configuration") from None
    return found


def check_environment(target: Target, found: dict) -> None:
    here = "%d.%d" % sys.version_info[:2]
    there = ".".join(found["python"].split(".")[:2])
    if there != here and not target.config.allow_version_mismatch:
        raise ConfigError(
            f"target {target.name!r} runs Python {found['python']} ({found['executable']}) but this kernel runs "
            f"{platform.python_version()}: values pickled here may not load there. Point the target's `python` "
            f"(or its `setup` lines, e.g. `module load python3/{here}`) at Python {here}, or set "
            "allow_version_mismatch = true for the target to try anyway")
    if not found.get("dill"):
        raise ConfigError(
            f"dill is not installed for {found['executable']} on target {target.name!r}: install it there "
            f"(`{target.config.python} -m pip install --user dill`) or point `python` at an environment that has it")


_open_targets: dict[str, Target] = {}


def get_target(name: str) -> Target:
    """The target called ``name``, one per kernel, reconfigured when its configuration changes."""
    configs = load_configs()
    if name not in configs:
        files = " or ".join(str(path) for path in config_paths())
        raise ConfigError(f"unknown target {name!r}: known targets are {', '.join(sorted(configs))}; "
                          f"add [targets.{name}] to {files}")
    config = configs[name]
    target = _open_targets.get(name)
    if target is None or target.config != config:
        if target is not None:
            target.close()
        target = _open_targets[name] = Target(config)
    return target


def close_all() -> None:
    for target in _open_targets.values():
        target.close()
    _open_targets.clear()
