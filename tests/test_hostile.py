"""Abuse suite (issue 5): hostile input is refused with a clear error and writes nothing outside
the storage root.

One table, :data:`CASES`. Each case builds its input, runs it through the real code (the Stager
over HTTP for items and archives, the filter parser and the static-catalog search for CQL2),
and returns the message it got. The test then checks the message, that no file was stored and
no item registered, and that the tree around the storage and catalog roots (the test's whole
tmp folder, with a folder ``outside`` that slips aim at) is byte-for-byte unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest

from aux_assets.auth import StaticAuth
from aux_assets.catalog.static import LocalCatalog
from aux_assets.filters import FilterError, parse_filter, window_filter
from aux_assets.sources.base import SearchRequest
from aux_assets.sources.static import LocalStacSource
from aux_assets.staging.items import TEMP_NAME_BYTES
from aux_assets.staging.stager import ItemOutcome, Stager, StageTask
from aux_assets.storage.local import LocalStorage
from aux_assets.utils.retry import RetryPolicy
from tests.helpers.archives import make_tar, make_zip, tar_file, tar_of, tar_special, zip_special
from tests.helpers.fault_day import visible_files
from tests.helpers.fault_server import FaultServer

FAST = RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.01)
PASSWORD = "pa55-w0rd-in-href"
SLIP = "../../../../../outside/evil.txt"  # from the extraction folder up to tmp_path/outside


@dataclass
class World:
    """A source (bearer token), another origin (its own tokens), a public origin, storage."""

    tmp: Path
    source: FaultServer
    other: FaultServer
    public: FaultServer
    token: str

    @property
    def input(self) -> Path:
        """What the cases build and the servers serve."""
        return self.tmp / "input"

    @property
    def storage(self) -> Path:
        return self.tmp / "root" / "storage"

    @property
    def catalog(self) -> Path:
        return self.tmp / "root" / "catalog"

    @property
    def auth(self) -> StaticAuth:
        return StaticAuth(self.source.base, api_key="source-api-key", token=self.token)

    def publish(self, name: str, data: bytes) -> str:
        (self.input / name).write_bytes(data)
        return self.source.url(name)

    def stager(self) -> Stager:
        return Stager(LocalCatalog(self.catalog), LocalStorage(self.storage), retry=FAST)

    def stage(
        self,
        item_id: str,
        assets: dict[str, tuple[str, bytes]],
        *,
        unpack: bool = False,
        local: bool = False,
        collection: str = "s1-aux",
    ) -> ItemOutcome:
        roots = (self.input,) if local else ()
        task = StageTask(
            item(item_id, assets), collection, "auxip", roots, self.auth, unpack=unpack
        )
        (outcome,) = self.stager().stage([task])
        return outcome

    def stage_items(self, *items: pystac.Item) -> list[ItemOutcome]:
        """Stage ``items`` into s1-aux in one run."""
        tasks = [StageTask(i, "s1-aux", "auxip", (), self.auth) for i in items]
        return self.stager().stage(tasks)

    def one_asset(self, item_id: str, name: str, key: str = "") -> pystac.Item:
        """An item whose one asset (key ``key``, default ``name``) is ``name``, published."""
        data = f"bytes of {name}".encode()
        return item(item_id, {key or name: (self.publish(name, data), data)})

    def stage_archive(self, name: str, data: bytes) -> str:
        """Stage one archive with ``unpack``; the reason it was refused."""
        outcome = self.stage("ARCHIVE", {name: (self.publish(name, data), data)}, unpack=True)
        assert outcome.status == "failed", outcome
        return outcome.reason or ""

    def refused(
        self,
        item_id: str,
        key: str = "A.EOF",
        href: str = "",
        local: bool = False,
        collection: str = "s1-aux",
    ) -> str:
        data = b"payload"
        assets = {key: (href or self.publish("A.EOF", data), data)}
        outcome = self.stage(item_id, assets, local=local, collection=collection)
        assert outcome.status == "failed", outcome
        return outcome.reason or ""


def item(item_id: str, assets: dict[str, tuple[str, bytes]]) -> pystac.Item:
    """An AUXIP-like item; ``assets`` maps key -> (href, bytes) with size and md5."""
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": item_id,
            "geometry": None,
            "properties": {"datetime": "2026-01-05T00:00:00Z", "product:type": "AUX_POEORB"},
            "assets": {
                key: {
                    "href": href,
                    "type": "application/octet-stream",
                    "file:size": len(data),
                    "file:checksum": hashlib.md5(data).hexdigest(),
                }
                for key, (href, data) in assets.items()
            },
            "links": [],
        }
    )


def snapshot(tmp: Path, skip: tuple[Path, ...]) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``tmp`` outside ``skip``: kind, size, modification time."""
    out: dict[str, tuple[str, int, int]] = {}
    for folder, dirs, files in os.walk(tmp):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if stat.S_ISDIR(st.st_mode) else "file"
            out[path.relative_to(tmp).as_posix()] = (kind, st.st_size, st.st_mtime_ns)
    return out


