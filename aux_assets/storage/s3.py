"""S3 storage: verified local ``.part`` files uploaded to ``s3://bucket/<prefix>/<key>``.

Client: obstore (Rust ``object_store``), not boto3. It streams a local file as a multipart upload
with bounded memory (``chunk`` x ``concurrency``), signs for any S3-compatible endpoint including
plain-http ones, and is one small wheel instead of boto3's botocore stack.

Bytes are spooled locally (:meth:`S3Storage.part_path`), verified by the caller, and only then
uploaded by :meth:`S3Storage.commit`; an S3 object becomes visible only when its (multipart)
upload completes, so readers never see a partial file. An upload that fails half-way may leave
invisible multipart parts behind: give the bucket an ``AbortIncompleteMultipartUpload``
lifecycle rule.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import obstore
from obstore.store import S3Store

from aux_assets.storage.base import (
    LEFTOVER_MAX_AGE_S,
    StorageError,
    check_key,
    spool_name,
    sweep_leftovers,
)
from aux_assets.utils.checksums import HASH_CHUNK, Checksum, hash_stream
from aux_assets.utils.names import MAX_KEY_BYTES, utf8_size

if TYPE_CHECKING:
    from obstore.store import S3Config

_MIN_PART = 5 * 1024 * 1024
_MAX_PARTS = 10_000
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_S3_ERROR_RE = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")
_STATUS_RE = re.compile(r"status code: (\d{3})")


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name, else raise :class:`ValueError`."""
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IPV4_RE.match(bucket):
        raise ValueError(
            f"bucket name {bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit"
        )
    return bucket


