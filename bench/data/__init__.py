"""The data layer: joint sets, the shard format, dataset cards, synthetic domains."""