# --- archive builders (the members are built with tests.helpers.archives) ---------------------


def zip_bytes(w: World, members: dict[str, bytes]) -> bytes:
    return make_zip(w.input / "build.zip", members).read_bytes()


def tar_bytes(w: World, members: list[tuple[tarfile.TarInfo, bytes]], gz: bool = False) -> bytes:
    return make_tar(w.input / "build.tar", members, "w:gz" if gz else "w").read_bytes()


def zip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("zeros.bin", bytes(size))
    return buffer.getvalue()


def lying_zip_bomb(size: int, declared: int) -> bytes:
    """A zip bomb whose headers understate the member's size (local and central)."""
    raw = bytearray(zip_bomb(size))
    local, central = 0, raw.rindex(b"PK\x01\x02")
    assert raw[local : local + 4] == b"PK\x03\x04"
    raw[local + 22 : local + 26] = declared.to_bytes(4, "little")
    raw[central + 24 : central + 28] = declared.to_bytes(4, "little")
    return bytes(raw)


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``run`` returns the message the input got; ``expect`` must be in it."""

    run: Callable[[World], str]
    expect: str


def _slip_nested(w: World) -> str:
    inner = tar_of(w.input / "inner.tgz", {SLIP: b"owned"}, "w:gz").read_bytes()
    return w.stage_archive("N.tar", tar_bytes(w, [tar_file("d/inner.tgz", inner)]))


def _other_host(w: World) -> str:
    """An href on another origin: the source's credentials are not sent there."""
    reason = w.refused("OTHER", href=w.other.url("A.EOF"))
    assert [h.headers.get("authorization") for h in w.other.state.log] == [None]
    assert [h.headers.get("x-api-key") for h in w.other.state.log] == [None]
    return reason


def _userinfo(w: World) -> str:
    """An href with user:password@ to another origin: the password is never sent or shown."""
    href = w.other.url("A.EOF").replace("http://", f"http://alice:{PASSWORD}@")
    reason = w.refused("USERINFO", href=href)
    assert [h.headers.get("authorization") for h in w.other.state.log] == [None]
    assert PASSWORD not in reason
    return reason


def _redirect_other(w: World) -> str:
    """A redirect to another origin is followed without the credentials; the bytes verify."""
    data = b"redirected bytes" * 100
    (w.input / "R.EOF").write_bytes(data)
    w.source.redirects["/files/R.EOF"] = w.public.url("R.EOF")
    outcome = w.stage("REDIRECT", {"R.EOF": (w.source.url("R.EOF"), data)})
    assert outcome.status == "staged", outcome
    assert w.source.state.log[-1].headers["authorization"] == f"Bearer {w.token}"
    (hit,) = w.public.state.log
    assert "authorization" not in hit.headers and "x-api-key" not in hit.headers
    stored = visible_files(w.storage)
    (key,) = stored
    assert key.startswith("s1-aux/REDIRECT/") and key.endswith("/R.EOF")
    assert stored[key].read_bytes() == data
    return "staged; credentials dropped at the redirect"


def _redirect_file(w: World) -> str:
    w.source.redirects["/files/F.EOF"] = "file:///etc/passwd"
    return w.refused("REDIRECT_FILE", href=w.source.url("F.EOF"))


