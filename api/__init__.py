"""FastAPI control plane: routes, schemas, dependencies, error rendering."""
