"""Enterprise connectors (Salesforce, SAP, ServiceNow, Microsoft 365) behind one typed protocol.

See ``connectors.base`` for the protocol, ``connectors.registry`` for discovery and building,
``connectors.simulators`` for local vendor simulators and ``connectors.conformance`` for the
shared certification suite.
"""
