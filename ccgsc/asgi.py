"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccgsc.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the apps loaded above)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from campaigns.routing import websocket_urlpatterns as campaign_routes  # noqa: E402
from ccgsc import dbconnections  # noqa: E402
from operations.health import start_heartbeat  # noqa: E402
from workers.routing import websocket_urlpatterns as worker_routes  # noqa: E402

# Each server process reports itself to the health panel and runs its share of periodic jobs.
start_heartbeat()
# Requests reuse PostgreSQL connections (each runs in a thread of its own).
dbconnections.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origins are checked per connection by each consumer (ccgsc/origins.py): browsers
        # connect only from the platform's own pages (the embed's iframe is one of them).
        "websocket": AuthMiddlewareStack(URLRouter(worker_routes + campaign_routes)),
    }
)
