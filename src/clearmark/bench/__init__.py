"""Benchmarks: measured figures for the speed and memory targets (printed and saved by ``clearmark bench``)."""
