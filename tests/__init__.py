"""suelo's tests: folders mirror the package (``ingest/`` is ``suelo.ingest``, ``models/`` is ``suelo.models``),
``system/`` holds the end-to-end tests, ``fixtures/`` the builders of tiny real-format inputs and run helpers."""
