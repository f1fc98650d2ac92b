"""Targets: configuration (TOML, site profiles), the opened ``Target``, and ``%rx check``'s checks."""

from .config import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_POLL_INTERVAL,
    HOST_KEY_POLICIES,
    VALID_KEYS,
    TargetConfig,
    builtin_local,
    config_paths,
    load_configs,
    parse_target,
    tomllib,
)
from .target import Target, close_all, get_target, open_target

__all__ = [
    "DEFAULT_MAX_PAYLOAD", "DEFAULT_POLL_INTERVAL", "HOST_KEY_POLICIES", "VALID_KEYS", "Target", "TargetConfig",
    "builtin_local", "close_all", "config_paths", "get_target", "load_configs", "open_target", "parse_target", "tomllib",
]
