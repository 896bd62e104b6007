"""liblsl's configuration file (``lsl_api.cfg``) for LSL across hosts where multicast does not pass.

liblsl finds streams by multicast and broadcast; between subnets, or through switches that drop multicast,
it finds them only by asking the hosts listed as ``KnownPeers``. ``SessionID`` keeps one lab's streams
apart from another's on a shared network: hosts see each other's streams only with the same session id.
liblsl reads the file named by ``$LSLAPICFG``, else ``./lsl_api.cfg``, else ``~/lsl_api/lsl_api.cfg``, else
``/etc/lsl_api/lsl_api.cfg`` (docs/lab_setup.md).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

DEFAULT_SESSION_ID = "default"  # liblsl's own default: hosts without the file still see the streams
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def default_config_path() -> Path:
    """The per-user file liblsl reads when ``$LSLAPICFG`` is unset and the working folder has none."""
    return Path.home() / "lsl_api" / "lsl_api.cfg"


def check_peer(peer: str) -> str:
    """An IP address or host name, else ValueError saying what is expected."""
    peer = peer.strip()
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        pass
    if _HOST_NAME.match(peer):
        return peer
    raise ValueError(f"peer {peer!r} is neither an IP address nor a host name (e.g. 10.0.0.2 or acq-pc)")


def lsl_api_config_text(peers: Sequence[str], session_id: str = DEFAULT_SESSION_ID) -> str:
    """The text of an ``lsl_api.cfg`` listing ``peers`` as KnownPeers, with ``session_id``."""
    if not peers:
        raise ValueError("name at least one peer host (every host of the session, this one included)")
    checked = list(dict.fromkeys(check_peer(p) for p in peers))
    if not _SESSION_ID.match(session_id):
        raise ValueError(f"session id {session_id!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return (
        "; written by `brainstream lsl-config` (docs/lab_setup.md); the same file goes on every host\n"
        "[lab]\n"
        f"KnownPeers = {{{', '.join(checked)}}}\n"
        f"SessionID = {session_id}\n"
    )


def write_lsl_api_config(
    path: str | Path, peers: Sequence[str], session_id: str = DEFAULT_SESSION_ID, *, force: bool = False
) -> Path | None:
    """Write the file; an existing different file is kept as ``PATH.bak`` with ``force``, else refused.

    Returns the backup's path when one was made.
    """
    path = Path(path).expanduser()
    text = lsl_api_config_text(peers, session_id)
    backup = None
    if path.exists():
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give the file to write, e.g. {path / 'lsl_api.cfg'}")
        if path.read_text(errors="replace") != text:
            if not force:
                raise FileExistsError(
                    f"{path} exists with other settings; pass --force to replace it (the old file is kept as "
                    f"{path.name}.bak) or --out another path"
                )
            backup = path.with_name(path.name + ".bak")
            shutil.copyfile(path, backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return backup
