"""The IO manager between the steps of one graph asset (read in the pool, compute outside it,
write in it): values pickled under the instance's storage, one folder per run.

Files, not memory, because the research job runs its steps in separate processes (design,
tuning and training in parallel). The values are the run's own intermediate data: a run's
folder is removed when a later run writes a value and the folder is older than KEEP_HOURS,
so a run can still be re-executed from a failed step for a while.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg

FOLDER = "step_values"
KEEP_HOURS = 48


class StepValuesIOManager(dg.ConfigurableIOManagerFactory):
    base_dir: str | None = None  # default: <instance storage>/step_values

    def create_io_manager(self, context: dg.InitResourceContext) -> dg.IOManager:
        root = Path(self.base_dir) if self.base_dir else Path(context.instance.storage_directory()) / FOLDER
        return _PickledStepValues(root)


class _PickledStepValues(dg.IOManager):
    def __init__(self, root: Path):
        self.root = root

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        # [run id, step key, output name]; an input's is its upstream output's (the parent
        # run's when a re-execution reuses it).
        *folders, name = context.get_identifier()
        return self.root.joinpath(*folders, f"{name}.pickle")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        _forget_old_runs(self.root, keep=context.get_identifier()[0])

    def load_input(self, context: dg.InputContext):
        path = self._path(context)
        if not path.exists():
            raise dg.Failure(
                f"the value of step {context.upstream_output.step_key} ({path}) is gone (older than {KEEP_HOURS} h): "
                "re-run the whole asset rather than this step"
            )
        with path.open("rb") as handle:
            return pickle.load(handle)  # written by this IO manager, from this run's own step


def _forget_old_runs(root: Path, keep: str) -> None:
    cutoff = time.time() - KEEP_HOURS * 3600
    for folder in root.iterdir():
        if folder.name != keep and folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
