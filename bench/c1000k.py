"""``python bench/c1000k.py``: runs the C1000K benchmark, the package bench/c1000k/.

(A package folder wins over a module of the same name on import, so ``import c1000k`` from
bench/ gets the package, and this file only launches it.)
"""

import sys

from c1000k.cli import main

if __name__ == "__main__":
    sys.exit(main())
