#!/usr/bin/env python3
"""Fails unless PNG file argv[1] exists, decodes, is at least 400x300, and is
not blank: at least 1 % of its pixels differ from the most common colour and
it has at least 5 distinct colours. Standard library only (zlib)."""
import collections
import struct
import sys
import zlib


def pixels(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                sys.exit(f"{path}: unsupported PNG (depth {depth}, colour type {colour})")
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def main():
    path = sys.argv[1]
    width, height, bpp, rows = pixels(path)
    if width < 400 or height < 300:
        sys.exit(f"{path}: only {width}x{height}")
    counts = collections.Counter()
    for line in rows[::2]:
        for x in range(0, width * bpp, bpp * 2):
            counts[line[x : x + 3]] += 1
    total = sum(counts.values())
    common, n = counts.most_common(1)[0]
    other = 1 - n / total
    print(f"{path}: {width}x{height}, {len(counts)} colours, {other:.1%} not the background")
    if other < 0.01 or len(counts) < 5:
        sys.exit(f"{path}: blank (background {common.hex()} covers {n / total:.1%})")


main()
