"""The embedded Postgres when redisched runs as root: its system user and its way in.

Postgres refuses to run as root, so its programs run as a locked system user (``redisched``,
or ``$REDISCHED_EMBEDDED_PG_USER``; created with ``useradd --system``, no home, no login
shell) that owns ``<data_dir>/postgres``. To reach that folder (and Postgres' binaries) it
needs search permission on every directory above it. Where it lacks it — a ``mktemp -d``
data folder is mode 0700, so is ``/root`` — it gets a POSIX ACL entry on that directory
granting that one user search (``x``) alone: it can pass through, not list, read or write,
and nobody else's access changes. Each grant is logged. On a filesystem without ACLs that is
impossible, and the error says what to do instead.

The ACL is written as the kernel's ``system.posix_acl_access`` attribute (the layout of
linux/posix_acl_xattr.h): pylibacl, the library for it, ships no wheels and would need a
compiler and libacl's headers on every install.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import stat
import struct
import subprocess
from pathlib import Path

log = logging.getLogger("redisched.embedded")

PG_SYSTEM_USER_ENV = "REDISCHED_EMBEDDED_PG_USER"
DEFAULT_PG_SYSTEM_USER = "redisched"

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_SEARCH = 0o1  # the x bit of an entry
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


class NoAccess(RuntimeError):
    """The system user cannot be made, or cannot be given its way to a folder."""


def system_user() -> tuple[str, int, int]:
    """(name, uid, gid) of the user the embedded Postgres runs as, created when missing."""
    name = os.environ.get(PG_SYSTEM_USER_ENV) or DEFAULT_PG_SYSTEM_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.info("running as root: creating system user %r to run the embedded Postgres", name)
        cmd = ["useradd", "--system", "--user-group", "--no-create-home",
               "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
               "--comment", "redisched embedded Postgres", name]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise NoAccess(
                f"Postgres does not run as root and `useradd` is missing: create a system user "
                f"{name!r} (or set {PG_SYSTEM_USER_ENV}), run redisched as a normal user, or set SCHEDULER_DB_URI"
            ) from None
        except subprocess.CalledProcessError as exc:
            with contextlib.suppress(KeyError):  # a concurrent start created it
                entry = pwd.getpwnam(name)
                return name, entry.pw_uid, entry.pw_gid
            raise NoAccess(f"useradd {name} failed: {exc.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise NoAccess(f"{PG_SYSTEM_USER_ENV}={name} is root; Postgres needs a non-root user")
    return name, entry.pw_uid, entry.pw_gid


def open_the_way(target: Path, name: str, uid: int, gid: int) -> list[Path]:
    """Give ``uid`` search permission on each directory above ``target`` (an absolute path
    without symlinks) that it cannot pass; returns the directories changed."""
    granted = []
    for directory in reversed(target.parents):
        if _can_search(directory, uid, gid):
            continue
        try:
            _grant_search(directory, uid)
        except OSError as exc:
            why = "its filesystem has no ACLs" if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP) else exc.strerror
            raise NoAccess(
                f"the embedded Postgres runs as system user {name!r} (redisched runs as root) and cannot "
                f"reach {target}: granting it search on {directory} failed ({why}); use a data folder it "
                f"can reach (REDISCHED_DATA_DIR), run redisched as a normal user, or set SCHEDULER_DB_URI"
            ) from None
        log.warning("granted system user %r search-only access (ACL u:%s:--x) on %s, to reach %s", name, name, directory, target)
        granted.append(directory)
    return granted


def _can_search(directory: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` (with ``gid`` as its only group) may pass through ``directory``, by
    the kernel's rule: owner entry, else a named-user entry, else the group entries, else
    other; entries of the group class limited by the mask."""
    st = directory.stat()
    entries = _acl(directory, st.st_mode)
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), 0o7)
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    for tag, perm, who in entries:
        if tag == _USER and who == uid:
            return bool(perm & mask & _SEARCH)
    groups = [perm for tag, perm, who in entries if (tag == _GROUP_OBJ and st.st_gid == gid) or (tag == _GROUP and who == gid)]
    if groups:
        return any(perm & mask & _SEARCH for perm in groups)
    return bool(st.st_mode & stat.S_IXOTH)


def _acl(path: Path, mode: int) -> list[tuple[int, int, int]]:
    """``path``'s access ACL as (tag, perm, id) entries; its mode's three when it has none."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        return [(_USER_OBJ, mode >> 6 & 7, _NO_ID), (_GROUP_OBJ, mode >> 3 & 7, _NO_ID), (_OTHER, mode & 7, _NO_ID)]
    return [_ENTRY.unpack_from(raw, offset) for offset in range(_HEADER.size, len(raw), _ENTRY.size)]


def _grant_search(directory: Path, uid: int) -> None:
    """Add x to ``uid``'s named entry (made if missing) and to the mask (made from the group
    entry if missing, which leaves the group's own access as it was)."""
    entries = {(tag, who): perm for tag, perm, who in _acl(directory, directory.stat().st_mode)}
    entries[(_USER, uid)] = entries.get((_USER, uid), 0) | _SEARCH
    entries[(_MASK, _NO_ID)] = entries.get((_MASK, _NO_ID), entries[(_GROUP_OBJ, _NO_ID)]) | _SEARCH
    blob = _HEADER.pack(_ACL_VERSION) + b"".join(_ENTRY.pack(tag, perm, who) for (tag, who), perm in sorted(entries.items()))
    os.setxattr(directory, _ACL_XATTR, blob)
