"""``python -m dynasor_agents.bench.overhead``: plain vLLM vs vLLM + the Dynasor component.

See :mod:`dynasor_agents.bench._overhead` for the method; ``--help`` for the options.
"""

import sys

from dynasor_agents.bench._overhead import main

if __name__ == "__main__":
    sys.exit(main())
