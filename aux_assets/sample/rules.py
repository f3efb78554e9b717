"""The 27 sample product types (docs/design/sample.md): names, sizes, policies and schedules.

Every schedule lays files on a fixed time grid (origin 2000-01-01, or an orbit's node crossing),
so a file's name and times do not depend on the requested range, only on the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

from aux_assets.sample.orbits import ORBITS

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # grid origin; also the start of monitoring windows
END_9999 = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
END_2100 = datetime(2100, 1, 1, tzinfo=UTC)
END_2099 = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
REPUBLISH_RATE = 0.05
# (type, platform, day): the file covering that day is always re-published (2026-01-05).
FORCED_REPUBLICATION = ("AUX_POEORB", "S1A", datetime(2026, 1, 5, tzinfo=UTC))
_S3 = "_" * 17  # S3 instance id of auxiliary files
_BANDS = ("01", "02", "03", "04", "05", "06", "07", "08", "8A", "09", "10", "11", "12")


@dataclass(frozen=True)
class Seeds:
    """Deterministic random streams keyed by the sample seed and a key."""

    seed: int

    def rng(self, *key: object) -> random.Random:
        """A generator seeded by ``seed/key...`` (string seeds hash the same in every process)."""
        return random.Random("/".join(str(k) for k in (self.seed, *key)))


@dataclass(frozen=True)
class Dates:
    """One file's validity [start, stop], generation and publication, extra name fields."""

    start: datetime
    stop: datetime
    generation: datetime
    publication: datetime
    fields: Mapping[str, str] = field(default_factory=dict)


Make = Callable[[datetime, random.Random], Iterator[Dates]]
Schedule = Callable[[str, str, datetime, datetime, Seeds], Iterator[Dates]]


@dataclass(frozen=True)
class TypeRule:
    """A product type on some platforms (``S1A``…, or ``S1_`` when unit-independent)."""

    product_type: str
    platforms: tuple[str, ...]
    template: str  # name without extension: {p} platform, {G} {VS} {VE} times, extra fields
    ext: str
    size: tuple[int, int]  # realistic size range, bytes
    facility: str
    description: str
    schedule: Schedule
    policy: str  # default selection policy
    margins: tuple[int, int] = (0, 0)  # dt0, dt1 seconds
    republished: bool = False
    timeliness: str | None = None  # S3 only


@dataclass(frozen=True)
class Product:
    """One generated file."""

    rule: TypeRule
    platform: str
    dates: Dates

    @cached_property
    def stem(self) -> str:
        """The name without its packaging extension."""
        w = self.dates
        return self.rule.template.format(
            p=self.platform, G=_n(w.generation), VS=_n(w.start), VE=_n(w.stop), **w.fields
        )

    @property
    def name(self) -> str:
        """The AUXIP product Name (asset key)."""
        return self.stem + self.rule.ext

    @property
    def item_id(self) -> str:
        """The STAC item id: the Name minus its last extension (RS facade)."""
        return self.name.rsplit(".", 1)[0]

    @property
    def unit(self) -> str | None:
        """The unit letter, or None for unit-independent files."""
        return None if self.platform.endswith("_") else self.platform[2]

    @property
    def constellation(self) -> str:
        """STAC ``constellation``: ``sentinel-1``..."""
        return f"sentinel-{self.platform[1]}"

    @property
    def stac_platform(self) -> str | None:
        """STAC ``platform`` (``sentinel-1a``...), None for unit-independent files."""
        return f"{self.constellation}{self.unit.lower()}" if self.unit else None


def _n(t: datetime) -> str:
    return f"{t:%Y%m%dT%H%M%S}"


def _s(r: random.Random, low: int, high: int) -> timedelta:
    return timedelta(seconds=r.randint(low, high))


def _ms(r: random.Random) -> timedelta:
    return timedelta(milliseconds=r.randrange(60_000))


