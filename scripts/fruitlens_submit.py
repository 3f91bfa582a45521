"""Entry point for spark-submit:  spark-submit [spark options] scripts/fruitlens_submit.py COMMAND ARGS…

The submitted master and settings apply; fruitlens itself is shipped to the executors by the job."""

from fruitlens.cli import entry

if __name__ == "__main__":
    entry()
