"""Local simulators of the vendor APIs (Salesforce, SAP, ServiceNow, Microsoft 365 Graph).

Each is an ASGI app holding in-memory state seeded deterministically, written from the
vendor's public API documentation, with fault injection (bad credentials answer the vendor's
real 401 body; the next K requests answer 429 with ``Retry-After`` or 503; a write can be
committed and its response lost, as in a crash). ``serve.start`` runs one on a free port.
"""
