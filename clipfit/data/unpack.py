"""Unpacking a downloaded archive safely into a dataset folder (``clipfit-data fetch``, :mod:`clipfit.data.fetch`).

The members a record names (:attr:`clipfit.data.records.Download.extract`) are unpacked into a staging folder
beside the dataset folder: members with absolute paths, ``..`` or links out of the folder refuse the whole archive;
nothing but regular files and folders is written. The outputs are then moved into place one at a time with a
rename, so a dataset folder never holds half an archive.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from clipfit.data.fetch import CHUNK, FetchError
from clipfit.data.records import Download

logger = logging.getLogger(__name__)


def unpack(archive: Path, download: Download, folder: Path, staging: Path) -> None:
    """Unpack the members ``download.extract`` names into ``staging``, then move each output into ``folder``.

    Raises:
        FetchError: an unsafe member (absolute path, ``..``, a link out of the archive, a device), a layout other
            than the record's (a named member missing), or a file that is no archive.
    """
    if staging.exists():
        shutil.rmtree(staging)  # what an interrupted earlier run left
    staging.mkdir(parents=True)
    try:
        source = archive
        if download.inner:
            source = staging.parent / (download.filename + ".inner")
            _extract_one(archive, download.inner, source)
        try:
            matched = _unpack_members(source, download.extract, staging)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise FetchError(f"{download.filename} is damaged ({exc}); delete it and run again") from None
        missing = [member for member, _ in download.extract if member not in matched]
        if missing:
            raise FetchError(
                f"{download.filename} has no {', '.join(missing)}: its layout is not the one clipfit knows (was the "
                "file replaced?); nothing was unpacked"
            )
        for output in download.outputs:
            destination = folder / output
            if destination.exists():  # put there by hand, or by an earlier run: left alone
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / output, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if download.inner:
            (staging.parent / (download.filename + ".inner")).unlink(missing_ok=True)


UNPACK_HEARTBEAT = 10_000  # files between heartbeat lines while unpacking


def _safe_name(name: str, archive: str) -> PurePosixPath:
    """A member name as a relative path inside the archive's folder; anything else refuses the archive."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise FetchError(f"{archive} holds a member outside its folder ({name!r}): an unsafe archive, refused")
    return path


def _check_link(archive: str, name: str, target: str, symbolic: bool) -> None:
    """A link whose target leaves the archive's folder refuses the archive (one inside it is skipped)."""
    target = target.replace("\\", "/")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name) if symbolic else "", target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise FetchError(
            f"{archive} holds a link out of its folder ({name!r} -> {target!r}): an unsafe archive, refused"
        )


def _route(name: PurePosixPath, extract: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    """(the pair's member, where this member goes under the staging folder), or None when no pair names it."""
    text = str(name)
    for member, dest in extract:
        if member.endswith("/"):
            if text == member.rstrip("/"):
                return member, dest.rstrip("/")
            if text.startswith(member):
                return member, dest + text[len(member) :]
        elif text == member:
            return member, dest
    return None


def _is_junk(name: PurePosixPath) -> bool:
    return "__MACOSX" in name.parts or name.name.startswith("._") or name.name == ".DS_Store"


class _Writer:
    """Writes routed members under the staging folder and remembers which pairs matched."""

    def __init__(self, archive: str, extract: tuple[tuple[str, str], ...], staging: Path) -> None:
        self.archive, self.extract, self.staging = archive, extract, staging
        self.matched: set[str] = set()
        self.links = 0

    def target(self, name: str) -> Path | None:
        path = _safe_name(name, self.archive)
        routed = None if _is_junk(path) else _route(path, self.extract)
        if routed is None:
            return None
        self.matched.add(routed[0])
        return self.staging / routed[1]


def _unpack_members(source: Path, extract: tuple[tuple[str, str], ...], staging: Path) -> set[str]:
    """Write the routed members of the zip or tar ``source`` under ``staging``; the pairs that matched.

    Each member's name (and a link's target) is checked before it is written; an unsafe one stops the whole
    archive, and the caller removes the staging folder, so nothing of it reaches the dataset folder.
    """
    from clipfit.console import progress

    writer = _Writer(source.name, extract, staging)
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in progress(archive.infolist(), f"unpack {source.name}", unit="file", every=UNPACK_HEARTBEAT):
                target = writer.target(info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link
                    _check_link(source.name, info.filename, archive.read(info).decode("utf-8", "replace"), True)
                    writer.links += target is not None
                    continue
                if target is None:
                    continue
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    else:
        if not tarfile.is_tarfile(source):
            raise FetchError(f"{source.name} is neither a zip nor a tar archive")
        with tarfile.open(source, "r|*") as tar:  # one sequential pass (SUN397's 39 GB are read once)
            for member in progress(tar, f"unpack {source.name}", unit="file", every=UNPACK_HEARTBEAT):
                target = writer.target(member.name)
                if member.issym() or member.islnk():
                    _check_link(source.name, member.name, member.linkname, member.issym())
                    writer.links += target is not None
                    continue
                if not (member.isfile() or member.isdir()):
                    raise FetchError(f"{source.name} holds {member.name!r}, neither a file nor a folder; refused")
                if target is None:
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst, CHUNK)
    if writer.links:
        logger.warning("%s: %d links inside the archive were not unpacked (clipfit writes files only)", source.name,
                       writer.links)  # fmt: skip
    return writer.matched


def _extract_one(archive: Path, member: str, target: Path) -> None:
    """Copy one member of a zip or tar to ``target`` (an archive inside an archive)."""
    _safe_name(member, archive.name)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            return
        with tarfile.open(archive, "r:*") as tar:
            src = tar.extractfile(member)
            if src is None:
                raise KeyError(member)
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    except KeyError:
        raise FetchError(f"{archive.name} has no {member}: its layout is not the one clipfit knows") from None
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{archive.name} is not a readable archive ({exc})") from None
