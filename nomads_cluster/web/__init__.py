"""The HTTP layer: blueprints, the web page, the OpenAPI document, problem details,
and the hooks every request goes through (logs, CORS, security headers, rate limits,
request metrics). The factory (``nomads_cluster.create_app``) attaches them."""