SAMPLE_ITEMS = [("S1A_POEORB_1", "AUX_POEORB"), ("S1A_RESORB_1", "AUX_RESORB")]


def _search(w: World, cql: dict[str, object]) -> int:
    """How many items of a small static collection ``cql`` matches."""
    folder = w.input / "stac"
    if not folder.exists():
        folder.mkdir()
        features: list[dict[str, object]] = [
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "id": item_id,
                "geometry": None,
                "properties": {
                    "datetime": None,
                    "start_datetime": "2026-01-04T00:00:00Z",
                    "end_datetime": "2026-01-07T00:00:00Z",
                    "product:type": ptype,
                },
                "assets": {},
                "links": [],
            }
            for item_id, ptype in SAMPLE_ITEMS
        ]
        doc = {"type": "FeatureCollection", "features": features}
        (folder / "items.json").write_text(json.dumps(doc))
    return len(LocalStacSource("auxip", folder).search(SearchRequest(filter=cql)))


def _cql_quoted_literal(w: World) -> str:
    """Quotes inside a literal stay in the literal: no ``OR`` is injected."""
    assert _search(w, parse_filter("\"product:type\" = 'AUX_POEORB'")) == 1
    text = "\"product:type\" = 'AUX_POEORB'' OR ''1''=''1'"
    cql = parse_filter(text)
    assert cql == {"op": "=", "args": [{"property": "product:type"}, "AUX_POEORB' OR '1'='1"]}
    assert _search(w, cql) == 0
    return f"one literal: {cql['args']}"


def _cql_product_type_with_quote(w: World) -> str:
    """A product type with a quote becomes a JSON value of the filter we build, never text."""
    evil = "AUX_POEORB' OR 'a'='a"
    start, end = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 6, tzinfo=UTC)
    cql = window_filter(evil, start, end, "cover")
    assert cql["args"][0] == {"op": "=", "args": [{"property": "product:type"}, evil]}
    assert _search(w, cql) == 0
    assert _search(w, window_filter("AUX_POEORB", start, end, "cover")) == 1
    return f"one literal: {cql['args'][0]['args']}"


def _lookalike_keys(w: World) -> str:
    """Two asset keys of one item that are the same after NFC normalisation."""
    data = b"payload"
    href = w.publish("A.EOF", data)
    outcome = w.stage("KEYS", {"\u00c9.EOF": (href, data), "E\u0301.EOF": (href, data)})
    assert outcome.status == "failed", outcome
    return outcome.reason or ""


LONG_NAME = (
    f"at most 255 bytes and temporary names made from it add {TEMP_NAME_BYTES} bytes: "
    f"shorten it to {255 - TEMP_NAME_BYTES} bytes or less"
)


def _cql_refused(text: str) -> Callable[[World], str]:
    def run(w: World) -> str:
        with pytest.raises(FilterError) as err:
            parse_filter(text, "config filter")
        return str(err.value)

    return run


