"""Where the replay's files come from: PATHs that are files, directories, `.zip` or `.tar.gz` archives.
A file whose name ends in `.gz` (`users.ndjson.gz`, `export.json.gz`, `dump.sql.gz`) is read through gzip,
wherever it is; its SHA-256 is that of the content, so a compressed copy is the same file.

Everything is streamed: an archive's members are read one at a time, never extracted. The inputs are
walked twice in the same order: `survey` hashes each file (its SHA-256 keys the checkpoint, so the
replay knows where to resume before it reads a record) and recognises its format; `walk` then opens
them again to be replayed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple, cast

import msgspec

from service.replay.model import UnreadableInput


class FileFormat(StrEnum):
    """How a replayed file is read."""

    NDJSON = "ndjson"  # one upload per line, streamed
    JSON_DOCUMENT = "json"  # one user's export, parsed whole
    SQL_DUMP = "sql"  # a D1/SQLite dump, streamed


NDJSON = FileFormat.NDJSON
JSON_DOCUMENT = FileFormat.JSON_DOCUMENT
SQL_DUMP = FileFormat.SQL_DUMP

REPLAYABLE_SUFFIXES = (".json", ".ndjson", ".jsonl", ".sql")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_NDJSON_SUFFIXES = (".ndjson", ".jsonl")
_SQL_FIRST_WORDS = (b"PRAGMA", b"BEGIN", b"CREATE", b"INSERT", b"--")
_NDJSON_KEYS = frozenset({"changes", "records", "deleted"})
_CHUNK = 1024 * 1024
_SNIFF_BYTES = 1024 * 1024
_BOM = b"\xef\xbb\xbf"

# What reading a damaged file or archive raises.
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError)


# A JSON document (one user's export) is parsed whole; larger ones are refused unread. The app's own exports
# are a few MB; this is what stops a small archive inflating into gigabytes of memory.
MAX_DOCUMENT_BYTES = 128 * 1024 * 1024


class InputFile(msgspec.Struct, frozen=True):
    location: str  # for people: the path, or `archive.zip:member/name.ndjson`
    file_name: str  # the file's own name, as the ledger records it
    sha256: str
    size: int
    format: FileFormat | None  # None when not recognised
    refused: str | None = None  # why the file is not replayed (unreadable, too large); the others go on


class Skipped(msgspec.Struct, frozen=True):
    """A file in a directory or archive that is not replayed, and why (reported, never silent)."""

    location: str
    reason: str


class Opened(NamedTuple):
    location: str
    file_name: str
    stream: IO[bytes]


class Unreadable(NamedTuple):
    """A file (or archive, or directory) in a directory that cannot be opened or read: reported, and the
    rest of the directory is replayed."""

    location: str
    file_name: str
    reason: str


_SYMLINK_NOT_FOLLOWED = "a symbolic link, not followed (give --follow-symlinks to follow links)"


class Survey(msgspec.Struct):
    files: list[InputFile]
    skipped: list[Skipped]
    problems: list[str]  # PATHs that cannot be read at all


def survey(
    paths: Sequence[Path], on_bytes: Callable[[str, int], None] | None = None, *, follow_symlinks: bool = False,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Survey:
    """Hash and recognise every input file. `on_bytes(location, bytes hashed so far)` reports progress."""
    result = Survey([], [], [])
    for path in paths:
        files_before, skipped_before = len(result.files), len(result.skipped)
        try:
            with closing(walk_path(path, follow_symlinks=follow_symlinks)) as entries:
                for entry in entries:
                    if isinstance(entry, Skipped):
                        result.skipped.append(entry)
                    elif isinstance(entry, Unreadable):
                        result.files.append(InputFile(entry.location, entry.file_name, "", 0, None, entry.reason))
                    else:
                        result.files.append(_inspect(entry, on_bytes, max_document_bytes))
        except READ_ERRORS as error:
            result.problems.append(f"{path}: cannot read: {error}")
            continue
        except UnreadableInput as error:
            result.problems.append(f"{path}: {error.reason}")
            continue
        if len(result.files) == files_before:
            skipped = len(result.skipped) - skipped_before
            # A replay that would replay nothing of an input says so, and exits non-zero.
            result.problems.append(f"{path}: nothing in it is a file the replay reads ({skipped} skipped, listed)"
                                   if skipped else f"{path}: holds no file")
    return result


Entries = Generator[Opened | Unreadable | Skipped, None, None]


def walk(paths: Sequence[Path], *, follow_symlinks: bool = False) -> Entries:
    for path in paths:
        yield from walk_path(path, follow_symlinks=follow_symlinks)


def walk_path(path: Path, *, follow_symlinks: bool = False) -> Entries:
    """The files a PATH stands for, each open until the next one is asked for. In a directory, symbolic
    links are not followed unless asked (they can lead anywhere), and a file that cannot be read is
    reported as Unreadable while the rest goes on; a PATH named on the command line is followed."""
    if path.is_dir():
        for child, problem in _directory_entries(path, follow_symlinks):
            if problem is not None:
                yield problem
            elif _is_archive(child.name):
                try:
                    yield from _archive_members(child)
                except READ_ERRORS as error:
                    yield Unreadable(str(child), child.name, f"cannot read: {error}")
            elif _is_replayable(child.name):
                try:
                    stream = child.open("rb")
                except OSError as error:
                    yield Unreadable(str(child), child.name, f"cannot read: {error.strerror or error}")
                    continue
                with stream, _content(child.name, stream) as content:
                    yield Opened(str(child), child.name, content)
            else:
                yield Skipped(str(child), "not a replayable file type")
    elif path.is_file():
        if _is_archive(path.name):
            yield from _archive_members(path)
        else:
            with path.open("rb") as stream, _content(path.name, stream) as content:  # named: tried whatever its name
                yield Opened(str(path), path.name, content)
    else:
        raise UnreadableInput("no such file or directory")


def _directory_entries(root: Path, follow_symlinks: bool) -> list[tuple[Path, Skipped | Unreadable | None]]:
    """The files under `root`, sorted, each with the reason it is not opened (or None)."""
    found: list[tuple[Path, Skipped | Unreadable | None]] = []
    seen = {root.resolve()}  # directories entered: a link back up the tree is not a loop
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            children = list(directory.iterdir())
        except OSError as error:
            found.append((directory, Unreadable(str(directory), directory.name,
                                                f"cannot list the directory: {error.strerror or error}")))
            continue
        for child in children:
            if child.is_symlink() and not follow_symlinks:
                found.append((child, Skipped(str(child), _SYMLINK_NOT_FOLLOWED)))
            elif child.is_dir():
                real = child.resolve()
                if real in seen:
                    found.append((child, Skipped(str(child), "a link to a directory already read")))
                else:
                    seen.add(real)
                    pending.append(child)
            elif child.is_file():
                found.append((child, None))
            elif child.is_symlink():
                found.append((child, Skipped(str(child), "a symbolic link to nothing")))
    return sorted(found, key=lambda item: item[0])


def _archive_members(archive: Path) -> Entries:
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zip_file:
            for info in zip_file.infolist():
                if info.is_dir():
                    continue
                skipped = _member_skipped(archive, info.filename)
                if skipped is not None:
                    yield skipped
                    continue
                name = PurePosixPath(info.filename).name
                with zip_file.open(info) as stream, _content(name, stream) as content:
                    yield Opened(f"{archive}:{info.filename}", name, content)
        return
    # Stream mode ("r|*"): members in archive order, each read once, any compression.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            skipped = _member_skipped(archive, member.name)
            if skipped is not None:
                yield skipped
                continue
            member_stream = tar.extractfile(member)
            if member_stream is not None:
                name = PurePosixPath(member.name).name
                with member_stream, _content(name, member_stream) as content:
                    yield Opened(f"{archive}:{member.name}", name, content)


def _member_skipped(archive: Path, name: str) -> Skipped | None:
    base = PurePosixPath(name).name
    location = f"{archive}:{name}"
    if name.startswith("__MACOSX/") or base.startswith("."):
        return Skipped(location, "hidden or operating-system file")
    if _is_archive(base):
        return Skipped(location, "an archive inside an archive is not opened; extract it first")
    if not _is_replayable(base):
        return Skipped(location, "not a replayable file type")
    return None


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_replayable(name: str) -> bool:
    return _uncompressed_name(name).endswith(REPLAYABLE_SUFFIXES) and not name.startswith(".")


def _uncompressed_name(name: str) -> str:
    return name.lower().removesuffix(".gz")


@contextlib.contextmanager
def _content(name: str, stream: IO[bytes]) -> Generator[IO[bytes], None, None]:
    """The file's content: through gzip when its name says it is compressed (streamed, never whole)."""
    if not name.lower().endswith(".gz"):
        yield stream
        return
    with gzip.GzipFile(fileobj=stream, mode="rb") as content:
        yield cast(IO[bytes], content)


