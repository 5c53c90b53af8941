"""Streamlit entry point used by ``belegwacht app`` when the package is installed without the
repository's top-level ``app.py`` (e.g. from a wheel). Same as ``app.py``."""

from detect.app.main import run

run()
