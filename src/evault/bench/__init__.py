"""Benchmarks: `evault bench codec|crypto|vault`. Each prints a table and, with --json, ends
with one JSON object on the last line."""
