"""Ground truth for calibration runs: a latency we configured, and what the harness measured.

A calibration run points the harness at a loopback emulator (``sandbox-bench emulate``) that adds a
known, seeded latency to every provider call. The harness itself cannot know that latency (an
adapter only sees its SDK), so **whoever starts the emulator writes the truth into the run
folder** as ``calibration.json`` (:func:`save`), next to ``manifest.json``; the report finds it
there (:func:`load`) and shows a "Calibration: measured vs true" section. The emulator
exposes the same block at ``GET /_emulator/config``, so the file is a copy of what the server
really applied, not of what a test meant to ask for.

From a shell, after a run against an emulator started with a latency model::

    python -m bench.calibration results/<run_id> --emulator http://127.0.0.1:PORT \
        --provider e2b --operations create

reads the emulator's ``GET /_emulator/config`` and writes the run's ``calibration.json``.

The latency model (:class:`LatencyModel`), one definition shared by the emulator that draws
from it and the report that computes its percentiles:

* ``fixed_s``: a constant added to every call (the emulators' ``--latency-ms``);
* plus, when ``median_s`` is set, a lognormal draw with that median and ``p99_s`` as its
  99th percentile (``mu = ln(median)``, ``sigma = ln(p99 / median) / z(0.99)``), independent
  per call, from a seeded generator;
* plus **stalls**: the whole server freezes for ``stall_s`` seconds at a time, during a
  fraction ``stall_probability`` of wall-clock time (stall windows of fixed length separated
  by exponential gaps of mean ``stall_s * (1 - f) / f``, seeded). A call whose answer would
  be sent inside a window is held until the window ends. Because a stall holds every call in
  flight at once, a closed-loop client (which sends nothing while it waits) sees it once per
  worker, while calls arriving at independent times see it with probability
  ``stall_probability``: this is the effect open-loop workloads exist to expose.

True percentiles are those of a call arriving at a time independent of the stall schedule:
``F(x) = (1 - f) L(x - fixed) + f / D * integral_0^D L(x - fixed - u) du`` with ``L`` the
lognormal CDF (a step at 0 without the lognormal part), ``f`` the stall probability and ``D``
the stall length (the residual of a fixed-length window at a random instant is uniform on
``[0, D]``). The measured times also hold the client's and the emulator's own work (request
building, loopback I/O, parsing); the report prints the difference, it does not subtract it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The file a calibration run's truth is written to, inside the run folder.
CALIBRATION_FILE = "calibration.json"
#: Version of that file; history: 1 = the first (latency model, operations it applies to).
CALIBRATION_VERSION = 1
#: z(0.99) of the standard normal distribution.
Z99 = 2.3263478740408408


@dataclass(frozen=True, kw_only=True)
class LatencyModel:
    """What an emulator adds to each provider call (see the module docstring)."""

    fixed_s: float = 0.0
    median_s: float | None = None
    p99_s: float | None = None
    stall_probability: float = 0.0
    stall_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fixed_s) and self.fixed_s >= 0):
            raise ValueError("fixed latency must be >= 0 s")
        if (self.median_s is None) != (self.p99_s is None):
            raise ValueError("a lognormal latency needs both median and p99")
        if self.median_s is not None and self.p99_s is not None:
            if not self.median_s > 0:
                raise ValueError("the lognormal median must be > 0 s")
            if not self.p99_s > self.median_s:
                raise ValueError("the lognormal p99 must be above its median")
        if not 0 <= self.stall_probability < 1:
            raise ValueError("the stall probability must be in [0, 1)")
        if self.stall_s < 0 or (self.stall_probability > 0 and self.stall_s == 0):
            raise ValueError("stalls need a duration > 0 s")

    # -- the distribution ---------------------------------------------------------------------

    @property
    def mu(self) -> float:
        return math.log(self.median_s) if self.median_s else 0.0

    @property
    def sigma(self) -> float:
        if not (self.median_s and self.p99_s):
            return 0.0
        return math.log(self.p99_s / self.median_s) / Z99

    @property
    def stalls(self) -> bool:
        return self.stall_probability > 0 and self.stall_s > 0

    def is_zero(self) -> bool:
        return self.fixed_s == 0 and self.median_s is None and not self.stalls

    def draw(self, rng: random.Random) -> float:
        """One call's own added latency (fixed + lognormal); stalls come from the schedule."""
        extra = rng.lognormvariate(self.mu, self.sigma) if self.median_s else 0.0
        return self.fixed_s + extra

    def _base_cdf(self, y: float) -> float:
        """P(fixed + lognormal <= y)."""
        y -= self.fixed_s
        if y < 0:
            return 0.0
        if not self.median_s:
            return 1.0
        if y == 0:
            return 0.0
        return 0.5 * math.erfc(-(math.log(y) - self.mu) / (self.sigma * math.sqrt(2)))

    def cdf(self, x: float) -> float:
        """P(added latency <= x) for a call arriving independently of the stall schedule."""
        base = self._base_cdf(x)
        if not self.stalls:
            return base
        f, d = self.stall_probability, self.stall_s
        if not self.median_s:
            held = min(1.0, max(0.0, (x - self.fixed_s) / d))
        else:
            from scipy import integrate

            held = integrate.quad(lambda u: self._base_cdf(x - u), 0.0, d, limit=200)[0] / d
        return (1 - f) * base + f * held

    def quantile(self, p: float) -> float:
        """The p-th percentile (0 < p < 100) of the added latency, in seconds."""
        if not 0 < p < 100:
            raise ValueError(f"percentile must be in (0, 100), got {p}")
        q = p / 100.0
        if not self.stalls:
            if not self.median_s:
                return self.fixed_s
            from scipy.special import ndtri

            return self.fixed_s + math.exp(self.mu + self.sigma * float(ndtri(q)))
        from scipy import optimize

        high = (
            self.fixed_s
            + self.stall_s
            + (math.exp(self.mu + 9 * self.sigma) if self.median_s else 0.0)
        )
        return float(
            optimize.brentq(lambda x: self.cdf(x) - q, self.fixed_s, high + 1e-9, xtol=1e-9)
        )

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown latency model key(s): {', '.join(unknown)}")
        return cls(**{k: (None if v is None else float(v)) for k, v in data.items()})


