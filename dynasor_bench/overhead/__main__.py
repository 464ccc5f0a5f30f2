"""``python -m dynasor_bench.overhead``: plain vLLM vs vLLM + the Dynasor component.

See :mod:`dynasor_bench.overhead._benchmark` for the method; ``--help`` for the options.
"""

import sys

from dynasor_bench.overhead._cli import main

if __name__ == "__main__":
    sys.exit(main())
