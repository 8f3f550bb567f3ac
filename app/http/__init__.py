"""The HTTP routes (REST, the page and its static files, `stream.ts`, snapshots, OpenAPI,
health, metrics) and the HTTP side of the policy (`doors`)."""
