"""The steps' entry point, the one spark-submit runs (EMR steps and any other cluster):

    spark-submit [spark options] --py-files fruitlens.zip fruitlens_submit.py COMMAND ARGS…

Shipped inside the package (`fruitlens emr up` uploads it beside fruitlens.zip; in a checkout it is
src/fruitlens/emr/fruitlens_submit.py). It runs `python -m fruitlens COMMAND ARGS…` in the
submitted application: fruitlens comes from --py-files (or the installed package), the submitted
master and settings apply. It imports nothing of fruitlens itself, so the emr package does not
depend on the command line module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("fruitlens", run_name="__main__", alter_sys=True)
