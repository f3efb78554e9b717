"""S3Storage against a real SeaweedFS server (the ``s3_server`` fixture)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import obstore
import pystac
import pytest

from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.stager import Stager, StageTask
from aux_assets.storage.base import StorageError
from aux_assets.storage.s3 import S3Storage, s3_storage_from_url
from aux_assets.utils.names import UnsafeNameError
from tests.fixtures.seaweedfs import S3Server
from tests.helpers.items import asset_item

MiB = 1024 * 1024
PREFIX = "aux/v1"


def _env(server: S3Server, **extra: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        **extra,
    }


def _write(path: Path, size: int) -> bytes:
    """Write ``size`` pseudo-random bytes to ``path``; return their SHA-256."""
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(0, size, MiB):
            chunk = (index.to_bytes(8, "big") + block[8:])[: min(MiB, size - index)]
            out.write(chunk)
            digest.update(chunk)
    return digest.digest()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"aux-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def storage(s3_server: S3Server, bucket: str, spool: Path) -> S3Storage:
    return s3_storage_from_url(f"s3://{bucket}/{PREFIX}", _env(s3_server), spool)


def test_commit_small_and_multipart_files_read_back_identical(
    storage: S3Storage, s3_server: S3Server, bucket: str, spool: Path
) -> None:
    reader = s3_server.store(bucket)
    for name, size, etag_suffix in [("small.xml", 100, '"'), ("big.bin", 20 * MiB, '-3"')]:
        key = f"S2_AUX/ITEM_{name}/{name}"
        part = storage.part_path(key)
        assert part.parent == spool and part.name.endswith(".part")
        digest = _write(part, size)

        assert storage.commit(part, key) == f"s3://{bucket}/{PREFIX}/{key}"

        assert not part.exists()
        obj = f"{PREFIX}/{key}"
        assert hashlib.sha256(bytes(obstore.get(reader, obj).bytes())).digest() == digest
        assert str(obstore.head(reader, obj)["e_tag"]).endswith(etag_suffix)  # 3 parts of 8 MiB
    assert list(spool.iterdir()) == []


def test_exists(storage: S3Storage, bucket: str) -> None:
    key = "S1_AUX/ITEM_1/a.txt"
    part = storage.part_path(key)
    part.write_bytes(b"a")
    href = storage.commit(part, key)

    assert storage.exists(href)
    assert not storage.exists(storage.href("S1_AUX/ITEM_1/missing.txt"))
    assert not storage.exists(href.replace(bucket, "other-bucket"))
    assert not storage.exists(f"s3://{bucket}")
    assert not storage.exists("file:///tmp/a.txt")


def test_commit_tree_uploads_every_file(
    storage: S3Storage, s3_server: S3Server, bucket: str, spool: Path
) -> None:
    scratch = storage.scratch_dir("S3_AUX/ITEM_2/archive.zip")
    (scratch / "sub").mkdir(parents=True)
    (scratch / "a.txt").write_bytes(b"A")
    (scratch / "sub" / "b.txt").write_bytes(b"B")

    hrefs = storage.commit_tree(scratch, "S3_AUX/ITEM_2/archive")

    base = f"s3://{bucket}/{PREFIX}/S3_AUX/ITEM_2/archive"
    assert hrefs == {"a.txt": f"{base}/a.txt", "sub/b.txt": f"{base}/sub/b.txt"}
    reader = s3_server.store(bucket)
    assert bytes(obstore.get(reader, f"{PREFIX}/S3_AUX/ITEM_2/archive/sub/b.txt").bytes()) == b"B"
    assert all(storage.exists(href) for href in hrefs.values())
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("bucket_name", "secret", "reason"),
    [
        ("no-such-bucket", None, "NoSuchBucket"),
        (None, "wrong-secret-0123456789", "SignatureDoesNotMatch"),
    ],
)
def test_failed_upload_is_clear_and_leaves_nothing(
    s3_server: S3Server,
    bucket: str,
    spool: Path,
    bucket_name: str | None,
    secret: str | None,
    reason: str,
) -> None:
    secret = secret or s3_server.secret_key
    env = _env(s3_server, AWS_SECRET_ACCESS_KEY=secret)
    storage = s3_storage_from_url(f"s3://{bucket_name or bucket}/{PREFIX}", env, spool)
    part = storage.part_path("C/I/f.bin")
    _write(part, 9 * MiB)
    scratch = storage.scratch_dir("C/I/tree")
    scratch.mkdir()
    (scratch / "x.txt").write_bytes(b"x")

    with pytest.raises(StorageError, match=reason) as commit_error:
        storage.commit(part, "C/I/f.bin")
    with pytest.raises(StorageError, match=reason) as tree_error:
        storage.commit_tree(scratch, "C/I/tree")

    for error in (commit_error.value, tree_error.value):
        assert f"s3://{bucket_name or bucket}/{PREFIX}/C/I/" in str(error)
        assert secret not in str(error)
    assert secret not in repr(storage)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a//b", "", "a/.."])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    storage = S3Storage("some-bucket", "p", spool_dir=tmp_path)
    part = tmp_path / "f.part"
    part.write_bytes(b"x")
    with pytest.raises(UnsafeNameError):
        storage.part_path(key)
    with pytest.raises(UnsafeNameError):
        storage.href(key)
    with pytest.raises(UnsafeNameError):
        storage.commit(part, key)
    assert not part.exists()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"x")
    with pytest.raises(UnsafeNameError):
        storage.commit_tree(tree, key)
    assert not tree.exists()


def test_from_url_reads_the_environment(tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL": "https://s3.example.org",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
    }
    storage = s3_storage_from_url("s3://my.bucket-1/aux/staged/", env, tmp_path)

    assert (storage.bucket, storage.prefix, storage.endpoint) == (
        "my.bucket-1",
        "aux/staged",
        "https://s3.example.org",
    )
    assert storage.href("C/I/f") == "s3://my.bucket-1/aux/staged/C/I/f"
    assert s3_storage_from_url("s3://bucket", {}, tmp_path).href("C/I/f") == "s3://bucket/C/I/f"
    assert "s3cr3t-value" not in repr(storage)


@pytest.mark.parametrize(
    ("url", "env", "message"),
    [
        ("s3:///prefix", {}, "AUX_STORAGE_URL .* has no bucket"),
        ("s3://", {}, "AUX_STORAGE_URL .* has no bucket"),
        ("s3://My_Bucket/x", {}, "AUX_STORAGE_URL .* not a valid S3 bucket name"),
        ("s3://ab/x", {}, "AUX_STORAGE_URL .* not a valid S3 bucket name"),
        ("s3://192.168.1.1/x", {}, "AUX_STORAGE_URL .* not a valid S3 bucket name"),
        ("s3://bucket/a/../b", {}, "AUX_STORAGE_URL .* relative path component"),
        ("https://bucket/x", {}, "AUX_STORAGE_URL .* must start with s3://"),
        ("s3://key:secret@bucket/x", {}, "AUX_STORAGE_URL must be s3://bucket/prefix without"),
        ("https://key:secret@host/x", {}, "AUX_STORAGE_URL must be s3://bucket/prefix without"),
        ("s3://bucket:9000/x", {}, "AUX_STORAGE_URL must be s3://bucket/prefix without"),
        ("s3://bucket/x?versionId=1", {}, "AUX_STORAGE_URL must be s3://bucket/prefix without"),
        ("s3://bucket/x", {"AWS_ACCESS_KEY_ID": "k"}, "AWS_SECRET_ACCESS_KEY is not set"),
        ("s3://bucket/x", {"AWS_SECRET_ACCESS_KEY": "s"}, "AWS_ACCESS_KEY_ID is not set"),
        ("s3://bucket/x", {"AWS_ENDPOINT_URL": "localhost:9000"}, "AWS_ENDPOINT_URL"),
    ],
)
def test_from_url_errors_name_the_variable(
    tmp_path: Path, url: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        s3_storage_from_url(url, env, tmp_path)
    assert "secret" not in str(error.value)


_PEAK_SCRIPT = """
import json, re, sys, time
from pathlib import Path
from aux_assets.storage.s3 import s3_storage_from_url

