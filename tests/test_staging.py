import hashlib
import io
import os
import time
import zipfile
from pathlib import Path

import pystac
import pytest

from aux_assets.catalog.static import LocalCatalog
from aux_assets.staging.archives import extract_temp_name
from aux_assets.staging.items import TEMP_NAME_BYTES, asset_filename
from aux_assets.staging.stager import Stager, StageTask
from aux_assets.storage.base import StorageError
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.checksums import Checksum
from aux_assets.utils.retry import RetryPolicy
from aux_assets.utils.urls import file_path
from tests.helpers.items import asset_item
from tests.helpers.servers import file_handler, send, serve

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)


def _item(item_id: str, assets: dict[str, tuple[str, bytes]], raw_md5: bool = True) -> pystac.Item:
    """An AUXIP-like item; ``assets`` maps key -> (href, bytes)."""
    stac_assets = {}
    for key, (href, data) in assets.items():
        md5 = hashlib.md5(data).hexdigest()
        checksum = md5 if raw_md5 else Checksum("md5", md5).multihash()
        stac_assets[key] = {
            "href": href,
            "type": "application/octet-stream",
            "file:size": len(data),
            "file:checksum": checksum,
        }
    return asset_item(item_id, stac_assets, dated=True)


@pytest.fixture
def world(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    corrupt: set[str] = set()
    with serve(file_handler(src, corrupt)) as (url, log):
        yield {
            "src": src,
            "url": url,
            "log": log,
            "corrupt": corrupt,
            "catalog": LocalCatalog(tmp_path / "catalog"),
            "storage": LocalStorage(tmp_path / "storage"),
            "root": tmp_path,
        }


def _publish(world, name: str, data: bytes) -> str:
    (world["src"] / name).write_bytes(data)
    return f"{world['url']}/files/{name}"


def _stager(world) -> Stager:
    return Stager(world["catalog"], world["storage"], limits={"auxip": 4}, retry=FAST)


def _file_gets(world) -> int:
    return sum(r["path"].startswith("/files/") for r in world["log"])


def _visible_files(root: Path) -> list[Path]:
    return [p for p in (root / "storage").rglob("*") if p.is_file()]


def test_stage_verify_register_then_rerun_moves_nothing(world):
    items = []
    for i in range(3):
        name = f"S1A_OPER_AUX_POEORB_{i}.EOF"
        data = f"<Earth_Explorer_File>{i}</Earth_Explorer_File>".encode() * 100
        items.append(_item(f"S1A_OPER_AUX_POEORB_{i}", {name: (_publish(world, name, data), data)}))
    tasks = [StageTask(item, "s1-aux", "auxip") for item in items]
    outcomes = _stager(world).stage(tasks + tasks[:1])  # a duplicate is staged once
    assert [o.status for o in outcomes] == ["staged"] * 3
    assert _file_gets(world) == 3
    registered = world["catalog"].get_items("s1-aux", [i.id for i in items])
    for item in items:
        ((key, asset),) = registered[item.id].assets.items()
        path = file_path(asset.href)
        assert path is not None and path.is_relative_to(world["root"] / "storage")
        source = item.assets[key]
        assert path.read_bytes() == (world["src"] / key).read_bytes()
        assert asset.extra_fields["alternate"]["source"]["href"] == source.href
        expected = Checksum("md5", source.extra_fields["file:checksum"])
        assert Checksum.parse(asset.extra_fields["file:checksum"]) == expected
        assert hashlib.md5(path.read_bytes()).hexdigest() == expected.hexdigest
    lookups = world["catalog"].lookups
    again = _stager(world).stage(tasks)
    assert [o.status for o in again] == ["present"] * 3
    assert sum(o.bytes_transferred for o in again) == 0
    assert _file_gets(world) == 3  # no byte moved
    assert world["catalog"].lookups == lookups + 1  # one batched lookup


def test_corrupt_asset_fails_alone_and_rerun_stages_only_it(world):
    good = b"good" * 1000
    bad = b"flipped" * 1000
    item_ok = _item("OK_ITEM", {"OK_ITEM.EOF": (_publish(world, "OK_ITEM.EOF", good), good)})
    item_bad = _item("BAD_ITEM", {"BAD_ITEM.EOF": (_publish(world, "BAD_ITEM.EOF", bad), bad)})
    world["corrupt"].add("BAD_ITEM.EOF")
    tasks = [StageTask(item_ok, "s1-aux", "auxip"), StageTask(item_bad, "s1-aux", "auxip")]
    first = _stager(world).stage(tasks)
    assert [o.status for o in first] == ["staged", "failed"]
    assert "checksum mismatch" in (first[1].reason or "")
    assert world["catalog"].get_items("s1-aux", ["BAD_ITEM"]) == {}
    assert not (world["root"] / "storage" / "s1-aux" / "BAD_ITEM").exists() or not [
        p for p in (world["root"] / "storage" / "s1-aux" / "BAD_ITEM").iterdir()
    ]
    world["corrupt"].clear()
    gets = _file_gets(world)
    second = _stager(world).stage(tasks)
    assert [o.status for o in second] == ["present", "staged"]
    assert _file_gets(world) == gets + 1


def test_republished_item_with_new_checksum_is_staged_again(world):
    v1, v2 = b"version-1" * 10, b"version-2" * 10
    href = _publish(world, "X.EOF", v1)
    _stager(world).stage([StageTask(_item("X", {"X.EOF": (href, v1)}), "s1-aux", "auxip")])
    _publish(world, "X.EOF", v2)
    (outcome,) = _stager(world).stage(
        [StageTask(_item("X", {"X.EOF": (href, v2)}, raw_md5=False), "s1-aux", "auxip")]
    )
    assert outcome.status == "staged"
    assert file_path(outcome.assets[0].href).read_bytes() == v2


def test_missing_stored_file_is_restaged(world):
    data = b"abc" * 100
    task = StageTask(
        _item("Y", {"Y.EOF": (_publish(world, "Y.EOF", data), data)}), "s1-aux", "auxip"
    )
    (first,) = _stager(world).stage([task])
    file_path(first.assets[0].href).unlink()
    (second,) = _stager(world).stage([task])
    assert second.status == "staged" and file_path(second.assets[0].href).read_bytes() == data


@pytest.mark.parametrize(
    ("item_id", "key", "href", "local", "reason"),
    [
        ("../evil", "a.EOF", "http://127.0.0.1:1/a", False, "relative path component"),
        ("a/b", "a.EOF", "http://127.0.0.1:1/a", False, "path separator"),
        ("ok", "../a.EOF", "http://127.0.0.1:1/a", False, "relative path component"),
        ("ok", "a\x00.EOF", "http://127.0.0.1:1/a", False, "control character"),
        ("ok", "a.EOF", "file:///etc/passwd", False, "only local sources may point at local"),
        ("ok", "a.EOF", "file:///etc/passwd", True, "is outside the folders this source may"),
        ("ok", "a.EOF", "ftp://host/a", False, "cannot be fetched"),
    ],
)
def test_hostile_items_are_refused_before_any_io(world, item_id, key, href, local, reason):
    item = _item("placeholder", {key: (href, b"x")})
    item.id = item_id
    roots = (world["src"],) if local else ()
    (outcome,) = _stager(world).stage([StageTask(item, "s1-aux", "auxip", file_roots=roots)])
    assert outcome.status == "failed" and reason in (outcome.reason or "")
    assert _visible_files(world["root"]) == []
    assert world["log"] == []


def test_selected_asset_missing_and_cdse_product_only(world):
    data = b"p" * 10
    item = _item(
        "CDSE_ITEM",
        {
            "product": (_publish(world, "CDSE_ITEM.SAFE.zip", data), data),
            "thumbnail": ("http://127.0.0.1:1/never", b"t"),
        },
    )
    (staged,) = _stager(world).stage([StageTask(item, "s1-aux", "cdse", asset_keys=("product",))])
    assert staged.status == "staged" and [a.key for a in staged.assets] == ["product"]
    generation = hashlib.md5(data).hexdigest()[:16]  # of the digest the source announces
    assert staged.assets[0].href.endswith(f"CDSE_ITEM/{generation}/CDSE_ITEM.SAFE.zip")
    (missing,) = _stager(world).stage([StageTask(item, "s2-aux", "cdse", asset_keys=("nope",))])
    assert missing.status == "failed" and "nope not in the item; it has product, thumbnail" in (
        missing.reason or ""
    )


def test_html_error_page_is_not_taken_for_the_file(tmp_path):
    def html(h):
        send(h, 200, b"<html><body>Please log in</body></html>", "text/html")

    with serve(html) as (url, _):
        storage = LocalStorage(tmp_path / "storage")
        item = _item("H", {"H.EOF": (f"{url}/H.EOF", b"real bytes")})
        (outcome,) = Stager(LocalCatalog(tmp_path / "cat"), storage, retry=FAST).stage(
            [StageTask(item, "s1-aux", "auxip")]
        )
    assert outcome.status == "failed" and "HTML" in (outcome.reason or "")
    assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []


def _safe_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_unpack_registers_largest_file_and_drops_archive(world):
    data = _safe_zip({"X.SAFE/manifest.safe": b"<m/>", "X.SAFE/data/cal.xml": b"c" * 5000})
    href = _publish(world, "X.SAFE.zip", data)
    task = StageTask(_item("X.SAFE", {"X.SAFE.zip": (href, data)}), "s1-aux", "auxip", unpack=True)
    (outcome,) = _stager(world).stage([task])
    assert outcome.status == "staged"
    (asset,) = outcome.assets
    generation = hashlib.md5(data).hexdigest()[:16]  # of the archive: one folder per version
    assert asset.key == "X.SAFE"
    assert asset.href.endswith(f"X.SAFE/{generation}/X.SAFE/data/cal.xml")
    assert asset.checksum == Checksum("sha256", hashlib.sha256(b"c" * 5000).hexdigest()).multihash()
    item_dir = world["root"] / "storage" / "s1-aux" / "X.SAFE" / generation
    assert sorted(
        p.relative_to(item_dir).as_posix() for p in item_dir.rglob("*") if p.is_file()
    ) == [
        "X.SAFE/data/cal.xml",
        "X.SAFE/manifest.safe",
    ]


def test_unpack_refuses_zip_slip_and_writes_nothing(world):
    data = _safe_zip({"../../evil.txt": b"owned"})
    href = _publish(world, "E.SAFE.zip", data)
    task = StageTask(_item("E.SAFE", {"E.SAFE.zip": (href, data)}), "s1-aux", "auxip", unpack=True)
    (outcome,) = _stager(world).stage([task])
    assert outcome.status == "failed" and "evil.txt" in (outcome.reason or "")
    assert _visible_files(world["root"]) == []
    assert not list(world["root"].rglob("evil.txt"))
    assert world["catalog"].get_items("s1-aux", ["E.SAFE"]) == {}


def test_local_source_file_hrefs_are_read(world):
    data = b"local bytes"
    path = world["src"] / "L.EOF"
    path.write_bytes(data)
    item = _item("L", {"L.EOF": (path.as_uri(), data)})
    task = StageTask(item, "s1-aux", "auxip", file_roots=(world["src"],))
    (outcome,) = _stager(world).stage([task])
    assert outcome.status == "staged" and file_path(outcome.assets[0].href).read_bytes() == data


def test_malformed_file_size_fails_only_that_item(world):
    data = b"x" * 10
    ok = _item("SIZE_OK", {"SIZE_OK.EOF": (_publish(world, "SIZE_OK.EOF", data), data)})
    bad = _item("SIZE_BAD", {"SIZE_BAD.EOF": (_publish(world, "SIZE_BAD.EOF", data), data)})
    bad.assets["SIZE_BAD.EOF"].extra_fields["file:size"] = "n/a"
    outcomes = _stager(world).stage(
        [StageTask(ok, "s1-aux", "auxip"), StageTask(bad, "s1-aux", "auxip")]
    )
    assert [o.status for o in outcomes] == ["staged", "failed"]
    assert "file:size 'n/a'" in (outcomes[1].reason or "")


def _lzma_zip_with_corrupt_member() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_LZMA) as zf:
        zf.writestr("C.SAFE/data.bin", b"payload" * 5000)
    raw = bytearray(buffer.getvalue())
    raw[60:80] = b"\xff" * 20  # inside the compressed member
    return bytes(raw)


