"""Streamlit entry point of the Belegwacht review app; ``belegwacht app`` starts it.

Kept tiny on purpose: the shell and the pages live in the ``detect.app`` package.
"""

from detect.app.main import run

run()
