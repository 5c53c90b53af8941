"""Generator of a realistic German municipal ledger with labelled anomalies.

Entry point: ``sample_data.generate.generate(lines, seed, out, formats)`` (or
``python -m sample_data.generate --lines N --seed S --out DIR``) writes one ledger (canonical
Parquet, labels, master data) and the same ledger as AICPA ADS, DATEV EXTF and SAP BKPF/BSEG
exports. See ``docs/sample_data.md``.
"""
