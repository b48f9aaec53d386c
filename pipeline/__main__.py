"""``python -m suelo``: the ``suelo`` command line."""

from suelo.cli import main

if __name__ == "__main__":
    main()
