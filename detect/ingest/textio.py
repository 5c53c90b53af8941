"""Encodings and hashing for delivered files, in bounded memory.

Polars reads only UTF-8, ERPs write cp1252 or UTF-8 with a BOM. ``as_utf8`` decodes in chunks
into a UTF-8 copy (never the whole file as Python strings) and reports undecodable bytes with
their line number.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
from pathlib import Path

from detect.errors import IngestError

CHUNK = 16 * 1024 * 1024
HASH_BUFFER = CHUNK
"""Bytes per read of ``sha256_of`` (one buffer, reused; tests make it small)."""
# Bytes that cp1252 leaves undefined: a file with these is neither UTF-8 nor cp1252.
_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


_HASHES: dict[tuple, str] = {}
"""sha256 by file identity (see ``_identity``): the run's ``lifecycle.fingerprint`` hashes every
delivered file just before ingest records the same hashes in ``IngestResult.inputs``; the second
call is served from here instead of reading the file again (0.15-0.35 s per 171 MB)."""


def _identity(path: Path) -> tuple:
    """What changes when a file's content can have changed: device, inode, size, mtime, ctime.

    A rewrite in place bumps mtime/ctime (nanoseconds), a replacement changes the inode."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


file_identity = _identity
"""Public name of ``_identity`` (the history merge keys what validation found by it)."""


QUOTE = b'"'
"""The byte ``sha256_of`` looks for on the way (the usual CSV quote, see ``contains_byte``)."""
_QUOTED: dict[tuple, bool] = {}
"""Whether a file holds ``QUOTE``, by file identity: noted while ``sha256_of`` reads it."""


def sha256_of(path: Path) -> str:
    """sha256 of the file's bytes. On the way it notes whether the file holds a ``QUOTE``
    (a memchr over data in hand until the first one), so that the reader's quote scan
    (``contains_byte``, 0.07 CPU s per 171 MB) need not read the file again."""
    key = _identity(path)
    if (cached := _HASHES.get(key)) is not None:
        return cached
    digest = hashlib.sha256()
    quoted = False
    # one reused buffer: a fresh 16 MB chunk per read was page-faulted in and zeroed each time
    # (171 MB: 0.24-0.30 -> 0.17-0.19 CPU s). Large, not 1 MB (0.15 CPU s alone): the hash runs
    # in a thread beside the start-up's imports, and every read and update hands the GIL back
    # and forth (start-up 0.56-0.59 -> 0.51-0.56 s at 16 MB, 0.60-0.63 s at 1 MB)
    buf = bytearray(HASH_BUFFER)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            if not quoted:
                quoted = buf.find(QUOTE, 0, n) >= 0
    _remember(_QUOTED, key, quoted)
    return _remember(_HASHES, key, digest.hexdigest())


def _remember(cache: dict[tuple, str], key: tuple, value: str) -> str:
    """Store ``value`` in a per-file cache; a long-lived process (the app) must not grow it
    without bound."""
    if len(cache) > 4096:
        cache.clear()
    cache[key] = value
    return value


def read_head(path: Path, size: int = 64 * 1024) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def decode_head(head: bytes) -> str:
    """Best-effort text of a file's first bytes, for sniffing formats."""
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:  # a multi-byte char cut at the end of the head
            return head[: exc.start].decode("utf-8")
        return head.decode("cp1252", errors="replace")


HEAD_CHECK = 1024 * 1024
"""Bytes a provisional encoding check reads (``detect_encoding(trust_head=True)``)."""

_ENCODINGS: dict[tuple, str] = {}
"""Results of full encoding checks by file identity (see ``sha256_of``)."""


class EncodingChanged(Exception):  # noqa: N818 - a signal to re-read, not an error to report
    """A file read with a provisional encoding turned out to be another one: read it again
    (``detect.ingest.ingest`` does, once; the full result is remembered)."""


def detect_encoding(path: Path, *, trust_head: bool = False) -> str:
    """'utf-8-sig', 'utf-8' or 'cp1252', checked over the whole file in chunks.

    Raises ``IngestError`` naming the line of the first byte that no supported encoding accepts.

    ``trust_head``: when the first MiB is UTF-8, say so without reading the rest. For a reader
    that lets Polars validate the rest anyway (it rejects invalid UTF-8) and calls the full
    check only when that read fails (``mapped.open_delimited``): 0.25 s less per 171 MB.
    """
    key = _identity(path)
    if (known := _ENCODINGS.get(key)) is not None:
        return known
    if trust_head:
        head = read_head(path, HEAD_CHECK)
        bom = head.startswith(codecs.BOM_UTF8)
        body = head[3:] if bom else head
        try:
            body.decode("utf-8")
            ok = True
        except UnicodeDecodeError as exc:   # fine if only a character cut at the end
            ok = len(head) == HEAD_CHECK and exc.start > len(body) - 4 \
                and exc.reason == "unexpected end of data"
        if ok:
            return "utf-8-sig" if bom else "utf-8"
    return _remember(_ENCODINGS, key, _full_encoding_check(path))


