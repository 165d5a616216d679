"""Automated runs (issue 17): an Alertmanager alert fires, the runbook runs by itself on Celery workers.

    Alertmanager --webhook--> receiver (``runbook serve``) --Redis--> Celery worker(s) --> ``runbook run``
                                 |  alert_mapping: alert -> parameters       |  execution: lease, judge, retry
                                 |  registry: one job per alert group        |  store: folder or S3 bucket
                                                                             |  notify: Slack-compatible webhook

A consumer of the product, like the lab: it may import any stage of ``runbook_lib`` but the lab, and nothing in
the product imports it. The runbook itself is unchanged: a worker runs the same ``runbook run`` a person types.
"""
