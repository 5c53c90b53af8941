"""The Streamlit review app: pages in ``detect.app.pages``, logic in small modules beside them.

``app.py`` at the top level is the entry point ``streamlit run`` starts; it only calls
``detect.app.main.run()``. Modules other than ``ui``/``main``/``pages`` do not import Streamlit,
so their logic is tested without a browser.
"""
