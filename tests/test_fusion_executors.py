"""Fused groups on the remote executors (issue 16, item 3): one job per fused group, every member settled as the
local runner settles it, tracked by the driver under the group's job, resumed member by member after a requeue.

Cells are tiny (digits, linear model, PGD-2, 1 epoch); worker processes use one torch thread (``project``).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pytest
from test_executors import bench, db_url, project, runs, suite  # noqa: F401 - project is a fixture

from bench.results import files as resultfile
from bench.results.store import Store

METHODS = '["ce", "focal", "cb-reweight"]'


def _context(project, methods: str = METHODS, fuse=3, extra: str = ""):
    from bench.executors import RunContext
    from bench.settings import load_settings
    from bench.suite import load_suite

    settings = dataclasses.replace(load_settings(), fuse=fuse)
    cells = load_suite(suite(project, methods=methods, extra=extra), settings).cells
    store = Store(db_url(project))
    store.create()
    return RunContext(suite_name="tiny", suite_path=project / "tiny.toml", cells=cells, store=store,
                      settings=settings, device="cpu", quiet=True)


def test_the_driver_submits_one_job_per_group_and_a_lost_job_fails_every_member(project):
    """A fake engine whose jobs vanish: the three fusable cells go as one GroupJob, a preact-resnet18 cell (no
    stacked forward) as its own CellJob; every member is queued under the group's tag, and all of them fail with
    the job's account of why when it is lost."""
    from bench.executors.job import CellJob, GroupJob
    from bench.executors.remote import Backend, RemoteExecutor

    class Lost(Backend):
        engine = "test"

        def __init__(self) -> None:
            self.jobs, self.handles = [], []

        def submit(self, jobs):
            self.jobs += jobs
            handles = [object() for _ in jobs]
            self.handles += handles
            return handles

        def tag(self, handle) -> str:
            return f"test:{self.handles.index(handle)}"

        def ended(self, handles):
            assert len({id(h) for h in handles}) == len(handles)  # a group's handle is asked about once
            return handles

        def failure(self, handle) -> str:
            return "the node was lost"

    backend = Lost()

    class Driver(RemoteExecutor):
        poll_s = 0.01

        def backend(self):
            return backend

    ctx = _context(project, methods='["ce", "focal", "cb-reweight"]',
                   extra='[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "awp"\nmodel = "preact-resnet18"\n')
    stored = []
    original = ctx.store.enqueue
    ctx.store.enqueue = lambda records, tags: (stored.append(list(tags)), original(records, tags))[1]
    assert Driver(ctx).run() == 1
    assert [type(j) for j in backend.jobs] == [GroupJob, CellJob]
    group = backend.jobs[0]
    by_method = {c.config["method"]: c.cell_hash for c in ctx.cells}
    assert group.cell_hashes == tuple(by_method[m] for m in ("ce", "focal", "cb-reweight"))
    assert stored == [["test:0", "test:0", "test:0", "test:1"]]  # each member queued under the group's tag
    claims = ctx.store.claims(list(by_method.values()))
    assert {h: s for h, (s, _) in claims.items()} == {h: "failed" for h in by_method.values()}
    assert {w for _, w in claims.values()} == {"test:0", "test:1"}
    from bench.results.read import run_record

    for cell_hash in by_method.values():
        assert "the node was lost" in str(run_record(ctx.store.url, cell_hash)["error"])


def test_a_group_job_settles_every_member_and_a_requeue_resumes_only_the_unfinished(project, monkeypatch):
    """In-process: the group's job writes each member's result file (a SQLite database is never opened by a
    worker) and state.json; requeued with two members' results written, it hands those on and trains only the
    third, from its checkpoint."""
    from bench.executors import job as job_module
    from bench.executors.remote import RemoteExecutor

    monkeypatch.setitem(job_module.TAGGERS, "test", lambda engine: "test:7")
    ctx = _context(project)
    job = RemoteExecutor(ctx).group_job(ctx.cells, "test")
    assert job.db_url is None and job.config is job.configs[0]
    assert job() == ["done"] * 3
    run_dir = ctx.settings.run_dir
    for cell in ctx.cells:
        record, result = resultfile.read_result(resultfile.result_path(run_dir, cell.cell_hash))
        assert record.cell_hash == cell.cell_hash and result.provenance["fused"] == 3
        state = json.loads(resultfile.state_path(run_dir, cell.cell_hash).read_text())
        assert (state["status"], state["worker"], state["epochs_done"]) == ("done", "test:7", 1)
    assert ctx.store.claims([c.cell_hash for c in ctx.cells]) == {}  # the driver ingests the files
    # pre-empted after two members were settled: the third trains again (from its checkpoint), alone
    last = ctx.cells[2]
    resultfile.result_path(run_dir, last.cell_hash).unlink()
    import bench.fusion.run

    trained = []
    real = bench.fusion.run.train_fused
    monkeypatch.setattr(bench.fusion.run, "train_fused", lambda members, data: trained.append(
        [m.run_dir.name for m in members]) or real(members, data))
    assert job() == ["done"] * 3
    assert trained == [[last.cell_hash]]
    assert resultfile.result_path(run_dir, last.cell_hash).exists()


def _class_metrics(path):
    with sqlite3.connect(path) as con:
        return sorted(con.execute("select r.method, m.attack, m.class_name, m.accuracy from class_metrics m "
                                  "join runs r on r.id = m.run_id").fetchall())