def test_a_corrupt_archive_fails_its_item_and_the_others_are_registered(world):
    good = b"good" * 100
    broken = _lzma_zip_with_corrupt_member()
    tasks = [
        StageTask(_item("G", {"G.EOF": (_publish(world, "G.EOF", good), good)}), "s1-aux", "auxip"),
        StageTask(
            _item("C.SAFE", {"C.SAFE.zip": (_publish(world, "C.SAFE.zip", broken), broken)}),
            "s1-aux",
            "auxip",
            unpack=True,
        ),
    ]
    outcomes = _stager(world).stage(tasks)
    assert [o.status for o in outcomes] == ["staged", "failed"]
    assert "C.SAFE.zip" in (outcomes[1].reason or "")
    assert sorted(world["catalog"].get_items("s1-aux", ["G", "C.SAFE"])) == ["G"]
    assert not (world["root"] / "storage" / "s1-aux" / "C.SAFE").exists() or not [
        p for p in (world["root"] / "storage" / "s1-aux" / "C.SAFE").rglob("*") if p.is_file()
    ]


def test_unpacked_members_may_not_overwrite_another_asset(world):
    archive = _safe_zip({"X.EOF": b"from the zip"})
    plain = b"plain file"
    item = _item(
        "COLLIDE",
        {
            "X.EOF": (_publish(world, "X.EOF", plain), plain),
            "X.zip": (_publish(world, "X.zip", archive), archive),
        },
    )
    (outcome,) = _stager(world).stage([StageTask(item, "s1-aux", "auxip", unpack=True)])
    assert outcome.status == "failed" and "would both write 'X.EOF'" in (outcome.reason or "")
    assert _visible_files(world["root"]) == []


