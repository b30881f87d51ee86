"""Published and reported figures to set beside our measurements, always labelled as claims.

These are the only hand-entered numbers in the project. They are never written as results:
notebooks show them in separate tables whose `source` column says where each came from.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["paper_quality", "report_speed", "claims_table"]

# RIFE paper (Huang et al., ECCV 2022), quality of the RIFE model (the paper's v1 model, not 4.0).
PAPER_QUALITY = [
    {"source": "RIFE paper (ECCV 2022), RIFE model", "dataset": "UCF101", "psnr": 35.282, "ssim": 0.9688,
     "device": "n/a (quality)"},
    {"source": "RIFE paper (ECCV 2022), RIFE model", "dataset": "Vimeo90K", "psnr": 35.615, "ssim": 0.9779,
     "device": "n/a (quality)"},
]

# Speed claims from the reports in shared/reports (what was claimed, on which device).
REPORT_SPEED = [
    {"source": "report 000 (RIFE 4.6 optimisation)", "what": "FP32 eager, 1080p", "fps": "27.28-31.17",
     "latency_ms": "32.08-36.65", "device": "RTX 3090", "status": "measured by the report"},
    {"source": "report 000 (RIFE 4.6 optimisation)", "what": "FP32 optimised", "fps": "37.59",
     "latency_ms": "", "device": "RTX 3090", "status": "measured by the report"},
    {"source": "report 000 (RIFE 4.6 optimisation)", "what": "FP16", "fps": "50-60", "latency_ms": "",
     "device": "RTX 3090", "status": "estimated, never measured"},
    {"source": "report 002 (RIFE-HDv3 readme)", "what": "1080p", "fps": "", "latency_ms": "45 / 28 / 18",
     "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
    {"source": "report 002 (RIFE-HDv3 readme)", "what": "4K", "fps": "", "latency_ms": "220 / 145 / 85",
     "device": "GTX 1080 Ti / RTX 3090 / A100", "status": "claimed"},
]


def paper_quality() -> pd.DataFrame:
    """The RIFE paper's benchmark quality figures (claims)."""
    return pd.DataFrame(PAPER_QUALITY)


def report_speed() -> pd.DataFrame:
    """The reports' speed claims, with the device each was measured (or estimated) on."""
    return pd.DataFrame(REPORT_SPEED)


def claims_table() -> pd.DataFrame:
    """Both tables stacked, for one 'published figures' section."""
    return pd.concat([paper_quality(), report_speed()], ignore_index=True)
