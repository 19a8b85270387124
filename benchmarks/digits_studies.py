"""Every study of the SRAT paper on 8×8 digits, offline, with its figures: runs `suites/digits_studies.toml` and
`suites/theory.toml` into one database and renders the HTML report (tables, class-wise bars, sweeps of the
under-represented weight, λ and K, t-SNE of learned features, the Section 3 theory tables).

    python benchmarks/digits_studies.py [--out DIR]      # about 6-8 minutes on 2 CPU cores

Prints the wall time of each step and where the report is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.cli", *args], check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "out" / "digits_studies"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{out / 'bench.db'}"
    times = {
        "digits_studies": step("run", str(ROOT / "suites" / "digits_studies.toml"), "--db", db, "--quiet"),
        "theory": step("run", str(ROOT / "suites" / "theory.toml"), "--db", db),
        "report": step("report", "--db", db, "--out", str(out / "report")),
    }
    for name, seconds in times.items():
        print(f"{name}: {seconds:.0f} s")
    print(f"report: {out / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