def test_two_concurrent_runs_of_the_same_items_never_duplicate_or_corrupt(world):
    import threading

    items = []
    for i in range(12):
        data = bytes([i]) * (50_000 + i)
        name = f"CONC_{i}.EOF"
        items.append(_item(f"CONC_{i}", {name: (_publish(world, name, data), data)}))
    tasks = [StageTask(item, "s1-aux", "auxip") for item in items]
    results: list[list] = []

    def run() -> None:
        stager = Stager(LocalCatalog(world["root"] / "catalog"), world["storage"], retry=FAST)
        results.append(stager.stage(tasks))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for outcomes in results:
        assert {o.status for o in outcomes} <= {"staged", "present"}
    registered = world["catalog"].get_items("s1-aux", [i.id for i in items])
    assert len(registered) == 12
    collection = pystac.Collection.from_file(
        str(world["root"] / "catalog" / "s1-aux" / "collection.json")
    )
    assert len(list(collection.get_items())) == 12  # no duplicate item links
    for item in items:
        (asset,) = registered[item.id].assets.values()
        assert file_path(asset.href).read_bytes() == (world["src"] / f"{item.id}.EOF").read_bytes()
    assert not [p for p in _visible_files(world["root"]) if p.name.endswith(".part")]


def _leftover(path: Path, age_s: float) -> Path:
    """A file or unpack folder at ``path`` last written ``age_s`` ago."""
    if ".work" in path.name:
        (path / "X.SAFE").mkdir(parents=True)
        (path / "X.SAFE" / "manifest.safe").write_text("m")
    else:
        path.write_bytes(b"half")
    when = time.time() - age_s
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))
    return path


