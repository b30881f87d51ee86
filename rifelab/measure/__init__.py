"""Measurement: image metrics, timing and memory profiling, model benchmarks, triplet evaluation."""
