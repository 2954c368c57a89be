"""The example ASGI application of the asgi.gunicorn collection."""
