"""The gateway tests' private redis-server fixture, for the deployment tests too."""
from tests.gateway.conftest import private_redis  # noqa: F401
