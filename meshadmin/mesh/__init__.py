"""The mesh domain app: models, and the services that are the only writers of mesh state."""
