"""Real datasets from their local raw copies into standard shards (``dabench data convert``):
one small converter per dataset card, shared reading, cropping, joint mapping and writing."""

from bench.data.convert.base import CONVERTERS, Converter, Item, get_converter, register
from bench.data.convert.run import convert

__all__ = ["CONVERTERS", "Converter", "Item", "convert", "get_converter", "register"]
