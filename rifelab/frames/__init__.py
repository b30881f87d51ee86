"""Frames in and out: clips through PyAV, image files, numbered folders, benchmark triplet layouts.

All readers return RGB uint8 arrays of shape (H, W, 3) (clips: (T, H, W, 3)). Gray images are
expanded to RGB, opaque alpha is dropped, 16-bit images are rounded to 8 bits, and an EXIF
orientation tag is applied (frames come out the way image viewers show them); anything else
(real transparency, CMYK, animated files, float or exotic modes, empty files) is refused with an
error that says what to do. A frame folder whose names give two frames one number (1.png and
01.png) is refused: its order would be a guess.
"""
