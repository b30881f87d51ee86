"""`python -m rifelab.studies.pruning`: the finetune@PROFILE stage."""

import sys

from rifelab.studies.pruning.cli import main

sys.exit(main())
