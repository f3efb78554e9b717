"""Circular sun-synchronous orbit models of the Sentinel units, for orbit numbers and OSVs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MU = 3.986004418e14  # Earth gravitational parameter, m^3/s^2
_EARTH_RATE = 7.2921159e-5  # rad/s
_NODE_RATE = 2 * math.pi / (365.2422 * 86400)  # sun-synchronous node precession, rad/s


@dataclass(frozen=True)
class Orbit:
    """A repeat-cycle orbit: ascending-node crossing ``anx`` starts absolute orbit ``number``."""

    anx: datetime
    number: int
    period: timedelta
    inclination_deg: float
    node_lon_deg: float

    def absolute_orbit(self, t: datetime) -> int:
        """The absolute orbit number at ``t``."""
        return self.number + math.floor((t - self.anx) / self.period)

    def state(self, t: datetime) -> tuple[float, float, float, float, float, float]:
        """Earth-fixed position (m) and velocity (m/s) at ``t``."""
        dt = (t - self.anx).total_seconds()
        period = self.period.total_seconds()
        n = 2 * math.pi / period
        a = (_MU / n**2) ** (1 / 3)
        u, node_rate = n * dt, _NODE_RATE - _EARTH_RATE
        node = math.radians(self.node_lon_deg) + node_rate * dt
        inc = math.radians(self.inclination_deg)
        cu, su, cn, sn, ci, si = (
            math.cos(u),
            math.sin(u),
            math.cos(node),
            math.sin(node),
            math.cos(inc),
            math.sin(inc),
        )
        xo, yo, vxo, vyo = a * cu, a * su, -a * n * su, a * n * cu
        x, y = xo * cn - yo * ci * sn, xo * sn + yo * ci * cn
        vx = vxo * cn - vyo * ci * sn - y * node_rate
        vy = vxo * sn + vyo * ci * cn + x * node_rate
        return x, y, yo * si, vx, vy, vyo * si


def _period(days: int, orbits: int) -> timedelta:
    return timedelta(microseconds=round(days * 86400e6 / orbits))


_S1, _S2, _S3 = _period(12, 175), _period(10, 143), _period(27, 385)

ORBITS: dict[str, Orbit] = {
    "S1A": Orbit(datetime(2026, 1, 1, 0, 21, 17, tzinfo=UTC), 62_412, _S1, 98.18, 33.6),
    "S1C": Orbit(datetime(2026, 1, 1, 1, 10, 36, tzinfo=UTC), 5_531, _S1, 98.18, 21.2),
    "S2A": Orbit(datetime(2026, 1, 1, 0, 36, 12, tzinfo=UTC), 54_873, _S2, 98.62, -12.4),
    "S2B": Orbit(datetime(2026, 1, 1, 1, 26, 33, tzinfo=UTC), 45_921, _S2, 98.62, -24.9),
    "S3A": Orbit(datetime(2026, 1, 1, 0, 12, 44, tzinfo=UTC), 51_764, _S3, 98.65, 140.3),
    "S3B": Orbit(datetime(2026, 1, 1, 1, 3, 29, tzinfo=UTC), 40_318, _S3, 98.65, 127.5),
}