CASES: list[object] = [
    # archives, unpacked after the download verified
    pytest.param(
        Case(lambda w: w.stage_archive("Z.zip", zip_bytes(w, {SLIP: b"x"})), SLIP),
        id="zip-slip",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive("T.tar", tar_bytes(w, [tar_file(SLIP, b"x")])),
            "relative path component",
        ),
        id="tar-slip",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "T.tgz", tar_bytes(w, [tar_file("a/" + SLIP, b"x")], gz=True)
            ),
            "relative path component",
        ),
        id="tgz-slip-after-a-folder",
    ),
    pytest.param(Case(_slip_nested, "'N.tar > d/inner.tgz', member"), id="slip-in-nested-tgz"),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "A.zip", zip_bytes(w, {str(w.tmp / "outside" / "abs.txt"): b"x"})
            ),
            "absolute path",
        ),
        id="zip-absolute-member",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "A.tar", tar_bytes(w, [tar_file(str(w.tmp / "outside" / "abs.txt"), b"x")])
            ),
            "absolute path",
        ),
        id="tar-absolute-member",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "L.tar",
                tar_bytes(
                    w,
                    [
                        tar_special("out", tarfile.SYMTYPE, str(w.tmp / "outside")),
                        tar_file("out/evil.txt", b"x"),
                    ],
                ),
            ),
            "is a symbolic link",
        ),
        id="tar-symlink-then-write-through-it",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "L.zip", zip_special(w.input / "l.zip", stat.S_IFLNK).read_bytes()
            ),
            "is a symbolic link",
        ),
        id="zip-symlink",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "H.tar",
                tar_bytes(w, [tar_special("passwd", tarfile.LNKTYPE, "/etc/passwd")]),
            ),
            "is a hard link",
        ),
        id="tar-hardlink",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "D.tar", tar_bytes(w, [tar_special("null", tarfile.CHRTYPE)])
            ),
            "character device",
        ),
        id="tar-char-device",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive("B.tar", tar_bytes(w, [tar_special("sda", tarfile.BLKTYPE)])),
            "block device",
        ),
        id="tar-block-device",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "P.tar", tar_bytes(w, [tar_special("pipe", tarfile.FIFOTYPE)])
            ),
            "FIFO",
        ),
        id="tar-fifo",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive(
                "D.zip", zip_special(w.input / "d.zip", stat.S_IFCHR).read_bytes()
            ),
            "only files and dirs",
        ),
        id="zip-char-device",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive("BOMB.zip", zip_bomb(20 * 1024**2)),
            "possible archive bomb",
        ),
        id="zip-bomb",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive("LIAR.zip", lying_zip_bomb(20 * 1024**2, 1000)),
            "cannot read zip archive",
        ),
        id="zip-bomb-with-understated-sizes",
    ),
    pytest.param(
        Case(
            lambda w: w.stage_archive("BOMB.EOF.gz", gzip.compress(bytes(8 * 1024**2))),
            "possible archive bomb",
        ),
        id="gz-bomb",
    ),
    # names that become paths
    pytest.param(
        Case(lambda w: w.refused("../../outside/x"), "relative path component"), id="id-dotdot"
    ),
    pytest.param(Case(lambda w: w.refused(".."), "relative path component"), id="id-is-dotdot"),
    pytest.param(
        Case(lambda w: w.refused(str(w.tmp / "outside" / "x")), "path separator"),
        id="id-absolute",
    ),
    pytest.param(Case(lambda w: w.refused("A\x00B"), "control character"), id="id-nul"),
    pytest.param(Case(lambda w: w.refused("A\x1b[2JB"), "control character"), id="id-escape"),
    pytest.param(
        Case(lambda w: w.refused("A\r\nX-Injected: 1"), "control character"), id="id-crlf"
    ),
    pytest.param(
        Case(lambda w: w.refused("KEY", key="../../../outside/x.EOF"), "relative path component"),
        id="key-dotdot",
    ),
    pytest.param(
        Case(lambda w: w.refused("KEY", key=str(w.tmp / "outside" / "x.EOF")), "path separator"),
        id="key-absolute",
    ),
    pytest.param(
        Case(lambda w: w.refused("KEY", key="x\x00.EOF"), "control character"), id="key-nul"
    ),
    pytest.param(
        Case(lambda w: w.refused("KEY", key="x\n.EOF"), "control character"), id="key-newline"
    ),
    pytest.param(
        Case(lambda w: w.refused("COLL", collection="../outside"), "collection id '../outside'"),
        id="collection-dotdot",
    ),
    pytest.param(
        Case(lambda w: w.refused("S1A_\u202eFOE.EOF"), "U+202E RIGHT-TO-LEFT OVERRIDE"),
        id="id-right-to-left-override",
    ),
    pytest.param(
        Case(lambda w: w.refused("S1A_\u200bAUX"), "item id 'S1A_\\u200bAUX' contains U+200B"),
        id="id-zero-width-space",
    ),
    pytest.param(
        Case(
            lambda w: w.refused("KEY", key="A_\u202eFOE.EOF"),
            "asset key 'A_\\u202eFOE.EOF' contains U+202E RIGHT-TO-LEFT OVERRIDE",
        ),
        id="key-right-to-left-override",
    ),
    pytest.param(
        Case(lambda w: w.refused("KEY", key="A\u200b.EOF"), "U+200B ZERO WIDTH SPACE"),
        id="key-zero-width-space",
    ),
    pytest.param(
        Case(lambda w: w.refused("É" * 130), "is 260 bytes long in UTF-8 (130 characters)"),
        id="id-multibyte-255-characters-but-over-255-bytes",
    ),
    pytest.param(
        Case(
            lambda w: w.refused("KEY", key="K" * 245 + ".EOF"),
            f"is 249 bytes long in UTF-8 (249 characters); file names may have {LONG_NAME}",
        ),
        id="key-249-characters",
    ),
    pytest.param(
        Case(
            _lookalike_keys,
            "asset key 'E<U+0301>.EOF' is '<U+00C9>.EOF' spelled with other code points: the "
            "two are the same after NFC normalisation; an item may not have both",
        ),
        id="keys-that-look-alike",
    ),
    # hrefs, hosts and credentials
    pytest.param(
        Case(
            lambda w: w.refused("FILE", href=(w.tmp / "outside" / "secret.txt").as_uri()),
            "only local sources may point at local files",
        ),
        id="file-href-from-remote-source",
    ),
    pytest.param(
        Case(
            lambda w: w.refused("FILEHOST", href="file://evil.example/etc/passwd", local=True),
            "names host 'evil.example'; use file:///absolute/path",
        ),
        id="file-href-naming-a-host",
    ),
    pytest.param(Case(_other_host, "HTTP 401 Unauthorized"), id="other-host-no-credentials"),
    pytest.param(Case(_userinfo, "HTTP 401 Unauthorized"), id="href-with-user-password"),
    pytest.param(Case(_redirect_other, "credentials dropped"), id="redirect-to-other-host"),
    pytest.param(Case(_redirect_file, "only http(s) is followed"), id="redirect-to-file"),
    # CQL2
    pytest.param(Case(_cql_quoted_literal, "one literal"), id="cql2-quotes-in-literal"),
    pytest.param(
        Case(_cql_product_type_with_quote, "one literal"), id="cql2-quote-in-product-type"
    ),
    pytest.param(
        Case(_cql_refused("product:type = 'AUX' OR 'a"), "config filter is not valid CQL2"),
        id="cql2-unbalanced-quote",
    ),
    pytest.param(
        Case(_cql_refused("id = 'x'; DROP TABLE items; --'"), "config filter is not valid CQL2"),
        id="cql2-statement-after-quote",
    ),
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    for folder in ("input", "outside", "root/storage", "root/catalog"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "outside" / "secret.txt").write_bytes(b"not for staging")
    served = tmp_path / "input"
    with (
        FaultServer(served, rate=0.0, require_token=True) as source,
        FaultServer(served, rate=0.0, require_token=True) as other,
        FaultServer(served, rate=0.0) as public,
    ):
        yield World(tmp_path, source, other, public, source.issue_token())


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_refused_and_nothing_is_written_outside_the_storage_root(
    world: World, case: Case
) -> None:
    keep = (world.storage, world.catalog, world.input)
    before = snapshot(world.tmp, keep)
    message = case.run(world)
    assert case.expect in message, message
    assert snapshot(world.tmp, keep) == before  # nothing written outside storage and catalog
    if "staged" not in message:  # refused: no file stored (not even a hidden one), no item
        stored = [p for p in world.storage.rglob("*") if p.is_file()]
        assert [p for p in stored if p.name != ".aux-swept"] == []  # the time of the last sweep
        assert list(world.catalog.glob("*/*/*.json")) == []