def _unpacking(work: Path) -> Path:
    """The folder an archive is unpacked into beside the ``.work`` folder ``work``."""
    return work.with_name(extract_temp_name(work.name))


def test_stage_sweeps_dead_leftovers_of_killed_runs_in_the_items_it_stages(world):
    data = b"kept" * 100
    tasks = [
        StageTask(
            _item(i, {f"{i}.EOF": (_publish(world, f"{i}.EOF", data), data)}), "s1-aux", "auxip"
        )
        for i in ("DONE", "NEW")
    ]
    _stager(world).stage(tasks[:1])
    storage = world["storage"]
    day = 24 * 3600
    dead = [  # what killed runs left, over a day ago, in both item folders
        _leftover(storage.part_path("s1-aux/DONE/DONE.EOF"), day + 60),
        _leftover(storage.part_path("s1-aux/NEW/NEW.EOF"), day + 60),
        _leftover(storage.scratch_dir("s1-aux/NEW/NEW.SAFE.zip"), day + 60),
    ]
    live = _leftover(storage.part_path("s1-aux/NEW/NEW.EOF"), 30)  # another run writes it
    elsewhere = _leftover(storage.part_path("s1-aux/OTHER/OTHER.EOF"), day + 60)
    (world["root"] / "storage" / ".aux-swept").touch()  # the whole storage was swept just now
    stager = _stager(world)
    outcomes = stager.stage(tasks)
    assert [o.status for o in outcomes] == ["present", "staged"]
    assert stager.swept == 3
    assert not any(p.exists() for p in dead)
    assert live.exists() and elsewhere.exists()  # young, or not in an item being staged
    for outcome in outcomes:
        assert file_path(outcome.assets[0].href).read_bytes() == data  # final files kept
    again = _stager(world)
    again.stage(tasks)
    assert again.swept == 0