def test_submitit_local_trains_a_fused_group_as_one_job(project, tmp_path_factory):
    """`bench run --executor submitit-local --fuse 3`: one job for the three cells, all done with
    fused_members = 3 under the job's tag, and the class-metric rows of `--fuse off` within 2 points."""
    file = suite(project, methods=METHODS)
    out = bench("run", str(file), "--executor", "submitit-local", "--fuse", "3")
    assert out.exit_code == 0, out.output
    assert "3 to submit as 1 job(s), 1 of them fused group(s) on submitit's local executor" in out.output
    assert "suite tiny: 3 done" in out.output and out.output.count("] done ") == 3
    assert len(list((project / "runs" / "_submitit").glob("*_submitted.pkl"))) == 1
    rows = runs(project)
    assert [r[1] for r in rows] == ["done"] * 3 and len({r[2] for r in rows}) == 1
    assert rows[0][2].startswith("submitit-local:")
    with sqlite3.connect(project / "results" / "bench.db") as con:
        assert {n for (n,) in con.execute("select fused_members from runs")} == {3}
    states = [json.loads(p.read_text()) for p in (project / "runs").glob("*/state.json")]
    assert len(states) == 3 and {s["status"] for s in states} == {"done"} and len({s["pid"] for s in states}) == 1
    # the same cells unfused, through the local runner, in a fresh folder
    fresh = tmp_path_factory.mktemp("unfused")
    (fresh / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    import os

    os.chdir(fresh)
    assert bench("run", str(file), "--quiet", "--fuse", "off").exit_code == 0
    fused, unfused = _class_metrics(project / "results" / "bench.db"), _class_metrics(fresh / "results" / "bench.db")
    assert [r[:3] for r in fused] == [r[:3] for r in unfused] and len(fused) == 3 * 2 * 10
    clean = np.array([(a[3], b[3]) for a, b in zip(fused, unfused) if a[1] == "clean"]).reshape(3, -1, 2).mean(axis=1)
    assert np.abs(clean[:, 0] - clean[:, 1]).max() <= 0.02 + 1e-9


@pytest.mark.parametrize("fuse", ["off", 3])
def test_the_jobs_device_type_follows_the_gpus_they_are_given(project, fuse):
    """Grouping asks for the device type of the jobs: cuda only when the executor's options give them GPUs."""
    from bench.executors.ray import RayBackend

    class FakeRay:
        @staticmethod
        def remote(fn):
            return fn

    options = {"num_gpus": 1, "gpus_by_model": {}}
    assert RayBackend(FakeRay, options, gpus_available=2, started_here=True).device_type("auto") == "cuda"
    assert RayBackend(FakeRay, options, gpus_available=2, started_here=True).device_type("cpu") == "cpu"
    assert RayBackend(FakeRay, options, gpus_available=0, started_here=True).device_type("auto") == "cpu"
    assert RayBackend(FakeRay, {"num_gpus": 0, "gpus_by_model": {}}, 2, True).device_type("auto") == "cpu"
    from bench.executors.remote import RemoteExecutor

    ctx = _context(project, fuse=fuse)
    units = RemoteExecutor(ctx).units(ctx.cells, RayBackend(FakeRay, options, 0, True))
    assert [len(u) for _, u in units] == ([1, 1, 1] if fuse == "off" else [3])


@pytest.mark.slow  # 18-28 s on 2 busy cores; the in-process requeue test above covers resuming member by member
def test_a_preempted_group_job_requeues_and_every_member_resumes(project, tmp_path_factory):
    """Slurm's pre-emption signal (USR2) mid-group: the group's job is requeued, every member resumes from its own
    checkpoint, and the metrics are exactly those of an uninterrupted fused run."""
    import os
    import signal
    import torch

    from test_executors import _metrics, bench_process, one_state, wait_for

    file = suite(project, epochs=4, methods=METHODS, model="cnn-small")
    driver = bench_process(project, "run", str(file), "--executor", "submitit-local", "--fuse", "3")
    wait_for(lambda: (one_state(project) or {}).get("epochs_done", 0) >= 1, what="the group's first epoch")
    state = one_state(project)
    os.kill(state["pid"], signal.SIGUSR2)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, output
    states = [json.loads(p.read_text()) for p in (project / "runs").glob("*/state.json")]
    assert len(states) == 3 and {(s["starts"], s["status"]) for s in states} == {(2, "done")}
    assert {s["pid"] for s in states} != {state["pid"]}
    rows = runs(project)
    assert {(r[1], r[3]) for r in rows} == {("done", 4)} and len({r[2] for r in rows}) == 1
    fresh = tmp_path_factory.mktemp("fresh")
    (fresh / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    os.chdir(fresh)
    torch.set_num_threads(1)
    assert bench("run", str(file), "--quiet", "--fuse", "3").exit_code == 0
    assert _metrics(db_url(project)).equals(_metrics(db_url(fresh)))


def test_ray_runs_a_fused_group_as_one_task(project):
    file = suite(project, methods=METHODS)
    out = bench("run", str(file), "--executor", "ray", "--fuse", "3")
    assert out.exit_code == 0, out.output
    assert "3 to submit as 1 job(s), 1 of them fused group(s) on a Ray instance started here" in out.output
    rows = runs(project)
    assert [r[1] for r in rows] == ["done"] * 3 and len({r[2] for r in rows}) == 1 and rows[0][2].startswith("ray:")
    with sqlite3.connect(project / "results" / "bench.db") as con:
        assert {n for (n,) in con.execute("select fused_members from runs")} == {3}