def _steps(first: datetime, step: timedelta, lo: datetime, hi: datetime) -> Iterator[datetime]:
    """``first + k * step`` for every k with ``lo <= first + k * step < hi``."""
    t = first - ((first - lo) // step) * step
    while t < hi:
        yield t
        t += step


def _periodic(
    first: timedelta, every: timedelta, before: timedelta, after: timedelta, make: Make
) -> Schedule:
    """Anchors every ``every`` from ``EPOCH + first``, from ``lo - before`` to ``hi + after``."""

    def schedule(ptype: str, p: str, lo: datetime, hi: datetime, seeds: Seeds) -> Iterator[Dates]:
        for t in _steps(EPOCH + first, every, lo - before, hi + after):
            yield from make(t, seeds.rng(ptype, p, t))

    return schedule


def _fixed(
    offset: timedelta, length: timedelta, gen: timedelta, jitter_s: int, pub: timedelta
) -> Make:
    """vs = anchor + offset, ve = vs + length, G = vs + gen + U(0, jitter), P = G + pub."""

    def make(t: datetime, r: random.Random) -> Iterator[Dates]:
        vs = t + offset
        g = vs + gen + _s(r, 0, jitter_s)
        yield Dates(vs, vs + length, g, g + pub + _ms(r))

    return make


def _runs(hours: range, length: timedelta, jitter_s: int, pub: timedelta) -> Make:
    """A forecast run at the anchor: G = run + U(0, jitter), vs = run + h for h in ``hours``."""

    def make(run: datetime, r: random.Random) -> Iterator[Dates]:
        g = run + _s(r, 0, jitter_s)
        for h in hours:
            vs = run + h * HOUR
            yield Dates(vs, vs + length, g, g + pub + _ms(r))

    return make


def _monitoring(lag: timedelta) -> Make:
    """[2000-01-01, G - lag] windows of monitoring files generated daily at the anchor."""

    def make(t: datetime, r: random.Random) -> Iterator[Dates]:
        g = t + _s(r, 0, 1800)
        yield Dates(EPOCH, g - lag, g, g + 10 * MINUTE + _ms(r))

    return make


def _versions(
    phase_days: int,
    period_days: int,
    stop: datetime,
    lag_days: tuple[int, int],
    *,
    midnight: bool = False,
    ver_digits: int = 0,
    bands: Iterable[str] = ("00",),
) -> Schedule:
    """Open-ended versions every period: 3 before the range, then every one up to ``hi + 1 day``.

    vs = anchor (+ a random time of day unless ``midnight``); G = vs + U(lag days) + U(1 day).
    """
    period = timedelta(days=period_days)

    def make(t: datetime, r: random.Random) -> Iterator[Dates]:
        vs = t if midnight else t + _s(r, 0, 86399)
        g = vs + timedelta(days=r.randint(*lag_days)) + _s(r, 0, 86399)
        ver = f"{(t - EPOCH) // period:0{ver_digits}d}" if ver_digits else ""
        for bb in bands:
            yield Dates(vs, stop, g, g + HOUR + _ms(r), {"ver": ver, "bb": bb})

    return _periodic(timedelta(days=phase_days), period, 3 * period, DAY, make)


def _per_orbit(length: timedelta | None, gen: tuple[int, int], pub: timedelta) -> Schedule:
    """One file per orbit from the node crossing (``length`` None: one orbit); G = ve + U(gen)."""

    def schedule(ptype: str, p: str, lo: datetime, hi: datetime, seeds: Seeds) -> Iterator[Dates]:
        orbit = ORBITS[p]
        span = length or orbit.period
        for t in _steps(orbit.anx, orbit.period, lo - span, hi + DAY):
            r = seeds.rng(ptype, p, t)
            vs = (t + timedelta(microseconds=500_000)).replace(microsecond=0)
            ve = (vs + span).replace(microsecond=0)
            g = ve + _s(r, *gen)
            number = orbit.absolute_orbit(t + orbit.period / 2)
            yield Dates(vs, ve, g, g + pub + _ms(r), {"orbit": f"{number:06d}"})

    return schedule


def republications(rule: TypeRule, platform: str, w: Dates, seeds: Seeds) -> list[Dates]:
    """``w`` and, for re-published types (~5 %, and the forced one), a newer generation of it."""
    if not rule.republished:
        return [w]
    r = seeds.rng("republish", rule.product_type, platform, w.start)
    ptype, unit, day = FORCED_REPUBLICATION
    forced = (
        (rule.product_type, platform) == (ptype, unit) and w.start <= day and day + DAY <= w.stop
    )
    if r.random() >= REPUBLISH_RATE and not forced:
        return [w]
    delay = timedelta(days=r.randint(2, 40)) + _s(r, 0, 86399)
    return [w, replace(w, generation=w.generation + delay, publication=w.publication + delay)]


def _s1_safe(ptype: str, size: tuple[int, int], phase_days: int, desc: str) -> TypeRule:
    return TypeRule(
        ptype,
        ("S1A", "S1C"),
        f"{{p}}_{ptype}_V{{VS}}_G{{G}}",
        ".SAFE.zip",
        size,
        "MPC",
        desc,
        _versions(phase_days, 182, END_2100, (-21, -7)),
        "LatestValCover",
        republished=True,
    )


_S1, _S2, _S3U = ("S1A", "S1C"), ("S2A", "S2B"), ("S3A", "S3B")
_DAILY = (DAY, DAY)

RULES: tuple[TypeRule, ...] = (
    TypeRule(
        "AUX_POEORB",
        _S1,
        "{p}_OPER_AUX_POEORB_OPOD_{G}_V{VS}_{VE}",
        ".EOF",
        (4_200_000, 4_600_000),
        "OPOD",
        "Precise Orbit Ephemerides (POE) Orbit File",
        _periodic(
            timedelta(0),
            DAY,
            *_DAILY,
            _fixed(
                timedelta(hours=-1, seconds=-18),
                26 * HOUR,
                timedelta(days=20, hours=8, seconds=18),
                900,
                10 * MINUTE,
            ),
        ),
        "LatestValCover",
        republished=True,
    ),
    TypeRule(
        "AUX_RESORB",
        _S1,
        "{p}_OPER_AUX_RESORB_OPOD_{G}_V{VS}_{VE}",
        ".EOF",
        (585_000, 595_000),
        "OPOD",
        "Restituted Orbit File",
        _per_orbit(timedelta(hours=3, minutes=17, seconds=30), (25 * 60, 45 * 60), 5 * MINUTE),
        "LatestValCover",
    ),
    TypeRule(
        "AUX_PREORB",
        _S1,
        "{p}_OPER_AUX_PREORB_OPOD_{G}_V{VS}_{VE}",
        ".EOF",
        (80_000, 120_000),
        "OPOD",
        "Predicted Orbit File",
        _periodic(
            HOUR,
            6 * HOUR,
            7 * HOUR,
            DAY,
            _fixed(
                timedelta(minutes=14, seconds=27),
                timedelta(hours=6, minutes=35),
                45 * MINUTE,
                0,
                5 * MINUTE,
            ),
        ),
        "LatestValCover",
    ),
    TypeRule(
        "MPL_ORBPRE",
        _S1,
        "{p}_OPER_MPL_ORBPRE_{VS}_{VE}_0001",
        ".EOF",
        (2_000_000, 2_200_000),
        "FOS",
        "FOS Predicted Orbit File",
        _periodic(
            timedelta(0),
            DAY,
            7 * DAY,
            DAY,
            _fixed(timedelta(hours=2, minutes=14, seconds=11), 7 * DAY, timedelta(0), 0, HOUR),
        ),
        "LatestValCover",
    ),
    TypeRule(
        "MPL_ORBPRE",
        _S2,
        "{p}_OPER_MPL_ORBPRE_{VS}_{VE}_0001",
        ".EOF",
        (11_500, 12_500),
        "FOS",
        "FOS Predicted Orbit File",
        _periodic(
            timedelta(0),
            DAY,
            10 * DAY,
            DAY,
            _fixed(timedelta(hours=3, minutes=4, seconds=21), 10 * DAY, timedelta(0), 0, HOUR),
        ),
        "LatestValCover",
    ),
    TypeRule(
        "MPL_ORBSCT",
        _S1,
        "{p}_OPER_MPL_ORBSCT_{VS}_99999999T999999_{ver}",
        ".EOF",
        (28_500, 31_500),
        "FOS",
        "Reference Orbit Scenario File",
        _versions(5, 90, END_9999, (-2, -2), ver_digits=4),
        "LatestValCover",
    ),
    _s1_safe("AUX_CAL", (500_000, 2_000_000), 40, "Calibration Auxiliary Data"),
    _s1_safe("AUX_INS", (500_000, 3_000_000), 100, "Instrument Auxiliary Data"),
    _s1_safe("AUX_PP1", (100_000, 500_000), 130, "L1 Processor Parameters"),
    _s1_safe("AUX_PP2", (100_000, 500_000), 160, "L2 Processor Parameters"),
    TypeRule(
        "AUX_SCS",
        ("S1_",),
        "{p}_AUX_SCS_V{VS}_G{G}",
        ".SAFE.zip",
        (1_000_000, 5_000_000),
        "MPC",
        "Simulated Cross Spectra",
        _versions(95, 365, END_2100, (-10, -10)),
        "LatestValCover",
    ),
    TypeRule(
        "AUX_WND",
        ("S1_",),
        "{p}_AUX_WND_V{VS}_G{G}",
        ".SAFE.zip",
        (24_000_000, 26_000_000),
        "ADG",
        "ECMWF Wind Forecast",
        _periodic(
            6 * HOUR,
            12 * HOUR,
            DAY,
            timedelta(0),
            _runs(range(6, 49, 3), timedelta(0), 300, MINUTE),
        ),
        "ClosestStartValidity",
    ),
    TypeRule(
        "AUX_WAV",
        ("S1_",),
        "{p}_AUX_WAV_V{VS}_G{G}",
        ".SAFE.zip",
        (450_000, 500_000),
        "ADG",
        "Wave Model Forecast",
        _periodic(
            4 * HOUR, DAY, DAY, timedelta(0), _runs(range(-4, 45, 3), timedelta(0), 2400, MINUTE)
        ),
        "ClosestStartValidity",
    ),
    TypeRule(
        "AUX_ICE",
        ("S1_",),
        "{p}_AUX_ICE_V{VS}_G{G}",
        ".SAFE.zip",
        (500_000, 1_500_000),
        "ADG",
        "Sea Ice Concentration",
        _periodic(
            12 * HOUR, DAY, *_DAILY, _fixed(timedelta(0), timedelta(0), 16 * HOUR, 2400, MINUTE)
        ),
        "ClosestStartValidity",
    ),
    TypeRule(
        "AMH_ERRMAT",
        _S1,
        "{p}_OPER_AMH_ERRMAT_MPC__{G}_V20000101T000000_{VE}",
        ".EOF.zip",
        (50_000, 200_000),
        "MPC",
        "Attitude Error Matrix",
        _periodic(4 * HOUR, DAY, timedelta(0), 2 * DAY, _monitoring(16 * HOUR)),
        "ClosestStopValidity",
        margins=(0, 86400),
    ),
    TypeRule(
        "AUX_ECMWFD",
        ("S2_",),
        "{p}_OPER_AUX_ECMWFD_PDMC_{G}_V{VS}_{VE}",
        ".TGZ",
        (8_000_000, 8_600_000),
        "PDMC",
        "ECMWF Meteorological Data",
        _periodic(
            timedelta(0),
            12 * HOUR,
            DAY,
            timedelta(0),
            _runs(range(9, 49, 3), 12 * HOUR, 0, 6 * HOUR),
        ),
        "LatestValCover",
    ),
    TypeRule(
        "AUX_CAMSFO",
        ("S2_",),
        "{p}_OPER_AUX_CAMSFO_ADG__{G}_V{VS}_{VE}",
        ".TGZ",
        (20_000_000, 60_000_000),
        "ADG",
        "CAMS Atmospheric Composition Forecast",
        _periodic(
            timedelta(0), DAY, *_DAILY, _fixed(timedelta(0), 49 * HOUR, timedelta(0), 0, 10 * HOUR)
        ),
        "LatestValCover",
    ),
    TypeRule(
        "AUX_UT1UTC",
        ("S2_",),
        "{p}_OPER_AUX_UT1UTC_PDMC_{G}_V{VS}_{VE}",
        ".TGZ",
        (33_250, 36_750),
        "PDMC",
        "UT1-UTC Time Correlation",
        _periodic(5 * DAY, 7 * DAY, 28 * DAY, DAY, _fixed(DAY, 364 * DAY, -DAY, 0, 3 * HOUR)),
        "LatestValCover",
    ),
    TypeRule(
        "GIP_R2EQOG",
        _S2,
        "{p}_OPER_GIP_R2EQOG_MPC__{G}_V{VS}_21000101T000000_B{bb}",
        ".TGZ",
        (800_000, 1_200_000),
        "MPC",
        "Radiometric Equalization Parameters",
        _versions(10, 30, END_2100, (-2, -2), midnight=True, bands=_BANDS),
        "LatestValCover",
        republished=True,
    ),
    TypeRule(
        "GIP_PROBAS",
        _S2,
        "{p}_OPER_GIP_PROBAS_MPC__{G}_V{VS}_21000101T000000_B{bb}",
        ".TGZ",
        (5_000, 50_000),
        "MPC",
        "Processing Baseline Parameters",
        _versions(70, 182, END_2100, (-10, -3), midnight=True),
        "LatestGeneration",
    ),
    TypeRule(
        "AUX_SADATA",
        _S2,
        "{p}_OPER_AUX_SADATA_EPAE_{G}_V{VS}_{VE}_A{orbit}_WF_LN",
        ".tar",
        (2_000_000, 8_000_000),
        "EPAE",
        "Satellite Ancillary Data",
        _per_orbit(None, (2 * 3600, 2 * 3600 + 1800), 10 * MINUTE),
        "ValIntersect",
    ),
    TypeRule(
        "AX___FRO_AX",
        _S3U,
        f"{{p}}_AX___FRO_AX_{{VS}}_{{VE}}_{{G}}_{_S3}_EUM_O_AL_001",
        ".SEN3.zip",
        (1_600_000, 1_800_000),
        "EUM",
        "Restituted Orbit File",
        _periodic(
            timedelta(0),
            DAY,
            10 * DAY,
            DAY,
            _fixed(
                timedelta(0), 10 * DAY, timedelta(days=3, hours=6, minutes=55), 600, 10 * MINUTE
            ),
        ),
        "LatestValCover",
        margins=(7000, 7000),
        timeliness="AL",
    ),
    TypeRule(
        "AX___FPO_AX",
        _S3U,
        f"{{p}}_AX___FPO_AX_{{VS}}_{{VE}}_{{G}}_{_S3}_EUM_O_AL_001",
        ".SEN3.zip",
        (10_000, 15_000),
        "EUM",
        "Predicted Orbit File",
        _periodic(
            timedelta(0),
            DAY,
            7 * DAY,
            DAY,
            _fixed(timedelta(0), 7 * DAY, timedelta(hours=6, minutes=50), 600, 10 * MINUTE),
        ),
        "LatestValCover",
        timeliness="AL",
    ),
    TypeRule(
        "AX___OSF_AX",
        _S3U,
        f"{{p}}_AX___OSF_AX_{{VS}}_99991231T235959_{{G}}_{_S3}_EUM_O_AL_001",
        ".SEN3.zip",
        (28_500, 31_500),
        "EUM",
        "Orbit Scenario File",
        _versions(20, 91, END_9999, (20, 40)),
        "LatestValCover",
        margins=(6000, 6000),
        timeliness="AL",
    ),
    TypeRule(
        "AX___MA1_AX",
        ("S3_",),
        f"{{p}}_AX___MA1_AX_{{VS}}_{{VE}}_{{G}}_{_S3}_ECW_O_SN_001",
        ".SEN3.zip",
        (50_000_000, 120_000_000),
        "ECW",
        "ECMWF Meteorological Analysis",
        _periodic(
            3 * HOUR,
            6 * HOUR,
            12 * HOUR,
            DAY,
            _fixed(timedelta(0), 12 * HOUR, timedelta(hours=14, minutes=16), 2400, 10 * MINUTE),
        ),
        "ValIntersectWithoutDuplicate",
        timeliness="SN",
    ),
    TypeRule(
        "SR___POEPAX",
        _S3U,
        f"{{p}}_SR___POEPAX_{{VS}}_{{VE}}_{{G}}_{_S3}_POD_O_NT_001",
        ".SEN3.zip",
        (760_000, 840_000),
        "POD",
        "Precise Orbit Ephemerides",
        _periodic(
            timedelta(0),
            DAY,
            *_DAILY,
            _fixed(
                timedelta(hours=-2, seconds=-18),
                26 * HOUR,
                timedelta(days=25, hours=9),
                3600,
                10 * MINUTE,
            ),
        ),
        "LatestValCover",
        timeliness="NT",
    ),
    TypeRule(
        "OL_1_EO__AX",
        _S3U,
        f"{{p}}_OL_1_EO__AX_{{VS}}_20991231T235959_{{G}}_{_S3}_MPC_O_AL_{{ver}}",
        ".SEN3.zip",
        (38_000, 42_000),
        "MPC",
        "OLCI Level-1 Earth Observation Parameters",
        _versions(50, 182, END_2099, (30, 30), ver_digits=3),
        "LatestValIntersect",
        republished=True,
        timeliness="AL",
    ),
    TypeRule(
        "MW_1_NIR_AX",
        _S3U,
        f"{{p}}_MW_1_NIR_AX_20000101T000000_{{VE}}_{{G}}_{_S3}_LN3_O_AL____",
        ".SEN3.zip",
        (20_000, 100_000),
        "LN3",
        "MWR Noise Injection Radiometer Calibration",
        _periodic(20 * HOUR, DAY, DAY, 2 * DAY, _monitoring(20 * MINUTE)),
        "LatestStopValidity",
        timeliness="AL",
    ),
)

PRODUCT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(r.product_type for r in RULES))