def _inspect(opened: Opened, on_bytes: Callable[[str, int], None] | None, max_document_bytes: int) -> InputFile:
    digest = hashlib.sha256()
    head = b""
    size = 0
    file_format: FileFormat | None = None
    try:
        while chunk := opened.stream.read(_CHUNK):
            digest.update(chunk)
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
                if len(head) == _SNIFF_BYTES:
                    file_format = sniff(opened.file_name, head)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(opened.location, size)
            if file_format == JSON_DOCUMENT and size > max_document_bytes:
                # Not read further: a compressed member can inflate without end.
                return InputFile(opened.location, opened.file_name, "", size, JSON_DOCUMENT,
                                 document_too_large(max_document_bytes))
    except READ_ERRORS as error:
        return InputFile(opened.location, opened.file_name, "", size, None, f"cannot read: {error}")
    return InputFile(opened.location, opened.file_name, digest.hexdigest(), size, sniff(opened.file_name, head))


def document_too_large(limit: int) -> str:
    return (f"a JSON document larger than {limit // (1024 * 1024):,} MB is not read (it would be held in memory "
            "whole); give --max-document-mb to raise the limit")


def sniff(file_name: str, head: bytes) -> FileFormat | None:
    """The format of a file from its name and first bytes (None when it is none of them)."""
    name = _uncompressed_name(file_name)
    if name.endswith(_NDJSON_SUFFIXES):
        return NDJSON
    if name.endswith(".sql"):
        return SQL_DUMP
    text = head.removeprefix(_BOM).lstrip()
    if text.startswith(b"["):
        return JSON_DOCUMENT
    if text.startswith(b"{"):
        return NDJSON if _is_batch_line(text.split(b"\n", 1)[0]) else JSON_DOCUMENT
    if text[:6].upper().startswith(_SQL_FIRST_WORDS):
        return SQL_DUMP
    return None


def _is_batch_line(line: bytes) -> bool:
    try:
        value = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return False  # an indented document's first line, `{`, is not a whole object
    return isinstance(value, dict) and bool(_NDJSON_KEYS & value.keys())


class MeteredReader:
    """A file being replayed: counts the bytes read (for progress) and hashes them, so a file that
    changed since it was surveyed is noticed instead of being replayed under the old checkpoint."""

    def __init__(self, stream: IO[bytes], expected_sha256: str) -> None:
        self._stream = stream
        self._expected = expected_sha256
        self._digest = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        return self._take(self._stream.read(size))

    def readline(self, size: int = -1, /) -> bytes:
        return self._take(self._stream.readline(size))

    def _take(self, data: bytes) -> bytes:
        self._digest.update(data)
        self.bytes_read += len(data)
        return data

    def verify(self) -> None:
        """Read what is left and check the whole file is the one that was surveyed."""
        while self.read(_CHUNK):
            continue  # reading is the point: every byte goes through the digest
        if self._digest.hexdigest() != self._expected:
            raise UnreadableInput("the file changed while it was being replayed; run the replay again")
