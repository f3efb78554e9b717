"""File bodies: Earth Explorer XML, SAFE and SEN3 zips, S2 tarballs, sized to a byte target.

Archive members carry the generation time as mtime and gzip streams a fixed mtime, so the bytes
depend only on the product, the target size and the seed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta

from aux_assets.sample.orbits import ORBITS
from aux_assets.sample.rules import DAY, EPOCH, Product, Seeds

_TAI_UTC = timedelta(seconds=37)
_UT1_UTC = timedelta(microseconds=47_391)
_RECORD_BYTES = {"List_of_OSVs": 501, "List_of_Error_Matrices": 488}  # mean record sizes
_MATRIX = tuple(f"M{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3))
_VALUE_ROW = b"    <v>+0.000000000e-00</v>\n"
_VALUE_DIGITS = (8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 22)  # digit columns of _VALUE_ROW
_DECIMAL = bytes(b"0123456789"[i % 10] for i in range(256))  # byte -> ASCII digit
_NETCDF4 = b"\x89HDF\r\n\x1a\n"  # file signatures
_GRIB = b"GRIB"
_GRIB_TYPES = {"AUX_ECMWFD", "AUX_CAMSFO"}
_NC_SAFE_TYPES = {"AUX_WND", "AUX_WAV", "AUX_ICE"}

Build = Callable[[int], bytes]


def render(product: Product, target: int, seeds: Seeds) -> bytes:
    """The bytes of ``product``, as large as the format allows without exceeding ``target``."""
    build = _BUILDERS[product.rule.ext]
    # a plain tar grows by whole records, so it cannot get closer than that to the target
    slack = tarfile.RECORDSIZE if product.rule.ext == ".tar" else 0
    return fit(lambda n: build(product, n, seeds), target, slack)


def fit(build: Build, target: int, slack: int = 0) -> bytes:
    """The largest ``build(n)`` found within ``target`` bytes (``build(0)`` if none fits).

    ``build`` grows with its payload budget ``n``; secant steps look for a size within
    ``target // 64 + slack`` bytes below the target.
    """
    best = build(0)
    tolerance = max(512, target // 64) + slack
    goal = target - tolerance // 2
    n0, s0 = 0, len(best)
    n = goal - s0
    for _ in range(8):
        if n <= 0:
            break
        data = build(n)
        size = len(data)
        if size <= target and size > len(best):
            best = data
        if target - tolerance <= size <= target:
            break
        slope = (size - s0) / (n - n0) if size != s0 and n != n0 else 1.0
        n0, s0 = n, size
        n += round((goal - size) / max(slope, 1e-3))
    return best


def _iso(t: datetime, fraction: bool = False) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f" if fraction else "%Y-%m-%dT%H:%M:%S")


def _mission(p: Product) -> str:
    return f"Sentinel-{p.platform[1]}{p.unit or ''}"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _noise(seeds: Seeds, p: Product, n: int, magic: bytes = b"") -> bytes:
    """``n`` pseudo-random bytes starting with a format signature."""
    return (magic + seeds.rng("bytes", p.name).randbytes(n))[:n]


def _values(seeds: Seeds, p: Product, root: str, n: int) -> bytes:
    """An XML table of about ``n`` bytes of pseudo-random values."""
    count = n // len(_VALUE_ROW)
    rows = bytearray(_VALUE_ROW * count)
    digits = seeds.rng("values", p.name).randbytes(len(_VALUE_DIGITS) * count).translate(_DECIMAL)
    for i, pos in enumerate(_VALUE_DIGITS):  # fill each digit column in one slice assignment
        rows[pos :: len(_VALUE_ROW)] = digits[i * count : (i + 1) * count]
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>\n'
        f"  <productType>{p.rule.product_type}</productType>\n"
        f'  <values count="{count}">\n'
    )
    return head.encode() + rows + f"  </values>\n</{root}>\n".encode()


def _fixed_header(p: Product, indent: str) -> str:
    w, rule = p.dates, p.rule
    lines = [
        "<Fixed_Header>",
        f"  <File_Name>{p.stem}</File_Name>",
        f"  <File_Description>{rule.description}</File_Description>",
        "  <Notes></Notes>",
        f"  <Mission>{_mission(p)}</Mission>",
        "  <File_Class>OPER</File_Class>",
        f"  <File_Type>{rule.product_type}</File_Type>",
        "  <Validity_Period>",
        f"    <Validity_Start>UTC={_iso(w.start)}</Validity_Start>",
        f"    <Validity_Stop>UTC={_iso(w.stop)}</Validity_Stop>",
        "  </Validity_Period>",
        f"  <File_Version>{w.fields.get('ver') or '0001'}</File_Version>",
        "  <Source>",
        f"    <System>{rule.facility}</System>",
        f"    <Creator>{rule.facility}</Creator>",
        "    <Creator_Version>3.1</Creator_Version>",
        f"    <Creation_Date>UTC={_iso(w.generation)}</Creation_Date>",
        "  </Source>",
        "</Fixed_Header>",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


def _record_span(start: datetime, stop: datetime) -> tuple[datetime, datetime]:
    """Monitoring files hold their last day; open-ended ones one repeat cycle."""
    if start == EPOCH:
        return stop - DAY, stop
    return start, min(stop, start + timedelta(days=12))


def _osv(p: Product, t: datetime) -> str:
    orbit = ORBITS[p.platform]
    x, y, z, vx, vy, vz = orbit.state(t)
    return (
        "      <OSV>\n"
        f"        <TAI>TAI={_iso(t + _TAI_UTC, True)}</TAI>\n"
        f"        <UTC>UTC={_iso(t, True)}</UTC>\n"
        f"        <UT1>UT1={_iso(t + _UT1_UTC, True)}</UT1>\n"
        f"        <Absolute_Orbit>{orbit.absolute_orbit(t):+d}</Absolute_Orbit>\n"
        f'        <X unit="m">{x:+.6f}</X>\n'
        f'        <Y unit="m">{y:+.6f}</Y>\n'
        f'        <Z unit="m">{z:+.6f}</Z>\n'
        f'        <VX unit="m/s">{vx:+.6f}</VX>\n'
        f'        <VY unit="m/s">{vy:+.6f}</VY>\n'
        f'        <VZ unit="m/s">{vz:+.6f}</VZ>\n'
        "        <Quality>NOMINAL</Quality>\n"
        "      </OSV>\n"
    )


def _error_matrix(t: datetime, r: random.Random) -> str:
    cells = "".join(f"        <{m}>{r.uniform(-1e-3, 1e-3):+.12e}</{m}>\n" for m in _MATRIX)
    utc = f"        <UTC>UTC={_iso(t, True)}</UTC>\n"
    return f"      <Error_Matrix>\n{utc}{cells}      </Error_Matrix>\n"


def _eof_text(p: Product, n: int, seeds: Seeds) -> bytes:
    """An Earth Explorer File: header, then about ``n`` bytes of records spanning the validity."""
    errmat = p.rule.product_type == "AMH_ERRMAT"
    tag = "List_of_Error_Matrices" if errmat else "List_of_OSVs"
    count = n // _RECORD_BYTES[tag]
    t0, t1 = _record_span(p.dates.start, p.dates.stop)
    step = timedelta(seconds=max(1, int((t1 - t0).total_seconds()) // max(count - 1, 1)))
    times = [t0 + i * step for i in range(count)]
    if errmat:
        r = seeds.rng("values", p.name)
        records = "".join(_error_matrix(t, r) for t in times)
    else:
        records = "".join(_osv(p, t) for t in times)
    return (
        '<?xml version="1.0" ?>\n<Earth_Explorer_File>\n  <Earth_Explorer_Header>\n'
        + _fixed_header(p, "    ")
        + "    <Variable_Header>\n      <Ref_Frame>EARTH_FIXED</Ref_Frame>\n"
        "      <Time_Reference>UTC</Time_Reference>\n    </Variable_Header>\n"
        "  </Earth_Explorer_Header>\n"
        f'  <Data_Block type="xml">\n    <{tag} count="{count}">\n{records}    </{tag}>\n'
        "  </Data_Block>\n</Earth_Explorer_File>\n"
    ).encode()


def _zip(p: Product, members: list[tuple[str, bytes, bool]]) -> bytes:
    """A zip of (name, data, deflate) members dated at the generation time."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, deflate in members:
            info = zipfile.ZipInfo(name, date_time=p.dates.generation.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _tar(p: Product, members: list[tuple[str, bytes]]) -> bytes:
    """A ustar archive ``<id>/`` holding ``members``, dated at the generation time."""
    mtime = int(p.dates.generation.timestamp())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        top = tarfile.TarInfo(p.stem)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, mtime
        tf.addfile(top)
        for name, data in members:
            info = tarfile.TarInfo(f"{p.stem}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _hdr(p: Product) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Earth_Explorer_Header>\n'
        + _fixed_header(p, "  ")
        + "  <Variable_Header/>\n</Earth_Explorer_Header>\n"
    ).encode()


def _manifest(p: Product, info: str, member: str, data: bytes) -> bytes:
    """An XFDU manifest (SAFE ``manifest.safe`` or SEN3 ``xfdumanifest.xml``)."""
    w = p.dates
    ns, family = ("safe", "SENTINEL-1") if p.platform[1] == "1" else ("sentinel-safe", "Sentinel-3")
    number = f"\n            <{ns}:number>{p.unit}</{ns}:number>" if p.unit else ""
    mime = "text/xml" if member.endswith(".xml") else "application/x-netcdf"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:{ns}="http://www.esa.int/safe/sentinel/1.1" \
xmlns:sentinel3="http://www.esa.int/safe/sentinel/sentinel-3/1.0" version="esa/safe/aux/1.0">
  <informationPackageMap>
    <xfdu:contentUnit unitType="Information Package" textInfo="{p.rule.description}" \
dmdID="platform productInformation" pdiID="processing">
      <dataObjectPointer dataObjectID="auxData"/>
    </xfdu:contentUnit>
  </informationPackageMap>
  <metadataSection>
    <metadataObject ID="processing" classification="PROVENANCE" category="PDI">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Processing">
        <xmlData>
          <{ns}:processing name="{p.rule.product_type} generation" \
start="{_iso(w.generation, True)}" stop="{_iso(w.generation, True)}">
            <{ns}:facility name="{p.rule.facility}" organisation="ESA"/>
          </{ns}:processing>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="platform" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Platform Description">
        <xmlData>
          <{ns}:platform>
            <{ns}:familyName>{family}</{ns}:familyName>{number}
          </{ns}:platform>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="productInformation" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Product Information">
        <xmlData>
{info}        </xmlData>
      </metadataWrap>
    </metadataObject>
  </metadataSection>
  <dataObjectSection>
    <dataObject ID="auxData">
      <byteStream mimeType="{mime}" size="{len(data)}">
        <fileLocation locatorType="URL" href="./{member}"/>
        <checksum checksumName="MD5">{_md5(data)}</checksum>
      </byteStream>
    </dataObject>
  </dataObjectSection>
</xfdu:XFDU>
""".encode()


def _eof_zip(p: Product, n: int, seeds: Seeds) -> bytes:
    return _zip(p, [(p.item_id, _eof_text(p, n, seeds), True)])


def _safe_zip(p: Product, n: int, seeds: Seeds) -> bytes:
    ptype = p.rule.product_type
    base = f"{p.platform.rstrip('_').lower()}-{ptype.lower().replace('_', '-')}"
    if ptype in _NC_SAFE_TYPES:
        member, data = f"data/{base}.nc", _noise(seeds, p, n, _NETCDF4)
    else:
        member, data = f"data/{base}.xml", _values(seeds, p, "auxiliaryProductData", n)
    vs, g = _iso(p.dates.start, True), _iso(p.dates.generation, True)
    info = (
        "          <s1auxsar:standAloneProductInformation "
        'xmlns:s1auxsar="http://www.esa.int/safe/sentinel-1.0/sentinel-1/auxiliary/sar">\n'
        f"            <s1auxsar:auxProductType>{ptype}</s1auxsar:auxProductType>\n"
        f"            <s1auxsar:validity>{vs}</s1auxsar:validity>\n"
        f"            <s1auxsar:generation>{g}</s1auxsar:generation>\n"
        "          </s1auxsar:standAloneProductInformation>\n"
    )
    manifest = _manifest(p, info, member, data)
    return _zip(
        p,
        [
            (f"{p.item_id}/manifest.safe", manifest, True),
            (f"{p.item_id}/{member}", data, member.endswith(".xml")),
        ],
    )


def _sen3_zip(p: Product, n: int, seeds: Seeds) -> bytes:
    w, rule = p.dates, p.rule
    member = f"{rule.product_type}.nc"
    data = _noise(seeds, p, n, _NETCDF4)
    info = (
        "          <sentinel3:generalProductInformation>\n"
        f"            <sentinel3:productName>{p.item_id}</sentinel3:productName>\n"
        f"            <sentinel3:productType>{rule.product_type}</sentinel3:productType>\n"
        f"            <sentinel3:timeliness>{rule.timeliness}</sentinel3:timeliness>\n"
        f"            <sentinel3:baselineCollection>{p.stem[-3:]}</sentinel3:baselineCollection>\n"
        f"            <sentinel3:creationTime>{_iso(w.generation)}Z</sentinel3:creationTime>\n"
        f"            <sentinel3:validityStart>{_iso(w.start, True)}Z</sentinel3:validityStart>\n"
        f"            <sentinel3:validityStop>{_iso(w.stop, True)}Z</sentinel3:validityStop>\n"
        "          </sentinel3:generalProductInformation>\n"
    )
    manifest = _manifest(p, info, member, data)
    return _zip(
        p,
        [(f"{p.item_id}/xfdumanifest.xml", manifest, True), (f"{p.item_id}/{member}", data, False)],
    )


def _tgz(p: Product, n: int, seeds: Seeds) -> bytes:
    magic = _GRIB if p.rule.product_type in _GRIB_TYPES else b""
    tar = _tar(p, [(f"{p.stem}.HDR", _hdr(p)), (f"{p.stem}.DBL", _noise(seeds, p, n, magic))])
    return gzip.compress(tar, compresslevel=6, mtime=int(p.dates.generation.timestamp()))


def _sadata_tar(p: Product, n: int, seeds: Seeds) -> bytes:
    dbl = _values(seeds, p, "Satellite_Ancillary_Data", n)
    return _tar(p, [(f"{p.stem}.HDR", _hdr(p)), (f"{p.stem}.DBL", dbl)])


_BUILDERS: dict[str, Callable[[Product, int, Seeds], bytes]] = {
    ".EOF": _eof_text,
    ".EOF.zip": _eof_zip,
    ".SAFE.zip": _safe_zip,
    ".SEN3.zip": _sen3_zip,
    ".TGZ": _tgz,
    ".tar": _sadata_tar,
}
