"""pleat inside training frameworks; each module needs its framework (an optional extra) and is imported by name:
`pleat.integrations.lightning`, `pleat.integrations.transformers`."""


def as_metrics(record: dict[str, tuple[float, float]]) -> dict[str, float]:
    """A probe window as flat metric names: temperature/<layer>/signal and temperature/<layer>/noise."""
    out = {}
    for layer, (signal, noise) in record.items():
        out[f"temperature/{layer}/signal"] = signal
        out[f"temperature/{layer}/noise"] = noise
    return out
