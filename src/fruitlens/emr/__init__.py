"""Deployment kit for AWS EMR: `fruitlens emr up | submit | status | logs | down | estimate`."""