def test_stage_sweeps_dead_leftovers_everywhere_in_the_storage_once_an_hour(world):
    data = b"kept" * 100
    task = StageTask(
        _item("NEW", {"NEW.EOF": (_publish(world, "NEW.EOF", data), data)}), "s1-aux", "auxip"
    )
    storage = world["storage"]
    day = 24 * 3600
    dead = [  # left by killed runs in folders no run stages again
        _leftover(storage.part_path("s1-aux/OLD/OLD.EOF"), day + 60),
        _leftover(storage.scratch_dir("s2-aux/GONE/GONE.SAFE.zip"), day + 60),
        _leftover(_unpacking(storage.scratch_dir("s2-aux/GONE/GONE.SAFE.zip")), day + 60),
    ]
    young = _leftover(storage.part_path("s1-aux/OLD/OLD.EOF"), 30)
    # a committed file named like a leftover, in a generation folder: never swept
    committed = _leftover(storage.part_path("s1-aux/OLD/0123456789abcdef/x.EOF"), day + 60)
    marker = world["root"] / "storage" / ".aux-swept"
    stager = _stager(world)
    assert stager.stage([task])[0].status == "staged"
    assert stager.swept == 3 and not any(p.exists() for p in dead)
    assert young.exists() and committed.exists()
    assert time.time() - marker.stat().st_mtime < 60
    later = _leftover(storage.part_path("s1-aux/OLD/OLD.EOF"), day + 60)
    again = _stager(world)
    again.stage([task])
    assert again.swept == 0 and later.exists()  # within the hour: only the staged folders
    when = time.time() - 3601
    os.utime(marker, (when, when))
    third = _stager(world)
    third.stage([task])
    assert third.swept == 1 and not later.exists()


@pytest.mark.parametrize(
    ("key", "href", "name"),
    [
        ("AUX_POEORB.EOF", "https://h/Products(1)/$value", "AUX_POEORB.EOF"),
        ("product", "https://h/x/S1A_AUX_CAL.SAFE.zip", "S1A_AUX_CAL.SAFE.zip"),
        ("product", "https://h/Products(1)/$value", "product"),
        # rs-server PRIP drops '.zip' from the key of a zipped SAFE product
        ("S1A_IW_RAW__0NDV_X.SAFE", "https://h/Products(1)/$value", "S1A_IW_RAW__0NDV_X.SAFE.zip"),
    ],
)
def test_an_asset_is_stored_under_a_file_name(key: str, href: str, name: str) -> None:
    assert asset_filename(key, pystac.Asset(href)) == name


class _Unreadable(LocalStorage):
    """Storage whose credentials cannot look into the files a catalog moved away."""

    def exists(self, href: str) -> bool:
        raise StorageError(f"cannot check {href}: access denied")


class _Relocating(LocalCatalog):
    relocates = True


@pytest.mark.parametrize("relocates", [True, False])
def test_a_catalog_that_moves_files_vouches_for_them_when_we_cannot_look(world, relocates):
    """With rs-server-catalog, the registered files sit in its bucket: if our credentials may
    not read it, the items stay present (the catalog vouches); elsewhere it is an error."""
    name = "S1A_OPER_AUX_POEORB_0.EOF"
    data = b"<Earth_Explorer_File/>" * 50
    task = StageTask(
        _item("S1A_OPER_AUX_POEORB_0", {name: (_publish(world, name, data), data)}),
        "s1-aux",
        "auxip",
    )
    catalog = (_Relocating if relocates else LocalCatalog)(world["root"] / "catalog")
    assert [o.status for o in Stager(catalog, world["storage"], retry=FAST).stage([task])] == [
        "staged"
    ]
    blind = Stager(catalog, _Unreadable(world["root"] / "storage"), retry=FAST)
    (again,) = blind.stage([task])
    if relocates:
        assert again.status == "present" and _file_gets(world) == 1
    else:
        assert again.status == "failed" and "access denied" in (again.reason or "")


def test_the_longest_names_accepted_fit_every_temporary_name(world):
    """An id and an archive's file name of 255 - TEMP_NAME_BYTES bytes: the ``.part`` file, the
    ``.work`` folder, the folder it is unpacked into and the catalog's temporary item file all
    fit the file system's 255 bytes; one byte more is refused before any transfer."""
    longest = 255 - TEMP_NAME_BYTES
    data = _safe_zip({"m.xml": b"<m/>"})
    href = _publish(world, "A.zip", data)
    name = "A" * (longest - len(".zip")) + ".zip"
    task = StageTask(_item("I" * longest, {name: (href, data)}), "s1-aux", "auxip", unpack=True)
    (outcome,) = _stager(world).stage([task])
    assert outcome.status == "staged", outcome
    longer = StageTask(_item("J" * (longest + 1), {"A.zip": (href, data)}), "s1-aux", "auxip")
    (refused,) = _stager(world).stage([longer])
    assert refused.status == "failed" and f"is {longest + 1} bytes long" in (refused.reason or "")
    assert _file_gets(world) == 1
