"""The reader's own copy of the workbook: `make lab` serves `workbook/`, not `notebooks/`.

JupyterLab saves answers and outputs into the notebook it has open. If that were the tracked
`notebooks/NAME.ipynb`, one session would leave `git status` dirty and the next `git pull` in
conflict. So the reader works in `workbook/` (ignored by git), filled from `notebooks/`:

* a notebook the reader does not have yet is copied in;
* a notebook the reader has not changed since it was copied is replaced by a newer version;
* a notebook the reader has changed is kept as it is, and a newer version goes beside it as
  `NAME (new version).ipynb`, so that nothing the reader wrote is ever overwritten.

What was copied is remembered in `workbook/.atlas-copies.json` (a hash per notebook). Running
it again changes nothing unless `notebooks/` changed.

    python tools/reader_copy.py [--source notebooks] [--target workbook]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ".atlas-copies.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sync(source: Path, target: Path) -> list[str]:
    """Bring ``target`` up to date with the notebooks in ``source``; one line per action."""
    if not source.is_dir():
        raise ValueError(f"source must be a folder of notebooks, got {source}")
    target.mkdir(parents=True, exist_ok=True)
    ledger_path = target / LEDGER
    ledger: dict[str, str] = (json.loads(ledger_path.read_text(encoding="utf-8"))
                              if ledger_path.exists() else {})
    actions = []
    for notebook in sorted(source.glob("*.ipynb")):
        name, new = notebook.name, _digest(notebook)
        copy = target / name
        if not copy.exists():
            shutil.copyfile(notebook, copy)
            actions.append(f"copied {name}")
        elif ledger.get(name) == new:
            continue  # nothing new upstream
        elif _digest(copy) == ledger.get(name):
            shutil.copyfile(notebook, copy)  # the reader had not touched it
            actions.append(f"updated {name}")
        elif _digest(copy) == new:
            pass  # the reader's copy already is the new version
        else:
            beside = target / f"{notebook.stem} (new version).ipynb"
            shutil.copyfile(notebook, beside)
            actions.append(f"kept your {name}; the new version is {beside.name}")
        ledger[name] = new
    ledger_path.write_text(json.dumps(ledger, indent=1, sort_keys=True), encoding="utf-8")
    return actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--target", type=Path, default=ROOT / "workbook")
    args = parser.parse_args()
    actions = sync(args.source, args.target)
    where = args.target.relative_to(ROOT) if args.target.is_relative_to(ROOT) else args.target
    for line in actions:
        print(f"{where}/: {line}")
    if not actions:
        print(f"{where}/: your copy of the workbook is up to date")


if __name__ == "__main__":
    main()