def test_the_case_table_counts() -> None:
    """docs/reliability.md quotes this number."""
    assert len(CASES) == 44


def test_a_password_in_a_source_href_is_not_written_to_the_catalog(world: World) -> None:
    data = b"public bytes" * 10
    (world.input / "P.EOF").write_bytes(data)
    href = world.public.url("P.EOF").replace("http://", f"http://alice:{PASSWORD}@")
    outcome = world.stage("PUBLIC", {"P.EOF": (href, data)})
    assert outcome.status == "staged", outcome  # the public host needs no credentials
    (hit,) = world.public.state.log
    assert "authorization" not in hit.headers  # the password was not sent
    written = [p.read_text() for p in world.catalog.rglob("*.json")]
    leaks = [text for text in [*written, json.dumps(outcome.to_json())] if PASSWORD in text]
    assert not leaks, f"{len(leaks)} documents hold the password"


def test_an_over_long_id_fails_alone_and_its_neighbour_is_registered(world: World) -> None:
    """A 240-character id passes 255 but not its catalog file's temporary name: it is refused
    before any transfer; the item next to it in the collection is staged and registered."""
    long_id = "S1A_" + "X" * 236
    outcomes = world.stage_items(
        world.one_asset(long_id, "LONG.EOF"), world.one_asset("S1A_OK", "OK.EOF")
    )
    assert [o.status for o in outcomes] == ["failed", "staged"], outcomes
    assert "item id 'S1A_XXX" in (outcomes[0].reason or "")
    assert f"is 240 bytes long in UTF-8 (240 characters); file names may have {LONG_NAME}" in (
        outcomes[0].reason or ""
    )
    assert [p.name for p in (world.storage / "s1-aux").iterdir()] == ["S1A_OK"]
    assert [h.path for h in world.source.state.log] == ["/files/OK.EOF"]  # LONG.EOF not asked
    found = LocalCatalog(world.catalog).get_items("s1-aux", ["S1A_OK"])
    assert list(found) == ["S1A_OK"]


