"""``python -m ltxengine`` (and ``torchrun ... -m ltxengine generate ...``): the ``ltxengine`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (the wheel check imports every module) runs nothing
    sys.exit(main())
