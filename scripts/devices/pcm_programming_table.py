#!/usr/bin/env python3
"""Writes a level-dependent programming-error table (docs/DEVICES.md) from the
PCM programming-noise model of Nandakumar et al. (2019) as aihwkit 1.x's
PCMLikeNoiseModel parameterises it: sigma(g_T) = c0 + c1 (g_T / g_max) +
c2 (g_T / g_max)^2 microsiemens, c = (0.26348, 1.9650, -1.1731), g_max = 25 uS,
clipped at 0. Levels 0..max map linearly onto 0..g_max; sigma is written in
level steps (g_max / max). No mean offset (the model has none).

usage: pcm_programming_table.py BITS > table.csv
"""
import sys

C = (0.26348, 1.9650, -1.1731)
G_MAX = 25.0

bits = int(sys.argv[1])
top = (1 << bits) - 1
print(f"# PCM programming noise (Nandakumar et al. 2019, aihwkit PCMLikeNoiseModel), {bits}-bit devices")
print("# written by scripts/devices/pcm_programming_table.py; sigma in level steps")
print("level,sigma")
for level in range(top + 1):
    x = level / top
    sigma_us = max(C[0] + C[1] * x + C[2] * x * x, 0.0)
    print(f"{level},{sigma_us / (G_MAX / top):.6f}")
