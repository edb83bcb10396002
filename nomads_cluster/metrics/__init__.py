"""Prometheus metrics: the registry every part of the service records to.

A leaf: it imports prometheus_client and nothing of ours. Domain metrics live beside
their domain (``store/users.py``, ``segmentation/model.py``); the request metrics and
the ``/metrics`` endpoint are the web layer's (``web/metrics.py``).
"""
