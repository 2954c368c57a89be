"""The example ASGI application of the asgi.gunicorn collection."""

# The version /health reports; the zero-downtime scenario deploys a copy with another one.
__version__ = "1.0.0"