def _full_encoding_check(path: Path) -> str:
    with open(path, "rb") as fh:
        first = fh.read(3)
        if first == codecs.BOM_UTF8:
            _check_decodes(path, "utf-8", skip=3)
            return "utf-8-sig"
    try:
        _check_decodes(path, "utf-8", skip=0)
        return "utf-8"
    except IngestError:
        _check_decodes(path, "cp1252", skip=0)
        return "cp1252"


def _check_decodes(path: Path, encoding: str, skip: int) -> None:
    """Raise ``IngestError`` (file, line) at the first byte that ``encoding`` does not accept.

    Fast path: a chunk of pure ASCII is valid in both encodings and needs no decoding; only
    chunks with other bytes are decoded (and then thrown away). Lines are counted only when
    there is an error to report, by counting line breaks up to its byte offset.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = skip   # file offset of the current chunk
    with open(path, "rb") as fh:
        fh.seek(skip)
        while chunk := fh.read(CHUNK):
            if encoding == "cp1252":
                bad = next((i for i, b in enumerate(chunk) if b in _CP1252_UNDEFINED), None) \
                    if any(b in chunk for b in (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")) else None
                if bad is not None:
                    raise IngestError(
                        f"byte 0x{chunk[bad]:02X} is valid in neither UTF-8 nor Windows-1252",
                        file=str(path), line=_line_at(path, skip, offset + bad),
                        hint="re-export the file as UTF-8 or Windows-1252 (ANSI)")
            if not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise IngestError(f"not valid {encoding}", file=str(path),
                                      line=_line_at(path, skip, offset + exc.start)) from exc
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise IngestError(f"file ends inside a {encoding} character (truncated?)",
                              file=str(path), line=_line_at(path, skip, offset)) from exc


def _line_at(path: Path, start: int, offset: int) -> int:
    """1-based line of byte ``offset``, counting line breaks from ``start`` (error path only)."""
    line = 1
    with open(path, "rb") as fh:
        fh.seek(start)
        left = offset - start
        while left > 0 and (chunk := fh.read(min(CHUNK, left))):
            line += chunk.count(b"\n")
            left -= len(chunk)
    return line


def contains_byte(path: Path, byte: bytes) -> bool:
    """Whether ``byte`` occurs anywhere in the file: one reused buffer, memchr-speed search
    (not mmap: its pages would count as resident memory of the run, 1.8 GB at 10M lines).
    For ``QUOTE`` the answer noted by ``sha256_of`` of the same file (identity) is used."""
    if byte == QUOTE and (known := _QUOTED.get(_identity(path))) is not None:
        return known
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            if buf.find(byte, 0, n) >= 0:
                return True
    return False


def as_utf8(path: Path, encoding: str | None = None, workdir: Path | None = None) -> Path:
    """Return a path to a UTF-8 (no BOM) version of ``path``: the file itself when it already is.

    Other encodings are transcoded chunk by chunk into ``workdir`` (a temp dir by default).
    """
    encoding = encoding or detect_encoding(path)
    if encoding == "utf-8":
        return path
    target_dir = workdir or Path(tempfile.mkdtemp(prefix="belegwacht-"))
    target_dir.mkdir(parents=True, exist_ok=True)
    # several deliveries hold files of the same name (EXTF_Buchungsstapel.csv in each folder):
    # a short hash of the full path keeps their UTF-8 copies apart
    tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    target = target_dir / f"{tag}-{path.name}.utf8"
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    with open(path, "rb") as src, open(target, "w", encoding="utf-8", newline="") as dst:
        while chunk := src.read(CHUNK):
            dst.write(decoder.decode(chunk))
        dst.write(decoder.decode(b"", final=True))
    return target


def ends_with_newline(path: Path) -> bool:
    """False for a file whose last line is cut off (a common sign of a truncated transfer)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            n += chunk.count(b"\n")
    return n
