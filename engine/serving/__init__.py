"""Serving through Triton: the python-backend model body, request checks, the config generator, the model
repository on disk and the launcher of the bundled server."""
