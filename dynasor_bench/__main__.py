"""``python -m dynasor_bench ARGV``: the same as ``dynasor-agents bench ARGV``."""

import sys

from dynasor_bench._cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
