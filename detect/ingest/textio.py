"""Encodings and hashing for delivered files, in bounded memory.

Polars reads only UTF-8, ERPs write cp1252 or UTF-8 with a BOM. ``as_utf8`` decodes in chunks
into a UTF-8 copy (never the whole file as Python strings) and reports undecodable bytes with
their line number.
"""

from __future__ import annotations

import codecs
import hashlib
import tempfile
from pathlib import Path

from detect.errors import IngestError

CHUNK = 16 * 1024 * 1024
# Bytes that cp1252 leaves undefined: a file with these is neither UTF-8 nor cp1252.
_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def detect_encoding(path: Path) -> str:
    """'utf-8-sig', 'utf-8' or 'cp1252', checked over the whole file in chunks.

    Raises ``IngestError`` naming the line of the first byte that no supported encoding accepts.
    """
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
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as fh:
        fh.seek(skip)
        while chunk := fh.read(CHUNK):
            if encoding == "cp1252":
                bad = next((i for i, b in enumerate(chunk) if b in _CP1252_UNDEFINED), None) \
                    if any(b in chunk for b in (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")) else None
                if bad is not None:
                    line += chunk[:bad].count(b"\n")
                    raise IngestError(
                        f"byte 0x{chunk[bad]:02X} is valid in neither UTF-8 nor Windows-1252",
                        file=str(path), line=line,
                        hint="re-export the file as UTF-8 or Windows-1252 (ANSI)")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                raise IngestError(f"not valid {encoding}", file=str(path), line=line) from exc
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise IngestError(f"file ends inside a {encoding} character (truncated?)",
                              file=str(path), line=line) from exc


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
