"""Where Redis is: REDIS_URL, from asgi_app_environment."""

import os

from arq.connections import RedisSettings

REDIS = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