class S3Storage:
    """Objects in one S3 bucket under a prefix; implements :class:`aux_assets.storage.base.Storage`.

    ``spool_dir`` holds the local ``.part`` files and scratch directories. Without
    ``access_key_id``/``secret_access_key`` the default AWS credential chain is used.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        spool_dir: Path,
        multipart_chunk: int = 8 * 1024 * 1024,
        multipart_concurrency: int = 4,
    ) -> None:
        self.bucket = check_bucket(bucket)
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.max_key_bytes = MAX_KEY_BYTES - (utf8_size(f"{self.prefix}/") if self.prefix else 0)
        if multipart_chunk < _MIN_PART:
            raise ValueError(f"multipart_chunk must be at least {_MIN_PART} bytes (S3 minimum)")
        if multipart_concurrency < 1:
            raise ValueError("multipart_concurrency must be at least 1")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        self.endpoint = endpoint
        self.spool_dir = spool_dir
        self.multipart_chunk = multipart_chunk
        self.multipart_concurrency = multipart_concurrency
        self._secret = secret_access_key
        config: S3Config = {}
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        self._config = config
        self._store = self._open(bucket)
        self._others: dict[str, S3Store] = {}  # other buckets, only ever HEAD-ed

    def _open(self, bucket: str) -> S3Store:
        allow_http = bool(self.endpoint and self.endpoint.startswith("http://"))
        return S3Store(bucket, config=self._config, client_options={"allow_http": allow_http})

    def __repr__(self) -> str:
        return (
            f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"
        )

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _spool_path(self, key: str, kind: str) -> Path:
        name = check_key(key)[-1]
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir / spool_name(name, kind)

    def part_path(self, key: str) -> Path:
        return self._spool_path(key, "part")

    def scratch_dir(self, key: str) -> Path:
        return self._spool_path(key, "work")

    def sweep(self, keys: Iterable[str], max_age_s: float = LEFTOVER_MAX_AGE_S) -> int:
        """Sweep the spool folder, where the parts of every key go (the bucket never holds a
        partial object: see the module docstring)."""
        return sweep_leftovers(self.spool_dir, max_age_s)

    def _describe(self, exc: Exception) -> str:
        """A one-line reason for an obstore error, without credentials."""
        text = str(exc).split("\n\nDebug source", 1)[0].strip()
        s3_error = _S3_ERROR_RE.search(text)
        status = _STATUS_RE.search(text)
        if s3_error:
            reason = f"{s3_error[1]}: {s3_error[2]}"
            if status:
                reason += f" (HTTP {status[1]})"
        else:
            reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no details'}"
        return reason.replace(self._secret, "***") if self._secret else reason

    def _upload(self, source: Path, object_key: str) -> None:
        size = source.stat().st_size
        chunk = max(self.multipart_chunk, math.ceil(size / _MAX_PARTS))
        try:
            obstore.put(
                self._store,
                object_key,
                source,
                chunk_size=chunk,
                max_concurrency=self.multipart_concurrency,
            )
        except Exception as exc:
            raise StorageError(
                f"upload of {source.name} ({size} bytes) to s3://{self.bucket}/{object_key} "
                f"failed: {self._describe(exc)}"
            ) from exc

    def commit(self, part: Path, key: str) -> str:
        """Upload the verified ``part`` (multipart above ``multipart_chunk``), then delete it."""
        try:
            self._upload(part, self._object_key(key))
        finally:
            part.unlink(missing_ok=True)
        return self.href(key)

    def commit_tree(self, directory: Path, prefix: str) -> dict[str, str]:
        """Upload every file under ``directory`` to ``<prefix>/<relpath>``, then remove it."""
        try:
            files = {
                src.relative_to(directory).as_posix(): src
                for src in sorted(p for p in directory.rglob("*") if p.is_file())
            }
            keys = {rel: f"{prefix}/{rel}" for rel in files}
            for key in keys.values():
                check_key(key)
            for rel, src in files.items():
                self._upload(src, self._object_key(keys[rel]))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return {rel: self.href(key) for rel, key in keys.items()}

    def href(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def rehash(self, key: str, algorithm: str) -> tuple[int, Checksum] | None:
        object_key = self._object_key(key)
        try:
            stream = obstore.get(self._store, object_key).stream(min_chunk_size=HASH_CHUNK)
            return hash_stream(stream, algorithm)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StorageError(
                f"reading s3://{self.bucket}/{object_key} failed: {self._describe(exc)}"
            ) from exc

    def key_of(self, href: str) -> str | None:
        parsed = urlparse(href)
        path = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            return None
        start = f"{self.prefix}/" if self.prefix else ""
        return (path[len(start) :] or None) if path.startswith(start) else None

    def remove(self, key: str) -> int:
        object_key = self._object_key(key)
        try:
            paths = [m["path"] for batch in obstore.list(self._store, object_key) for m in batch]
            if self.exists(self.href(key)):  # an object at the key itself (a file's)
                paths.append(object_key)
            if paths:
                obstore.delete(self._store, paths)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(
                f"removing s3://{self.bucket}/{object_key} failed: {self._describe(exc)}"
            ) from exc
        return len(paths)

    def exists(self, href: str) -> bool:
        """HEAD the object of an ``s3://`` href on this endpoint; ``False`` for any other href.

        The href may be in another bucket: a catalog that moves objects into its own bucket
        (rs-server-catalog) registers them there. That bucket must then be readable with our
        credentials, else the error says so.
        """
        parsed = urlparse(href)
        object_key = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or not parsed.netloc or not object_key:
            return False
        if parsed.netloc == self.bucket:
            store = self._store
        else:
            try:
                check_bucket(parsed.netloc)
            except ValueError:
                return False
            store = self._others.get(parsed.netloc) or self._open(parsed.netloc)
            self._others[parsed.netloc] = store
        try:
            obstore.head(store, object_key)
        except FileNotFoundError:
            return False
        except Exception as exc:
            hint = (
                ""
                if store is self._store
                else f" (give our S3 credentials read access to bucket {parsed.netloc!r})"
            )
            raise StorageError(f"cannot check {href}: {self._describe(exc)}{hint}") from exc
        return True


def s3_storage_from_url(url: str, env: Mapping[str, str], spool_dir: Path) -> S3Storage:
    """An :class:`S3Storage` for ``AUX_STORAGE_URL=s3://bucket/prefix``.

    Reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
    ``AWS_REGION`` (default ``us-east-1``) from ``env``; empty values count as unset. Settings
    not given here fall back to the process environment (``object_store`` reads ``AWS_*``).
    """
    parsed = urlparse(url)
    if "@" in parsed.netloc or ":" in parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(  # without the URL: it may hold a secret
            "AUX_STORAGE_URL must be s3://bucket/prefix without credentials, port, query or "
            "fragment; give credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parsed.scheme != "s3":
        raise ValueError(f"AUX_STORAGE_URL {url!r} must start with s3://")
    if not parsed.netloc:
        raise ValueError(f"AUX_STORAGE_URL {url!r} has no bucket; use s3://bucket/prefix")
    try:
        check_bucket(parsed.netloc)
        prefix = parsed.path.strip("/")
        if prefix:
            check_key(prefix)
    except ValueError as exc:
        raise ValueError(f"AUX_STORAGE_URL {url!r}: {exc}") from None
    values = {
        name: env.get(name) or None for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    missing = [name for name, value in values.items() if value is None]
    if len(missing) == 1:
        raise ValueError(f"{missing[0]} is not set, but the other AWS key is; set both or neither")
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    if endpoint and urlparse(endpoint).scheme not in {"http", "https"}:
        raise ValueError(f"AWS_ENDPOINT_URL {endpoint!r} must be an http:// or https:// URL")
    return S3Storage(
        parsed.netloc,
        prefix,
        endpoint=endpoint,
        region=env.get("AWS_REGION") or "us-east-1",
        access_key_id=values["AWS_ACCESS_KEY_ID"],
        secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        spool_dir=spool_dir,
    )
