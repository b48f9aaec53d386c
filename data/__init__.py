"""suelo.data: the legends shipped with suelo (``legends/``). The repository's sample data beside them (``sample/``,
``slovenia/``, ``worldcereal/``) are for the demo, the tests and the default model's training, not installed."""

from pathlib import Path

#: The legend files (LANDCOVER10, Urban Atlas 2018, ...), in a checkout and an installed wheel alike.
LEGENDS = Path(__file__).resolve().parent / "legends"
