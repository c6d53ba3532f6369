"""``python -m ltxengine`` (and ``torchrun ... -m ltxengine generate ...``): the ``ltxengine`` command."""

import sys

from .cli import main

sys.exit(main())
