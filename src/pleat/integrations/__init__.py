"""pleat inside training frameworks; each module needs its framework (an optional extra) and is imported by name."""
