import os
import sys

from .cli import main

# Usage lines name the program as it was invoked ("python -m reactor"), not __main__.py.
sys.exit(main(prog=f"{os.path.basename(sys.executable) or 'python'} -m reactor"))
