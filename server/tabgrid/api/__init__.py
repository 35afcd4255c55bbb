"""HTTP: one route table (each route declares its role and body), handlers by resource,
problem documents, OpenAPI, the status page and the static files."""
