"""Target configuration: named places to run cells, read from TOML, plus the built-in ``local``.

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

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, InputError
from ..model.local_dirs import data_home
from ..model.resources import Resources, parse_size
from ..schedulers import SCHEDULERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MAX_PAYLOAD = 2 * 2**30
DEFAULT_POLL_INTERVAL = 30.0
HOST_KEY_POLICIES = ("strict", "accept-new")
TRANSPORTS = ("paramiko", "openssh")     # for a target with a host: paramiko, or the user's ssh client


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
    transport: str = "paramiko"     # "openssh": the user's ssh client and its ControlMaster connection
    interactive_auth: bool = False  # paramiko asks the user for keyboard-interactive/password answers in a cell
    max_payload: int = DEFAULT_MAX_PAYLOAD
    allow_version_mismatch: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL   # seconds between scheduler queries once jobs are quiet
    scheduler_path: str | None = None   # the folder of qsub/sbatch...; unset: as the login shell finds them
    map_in_one_job: bool | None = None  # --map inside one job (the runner's pool); unset: the profile decides
    source: str = "built in"

    @property
    def transport_name(self) -> str:
        if not self.host:
            return "local"
        return "openssh" if self.transport == "openssh" else "ssh"


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
            elif key in ("allow_version_mismatch", "map_in_one_job", "interactive_auth"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: {key} must be true or false")
                values[key] = value
            elif key == "scheduler_path" and (not isinstance(value, str) or not value.startswith("/")
                                              or any(ch in value for ch in "\n\r\0")):
                raise ConfigError(f"{where}: scheduler_path must be the absolute path of the folder that holds "
                                  f"the scheduler's commands on the submit host (e.g. \"/opt/pbs/bin\"), "
                                  f"not {value!r}")
            elif key == "scheduler" and value not in SCHEDULERS:
                raise ConfigError(f"{where}: unknown scheduler {value!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
            elif key == "transport" and value not in TRANSPORTS:
                raise ConfigError(f"{where}: unknown transport {value!r}; choose one of {', '.join(TRANSPORTS)}")
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
    config = replace(base, source=source, **values)
    if config.transport == "openssh" and config.interactive_auth:
        raise ConfigError(f"{where}: interactive_auth is for transport = \"paramiko\"; with transport = "
                          "\"openssh\" your ssh client asks, once, in a terminal (leave interactive_auth out)")
    return config
