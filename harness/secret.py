"""The per-user secret that authenticates what recipebench reads back from its cache
directory (result-cache entries, harness/cache.py; the catalog index, harness/catalog.py),
kept outside that directory. Standard library only: the catalog index is checked
before torch is imported."""
from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

KEY_FILE_ENV = "RECIPEBENCH_CACHE_KEY_FILE"


def cache_key_file() -> Path:
    """Where the per-user secret that authenticates cache entries lives."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "recipebench" / "cache.key"


def load_secret(path: Path) -> bytes:
    """The secret in ``path`` (64 hex digits); created when missing, mode 0600 in a
    directory created 0700. Two processes creating it at once agree on one key: each
    writes its own temporary file and hard-links it into place, which never replaces
    a key already there. Raises OSError or ValueError (a file that holds no key)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        text = path.read_text().strip()
    if len(text) < 32 or set(text) - set(string.hexdigits):
        raise ValueError("it does not hold a key (at least 32 hex digits); delete it to have a new one made")
    return text.encode()
