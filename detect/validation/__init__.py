"""The parts of the validation gate (``detect.validate`` puts them together).

- ``suites``: the expectation suites in ``expectations/`` (the source of truth for row checks)
- ``prepare``: derived columns the suites compare against, placeholder-date warnings
- ``gxrun``: runs the suites through Great Expectations' pandas source, in batches, + Data Docs;
  ``GxJob`` does so in a worker process (``gxworker``) off the critical path
- ``filecheck``: checks that reject the whole delivery
- ``reconcile``: control totals against the delivered lines
- ``journals``: journal-level findings (unbalanced journals, numbering gaps/backwards)
- ``quarantine``: splits clean rows from quarantined rows with their reasons
- ``state``: what the entity already processed (delivery hashes, journal number ranges)
"""
