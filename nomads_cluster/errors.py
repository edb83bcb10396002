"""The errors a user of the service can act on (an operator, the data scientist who
retrains): each message says what is wrong and what to do. The command line prints
them as one line, in one place (``cli/service.py``); the web layer answers a request
that meets one as a problem (``web/problems.py``)."""


class ServiceError(Exception):
    """A failure whose message is for the person running the service."""
