"""Entry point: ``python -m bench <scenario|all> [--quick]`` (see ``bench/README.md``)."""

from __future__ import annotations

import sys

from ._runner import main

sys.exit(main())
