"""Where the CLI keeps the server and token: `~/.config/ccgsc/config.json` (or under
$XDG_CONFIG_HOME, or the file named by $CCGSC_CONFIG), readable by its owner only.

Precedence: command-line options, then $CCGSC_SERVER / $CCGSC_TOKEN, then the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def config_path() -> Path:
    explicit = os.environ.get("CCGSC_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ccgsc" / "config.json"


@dataclass(frozen=True)
class Settings:
    server: str | None
    token: str | None


def load_file() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; remove it and log in again")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def resolve(server: str | None = None, token: str | None = None) -> Settings:
    stored = load_file()
    return Settings(
        server=(server or os.environ.get("CCGSC_SERVER") or stored.get("server") or None),
        token=(token or os.environ.get("CCGSC_TOKEN") or stored.get("token") or None),
    )


def save(server: str, token: str) -> Path:
    """Write the file with mode 600 (its directory 700): the token is a secret."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"server": server, "token": token}, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
    os.replace(tmp, path)
    return path


def forget() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


class ConfigError(Exception):
    pass