class StallSchedule:
    """The seeded stall windows of a :class:`LatencyModel` on one clock (seconds).

    Windows of ``stall_s`` separated by exponential gaps of mean ``stall_s * (1 - f) / f``,
    starting at a random phase so the first call is not special; extended lazily.
    """

    def __init__(self, model: LatencyModel, rng: random.Random, origin_s: float) -> None:
        self.model = model
        self._rng = rng
        self._windows: list[tuple[float, float]] = []
        self._next_start = origin_s + (self._gap() if model.stalls else math.inf)

    def _gap(self) -> float:
        f, d = self.model.stall_probability, self.model.stall_s
        return self._rng.expovariate(f / (d * (1 - f)))

    def release_at(self, t: float) -> float:
        """When an answer ready at ``t`` may go out: ``t``, or the end of the stall holding it."""
        if not self.model.stalls:
            return t
        while self._next_start <= t:
            start = self._next_start
            end = start + self.model.stall_s
            self._windows.append((start, end))
            self._next_start = end + self._gap()
            if len(self._windows) > 64:
                del self._windows[:32]
        for start, end in reversed(self._windows):
            if start <= t < end:
                return end
            if end <= t:
                break
        return t

    def windows(self) -> list[tuple[float, float]]:
        return list(self._windows)


# -- the run folder's calibration.json --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The truth of one calibration run: the model, and which measured operations are exactly
    one emulator call each (only those can be compared with it)."""

    latency: LatencyModel
    provider: str
    operations: tuple[str, ...]
    seed: int | None = None
    source: str = ""
    note: str = ""
    #: The client's (and emulator's) own time per call, measured by whoever ran the
    #: calibration against the same emulator with nothing added, e.g. ``{"p50": 0.0012}``.
    client_overhead_s: Mapping[str, float] | None = None
    percentiles: tuple[int, ...] = field(default=(50, 90, 95, 99))

    def true_percentiles(self) -> dict[int, float]:
        return {p: self.latency.quantile(p) for p in self.percentiles}

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration_version": CALIBRATION_VERSION,
            "provider": self.provider,
            "operations": list(self.operations),
            "latency": self.latency.to_dict(),
            "true_percentiles_s": {str(p): v for p, v in self.true_percentiles().items()},
            "seed": self.seed,
            "source": self.source,
            "note": self.note,
            "client_overhead_s": dict(self.client_overhead_s or {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        version = data.get("calibration_version")
        if version != CALIBRATION_VERSION:
            raise ValueError(
                f"{CALIBRATION_FILE}: version {version!r} is not one this harness reads "
                f"({CALIBRATION_VERSION})"
            )
        return cls(
            latency=LatencyModel.from_dict(data["latency"]),
            provider=str(data["provider"]),
            operations=tuple(str(o) for o in data.get("operations") or ()),
            seed=data.get("seed"),
            source=str(data.get("source") or ""),
            note=str(data.get("note") or ""),
            client_overhead_s={
                str(k): float(v) for k, v in (data.get("client_overhead_s") or {}).items()
            }
            or None,
        )


def save(folder: Path, calibration: Calibration | Sequence[Calibration]) -> Path:
    """Write ``calibration.json`` (one entry per calibrated provider) into a run folder."""
    entries = [calibration] if isinstance(calibration, Calibration) else list(calibration)
    path = Path(folder) / CALIBRATION_FILE
    body = {"calibration_version": CALIBRATION_VERSION, "entries": [e.to_dict() for e in entries]}
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def load(folder: Path) -> list[Calibration]:
    """The calibration entries of a run folder; none when it has no ``calibration.json``."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if data.get("calibration_version") != CALIBRATION_VERSION:
        raise ValueError(
            f"{path}: calibration version {data.get('calibration_version')!r} is not one this "
            f"harness reads ({CALIBRATION_VERSION})"
        )
    return [Calibration.from_dict(e) for e in data.get("entries") or []]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.calibration RUN_DIR --emulator URL --provider P --operations a,b``."""
    import argparse
    import urllib.request

    parser = argparse.ArgumentParser(
        prog="python -m bench.calibration",
        description="write a run's calibration.json from an emulator's GET /_emulator/config",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--emulator", required=True, help="the emulator's base URL")
    parser.add_argument("--provider", required=True)
    parser.add_argument(
        "--operations", required=True, help="comma-separated: operations that are one call each"
    )
    parser.add_argument("--overhead-p50-ms", type=float, default=None)
    args = parser.parse_args(argv)
    if not (args.run_dir / "manifest.json").is_file():
        parser.error(f"{args.run_dir} is not a run folder (no manifest.json)")
    url = args.emulator.rstrip("/") + "/_emulator/config"
    with urllib.request.urlopen(url, timeout=10) as answer:
        config = json.load(answer)
    match = config.get("latency_match") or "every call"
    entry = Calibration(
        latency=LatencyModel.from_dict(config["latency"]),
        provider=args.provider,
        operations=tuple(o for o in args.operations.split(",") if o),
        seed=config.get("seed"),
        source=f"GET {url}, latency on {match}, {config.get('backend', '?')} backend",
        client_overhead_s=(
            {"p50": args.overhead_p50_ms / 1e3} if args.overhead_p50_ms is not None else None
        ),
    )
    print(save(args.run_dir, entry))
    return 0


__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "LatencyModel",
    "StallSchedule",
    "load",
    "save",
]


if __name__ == "__main__":
    raise SystemExit(main())