def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])

storage = s3_storage_from_url(sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]))
before = kib("VmRSS")
started = time.perf_counter()
href = storage.commit(Path(sys.argv[4]), "BIG/ITEM/big.bin")
seconds = time.perf_counter() - started
print(json.dumps({"href": href, "seconds": seconds, "peak_delta_kib": kib("VmHWM") - before}))
"""


def test_committing_200_mib_keeps_memory_small(
    s3_server: S3Server, bucket: str, spool: Path
) -> None:
    """A fresh interpreter's peak RSS (``VmHWM``; ``ru_maxrss`` would inherit pytest's peak)."""
    size = 200 * MiB
    spool.mkdir()
    part = spool / "big.bin.part"
    _write(part, size)
    url = f"s3://{bucket}/{PREFIX}"
    args = [url, json.dumps(_env(s3_server)), str(spool), str(part)]
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, *args], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr

    result = json.loads(run.stdout)
    seconds, peak_mib = result["seconds"], result["peak_delta_kib"] / 1024
    print(
        f"200 MiB commit: {seconds:.2f} s, {200 / seconds:.0f} MiB/s, peak RSS +{peak_mib:.0f} MiB"
    )
    assert peak_mib < 100
    assert obstore.head(s3_server.store(bucket), f"{PREFIX}/BIG/ITEM/big.bin")["size"] == size
    assert not part.exists()


def _local_item(item_id: str, path: Path) -> pystac.Item:
    """An item whose one asset, keyed by its file name, is the local file ``path``."""
    asset = {"href": path.as_uri(), "file:size": path.stat().st_size}
    return asset_item(item_id, {path.name: asset})


def test_a_key_over_s3s_limit_with_the_prefix_fails_its_item_before_any_transfer(
    s3_server: S3Server, bucket: str, spool: Path, tmp_path: Path
) -> None:
    prefix = "/".join(["p" * 99] * 9)  # 899 bytes, and its slash: 124 bytes are left for keys
    storage = s3_storage_from_url(f"s3://{bucket}/{prefix}", _env(s3_server), spool)
    assert storage.max_key_bytes == 124
    files = tmp_path / "files"
    files.mkdir()
    for name in ("L" * 56 + ".EOF", "OK.EOF"):
        (files / name).write_bytes(b"payload")
    tasks = [
        StageTask(_local_item(item_id, files / name), "s1-aux", "local", file_roots=(files,))
        for item_id, name in (("I" * 40, "L" * 56 + ".EOF"), ("S1A_OK", "OK.EOF"))
    ]
    stager = Stager(LocalCatalog(tmp_path / "catalog"), storage)
    long, ok = stager.stage(tasks)
    assert (long.status, ok.status) == ("failed", "staged"), (long, ok)
    assert (
        f"asset {'L' * 56 + '.EOF'!r} would be stored under a key of 125 bytes in UTF-8 (its "
        "generation folder included); this storage takes keys of at most 124 bytes"
    ) in (long.reason or "")
    listed = [m["path"] for batch in obstore.list(s3_server.store(bucket), prefix) for m in batch]
    assert [key.rpartition("/")[2] for key in listed] == ["OK.EOF"]
