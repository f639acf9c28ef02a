"""`make demo`: train on the embedded digits and show the results."""

from __future__ import annotations


def main() -> None:
    print("make demo: the training layer is not yet built; `make test` runs the suite.")


if __name__ == "__main__":
    main()
