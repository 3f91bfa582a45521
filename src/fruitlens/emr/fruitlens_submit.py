"""Entry point `fruitlens emr` uploads for its steps:
spark-submit [spark options] fruitlens_submit.py COMMAND ARGS…

Shipped inside the package (no checkout needed); the submitted master and settings apply."""

from ..cli import entry

if __name__ == "__main__":
    entry()
