"""Mean ± standard deviation of per-image metrics, refusing to drop undefined values silently."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence


def mean_std(values: Iterable[float]) -> dict[str, float | None]:
    """``{"mean", "std"}`` (population std) of finite values; a NaN or inf is an error, an empty list gives None."""
    data = [float(v) for v in values]
    bad = [v for v in data if not math.isfinite(v)]
    if bad:
        raise ValueError(f"cannot average {len(bad)} non-finite metric value(s) (e.g. {bad[0]}); "
                         "metrics must define their edge cases")
    if not data:
        return {"mean": None, "std": None}
    mean = sum(data) / len(data)
    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in data) / len(data))}


def summarize(records: Sequence[Mapping[str, object]], metrics: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Aggregate each named metric over the per-image records."""
    return {name: mean_std(record[name] for record in records) for name in metrics}
