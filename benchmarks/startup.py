"""Start-up cost of the command line: `augforge --help`, `report digits`, `inspect DIR`, each a fresh process.

The target: `augforge report digits` well under 1 s on the 2-core CPU. The commands import only what they
use (``augforge.balance`` resolves its names on first use; the digits are read from scikit-learn's own
file without importing scikit-learn). The reference is the same report in a process that first imports
what the eager imports loaded (torch, imbalanced-learn and scikit-learn through the samplers), so the ratio
shows what lazy imports save. ``-X importtime`` lists the slowest imports of each command.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EAGER = "import augforge.balance.fast_smote, sklearn.datasets; "


def timed(code: str, repeats: int) -> float:
    """Median wall seconds of ``python -c code`` over ``repeats`` fresh processes."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def slowest_imports(code: str, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` imports with the largest cumulative time (``-X importtime``), in seconds."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((parts[2].strip(), int(parts[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        subprocess.run([sys.executable, "-m", "augforge.cli", "ingest", "digits", str(data), "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        commands = {
            "augforge --help": ["--help"],
            "augforge report digits": ["report", "digits"],
            "augforge inspect DIR": ["inspect", str(data)],
        }
        print(f"{'command':<26}{'lazy (s)':>10}{'eager (s)':>11}{'ratio':>8}")
        for name, argv in commands.items():
            call = f"import sys; from augforge.cli import main; sys.exit(main({argv!r}))"
            lazy, eager = timed(call, args.repeats), timed(EAGER + call, args.repeats)
            print(f"{name:<26}{lazy:>10.3f}{eager:>11.3f}{eager / lazy:>7.1f}x")
        print("\nslowest imports of `augforge report digits` (cumulative s):")
        for module, seconds in slowest_imports("from augforge.cli import main; main(['report', 'digits'])"):
            print(f"  {module:<40}{seconds:.3f}")


if __name__ == "__main__":
    main()
