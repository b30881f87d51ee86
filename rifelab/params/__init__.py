"""The default params of every profile, shipped inside the package for runs outside the project (Colab, a wheel).

Copies of the project root's params.yaml, params-cuda.yaml and params-mps.yaml, which stay the editable source
(tests/test_notebooks.py keeps them identical: after editing a root file, copy it here).
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
