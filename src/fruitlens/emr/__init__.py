"""Deployment kit for AWS EMR: `fruitlens emr up | submit | status | logs | down | estimate | policy`.

- `cli`: the `emr` click group (registered by fruitlens.cli; nothing here imports fruitlens.cli);
- `kit`: the commands and the RunJobFlow / step requests;
- `iam`: policy documents, the roles, IAM propagation vs permanent errors;
- `capacity`: instance types (vCPUs, architecture) and the account's vCPU quotas;
- `artifacts`: what `up` uploads (bootstrap, pinned requirements, fruitlens.zip, wheels per architecture);
- `prices` and `costs`: where prices come from, and what a shape costs;
- `aws`: botocore clients from the standard credential chain, AWS errors as one line;
- `settings`: the typed settings; `fruitlens_submit.py`: the steps' spark-submit entry point.
See docs/emr.md."""
