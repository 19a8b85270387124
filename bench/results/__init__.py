"""The results room: everything that touches the results database or the per-cell result files.

==============  ==========================================================================================
module          owns
==============  ==========================================================================================
``schema``      the ORM tables and the packed encodings of per-sample data
``claims``      the lease protocol: worker ids, when a claim is abandoned
``rows``        how a cell's outcome becomes rows (inside the store's transactions)
``store``       :class:`~bench.results.store.Store`: connection, schema checks, every write
``migrate``     schema versions: which databases this bench reads, ``bench db upgrade`` (alembic, ``migrations/``)
``read``        every reader: tidy DataFrames for the report, compare, guards, the CLI and ``bench evaluate``
``files``       per-cell result and state files (how a worker hands its outcome on)
``collect``     ingesting result files into the database (the one writer's half of the worker contract)
``ledger``      the cell's life — claim, heartbeat, deliver, end — the one API runners and executors use
==============  ==========================================================================================

Nothing outside this package imports ``schema`` or SQLAlchemy (a test checks it).
"""
