"""``python -m robustdiag ...`` is ``robustdiag ...``."""

from robustdiag.cli import main

if __name__ == "__main__":
    main()