def test_look_alike_ids_become_one_item_under_the_nfc_id(world: World) -> None:
    """A decomposed É then a composed one: the first is staged under the NFC id (its asset key
    and file name too), the second is refused; a later run finds the item present."""
    composed, decomposed = "S1A_\u00c9TAT", "S1A_E\u0301TAT"
    first = world.one_asset(decomposed, "E\u0301.EOF")
    outcomes = world.stage_items(first, world.one_asset(composed, "OTHER.EOF"))
    assert [(o.item_id, o.status) for o in outcomes] == [
        (composed, "staged"),  # the NFC id of the decomposed spelling
        (composed, "failed"),  # spelled so
    ], outcomes
    assert outcomes[1].reason == (
        "item id 'S1A_<U+00C9>TAT' is 'S1A_E<U+0301>TAT' spelled with other code points: the "
        "two are the same after NFC normalisation; only the first spelling of this run is staged"
    )
    (registered,) = LocalCatalog(world.catalog).get_items("s1-aux", [composed]).values()
    assert registered.id == composed and list(registered.assets) == ["\u00c9.EOF"]
    assert registered.assets["\u00c9.EOF"].href.endswith("/%C3%89.EOF")
    assert [p.name for p in (world.storage / "s1-aux").iterdir()] == [composed]
    assert [p.name for p in (world.catalog / "s1-aux").iterdir() if p.is_dir()] == [composed]
    (again,) = world.stage_items(world.one_asset(decomposed, "E\u0301.EOF"))
    assert (again.item_id, again.status) == (composed, "present")


def test_an_id_the_catalog_holds_in_another_spelling_is_refused(world: World) -> None:
    """The catalog has an item registered under a decomposed id (by a version before NFC, or
    another tool): the same id from the source is refused before any transfer, not registered
    again as a look-alike under its NFC spelling."""
    composed, decomposed = "S1A_\u00c9TAT", "S1A_E\u0301TAT"
    catalog = LocalCatalog(world.catalog)
    catalog.ensure_collection("s1-aux")
    catalog.upsert("s1-aux", [world.one_asset(decomposed, "OLD.EOF")])
    (outcome,) = world.stage_items(world.one_asset(decomposed, "NEW.EOF"))
    assert (outcome.item_id, outcome.status) == (composed, "failed"), outcome
    assert (outcome.reason or "").startswith(
        "item id 'S1A_<U+00C9>TAT' is 'S1A_E<U+0301>TAT' spelled with other code points: the two "
        "are the same after NFC normalisation; the catalog has 'S1A_E<U+0301>TAT'"
    )
    assert list(catalog.get_items("s1-aux", [composed, decomposed])) == [decomposed]
    assert not (world.storage / "s1-aux").exists() and world.source.state.log == []
